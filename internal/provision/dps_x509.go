package provision

import (
	"cmp"
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// X.509 attestation of DPS registrations: the device presents its leaf
// certificate (and intermediates) in the TLS handshake, whose possession
// of the private key the handshake proves; the registration id is the
// leaf's subject common name.
//
//   - An individual enrollment of the registration id names the leaf by
//     its SHA-256 thumbprint; it is the only enrollment tried, as in DPS
//     (individual enrollments take precedence over groups).
//   - Otherwise the organisation's X.509 groups whose CA the chain
//     verifies up to admit it, provided the CA is verified (proof of
//     possession); several: the first by id that is verified and enabled.
//   - The device gets an X509_CERTIFICATE hub credential for the leaf, so
//     it connects to its hub with the same certificate.

// admitX509 finds the enrollment that admits req.Certificates and fills a.
func (s *Service) admitX509(ctx context.Context, req RegistrationRequest, a *admission) error {
	now := s.now()
	chain := req.Certificates
	if err := attest.CheckLeaf(chain, a.regID, now); err != nil {
		return x509Refusal(err)
	}
	leaf := chain[0]
	e, err := s.store.GetEnrollment(ctx, a.orgID, a.regID)
	switch {
	case err == nil && e.Attestation.X509 == nil:
		return refuse(ReasonBadKeyOrSecret, "the enrollment of %q does not attest with X.509 certificates (it uses %s)", a.regID, e.Attestation.Type)
	case err == nil:
		fp, err := e.Attestation.X509.Fingerprint()
		if err != nil {
			return fmt.Errorf("the enrollment of %q: %w", a.regID, err) // stored unusable: the server's fault
		}
		if err := attest.VerifyIndividual(chain, a.regID, fp, now); err != nil {
			return x509Refusal(err)
		}
		a.enrollment, a.policies = e, e.EnrollmentPolicies
		a.hubDeviceID, a.attestation = cmp.Or(e.DeviceID, a.regID), registry.AttestationX509
	case !errors.Is(err, registry.ErrNotFound):
		return err
	default:
		g, err := s.x509Group(ctx, chain, a.regID, a.orgID, now)
		if err != nil {
			return err
		}
		a.group, a.policies = g, g.EnrollmentPolicies
		a.hubDeviceID, a.attestation = a.regID, registry.AttestationX509
	}
	a.cert = leaf
	return s.certificateFree(ctx, a)
}

// x509Group returns the X.509 group of the organisation that admits chain:
// the first by id among those whose CA the chain verifies up to that is
// verified and enabled, else the first verified one (whose refusal says it
// is disabled). A chain that verifies only to unverified CAs is refused
// for that; one that verifies to none is not enrolled, with the reason
// when it names a group's CA but does not verify against it.
func (s *Service) x509Group(ctx context.Context, chain []*x509.Certificate, regID, orgID string, now time.Time) (*registry.EnrollmentGroup, error) {
	groups, err := s.x509Groups(ctx, orgID)
	if err != nil {
		return nil, err
	}
	var (
		chained, verified []*registry.EnrollmentGroup
		claimErr          error
	)
	for i := range groups {
		g := &groups[i]
		ca, err := g.Attestation.X509CA.Certificate()
		if err != nil {
			s.log.ErrorContext(ctx, "enrollment group's CA certificate is unusable; skipped", "org", orgID, "group", g.ID, "error", err)
			continue
		}
		if err := attest.ChainsTo(chain, ca, now); err != nil {
			if claimErr == nil && attest.ClaimsCA(chain, ca) {
				claimErr = fmt.Errorf("enrollment group %q: %w", g.ID, err)
			}
			continue
		}
		chained = append(chained, g)
		if g.Attestation.X509CA.Verified {
			verified = append(verified, g)
		}
	}
	switch {
	case len(verified) > 0:
		pick := verified[0]
		for _, g := range verified {
			if g.Status == registry.EnrollmentEnabled {
				pick = g
				break
			}
		}
		if len(chained) > 1 {
			ids := make([]string, len(chained))
			for i, g := range chained {
				ids[i] = g.ID
			}
			s.log.InfoContext(ctx, "X.509 registration chains to several enrollment groups' CAs; the first verified and enabled by id admits it",
				"org", orgID, "registration", regID, "groups", strings.Join(ids, ","), "chosen", pick.ID)
		}
		return pick, nil
	case len(chained) > 0:
		return nil, refuse(ReasonBadCertificate, "the group's CA certificate is not verified: enrollment group %q admits no device until possession of its CA's key is proved", chained[0].ID)
	case claimErr != nil:
		return nil, x509Refusal(claimErr)
	}
	return nil, refuse(ReasonNotEnrolled, "no enrollment for registration %q: its certificate chains to no enrollment group's CA", regID)
}

// x509Groups lists the organisation's X.509 groups, ordered by id.
func (s *Service) x509Groups(ctx context.Context, orgID string) ([]registry.EnrollmentGroup, error) {
	return s.groups(ctx, orgID, func(g *registry.EnrollmentGroup) bool { return g.Attestation.X509CA != nil })
}

// certificateFree refuses a leaf that already authenticates another device
// than the one this registration id was assigned (the store's uniqueness
// of active credentials would refuse the commit anyway, less clearly).
func (s *Service) certificateFree(ctx context.Context, a *admission) error {
	fp := attest.CertificateThumbprint(a.cert)
	_, owner, err := s.store.FindActiveCredential(ctx, registry.CredentialX509, fp)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	prev, err := s.store.GetRegistration(ctx, a.orgID, a.regID)
	switch {
	case err == nil && prev.DeviceID == owner.ID:
		return nil
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		return err
	}
	return refuse(ReasonCredentialsTaken, "the certificate (SHA-256 %s) already authenticates another device", fp)
}

// x509Refusal turns an attestation failure into the refusal the device
// gets; anything else is passed on.
func x509Refusal(err error) error {
	for _, kind := range []error{attest.ErrNoCertificate, attest.ErrCertificateExpired, attest.ErrCertificateNotYetValid,
		attest.ErrNotClientCertificate, attest.ErrCommonNameMismatch, attest.ErrThumbprintMismatch, attest.ErrNotChained} {
		if errors.Is(err, kind) {
			return &Error{Reason: ReasonBadCertificate, Msg: err.Error(), Err: err}
		}
	}
	return err
}

// x509Credential is the hub credential of an X.509 registration: the
// leaf, looked up by its SHA-256 fingerprint.
func x509Credential(leaf *x509.Certificate, now time.Time) (registry.Credential, error) {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	cred, _, err := BuildCredential(CredentialsRequest{Type: registry.CredentialX509, Certificate: string(certPEM)}, "", now)
	if err != nil {
		return cred, &Error{Reason: ReasonBadCertificate, Msg: strings.TrimPrefix(err.Error(), ErrBadCredentials.Error()+": "), Err: err}
	}
	return cred, nil
}

// deviceAttestation describes the device's attestation to a custom
// allocation webhook, with its leaf certificate as DPS describes it.
func (a *admission) deviceAttestation() allocate.DeviceAttestation {
	d := allocate.DeviceAttestation{Type: a.attestation}
	if c := a.cert; c != nil {
		sum1 := sha1.Sum(c.Raw)
		d.X509 = &allocate.X509CertificateInfo{
			SubjectName:      c.Subject.String(),
			SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(sum1[:])),
			SHA256Thumbprint: strings.ToUpper(attest.CertificateThumbprint(c)),
			IssuerName:       c.Issuer.String(),
			NotBefore:        c.NotBefore.UTC(),
			NotAfter:         c.NotAfter.UTC(),
			SerialNumber:     strings.ToUpper(c.SerialNumber.Text(16)),
			Version:          c.Version,
		}
	}
	return d
}
