package provision

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// certEnv is a certificate service over a real store and CA, with one
// enabled device.
type certEnv struct {
	store registry.Store
	certs *Certificates
	dev   *registry.Device
}

func newCertEnv(t *testing.T) *certEnv {
	t.Helper()
	st := testutil.NewStore(t, nil)
	ca, err := pki.Open(context.Background(), t.TempDir(), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &registry.Profile{OrgID: registry.DefaultOrgID, Name: "p", Strategy: registry.StrategyAllowCreate,
		ProvisionKey: "k-" + secret.Generate(8), ProvisionSecretHash: secret.Hash("s"),
		DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever}
	if err := st.CreateProfile(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	nd := []registry.NewDevice{{Device: registry.Device{OrgID: registry.DefaultOrgID, ProfileID: p.ID, Name: "press-1", Status: registry.DeviceEnabled}}}
	if err := st.CreateDevices(context.Background(), nd); err != nil {
		t.Fatal(err)
	}
	return &certEnv{store: st, certs: NewCertificates(st, ca, nil), dev: &nd[0].Device}
}

func csrDER(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// issue gives the device a certificate and returns it parsed.
func (e *certEnv) issue(t *testing.T) (*IssuedCertificate, *x509.Certificate) {
	t.Helper()
	out, err := e.certs.Issue(t.Context(), CertificateRequest{OrgID: e.dev.OrgID, DeviceID: e.dev.ID, CSR: csrDER(t, e.dev.Name)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.ParseCertificate([]byte(out.CertificatePEM))
	if err != nil {
		t.Fatal(err)
	}
	return out, c
}

func (e *certEnv) status(t *testing.T, serial string) registry.CertificateStatus {
	t.Helper()
	c, err := e.store.GetCertificate(t.Context(), e.dev.OrgID, serial)
	if err != nil {
		t.Fatal(err)
	}
	return c.Status
}

// TestRenewal: a device renews with the certificate it holds; the old one
// stays valid until the new one is used, then is revoked with its
// credential.
func TestRenewal(t *testing.T) {
	e := newCertEnv(t)
	old, oldCert := e.issue(t)
	renewed, err := e.certs.Renew(t.Context(), oldCert, csrDER(t, e.dev.Name), "198.51.100.7")
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if renewed.Certificate.Renews != old.Certificate.Serial || renewed.Certificate.DeviceID != e.dev.ID {
		t.Fatalf("renewal record %+v", renewed.Certificate)
	}
	if got := e.status(t, old.Certificate.Serial); got != registry.CertificateActive {
		t.Fatalf("old certificate %s right after the renewal, want active until the new one is used", got)
	}
	// Using the old one changes nothing; using the new one revokes the old.
	if err := e.certs.CertificateUsed(t.Context(), &old.Certificate); err != nil {
		t.Fatal(err)
	}
	if err := e.certs.CertificateUsed(t.Context(), &renewed.Certificate); err != nil {
		t.Fatal(err)
	}
	oldRec, _ := e.store.GetCertificate(t.Context(), e.dev.OrgID, old.Certificate.Serial)
	if oldRec.Status != registry.CertificateRevoked || oldRec.RevocationReason != registry.RevocationSuperseded {
		t.Errorf("old certificate after the new one was used: %s (%s), want revoked (superseded)", oldRec.Status, oldRec.RevocationReason)
	}
	if _, _, err := e.store.FindActiveCredential(t.Context(), registry.CredentialX509, old.Certificate.Fingerprint); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("old certificate's credential still active: %v", err)
	}
	// A revoked certificate cannot renew.
	if _, err := e.certs.Renew(t.Context(), oldCert, csrDER(t, e.dev.Name), ""); !errors.Is(err, ErrRenewalRefused) {
		t.Errorf("renewing a revoked certificate: %v, want ErrRenewalRefused", err)
	}
}

// TestRenewedRevokedAfterGrace: an unused renewal revokes the old
// certificate once the grace period is over, not before.
func TestRenewedRevokedAfterGrace(t *testing.T) {
	e := newCertEnv(t)
	old, oldCert := e.issue(t)
	if _, err := e.certs.Renew(t.Context(), oldCert, csrDER(t, e.dev.Name), ""); err != nil {
		t.Fatal(err)
	}
	if n, err := e.certs.RevokeRenewed(t.Context(), time.Hour); err != nil || n != 0 {
		t.Fatalf("RevokeRenewed within the grace period: %d, %v", n, err)
	}
	if n, err := e.certs.RevokeRenewed(t.Context(), -time.Second); err != nil || n != 1 {
		t.Fatalf("RevokeRenewed after the grace period: %d, %v; want 1", n, err)
	}
	if got := e.status(t, old.Certificate.Serial); got != registry.CertificateRevoked {
		t.Errorf("old certificate %s after the grace period", got)
	}
}

// TestRenewalRefused: only an active, unexpired certificate of this CA, of
// an enabled device with an active credential for it, renews.
func TestRenewalRefused(t *testing.T) {
	e := newCertEnv(t)
	_, revokedCert := e.issue(t)
	rec, _ := e.store.GetCertificateByFingerprint(t.Context(), pki.Fingerprint(revokedCert.Raw))
	if _, err := e.certs.Revoke(t.Context(), rec.OrgID, rec.Serial, registry.RevocationKeyCompromise, "test", ""); err != nil {
		t.Fatal(err)
	}
	_, credRevoked := e.issue(t)
	cred, _, _ := e.store.FindActiveCredential(t.Context(), registry.CredentialX509, pki.Fingerprint(credRevoked.Raw))
	if _, err := e.store.RevokeCredential(t.Context(), cred.OrgID, cred.ID); err != nil {
		t.Fatal(err)
	}
	foreign := testutil.NewCert(t, "press-1", nil, testutil.CertOptions{}).Cert

	for _, tc := range []struct {
		name string
		cert *x509.Certificate
	}{
		{"revoked certificate", revokedCert},
		{"revoked credential", credRevoked},
		{"certificate of another CA", foreign},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.certs.Renew(t.Context(), tc.cert, csrDER(t, "press-1"), ""); !errors.Is(err, ErrRenewalRefused) {
				t.Errorf("Renew: %v, want ErrRenewalRefused", err)
			}
		})
	}

	_, ok := e.issue(t)
	if _, err := e.store.SetDeviceStatus(t.Context(), e.dev.OrgID, e.dev.ID, registry.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := e.certs.Renew(t.Context(), ok, csrDER(t, "press-1"), ""); !errors.Is(err, ErrRenewalRefused) {
		t.Errorf("renewal for a disabled device: %v, want ErrRenewalRefused", err)
	}
}

// TestRenewalsDoNotPileUp: renewing again with the same certificate (the
// first answer lost, or a thief with the key) replaces the unused renewal
// instead of adding one; refusals are audited.
func TestRenewalsDoNotPileUp(t *testing.T) {
	e := newCertEnv(t)
	_, current := e.issue(t)
	first, err := e.certs.Renew(t.Context(), current, csrDER(t, e.dev.Name), "")
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.certs.Renew(t.Context(), current, csrDER(t, e.dev.Name), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.status(t, first.Certificate.Serial); got != registry.CertificateRevoked {
		t.Errorf("the first, unused renewal is %s after a second one, want revoked", got)
	}
	if got := e.status(t, second.Certificate.Serial); got != registry.CertificateActive {
		t.Errorf("the second renewal is %s", got)
	}
	if _, err := e.certs.Renew(t.Context(), current, []byte("not a CSR"), "203.0.113.9"); err == nil {
		t.Fatal("a garbage CSR renewed")
	}
	evs, err := e.store.ListAudit(t.Context(), registry.DefaultOrgID, registry.AuditFilter{Action: "certificate.renew", Result: "refused"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].DeviceID != e.dev.ID || evs[0].Source != "203.0.113.9" {
		t.Errorf("audit of the refused renewal: %+v", evs)
	}
}
