package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
)

func TestParseCertificates(t *testing.T) {
	ca := newTestCA(t, Options{})
	leaf, err := ca.SignCSR(csrFor(t, testKey(t, "p256"), "dev"), Profile{CommonName: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	chain := append(leaf.PEM(), ca.Chain()...)
	many := bytes.Repeat(leaf.PEM(), MaxChainLength+1)
	for _, tc := range []struct {
		name string
		in   []byte
		want int // certificates; 0: refused
		say  string
	}{
		{"one PEM", leaf.PEM(), 1, ""},
		{"a PEM chain", chain, 3, ""},
		{"openssl text before each block", append([]byte("subject=CN=dev\nissuer=CN=x\n"), chain...), 3, ""},
		{"CRLF line ends", bytes.ReplaceAll(leaf.PEM(), []byte("\n"), []byte("\r\n")), 1, ""},
		{"one DER", leaf.DER, 1, ""},
		{"concatenated DER", append(bytes.Clone(leaf.DER), ca.Issuer().Raw...), 2, ""},
		{"the maximum", bytes.Repeat(leaf.PEM(), MaxChainLength), MaxChainLength, ""},
		{"empty", nil, 0, "empty"},
		{"garbage", []byte("not a certificate"), 0, "malformed"},
		{"truncated PEM", leaf.PEM()[:200], 0, "broken PEM block"},
		{"truncated DER", leaf.DER[:200], 0, "malformed"},
		{"trailing garbage", append(leaf.PEM(), "garbage"...), 0, "data after the last certificate"},
		{"a private key in the chain", append(leaf.PEM(), pemKeyPKCS8(t, testKey(t, "p256"))...), 0, "never send a private key"},
		{"a request", csrFor(t, testKey(t, "p256"), "x"), 0, `"CERTIFICATE REQUEST"`},
		{"bad base64 in a block", []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), 0, ""},
		{"a block of garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), 0, "certificate 1"},
		{"too many", many, 0, "more than 10"},
		{"too large", bytes.Repeat([]byte{' '}, MaxInputSize+1), 0, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := ParseCertificates(tc.in)
			if tc.want == 0 {
				wantErr(t, err, ErrBadCertificate, ErrMalformed)
				if !strings.Contains(err.Error(), tc.say) {
					t.Fatalf("error %q does not say %q", err, tc.say)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCertificates: %v", err)
			}
			if len(certs) != tc.want || !certs[0].Equal(leaf.Certificate) && !certs[0].Equal(ca.Issuer()) {
				t.Fatalf("%d certificates, want %d", len(certs), tc.want)
			}
		})
	}
	if _, err := ParseCertificate(chain); err == nil {
		t.Fatal("ParseCertificate accepted a chain")
	}
	if c, err := ParseCertificate(leaf.DER); err != nil || !c.Equal(leaf.Certificate) {
		t.Fatalf("ParseCertificate(DER) = %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	const want = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" // SHA-256("test")
	if got := Fingerprint([]byte("test")); got != want {
		t.Fatalf("Fingerprint = %s", got)
	}
	colons := strings.ToUpper(want[:2])
	for i := 2; i < len(want); i += 2 {
		colons += ":" + strings.ToUpper(want[i:i+2])
	}
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{want, true},
		{strings.ToUpper(want), true},
		{"  " + want + "\n", true},
		{colons, true},
		{"sha256 Fingerprint=" + colons, true}, // openssl 3
		{"SHA256 Fingerprint=" + colons, true}, // openssl 1.1
		{"sha256:" + want, true},
		{"", false},
		{want[:63], false},
		{want + "0", false},
		{"g" + want[1:], false},
		{strings.Replace(colons, ":", "-", 1), false},
		{colons[:94] + ":", false},
		{"md5:" + want, false},
		{strings.Repeat(":", 95), false},
	} {
		got, err := ParseFingerprint(tc.in)
		if tc.ok && (err != nil || got != want) {
			t.Errorf("ParseFingerprint(%q) = %q, %v; want %s", tc.in, got, err, want)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "malformed")) {
			t.Errorf("ParseFingerprint(%q) = %q, %v; want ErrMalformed", tc.in, got, err)
		}
	}
}

func TestSerial(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // SerialHex; "" refused
	}{
		{"4a3f", "4a3f"},
		{"4A3F", "4a3f"},
		{"0x4a3f", "4a3f"},
		{"00:4A:3F", "4a3f"},
		{" 1 ", "1"},
		{strings.Repeat("7f", 20), strings.Repeat("7f", 20)},
		{strings.Repeat("ff", 21), ""},
		{"0", ""},
		{"00", ""},
		{"", ""},
		{"0x", ""},
		{"-1", ""},
		{"4a:3", ""},
		{"4g", ""},
		{"+1", ""},
		{strings.Repeat("1", 200), ""},
	} {
		n, err := ParseSerial(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseSerial(%q) = %v, want an error", tc.in, n)
			}
			continue
		}
		if err != nil || SerialHex(n) != tc.want {
			t.Errorf("ParseSerial(%q) = %v, %v; want %s", tc.in, n, err, tc.want)
		}
	}
	n := newSerial()
	back, err := ParseSerial(SerialHex(n))
	if err != nil || back.Cmp(n) != 0 {
		t.Fatalf("round trip of %s: %v, %v", SerialHex(n), back, err)
	}
	if SerialHex(big.NewInt(255)) != "ff" {
		t.Fatal("SerialHex(255)")
	}
}

func TestParsePrivateKey(t *testing.T) {
	ec := testKey(t, "p256").(*ecdsa.PrivateKey)
	rk := testKey(t, "rsa2048").(*rsa.PrivateKey)
	ed := testKey(t, "ed25519")
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pkcs1 := x509.MarshalPKCS1PrivateKey(rk)
	pkcs8 := func(k any) []byte { b, _ := x509.MarshalPKCS8PrivateKey(k); return b }
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	for _, tc := range []struct {
		name string
		in   []byte
		want any // the public key; nil: refused
	}{
		{"PKCS#8 EC", block("PRIVATE KEY", pkcs8(ec)), ec.Public()},
		{"PKCS#8 RSA", block("PRIVATE KEY", pkcs8(rk)), rk.Public()},
		{"PKCS#8 Ed25519", block("PRIVATE KEY", pkcs8(ed)), ed.Public()},
		{"PKCS#1", block("RSA PRIVATE KEY", pkcs1), rk.Public()},
		{"SEC1", block("EC PRIVATE KEY", sec1), ec.Public()},
		{"SEC1 after EC PARAMETERS", append(block("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}), block("EC PRIVATE KEY", sec1)...), ec.Public()},
		{"DER PKCS#8", pkcs8(ec), ec.Public()},
		{"DER PKCS#1", pkcs1, rk.Public()},
		{"DER SEC1", sec1, ec.Public()},
		{"empty", nil, nil},
		{"garbage", []byte("garbage"), nil},
		{"two keys", append(block("PRIVATE KEY", pkcs8(ec)), block("PRIVATE KEY", pkcs8(rk))...), nil},
		{"a public key", block("PUBLIC KEY", []byte{1}), nil},
		{"PKCS#1 in a PKCS#8 block", block("PRIVATE KEY", pkcs1), nil},
		{"encrypted PKCS#8", block("ENCRYPTED PRIVATE KEY", []byte{1}), nil},
		{"only a certificate", pemCert(newTestCA(t, Options{}).Root()), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := parsePrivateKey(tc.in)
			if tc.want == nil {
				wantErr(t, err, ErrBadKey)
				return
			}
			if err != nil || !sameKey(k.Public(), tc.want) {
				t.Fatalf("parsePrivateKey = %v; want the key", err)
			}
		})
	}
}
