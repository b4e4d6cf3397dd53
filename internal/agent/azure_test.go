package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

const (
	azureKey1 = "dGhpcyBpcyBhIDY0LWJ5dGUgZGV2aWNlIGtleSBmb3IgdGVzdHMgMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"
	azureKey2 = "c2Vjb25kYXJ5IGtleSBmb3IgZHBzIHRlc3RzLCA2NCBieXRlcyBsb25nIDAxMjM0NTY3ODlhYmNkZWYwMTIz"
)

// startAzureHub starts a node whose MQTTS listener (DPS and the hub) is
// on a port chosen now, so that the hub DPS assigns, "localhost:<port>",
// stays the same across restarts and matches the server certificate.
func startAzureHub(t *testing.T) *hub {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	h := &hub{t: t, dataDir: t.TempDir(), http: "127.0.0.1:0", mqtt: "127.0.0.1:0",
		mqtts: fmt.Sprintf("127.0.0.1:%d", port), hubName: fmt.Sprintf("localhost:%d", port)}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *hub) idScope() string {
	h.t.Helper()
	var s struct {
		IDScope string `json:"idScope"`
	}
	h.api("GET", "/api/idscope", nil, http.StatusOK, &s)
	return s.IDScope
}

// caFile writes the node's CA chain to a file.
func (h *hub) caFile(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + h.http + "/ca/chain.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	chain, _ := io.ReadAll(resp.Body)
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// enroll creates an individual enrollment with a symmetric key, and
// desired properties in its initial twin.
func (h *hub) enroll(regID, status, policy string, desired map[string]any) {
	h.t.Helper()
	e := map[string]any{"registrationId": regID, "status": status, "reprovisionPolicy": policy,
		"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": azureKey1, "secondaryKey": azureKey2}}}
	if desired != nil {
		e["initialTwin"] = map[string]any{"desiredProperties": desired}
	}
	h.api("POST", "/api/enrollments", e, http.StatusCreated, nil)
}

// operationID is the registration record's operation id.
func (h *hub) operationID(regID string) string {
	h.t.Helper()
	r, err := h.srv.Store().GetRegistration(context.Background(), registry.DefaultOrgID, regID)
	if err != nil {
		h.t.Fatalf("registration %s: %v", regID, err)
	}
	return r.OperationID
}

// azureConfig is a configuration for registration id regID on h with
// the credential in d, telemetry from a file the test writes.
func (h *hub) azureConfig(t *testing.T, regID string, d DPSConfig) *Config {
	t.Helper()
	dir := t.TempDir()
	d.Host, d.IDScope = "localhost:"+strings.TrimPrefix(h.hubName, "localhost:"), h.idScope()
	if d.RegistrationID == "" {
		d.RegistrationID = regID
	}
	c := &Config{
		Dialect:   DialectAzureDPS,
		DPS:       &d,
		CAFile:    h.caFile(t),
		StateFile: filepath.Join(dir, "state", "state.json"),
		Telemetry: TelemetryConfig{Interval: 100 * time.Millisecond, Source: SourceFile, File: filepath.Join(dir, "telemetry.json")},
	}
	writeTelemetry(t, c, `{"phase":1}`)
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	return c
}

func statePerm(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("state file mode %o, want 600", perm)
	}
}

// TestAzureSymmetricKey is an Azure device's life: it registers once
// through DPS (register, wait retry-after, poll, assigned), stores the
// assignment 0600, connects to its hub, sends telemetry, gets its desired
// properties at connect and later, reports its facts, answers direct
// methods; the server restarts and the device comes back without
// registering again.
func TestAzureSymmetricKey(t *testing.T) {
	h := startAzureHub(t)
	h.enroll("press-1", "enabled", "reprovision-and-migrate", map[string]any{"mode": "eco"})
	c := h.azureConfig(t, "press-1", DPSConfig{SymmetricKey: azureKey1})
	got := filepath.Join(t.TempDir(), "desired.log")
	c.Handlers.Attributes = `cat >> '` + got + `'; echo >> '` + got + `'`
	c.Handlers.RPC = `read -r req; case "$req" in *fail*) echo broken >&2; exit 3;; esac; printf '{"done":true,"req":%s}' "$req"`
	msgs := filepath.Join(t.TempDir(), "messages.log")
	c.Handlers.Message = `cat >> '` + msgs + `'; echo >> '` + msgs + `'`
	c.Handlers.Timeout = 2 * time.Second
	r := runAgent(t, newAgent(t, c))

	var id string
	eventually(t, "registration", func() bool { id, _ = h.device("press-1"); return id != "" })
	eventually(t, "telemetry", func() bool { return h.latest(id, "phase") == "1" })
	statePerm(t, c.StateFile)
	st := mustState(t, c.StateFile)
	if st.Dialect != DialectAzureDPS || st.CredentialsType != CredentialsSymmetricKey || st.SymmetricKey != azureKey1 ||
		st.AssignedHub != h.hubName || st.DeviceID != "press-1" || st.OperationID == "" {
		t.Fatalf("state %+v", st)
	}
	op := h.operationID("press-1")
	if op != st.OperationID {
		t.Errorf("state operation %s, registration %s", st.OperationID, op)
	}

	read := func() string { b, _ := os.ReadFile(got); return string(b) }
	eventually(t, "desired properties at connect", func() bool { return strings.Contains(read(), `"mode":"eco"`) })
	h.api("PUT", "/api/devices/"+id+"/attributes/shared", map[string]any{"targetTemperature": 22}, http.StatusOK, nil)
	eventually(t, "desired properties update", func() bool { return strings.Contains(read(), `"targetTemperature":22`) })

	var attrs struct {
		Attributes []struct {
			Key string `json:"key"`
		} `json:"attributes"`
	}
	eventually(t, "reported properties", func() bool {
		h.api("GET", "/api/devices/"+id+"/attributes?scope=client", nil, http.StatusOK, &attrs)
		for _, a := range attrs.Attributes {
			if a.Key == "agentVersion" {
				return true
			}
		}
		return false
	})

	var out struct {
		Result json.RawMessage `json:"result"`
	}
	h.api("POST", "/api/devices/"+id+"/rpc", map[string]any{"method": "setValve", "params": map[string]any{"open": true}, "timeout": "5s"},
		http.StatusOK, &out)
	var res struct {
		Status  int
		Payload struct {
			Done bool
			Req  struct {
				Method string
				Params struct{ Open bool }
			}
		}
	}
	if err := json.Unmarshal(out.Result, &res); err != nil || res.Status != 200 || !res.Payload.Done ||
		res.Payload.Req.Method != "setValve" || !res.Payload.Req.Params.Open {
		t.Errorf("direct method result %s", out.Result)
	}
	h.api("POST", "/api/devices/"+id+"/rpc", map[string]any{"method": "fail", "timeout": "5s"}, http.StatusOK, &out)
	var failed struct {
		Status  int
		Payload struct{ Error string }
	}
	if err := json.Unmarshal(out.Result, &failed); err != nil || failed.Status != 500 || !strings.Contains(failed.Payload.Error, "broken") {
		t.Errorf("failed direct method result %s", out.Result)
	}

	h.api("POST", "/api/devices/"+id+"/messages", map[string]any{"payload": map[string]any{"stop": 3}, "properties": map[string]string{"priority": "high"}},
		http.StatusAccepted, nil)
	eventually(t, "cloud-to-device message", func() bool {
		b, _ := os.ReadFile(msgs)
		return strings.Contains(string(b), `"payload":{"stop":3}`) && strings.Contains(string(b), `"priority":"high"`)
	})

	h.stop()
	writeTelemetry(t, c, `{"phase":2}`)
	time.Sleep(700 * time.Millisecond) // a few failed reconnections
	h.start()
	eventually(t, "telemetry after the restart", func() bool { return h.latest(id, "phase") == "2" })
	if again := mustState(t, c.StateFile); *again != *st {
		t.Errorf("state changed: %+v, then %+v", st, again)
	}
	if again := h.operationID("press-1"); again != op {
		t.Errorf("registered again across the restart: operation %s, then %s", op, again)
	}
	r.stop(t)
}

// TestAzureGroupKey derives the device key from the group key, and
// stores only the derived key.
func TestAzureGroupKey(t *testing.T) {
	h := startAzureHub(t)
	h.api("POST", "/api/enrollment-groups", map[string]any{"enrollmentGroupId": "line-3",
		"attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": azureKey1}}},
		http.StatusCreated, nil)
	c := h.azureConfig(t, "unit-7", DPSConfig{GroupKey: azureKey1})
	for run := range 2 {
		writeTelemetry(t, c, fmt.Sprintf(`{"run":%d}`, run))
		if err := newAgent(t, c).Once(context.Background()); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		id, _ := h.device("unit-7")
		eventually(t, "telemetry", func() bool { return h.latest(id, "run") == fmt.Sprint(run) })
	}
	want, _ := attest.DeriveDeviceKey(azureKey1, "unit-7")
	if st := mustState(t, c.StateFile); st.SymmetricKey != want {
		t.Errorf("stored key %q, want the derived %q", st.SymmetricKey, want)
	}
	b, _ := os.ReadFile(c.StateFile)
	if strings.Contains(string(b), azureKey1) {
		t.Error("the group key is in the state file")
	}
	statePerm(t, c.StateFile)
}

// TestAzureX509 registers with the device's certificate and connects to
// the hub with it; the state names the files.
func TestAzureX509(t *testing.T) {
	h := startAzureHub(t)
	leaf := testutil.NewCert(t, "meter-9", nil, testutil.CertOptions{})
	h.api("POST", "/api/enrollments", map[string]any{"registrationId": "meter-9",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{"certificatePem": leaf.PEM()}}}, http.StatusCreated, nil)
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, []byte(leaf.PEM()), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	// No registrationId: the certificate's common name.
	c := h.azureConfig(t, "", DPSConfig{Certificate: certFile, Key: keyFile})
	if c.DPS.RegistrationID != "meter-9" {
		t.Fatalf("registration id %q, want the common name", c.DPS.RegistrationID)
	}
	var op string
	for run := range 2 {
		writeTelemetry(t, c, fmt.Sprintf(`{"run":%d}`, run))
		if err := newAgent(t, c).Once(context.Background()); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		id, _ := h.device("meter-9")
		eventually(t, "telemetry", func() bool { return h.latest(id, "run") == fmt.Sprint(run) })
		if run == 0 {
			op = h.operationID("meter-9")
		} else if again := h.operationID("meter-9"); again != op {
			t.Errorf("registered twice: %s, then %s", op, again)
		}
	}
	st := mustState(t, c.StateFile)
	if st.CredentialsType != CredentialsX509 || st.CertFile != certFile || st.KeyFile != keyFile || st.SymmetricKey != "" {
		t.Errorf("state %+v", st)
	}
	statePerm(t, c.StateFile)
}

// TestAzureDisabledEnrollment: DPS answers "disabled"; the agent stops
// with ErrRefused and says what to do, and writes no state.
func TestAzureDisabledEnrollment(t *testing.T) {
	h := startAzureHub(t)
	h.enroll("off-1", "disabled", "reprovision-and-migrate", nil)
	c := h.azureConfig(t, "off-1", DPSConfig{SymmetricKey: azureKey1})
	err := newAgent(t, c).Run(context.Background())
	var pe *ProvisionError
	if !errors.Is(err, ErrRefused) || !errors.As(err, &pe) || pe.Status != "disabled" || !strings.Contains(err.Error(), "enrollment enable off-1") {
		t.Fatalf("Run: %v, want a disabled ProvisionError saying how to enable it", err)
	}
	t.Logf("disabled: %v", err)
	if _, err := os.Stat(c.StateFile); !os.IsNotExist(err) {
		t.Errorf("state file written after a refusal: %v", err)
	}
	// A wrong key: 401, final too.
	h.enroll("on-1", "enabled", "reprovision-and-migrate", nil)
	c = h.azureConfig(t, "on-1", DPSConfig{SymmetricKey: "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk="})
	if err := newAgent(t, c).Run(context.Background()); !errors.As(err, &pe) || pe.Status != "401" {
		t.Fatalf("Run with a wrong key: %v, want a 401 ProvisionError", err)
	}
}

// TestAzureRefusedOnHub: the hub refuses the stored credentials; the
// agent registers again, once, and DPS decides: a revoked credential is
// issued again (reprovision-and-migrate), a disabled device is refused.
func TestAzureRefusedOnHub(t *testing.T) {
	h := startAzureHub(t)
	h.enroll("re-1", "enabled", "reprovision-and-migrate", nil)
	c := h.azureConfig(t, "re-1", DPSConfig{SymmetricKey: azureKey1})
	r := runAgent(t, newAgent(t, c))
	var id string
	eventually(t, "registration", func() bool { id, _ = h.device("re-1"); return id != "" })
	eventually(t, "telemetry", func() bool { return h.latest(id, "phase") == "1" })
	op := h.operationID("re-1")

	h.api("POST", "/api/credentials/"+h.credentials(id)[0].ID+"/revoke", nil, http.StatusOK, nil)
	writeTelemetry(t, c, `{"phase":2}`)
	eventually(t, "telemetry after registering again", func() bool { return h.latest(id, "phase") == "2" })
	if again := h.operationID("re-1"); again == op {
		t.Error("the agent did not register again")
	}

	h.api("POST", "/api/devices/"+id+"/disable", nil, http.StatusOK, nil)
	err := r.exited(t)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "DPS refused to register it again") || !strings.Contains(err.Error(), c.StateFile) {
		t.Fatalf("agent ended with %v, want ErrRefused saying DPS refused", err)
	}
	t.Logf("refused on the hub, then by DPS: %v", err)
}

func TestAzureConfig(t *testing.T) {
	dir := t.TempDir()
	leaf := testutil.NewCert(t, "cam-1", nil, testutil.CertOptions{})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(leaf.Key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), []byte(leaf.PEM()), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.pem"), []byte(leaf.PEM()), 0o600)
	base := "dialect: azure-dps\nstateFile: s.json\ncaFile: " + filepath.Join(dir, "ca.pem") + "\n"
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"symmetric key", base + "dps: {host: dps.example.com, idScope: 0ne0001, registrationId: cam-1, symmetricKey: " + azureKey1 + "}\n", ""},
		{"group key", base + "dps: {host: 'dps.example.com:443', idScope: 0ne0001, registrationId: cam-1, groupKey: " + azureKey1 + ", payload: {model: x}}\n", ""},
		{"x509", base + "dps: {host: dps.example.com, idScope: 0ne0001, certificate: " + filepath.Join(dir, "cert.pem") + ", key: " + filepath.Join(dir, "key.pem") + "}\n", ""},
		{"no dps", base, "dps: required"},
		{"two credentials", base + "dps: {host: h, idScope: s, registrationId: cam-1, symmetricKey: " + azureKey1 + ", groupKey: " + azureKey1 + "}\n", "exactly one credential"},
		{"no credential", base + "dps: {host: h, idScope: s, registrationId: cam-1}\n", "exactly one credential"},
		{"bad key", base + "dps: {host: h, idScope: s, registrationId: cam-1, symmetricKey: '!!'}\n", "not a base64 key"},
		{"upper case id", base + "dps: {host: h, idScope: s, registrationId: Cam-1, symmetricKey: " + azureKey1 + "}\n", "lower case"},
		{"bad id", base + "dps: {host: h, idScope: s, registrationId: 'cam 1', symmetricKey: " + azureKey1 + "}\n", "may hold only"},
		{"cn mismatch", base + "dps: {host: h, idScope: s, registrationId: cam-2, certificate: " + filepath.Join(dir, "cert.pem") + ", key: " + filepath.Join(dir, "key.pem") + "}\n", "common name"},
		{"missing cert", base + "dps: {host: h, idScope: s, registrationId: cam-1, certificate: /nope.pem, key: /nope.key}\n", "no such file"},
		{"missing ca", strings.Replace(base, filepath.Join(dir, "ca.pem"), "/nope.pem", 1) + "dps: {host: h, idScope: s, registrationId: cam-1, symmetricKey: " + azureKey1 + "}\n", "caFile"},
		{"server given", base + "server: h:8883\ndps: {host: h, idScope: s, registrationId: cam-1, symmetricKey: " + azureKey1 + "}\n", "server: not used"},
		{"no scope", base + "dps: {host: h, registrationId: cam-1, symmetricKey: " + azureKey1 + "}\n", "dps.idScope: required"},
		{"unknown field", base + "dps: {host: h, idScope: s, registrationId: cam-1, symetricKey: " + azureKey1 + "}\n", "field symetricKey not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.DPS.RegistrationID != "cam-1" || c.Device != "cam-1" {
				t.Errorf("registration id %q, device %q", c.DPS.RegistrationID, c.Device)
			}
			if _, err := New(c, Options{}); err != nil {
				t.Errorf("New: %v", err)
			}
		})
	}
}

// TestAzureTokenRenewal: the agent reconnects with a fresh SAS token
// before the one it connected with expires.
func TestAzureTokenRenewal(t *testing.T) {
	h := startAzureHub(t)
	h.enroll("renew-1", "enabled", "reprovision-and-migrate", nil)
	c := h.azureConfig(t, "renew-1", DPSConfig{SymmetricKey: azureKey1})
	a := newAgent(t, c)
	a.opts.TokenLifetime = 1200 * time.Millisecond
	r := runAgent(t, a)
	var id string
	eventually(t, "registration", func() bool { id, _ = h.device("renew-1"); return id != "" })
	lastConnect := func() time.Time {
		var st struct {
			Connected   bool       `json:"connected"`
			LastConnect *time.Time `json:"lastConnect"`
		}
		h.api("GET", "/api/devices/"+id+"/state", nil, http.StatusOK, &st)
		if st.LastConnect == nil || !st.Connected {
			return time.Time{}
		}
		return *st.LastConnect
	}
	var first time.Time
	eventually(t, "connection", func() bool { first = lastConnect(); return !first.IsZero() })
	eventually(t, "a reconnection with a new token", func() bool { return lastConnect().After(first) })
	writeTelemetry(t, c, `{"phase":2}`)
	eventually(t, "telemetry after the renewal", func() bool { return h.latest(id, "phase") == "2" })
	r.stop(t)
}
