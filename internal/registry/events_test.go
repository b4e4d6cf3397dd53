package registry_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// TestNotifyingStoreCertificates: revoking a certificate, directly or by a
// rotation, tells the subscribers which serials stopped authenticating.
func TestNotifyingStoreCertificates(t *testing.T) {
	ctx := t.Context()
	changes := &registry.Changes{}
	var got []registry.Change
	changes.Subscribe(func(c registry.Change) { got = append(got, c) })
	s := registry.NotifyingStore{Store: testutil.NewStore(t, nil), Changes: changes}

	p := &registry.Profile{OrgID: registry.DefaultOrgID, Name: "p", Strategy: registry.StrategyAllowCreate, ProvisionKey: "k",
		ProvisionSecretHash: "h", DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionRotate}
	if err := s.CreateProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	cert := func(serial string) registry.Certificate {
		return registry.Certificate{Serial: serial, Issuer: strings.Repeat("a", 64), Fingerprint: strings.Repeat(serial[:1], 64),
			CommonName: "dev", NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	}
	d := &registry.Device{OrgID: registry.DefaultOrgID, ProfileID: p.ID, Name: "dev", Status: registry.DeviceEnabled}
	c := &registry.ProvisionCommit{Device: d, Create: true, Certificates: []registry.Certificate{cert("1a"), cert("2b")},
		Audit: registry.AuditEvent{OrgID: registry.DefaultOrgID, Action: "provision"}}
	if err := s.CommitProvision(ctx, c); err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("a creation published %v", got)
	}
	if _, err := s.RevokeCertificate(ctx, registry.DefaultOrgID, "1a", registry.RevocationKeyCompromise); err != nil {
		t.Fatal(err)
	}
	rot := &registry.ProvisionCommit{Device: d, ExpectVersion: d.Version, RevokeActive: true,
		Certificates: []registry.Certificate{cert("3c")}, Audit: registry.AuditEvent{OrgID: registry.DefaultOrgID, Action: "provision"}}
	if err := s.CommitProvision(ctx, rot); err != nil {
		t.Fatal(err)
	}
	want := []registry.Change{
		{Kind: registry.ChangeCertificatesRevoked, OrgID: registry.DefaultOrgID, DeviceID: d.ID, Serials: []string{"1a"}},
		{Kind: registry.ChangeCertificatesRevoked, OrgID: registry.DefaultOrgID, DeviceID: d.ID, Serials: []string{"2b"}},
	}
	if !slices.EqualFunc(got, want, func(a, b registry.Change) bool {
		return a.Kind == b.Kind && a.OrgID == b.OrgID && a.DeviceID == b.DeviceID && slices.Equal(a.Serials, b.Serials)
	}) {
		t.Fatalf("published %+v, want %+v", got, want)
	}
}
