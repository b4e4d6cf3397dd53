package provision

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Certificates issues device certificates from the built-in CA and revokes
// them. A certificate issued to a device is recorded together with an
// X509_CERTIFICATE credential whose lookup key is the certificate's
// fingerprint, in one commit: the hub then authenticates the device by the
// certificate it presents, like any device-supplied certificate, and
// revoking either revokes both.
type Certificates struct {
	store registry.Store
	ca    *pki.CA
	log   *slog.Logger

	issued, renewed atomic.Uint64

	// settled holds the serials of renewals whose predecessor is known to
	// be revoked, so that CertificateUsed does not read the store at each
	// of their handshakes; cleared when it reaches maxSettled.
	settledMu sync.Mutex
	settled   map[string]struct{}
}

// maxSettled bounds Certificates.settled.
const maxSettled = 100_000

// Counts reports the certificates issued (through the API) and renewed by
// devices since start.
func (c *Certificates) Counts() (issued, renewed uint64) {
	return c.issued.Load(), c.renewed.Load()
}

// NewCertificates returns the issuing service of ca over store.
func NewCertificates(store registry.Store, ca *pki.CA, log *slog.Logger) *Certificates {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Certificates{store: store, ca: ca, log: log}
}

// CA is the CA the service issues from.
func (c *Certificates) CA() *pki.CA { return c.ca }

// CertificateRequest asks for a certificate for one device.
type CertificateRequest struct {
	OrgID, DeviceID string
	// CSR is the device's certificate signing request (PEM or DER): the
	// preferred path, the private key never leaves the device.
	CSR []byte
	// GenerateKey asks the server to make the key pair instead (of
	// KeyAlgorithm, pki.ECDSAP256 when empty); the key is returned once and
	// never stored. CSR must then be empty.
	GenerateKey  bool
	KeyAlgorithm pki.KeyAlgorithm
	// Lifetime of the certificate; the CA's leaf lifetime when zero.
	Lifetime time.Duration
	// Replace revokes the device's other certificates and credentials
	// (superseded) in the same commit: a rotation.
	Replace bool
	// Renews is the serial of the certificate this one renews (see Renew).
	Renews string
	// Actor and Action are recorded in the audit event (Action
	// "certificate.issue" when empty).
	Actor, Action, Source string
}

// IssuedCertificate is what Issue returns: the record, the credential that
// authenticates it, and the PEM to hand to the device.
type IssuedCertificate struct {
	Certificate    registry.Certificate
	Credential     registry.Credential
	CertificatePEM string
	// ChainPEM is the CA chain the device needs to trust the server and to
	// present with its certificate: the issuing CA, then the root.
	ChainPEM string
	// PrivateKeyPEM is set only for a server-generated key: shown once.
	PrivateKeyPEM string
	// Revoked lists the certificates Replace revoked.
	Revoked []registry.Certificate
}

// maxCommitRetries bounds the retries of a commit that raced another
// write of the device (or, once in 2^64, drew a serial already used).
const maxCommitRetries = 3

// Issue signs a certificate for the device and records it with its
// credential, durably, before returning. The certificate names the device:
// CN = its name (its id when the name does not fit a CN) and a URI
// urn:zerotouch:device:<id>. A bad request wraps pki.ErrBadCSR or
// registry.ErrInvalid; an unknown device is registry.ErrNotFound; a
// disabled device may still be given a certificate (activation comes
// later).
func (c *Certificates) Issue(ctx context.Context, req CertificateRequest) (*IssuedCertificate, error) {
	if req.GenerateKey == (len(req.CSR) > 0) {
		return nil, fmt.Errorf("%w: give either a certificate signing request or generateKey, not both or neither", registry.ErrInvalid)
	}
	if req.Lifetime < 0 {
		return nil, fmt.Errorf("%w: negative lifetime", registry.ErrInvalid)
	}
	if req.GenerateKey {
		if _, err := pki.ParseKeyAlgorithm(string(req.KeyAlgorithm)); err != nil {
			return nil, fmt.Errorf("%w: %v", registry.ErrInvalid, err)
		}
	}
	for attempt := 0; ; attempt++ {
		out, err := c.issueOnce(ctx, req)
		var ce *registry.ConflictError
		if err != nil && errors.As(err, &ce) && attempt < maxCommitRetries {
			continue
		}
		return out, err
	}
}

func (c *Certificates) issueOnce(ctx context.Context, req CertificateRequest) (*IssuedCertificate, error) {
	d, err := c.store.GetDevice(ctx, req.OrgID, req.DeviceID)
	if err != nil {
		return nil, err
	}
	p := DeviceCertificateProfile(d)
	p.Lifetime = req.Lifetime
	var iss *pki.Issued
	var keyPEM []byte
	if req.GenerateKey {
		iss, keyPEM, err = c.ca.IssueWithNewKey(p, req.KeyAlgorithm)
	} else {
		iss, err = c.ca.SignCSR(req.CSR, p)
	}
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	cert := CertificateRecord(d, iss, now)
	cert.Renews = req.Renews
	cred := registry.Credential{
		OrgID:          d.OrgID,
		DeviceID:       d.ID,
		Type:           registry.CredentialX509,
		LookupKey:      iss.Fingerprint,
		CertificatePEM: string(iss.PEM()),
		Status:         registry.CredentialActive,
		CreatedAt:      now,
	}
	action := req.Action
	if action == "" {
		action = "certificate.issue"
	}
	commit := &registry.ProvisionCommit{
		Device:        d,
		ExpectVersion: d.Version,
		RevokeActive:  req.Replace,
		Credentials:   []registry.Credential{cred},
		Certificates:  []registry.Certificate{cert},
		Audit: registry.AuditEvent{
			OrgID: d.OrgID, Actor: req.Actor, Action: action, Source: req.Source,
			ProfileID: d.ProfileID, Result: "success", Time: now,
			Detail: fmt.Sprintf("certificate %s issued to device %s, valid until %s", iss.Serial, d.Name, iss.Certificate.NotAfter.UTC().Format(time.RFC3339)),
		},
		At: now,
	}
	if err := c.store.CommitProvision(ctx, commit); err != nil {
		return nil, err
	}
	if req.Renews != "" {
		c.renewed.Add(1)
	} else {
		c.issued.Add(1)
	}
	return &IssuedCertificate{
		Certificate:    commit.Certificates[0],
		Credential:     commit.Credentials[0],
		CertificatePEM: string(iss.PEM()),
		ChainPEM:       string(c.ca.Chain()),
		PrivateKeyPEM:  string(keyPEM),
		Revoked:        commit.RevokedCertificates,
	}, nil
}

// ErrRenewalRefused: the certificate a device presented may not be
// renewed (not issued by this CA, revoked, expired, or its device or
// credential gone or disabled).
var ErrRenewalRefused = errors.New("the certificate may not be renewed")

// Renew issues a certificate renewing current, the client certificate the
// device authenticated with (the TLS handshake proved it holds its key),
// from the device's CSR. current must be a certificate of this CA, active
// and unexpired, of an enabled device whose credential for it is active.
// The new certificate names current in Renews: current stays valid until
// the new one is first used (CertificateUsed) or the grace period ends
// (RevokeRenewed), so a device that never gets the answer keeps working.
func (c *Certificates) Renew(ctx context.Context, current *x509.Certificate, csr []byte, source string) (*IssuedCertificate, error) {
	fp := pki.Fingerprint(current.Raw)
	var rec *registry.Certificate
	refuse := func(why string) error {
		ev := registry.AuditEvent{OrgID: registry.DefaultOrgID, Time: time.Now().UTC(), Actor: "device", Action: "certificate.renew",
			Result: "refused", Source: source, Detail: fmt.Sprintf("renewal of certificate %s refused: %s", fp, why)}
		if rec != nil {
			ev.OrgID, ev.DeviceID = rec.OrgID, rec.DeviceID
		}
		c.audit(ctx, ev)
		return fmt.Errorf("%w: %s", ErrRenewalRefused, why)
	}
	rec, err := c.store.GetCertificateByFingerprint(ctx, fp)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, refuse("it was not issued by this server's CA")
	case err != nil:
		return nil, err
	case rec.Status != registry.CertificateActive:
		return nil, refuse("it is revoked")
	case rec.DeviceID == "":
		return nil, refuse("it is not a device certificate")
	case !time.Now().Before(rec.NotAfter):
		return nil, refuse("it has expired")
	}
	cred, d, err := c.store.FindActiveCredential(ctx, registry.CredentialX509, rec.Fingerprint)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, refuse("its credential is revoked")
	case err != nil:
		return nil, err
	case d.Status != registry.DeviceEnabled:
		return nil, refuse("its device is disabled")
	case cred.DeviceID != rec.DeviceID:
		return nil, refuse("its credential belongs to another device")
	}
	// A renewal the device never used (its answer lost, say) is replaced
	// by this one, never piled up: only one may wait to supersede rec.
	if err := c.revokeRenewalsOf(ctx, rec); err != nil {
		return nil, err
	}
	out, err := c.Issue(ctx, CertificateRequest{
		OrgID: rec.OrgID, DeviceID: rec.DeviceID, CSR: csr, Renews: rec.Serial,
		Actor: "device", Action: "certificate.renew", Source: source,
	})
	if errors.Is(err, pki.ErrBadCSR) || errors.Is(err, registry.ErrInvalid) {
		refuse(err.Error())
	}
	return out, err
}

// revokeRenewalsOf revokes (superseded) the active certificates of rec's
// device that renew rec.
func (c *Certificates) revokeRenewalsOf(ctx context.Context, rec *registry.Certificate) error {
	f := registry.CertificateFilter{DeviceID: rec.DeviceID, Status: registry.CertificateActive, ListOptions: registry.ListOptions{Limit: registry.MaxPageSize}}
	for {
		page, next, err := c.store.ListCertificates(ctx, rec.OrgID, f)
		if err != nil {
			return err
		}
		for _, other := range page {
			if other.Renews == rec.Serial {
				if _, err := c.Revoke(ctx, other.OrgID, other.Serial, registry.RevocationSuperseded, "system", ""); err != nil {
					return err
				}
			}
		}
		if next == "" {
			return nil
		}
		f.After = next
	}
}

// CertificateUsed is told that a certificate of this CA authenticated a
// device: if it renews another, that one is revoked now (superseded), as
// the device evidently has the new one.
func (c *Certificates) CertificateUsed(ctx context.Context, rec *registry.Certificate) error {
	if rec.Renews == "" || c.isSettled(rec.Serial) {
		return nil
	}
	old, err := c.store.GetCertificate(ctx, rec.OrgID, rec.Renews)
	switch {
	case errors.Is(err, registry.ErrNotFound) || (err == nil && old.Status != registry.CertificateActive):
	case err != nil:
		return err
	default:
		if _, err := c.Revoke(ctx, rec.OrgID, old.Serial, registry.RevocationSuperseded, "system", ""); err != nil {
			return err
		}
	}
	c.settle(rec.Serial)
	return nil
}

func (c *Certificates) isSettled(serial string) bool {
	c.settledMu.Lock()
	defer c.settledMu.Unlock()
	_, ok := c.settled[serial]
	return ok
}

func (c *Certificates) settle(serial string) {
	c.settledMu.Lock()
	defer c.settledMu.Unlock()
	if c.settled == nil || len(c.settled) >= maxSettled {
		c.settled = make(map[string]struct{})
	}
	c.settled[serial] = struct{}{}
}

// RevokeRenewed revokes (superseded) the certificates renewed more than
// grace ago whose renewal was never used, and reports how many.
func (c *Certificates) RevokeRenewed(ctx context.Context, grace time.Duration) (int, error) {
	n := 0
	for {
		due, err := c.store.ListRenewedCertificates(ctx, time.Now().Add(-grace), 100)
		if err != nil || len(due) == 0 {
			return n, err
		}
		for _, old := range due {
			if _, err := c.Revoke(ctx, old.OrgID, old.Serial, registry.RevocationSuperseded, "system", ""); err != nil {
				return n, err
			}
			n++
		}
	}
}

// DeviceCertificateProfile is what a certificate of device d contains.
func DeviceCertificateProfile(d *registry.Device) pki.Profile {
	cn := d.Name
	if len(cn) > 64 || !printableCN(cn) {
		cn = d.ID
	}
	return pki.Profile{
		CommonName: cn,
		URIs:       []*url.URL{{Scheme: "urn", Opaque: "zerotouch:device:" + d.ID}},
	}
}

// printableCN reports whether s can be a common name as it is: printable
// ASCII, since device names are free text.
func printableCN(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// CertificateRecord is the registry record of a certificate issued to d.
func CertificateRecord(d *registry.Device, iss *pki.Issued, now time.Time) registry.Certificate {
	return registry.Certificate{
		Serial:      iss.Serial,
		OrgID:       d.OrgID,
		DeviceID:    d.ID,
		Issuer:      iss.IssuerID,
		Fingerprint: iss.Fingerprint,
		CommonName:  iss.Certificate.Subject.CommonName,
		NotBefore:   iss.Certificate.NotBefore.UTC(),
		NotAfter:    iss.Certificate.NotAfter.UTC(),
		Status:      registry.CertificateActive,
		IssuedAt:    now,
		PEM:         string(iss.PEM()),
	}
}

// Revoke revokes a certificate and the credential that authenticates it,
// so that it is refused at the next TLS handshake and its live sessions
// end. Revoking a revoked certificate is not an error.
func (c *Certificates) Revoke(ctx context.Context, orgID, serial string, reason registry.RevocationReason, actor, source string) (*registry.Certificate, error) {
	if reason == "" {
		reason = registry.RevocationUnspecified
	}
	if !reason.Valid() {
		return nil, fmt.Errorf("%w: unknown revocation reason %q", registry.ErrInvalid, reason)
	}
	cert, err := c.store.RevokeCertificate(ctx, orgID, serial, reason)
	if err != nil {
		return nil, err
	}
	if err := RevokeCertificateCredential(ctx, c.store, cert.Fingerprint); err != nil {
		return cert, err
	}
	c.audit(ctx, registry.AuditEvent{OrgID: orgID, Actor: actor, Source: source, Action: "certificate.revoke", DeviceID: cert.DeviceID,
		Result: "success", Time: time.Now().UTC(), Detail: fmt.Sprintf("certificate %s revoked (%s)", cert.Serial, cert.RevocationReason)})
	return cert, nil
}

// RevokeCertificateCredential revokes the active X509_CERTIFICATE
// credential of a certificate, if there is one.
func RevokeCertificateCredential(ctx context.Context, store registry.Store, fingerprint string) error {
	cred, _, err := store.FindActiveCredential(ctx, registry.CredentialX509, fingerprint)
	if errors.Is(err, registry.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = store.RevokeCredential(ctx, cred.OrgID, cred.ID)
	return err
}

func (c *Certificates) audit(ctx context.Context, ev registry.AuditEvent) {
	if err := c.store.AppendAudit(ctx, ev); err != nil {
		c.log.Error("audit event not recorded", "action", ev.Action, "error", err)
	}
}

// CRL builds the current CRL of the CA's issuer from the store.
func (c *Certificates) CRL(ctx context.Context, validity time.Duration) (*pki.CRL, error) {
	revoked, err := c.store.ListRevokedCertificates(ctx, c.ca.IssuerID(), time.Now())
	if err != nil {
		return nil, err
	}
	entries := make([]pki.Revoked, 0, len(revoked))
	for _, r := range revoked {
		serial, err := pki.ParseSerial(r.Serial)
		if err != nil {
			return nil, fmt.Errorf("certificate record %q: %w", r.Serial, err)
		}
		e := pki.Revoked{Serial: serial, Reason: r.RevocationReason.Code()}
		if r.RevokedAt != nil {
			e.RevokedAt = *r.RevokedAt
		}
		entries = append(entries, e)
	}
	return c.ca.CRL(entries, validity)
}
