package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"time"
)

// DefaultCRLValidity is how long a CRL is valid when CA.CRL is given no
// validity: relying parties refetch it by then, so the caller regenerates
// it well before (every day, and on every revocation).
const DefaultCRLValidity = 7 * 24 * time.Hour

// Revoked is one entry of a CRL.
type Revoked struct {
	Serial    *big.Int
	RevokedAt time.Time
	// Reason is the RFC 5280 CRLReason code (registry.RevocationReason.Code);
	// 0, unspecified, leaves the entry without a reason, as RFC 5280 asks.
	Reason int
}

// CRL is a certificate revocation list signed by the issuing CA.
type CRL struct {
	DER []byte
	// Number is the CRL number: each CRL of this CA has a greater one.
	Number                 *big.Int
	ThisUpdate, NextUpdate time.Time
}

// PEM is the CRL in PEM ("X509 CRL").
func (c *CRL) PEM() []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.DER}) }

// CRL builds and signs the CRL listing revoked, valid from now for validity
// (DefaultCRLValidity when zero). Its number is greater than any this CA
// issued before, across restarts: the time in microseconds, or the last
// number plus one if that is greater (a clock set back), persisted before
// the CRL is returned.
func (ca *CA) CRL(revoked []Revoked, validity time.Duration) (*CRL, error) {
	if validity == 0 {
		validity = DefaultCRLValidity
	}
	if validity < 0 {
		return nil, fmt.Errorf("build CRL: negative validity %v", validity)
	}
	if ca.issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("build CRL: the issuing CA %s may not sign CRLs (no cRLSign key usage): import a CA that may", ca.issuer.Subject)
	}
	entries := make([]x509.RevocationListEntry, len(revoked))
	for i, r := range revoked {
		if r.Serial == nil || r.Serial.Sign() <= 0 {
			return nil, fmt.Errorf("build CRL: entry %d has no positive serial number", i+1)
		}
		if r.Reason < 0 || r.Reason == 7 || r.Reason > 10 {
			return nil, fmt.Errorf("build CRL: entry %d (serial %s) has reason code %d, not an RFC 5280 CRLReason", i+1, SerialHex(r.Serial), r.Reason)
		}
		if r.RevokedAt.IsZero() {
			return nil, fmt.Errorf("build CRL: entry %d (serial %s) has no revocation time", i+1, SerialHex(r.Serial))
		}
		entries[i] = x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.RevokedAt.UTC(), ReasonCode: r.Reason}
	}
	// CRL times have one-second precision: truncate so that the CRL
	// returned says what the DER says.
	now := time.Now().UTC().Truncate(time.Second)

	ca.mu.Lock()
	defer ca.mu.Unlock()
	number := big.NewInt(now.UnixMicro())
	if next := new(big.Int).Add(ca.crlNumber, big.NewInt(1)); next.Cmp(number) > 0 {
		number = next
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(validity),
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.issuer, ca.key)
	if err != nil {
		return nil, fmt.Errorf("build CRL: %w", err)
	}
	// Persisted before the CRL is handed out, so that no restart can give
	// a later CRL the same number.
	if err := writeFileAtomic(filepath.Join(ca.dir, crlNumberFile), []byte(number.String()+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("build CRL: record its number: %w", err)
	}
	ca.crlNumber = number
	return &CRL{DER: der, Number: number, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate}, nil
}
