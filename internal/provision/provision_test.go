package provision_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/store/sqlite"
)

func newService(t *testing.T, lim *provision.FailureLimiter) (*provision.Service, registry.Store, *registry.Profile) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), sqlite.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := &registry.Profile{ID: "p1", OrgID: registry.DefaultOrgID, Name: "p", Strategy: registry.StrategyAllowCreate,
		ProvisionKey: "key", ProvisionSecretHash: secret.Hash("secret"), DefaultCredentialType: registry.CredentialAccessToken,
		ReprovisionPolicy: registry.ReprovisionRotate}
	if err := st.CreateProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	return provision.New(provision.Options{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Limiter: lim}), st, p
}

func TestWrongSecretsSlowTheSourceDown(t *testing.T) {
	lim := &provision.FailureLimiter{Burst: 3, Leak: time.Hour, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 10}
	svc, _, _ := newService(t, lim)
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
	svc, _, _ := newService(t, lim)
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
	svc, st, _ := newService(t, nil)
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
	svc, st, _ := newService(t, nil)
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
