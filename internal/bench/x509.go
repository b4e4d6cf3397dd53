package bench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// X.509 credentials of the azure-dps dialect: each device has a fresh
// ECDSA P-256 key and a leaf certificate (CN = its registration id,
// clientAuth) signed by the CA of an X.509 enrollment group, which it
// presents in the TLS handshake of its registration and of its hub
// connection; no password.

// certValidity is how long the bench's CA and device certificates are
// valid (from an hour ago, for clocks a little behind).
const certValidity = 30 * 24 * time.Hour

// DeviceCA is the CA that signs the bench devices' certificates: an X.509
// enrollment group's CA (or an intermediate below it).
type DeviceCA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// chain are the certificates a device sends after its leaf: those of
	// the CA file that are not self-signed (Cert first, when it is an
	// intermediate).
	chain [][]byte
}

// NewDeviceCA makes a self-signed ECDSA P-256 CA named cn, in memory.
func NewDeviceCA(cn string) (*DeviceCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"zerotouch bench"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("make the bench CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &DeviceCA{Cert: cert, Key: key}, nil
}

// LoadDeviceCA reads a CA from PEM: certPEM's first certificate is the
// signing CA (any further ones, e.g. intermediates up to the group's CA,
// are sent by the devices too unless self-signed), keyPEM its private
// key.
func LoadDeviceCA(certPEM, keyPEM []byte) (*DeviceCA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate and key: %w", err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("CA key: not a signing key")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %q is not a CA (basic constraints)", cert.Subject.CommonName)
	}
	ca := &DeviceCA{Cert: cert, Key: key}
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("CA certificate file: %w", err)
		}
		if !bytes.Equal(c.RawIssuer, c.RawSubject) {
			ca.chain = append(ca.chain, der)
		}
	}
	return ca, nil
}

// PEM is the CA certificate in PEM.
func (ca *DeviceCA) PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}))
}

// issue makes a device's key and leaf certificate, CN = regID, for client
// authentication, followed by the CA's chain.
func (ca *DeviceCA) issue(regID string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	notAfter := now.Add(certValidity)
	if ca.Cert.NotAfter.Before(notAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: regID},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign the certificate of %s: %w", regID, err)
	}
	return tls.Certificate{Certificate: append([][]byte{der}, ca.chain...), PrivateKey: key}, nil
}

// randomSerial is a random positive 127-bit serial number.
func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

// issueAll makes the certificates of n devices, named by name, on every
// core: before the storm's clock starts, as a real device holds its
// certificate from the factory.
func (ca *DeviceCA) issueAll(ctx context.Context, n int, name func(int) string) ([]tls.Certificate, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("no CA certificate and key to sign the devices' certificates with")
	}
	certs := make([]tls.Certificate, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := ca.issue(name(i))
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				certs[i] = c
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted while making the device certificates: %w", err)
	}
	return certs, nil
}
