package provision_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// newService returns a pipeline on a fresh SQLite store holding profile
// "p1" (key "key", allow-create, rotate) whose secret is hashed as given.
func newService(t *testing.T, secretHash string, o provision.Options) (*provision.Service, registry.Store, *registry.Profile) {
	t.Helper()
	ctx := context.Background()
	st := testutil.NewStore(t, nil)
	p := &registry.Profile{ID: "p1", OrgID: registry.DefaultOrgID, Name: "p", Strategy: registry.StrategyAllowCreate,
		ProvisionKey: "key", ProvisionSecretHash: secretHash, DefaultCredentialType: registry.CredentialAccessToken,
		ReprovisionPolicy: registry.ReprovisionRotate}
	if err := st.CreateProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	o.Store, o.Logger = st, slog.New(slog.NewTextHandler(io.Discard, nil))
	return provision.New(o), st, p
}

func TestWrongSecretsSlowTheSourceDown(t *testing.T) {
	lim := &provision.FailureLimiter{Burst: 3, Leak: time.Hour, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 10}
	svc, _, _ := newService(t, secret.Hash("secret"), provision.Options{Limiter: lim})
	ctx := context.Background()
	for range 4 {
		_, err := svc.Provision(ctx, provision.Request{Source: "198.51.100.7", ProvisionKey: "key", ProvisionSecret: "wrong", DeviceName: "d"})
		if provision.ReasonOf(err) != provision.ReasonBadKeyOrSecret {
			t.Fatalf("err = %v", err)
		}
	}
	if lim.Delay("198.51.100.7", time.Now()) == 0 {
		t.Fatal("a source with repeated wrong secrets is not slowed down")
	}
	// Malformed requests count too: a client that keeps sending them is broken or hostile.
	for range 4 {
		svc.Refuse(ctx, provision.Request{Source: "198.51.100.9"}, provision.ReasonBadRequest, "not JSON")
	}
	if lim.Delay("198.51.100.9", time.Now()) == 0 {
		t.Fatal("a source of malformed requests is not slowed down")
	}
	// Failures that are not guesses (credentials in use) do not count.
	tok := provision.CredentialsRequest{Type: registry.CredentialAccessToken, Token: "shared-token-1"}
	for i := range 6 {
		svc.Provision(ctx, provision.Request{Source: "198.51.100.8", ProvisionKey: "key", ProvisionSecret: "secret",
			DeviceName: fmt.Sprint("legit-", i), Credentials: tok})
	}
	if d := lim.Delay("198.51.100.8", time.Now()); d != 0 {
		t.Fatalf("a source with legitimate failures is delayed by %v", d)
	}
}

func TestThrottledRequestGivesUpWithItsContext(t *testing.T) {
	lim := &provision.FailureLimiter{Burst: 0, Leak: time.Hour, Base: time.Hour, Max: time.Hour, MaxSources: 10}
	svc, _, _ := newService(t, secret.Hash("secret"), provision.Options{Limiter: lim})
	lim.Fail("203.0.113.9", time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := svc.Provision(ctx, provision.Request{Source: "203.0.113.9", ProvisionKey: "key", ProvisionSecret: "secret", DeviceName: "d"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// Reprovisioning with the same device-supplied token under "rotate" keeps one
// active credential: the old one is revoked before the new one is inserted.
func TestRotateWithSameSuppliedToken(t *testing.T) {
	svc, st, _ := newService(t, secret.Hash("secret"), provision.Options{})
	ctx := context.Background()
	r := provision.Request{Source: "192.0.2.1", ProvisionKey: "key", ProvisionSecret: "secret", DeviceName: "same",
		Credentials: provision.CredentialsRequest{Type: registry.CredentialAccessToken, Token: "device-token-1"}}
	first, err := svc.Provision(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	second, err := svc.Provision(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Reprovisioned || first.Device.ID != second.Device.ID {
		t.Fatalf("second = %+v", second)
	}
	creds, err := st.ListCredentials(ctx, registry.DefaultOrgID, first.Device.ID)
	if err != nil {
		t.Fatal(err)
	}
	active := 0
	for _, c := range creds {
		if c.Status == registry.CredentialActive {
			active++
		}
	}
	if len(creds) != 2 || active != 1 {
		t.Fatalf("%d credentials, %d active; want 2 and 1", len(creds), active)
	}
	if _, _, err := st.FindActiveCredential(ctx, registry.CredentialAccessToken, secret.LookupHash("device-token-1")); err != nil {
		t.Fatalf("token no longer authenticates: %v", err)
	}
}

func TestRefusalsAreAudited(t *testing.T) {
	svc, st, _ := newService(t, secret.Hash("secret"), provision.Options{})
	ctx := context.Background()
	svc.Provision(ctx, provision.Request{Dialect: "test", Source: "192.0.2.2", ProvisionKey: "key", ProvisionSecret: "nope", DeviceName: "d"})
	svc.Refuse(ctx, provision.Request{Dialect: "test", Source: "192.0.2.2"}, provision.ReasonBadRequest, "payload is not JSON")
	evs, err := st.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{Action: "provision"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Result != "bad-request" || evs[1].Result != "bad-key-or-secret" || evs[1].ProfileID != "p1" {
		t.Fatalf("audit = %+v", evs)
	}
	devs, _, _ := st.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{})
	if len(devs) != 0 {
		t.Fatalf("refusals wrote devices: %+v", devs)
	}
}

func TestOperatorChosenSecretsHashedSlowly(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		name string
		req  provision.CredentialsRequest
		// prefix of the stored hash; "" for none
		prefix string
	}{
		{"generated MQTT_BASIC", provision.CredentialsRequest{Type: registry.CredentialMQTTBasic}, "sha256$"},
		{"chosen MQTT_BASIC password", provision.CredentialsRequest{Type: registry.CredentialMQTTBasic, ClientID: "c1", Username: "u1", Password: "hunter22"}, "pbkdf2-sha256$"},
		{"chosen MQTT_BASIC, client id only", provision.CredentialsRequest{Type: registry.CredentialMQTTBasic, ClientID: "c1"}, ""},
		{"generated token", provision.CredentialsRequest{Type: registry.CredentialAccessToken}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cred, issued, err := provision.BuildCredential(c.req, registry.CredentialAccessToken, now)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.prefix == "" && cred.SecretHash != "":
				t.Fatalf("SecretHash = %q, want none", cred.SecretHash)
			case c.prefix == "":
			case !strings.HasPrefix(cred.SecretHash, c.prefix):
				t.Fatalf("SecretHash = %q, want prefix %q", cred.SecretHash, c.prefix)
			case !secret.Verify(issued.Password, cred.SecretHash):
				t.Fatalf("issued password %q does not match %q", issued.Password, cred.SecretHash)
			}
		})
	}
}

func TestSlowProvisionSecret(t *testing.T) {
	ctx := context.Background()
	lenient := &provision.FailureLimiter{Burst: 100, Leak: time.Millisecond, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 10}
	svc, _, _ := newService(t, secret.HashSlow("chosen"), provision.Options{Limiter: lenient, Verifier: secret.NewVerifier(0)})
	for i := range 3 { // the first from the slow hash, the others from the cache
		if _, err := svc.Provision(ctx, provision.Request{Source: "192.0.2.1", ProvisionKey: "key", ProvisionSecret: "chosen", DeviceName: fmt.Sprint("d", i)}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	for _, r := range []provision.Request{
		{Source: "192.0.2.2", ProvisionKey: "key", ProvisionSecret: "Chosen", DeviceName: "x"},
		{Source: "192.0.2.2", ProvisionKey: "nokey", ProvisionSecret: "chosen", DeviceName: "x"},
	} {
		if _, err := svc.Provision(ctx, r); provision.ReasonOf(err) != provision.ReasonBadKeyOrSecret {
			t.Fatalf("%+v: err = %v", r, err)
		}
	}
}
