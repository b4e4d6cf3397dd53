package pki

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Fuzz tests of every parser of untrusted input. Run one at a time, e.g.
//
//	go test -run '^$' -fuzz '^FuzzParseCSR$' -fuzztime 30s ./internal/pki/
//
// Without -fuzz they run their seeds as ordinary tests.

// seedCSRs are requests of every accepted key type and some refused ones.
func seedCSRs(f *testing.F) [][]byte {
	var out [][]byte
	for _, k := range []string{"p256", "p384", "rsa2048", "ed25519", "p224"} {
		key := testKey(f, k)
		csr := csrFor(f, key, "dev-1")
		out = append(out, csr)
		block, _ := pem.Decode(csr)
		out = append(out, block.Bytes)
	}
	out = append(out, makeCSR(f, testKey(f, "p256"), &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "dev-1"},
		DNSNames:    []string{"dev-1.local", "other.local"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
	}))
	out = append(out, makeCSR(f, testKey(f, "p256"), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraintsExt(f, true)}}))
	out = append(out, []byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"), []byte{0x30, 0x00}, nil)
	return out
}

func FuzzParseCSR(f *testing.F) {
	for _, s := range seedCSRs(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			if csr != nil || !errors.Is(err, ErrBadCSR) {
				t.Fatalf("ParseCSR = %v, %v: a refusal must be ErrBadCSR alone", csr, err)
			}
			return
		}
		if err := checkDeviceKey(csr.PublicKey); err != nil {
			t.Fatalf("accepted a request with a refused key: %v", err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a request whose signature does not verify: %v", err)
		}
	})
}

func FuzzSignCSR(f *testing.F) {
	for _, s := range seedCSRs(f) {
		f.Add(s)
	}
	ca := newTestCA(f, Options{})
	profile := Profile{CommonName: "dev-1", DNSNames: []string{"dev-1.local"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}
	f.Fuzz(func(t *testing.T, data []byte) {
		iss, err := ca.SignCSR(data, profile)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("SignCSR refused with %v, not ErrBadCSR", err)
			}
			return
		}
		c := iss.Certificate
		if c.Subject.String() != "CN=dev-1" || c.IsCA || !slices.Equal(c.DNSNames, profile.DNSNames) ||
			len(c.IPAddresses) != 1 || len(c.URIs) != 0 || len(c.EmailAddresses) != 0 {
			t.Fatalf("issued a certificate with names outside the profile: %v %v %v %v", c.Subject, c.DNSNames, c.IPAddresses, c.URIs)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("issued a certificate that does not verify: %v", err)
		}
	})
}

func FuzzParseCertificates(f *testing.F) {
	ca := newTestCA(f, Options{})
	iss, err := ca.SignCSR(csrFor(f, testKey(f, "p256"), "dev"), Profile{CommonName: "dev"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(iss.PEM())
	f.Add(iss.DER)
	f.Add(ca.Chain())
	f.Add(append(iss.PEM(), ca.Chain()...))
	f.Add(append(bytes.Clone(iss.DER), ca.Issuer().Raw...))
	f.Add([]byte("text\n" + string(iss.PEM()) + "trailing"))
	f.Add(pemKeyPKCS8(f, testKey(f, "p256")))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificates(data)
		if err != nil {
			if certs != nil || !errors.Is(err, ErrBadCertificate) {
				t.Fatalf("ParseCertificates = %d, %v: a refusal must be ErrBadCertificate alone", len(certs), err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > MaxChainLength || slices.Contains(certs, nil) {
			t.Fatalf("ParseCertificates returned %d certificates", len(certs))
		}
		for _, c := range certs {
			if Fingerprint(c.Raw) == "" {
				t.Fatal("no fingerprint")
			}
		}
	})
}

func FuzzParseFingerprint(f *testing.F) {
	fp := Fingerprint([]byte("seed"))
	var colons []string
	for i := 0; i < len(fp); i += 2 {
		colons = append(colons, strings.ToUpper(fp[i:i+2]))
	}
	for _, s := range []string{fp, strings.ToUpper(fp), strings.Join(colons, ":"), "sha256 Fingerprint=" + strings.Join(colons, ":"),
		"sha256:" + fp, "", ":", fp[:10]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFingerprint(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refusal %v is not ErrMalformed", err)
			}
			return
		}
		if len(got) != 64 || strings.ToLower(got) != got {
			t.Fatalf("ParseFingerprint(%q) = %q, not 64 lowercase hex digits", s, got)
		}
		if again, err := ParseFingerprint(got); err != nil || again != got {
			t.Fatalf("ParseFingerprint is not idempotent on %q: %q, %v", got, again, err)
		}
	})
}

func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"4a3f", "0x4A3F", "4a:3f", SerialHex(newSerial()), "0", "", "::", strings.Repeat("f", 41)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSerial(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refusal %v is not ErrMalformed", err)
			}
			return
		}
		if n.Sign() <= 0 || n.BitLen() > 160 {
			t.Fatalf("ParseSerial(%q) = %v: not a positive 20-byte number", s, n)
		}
		back, err := ParseSerial(SerialHex(n))
		if err != nil || back.Cmp(n) != 0 {
			t.Fatalf("round trip of %s: %v, %v", SerialHex(n), back, err)
		}
	})
}

func FuzzParsePrivateKey(f *testing.F) {
	f.Add(pemKeyPKCS8(f, testKey(f, "p256")))
	f.Add(pemKeyPKCS8(f, testKey(f, "ed25519")))
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := parsePrivateKey(data)
		if err != nil {
			if k != nil || !errors.Is(err, ErrBadKey) {
				t.Fatalf("parsePrivateKey = %v, %v: a refusal must be ErrBadKey alone", k, err)
			}
			return
		}
		if k.Public() == nil {
			t.Fatal("a key without a public key")
		}
	})
}

// FuzzUnseal feeds damaged sealed-key files to the unsealer: every one must
// be refused as ErrCorrupt or ErrWrongKEK, never panic, never unseal.
func FuzzUnseal(f *testing.F) {
	dir := f.TempDir()
	k := &kek{keyFile: filepath.Join(dir, "kek"), log: slog.New(slog.DiscardHandler)}
	if err := k.createFileKey(); err != nil {
		f.Fatal(err)
	}
	sealed, err := k.seal("issuing", testKey(f, "p256"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(bytes.Replace(sealed, []byte("KEK: key-file"), []byte("KEK: passphrase"), 1))
	f.Add(bytes.Replace(sealed, []byte("Purpose: issuing"), []byte("Purpose: root"), 1))
	f.Add(sealed[:len(sealed)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := k.unseal("issuing.key", "issuing", data)
		if err == nil {
			if key == nil {
				t.Fatal("unsealed to nothing")
			}
			return // the seal itself, or a re-encoding of it
		}
		if key != nil || !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongKEK)) {
			t.Fatalf("unseal = %v, %v: want ErrCorrupt or ErrWrongKEK", key, err)
		}
	})
}
