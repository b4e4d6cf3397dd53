package provision_test

import (
	"crypto/x509"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// TestRegisterX509Groups: which X.509 group admits a chain when several
// CAs could — the first by id that is verified and enabled — and what an
// unverified or disabled one answers.
func TestRegisterX509Groups(t *testing.T) {
	ctx := t.Context()
	st := testutil.NewStore(t, nil)
	scope, err := st.IDScope(ctx, registry.DefaultOrgID)
	if err != nil {
		t.Fatal(err)
	}
	svc := provision.New(provision.Options{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Limiter: &provision.FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16},
		DPS: provision.DPSOptions{Hubs: func() []allocate.Hub {
			return []allocate.Hub{{Name: "hub.example", Weight: 1, Enabled: true}}
		}}})
	root := testutil.NewCert(t, "Root CA", nil, testutil.CertOptions{CA: true})
	line := testutil.NewCert(t, "Line CA", root, testutil.CertOptions{CA: true})
	group := func(id string, ca *testutil.TestCert, verified bool, status registry.EnrollmentStatus) {
		t.Helper()
		x := &registry.X509CAAttestation{CACertificatePEM: ca.PEM()}
		if verified {
			x.MarkVerified(time.Now())
		}
		if err := st.CreateEnrollmentGroup(ctx, &registry.EnrollmentGroup{OrgID: registry.DefaultOrgID, ID: id,
			Attestation:        registry.GroupAttestation{Type: registry.AttestationX509, X509CA: x},
			EnrollmentPolicies: registry.EnrollmentPolicies{Status: status, ReprovisionPolicy: registry.EnrollmentReprovisionMigrate}}); err != nil {
			t.Fatal(err)
		}
	}
	register := func(leaf *testutil.TestCert, chain ...*testutil.TestCert) (*provision.RegistrationResult, error) {
		certs := []*x509.Certificate{leaf.Cert}
		for _, c := range chain {
			certs = append(certs, c.Cert)
		}
		return svc.Register(ctx, provision.RegistrationRequest{Transport: "mqtt", Source: "192.0.2.1", IDScope: strings.ToLower(scope),
			RegistrationID: leaf.Cert.Subject.CommonName, Certificates: certs})
	}
	wantRefused := func(err error, reason provision.Reason, msg string) {
		t.Helper()
		if provision.ReasonOf(err) != reason || !strings.Contains(err.Error(), msg) {
			t.Fatalf("error %v, want %s saying %q", err, reason, msg)
		}
	}

	// Only an unverified group's CA: refused for that.
	group("a-unverified", root, false, registry.EnrollmentEnabled)
	_, err = register(testutil.NewCert(t, "unit-1", line, testutil.CertOptions{}), line)
	wantRefused(err, provision.ReasonBadCertificate, "the group's CA certificate is not verified")

	// A verified but disabled group, and a verified enabled one after it
	// by id: the enabled one admits.
	group("b-disabled", line, true, registry.EnrollmentDisabled)
	group("c-enabled", root, true, registry.EnrollmentEnabled)
	res, err := register(testutil.NewCert(t, "Unit-2", line, testutil.CertOptions{}), line)
	if err != nil {
		t.Fatal(err)
	}
	if res.Registration.EnrollmentGroupID != "c-enabled" || res.Registration.HubDeviceID != "unit-2" || res.Registration.AssignedHub != "hub.example" {
		t.Fatalf("registration %+v, want group c-enabled, device unit-2", res.Registration)
	}

	// Several verified enabled groups: the first by id.
	group("d-enabled", line, true, registry.EnrollmentEnabled)
	if err := st.DeleteEnrollmentGroup(ctx, registry.DefaultOrgID, "b-disabled"); err != nil {
		t.Fatal(err)
	}
	res, err = register(testutil.NewCert(t, "unit-3", line, testutil.CertOptions{}), line)
	if err != nil || res.Registration.EnrollmentGroupID != "c-enabled" {
		t.Fatalf("registration %+v, %v, want group c-enabled (first by id)", res, err)
	}

	// Only a verified, disabled group: the device learns it is disabled.
	other := testutil.NewCert(t, "Other CA", nil, testutil.CertOptions{CA: true})
	group("e-off", other, true, registry.EnrollmentDisabled)
	_, err = register(testutil.NewCert(t, "unit-4", other, testutil.CertOptions{}))
	wantRefused(err, provision.ReasonEnrollmentDisabled, `"e-off" is disabled`)

	// A certificate that already authenticates another device (here one
	// provisioned outside DPS) is refused, and creates nothing.
	leaf := testutil.NewCert(t, "unit-5", root, testutil.CertOptions{})
	p := &registry.Profile{OrgID: registry.DefaultOrgID, Name: "tb", Strategy: registry.StrategyDisabled,
		ProvisionKey: "k-tb", ProvisionSecretHash: "x", DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever}
	if err := st.CreateProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	cred, _, err := provision.BuildCredential(provision.CredentialsRequest{Type: registry.CredentialX509, Certificate: leaf.PEM()}, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateDevices(ctx, []registry.NewDevice{{Device: registry.Device{OrgID: registry.DefaultOrgID, ProfileID: p.ID,
		Name: "tb-device", Status: registry.DeviceEnabled}, Credentials: []registry.Credential{cred}}}); err != nil {
		t.Fatal(err)
	}
	_, err = register(leaf)
	wantRefused(err, provision.ReasonCredentialsTaken, "already authenticates another device")
	if _, err := st.GetDeviceByName(ctx, registry.DefaultOrgID, "unit-5"); err == nil {
		t.Fatal("a refused registration created its device")
	}

	// A common name that is not the registration id.
	_, err = svc.Register(ctx, provision.RegistrationRequest{IDScope: scope, RegistrationID: "unit-6", Certificates: []*x509.Certificate{leaf.Cert}})
	wantRefused(err, provision.ReasonBadCertificate, "common name")

	// No evidence at all.
	_, err = svc.Register(ctx, provision.RegistrationRequest{IDScope: scope, RegistrationID: "unit-7"})
	wantRefused(err, provision.ReasonBadKeyOrSecret, "no evidence")
}
