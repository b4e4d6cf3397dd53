package azuredps

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Every exchange of the protocol, request and answer, as golden files in
// testdata/<transport>-<case>.json, driven through a real pipeline over a
// real store with a fixed clock: operation ids (random) are masked.

const (
	goldenKey = "dGhpcyBpcyBhIDY0LWJ5dGUgZGV2aWNlIGtleSBmb3IgdGVzdHMgMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"
	goldenHub = "hub.example.com"
)

var goldenNow = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

type fixture struct {
	h     *Handler
	scope string
	store registry.Store
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := testutil.NewStore(t, nil)
	ctx := context.Background()
	scope, err := st.IDScope(ctx, registry.DefaultOrgID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		id     string
		status registry.EnrollmentStatus
	}{{"dev-1", registry.EnrollmentEnabled}, {"dev-off", registry.EnrollmentDisabled}} {
		en := &registry.Enrollment{OrgID: registry.DefaultOrgID, RegistrationID: e.id,
			Attestation: registry.Attestation{Type: registry.AttestationSymmetricKey, SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: goldenKey}},
			EnrollmentPolicies: registry.EnrollmentPolicies{Status: e.status, ReprovisionPolicy: registry.EnrollmentReprovisionMigrate,
				CustomPayload: json.RawMessage(`{"firmware":"2.1"}`)}}
		if err := st.CreateEnrollment(ctx, en); err != nil {
			t.Fatal(err)
		}
	}
	// Allocation to an unknown hub: the registration fails.
	en := &registry.Enrollment{OrgID: registry.DefaultOrgID, RegistrationID: "dev-nohub",
		Attestation: registry.Attestation{Type: registry.AttestationSymmetricKey, SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: goldenKey}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionMigrate,
			AllocationPolicy: registry.AllocationStatic, IoTHubs: []string{"gone.example.com"}}}
	if err := st.CreateEnrollment(ctx, en); err != nil {
		t.Fatal(err)
	}
	svc := provision.New(provision.Options{Store: st, Now: func() time.Time { return goldenNow },
		Limiter: &provision.FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16},
		DPS:     provision.DPSOptions{Hubs: func() []allocate.Hub { return []allocate.Hub{{Name: goldenHub, Weight: 1, Enabled: true}} }}})
	h := NewHandler(svc, Options{Now: func() time.Time { return goldenNow }, TrackingID: func() string { return "00000000-0000-4000-8000-000000000000" }})
	return &fixture{h: h, scope: scope, store: st}
}

func (f *fixture) token(t *testing.T, regID string, expiry time.Time) string {
	t.Helper()
	tok, err := attest.Sign(attest.RegistrationResource(f.scope, regID), attest.RegistrationKeyName, goldenKey, expiry)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// exchange is one golden file.
type exchange struct {
	Request  goldenMessage `json:"request"`
	Response goldenMessage `json:"response"`
}

type goldenMessage struct {
	// MQTT: Topic; HTTPS: Method, Path, Status, Header.
	Topic  string            `json:"topic,omitempty"`
	Method string            `json:"method,omitempty"`
	Path   string            `json:"path,omitempty"`
	Status int               `json:"status,omitempty"`
	Header map[string]string `json:"header,omitempty"`
	Body   json.RawMessage   `json:"body,omitempty"`
}

// Operation ids and ID scopes are random: masked in golden files.
var (
	opIDs    = regexp.MustCompile(`4\.[0-9a-f]{16}\.[0-9a-f]{16}`)
	idScopes = regexp.MustCompile(`0ne[0-9A-F]{8}`)
)

// jsonOrString keeps a JSON body as JSON, anything else as a string.
func jsonOrString(b []byte) json.RawMessage {
	if len(bytes.TrimSpace(b)) > 0 && json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

func checkGolden(t *testing.T, name string, x exchange) {
	t.Helper()
	got, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = opIDs.ReplaceAll(got, []byte("<operationId>"))
	got = append(idScopes.ReplaceAll(got, []byte("<idScope>")), '\n')
	path := filepath.Join("testdata", name+".json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestMQTTGolden(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	user := func(id string) string {
		return f.scope + "/registrations/" + id + "/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1"
	}
	sess := func(id string) Session {
		return Session{RemoteAddr: "127.0.0.1:40000", Username: user(id), Password: f.token(t, id, goldenNow.Add(time.Hour)), TLS: true}
	}
	var opID string
	tests := []struct {
		name  string
		sess  Session
		topic func() string
		body  string
	}{
		{"register-assigning", sess("dev-1"), func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=1" },
			`{"registrationId":"dev-1","payload":{"model":"press"}}`},
		{"operation-assigned", sess("dev-1"), func() string {
			return "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=" + opID
		}, " "},
		{"operation-unknown", sess("dev-1"), func() string {
			return "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=3&operationId=4.0000000000000000.0000000000000000"
		}, " "},
		{"register-disabled", sess("dev-off"), func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=4" }, `{"registrationId":"dev-off"}`},
		{"register-allocation-failed", sess("dev-nohub"), func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=5" }, `{"registrationId":"dev-nohub"}`},
		{"register-unknown", sess("ghost"), func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=6" }, `{"registrationId":"ghost"}`},
		{"register-expired", Session{RemoteAddr: "127.0.0.1:40000", Username: user("dev-1"), Password: f.token(t, "dev-1", goldenNow.Add(-time.Hour)), TLS: true},
			func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=7" }, `{"registrationId":"dev-1"}`},
		{"register-malformed", sess("dev-1"), func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=8" }, `{"registrationId":`},
		{"register-api-version", Session{RemoteAddr: "127.0.0.1:40000", Username: f.scope + "/registrations/dev-1/api-version=2010-01-01", Password: f.token(t, "dev-1", goldenNow.Add(time.Hour)), TLS: true},
			func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=9" }, `{"registrationId":"dev-1"}`},
		{"register-cleartext", Session{RemoteAddr: "127.0.0.1:40000", Username: user("dev-1"), Password: f.token(t, "dev-1", goldenNow.Add(time.Hour))},
			func() string { return "$dps/registrations/PUT/iotdps-register/?$rid=10" }, `{"registrationId":"dev-1"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			topic := tc.topic()
			rt, body := f.h.HandleMQTT(ctx, tc.sess, topic, []byte(tc.body))
			if tc.name == "register-assigning" {
				var op Operation
				if err := json.Unmarshal(body, &op); err != nil || op.OperationID == "" {
					t.Fatalf("no operation id in %s", body)
				}
				opID = op.OperationID
			}
			checkGolden(t, "mqtt-"+tc.name, exchange{
				Request:  goldenMessage{Topic: topic, Body: jsonOrString([]byte(tc.body))},
				Response: goldenMessage{Topic: rt, Body: jsonOrString(body)},
			})
		})
	}
	// A topic without a request id gets no answer.
	if rt, body := f.h.HandleMQTT(ctx, sess("dev-1"), "$dps/registrations/PUT/iotdps-register/", nil); rt != "" || body != nil {
		t.Fatalf("answer %q on %q to a request without $rid", body, rt)
	}
}

func TestHTTPSGolden(t *testing.T) {
	f := newFixture(t)
	tok := f.token(t, "dev-1", goldenNow.Add(time.Hour))
	var opID string
	tests := []struct {
		name, method string
		path         func() string
		auth, body   string
	}{
		{"register-assigning", "PUT", func() string { return "/" + f.scope + "/registrations/dev-1/register?api-version=2019-03-31" }, tok, `{"registrationId":"dev-1"}`},
		{"operation-assigned", "GET", func() string {
			return "/" + f.scope + "/registrations/dev-1/operations/" + opID + "?api-version=2019-03-31"
		}, tok, "{}"},
		{"register-no-token", "PUT", func() string { return "/" + f.scope + "/registrations/dev-1/register?api-version=2019-03-31" }, "", `{"registrationId":"dev-1"}`},
		{"register-no-api-version", "PUT", func() string { return "/" + f.scope + "/registrations/dev-1/register" }, tok, `{"registrationId":"dev-1"}`},
		{"register-wrong-method", "POST", func() string { return "/" + f.scope + "/registrations/dev-1/register?api-version=2019-03-31" }, tok, `{}`},
		{"register-disabled", "PUT", func() string { return "/" + f.scope + "/registrations/dev-off/register?api-version=2019-03-31" },
			f.token(t, "dev-off", goldenNow.Add(time.Hour)), `{"registrationId":"dev-off"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path(), strings.NewReader(tc.body))
			r.RemoteAddr = "127.0.0.1:40000"
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			f.h.ServeHTTP(w, r)
			if tc.name == "register-assigning" {
				var op Operation
				json.Unmarshal(w.Body.Bytes(), &op)
				opID = op.OperationID
			}
			hdr := map[string]string{}
			for _, k := range []string{"Content-Type", "Retry-After", "Allow"} {
				if v := w.Header().Get(k); v != "" {
					hdr[k] = v
				}
			}
			path := tc.path()
			if tc.auth != "" {
				path += " (Authorization: SharedAccessSignature …)"
			}
			checkGolden(t, "https-"+tc.name, exchange{
				Request:  goldenMessage{Method: tc.method, Path: path, Body: jsonOrString([]byte(tc.body))},
				Response: goldenMessage{Status: w.Code, Header: hdr, Body: jsonOrString(w.Body.Bytes())},
			})
			if w.Code != http.StatusOK && w.Code != http.StatusAccepted && !strings.Contains(w.Body.String(), "errorCode") {
				t.Fatalf("refusal without an errorCode: %s", w.Body)
			}
		})
	}
}
