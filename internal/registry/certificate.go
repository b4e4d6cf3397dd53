package registry

import (
	"fmt"
	"time"
)

// CertificateStatus is active or revoked. An expired certificate keeps its
// status: expiry is read from NotAfter.
type CertificateStatus string

// Certificate statuses.
const (
	CertificateActive  CertificateStatus = "active"
	CertificateRevoked CertificateStatus = "revoked"
)

// Valid reports whether s is a known status.
func (s CertificateStatus) Valid() bool { return s == CertificateActive || s == CertificateRevoked }

// RevocationReason says why a certificate was revoked, spelled as the
// CRLReason names of RFC 5280 section 5.3.1. certificateHold is left out on
// purpose: a revocation here is final.
type RevocationReason string

// Revocation reasons.
const (
	RevocationUnspecified          RevocationReason = "unspecified"
	RevocationKeyCompromise        RevocationReason = "keyCompromise"
	RevocationCACompromise         RevocationReason = "cACompromise"
	RevocationAffiliationChanged   RevocationReason = "affiliationChanged"
	RevocationSuperseded           RevocationReason = "superseded"
	RevocationCessationOfOperation RevocationReason = "cessationOfOperation"
	RevocationPrivilegeWithdrawn   RevocationReason = "privilegeWithdrawn"
)

// Valid reports whether r is a known reason.
func (r RevocationReason) Valid() bool { return r.Code() >= 0 }

// Code is r's CRLReason code (RFC 5280), what a CRL entry carries; -1 for
// an unknown reason.
func (r RevocationReason) Code() int {
	switch r {
	case RevocationUnspecified:
		return 0
	case RevocationKeyCompromise:
		return 1
	case RevocationCACompromise:
		return 2
	case RevocationAffiliationChanged:
		return 3
	case RevocationSuperseded:
		return 4
	case RevocationCessationOfOperation:
		return 5
	case RevocationPrivilegeWithdrawn:
		return 9
	}
	return -1
}

// Certificate is the record of one certificate issued by the built-in CA:
// enough to find it at a TLS handshake (Fingerprint), list what expires,
// revoke it and build the CRL of its issuer. Serial numbers are unique
// across organisations, since one CA issues for all of them.
type Certificate struct {
	// Serial is the serial number in lowercase hex without leading zeros
	// (pki.SerialHex).
	Serial string `json:"serial"`
	OrgID  string `json:"orgId"`
	// DeviceID is the device the certificate was issued to; empty for a
	// certificate of no device (a listener's server certificate).
	DeviceID string `json:"deviceId,omitempty"`
	// Issuer identifies the issuing CA, whose CRL lists the certificate once
	// revoked: the lowercase hex SHA-256 of its SubjectPublicKeyInfo
	// (pki.CA.IssuerID).
	Issuer string `json:"issuer"`
	// Fingerprint is the lowercase hex SHA-256 of the DER certificate, as in
	// Credential.LookupKey for X.509 credentials.
	Fingerprint string            `json:"fingerprint"`
	CommonName  string            `json:"commonName"`
	NotBefore   time.Time         `json:"notBefore"`
	NotAfter    time.Time         `json:"notAfter"`
	Status      CertificateStatus `json:"status"`
	// RevokedAt and RevocationReason are set once revoked.
	RevokedAt        *time.Time       `json:"revokedAt,omitempty"`
	RevocationReason RevocationReason `json:"revocationReason,omitempty"`
	// IssuedAt is when the record was written, set by the store when zero.
	IssuedAt time.Time `json:"issuedAt"`
	// Renews is the serial of the certificate this one renews (the device
	// asked for it while authenticated with that one); that one is revoked
	// once this one is used, or after a grace period.
	Renews string `json:"renews,omitempty"`
	// PEM is the certificate itself; optional (ListRevokedCertificates
	// leaves it out).
	PEM string `json:"certificatePem,omitempty"`
}

// MaxCertificatePEM caps the stored PEM of one certificate.
const MaxCertificatePEM = 64 << 10

// Validate checks the record's own fields (not uniqueness, nor that the
// device exists, which the store checks). An empty Status stands for active.
func (c *Certificate) Validate() error {
	if err := checkHex("certificate serial", c.Serial, 1, 40); err != nil {
		return err
	}
	if len(c.Serial) > 1 && c.Serial[0] == '0' {
		return fmt.Errorf("%w: certificate serial %q has a leading zero", ErrInvalid, c.Serial)
	}
	if c.Renews != "" {
		if err := checkHex("renewed certificate serial", c.Renews, 1, 40); err != nil {
			return err
		}
		if c.Renews == c.Serial {
			return fmt.Errorf("%w: certificate %s cannot renew itself", ErrInvalid, c.Serial)
		}
	}
	if err := checkHex("certificate fingerprint", c.Fingerprint, 64, 64); err != nil {
		return err
	}
	if err := checkHex("certificate issuer", c.Issuer, 64, 64); err != nil {
		return err
	}
	if err := validateText("certificate common name", c.CommonName, MaxNameLen); err != nil {
		return err
	}
	if c.NotBefore.IsZero() || c.NotAfter.IsZero() || !c.NotAfter.After(c.NotBefore) {
		return fmt.Errorf("%w: certificate validity %v – %v is empty", ErrInvalid, c.NotBefore, c.NotAfter)
	}
	switch c.Status {
	case "", CertificateActive:
		if c.RevokedAt != nil || c.RevocationReason != "" {
			return fmt.Errorf("%w: active certificate with a revocation time or reason", ErrInvalid)
		}
	case CertificateRevoked:
		if c.RevocationReason != "" && !c.RevocationReason.Valid() {
			return fmt.Errorf("%w: unknown revocation reason %q", ErrInvalid, c.RevocationReason)
		}
	default:
		return fmt.Errorf("%w: unknown certificate status %q (want active or revoked)", ErrInvalid, c.Status)
	}
	if len(c.PEM) > MaxCertificatePEM {
		return fmt.Errorf("%w: certificate PEM exceeds %d bytes", ErrInvalid, MaxCertificatePEM)
	}
	return nil
}

// checkHex accepts lowercase hex only, so that one value has one spelling
// and lookups need no normalising.
func checkHex(what, s string, minLen, maxLen int) error {
	if len(s) < minLen || len(s) > maxLen {
		if minLen == maxLen {
			return fmt.Errorf("%w: %s must be %d hex digits, got %d", ErrInvalid, what, minLen, len(s))
		}
		return fmt.Errorf("%w: %s must be %d to %d hex digits, got %d", ErrInvalid, what, minLen, maxLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; (b < '0' || b > '9') && (b < 'a' || b > 'f') {
			return fmt.Errorf("%w: %s must be lowercase hex", ErrInvalid, what)
		}
	}
	return nil
}

// CertificateFilter selects certificates in ListCertificates. Zero fields
// match everything.
type CertificateFilter struct {
	DeviceID string
	Status   CertificateStatus
	// ExpiresFrom keeps certificates with NotAfter ≥ ExpiresFrom.
	ExpiresFrom time.Time
	// ExpiresBefore keeps certificates with NotAfter < ExpiresBefore: with
	// ExpiresFrom = now and Status active, the certificates to renew.
	ExpiresBefore time.Time
	ListOptions
}
