package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"
)

// KeyAlgorithm names a key type and size the CA generates, for its own keys
// and for server-side generated device keys.
type KeyAlgorithm string

// Key algorithms. ECDSA P-256 is the default: small certificates, fast
// signatures, supported by every TLS stack devices use.
const (
	ECDSAP256 KeyAlgorithm = "ecdsa-p256"
	ECDSAP384 KeyAlgorithm = "ecdsa-p384"
	RSA2048   KeyAlgorithm = "rsa-2048"
	RSA3072   KeyAlgorithm = "rsa-3072"
)

// KeyAlgorithms lists the accepted algorithms, default first.
func KeyAlgorithms() []KeyAlgorithm { return []KeyAlgorithm{ECDSAP256, ECDSAP384, RSA2048, RSA3072} }

// ParseKeyAlgorithm reads an algorithm name as a configuration gives it;
// "" is the default, ECDSAP256.
func ParseKeyAlgorithm(s string) (KeyAlgorithm, error) {
	if s == "" {
		return ECDSAP256, nil
	}
	for _, a := range KeyAlgorithms() {
		if strings.EqualFold(s, string(a)) {
			return a, nil
		}
	}
	names := make([]string, 0, 4)
	for _, a := range KeyAlgorithms() {
		names = append(names, string(a))
	}
	return "", fmt.Errorf("unknown key algorithm %q (want one of %s)", s, strings.Join(names, ", "))
}

// generateKey makes a new private key of algorithm a.
func generateKey(a KeyAlgorithm) (crypto.Signer, error) {
	switch a {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	_, err := ParseKeyAlgorithm(string(a))
	return nil, err
}

// RSA sizes accepted from devices and for imported CAs. Below 2048 bits is
// breakable or close to it; above 8192 only costs verification time.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// checkDeviceKey returns why pub may not be certified for a device, or nil.
func checkDeviceKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s; P-256 or P-384 are accepted", ErrKeyNotAllowed, k.Curve.Params().Name)
	case *rsa.PublicKey:
		return checkRSA(k)
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("%w: %s keys are not accepted (ECDSA P-256/P-384, RSA %d–%d bits or Ed25519 are)",
		ErrKeyNotAllowed, keyTypeName(pub), minRSABits, maxRSABits)
}

// checkCAKey returns why pub may not be an issuing CA's key, or nil. An
// operator's CA may also use P-521.
func checkCAKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s", ErrKeyNotAllowed, k.Curve.Params().Name)
	case *rsa.PublicKey:
		return checkRSA(k)
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("%w: %s keys are not accepted for a CA", ErrKeyNotAllowed, keyTypeName(pub))
}

func checkRSA(k *rsa.PublicKey) error {
	switch bits := k.N.BitLen(); {
	case bits < minRSABits:
		return fmt.Errorf("%w: RSA key of %d bits; at least %d are required", ErrKeyNotAllowed, bits, minRSABits)
	case bits > maxRSABits:
		return fmt.Errorf("%w: RSA key of %d bits; at most %d are accepted", ErrKeyNotAllowed, bits, maxRSABits)
	}
	return nil
}

func keyTypeName(pub any) string {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	case ed25519.PublicKey:
		return "Ed25519"
	case nil:
		return "unknown"
	}
	return fmt.Sprintf("%T", pub)
}

// describeKey names a key for logs: "ECDSA P-256", "RSA 3072".
func describeKey(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	}
	return keyTypeName(pub)
}

// sameKey reports whether two public keys are equal.
func sameKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// subjectKeyID is the key identifier of RFC 7093 section 2 method 1: the
// leftmost 160 bits of the SHA-256 of the subjectPublicKey bits. Go only
// fills it in for CA certificates; devices and TLS stacks look for it in
// leaves too.
func subjectKeyID(spkiDER []byte) ([]byte, error) {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(spkiDER, &spki); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: subject public key info", ErrMalformed)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// spkiOf is the DER SubjectPublicKeyInfo of pub.
func spkiOf(pub any) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyNotAllowed, err)
	}
	return der, nil
}
