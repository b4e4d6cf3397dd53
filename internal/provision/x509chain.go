package provision

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Reasons of refused X.509 chain provisioning.
const (
	// ReasonUntrustedCertificate: the certificate chains to no CA that a
	// profile trusts. It is not audited by ProvisionByCertificate: for
	// the caller it is an unknown certificate, refused (and audited) as
	// such.
	ReasonUntrustedCertificate Reason = "untrusted-certificate"
	// ReasonBadCertificate: the certificate claims a CA that a profile
	// trusts but does not verify against it (signature, validity period,
	// key usage), several profiles trust it, or its common name yields no
	// usable device name.
	ReasonBadCertificate Reason = "bad-certificate"
)

// ChainRequest is a device's first connection with a client certificate:
// the X.509 chain provisioning request of ThingsBoard 3.5+.
type ChainRequest struct {
	// Dialect or transport that carried it, for audit and metrics ("mqtt").
	Dialect string
	// Source is the client's IP address.
	Source string
	// Chain is the chain the client presented in its TLS handshake, its
	// own certificate first; the certificates after it are used as
	// intermediates only, never trusted as such.
	Chain []*x509.Certificate
}

// chainProfilesTTL is how long TrustedCAs serves the trusted CAs it
// loaded. It only decides what TLS handshakes let through to the CONNECT;
// ProvisionByCertificate always reads the profiles afresh, so a CA removed
// from a profile provisions nothing once the change is committed.
const chainProfilesTTL = 5 * time.Second

// chainProfile is a profile with X509Chain, parsed.
type chainProfile struct {
	profile registry.Profile
	anchors []*x509.Certificate
	pool    *x509.CertPool
	pattern *regexp.Regexp
}

// chainCache holds what TrustedCAs last loaded.
type chainCache struct {
	mu      sync.Mutex
	at      time.Time
	anchors []*x509.Certificate
}

// TrustedCAs returns the CA certificates that profiles trust for X.509
// chain provisioning, across organisations, as loaded at most a few
// seconds ago: what a TLS handshake checks a manufacturer's certificate
// against (see certauth.Anchors).
func (s *Service) TrustedCAs(ctx context.Context) ([]*x509.Certificate, error) {
	s.chains.mu.Lock()
	defer s.chains.mu.Unlock()
	now := s.now()
	if !s.chains.at.IsZero() && now.Sub(s.chains.at) < chainProfilesTTL && !now.Before(s.chains.at) {
		return s.chains.anchors, nil
	}
	cps, err := s.chainProfiles(ctx)
	if err != nil {
		return nil, err
	}
	var anchors []*x509.Certificate
	for _, cp := range cps {
		anchors = append(anchors, cp.anchors...)
	}
	s.chains.anchors, s.chains.at = anchors, now
	return anchors, nil
}

// chainProfiles loads and parses the profiles with X509Chain. A profile
// whose stored configuration no longer parses (written by a newer or
// buggy version) is skipped and logged rather than failing them all.
func (s *Service) chainProfiles(ctx context.Context) ([]chainProfile, error) {
	ps, err := s.store.ListX509ChainProfiles(ctx)
	if err != nil {
		return nil, fmt.Errorf("list X.509 chain profiles: %w", err)
	}
	out := make([]chainProfile, 0, len(ps))
	for _, p := range ps {
		anchors, err := p.X509Chain.ParseCACertificates()
		if err == nil {
			var re *regexp.Regexp
			if re, err = p.X509Chain.CompileCNPattern(); err == nil {
				pool := x509.NewCertPool()
				for _, a := range anchors {
					pool.AddCert(a)
				}
				out = append(out, chainProfile{profile: p, anchors: anchors, pool: pool, pattern: re})
				continue
			}
		}
		s.log.ErrorContext(ctx, "profile's X.509 chain configuration is unusable; skipped", "profile", p.ID, "error", err)
	}
	return out, nil
}

// claims reports whether one of chain's certificates is one of anchors or
// names one of them as its issuer: whether the chain means to chain to
// them, so that a failure to verify is the certificate's fault.
func claims(chain, anchors []*x509.Certificate) bool {
	for _, c := range chain {
		for _, a := range anchors {
			if bytes.Equal(c.RawIssuer, a.RawSubject) || bytes.Equal(c.Raw, a.Raw) {
				return true
			}
		}
	}
	return false
}

// ProvisionByCertificate provisions the device presenting req.Chain on its
// first connection, through the same steps and rules as Provision:
//
//   - attest: the chain verifies (signature, validity period at the
//     service's clock, client-authentication usage) against the CAs of
//     exactly one profile; the device name is taken from the leaf's
//     common name by the profile's pattern;
//   - decide: a device of that name in the profile is provisioned if it
//     was pre-provisioned, or, if it was provisioned before, follows the
//     profile's ReprovisionPolicy (rotate: its credentials are replaced,
//     provided the certificate was issued after the one the device holds,
//     so that a superseded certificate cannot take the device back;
//     never: refused); a missing device is created only if the profile
//     allows it; a disabled device, or one of another profile, is refused;
//   - issue: an X509_CERTIFICATE credential whose lookup key is the
//     leaf's SHA-256 fingerprint, so that the device then authenticates
//     by the certificate it presented;
//   - commit: one durable transaction, with the audit event.
//
// A chain that claims no trusted CA is refused with
// ReasonUntrustedCertificate, unaudited (the caller treats it as an
// unknown certificate); every other refusal is audited before
// ProvisionByCertificate returns. A certificate that already authenticates
// a device of the profile under the name it yields (a concurrent first
// connection won) is a success that changes nothing.
//
// Unlike Provision it does not wait for the source's failure delay: the
// caller (the hub, at CONNECT) applies it.
func (s *Service) ProvisionByCertificate(ctx context.Context, req ChainRequest) (*Result, error) {
	start := s.now()
	var (
		res  *Result
		name string
		cp   *chainProfile
		err  error
	)
	cp, name, err = s.attestChain(ctx, req)
	if err == nil {
		unlock := s.devices.lock(cp.profile.ID + "\n" + name)
		for attempt := 1; ; attempt++ {
			res, err = s.decideChain(ctx, cp, name, req)
			var ce *registry.ConflictError
			// A concurrent first connection (here or on another node)
			// wrote the device or this very credential: decide again.
			if err == nil || !errors.As(err, &ce) || (ce.What != "device" && ce.What != "credential") || attempt == maxAttempts {
				break
			}
		}
		unlock()
	}
	if err == nil {
		s.metrics.ObserveProvision(req.Dialect, "success", s.now().Sub(start))
		return res, nil
	}
	pe := s.failure(ctx, err, "the certificate already authenticates another device", req.Dialect, req.Source)
	err = pe
	if pe.Reason == ReasonUntrustedCertificate {
		return nil, err
	}
	var p *registry.Profile
	if cp != nil {
		p = &cp.profile
	}
	s.countFailure(req.Source, pe.Reason)
	s.auditFailure(ctx, Request{Dialect: req.Dialect, Source: req.Source, DeviceName: name}, p, pe)
	s.metrics.ObserveProvision(req.Dialect, string(pe.Reason), s.now().Sub(start))
	return nil, err
}

// attestChain finds the one profile whose CAs the chain verifies against,
// and the device name its pattern takes from the leaf.
func (s *Service) attestChain(ctx context.Context, req ChainRequest) (*chainProfile, string, error) {
	if len(req.Chain) == 0 || req.Chain[0] == nil {
		return nil, "", refuse(ReasonUntrustedCertificate, "no client certificate")
	}
	leaf := req.Chain[0]
	cps, err := s.chainProfiles(ctx)
	if err != nil {
		return nil, "", err
	}
	inter := x509.NewCertPool()
	for _, c := range req.Chain[1:] {
		if c != nil {
			inter.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{Intermediates: inter, CurrentTime: s.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	var (
		matched  []*chainProfile
		claimed  *chainProfile
		claimErr error
	)
	for i := range cps {
		cp := &cps[i]
		opts.Roots = cp.pool
		if _, err := leaf.Verify(opts); err == nil {
			matched = append(matched, cp)
		} else if claimed == nil && claims(req.Chain, cp.anchors) {
			claimed, claimErr = cp, err
		}
	}
	desc := describeCert(leaf)
	switch {
	case len(matched) == 0 && claimed != nil:
		return claimed, "", refuse(ReasonBadCertificate, "certificate %s names a CA that profile %q trusts but does not verify against it: %v", desc, claimed.profile.Name, claimErr)
	case len(matched) == 0:
		return nil, "", refuse(ReasonUntrustedCertificate, "certificate %s chains to no CA a profile trusts", desc)
	case len(matched) > 1:
		names := make([]string, len(matched))
		for i, cp := range matched {
			names[i] = fmt.Sprintf("%q", cp.profile.Name)
		}
		return matched[0], "", refuse(ReasonBadCertificate, "certificate %s chains to CAs trusted by several profiles (%s): which one to provision into is ambiguous; trust its CA in one profile only",
			desc, strings.Join(names, ", "))
	}
	cp := matched[0]
	name, ok := registry.DeviceNameFromCN(cp.pattern, leaf.Subject.CommonName)
	if !ok {
		return cp, "", refuse(ReasonBadCertificate, "certificate %s: its common name yields no device name with the profile's pattern %q", desc, cp.profile.X509Chain.CNPattern)
	}
	if err := registry.ValidateName("device", name); err != nil {
		return cp, "", refuse(ReasonBadCertificate, "certificate %s: %s", desc, strings.TrimPrefix(err.Error(), registry.ErrInvalid.Error()+": "))
	}
	return cp, name, nil
}

// newestCertificate returns the most recently issued (by NotBefore) of
// the certificates dev has ever held in X.509 credentials, active or
// revoked; nil when none. revoked reports whether the certificate of
// fingerprint fp is among the revoked ones: an operator's revocation must
// not be undone by the certificate connecting again.
func (s *Service) newestCertificate(ctx context.Context, dev *registry.Device, fp string) (newest *x509.Certificate, revoked bool, err error) {
	creds, err := s.store.ListCredentials(ctx, dev.OrgID, dev.ID)
	if err != nil {
		return nil, false, err
	}
	for _, cr := range creds {
		if cr.Type != registry.CredentialX509 {
			continue
		}
		if cr.Status == registry.CredentialRevoked && cr.LookupKey == fp {
			revoked = true
		}
		if cr.CertificatePEM == "" {
			continue
		}
		block, _ := pem.Decode([]byte(cr.CertificatePEM))
		if block == nil {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && (newest == nil || c.NotBefore.After(newest.NotBefore)) {
			newest = c
		}
	}
	return newest, revoked, nil
}

// describeCert names a certificate in refusals: its common name (quoted,
// bounded) and fingerprint.
func describeCert(c *x509.Certificate) string {
	cn := c.Subject.CommonName
	if len(cn) > 128 {
		cn = cn[:128] + "…"
	}
	return fmt.Sprintf("CN=%q (SHA-256 %s)", cn, fingerprint(c))
}

func fingerprint(c *x509.Certificate) string { return pki.Fingerprint(c.Raw) }

// decideChain applies the profile's rules to the device as it is now,
// issues the certificate's credential and commits.
func (s *Service) decideChain(ctx context.Context, cp *chainProfile, name string, req ChainRequest) (*Result, error) {
	p := &cp.profile
	leaf := req.Chain[0]
	fp := fingerprint(leaf)
	_, owner, err := s.store.FindActiveCredential(ctx, registry.CredentialX509, fp)
	switch {
	case err == nil && owner.ProfileID == p.ID && owner.Name == name:
		// Provisioned by a concurrent first connection: the same answer.
		if owner.Status != registry.DeviceEnabled {
			return nil, refuse(ReasonDeviceDisabled, "device %q is disabled", name)
		}
		return &Result{Device: *owner, Credentials: IssuedCredentials{Type: registry.CredentialX509, Certificate: fp}}, nil
	case err == nil:
		return nil, refuse(ReasonCredentialsTaken, "certificate %s already authenticates another device", describeCert(leaf))
	case !errors.Is(err, registry.ErrNotFound):
		return nil, err
	}

	dev, err := s.store.GetDeviceByName(ctx, p.OrgID, name)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	now := s.now().UTC()
	c := &registry.ProvisionCommit{At: now}
	switch {
	case dev != nil && dev.ProfileID != p.ID:
		if !p.X509Chain.AllowCreate {
			return nil, refuse(ReasonNotPreProvisioned, "no pre-provisioned device named %q in this profile", name)
		}
		return nil, refuse(ReasonAlreadyProvisioned, "device name %q is already taken by a device of another profile", name)
	case dev == nil && !p.X509Chain.AllowCreate:
		return nil, refuse(ReasonNotPreProvisioned, "no pre-provisioned device named %q in this profile, and the profile does not create devices", name)
	case dev == nil:
		dev = &registry.Device{ID: uuid.NewString(), OrgID: p.OrgID, ProfileID: p.ID, Name: name, Status: registry.DeviceEnabled}
		c.Create = true
	case dev.Status != registry.DeviceEnabled:
		return nil, refuse(ReasonDeviceDisabled, "device %q is disabled", name)
	case dev.ProvisionedAt != nil && p.ReprovisionPolicy == registry.ReprovisionNever:
		return nil, refuse(ReasonAlreadyProvisioned, "device %q is already provisioned with other credentials, and the profile's reprovision policy is never", name)
	default:
		// Pre-provisioned, or reprovisioned under "rotate": the device's
		// credentials are replaced by this certificate, never piled up.
		if dev.ProvisionedAt != nil {
			held, revoked, err := s.newestCertificate(ctx, dev, fp)
			if err != nil {
				return nil, err
			}
			if revoked {
				return nil, refuse(ReasonAlreadyProvisioned, "certificate %s of device %q was revoked", describeCert(leaf), name)
			}
			// No going back: a certificate the device replaced, still
			// valid and still chained to the CA, must not take it back.
			if held != nil && !leaf.NotBefore.After(held.NotBefore) {
				return nil, refuse(ReasonAlreadyProvisioned, "device %q holds certificate %s issued %s; certificate %s, issued %s, is not newer and does not replace it",
					name, describeCert(held), held.NotBefore.UTC().Format(time.RFC3339), describeCert(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
			}
		}
		c.ExpectVersion = dev.Version
		c.RevokeActive = true
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	cred, issued, err := BuildCredential(CredentialsRequest{Type: registry.CredentialX509, Certificate: string(certPEM)}, "", now)
	if err != nil {
		return nil, &Error{Reason: ReasonBadCertificate, Msg: strings.TrimPrefix(err.Error(), ErrBadCredentials.Error()+": ")}
	}
	issued.Certificate = fp // the device has the certificate; the answer names it
	reprovisioned := dev.ProvisionedAt != nil
	dev.ProvisionedAt = &now
	c.Device = dev
	c.Credentials = []registry.Credential{cred}
	c.Audit = registry.AuditEvent{
		OrgID: p.OrgID, Time: now, Actor: "device", Action: "provision", Result: "success",
		ProfileID: p.ID, Source: req.Source, Dialect: req.Dialect,
		Detail: fmt.Sprintf("device %q provisioned by its X.509 certificate %s, chained to a CA the profile trusts", name, describeCert(leaf)),
	}
	if reprovisioned {
		c.Audit.Detail = fmt.Sprintf("device %q reprovisioned by its X.509 certificate %s: previous credentials revoked", name, describeCert(leaf))
	}
	if err := s.store.CommitProvision(ctx, c); err != nil {
		return nil, err
	}
	return &Result{Device: *c.Device, Credentials: issued, Reprovisioned: reprovisioned}, nil
}
