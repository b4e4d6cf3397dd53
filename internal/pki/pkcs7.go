package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
)

// Object identifiers of RFC 5652 (CMS).
var (
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
)

// contentInfo is CMS ContentInfo; Content is the [0] EXPLICIT wrapper,
// built by hand because encoding/asn1 ignores field tags on RawValue.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue
}

// encapContentInfo is EncapsulatedContentInfo without its optional
// eContent: a certs-only message signs nothing.
type encapContentInfo struct {
	EContentType asn1.ObjectIdentifier
}

// signedData is SignedData with no signers. DigestAlgorithms and
// SignerInfos are empty SETs; Certificates is the [0] IMPLICIT set.
type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContentInfo encapContentInfo
	Certificates     asn1.RawValue
	SignerInfos      asn1.RawValue
}

// CertsOnlyPKCS7 encodes certs as a degenerate PKCS#7 (CMS) SignedData in
// DER: the "certs-only" message of RFC 5652 section 5 (no content, no
// signers) that EST (RFC 7030) and SCEP answer with, and that
// "openssl pkcs7 -print_certs" reads. It is version 1, with an empty
// digestAlgorithms set, an encapContentInfo of type id-data without
// content, the certificates, and an empty signerInfos set.
//
// The certificates keep the order given (as OpenSSL writes them) rather
// than DER's sorted SET OF order: clients read a chain in that order,
// leaf or issuing CA first.
func CertsOnlyPKCS7(certs []*x509.Certificate) ([]byte, error) {
	if len(certs) == 0 {
		return nil, errors.New("certs-only PKCS#7: no certificates")
	}
	var set []byte
	for i, c := range certs {
		if c == nil || len(c.Raw) == 0 {
			return nil, fmt.Errorf("certs-only PKCS#7: certificate %d is empty", i+1)
		}
		set = append(set, c.Raw...)
	}
	emptySet := asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true}
	sd, err := asn1.Marshal(signedData{
		Version:          1,
		DigestAlgorithms: emptySet,
		EncapContentInfo: encapContentInfo{EContentType: oidData},
		Certificates:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: set},
		SignerInfos:      emptySet,
	})
	if err != nil {
		return nil, fmt.Errorf("certs-only PKCS#7: %w", err)
	}
	der, err := asn1.Marshal(contentInfo{
		ContentType: oidSignedData,
		Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: sd},
	})
	if err != nil {
		return nil, fmt.Errorf("certs-only PKCS#7: %w", err)
	}
	return der, nil
}
