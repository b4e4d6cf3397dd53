package api

import (
	"crypto/x509"
	"errors"
	"net/http"
	"time"

	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// CAInfo describes the built-in CA (GET /api/ca). Keys are never shown.
type CAInfo struct {
	Issuer CACertificate `json:"issuer"`
	// Root is absent for an imported CA given without its root.
	Root *CACertificate `json:"root,omitempty"`
	// IssuerID is what certificate records name as their issuer.
	IssuerID string `json:"issuerId"`
	// ChainPEM is the issuing CA then the root: what devices trust.
	ChainPEM string `json:"chainPem"`
	// CRLPath and ChainPath are the public routes of the CRL (DER; PEM
	// with .pem) and of the chain.
	CRLPath   string `json:"crlPath"`
	ChainPath string `json:"chainPath"`
}

// CACertificate is one certificate of the CA's chain.
type CACertificate struct {
	Subject     string    `json:"subject"`
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"fingerprint"`
	NotBefore   time.Time `json:"notBefore"`
	NotAfter    time.Time `json:"notAfter"`
}

// IssueCertificateRequest is the body of POST /api/devices/{id}/certificates.
type IssueCertificateRequest struct {
	// CSR is a PEM certificate signing request made on the device.
	CSR string `json:"csr,omitempty"`
	// GenerateKey asks the server for the key pair instead; the private
	// key is in the answer, once.
	GenerateKey  bool             `json:"generateKey,omitempty"`
	KeyAlgorithm pki.KeyAlgorithm `json:"keyAlgorithm,omitempty"`
	// Lifetime, e.g. "90d" or "720h"; the server's default when empty.
	Lifetime string `json:"lifetime,omitempty"`
	// Replace revokes the device's other certificates and credentials.
	Replace bool `json:"replace,omitempty"`
}

// IssuedCertificate is the answer of POST /api/devices/{id}/certificates.
type IssuedCertificate struct {
	Certificate    registry.Certificate `json:"certificate"`
	Credential     registry.Credential  `json:"credential"`
	CertificatePEM string               `json:"certificatePem"`
	ChainPEM       string               `json:"chainPem"`
	PrivateKeyPEM  string               `json:"privateKeyPem,omitempty"`
	// Revoked lists the certificates Replace revoked.
	Revoked []registry.Certificate `json:"revoked,omitempty"`
}

// RevokeCertificateRequest is the optional body of POST
// /api/certificates/{serial}/revoke.
type RevokeCertificateRequest struct {
	Reason registry.RevocationReason `json:"reason,omitempty"`
}

var errNoCA = &httpError{http.StatusServiceUnavailable, CodeUnavailable, "this node has no built-in CA"}

func (s *server) getCA(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	if s.certs == nil {
		return errNoCA
	}
	ca := s.certs.CA()
	describe := func(c *x509.Certificate) CACertificate {
		return CACertificate{Subject: c.Subject.String(), Serial: pki.SerialHex(c.SerialNumber), Fingerprint: pki.Fingerprint(c.Raw),
			NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC()}
	}
	info := CAInfo{
		Issuer: describe(ca.Issuer()), IssuerID: ca.IssuerID(),
		ChainPEM: string(ca.Chain()), CRLPath: "/ca/crl", ChainPath: "/ca/chain.pem",
	}
	if root := ca.Root(); root != nil {
		r := describe(root)
		info.Root = &r
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *server) issueCertificate(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	if s.certs == nil {
		return errNoCA
	}
	d, err := s.device(r, key)
	if err != nil {
		return err
	}
	var req IssueCertificateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	var lifetime time.Duration
	if req.Lifetime != "" {
		if lifetime, err = config.ParseDuration(req.Lifetime); err != nil || lifetime <= 0 {
			return invalid("lifetime %q: want a duration such as 90d or 720h", req.Lifetime)
		}
	}
	out, err := s.certs.Issue(r.Context(), provision.CertificateRequest{
		OrgID: key.OrgID, DeviceID: d.ID, CSR: []byte(req.CSR), GenerateKey: req.GenerateKey, KeyAlgorithm: req.KeyAlgorithm,
		Lifetime: lifetime, Replace: req.Replace, Actor: "api-key:" + key.ID, Source: clientIP(r),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, IssuedCertificate{
		Certificate: out.Certificate, Credential: out.Credential, CertificatePEM: out.CertificatePEM,
		ChainPEM: out.ChainPEM, PrivateKeyPEM: out.PrivateKeyPEM, Revoked: out.Revoked,
	})
	return nil
}

// listCertificates serves GET /api/certificates and, with the device
// taken from the path, GET /api/devices/{id}/certificates.
func (s *server) listCertificates(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	q := r.URL.Query()
	opts, err := listOptions(q)
	if err != nil {
		return err
	}
	f := registry.CertificateFilter{DeviceID: q.Get("device"), Status: registry.CertificateStatus(q.Get("status")), ListOptions: opts}
	if r.PathValue("id") != "" {
		d, err := s.device(r, key)
		if err != nil {
			return err
		}
		f.DeviceID = d.ID
	}
	if f.Status != "" && !f.Status.Valid() {
		return badRequest("query parameter status=%q: want active or revoked", f.Status)
	}
	if v := q.Get("expiresWithin"); v != "" {
		d, err := config.ParseDuration(v)
		if err != nil || d <= 0 {
			return badRequest("query parameter expiresWithin=%q: want a duration such as 30d or 72h", v)
		}
		// What to renew: still valid, and expiring within d.
		now := time.Now().UTC()
		f.ExpiresFrom, f.ExpiresBefore = now, now.Add(d)
	}
	certs, next, err := s.store.ListCertificates(r.Context(), key.OrgID, f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(certs, next))
	return nil
}

// serialParam is the {serial} path parameter in the records' spelling
// (lowercase hex, no leading zeros), whatever the caller's: openssl prints
// AA:BB:…, others uppercase.
func serialParam(r *http.Request) (string, error) {
	raw := r.PathValue("serial")
	n, err := pki.ParseSerial(raw)
	if err != nil {
		return "", badRequest("serial %q: want a certificate serial number in hex", raw)
	}
	return pki.SerialHex(n), nil
}

func (s *server) getCertificate(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	serial, err := serialParam(r)
	if err != nil {
		return err
	}
	c, err := s.store.GetCertificate(r.Context(), key.OrgID, serial)
	if err != nil {
		return notFound("certificate", serial, err)
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *server) revokeCertificate(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	if s.certs == nil {
		return errNoCA
	}
	var req RevokeCertificateRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &req); err != nil {
			return err
		}
	}
	serial, err := serialParam(r)
	if err != nil {
		return err
	}
	c, err := s.certs.Revoke(r.Context(), key.OrgID, serial, req.Reason, "api-key:"+key.ID, clientIP(r))
	if err != nil {
		return notFound("certificate", serial, err)
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// revokeCredentialCertificate revokes the built-in CA's certificate behind
// a revoked X509_CERTIFICATE credential, so that the CRL lists it too.
func (s *server) revokeCredentialCertificate(r *http.Request, c *registry.Credential) error {
	if c.Type != registry.CredentialX509 {
		return nil
	}
	cert, err := s.store.GetCertificateByFingerprint(r.Context(), c.LookupKey)
	if errors.Is(err, registry.ErrNotFound) {
		return nil // a device-supplied certificate: no record of ours
	}
	if err != nil {
		return err
	}
	_, err = s.store.RevokeCertificate(r.Context(), cert.OrgID, cert.Serial, registry.RevocationPrivilegeWithdrawn)
	return err
}
