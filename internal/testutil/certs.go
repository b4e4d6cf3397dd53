package testutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// TestCert is a certificate made by a test, with its key.
type TestCert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertOptions tune a certificate made by NewCert; zero values give a
// client certificate valid from an hour ago to a day from now.
type CertOptions struct {
	// CA makes a CA certificate (basic constraints CA:TRUE, cert signing).
	CA bool
	// NotBefore and NotAfter replace the default validity period.
	NotBefore, NotAfter time.Time
	// ExtKeyUsage replaces client authentication (leaves only).
	ExtKeyUsage []x509.ExtKeyUsage
	// Subject replaces the subject named by cn (e.g. to forge an issuer).
	Subject *pkix.Name
}

// NewCert makes a certificate named cn, signed by parent (self-signed when
// parent is nil), as a manufacturer's CA would: what devices present
// without zerotouch's CA having anything to do with it.
func NewCert(t testing.TB, cn string, parent *TestCert, o CertOptions) *TestCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Test Maker"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if o.Subject != nil {
		tmpl.Subject = *o.Subject
	}
	if !o.NotBefore.IsZero() {
		tmpl.NotBefore = o.NotBefore
	}
	if !o.NotAfter.IsZero() {
		tmpl.NotAfter = o.NotAfter
	}
	if o.ExtKeyUsage != nil {
		tmpl.ExtKeyUsage = o.ExtKeyUsage
	}
	if o.CA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.ExtKeyUsage = nil
	}
	signer, issuer := crypto.Signer(key), tmpl
	if parent != nil {
		signer, issuer = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatalf("create certificate %s: %v", cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &TestCert{Cert: c, Key: key}
}

// PEM is the certificate in PEM.
func (c *TestCert) PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}))
}

// Fingerprint is the lowercase hex SHA-256 of the certificate.
func (c *TestCert) Fingerprint() string { return FingerprintOf(c.Cert) }

// TLS is the certificate with its key for a TLS client, followed by
// chain (the intermediates it sends).
func (c *TestCert) TLS(chain ...*TestCert) tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, ic := range chain {
		tc.Certificate = append(tc.Certificate, ic.Cert.Raw)
	}
	return tc
}

// FingerprintOf is the lowercase hex SHA-256 of c.
func FingerprintOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
