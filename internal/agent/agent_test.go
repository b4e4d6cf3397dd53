package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/testutil"
)

// TestProvisionOnce: the first run provisions and stores the credentials
// (0600); later runs read them and never provision again, whatever the
// credential type.
func TestProvisionOnce(t *testing.T) {
	h := startHub(t)
	p := h.profile("once", "never")
	for _, tc := range []struct {
		name  string
		creds CredentialsConfig
		check func(t *testing.T, st *State)
	}{
		{"generated token", CredentialsConfig{Type: CredentialsAccessToken}, func(t *testing.T, st *State) {
			if st.Token == "" {
				t.Error("no token stored")
			}
		}},
		{"given token", CredentialsConfig{Type: CredentialsAccessToken, Token: "given-token-0123456789"}, func(t *testing.T, st *State) {
			if st.Token != "given-token-0123456789" {
				t.Errorf("token %q, want the given one", st.Token)
			}
		}},
		{"generated basic", CredentialsConfig{Type: CredentialsMQTTBasic}, func(t *testing.T, st *State) {
			if st.ClientID == "" || st.Username == "" || st.Password == "" {
				t.Errorf("incomplete MQTT_BASIC state %+v", st)
			}
		}},
		{"given basic", CredentialsConfig{Type: CredentialsMQTTBasic, ClientID: "cid-given", Username: "user-given", Password: "pw-given-123"}, func(t *testing.T, st *State) {
			if st.ClientID != "cid-given" || st.Username != "user-given" || st.Password != "pw-given-123" {
				t.Errorf("MQTT_BASIC state %+v, want the given values", st)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "once-" + strings.ReplaceAll(tc.name, " ", "-")
			c := h.testConfig(t, p, name)
			c.Credentials = tc.creds
			writeTelemetry(t, c, `{"run":1}`)
			if err := newAgent(t, c).Once(context.Background()); err != nil {
				t.Fatalf("first run: %v", err)
			}
			fi, err := os.Stat(c.StateFile)
			if err != nil {
				t.Fatal(err)
			}
			if perm := fi.Mode().Perm(); perm != 0o600 {
				t.Errorf("state file mode %o, want 600", perm)
			}
			st := mustState(t, c.StateFile)
			if st.CredentialsType != tc.creds.Type || st.DeviceName != name {
				t.Errorf("state %+v", st)
			}
			tc.check(t, st)
			id, n := h.device(name)
			if n != 1 {
				t.Fatalf("%d devices named %s, want 1", n, name)
			}
			eventually(t, "first telemetry", func() bool { return h.latest(id, "run") == "1" })

			// A restart: a new agent on the same state file.
			writeTelemetry(t, c, `{"run":2}`)
			if err := newAgent(t, c).Once(context.Background()); err != nil {
				t.Fatalf("second run: %v", err)
			}
			if again := mustState(t, c.StateFile); *again != *st {
				t.Errorf("state changed on restart:\n%+v\n%+v", st, again)
			}
			if creds := h.credentials(id); len(creds) != 1 || creds[0].Status != "active" {
				t.Errorf("credentials after restart: %+v, want the one active credential", creds)
			}
			eventually(t, "telemetry after restart", func() bool { return h.latest(id, "run") == "2" })
		})
	}
}

// TestSurvivesServerRestart: the server goes away and comes back on the same
// data and port; the agent reconnects with its stored credentials and keeps
// sending, without provisioning again.
func TestSurvivesServerRestart(t *testing.T) {
	h := startHub(t)
	p := h.profile("restart", "never")
	c := h.testConfig(t, p, "restart-1")
	r := runAgent(t, newAgent(t, c))
	var id string
	eventually(t, "provisioning", func() bool { id, _ = h.device("restart-1"); return id != "" })
	eventually(t, "telemetry", func() bool { return h.latest(id, "phase") == "1" })
	st := mustState(t, c.StateFile)

	h.stop()
	writeTelemetry(t, c, `{"phase":2}`)
	time.Sleep(700 * time.Millisecond) // a few failed reconnections
	h.start()

	eventually(t, "telemetry after the restart", func() bool { return h.latest(id, "phase") == "2" })
	if again := mustState(t, c.StateFile); *again != *st {
		t.Errorf("state changed: %+v, then %+v", st, again)
	}
	if creds := h.credentials(id); len(creds) != 1 {
		t.Errorf("credentials: %+v, want just the first", creds)
	}
	r.stop(t)
}

// TestRefusedCredentials: the operator revokes the device's credential (or
// disables the device); the agent is refused at its next CONNECT and
// provisions again, once, and the server decides: the profile's
// reprovisioning policy, the device's status.
func TestRefusedCredentials(t *testing.T) {
	h := startHub(t)
	for _, tc := range []struct {
		name, policy string
		act          string   // revoke or disable
		wantErr      []string // what the exit error says; none: the agent continues
	}{
		{"never", "never", "revoke", []string{"refused to provision it again", `"never"`, `"rotate"`, "device delete"}},
		{"rotate", "rotate", "revoke", nil},
		{"disabled", "rotate", "disable", []string{"refused to provision it again", "device enable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := h.profile("refused-"+tc.name, tc.policy)
			name := "refused-" + tc.name
			c := h.testConfig(t, p, name)
			r := runAgent(t, newAgent(t, c))
			var id string
			eventually(t, "provisioning", func() bool { id, _ = h.device(name); return id != "" })
			eventually(t, "telemetry", func() bool { return h.latest(id, "phase") == "1" })
			first := mustState(t, c.StateFile)
			if tc.act == "revoke" {
				h.api("POST", "/api/credentials/"+h.credentials(id)[0].ID+"/revoke", nil, http.StatusOK, nil)
			} else {
				h.api("POST", "/api/devices/"+id+"/disable", nil, http.StatusOK, nil)
			}

			if tc.wantErr != nil {
				err := r.exited(t)
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("agent ended with %v, want ErrRefused", err)
				}
				for _, want := range append(tc.wantErr, c.StateFile) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				if again := mustState(t, c.StateFile); *again != *first {
					t.Error("state file changed although nothing was issued")
				}
				return
			}
			writeTelemetry(t, c, `{"phase":2}`)
			eventually(t, "telemetry with new credentials", func() bool { return h.latest(id, "phase") == "2" })
			second := mustState(t, c.StateFile)
			if second.Token == first.Token || second.Token == "" {
				t.Errorf("token not rotated: %q then %q", first.Token, second.Token)
			}
			active := 0
			for _, cr := range h.credentials(id) {
				if cr.Status == "active" {
					active++
				}
			}
			if active != 1 {
				t.Errorf("%d active credentials, want 1", active)
			}
			if _, n := h.device(name); n != 1 {
				t.Errorf("%d devices, want 1", n)
			}
			r.stop(t)
		})
	}
}

// TestRPC: a command sent through the management API is answered by the
// RPC command; one that fails answers {"error": …}.
func TestRPC(t *testing.T) {
	h := startHub(t)
	p := h.profile("rpc", "never")
	for _, tc := range []struct {
		name, handler string
		check         func(t *testing.T, result json.RawMessage)
	}{
		{"echo", `cat`, func(t *testing.T, res json.RawMessage) {
			var got struct {
				Method string
				Params struct{ Open bool }
			}
			if err := json.Unmarshal(res, &got); err != nil || got.Method != "setValve" || !got.Params.Open {
				t.Errorf("result %s, want the request echoed", res)
			}
		}},
		{"fails", `echo broken >&2; exit 3`, func(t *testing.T, res json.RawMessage) {
			var got struct{ Error string }
			if err := json.Unmarshal(res, &got); err != nil || !strings.Contains(got.Error, "broken") {
				t.Errorf("result %s, want an error with the command's stderr", res)
			}
		}},
		{"times out", `sleep 5`, func(t *testing.T, res json.RawMessage) {
			var got struct{ Error string }
			if err := json.Unmarshal(res, &got); err != nil || !strings.Contains(got.Error, "timed out") {
				t.Errorf("result %s, want a timeout error", res)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "rpc-" + strings.ReplaceAll(tc.name, " ", "-")
			c := h.testConfig(t, p, name)
			c.Handlers.RPC = tc.handler
			c.Handlers.Timeout = 500 * time.Millisecond
			r := runAgent(t, newAgent(t, c))
			var id string
			eventually(t, "connection", func() bool {
				id, _ = h.device(name)
				return id != "" && h.latest(id, "phase") == "1"
			})
			var out struct {
				Result json.RawMessage `json:"result"`
			}
			h.api("POST", "/api/devices/"+id+"/rpc", map[string]any{"method": "setValve", "params": map[string]any{"open": true}, "timeout": "5s"},
				http.StatusOK, &out)
			tc.check(t, out.Result)
			r.stop(t)
		})
	}
}

// TestSharedAttributes: shared attributes set while the device was away
// reach the attribute command at connect; one set while it is connected
// reaches it at once.
func TestSharedAttributes(t *testing.T) {
	h := startHub(t)
	p := h.profile("attrs", "never")
	c := h.testConfig(t, p, "attrs-1")
	// Provision first, so the device exists for the operator.
	if err := newAgent(t, c).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	id, _ := h.device("attrs-1")
	h.api("PUT", "/api/devices/"+id+"/attributes/shared", map[string]any{"mode": "eco"}, http.StatusOK, nil)

	got := filepath.Join(t.TempDir(), "attributes.log")
	c.Handlers.Attributes = `cat >> '` + got + `'; echo >> '` + got + `'`
	r := runAgent(t, newAgent(t, c))
	read := func() string { b, _ := os.ReadFile(got); return string(b) }
	eventually(t, "attributes at connect", func() bool { return strings.Contains(read(), `"mode":"eco"`) })
	h.api("PUT", "/api/devices/"+id+"/attributes/shared", map[string]any{"targetTemperature": 22}, http.StatusOK, nil)
	eventually(t, "attribute update", func() bool { return strings.Contains(read(), `"targetTemperature":22`) })
	r.stop(t)
}

// TestProvisionRefused: a wrong secret is final: the agent says so and
// writes no state.
func TestProvisionRefused(t *testing.T) {
	h := startHub(t)
	p := h.profile("wrong", "never")
	p.Secret = "not-the-secret"
	c := h.testConfig(t, p, "wrong-1")
	err := newAgent(t, c).Run(context.Background())
	var pe *ProvisionError
	if !errors.As(err, &pe) || pe.Status != "NOT_FOUND" || !errors.Is(err, ErrRefused) {
		t.Fatalf("Run: %v, want a NOT_FOUND ProvisionError", err)
	}
	if _, err := os.Stat(c.StateFile); !os.IsNotExist(err) {
		t.Errorf("state file written after a refusal: %v", err)
	}
}

// TestUnreachableServer: Run keeps retrying (with backoff) until stopped,
// then ends cleanly; Once gives up at once.
func TestUnreachableServer(t *testing.T) {
	c := &Config{Server: "127.0.0.1:1", Provision: ProvisionConfig{Key: "k", Secret: "s"}, Device: "x",
		StateFile: filepath.Join(t.TempDir(), "state.json")}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, c)
	if err := a.Once(context.Background()); err == nil {
		t.Error("Once against a closed port succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Errorf("Run ended with %v, want a clean stop", err)
	}
}

// TestX509 provisions with the device's own certificate over MQTTS (the
// certificate PEM as the request's hash) and then connects with it as the
// TLS client certificate.
func TestX509(t *testing.T) {
	h := startHub(t)
	p := h.profile("x509", "never")
	dir := t.TempDir()
	own := testutil.NewCert(t, "meter-9", nil, testutil.CertOptions{})
	keyDER, err := x509.MarshalPKCS8PrivateKey(own.Key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + h.http + "/ca/chain.pem")
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	files := map[string][]byte{"ca.pem": chain, "cert.pem": []byte(own.PEM()),
		"key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := h.testConfig(t, p, "meter-9")
	c.Server = h.mqtts
	c.TLS = &TLSConfig{CAFile: filepath.Join(dir, "ca.pem")}
	c.Credentials = CredentialsConfig{Type: CredentialsX509, CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	for run := range 2 {
		writeTelemetry(t, c, fmt.Sprintf(`{"run":%d}`, run))
		if err := newAgent(t, c).Once(context.Background()); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		id, _ := h.device("meter-9")
		eventually(t, "telemetry", func() bool { return h.latest(id, "run") == fmt.Sprint(run) })
		if creds := h.credentials(id); len(creds) != 1 || creds[0].Type != CredentialsX509 {
			t.Errorf("credentials %+v, want one X509_CERTIFICATE", creds)
		}
	}
	// A revoked certificate is refused in the handshake: that is a refusal
	// too, and under "never" the agent stops and says so.
	id, _ := h.device("meter-9")
	h.api("POST", "/api/credentials/"+h.credentials(id)[0].ID+"/revoke", nil, http.StatusOK, nil)
	if err := newAgent(t, c).Once(context.Background()); !errors.Is(err, ErrRefused) {
		t.Errorf("after revocation: %v, want ErrRefused", err)
	}
}

// TestLostStateFile: a device that lost its state file cannot provision
// again under "never"; the agent says what the operator must do.
func TestLostStateFile(t *testing.T) {
	h := startHub(t)
	p := h.profile("lost", "never")
	c := h.testConfig(t, p, "lost-1")
	if err := newAgent(t, c).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(c.StateFile); err != nil {
		t.Fatal(err)
	}
	err := newAgent(t, c).Once(context.Background())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "lost its state file") || !strings.Contains(err.Error(), `"rotate"`) {
		t.Fatalf("err %v, want ErrRefused saying what to do", err)
	}
}
