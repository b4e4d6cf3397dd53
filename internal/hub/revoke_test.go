package hub

import (
	"context"
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// TestRevocationDisconnects: revoking a credential, disabling or deleting
// a device cuts its live sessions off at once (MQTT 5 gets a DISCONNECT
// with a reason, MQTT 3.1.1 a closed connection) and later CONNECTs are
// refused; other devices stay connected.
func TestRevocationDisconnects(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(e *env, dev *registry.Device, cred registry.Credential) error
		reason byte
	}{
		{"credential revoked", func(e *env, _ *registry.Device, cred registry.Credential) error {
			_, err := e.store.RevokeCredential(ctx, registry.DefaultOrgID, cred.ID)
			return err
		}, packets.ErrNotAuthorized.Code},
		{"device disabled", func(e *env, dev *registry.Device, _ registry.Credential) error {
			_, err := e.store.SetDeviceStatus(ctx, registry.DefaultOrgID, dev.ID, registry.DeviceDisabled)
			return err
		}, packets.ErrAdministrativeAction.Code},
		{"device deleted", func(e *env, dev *registry.Device, _ registry.Credential) error {
			return e.store.DeleteDevice(ctx, registry.DefaultOrgID, dev.ID)
		}, packets.ErrAdministrativeAction.Code},
		{"credentials rotated by reprovisioning", func(e *env, dev *registry.Device, _ registry.Credential) error {
			d, err := e.store.GetDevice(ctx, registry.DefaultOrgID, dev.ID)
			if err != nil {
				return err
			}
			return e.store.CommitProvision(ctx, &registry.ProvisionCommit{
				Device:        d,
				ExpectVersion: d.Version,
				RevokeActive:  true,
				Credentials:   []registry.Credential{tokenCred(secret.Generate(secret.TokenLength))},
				Audit:         registry.AuditEvent{OrgID: registry.DefaultOrgID, Actor: "device", Action: "provision", Result: "success"},
			})
		}, packets.ErrNotAuthorized.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tok, dev, cred := e.tokenDevice()
			bystanderTok, _, _ := e.tokenDevice()

			v4 := e.mustPaho(pahoConf{clientID: "victim-v4", username: tok})
			_, v5 := connectCode(t, e, 5, rawConnect{ClientID: "victim-v5", Username: []byte(tok)})
			bystander := e.mustPaho(pahoConf{clientID: "bystander", username: bystanderTok})
			eventually(t, "three devices connected", func() bool { return e.hub.ConnectedDevices() == 3 })

			if err := tc.change(e, dev, cred); err != nil {
				t.Fatal(err)
			}
			v4.waitLost(t)
			d := v5.waitClosed()
			if d == nil || d.ReasonCode != tc.reason {
				t.Errorf("MQTT 5 DISCONNECT %+v, want reason 0x%02x", d, tc.reason)
			}
			eventually(t, "only the bystander left", func() bool { return e.hub.ConnectedDevices() == 1 })

			bystander.publish(t, "v1/devices/me/telemetry", 1, "{}")
			if !bystander.IsConnectionOpen() {
				t.Error("bystander disconnected")
			}
			if code, _ := connectCode(t, e, 5, rawConnect{ClientID: "victim-again", Username: []byte(tok)}); code == 0 {
				t.Error("the old credentials still connect")
			}
		})
	}
}

// TestRevocationDuringLookup: a change that lands between a CONNECT's
// credential lookup and its registration is not missed.
func TestRevocationDuringLookup(t *testing.T) {
	var s sessions
	s.init(sessionLimits{})
	c := &conn{dev: &DeviceSession{DeviceID: "dev-1", CredentialID: "cred-1"}}
	seq0 := s.snapshot()
	s.mu.Lock()
	s.revoke(registry.Change{Kind: registry.ChangeCredentialsRevoked, DeviceID: "dev-1", CredentialIDs: []string{"cred-1"}})
	s.mu.Unlock()
	if got := s.register(c, seq0); got != changed {
		t.Fatalf("register after a revocation = %v, want changed", got)
	}

	// Unrelated changes do not force a new lookup...
	seq0 = s.snapshot()
	s.mu.Lock()
	s.revoke(registry.Change{Kind: registry.ChangeDeviceDisabled, DeviceID: "dev-2"})
	s.revoke(registry.Change{Kind: registry.ChangeCredentialsRevoked, DeviceID: "dev-1", CredentialIDs: []string{"cred-0"}})
	s.mu.Unlock()
	if got := s.register(c, seq0); got != registered {
		t.Fatalf("register after unrelated changes = %v, want registered", got)
	}
	s.unregister(c.cl)

	// ...unless too many happened to tell.
	seq0 = s.snapshot()
	s.mu.Lock()
	for i := range recentChanges + 1 {
		s.revoke(registry.Change{Kind: registry.ChangeDeviceDisabled, DeviceID: fmt.Sprint("other-", i)})
	}
	s.mu.Unlock()
	if got := s.register(c, seq0); got != changed {
		t.Fatalf("register after %d changes = %v, want changed", recentChanges+1, got)
	}
}

// TestTakeover: a second CONNECT with the same client id and the same
// device takes the session over (and resumes it when asked); the end of
// the old connection does not drop the new one. Another device using the
// same client id neither takes over nor inherits anything.
func TestTakeover(t *testing.T) {
	e := newEnv(t)
	tok, dev, _ := e.tokenDevice()
	otherTok, other, _ := e.tokenDevice()

	first, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "fixed", Username: []byte(tok)})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReasonCode)
	}
	first.subscribe("v1/devices/me/rpc/request/+", 1)

	// Another device, same client id: side by side, nothing inherited.
	stranger, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "fixed", Username: []byte(otherTok)})
	if ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("other device: CONNACK %d, session present %v", ack.ReasonCode, ack.SessionPresent)
	}
	if s := whoIs(t, e, stranger); s.DeviceID != other.ID {
		t.Fatalf("stranger authenticated as %s", s.DeviceID)
	}

	// Same device, same client id: takeover, session resumed.
	second, ack := dialRaw(t, e.addr, 4, rawConnect{ClientID: "fixed", Username: []byte(tok)})
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("takeover: CONNACK %d, session present %v", ack.ReasonCode, ack.SessionPresent)
	}
	first.waitClosed()
	eventually(t, "old session gone", func() bool { return e.hub.ConnectedDevices() == 2 })
	if s := whoIs(t, e, second); s.DeviceID != dev.ID {
		t.Fatalf("second session authenticated as %s", s.DeviceID)
	}
	if !stranger.alive(t) {
		t.Error("the other device's session was closed by the takeover")
	}

	// And with paho, clean sessions, a few times over.
	var last *pahoClient
	for range 3 {
		pc := e.mustPaho(pahoConf{clientID: "paho-fixed", username: tok})
		if last != nil {
			last.waitLost(t)
		}
		last = pc
	}
	eventually(t, "one paho session left", func() bool { return e.hub.ConnectedDevices() == 3 })
	last.publish(t, "v1/devices/me/telemetry", 1, "{}")
	if p := e.nextDevicePub(t); p.sess.ClientID != "paho-fixed" {
		t.Errorf("handler saw client %q", p.sess.ClientID)
	}
}

// alive reports whether the connection still answers a PINGREQ.
func (cl *rawClient) alive(t *testing.T) bool {
	t.Helper()
	cl.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	for {
		pk, err := cl.read()
		if err != nil {
			return false
		}
		if pk.FixedHeader.Type == packets.Pingresp {
			return true
		}
	}
}
