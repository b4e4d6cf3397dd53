package hub

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// CONNACK codes.
const (
	v3NotAuthorized         = 5
	v5BadUserNameOrPassword = 0x86
	v5NotAuthorized         = 0x87
)

// connectCode connects with a raw client and returns the CONNACK code,
// closing the connection unless it was accepted (then the client is
// returned too).
func connectCode(t *testing.T, e *env, v byte, rc rawConnect) (byte, *rawClient) {
	t.Helper()
	rc.Clean = true
	cl, ack := dialRaw(t, e.addr, v, rc)
	if ack.ReasonCode != 0 {
		cl.waitClosed()
		return ack.ReasonCode, nil
	}
	return 0, cl
}

// whoIs publishes on the device telemetry topic and returns the session
// the device topic handler saw.
func whoIs(t *testing.T, e *env, cl *rawClient) DeviceSession {
	t.Helper()
	if ack, ok := cl.publish("v1/devices/me/telemetry", 1, []byte(`{"t":1}`), packets.Properties{}); !ok || ack.ReasonCode != 0 {
		t.Fatalf("telemetry refused (ok=%v, reason 0x%02x)", ok, ack.ReasonCode)
	}
	return e.nextDevicePub(t).sess
}

func TestAccessTokenAuth(t *testing.T) {
	e := newEnv(t)
	tok, dev, cred := e.tokenDevice()
	disabledTok := "disabled-token-0123456789"
	e.device(registry.DeviceDisabled, tokenCred(disabledTok))
	revokedTok := "revoked-token-0123456789"
	_, rcreds := e.device(registry.DeviceEnabled, tokenCred(revokedTok))
	if _, err := e.store.RevokeCredential(context.Background(), registry.DefaultOrgID, rcreds[0].ID); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		user, pass []byte
		v          byte
		want       byte
	}{
		{"token v3.1.1", []byte(tok), nil, 4, 0},
		{"token v5", []byte(tok), nil, 5, 0},
		{"token v3.1", []byte(tok), nil, 3, 0},
		{"token with a password (ignored)", []byte(tok), []byte("whatever"), 4, 0},
		{"unknown token v3.1.1", []byte("no-such-token"), nil, 4, v3NotAuthorized},
		{"unknown token v5", []byte("no-such-token"), nil, 5, v5BadUserNameOrPassword},
		{"token prefix", []byte(tok[:len(tok)-1]), nil, 4, v3NotAuthorized},
		{"revoked token", []byte(revokedTok), nil, 4, v3NotAuthorized},
		{"disabled device v3.1.1", []byte(disabledTok), nil, 4, v3NotAuthorized},
		{"disabled device v3.1", []byte(disabledTok), nil, 3, v3NotAuthorized},
		{"disabled device v5", []byte(disabledTok), nil, 5, v5NotAuthorized},
		{"no user name", nil, nil, 4, v3NotAuthorized},
		{"empty user name", []byte{}, nil, 5, v5BadUserNameOrPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, cl := connectCode(t, e, tc.v, rawConnect{ClientID: "tok-client", Username: tc.user, Password: tc.pass})
			if code != tc.want {
				t.Fatalf("CONNACK code 0x%02x, want 0x%02x", code, tc.want)
			}
			if cl == nil {
				return
			}
			s := whoIs(t, e, cl)
			if s.DeviceID != dev.ID || s.CredentialID != cred.ID || s.CredentialType != registry.CredentialAccessToken {
				t.Errorf("session %+v, want device %s credential %s", s, dev.ID, cred.ID)
			}
			if s.Username != "" {
				t.Error("the access token is exposed as the session's user name")
			}
			if s.ClientID != "tok-client" || s.ProtocolVersion != tc.v || s.Listener != "mqtt" {
				t.Errorf("session %+v", s.Session)
			}
		})
	}

	// Refusals are audited (deduplicated per source, reason and device).
	eventually(t, "refusals audited", func() bool {
		evs, err := e.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{Action: "mqtt.connect"})
		if err != nil {
			t.Fatal(err)
		}
		results := map[string]bool{}
		for _, ev := range evs {
			results[ev.Result] = true
			if strings.Contains(ev.Detail, disabledTok) || strings.Contains(ev.Detail, tok) {
				t.Fatalf("audit detail leaks a token: %q", ev.Detail)
			}
		}
		return results[resultUnknownCredentials] && results[resultDeviceDisabled]
	})
}

func TestMQTTBasicAuth(t *testing.T) {
	e := newEnv(t)
	full, _ := e.device(registry.DeviceEnabled, basicCred("cid-a", "user-a", "pw-a"))
	cidOnly, _ := e.device(registry.DeviceEnabled, basicCred("cid-b", "", ""))
	userPass, _ := e.device(registry.DeviceEnabled, basicCred("", "user-c", "pw-c"))
	noPass, _ := e.device(registry.DeviceEnabled, basicCred("cid-d", "user-d", ""))
	e.device(registry.DeviceDisabled, basicCred("cid-e", "user-e", "pw-e"))

	type creds struct{ cid, user, pass string }
	str := func(s string) []byte {
		if s == "" {
			return nil
		}
		return []byte(s)
	}
	for _, tc := range []struct {
		name string
		c    creds
		want *registry.Device // nil: refused
	}{
		{"client id, user name and password", creds{"cid-a", "user-a", "pw-a"}, full},
		{"wrong password", creds{"cid-a", "user-a", "pw-x"}, nil},
		{"missing password", creds{"cid-a", "user-a", ""}, nil},
		{"other client id", creds{"cid-x", "user-a", "pw-a"}, nil},
		{"client id alone", creds{"cid-b", "", ""}, cidOnly},
		// A user name is never taken for a client-id-only credential.
		{"client id alone, extra user name", creds{"cid-b", "someone", ""}, nil},
		{"client id alone, wrong client id", creds{"cid-bb", "", ""}, nil},
		{"user name and password, any client id", creds{"whatever", "user-c", "pw-c"}, userPass},
		{"user name and password, wrong password", creds{"whatever", "user-c", "nope"}, nil},
		{"user name without its password", creds{"whatever", "user-c", ""}, nil},
		{"client id and user name, no password", creds{"cid-d", "user-d", ""}, noPass},
		{"client id and user name, password ignored", creds{"cid-d", "user-d", "anything"}, noPass},
		{"client id and wrong user name", creds{"cid-d", "user-x", ""}, nil},
		{"disabled device", creds{"cid-e", "user-e", "pw-e"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, cl := connectCode(t, e, 4, rawConnect{ClientID: tc.c.cid, Username: str(tc.c.user), Password: str(tc.c.pass)})
			if tc.want == nil {
				if code != v3NotAuthorized {
					t.Fatalf("CONNACK code %d, want %d", code, v3NotAuthorized)
				}
				return
			}
			if code != 0 {
				t.Fatalf("refused with code %d", code)
			}
			s := whoIs(t, e, cl)
			if s.DeviceID != tc.want.ID || s.CredentialType != registry.CredentialMQTTBasic {
				t.Errorf("authenticated as %s (%s), want %s", s.DeviceID, s.CredentialType, tc.want.ID)
			}
			if s.Username != tc.c.user {
				t.Errorf("session user name %q, want %q", s.Username, tc.c.user)
			}
		})
	}
}

// TestMQTTBasicSlowPassword: a password the device or an operator chose is
// stored as a slow hash; it authenticates (again on reconnection, from the
// Verifier's cache) and a wrong one is refused.
func TestMQTTBasicSlowPassword(t *testing.T) {
	v := secret.NewVerifier(0)
	e := newEnv(t, func(o *Options) { o.Verifier = v })
	c := basicCred("cid-slow", "user-slow", "")
	c.SecretHash = secret.HashSlow("chosen-pw")
	d, _ := e.device(registry.DeviceEnabled, c)
	for _, tc := range []struct {
		pass string
		ok   bool
	}{{"chosen-pw", true}, {"chosen-pw", true}, {"chosen-pW", false}, {"", false}, {"chosen-pw", true}} {
		var pass []byte
		if tc.pass != "" {
			pass = []byte(tc.pass)
		}
		code, cl := connectCode(t, e, 4, rawConnect{ClientID: "cid-slow", Username: []byte("user-slow"), Password: pass})
		if !tc.ok {
			if code != v3NotAuthorized {
				t.Fatalf("password %q: CONNACK code %d, want %d", tc.pass, code, v3NotAuthorized)
			}
			continue
		}
		if code != 0 {
			t.Fatalf("password %q refused with code %d", tc.pass, code)
		}
		if s := whoIs(t, e, cl); s.DeviceID != d.ID {
			t.Fatalf("authenticated as %s, want %s", s.DeviceID, d.ID)
		}
		cl.c.Close()
	}
	if e.hub.opts.Verifier != v {
		t.Fatal("the Verifier given in Options is not used")
	}
}

// TestRevokedTokenNotTakenForClientIDDevice: a device whose token was
// revoked, reconnecting with that token as user name and a client id
// that happens to be another device's client-id-only MQTT_BASIC
// credential, is refused, not authenticated as the other device; that
// other device still connects with its client id and no user name.
func TestRevokedTokenNotTakenForClientIDDevice(t *testing.T) {
	e := newEnv(t)
	tok, _, cred := e.tokenDevice()
	if _, err := e.store.RevokeCredential(context.Background(), registry.DefaultOrgID, cred.ID); err != nil {
		t.Fatal(err)
	}
	other, _ := e.device(registry.DeviceEnabled, basicCred("shared-cid", "", ""))
	for _, v := range []byte{3, 4, 5} {
		want := byte(v3NotAuthorized)
		if v == 5 {
			want = v5BadUserNameOrPassword
		}
		for _, pass := range [][]byte{nil, []byte("x")} {
			if code, cl := connectCode(t, e, v, rawConnect{ClientID: "shared-cid", Username: []byte(tok), Password: pass}); code != want {
				if cl != nil {
					t.Fatalf("v%d: revoked token authenticated as %s", v, whoIs(t, e, cl).DeviceID)
				}
				t.Fatalf("v%d: CONNACK 0x%02x, want 0x%02x", v, code, want)
			}
		}
	}
	code, cl := connectCode(t, e, 4, rawConnect{ClientID: "shared-cid"})
	if code != 0 {
		t.Fatalf("client-id-only device refused: %d", code)
	}
	if s := whoIs(t, e, cl); s.DeviceID != other.ID {
		t.Errorf("authenticated as %s, want %s", s.DeviceID, other.ID)
	}
}

// TestOddConnects sends CONNECTs no well-behaved client would: each gets
// a CONNACK or a closed connection, and the hub keeps serving.
func TestOddConnects(t *testing.T) {
	e := newEnv(t)
	tok, _, _ := e.tokenDevice()
	huge := bytes.Repeat([]byte("u"), 65_000)
	for _, tc := range []struct {
		name string
		v    byte
		rc   rawConnect
		ok   bool
	}{
		{"invalid UTF-8 user name", 4, rawConnect{ClientID: "x", Username: []byte{0xff, 0xfe, 0x80}}, false},
		{"invalid UTF-8 user name v5", 5, rawConnect{ClientID: "x", Username: []byte{0xc3, 0x28}}, false},
		{"NUL in user name", 4, rawConnect{ClientID: "x", Username: []byte("a\x00b")}, false},
		{"huge user name", 4, rawConnect{ClientID: "x", Username: huge}, false},
		{"huge user name v5", 5, rawConnect{ClientID: "x", Username: huge, Password: huge}, false},
		{"huge client id with a good token", 4, rawConnect{ClientID: strings.Repeat("c", 60_000), Username: []byte(tok)}, true},
		{"huge client id, no user name", 4, rawConnect{ClientID: strings.Repeat("c", 60_000)}, false},
		{"provision user name, NUL suffix", 4, rawConnect{ClientID: "x", Username: []byte(provUser + "\x00")}, false},
		{"provision user name, other case", 4, rawConnect{ClientID: "x", Username: []byte("Provision")}, false},
		{"provision with a huge password", 4, rawConnect{ClientID: "x", Username: []byte(provUser), Password: huge}, true},
		{"provision without client id", 5, rawConnect{Username: []byte(provUser)}, true},
		{"empty client id and user name", 4, rawConnect{Username: []byte{}}, false},
		{"user name that looks like a basic lookup key", 4, rawConnect{ClientID: "x", Username: []byte("c=x\x00u=y")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, cl := connectCode(t, e, tc.v, tc.rc)
			if tc.ok != (code == 0) {
				t.Fatalf("CONNACK code 0x%02x, want accepted=%v", code, tc.ok)
			}
			if cl != nil {
				cl.sync()
			}
		})
	}
	// Still serving.
	code, cl := connectCode(t, e, 4, rawConnect{ClientID: "after", Username: []byte(tok)})
	if code != 0 {
		t.Fatalf("after odd connects: code %d", code)
	}
	whoIs(t, e, cl)
}

// TestConnectFailuresAreSlowedDown: past the limiter's burst, a failing
// source waits before its CONNECT is answered.
func TestConnectFailuresAreSlowedDown(t *testing.T) {
	const delay = 200 * time.Millisecond
	e := newEnv(t, func(o *Options) {
		o.Limiter = &provision.FailureLimiter{Burst: 2, Leak: time.Hour, Base: delay, Max: delay, MaxSources: 10}
	})
	for i := range 3 {
		if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "bf", Username: []byte(fmt.Sprint("guess-", i))}); code != v3NotAuthorized {
			t.Fatalf("code %d", code)
		}
	}
	start := time.Now()
	if code, _ := connectCode(t, e, 4, rawConnect{ClientID: "bf", Username: []byte("guess-again")}); code != v3NotAuthorized {
		t.Fatalf("code %d", code)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("answered after %v, want at least %v", took, delay)
	}
}
