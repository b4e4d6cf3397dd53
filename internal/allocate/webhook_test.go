package allocate

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/")

var webhookHubs = []Hub{
	hub("toasters.example.net", 1),
	hub("heatpumps.example.net", 1),
	{Name: "off.example.net", Weight: 1},
}

// hook is a webhook server on a real socket; each request is recorded and
// answered by the next of answers (the last one repeats).
type hook struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
	calls    atomic.Int32
	answers  []func(w http.ResponseWriter, r *http.Request)
	received chan struct{}
}

func newHook(t *testing.T, answers ...func(w http.ResponseWriter, r *http.Request)) *hook {
	t.Helper()
	h := &hook{answers: answers, received: make(chan struct{}, 16)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n := int(h.calls.Add(1)) - 1
		h.mu.Lock()
		h.bodies = append(h.bodies, body)
		h.headers = append(h.headers, r.Header.Clone())
		h.mu.Unlock()
		h.received <- struct{}{}
		h.answers[min(n, len(h.answers)-1)](w, r)
	}))
	t.Cleanup(h.Close)
	return h
}

// header and body return what request i carried.
func (h *hook) header(i int) http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.headers[i]
}

func (h *hook) body(i int) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bodies[i]
}

func (h *hook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.bodies)
}

func status(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

// hang answers only when the client gives up.
func hang(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

func group() *registry.EnrollmentGroup {
	created := time.Date(2026, 7, 5, 21, 27, 16, 0, time.UTC)
	return &registry.EnrollmentGroup{
		OrgID: registry.DefaultOrgID,
		ID:    "contoso-custom-allocated-devices",
		Attestation: registry.GroupAttestation{
			Type:         registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: "c2VjcmV0LXByaW1hcnkta2V5LTEyMzQ1Ng=="},
		},
		EnrollmentPolicies: registry.EnrollmentPolicies{
			Status:            registry.EnrollmentEnabled,
			AllocationPolicy:  registry.AllocationCustom,
			IoTHubs:           []string{"toasters.example.net", "heatpumps.example.net"},
			ReprovisionPolicy: registry.EnrollmentReprovisionMigrate,
			InitialTwin: registry.InitialTwin{
				Tags:              json.RawMessage(`{"site":"plant-1"}`),
				DesiredProperties: json.RawMessage(`{"interval":30}`),
			},
		},
		Version:   3,
		CreatedAt: created,
		UpdatedAt: created.Add(time.Hour),
	}
}

func customRequest(url string) Request {
	g := group()
	return Request{
		RegistrationID: "breakroom499-contoso-tstrsd-007",
		Policy:         registry.AllocationCustom,
		IoTHubs:        g.IoTHubs,
		Webhook: &WebhookRequest{
			Endpoint:        &Webhook{URL: url, APIKey: "fn-key"},
			EnrollmentGroup: g,
			Attestation:     DeviceAttestation{Type: registry.AttestationSymmetricKey},
			Payload:         json.RawMessage(`{"modelId":"dtmi:contoso:toaster;1"}`),
		},
	}
}

// fast keeps retries quick.
func fast() *Allocator { return New(Options{WebhookBackoff: time.Millisecond}) }

func TestWebhookSuccess(t *testing.T) {
	h := newHook(t, status(200, `{
		"iotHubHostName": "Toasters.Example.NET",
		"initialTwin": {"tags": {"deviceType": "toaster"}, "properties": {"desired": {"state": "ready", "darkness": 0.30000000000000004}}},
		"payload": {"welcome": true}
	}`))
	res, err := fast().Allocate(context.Background(), webhookHubs, customRequest(h.URL+"/api/allocate?code=secret"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Hub != "toasters.example.net" || res.Policy != registry.AllocationCustom {
		t.Fatalf("result %+v", res)
	}
	if res.InitialTwin == nil || string(res.InitialTwin.Tags) != `{"deviceType": "toaster"}` ||
		string(res.InitialTwin.DesiredProperties) != `{"state": "ready", "darkness": 0.30000000000000004}` {
		t.Fatalf("twin %+v", res.InitialTwin)
	}
	if string(res.Payload) != `{"welcome": true}` {
		t.Fatalf("payload %s", res.Payload)
	}
	if len(res.Attempts) != 1 || res.Attempts[0].Status != 200 || res.Attempts[0].Error != "" || res.Attempts[0].Duration <= 0 {
		t.Fatalf("attempts %+v", res.Attempts)
	}
	hdr := h.header(0)
	if hdr.Get("x-functions-key") != "fn-key" || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("headers %v", hdr)
	}
	golden(t, "allocation_request_group.json", h.URL, h.body(0))
	if bytes.Contains(h.body(0), []byte("c2VjcmV0")) || bytes.Contains(h.body(0), []byte("secret")) {
		t.Fatal("the request carries the group key or the URL's key")
	}
}

func TestWebhookRequestIndividual(t *testing.T) {
	h := newHook(t, status(200, `{"iotHubHostName":"heatpumps.example.net"}`))
	enr := &registry.Enrollment{
		RegistrationID: "pump-7",
		DeviceID:       "pump-7-device",
		Attestation: registry.Attestation{
			Type: registry.AttestationTPM,
			TPM:  &registry.TPMAttestation{EndorsementKey: "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEA"},
		},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionNever},
		Version:            1,
	}
	req := Request{
		RegistrationID:  "pump-7",
		Policy:          registry.AllocationCustom,
		CurrentHub:      "toasters.example.net",
		CurrentDeviceID: "pump-7-device",
		Webhook: &WebhookRequest{
			IndividualEnrollment: enr,
			Attestation:          DeviceAttestation{Type: registry.AttestationTPM, TPM: enr.Attestation.TPM},
		},
	}
	// The endpoint comes from the instance default this time.
	a := New(Options{Webhook: Webhook{URL: h.URL, APIKey: "Bearer t0ken", APIKeyHeader: "Authorization"}})
	res, err := a.Allocate(context.Background(), webhookHubs, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Hub != "heatpumps.example.net" || res.InitialTwin != nil || res.Payload != nil {
		t.Fatalf("result %+v", res)
	}
	if got := h.header(0).Get("Authorization"); got != "Bearer t0ken" {
		t.Fatalf("Authorization %q", got)
	}
	golden(t, "allocation_request_individual_tpm.json", h.URL, h.body(0))
}

// golden compares a request body, re-indented and with the test server's
// address replaced by a fixed one, with testdata/name.
func golden(t *testing.T, name, serverURL string, body []byte) {
	t.Helper()
	body = bytes.ReplaceAll(body, []byte(serverURL), []byte("http://webhook.test"))
	var out bytes.Buffer
	if err := json.Indent(&out, body, "", "  "); err != nil {
		t.Fatalf("request is not JSON: %v: %s", err, body)
	}
	out.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("request differs from %s:\n%s", path, out.Bytes())
	}
}

func TestWebhookRequestX509(t *testing.T) {
	h := newHook(t, status(200, `{"iotHubHostName":"heatpumps.example.net"}`))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0xBEEF),
		Subject:      pkix.Name{CommonName: "pump-8"},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	req := customRequest(h.URL)
	req.Webhook.EnrollmentGroup = nil
	req.Webhook.Attestation = DeviceAttestation{Type: registry.AttestationX509, X509: CertificateInfo(cert)}
	if _, err := fast().Allocate(context.Background(), webhookHubs, req); err != nil {
		t.Fatal(err)
	}
	var got struct {
		DeviceRuntimeContext struct {
			X509 struct {
				ClientCertificates struct {
					Primary struct {
						Info map[string]any `json:"info"`
					} `json:"primary"`
				} `json:"clientCertificates"`
			} `json:"x509"`
		} `json:"deviceRuntimeContext"`
	}
	if err := json.Unmarshal(h.body(0), &got); err != nil {
		t.Fatal(err)
	}
	info := got.DeviceRuntimeContext.X509.ClientCertificates.Primary.Info
	sum := sha256.Sum256(der)
	want := map[string]any{
		"subjectName":      "CN=pump-8",
		"issuerName":       "CN=pump-8",
		"sha256Thumbprint": strings.ToUpper(hex.EncodeToString(sum[:])),
		"serialNumber":     "BEEF",
		"notBeforeUtc":     "2026-01-01T00:00:00Z",
		"notAfterUtc":      "2036-01-01T00:00:00Z",
		"version":          float64(3),
	}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("x509 info %s = %v, want %v", k, info[k], v)
		}
	}
	if s, _ := info["sha1Thumbprint"].(string); len(s) != 40 {
		t.Errorf("sha1Thumbprint %q", s)
	}
}

func TestWebhookFailures(t *testing.T) {
	huge := `{"iotHubHostName":"toasters.example.net","payload":"` + strings.Repeat("x", DefaultMaxResponseBytes) + `"}`
	tests := []struct {
		name     string
		answers  []func(http.ResponseWriter, *http.Request)
		timeout  time.Duration
		wantErr  error
		attempts []int // statuses of the attempts
		inError  string
	}{
		{name: "bad JSON", answers: []func(http.ResponseWriter, *http.Request){status(200, `{"iotHubHostName":`)}, wantErr: ErrWebhookBadAnswer, attempts: []int{200}},
		{name: "not an object", answers: []func(http.ResponseWriter, *http.Request){status(200, `"toasters.example.net"`)}, wantErr: ErrWebhookBadAnswer, attempts: []int{200}},
		{name: "no hub", answers: []func(http.ResponseWriter, *http.Request){status(200, `{"payload":{}}`)}, wantErr: ErrWebhookBadAnswer, attempts: []int{200}},
		{name: "hub not linked", answers: []func(http.ResponseWriter, *http.Request){status(200, `{"iotHubHostName":"elsewhere.example.net"}`)}, wantErr: ErrWebhookBadAnswer, attempts: []int{200}, inError: "not one of the linked hubs"},
		{name: "disabled hub is not linked", answers: []func(http.ResponseWriter, *http.Request){status(200, `{"iotHubHostName":"off.example.net"}`)}, wantErr: ErrWebhookBadAnswer, attempts: []int{200}},
		{name: "twin tags not an object", answers: []func(http.ResponseWriter, *http.Request){status(200, `{"iotHubHostName":"toasters.example.net","initialTwin":{"tags":[1]}}`)}, wantErr: ErrWebhookBadAnswer, attempts: []int{200}},
		{name: "oversized body", answers: []func(http.ResponseWriter, *http.Request){status(200, huge)}, wantErr: ErrWebhookBadAnswer, attempts: []int{200}, inError: "exceeds"},
		{name: "refusal is not retried", answers: []func(http.ResponseWriter, *http.Request){status(403, `{"error":"unknown device model"}`)}, wantErr: ErrWebhookBadAnswer, attempts: []int{403}, inError: "unknown device model"},
		{name: "5xx until retries run out", answers: []func(http.ResponseWriter, *http.Request){status(503, "")}, wantErr: ErrWebhookUnavailable, attempts: []int{503, 503, 503}},
		{name: "slow server times out", answers: []func(http.ResponseWriter, *http.Request){hang}, timeout: 50 * time.Millisecond, wantErr: ErrWebhookUnavailable, attempts: []int{0, 0, 0}, inError: "within 50ms"},
		{name: "redirect is not followed", answers: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
		}}, wantErr: ErrWebhookBadAnswer, attempts: []int{307}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHook(t, tt.answers...)
			req := customRequest(h.URL)
			req.Webhook.Endpoint.Timeout = tt.timeout
			res, err := fast().Allocate(context.Background(), webhookHubs, req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.inError != "" && !strings.Contains(err.Error(), tt.inError) {
				t.Errorf("error %q does not mention %q", err, tt.inError)
			}
			if res.Hub != "" {
				t.Errorf("hub %q on error", res.Hub)
			}
			checkAttempts(t, res.Attempts, tt.attempts)
		})
	}
}

func checkAttempts(t *testing.T, got []Attempt, statuses []int) {
	t.Helper()
	if len(got) != len(statuses) {
		t.Fatalf("%d attempts %+v, want %d", len(got), got, len(statuses))
	}
	for i, at := range got {
		if at.Status != statuses[i] || at.Start.IsZero() || at.Duration <= 0 {
			t.Errorf("attempt %d: %+v, want status %d", i, at, statuses[i])
		}
		last := i == len(got)-1
		if !last && at.Error == "" {
			t.Errorf("attempt %d failed without an error: %+v", i, at)
		}
	}
}

func TestWebhookRetries(t *testing.T) {
	ok := status(200, `{"iotHubHostName":"heatpumps.example.net"}`)
	tests := []struct {
		name     string
		answers  []func(http.ResponseWriter, *http.Request)
		retries  int
		wantErr  error
		attempts []int
	}{
		{"500 then success", []func(http.ResponseWriter, *http.Request){status(500, "boom"), ok}, 0, nil, []int{500, 200}},
		{"429 then success", []func(http.ResponseWriter, *http.Request){status(429, ""), ok}, 0, nil, []int{429, 200}},
		{"timeout then success", []func(http.ResponseWriter, *http.Request){hang, ok}, 0, nil, []int{0, 200}},
		{"two failures then success", []func(http.ResponseWriter, *http.Request){status(502, ""), status(504, ""), ok}, 0, nil, []int{502, 504, 200}},
		{"retries disabled", []func(http.ResponseWriter, *http.Request){status(500, ""), ok}, -1, ErrWebhookUnavailable, []int{500}},
		{"one retry", []func(http.ResponseWriter, *http.Request){status(500, ""), status(500, ""), ok}, 1, ErrWebhookUnavailable, []int{500, 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHook(t, tt.answers...)
			req := customRequest(h.URL)
			req.Webhook.Endpoint.Retries = tt.retries
			req.Webhook.Endpoint.Timeout = 100 * time.Millisecond
			res, err := fast().Allocate(context.Background(), webhookHubs, req)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && res.Hub != "heatpumps.example.net" {
				t.Fatalf("hub %q", res.Hub)
			}
			checkAttempts(t, res.Attempts, tt.attempts)
			if int(h.calls.Load()) != len(tt.attempts) {
				t.Fatalf("server saw %d calls, want %d", h.calls.Load(), len(tt.attempts))
			}
			// Every attempt sends the same request.
			for i := 1; i < h.count(); i++ {
				if !bytes.Equal(h.body(i), h.body(0)) {
					t.Fatal("retries sent a different body")
				}
			}
		})
	}
}

func TestWebhookContext(t *testing.T) {
	t.Run("cancel during an attempt", func(t *testing.T) {
		h := newHook(t, hang)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-h.received
			cancel()
		}()
		res, err := fast().Allocate(ctx, webhookHubs, customRequest(h.URL))
		if !errors.Is(err, ErrWebhookUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want ErrWebhookUnavailable and context.Canceled", err)
		}
		checkAttempts(t, res.Attempts, []int{0})
	})
	t.Run("deadline shorter than the attempt timeout", func(t *testing.T) {
		h := newHook(t, hang)
		ctx, cancel := context.WithTimeout(context.Background(), 80*time.Millisecond)
		defer cancel()
		start := time.Now()
		res, err := fast().Allocate(ctx, webhookHubs, customRequest(h.URL))
		if !errors.Is(err, ErrWebhookUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want ErrWebhookUnavailable and DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("took %v: the context's deadline was not honoured", d)
		}
		checkAttempts(t, res.Attempts, []int{0})
	})
	t.Run("cancel during the backoff", func(t *testing.T) {
		h := newHook(t, status(500, ""))
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-h.received
			time.Sleep(20 * time.Millisecond)
			cancel()
		}()
		a := New(Options{WebhookBackoff: 10 * time.Second})
		res, err := a.Allocate(ctx, webhookHubs, customRequest(h.URL))
		if !errors.Is(err, ErrWebhookUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		checkAttempts(t, res.Attempts, []int{500})
	})
	t.Run("already cancelled", func(t *testing.T) {
		h := newHook(t, status(200, `{"iotHubHostName":"heatpumps.example.net"}`))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := fast().Allocate(ctx, webhookHubs, customRequest(h.URL))
		if !errors.Is(err, ErrWebhookUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestWebhookUnreachable(t *testing.T) {
	h := newHook(t, status(200, "{}"))
	url := h.URL + "/api/fn?code=s3cr3t-key"
	h.Close() // nothing listens there any more
	res, err := fast().Allocate(context.Background(), webhookHubs, customRequest(url))
	if !errors.Is(err, ErrWebhookUnavailable) {
		t.Fatalf("err = %v, want ErrWebhookUnavailable", err)
	}
	checkAttempts(t, res.Attempts, []int{0, 0, 0})
	for _, at := range append(res.Attempts, Attempt{Error: err.Error()}) {
		if strings.Contains(at.Error, "s3cr3t") {
			t.Fatalf("the URL's key leaked into %q", at.Error)
		}
	}
}

func TestWebhookCredentialsStayWithTheirURL(t *testing.T) {
	instance := newHook(t, status(200, `{"iotHubHostName":"toasters.example.net"}`))
	other := newHook(t, status(200, `{"iotHubHostName":"toasters.example.net"}`))
	a := New(Options{Webhook: Webhook{URL: instance.URL, APIKey: "instance-key", Header: http.Header{"X-Tenant": {"t1"}}}, WebhookBackoff: time.Millisecond})
	tests := []struct {
		name     string
		endpoint *Webhook
		server   *hook
		wantKey  string
	}{
		{"the default endpoint", nil, instance, "instance-key"},
		{"same URL, inherited key", &Webhook{URL: instance.URL, Timeout: time.Second}, instance, "instance-key"},
		{"another URL gets no key", &Webhook{URL: other.URL}, other, ""},
		{"another URL with its own key", &Webhook{URL: other.URL, APIKey: "own"}, other, "own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := customRequest("")
			req.Webhook.Endpoint = tt.endpoint
			before := tt.server.count()
			if _, err := a.Allocate(context.Background(), webhookHubs, req); err != nil {
				t.Fatal(err)
			}
			hdr := tt.server.header(before)
			if got := hdr.Get(DefaultAPIKeyHeader); got != tt.wantKey {
				t.Fatalf("key %q, want %q", got, tt.wantKey)
			}
			if wantTenant := tt.server == instance; (hdr.Get("X-Tenant") == "t1") != wantTenant {
				t.Fatalf("X-Tenant header %q", hdr.Get("X-Tenant"))
			}
		})
	}
}

func TestWebhookInvalidRequests(t *testing.T) {
	h := newHook(t, status(200, `{"iotHubHostName":"toasters.example.net"}`))
	tests := []struct {
		name    string
		edit    func(*Request)
		hubs    []Hub
		wantErr error
	}{
		{"no URL", func(r *Request) { r.Webhook.Endpoint = nil }, webhookHubs, registry.ErrInvalid},
		{"no webhook at all", func(r *Request) { r.Webhook = nil }, webhookHubs, registry.ErrInvalid},
		{"relative URL", func(r *Request) { r.Webhook.Endpoint.URL = "/api/fn" }, webhookHubs, registry.ErrInvalid},
		{"ftp URL", func(r *Request) { r.Webhook.Endpoint.URL = "ftp://example.net/x" }, webhookHubs, registry.ErrInvalid},
		{"both enrollment kinds", func(r *Request) { r.Webhook.IndividualEnrollment = &registry.Enrollment{} }, webhookHubs, registry.ErrInvalid},
		{"device payload not JSON", func(r *Request) { r.Webhook.Payload = json.RawMessage(`{`) }, webhookHubs, registry.ErrInvalid},
		{"no enabled hub: the webhook is not called", func(*Request) {}, []Hub{{Name: "toasters.example.net"}}, ErrNoHub},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := customRequest(h.URL)
			tt.edit(&req)
			res, err := fast().Allocate(context.Background(), tt.hubs, req)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if len(res.Attempts) != 0 {
				t.Fatalf("attempts %+v", res.Attempts)
			}
		})
	}
	if n := h.calls.Load(); n != 0 {
		t.Fatalf("the webhook was called %d times", n)
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		body    string
		hub     string
		twin    *registry.InitialTwin
		payload string
		wantErr bool
	}{
		{body: `{"iotHubHostName":"h"}`, hub: "h"},
		{body: `{"iotHubHostname":"h"}`, hub: "h"}, // the docs' table spelling
		{body: ` {"iotHubHostName":" h ","initialTwin":null,"payload":null} `, hub: "h"},
		{body: `{"iotHubHostName":"h","initialTwin":{}}`, hub: "h", twin: &registry.InitialTwin{}},
		{body: `{"iotHubHostName":"h","initialTwin":{"tags":{"a":1},"properties":{"desired":{"b":2},"reported":{"c":3}}}}`, hub: "h",
			twin: &registry.InitialTwin{Tags: json.RawMessage(`{"a":1}`), DesiredProperties: json.RawMessage(`{"b":2}`)}},
		{body: `{"iotHubHostName":"h","payload":[1,2]}`, hub: "h", payload: `[1,2]`},
		{body: `{"iotHubHostName":"h","payload":"text"}`, hub: "h", payload: `"text"`},
		{body: ``, wantErr: true},
		{body: `null`, wantErr: true},
		{body: `[]`, wantErr: true},
		{body: `{"iotHubHostName":""}`, wantErr: true},
		{body: `{"iotHubHostName":42}`, wantErr: true},
		{body: `{"iotHubHostName":"h"} trailing`, wantErr: true},
		{body: `{"iotHubHostName":"h","initialTwin":[]}`, wantErr: true},
		{body: `{"iotHubHostName":"h","initialTwin":{"properties":"x"}}`, wantErr: true},
		{body: `{"iotHubHostName":"h","initialTwin":{"properties":{"desired":1}}}`, wantErr: true},
		{body: `{"iotHubHostName":"h","payload":"` + strings.Repeat("x", registry.MaxTwinJSON) + `"}`, wantErr: true},
		{body: `{"iotHubHostName":"h","initialTwin":{"tags":{"x":"` + strings.Repeat("x", registry.MaxTwinJSON) + `"}}}`, wantErr: true},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			ans, err := parseAnswer([]byte(tt.body))
			if tt.wantErr {
				if !errors.Is(err, ErrWebhookBadAnswer) {
					t.Fatalf("got %+v, %v; want ErrWebhookBadAnswer", ans, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ans.Hub != tt.hub || string(ans.Payload) != tt.payload {
				t.Fatalf("got %+v", ans)
			}
			if (ans.InitialTwin == nil) != (tt.twin == nil) ||
				ans.InitialTwin != nil && (string(ans.InitialTwin.Tags) != string(tt.twin.Tags) || string(ans.InitialTwin.DesiredProperties) != string(tt.twin.DesiredProperties)) {
				t.Fatalf("twin %+v, want %+v", ans.InitialTwin, tt.twin)
			}
		})
	}
}
