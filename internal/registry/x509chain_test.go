package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"
)

func TestDeviceNameFromCN(t *testing.T) {
	for _, tc := range []struct {
		pattern, cn string
		want        string
		ok          bool
	}{
		{"", "dev-1", "dev-1", true},
		{"", "", "", false},
		{`(.+)\.sensors\.example`, "dev-1.sensors.example", "dev-1", true},
		{`(.+)\.sensors\.example`, "dev-1.sensors.example.evil", "", false}, // whole CN must match
		{`(.+)\.sensors\.example`, "x.dev-1.sensors.example", "x.dev-1", true},
		{`(.+)\.sensors\.example`, ".sensors.example", "", false},
		{`dev-[0-9]+`, "dev-42", "dev-42", true}, // no group: the whole name
		{`dev-[0-9]+`, "dev-42x", "", false},
		{`()x`, "x", "", false}, // empty group: no name
		{`(?:a|b)-(\d+)-(\w+)`, "a-7-z", "7", true},
		{`SN:(\w+)|(.*)`, "SN:abc", "abc", true},
	} {
		t.Run(tc.pattern+"|"+tc.cn, func(t *testing.T) {
			x := X509ChainProvisioning{CNPattern: tc.pattern}
			re, err := x.CompileCNPattern()
			if err != nil {
				t.Fatal(err)
			}
			got, ok := DeviceNameFromCN(re, tc.cn)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("DeviceNameFromCN = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func testCA(t testing.TB) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// FuzzParseCACertificates: whatever an operator pastes as the CA
// certificates of a profile, parsing returns certificates or an ErrInvalid,
// never panics, and never returns more than the limit.
func FuzzParseCACertificates(f *testing.F) {
	ca := testCA(f)
	f.Add(string(ca))
	f.Add(string(ca) + string(ca))
	f.Add(string(ca) + "junk")
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		x := X509ChainProvisioning{CACertificates: s}
		certs, err := x.ParseCACertificates()
		switch {
		case err != nil && !errors.Is(err, ErrInvalid):
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		case err == nil && (len(certs) == 0 || len(certs) > MaxX509ChainCAs):
			t.Fatalf("%d certificates and no error", len(certs))
		}
		for _, c := range certs {
			if !c.IsCA {
				t.Fatal("a non-CA certificate was accepted")
			}
		}
	})
}
