package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestSignCSR(t *testing.T) {
	ca := newTestCA(t, Options{CRLURL: "http://zt.example.com/crl.pem"})
	profile := Profile{
		CommonName:  "dev-0042",
		DNSNames:    []string{"dev-0042.plant.example.com"},
		IPAddresses: []net.IP{net.ParseIP("10.1.2.3").To4()},
		URIs:        []*url.URL{mustURL("urn:zerotouch:device:0042")},
	}
	for _, tc := range []struct {
		name    string
		key     string
		req     x509.CertificateRequest
		wantEnc bool // keyEncipherment
	}{
		{"P-256, the device's CN", "p256", x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-0042"}}, false},
		{"P-384, no name at all", "p384", x509.CertificateRequest{}, false},
		{"RSA-2048", "rsa2048", x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-0042"}}, true},
		{"RSA-4096", "rsa4096", x509.CertificateRequest{}, true},
		{"Ed25519", "ed25519", x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-0042"}}, false},
		{"some of the profile's names, in another case", "p256", x509.CertificateRequest{
			Subject:     pkix.Name{CommonName: "dev-0042", Organization: []string{"ignored"}},
			DNSNames:    []string{"DEV-0042.plant.example.com"},
			IPAddresses: []net.IP{net.ParseIP("10.1.2.3")},
		}, false},
		{"all of the profile's names", "p256", x509.CertificateRequest{
			DNSNames: profile.DNSNames, IPAddresses: profile.IPAddresses, URIs: profile.URIs,
		}, false},
		{"CA:FALSE asked for", "p256", x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraintsExt(t, false)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := testKey(t, tc.key)
			before := time.Now()
			iss, err := ca.SignCSR(makeCSR(t, key, &tc.req), profile)
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			c := iss.Certificate
			verifyLeaf(t, ca, c, x509.ExtKeyUsageClientAuth)
			if !sameKey(c.PublicKey, key.Public()) {
				t.Fatal("certificate is not for the request's key")
			}
			if c.Subject.String() != "CN=dev-0042" {
				t.Errorf("subject %q, want the profile's CN alone", c.Subject)
			}
			if !slices.Equal(c.DNSNames, profile.DNSNames) || len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(profile.IPAddresses[0]) ||
				len(c.URIs) != 1 || c.URIs[0].String() != "urn:zerotouch:device:0042" {
				t.Errorf("SANs %v %v %v, want the profile's", c.DNSNames, c.IPAddresses, c.URIs)
			}
			if c.IsCA || !c.BasicConstraintsValid {
				t.Error("certificate is a CA, or has no basic constraints")
			}
			wantUsage := x509.KeyUsageDigitalSignature
			if tc.wantEnc {
				wantUsage |= x509.KeyUsageKeyEncipherment
			}
			if c.KeyUsage != wantUsage {
				t.Errorf("key usage %b, want %b", c.KeyUsage, wantUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("extended key usage %v, want clientAuth", c.ExtKeyUsage)
			}
			if d := c.NotBefore.Sub(before.Add(-ClockSkew)); d > 2*time.Second || d < -2*time.Second {
				t.Errorf("NotBefore %v, want about %v", c.NotBefore, before.Add(-ClockSkew))
			}
			if d := c.NotAfter.Sub(before.Add(DefaultLeafLifetime)); d > 2*time.Second || d < -2*time.Second {
				t.Errorf("NotAfter %v, want about %v", c.NotAfter, before.Add(DefaultLeafLifetime))
			}
			if len(c.SubjectKeyId) != 20 || !bytes.Equal(c.AuthorityKeyId, ca.Issuer().SubjectKeyId) {
				t.Errorf("SKI %x, AKI %x (issuer SKI %x)", c.SubjectKeyId, c.AuthorityKeyId, ca.Issuer().SubjectKeyId)
			}
			if !slices.Equal(c.CRLDistributionPoints, []string{"http://zt.example.com/crl.pem"}) {
				t.Errorf("CRL distribution points %v", c.CRLDistributionPoints)
			}
			if iss.Serial != SerialHex(c.SerialNumber) || iss.Fingerprint != Fingerprint(c.Raw) || !bytes.Equal(iss.DER, c.Raw) ||
				iss.IssuerID != ca.IssuerID() || len(iss.IssuerID) != 64 {
				t.Errorf("Issued = %+v does not describe its certificate", iss)
			}
			back, err := ParseCertificate(iss.PEM())
			if err != nil || !back.Equal(c) {
				t.Errorf("PEM does not parse back: %v", err)
			}
		})
	}
}

func basicConstraintsExt(t testing.TB, isCA bool) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{isCA})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: v}
}

func keyUsageExt(t testing.TB, bits ...int) pkix.Extension {
	t.Helper()
	b := asn1.BitString{Bytes: []byte{0, 0}, BitLength: 9}
	for _, i := range bits {
		b.Bytes[i/8] |= 0x80 >> (i % 8)
	}
	v, err := asn1.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidKeyUsage, Critical: true, Value: v}
}

func TestSignCSRRefusals(t *testing.T) {
	ca := newTestCA(t, Options{})
	profile := Profile{CommonName: "dev-1", DNSNames: []string{"dev-1.local"}}
	p256 := testKey(t, "p256")
	good := csrFor(t, p256, "dev-1")
	block, _ := pem.Decode(good)
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-5] ^= 0x01 // inside the signature
	otherSigned := func() []byte {
		// A request carrying one key, signed by another: the signature
		// cannot verify.
		req, _ := x509.ParseCertificateRequest(block.Bytes)
		other := makeCSR(t, testKey(t, "p256"), &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-1"}})
		ob, _ := pem.Decode(other)
		oreq, _ := x509.ParseCertificateRequest(ob.Bytes)
		// Splice: our TBS, their signature.
		var outer struct {
			Raw       asn1.RawContent
			TBS       asn1.RawValue
			Algorithm pkix.AlgorithmIdentifier
			Signature asn1.BitString
		}
		if _, err := asn1.Unmarshal(req.Raw, &outer); err != nil {
			t.Fatal(err)
		}
		outer.Signature = asn1.BitString{Bytes: oreq.Signature, BitLength: 8 * len(oreq.Signature)}
		der, err := asn1.Marshal(struct {
			TBS       asn1.RawValue
			Algorithm pkix.AlgorithmIdentifier
			Signature asn1.BitString
		}{outer.TBS, outer.Algorithm, outer.Signature})
		if err != nil {
			t.Fatal(err)
		}
		return der
	}()

	for _, tc := range []struct {
		name string
		csr  []byte
		want error
		say  string
	}{
		{"empty", nil, ErrMalformed, "empty"},
		{"white space", []byte(" \n\t"), ErrMalformed, "empty"},
		{"garbage", []byte("this is not a request"), ErrMalformed, ""},
		{"random DER-looking bytes", append([]byte{0x30, 0x82, 0x01, 0x00}, bytes.Repeat([]byte{0xff}, 256)...), ErrMalformed, ""},
		{"truncated PEM", good[:len(good)/2], ErrMalformed, "no complete PEM block"},
		{"a certificate instead", pemCert(ca.Issuer()), ErrMalformed, "CERTIFICATE REQUEST"},
		{"two requests", append(bytes.Clone(good), good...), ErrMalformed, "one request"},
		{"trailing DER", append(bytes.Clone(block.Bytes), 0), ErrMalformed, ""},
		{"oversized", bytes.Repeat([]byte("A"), MaxInputSize+1), ErrMalformed, "larger than"},
		{"tampered signature", tampered, ErrBadSignature, ""},
		{"signed by another key", otherSigned, ErrBadSignature, "not signed by the key it carries"},
		{"RSA-1024", csrFor(t, testKey(t, "rsa1024"), "dev-1"), ErrKeyNotAllowed, "RSA key of 1024 bits; at least 2048"},
		{"P-224", csrFor(t, testKey(t, "p224"), "dev-1"), ErrKeyNotAllowed, "P-224"},
		{"P-521", csrFor(t, testKey(t, "p521"), "dev-1"), ErrKeyNotAllowed, "P-521"},
		{"another device's CN", csrFor(t, p256, "dev-2"), ErrNameNotAllowed, `common name "dev-2"; this device's is "dev-1"`},
		{"CN with a control character", csrFor(t, p256, "dev-1\x00"), ErrNameNotAllowed, `"dev-1\x00"`},
		{"a DNS name not in the profile", makeCSR(t, p256, &x509.CertificateRequest{DNSNames: []string{"dev-1.local", "bank.example.com"}}),
			ErrNameNotAllowed, `DNS name "bank.example.com"`},
		{"an IP address", makeCSR(t, p256, &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("192.0.2.7")}}), ErrNameNotAllowed, "192.0.2.7"},
		{"a URI", makeCSR(t, p256, &x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://x/y")}}), ErrNameNotAllowed, "spiffe://x/y"},
		{"an e-mail address", makeCSR(t, p256, &x509.CertificateRequest{EmailAddresses: []string{"a@example.com"}}), ErrNameNotAllowed, "e-mail"},
		{"CA:TRUE", makeCSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{basicConstraintsExt(t, true)}}),
			ErrCANotAllowed, "CA:TRUE"},
		{"keyCertSign usage", makeCSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{keyUsageExt(t, 0, 5)}}),
			ErrCANotAllowed, "keyCertSign"},
		{"cRLSign usage", makeCSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{keyUsageExt(t, 6)}}),
			ErrCANotAllowed, "cRLSign"},
		{"broken basic constraints", makeCSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: []byte{0x05}}}}),
			ErrMalformed, "basic constraints"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.SignCSR(tc.csr, profile)
			wantErr(t, err, ErrBadCSR, tc.want)
			if !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("error %q does not say %q", err, tc.say)
			}
			t.Log(err)
		})
	}
	// The good request passes, as PEM and as DER.
	for _, csr := range [][]byte{good, block.Bytes} {
		if _, err := ca.SignCSR(csr, profile); err != nil {
			t.Fatalf("SignCSR(good): %v", err)
		}
	}
	// Key usages that are not a CA's are no reason to refuse.
	if _, err := ca.SignCSR(makeCSR(t, p256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{keyUsageExt(t, 0, 2, 4)}}), profile); err != nil {
		t.Fatalf("SignCSR(digitalSignature, keyEncipherment, keyAgreement requested): %v", err)
	}
}

func TestProfileRefused(t *testing.T) {
	ca := newTestCA(t, Options{})
	csr := csrFor(t, testKey(t, "p256"), "")
	for _, tc := range []struct {
		name string
		p    Profile
	}{
		{"no common name", Profile{}},
		{"common name over 64 bytes", Profile{CommonName: strings.Repeat("d", 65)}},
		{"control character", Profile{CommonName: "dev\n1"}},
		{"invalid UTF-8", Profile{CommonName: "dev\xff"}},
		{"negative lifetime", Profile{CommonName: "dev", Lifetime: -time.Hour}},
		{"DNS name with a space", Profile{CommonName: "dev", DNSNames: []string{"a b.example"}}},
		{"DNS name with an empty label", Profile{CommonName: "dev", DNSNames: []string{"a..example"}}},
		{"DNS label starting with '-'", Profile{CommonName: "dev", DNSNames: []string{"-a.example"}}},
		{"DNS wildcard in the middle", Profile{CommonName: "dev", DNSNames: []string{"a.*.example"}}},
		{"bad IP", Profile{CommonName: "dev", IPAddresses: []net.IP{{1, 2, 3}}}},
		{"relative URI", Profile{CommonName: "dev", URIs: []*url.URL{mustURL("device/1")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.SignCSR(csr, tc.p)
			wantErr(t, err, ErrBadProfile)
			_, _, err = ca.IssueWithNewKey(tc.p, "")
			wantErr(t, err, ErrBadProfile)
		})
	}
	if _, err := ca.SignCSR(csr, Profile{CommonName: strings.Repeat("d", 64), DNSNames: []string{"*.Devices.Example.com"}}); err != nil {
		t.Fatalf("a 64-byte CN and a wildcard: %v", err)
	}
}

func TestLifetime(t *testing.T) {
	csr := csrFor(t, testKey(t, "p256"), "dev")
	for _, tc := range []struct {
		name    string
		opts    Options
		p       Profile
		want    time.Duration // from now
		capped  bool          // at the issuing CA's NotAfter instead
		wantErr error
	}{
		{"default", Options{}, Profile{CommonName: "dev"}, DefaultLeafLifetime, false, nil},
		{"CA's default", Options{LeafLifetime: 7 * 24 * time.Hour}, Profile{CommonName: "dev"}, 7 * 24 * time.Hour, false, nil},
		{"profile's", Options{LeafLifetime: 7 * 24 * time.Hour}, Profile{CommonName: "dev", Lifetime: time.Hour}, time.Hour, false, nil},
		{"capped by the issuing CA", Options{IssuingLifetime: 30 * 24 * time.Hour}, Profile{CommonName: "dev"}, 0, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t, tc.opts)
			now := time.Now()
			iss, err := ca.SignCSR(csr, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			want := now.Add(tc.want)
			if tc.capped {
				want = ca.Issuer().NotAfter
			}
			if d := iss.Certificate.NotAfter.Sub(want); d > 2*time.Second || d < -2*time.Second {
				t.Fatalf("NotAfter = %v, want %v", iss.Certificate.NotAfter, want)
			}
			verifyLeaf(t, ca, iss.Certificate, x509.ExtKeyUsageClientAuth)
		})
	}
}

func TestIssuingCAExpired(t *testing.T) {
	// An imported CA that expires in a second: once it has, issuing fails
	// with a reason rather than signing a certificate nobody accepts.
	key := testKey(t, "p256")
	cert := testCACert(t, key, "short-lived", nil, nil, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(1500 * time.Millisecond) })
	ca, err := Import(t.Context(), t.TempDir(), pemCert(cert), pemKeyPKCS8(t, key), Options{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(cert.NotAfter) + 100*time.Millisecond)
	_, err = ca.SignCSR(csrFor(t, testKey(t, "p256"), "dev"), Profile{CommonName: "dev"})
	wantErr(t, err, ErrCAExpired)
}

func TestSerials(t *testing.T) {
	ca := newTestCA(t, Options{})
	csr := csrFor(t, testKey(t, "p256"), "dev")
	seen := map[string]bool{}
	for range 500 {
		iss, err := ca.SignCSR(csr, Profile{CommonName: "dev"})
		if err != nil {
			t.Fatal(err)
		}
		n := iss.Certificate.SerialNumber
		if n.Sign() <= 0 || n.BitLen() != 127 || len(iss.Serial) != 32 {
			t.Fatalf("serial %s: %d bits, %d hex digits; want positive, 127 bits (top bit clear, next set), 32 digits", iss.Serial, n.BitLen(), len(iss.Serial))
		}
		if seen[iss.Serial] {
			t.Fatalf("serial %s drawn twice", iss.Serial)
		}
		seen[iss.Serial] = true
		// The DER INTEGER is 16 bytes, no padding: the certificate encodes
		// the serial as 02 10 <16 bytes>.
		want := append([]byte{0x02, 0x10}, n.Bytes()...)
		if !bytes.Contains(iss.Certificate.RawTBSCertificate, want) {
			t.Fatalf("serial %s is not encoded on 16 bytes", iss.Serial)
		}
	}
}

func TestIssueWithNewKey(t *testing.T) {
	ca := newTestCA(t, Options{})
	for _, alg := range []KeyAlgorithm{"", ECDSAP256, ECDSAP384, RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			iss, keyPEM, err := ca.IssueWithNewKey(Profile{CommonName: "dev-9"}, alg)
			if err != nil {
				t.Fatal(err)
			}
			key, err := parsePrivateKey(keyPEM)
			if err != nil {
				t.Fatalf("returned key does not parse: %v", err)
			}
			if !sameKey(key.Public(), iss.Certificate.PublicKey) {
				t.Fatal("returned key is not the certificate's")
			}
			if iss.Certificate.Subject.CommonName != "dev-9" {
				t.Fatalf("CN %q", iss.Certificate.Subject.CommonName)
			}
			verifyLeaf(t, ca, iss.Certificate, x509.ExtKeyUsageClientAuth)
			// The pair works for TLS client authentication.
			if _, err := tls.X509KeyPair(iss.PEM(), keyPEM); err != nil {
				t.Fatalf("tls.X509KeyPair: %v", err)
			}
		})
	}
	if _, _, err := ca.IssueWithNewKey(Profile{CommonName: "dev"}, "dsa"); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
}

func TestIssueServerCertificate(t *testing.T) {
	ca := newTestCA(t, Options{})
	cert, iss, err := ca.IssueServerCertificate([]string{"localhost", "127.0.0.1", "::1", "ZT.example.com"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if leaf != iss.Certificate || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Fatalf("leaf EKU %v, want serverAuth", leaf.ExtKeyUsage)
	}
	if !slices.Equal(leaf.DNSNames, []string{"localhost", "zt.example.com"}) || len(leaf.IPAddresses) != 2 || leaf.Subject.CommonName != "localhost" {
		t.Fatalf("names %v %v %q", leaf.DNSNames, leaf.IPAddresses, leaf.Subject.CommonName)
	}
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], ca.Issuer().Raw) {
		t.Fatalf("chain of %d certificates, want the leaf and the issuing CA (no root)", len(cert.Certificate))
	}
	verifyLeaf(t, ca, leaf, x509.ExtKeyUsageServerAuth)

	// A real handshake, for each name, trusting the root alone.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	for _, name := range []string{"localhost", "127.0.0.1", "zt.example.com"} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
		if err != nil {
			t.Fatalf("TLS handshake as %s: %v", name, err)
		}
		conn.Close()
	}
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "other.example.com"}); err == nil {
		t.Fatal("handshake for a name not in the certificate succeeded")
	}

	for _, hosts := range [][]string{nil, {"bad host"}, {strings.Repeat("a", 70) + ".example"}} {
		if _, _, err := ca.IssueServerCertificate(hosts, 0); !errors.Is(err, ErrBadProfile) {
			t.Errorf("IssueServerCertificate(%q) = %v, want ErrBadProfile", hosts, err)
		}
	}
}

// TestConcurrentIssuance signs from many goroutines at once (run with
// -race): the CA is shared by every connection of a server.
func TestConcurrentIssuance(t *testing.T) {
	ca := newTestCA(t, Options{})
	csrs := [][]byte{csrFor(t, testKey(t, "p256"), ""), csrFor(t, testKey(t, "ed25519"), "")}
	errs := make(chan error, 64)
	for i := range 64 {
		go func() {
			_, err := ca.SignCSR(csrs[i%2], Profile{CommonName: "dev"})
			if err == nil {
				_, err = ca.CRL([]Revoked{{Serial: newSerial(), RevokedAt: time.Now(), Reason: 1}}, 0)
			}
			errs <- err
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
