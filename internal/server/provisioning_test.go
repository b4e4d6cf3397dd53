package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/testutil"
)

type deviceOut struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	ProfileID     string         `json:"profileId"`
	Status        string         `json:"status"`
	ProvisionedAt *time.Time     `json:"provisionedAt"`
	Attributes    map[string]any `json:"attributes"`
}

type credOut struct {
	ID          string `json:"id"`
	Type        string `json:"credentialsType"`
	Status      string `json:"status"`
	ClientID    string `json:"clientId"`
	Username    string `json:"userName"`
	Fingerprint string `json:"fingerprint"`
}

type auditOut struct {
	Action   string `json:"action"`
	Result   string `json:"result"`
	DeviceID string `json:"deviceId"`
	Dialect  string `json:"dialect"`
	Detail   string `json:"detail"`
}

// list GETs one page of a management API list ({"items": [...]}).
func list[T any](n *node, path string) []T {
	n.t.Helper()
	var page struct {
		Items []T `json:"items"`
	}
	if code := n.api("GET", path, nil, &page); code != http.StatusOK {
		n.t.Fatalf("GET %s: HTTP %d", path, code)
	}
	return page.Items
}

func (n *node) devices() []deviceOut { return list[deviceOut](n, "/api/devices?limit=1000") }

func (n *node) device(name string) *deviceOut {
	for _, d := range n.devices() {
		if d.Name == name {
			return &d
		}
	}
	return nil
}

func (n *node) credentials(deviceID string) []credOut {
	return list[credOut](n, "/api/devices/"+deviceID+"/credentials")
}

func (n *node) lastAudit() auditOut {
	n.t.Helper()
	evs := list[auditOut](n, "/api/audit?limit=1")
	if len(evs) == 0 {
		n.t.Fatal("no audit events")
	}
	return evs[0]
}

func activeCount(cs []credOut) int {
	n := 0
	for _, c := range cs {
		if c.Status == "active" {
			n++
		}
	}
	return n
}

func TestAllowCreateWithGeneratedToken(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("sensors", "allow-create", "ACCESS_TOKEN", "never")

	a := n.provisionMQTT(req(p.Key, p.Secret, "sensor-1"))
	if a.Status != "SUCCESS" || a.CredentialsType != "ACCESS_TOKEN" {
		t.Fatalf("MQTT provisioning: %+v", a)
	}
	tok := a.token(t)
	if len(tok) < 22 { // ≥128 bits of base62
		t.Fatalf("token %q is too short", tok)
	}
	if _, err := n.connectDevice("sensor-1", tok, ""); err != nil {
		t.Fatalf("device cannot connect with its token: %v", err)
	}
	d := n.device("sensor-1")
	if d == nil || d.ProvisionedAt == nil || d.ProfileID != p.ID || d.Status != "enabled" {
		t.Fatalf("device after provisioning: %+v", d)
	}
	if cs := n.credentials(d.ID); len(cs) != 1 || cs[0].Type != "ACCESS_TOKEN" || cs[0].Status != "active" {
		t.Fatalf("credentials: %+v", cs)
	}
	if ev := n.lastAudit(); ev.Action != "provision" || ev.Result != "success" || ev.DeviceID != d.ID || ev.Dialect != "thingsboard" {
		t.Fatalf("audit: %+v", ev)
	}

	// ThingsBoard's behaviour under "never": a second request fails, nothing changes.
	a = n.provisionMQTT(req(p.Key, p.Secret, "sensor-1"))
	if a.Status != "FAILURE" || a.ErrorMsg != "Failed to provision device!" {
		t.Fatalf("second provisioning: %+v", a)
	}
	if cs := n.credentials(d.ID); len(cs) != 1 {
		t.Fatalf("a refused request changed credentials: %+v", cs)
	}

	// The same over HTTP, as curl sends it.
	code, a := n.provisionHTTP(req(p.Key, p.Secret, "sensor-2"))
	if code != http.StatusOK || a.Status != "SUCCESS" {
		t.Fatalf("HTTP provisioning: %d %+v", code, a)
	}
	if _, err := n.connectDevice("sensor-2", a.token(t), ""); err != nil {
		t.Fatalf("HTTP-provisioned device cannot connect: %v", err)
	}

	// No device name: ThingsBoard makes one up.
	code, a = n.provisionHTTP(req(p.Key, p.Secret, ""))
	if code != http.StatusOK || a.Status != "SUCCESS" {
		t.Fatalf("nameless provisioning: %d %+v", code, a)
	}
	if got := len(n.devices()); got != 3 {
		t.Fatalf("%d devices, want 3", got)
	}
}

func selfSignedPEM(t *testing.T, cn string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestDeviceSuppliedCredentials(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("own-creds", "allow-create", "ACCESS_TOKEN", "never")
	certPEM := selfSignedPEM(t, "cert-dev")

	t.Run("ACCESS_TOKEN", func(t *testing.T) {
		a := n.provisionMQTT(req(p.Key, p.Secret, "token-dev", "credentialsType", "ACCESS_TOKEN", "token", "my-own-token-123"))
		if a.Status != "SUCCESS" || a.token(t) != "my-own-token-123" {
			t.Fatalf("%+v", a)
		}
		if _, err := n.connectDevice("x", "my-own-token-123", ""); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("MQTT_BASIC", func(t *testing.T) {
		_, a := n.provisionHTTP(req(p.Key, p.Secret, "basic-dev", "credentialsType", "MQTT_BASIC", "clientId", "basic-cid", "username", "basic-user", "password", "basic-pass"))
		if a.Status != "SUCCESS" || a.CredentialsType != "MQTT_BASIC" {
			t.Fatalf("%+v", a)
		}
		var v map[string]string
		json.Unmarshal(a.CredentialsValue, &v)
		if v["clientId"] != "basic-cid" || v["userName"] != "basic-user" || v["password"] != "basic-pass" {
			t.Fatalf("credentialsValue %s", a.CredentialsValue)
		}
		if _, err := n.connectDevice("basic-cid", "basic-user", "basic-pass"); err != nil {
			t.Fatalf("connect with MQTT basic: %v", err)
		}
		if _, err := n.connectDevice("basic-cid", "basic-user", "wrong-pass"); err == nil {
			t.Fatal("wrong password accepted")
		}
	})
	t.Run("X509_CERTIFICATE", func(t *testing.T) {
		a := n.provisionMQTT(req(p.Key, p.Secret, "cert-dev", "credentialsType", "X509_CERTIFICATE", "hash", certPEM))
		if a.Status != "SUCCESS" || a.CredentialsType != "X509_CERTIFICATE" || a.token(t) != certPEM {
			t.Fatalf("%+v", a)
		}
		d := n.device("cert-dev")
		cs := n.credentials(d.ID)
		if len(cs) != 1 || cs[0].Type != "X509_CERTIFICATE" || len(cs[0].Fingerprint) != 64 {
			t.Fatalf("credentials %+v", cs)
		}
	})
}

func TestServerGeneratedMQTTBasic(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("basic", "allow-create", "MQTT_BASIC", "never")
	a := n.provisionMQTT(req(p.Key, p.Secret, "gen-basic"))
	if a.Status != "SUCCESS" || a.CredentialsType != "MQTT_BASIC" {
		t.Fatalf("%+v", a)
	}
	var v struct{ ClientID, UserName, Password string }
	json.Unmarshal(a.CredentialsValue, &v)
	if v.ClientID == "" || v.UserName == "" || len(v.Password) < 22 {
		t.Fatalf("generated MQTT basic credentials %s", a.CredentialsValue)
	}
	if _, err := n.connectDevice(v.ClientID, v.UserName, v.Password); err != nil {
		t.Fatalf("connect: %v", err)
	}
}

func TestPreProvisioned(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("macs", "pre-provisioned", "ACCESS_TOKEN", "never")
	var d deviceOut
	if code := n.api("POST", "/api/devices", map[string]any{"name": "AA:BB:CC:00:00:01", "profileId": p.ID,
		"attributes": map[string]any{"location": "hall 3"}}, &d); code != http.StatusCreated {
		t.Fatalf("create pre-provisioned device: HTTP %d", code)
	}
	if d.ProvisionedAt != nil {
		t.Fatalf("pre-provisioned device already provisioned: %+v", d)
	}

	a := n.provisionMQTT(req(p.Key, p.Secret, "AA:BB:CC:00:00:99"))
	if a.Status != "FAILURE" {
		t.Fatalf("unknown device provisioned under pre-provisioned strategy: %+v", a)
	}
	if len(n.devices()) != 1 {
		t.Fatal("a refused request created a device")
	}
	a = n.provisionMQTT(req(p.Key, p.Secret, "AA:BB:CC:00:00:01"))
	if a.Status != "SUCCESS" {
		t.Fatalf("%+v", a)
	}
	if _, err := n.connectDevice("mac1", a.token(t), ""); err != nil {
		t.Fatal(err)
	}
	got := n.device("AA:BB:CC:00:00:01")
	if got.ID != d.ID || got.ProvisionedAt == nil || got.Attributes["location"] != "hall 3" {
		t.Fatalf("device after provisioning: %+v", got)
	}
	if a := n.provisionMQTT(req(p.Key, p.Secret, "AA:BB:CC:00:00:01")); a.Status != "FAILURE" {
		t.Fatalf("second provisioning under never: %+v", a)
	}
}

func TestRotateRevokesOldCredentialsAndDisconnects(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("rotating", "allow-create", "ACCESS_TOKEN", "rotate")
	a := n.provisionMQTT(req(p.Key, p.Secret, "rot-1"))
	if a.Status != "SUCCESS" {
		t.Fatalf("%+v", a)
	}
	old := a.token(t)
	live, err := n.connectDevice("rot-1", old, "")
	if err != nil {
		t.Fatal(err)
	}

	_, b := n.provisionHTTP(req(p.Key, p.Secret, "rot-1"))
	if b.Status != "SUCCESS" || b.token(t) == old {
		t.Fatalf("rotation: %+v", b)
	}
	waitFor(t, "the session using the revoked token to be disconnected", func() bool { return !live.IsConnectionOpen() })
	if _, err := n.connectDevice("rot-1b", old, ""); err == nil {
		t.Fatal("revoked token still connects")
	}
	if _, err := n.connectDevice("rot-1c", b.token(t), ""); err != nil {
		t.Fatalf("new token refused: %v", err)
	}
	d := n.device("rot-1")
	cs := n.credentials(d.ID)
	if len(cs) != 2 || activeCount(cs) != 1 {
		t.Fatalf("after rotation want 1 active of 2 credentials: %+v", cs)
	}
	if len(n.devices()) != 1 {
		t.Fatal("rotation created a device")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRefusals: every failure gets ThingsBoard's answer, an audit event
// with the reason, and writes nothing else.
func TestRefusals(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("main", "allow-create", "ACCESS_TOKEN", "never")
	off := n.createProfile("off", "disabled", "ACCESS_TOKEN", "never")
	other := n.createProfile("other", "allow-create", "ACCESS_TOKEN", "never")
	if a := n.provisionMQTT(req(other.Key, other.Secret, "taken-by-other")); a.Status != "SUCCESS" {
		t.Fatal(a)
	}
	if a := n.provisionMQTT(req(p.Key, p.Secret, "to-disable", "credentialsType", "ACCESS_TOKEN", "token", "already-used-token")); a.Status != "SUCCESS" {
		t.Fatal(a)
	}
	// Disabled devices are refused even when reprovisioning would be allowed.
	rot := n.createProfile("rot", "allow-create", "ACCESS_TOKEN", "rotate")
	if a := n.provisionMQTT(req(rot.Key, rot.Secret, "disabled-dev")); a.Status != "SUCCESS" {
		t.Fatal(a)
	}
	if code := n.api("POST", "/api/devices/"+n.device("disabled-dev").ID+"/disable", nil, nil); code != http.StatusOK {
		t.Fatalf("disable: HTTP %d", code)
	}
	before := len(n.devices())

	tests := []struct {
		name       string
		payload    string
		status     string // ThingsBoard status
		httpCode   int
		reason     string // audit result
		reasonText string // part of the "reason" field
	}{
		{"wrong secret", req(p.Key, "wrong", "d1"), "NOT_FOUND", 200, "bad-key-or-secret", "wrong secret"},
		{"unknown key", req("no-such-key", p.Secret, "d1"), "NOT_FOUND", 200, "bad-key-or-secret", "unknown provision key"},
		{"no key", req("", "", "d1"), "NOT_FOUND", 200, "bad-key-or-secret", "required"},
		{"disabled profile", req(off.Key, off.Secret, "d1"), "NOT_FOUND", 200, "provisioning-disabled", "disabled"},
		{"malformed JSON", `{"deviceName":`, "FAILURE", 400, "bad-request", "not a valid provisioning JSON"},
		{"not an object", `[]`, "FAILURE", 400, "bad-request", "not a valid provisioning JSON"},
		{"unknown field", `{"deviceName":"d1","provisionDeviceKey":"k","provisionDeviceSecret":"s","extra":1}`, "FAILURE", 400, "bad-request", `unknown field "extra"`},
		{"invalid UTF-8", "{\"deviceName\":\"\xff\",\"provisionDeviceKey\":\"k\",\"provisionDeviceSecret\":\"s\"}", "FAILURE", 400, "bad-request", "UTF-8"},
		{"over-long name", req(p.Key, p.Secret, strings.Repeat("n", 300)), "FAILURE", 200, "bad-request", "longer than"},
		{"control character in name", req(p.Key, p.Secret, "bad\nname"), "FAILURE", 200, "bad-request", "control character"},
		{"name taken by another profile", req(p.Key, p.Secret, "taken-by-other"), "FAILURE", 200, "already-provisioned", "taken"},
		{"disabled device", req(rot.Key, rot.Secret, "disabled-dev"), "FAILURE", 200, "device-disabled", "disabled"},
		{"token used by another device", req(p.Key, p.Secret, "d2", "credentialsType", "ACCESS_TOKEN", "token", "already-used-token"), "FAILURE", 200, "credentials-taken", "already used"},
		{"short token", req(p.Key, p.Secret, "d3", "credentialsType", "ACCESS_TOKEN", "token", "abc"), "FAILURE", 200, "bad-credentials", "shorter"},
		{"garbage certificate", req(p.Key, p.Secret, "d4", "credentialsType", "X509_CERTIFICATE", "hash", "not a cert"), "FAILURE", 200, "bad-credentials", "PEM"},
		{"unknown credentials type", req(p.Key, p.Secret, "d5", "credentialsType", "PSK"), "FAILURE", 200, "bad-credentials", "unknown credentials type"},
		{"basic without ids", req(p.Key, p.Secret, "d6", "credentialsType", "MQTT_BASIC", "password", "x"), "FAILURE", 200, "bad-credentials", "needs a clientId or a username"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, transport := range []string{"mqtt", "http"} {
				var a tbAnswer
				if transport == "mqtt" {
					a = n.provisionMQTT(tt.payload)
				} else {
					var code int
					code, a = n.provisionHTTP(tt.payload)
					if code != tt.httpCode {
						t.Errorf("HTTP status %d, want %d", code, tt.httpCode)
					}
				}
				if a.Status != tt.status || a.ErrorMsg == "" || !strings.Contains(a.Reason, tt.reasonText) {
					t.Errorf("%s answer %+v, want status %s and a reason mentioning %q", transport, a, tt.status, tt.reasonText)
				}
				if a.CredentialsValue != nil {
					t.Errorf("%s refusal carries credentials", transport)
				}
				if ev := n.lastAudit(); ev.Action != "provision" || ev.Result != tt.reason {
					t.Errorf("%s audit event %+v, want result %s", transport, ev, tt.reason)
				}
			}
			if got := len(n.devices()); got != before {
				t.Fatalf("%d devices after a refusal, want %d", got, before)
			}
		})
	}
}

// TestConcurrentIdenticalRequests: a burst of the same request never makes
// two devices nor piles up credentials.
func TestConcurrentIdenticalRequests(t *testing.T) {
	n := startNode(t, "")
	for _, policy := range []string{"never", "rotate"} {
		t.Run(policy, func(t *testing.T) {
			p := n.createProfile("burst-"+policy, "allow-create", "ACCESS_TOKEN", policy)
			const workers = 24
			var wg sync.WaitGroup
			answers := make([]tbAnswer, workers)
			for i := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, answers[i] = n.provisionHTTP(req(p.Key, p.Secret, "same-"+policy))
				}()
			}
			wg.Wait()
			ok := 0
			for _, a := range answers {
				if a.Status == "SUCCESS" {
					ok++
				} else if a.Status != "FAILURE" {
					t.Errorf("unexpected answer %+v", a)
				}
			}
			d := n.device("same-" + policy)
			if d == nil {
				t.Fatal("no device")
			}
			cs := n.credentials(d.ID)
			switch policy {
			case "never":
				if ok != 1 || len(cs) != 1 {
					t.Fatalf("%d successes and %d credentials, want 1 and 1", ok, len(cs))
				}
			case "rotate":
				// On one node identical requests take turns: each one rotates.
				if ok != workers || activeCount(cs) != 1 || len(cs) != ok {
					t.Fatalf("%d successes, %d credentials of which %d active: want %d, one per success, one active", ok, len(cs), activeCount(cs), workers)
				}
			}
		})
	}
	count := 0
	for _, d := range n.devices() {
		if strings.HasPrefix(d.Name, "same-") {
			count++
		}
	}
	if count != 2 {
		t.Fatalf("%d devices, want 2", count)
	}
}

// TestMosquittoClients plays the device with the mosquitto command-line
// clients: mosquitto_rr (request and response on one connection, as
// provisioning requires) then mosquitto_pub with the token, as in
// ThingsBoard's docs.
func TestMosquittoClients(t *testing.T) {
	rr := testutil.RequireTool(t, "mosquitto_rr")
	pub := testutil.RequireTool(t, "mosquitto_pub")
	n := startNode(t, "")
	p := n.createProfile("cli", "allow-create", "ACCESS_TOKEN", "never")
	host, port, _ := strings.Cut(n.mqtt, ":")

	for _, version := range []string{"mqttv5", "mqttv311"} {
		t.Run(version, func(t *testing.T) {
			name := "cli-" + version
			out, err := exec.Command(rr, "-h", host, "-p", port, "-V", version, "-u", "provision", "-q", "1", "-W", "10",
				"-t", "/provision/request", "-e", "/provision/response", "-m", req(p.Key, p.Secret, name)).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_rr: %v\n%s", err, out)
			}
			var a tbAnswer
			if err := json.Unmarshal(out, &a); err != nil || a.Status != "SUCCESS" {
				t.Fatalf("mosquitto_rr answer %q: %v", out, err)
			}
			out, err = exec.Command(pub, "-d", "-q", "1", "-h", host, "-p", port, "-V", version,
				"-t", "v1/devices/me/telemetry", "-u", a.token(t), "-m", `{"temperature":25}`).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub with the new token: %v\n%s", err, out)
			}
			out, err = exec.Command(pub, "-q", "1", "-h", host, "-p", port, "-V", version,
				"-t", "v1/devices/me/telemetry", "-u", "not-a-token", "-m", `{}`).CombinedOutput()
			if err == nil {
				t.Fatalf("mosquitto_pub with a bad token succeeded: %s", out)
			}
		})
	}
}
