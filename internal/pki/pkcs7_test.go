package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"testing"
)

// parseCertsOnly reads a certs-only SignedData strictly, field by field, as
// CertsOnlyPKCS7 is meant to write it, and returns its certificates.
func parseCertsOnly(t *testing.T, der []byte) []*x509.Certificate {
	t.Helper()
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) != 0 {
		t.Fatalf("ContentInfo: %v (%d trailing bytes)", err, len(rest))
	}
	if !ci.ContentType.Equal(oidSignedData) {
		t.Fatalf("contentType %v, want signedData", ci.ContentType)
	}
	var sd struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		EncapContentInfo asn1.RawValue
		Certificates     asn1.RawValue `asn1:"tag:0"`
		SignerInfos      asn1.RawValue
	}
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil || len(rest) != 0 {
		t.Fatalf("SignedData: %v (%d trailing bytes)", err, len(rest))
	}
	if sd.Version != 1 {
		t.Errorf("version %d, want 1", sd.Version)
	}
	for name, set := range map[string]asn1.RawValue{"digestAlgorithms": sd.DigestAlgorithms, "signerInfos": sd.SignerInfos} {
		if set.Class != asn1.ClassUniversal || set.Tag != asn1.TagSet || !set.IsCompound || len(set.Bytes) != 0 {
			t.Errorf("%s is not an empty SET: % x", name, set.FullBytes)
		}
	}
	var eci struct {
		EContentType asn1.ObjectIdentifier
		EContent     asn1.RawValue `asn1:"optional,explicit,tag:0"`
	}
	if rest, err := asn1.Unmarshal(sd.EncapContentInfo.FullBytes, &eci); err != nil || len(rest) != 0 {
		t.Fatalf("EncapsulatedContentInfo: %v", err)
	}
	if !eci.EContentType.Equal(oidData) || len(eci.EContent.FullBytes) != 0 {
		t.Errorf("encapContentInfo: type %v, content % x; want id-data without content", eci.EContentType, eci.EContent.FullBytes)
	}
	if sd.Certificates.Class != asn1.ClassContextSpecific || !sd.Certificates.IsCompound {
		t.Errorf("certificates are not [0] IMPLICIT: % x", sd.Certificates.FullBytes[:2])
	}
	certs, err := x509.ParseCertificates(sd.Certificates.Bytes)
	if err != nil {
		t.Fatalf("certificates: %v", err)
	}
	return certs
}

func TestCertsOnlyPKCS7(t *testing.T) {
	ca := newTestCA(t, Options{})
	leaf, _, err := ca.IssueWithNewKey(Profile{CommonName: "dev-1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
	}{
		{"one leaf", []*x509.Certificate{leaf.Certificate}},
		{"CA chain", ca.Certificates()},
		// Out of DER's SET OF order on purpose: the order must be kept.
		{"leaf then chain", append([]*x509.Certificate{leaf.Certificate}, ca.Certificates()...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := CertsOnlyPKCS7(tc.certs)
			if err != nil {
				t.Fatal(err)
			}
			got := parseCertsOnly(t, der)
			if len(got) != len(tc.certs) {
				t.Fatalf("%d certificates, want %d", len(got), len(tc.certs))
			}
			for i := range got {
				if !got[i].Equal(tc.certs[i]) {
					t.Errorf("certificate %d is %s, want %s", i, got[i].Subject, tc.certs[i].Subject)
				}
			}
		})
	}
}

func TestCertsOnlyPKCS7Refused(t *testing.T) {
	for name, certs := range map[string][]*x509.Certificate{
		"none":             nil,
		"nil certificate":  {nil},
		"empty raw":        {{}},
		"nil among others": {newTestCA(t, Options{}).Issuer(), nil},
	} {
		if der, err := CertsOnlyPKCS7(certs); err == nil {
			t.Errorf("%s: accepted (% x)", name, der)
		}
	}
}

// TestCertsOnlyPKCS7OpenSSL has OpenSSL read the message: the certificates
// come out in order, and re-encoding it gives the same bytes (it is the DER
// OpenSSL itself would write).
func TestCertsOnlyPKCS7OpenSSL(t *testing.T) {
	o := newOpenSSL(t)
	ca := newTestCA(t, Options{})
	leaf, _, err := ca.IssueWithNewKey(Profile{CommonName: "dev-1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	certs := append([]*x509.Certificate{leaf.Certificate}, ca.Certificates()...)
	der, err := CertsOnlyPKCS7(certs)
	if err != nil {
		t.Fatal(err)
	}
	o.write("certs.p7b", der)
	out := o.must("pkcs7", "-inform", "DER", "-in", "certs.p7b", "-print_certs")
	got, err := ParseCertificates([]byte(out))
	if err != nil {
		t.Fatalf("openssl printed no certificates: %v\n%s", err, out)
	}
	if len(got) != len(certs) {
		t.Fatalf("openssl printed %d certificates, want %d", len(got), len(certs))
	}
	for i := range got {
		if !got[i].Equal(certs[i]) {
			t.Errorf("openssl certificate %d is %s, want %s", i, got[i].Subject, certs[i].Subject)
		}
	}
	o.must("pkcs7", "-inform", "DER", "-in", "certs.p7b", "-outform", "DER", "-out", "again.p7b")
	if again := o.read("again.p7b"); !bytes.Equal(again, der) {
		t.Errorf("openssl re-encodes the message differently:\n ours  % x\n again % x", der, again)
	}
}
