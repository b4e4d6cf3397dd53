package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// X.509 attestation of Azure DPS: a device proves who it is with the
// client certificate of its TLS handshake (possession of the private key
// is proved by the handshake itself). These checks take the chain the
// handshake carried, the time and what the enrollment holds (the leaf's
// thumbprint, or the group's CA certificate), and accept or say why not.

// Errors of X.509 attestation; test them with errors.Is. The error
// returned wraps one of them with a sentence saying what is wrong, safe to
// show the device and to log.
var (
	// ErrNoCertificate: the request carried no client certificate.
	ErrNoCertificate = errors.New("no client certificate")
	// ErrCertificateExpired: the leaf's validity period has ended.
	ErrCertificateExpired = errors.New("certificate expired")
	// ErrCertificateNotYetValid: the leaf's validity period has not begun.
	ErrCertificateNotYetValid = errors.New("certificate not yet valid")
	// ErrNotClientCertificate: the leaf's extended key usage excludes
	// client authentication.
	ErrNotClientCertificate = errors.New("not a client authentication certificate")
	// ErrCommonNameMismatch: the leaf's subject common name is not the
	// registration id.
	ErrCommonNameMismatch = errors.New("certificate common name differs from the registration id")
	// ErrThumbprintMismatch: the leaf is not the certificate an
	// individual enrollment names.
	ErrThumbprintMismatch = errors.New("certificate thumbprint does not match the enrollment")
	// ErrNotChained: the chain does not verify up to the group's CA
	// (signature, intermediates, validity, key usage).
	ErrNotChained = errors.New("certificate does not chain to the group's CA")
	// ErrNotCA: the certificate a group trusts is not a CA certificate.
	ErrNotCA = errors.New("not a CA certificate")
	// ErrBadProof: a proof-of-possession certificate is not signed by the
	// CA, does not carry the verification code, or is not valid now.
	ErrBadProof = errors.New("proof of possession does not verify")
)

// CertificateThumbprint is the lowercase hex SHA-256 of the certificate's
// DER: the fingerprint enrollments and hub credentials name it by.
func CertificateThumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// CheckLeaf checks what any X.509 registration requires of the leaf, the
// first certificate of chain: it is valid at now, it may authenticate a
// client (extended key usage clientAuth, anyExtendedKeyUsage, or none at
// all), and its subject common name is the registration id (without
// regard to case: registration ids are case-insensitive).
func CheckLeaf(chain []*x509.Certificate, registrationID string, now time.Time) error {
	if len(chain) == 0 || chain[0] == nil {
		return ErrNoCertificate
	}
	leaf := chain[0]
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("%w: certificate %s expired at %s", ErrCertificateExpired, describe(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("%w: certificate %s is valid from %s only", ErrCertificateNotYetValid, describe(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if !clientUsage(leaf) {
		return fmt.Errorf("%w: certificate %s: its extended key usage does not include client authentication", ErrNotClientCertificate, describe(leaf))
	}
	if cn := leaf.Subject.CommonName; !strings.EqualFold(cn, registrationID) {
		return fmt.Errorf("%w: the certificate's subject common name %q is not the registration id %q", ErrCommonNameMismatch, clipName(cn), clipName(registrationID))
	}
	return nil
}

// clientUsage reports whether c may authenticate a TLS client: an
// extended key usage that names clientAuth or any usage, or none at all.
func clientUsage(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// VerifyIndividual checks the chain of a device of an individual X.509
// enrollment: CheckLeaf, and the leaf's SHA-256 thumbprint is thumbprint
// (lowercase hex, registry.X509Attestation.Fingerprint). The leaf need not
// chain to anything: the enrollment names it exactly.
func VerifyIndividual(chain []*x509.Certificate, registrationID, thumbprint string, now time.Time) error {
	if err := CheckLeaf(chain, registrationID, now); err != nil {
		return err
	}
	if fp := CertificateThumbprint(chain[0]); fp != strings.ToLower(thumbprint) {
		return fmt.Errorf("%w: certificate %s is not the enrolled certificate (SHA-256 %s)", ErrThumbprintMismatch, describe(chain[0]), clipName(thumbprint))
	}
	return nil
}

// VerifyGroup checks the chain of a device of an X.509 enrollment group:
// CheckLeaf, and the leaf verifies up to ca (the group's CA certificate,
// the only root) through the chain's other certificates as intermediates,
// for client authentication, at now. It does not check that the CA is
// verified by proof of possession: that is the enrollment's state.
func VerifyGroup(chain []*x509.Certificate, registrationID string, ca *x509.Certificate, now time.Time) error {
	if err := CheckLeaf(chain, registrationID, now); err != nil {
		return err
	}
	if err := CheckCA(ca); err != nil {
		return err
	}
	if err := ChainsTo(chain, ca, now); err != nil {
		return err
	}
	return nil
}

// ChainsTo reports whether chain's leaf verifies up to ca through the
// chain's other certificates, for client authentication, at now
// (ErrNotChained otherwise, with the reason).
func ChainsTo(chain []*x509.Certificate, ca *x509.Certificate, now time.Time) error {
	if len(chain) == 0 || chain[0] == nil {
		return ErrNoCertificate
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c != nil {
			inter.AddCert(c)
		}
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fmt.Errorf("%w: certificate %s does not verify against CA %s: %v", ErrNotChained, describe(chain[0]), describe(ca), err)
	}
	return nil
}

// ClaimsCA reports whether one of chain's certificates is ca or names it
// as its issuer: whether the chain means to chain to ca, so that a failure
// to verify against it is worth telling the device.
func ClaimsCA(chain []*x509.Certificate, ca *x509.Certificate) bool {
	for _, c := range chain {
		if c != nil && (bytes.Equal(c.RawIssuer, ca.RawSubject) || bytes.Equal(c.Raw, ca.Raw)) {
			return true
		}
	}
	return false
}

// CheckCA checks that ca may be a group's CA: basic constraints CA:TRUE,
// and a key usage that allows signing certificates when it has one.
func CheckCA(ca *x509.Certificate) error {
	if ca == nil {
		return fmt.Errorf("%w: no certificate", ErrNotCA)
	}
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return fmt.Errorf("%w: %s lacks basic constraints CA:TRUE", ErrNotCA, describe(ca))
	}
	if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: %s's key usage does not allow signing certificates", ErrNotCA, describe(ca))
	}
	return nil
}

// VerifyProofOfPossession checks the certificate an operator uploads to
// prove they hold a CA's private key, as DPS does: it is signed by the
// CA's key, its subject common name is the verification code the server
// handed out, and it is valid at now.
func VerifyProofOfPossession(ca, proof *x509.Certificate, code string, now time.Time) error {
	if err := CheckCA(ca); err != nil {
		return err
	}
	if proof == nil {
		return fmt.Errorf("%w: no verification certificate", ErrBadProof)
	}
	if code == "" {
		return fmt.Errorf("%w: no verification code is pending: generate one first", ErrBadProof)
	}
	if cn := proof.Subject.CommonName; cn != code {
		return fmt.Errorf("%w: the verification certificate's subject common name is %q, want the verification code %q", ErrBadProof, clipName(cn), code)
	}
	if err := proof.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("%w: the verification certificate is not signed by the CA's key (%s): %v", ErrBadProof, describe(ca), err)
	}
	switch {
	case now.After(proof.NotAfter):
		return fmt.Errorf("%w: the verification certificate expired at %s", ErrBadProof, proof.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(proof.NotBefore):
		return fmt.Errorf("%w: the verification certificate is valid from %s only", ErrBadProof, proof.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// describe names a certificate in messages: its common name (quoted,
// bounded) and SHA-256.
func describe(c *x509.Certificate) string {
	return fmt.Sprintf("CN=%q (SHA-256 %s)", clipName(c.Subject.CommonName), CertificateThumbprint(c))
}

// clipName bounds a name taken from untrusted input before it is quoted.
func clipName(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}
