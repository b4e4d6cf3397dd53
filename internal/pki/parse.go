package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"unicode/utf8"
)

// Limits on untrusted input. A device certificate is about 1 KiB, a chain
// a few; the limits leave room and no more.
const (
	// MaxInputSize bounds a PEM or DER certificate, chain, request or key.
	MaxInputSize = 64 << 10
	// MaxChainLength bounds the certificates of one chain.
	MaxChainLength = 10
)

// Fingerprint is the lowercase hex SHA-256 of a DER certificate, the form
// registry records and X.509 credentials use.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ParseFingerprint reads a SHA-256 fingerprint as people and tools write
// it — 64 hex digits in either case, or 32 colon-separated pairs as
// "openssl x509 -fingerprint -sha256" prints, optionally after "sha256:" or
// "SHA256 Fingerprint=" — and returns it as Fingerprint does.
func ParseFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	for _, prefix := range []string{"sha256 fingerprint=", "sha256:"} {
		if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
			s = s[len(prefix):]
			break
		}
	}
	if len(s) == 3*sha256.Size-1 {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			if i%3 == 2 {
				if s[i] != ':' {
					return "", fmt.Errorf("%w: fingerprint: expected ':' at position %d", ErrMalformed, i+1)
				}
				continue
			}
			b.WriteByte(s[i])
		}
		s = b.String()
	}
	if len(s) != 2*sha256.Size {
		return "", fmt.Errorf("%w: a SHA-256 fingerprint has 64 hex digits", ErrMalformed)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("%w: fingerprint is not hex", ErrMalformed)
	}
	return strings.ToLower(s), nil
}

// newSerial draws a certificate serial number: 16 random bytes, the top
// bit cleared (positive) and the next one set (the DER INTEGER is always 16
// bytes, never padded with a zero byte): 126 bits of entropy.
func newSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] = b[0]&0x7f | 0x40
	return new(big.Int).SetBytes(b)
}

// SerialHex writes a serial number as registry records keep it: lowercase
// hex without leading zeros.
func SerialHex(n *big.Int) string { return n.Text(16) }

// ParseSerial reads a serial number given in hex, in either case,
// optionally with colons between byte pairs (as openssl prints them) or a
// "0x" prefix. It must be positive and at most 20 bytes (RFC 5280).
func ParseSerial(s string) (*big.Int, error) {
	s = strings.TrimSpace(s)
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		s = s[2:]
	}
	if len(s) > 2*20*3 {
		return nil, fmt.Errorf("%w: serial number longer than 20 bytes", ErrMalformed)
	}
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		for _, p := range parts {
			if len(p) != 2 {
				return nil, fmt.Errorf("%w: serial number: colons must separate pairs of hex digits", ErrMalformed)
			}
		}
		s = strings.Join(parts, "")
	}
	if s == "" {
		return nil, fmt.Errorf("%w: empty serial number", ErrMalformed)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; (s[i] < '0' || s[i] > '9') && (c < 'a' || c > 'f') {
			return nil, fmt.Errorf("%w: serial number is not hex", ErrMalformed)
		}
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("%w: serial number must be positive", ErrMalformed)
	}
	if n.BitLen() > 20*8 {
		return nil, fmt.Errorf("%w: serial number longer than 20 bytes", ErrMalformed)
	}
	return n, nil
}

// looksPEM tells PEM from DER: DER starts with a SEQUENCE tag, never text.
func looksPEM(data []byte) bool { return bytes.Contains(data, []byte("-----BEGIN")) }

func checkSize(what string, data []byte) error {
	switch {
	case len(data) > MaxInputSize:
		return fmt.Errorf("%w: %s larger than %d bytes", ErrMalformed, what, MaxInputSize)
	case len(bytes.TrimSpace(data)) == 0:
		return fmt.Errorf("%w: empty %s", ErrMalformed, what)
	}
	return nil
}

// ParseCSR parses a certificate signing request from a device, PEM
// ("CERTIFICATE REQUEST") or DER, and checks what can be checked without a
// profile: its public key is of an accepted type and size (ECDSA P-256 or
// P-384, RSA 2048 to 8192 bits, Ed25519), its signature verifies, and it
// does not ask to be a CA. Every refusal wraps ErrBadCSR and a reason.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	refuse := func(reason error, format string, args ...any) error {
		return fmt.Errorf("%w: %w: %s", ErrBadCSR, reason, fmt.Sprintf(format, args...))
	}
	if err := checkSize("certificate request", data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	der := data
	if looksPEM(data) {
		block, rest := pem.Decode(data)
		if block == nil {
			return nil, refuse(ErrMalformed, "no complete PEM block")
		}
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, refuse(ErrMalformed, "PEM block of type %s, want CERTIFICATE REQUEST", quote(block.Type))
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, refuse(ErrMalformed, "data after the request: send one request")
		}
		der = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		// encoding/asn1's messages dump its internal state: say it plainly.
		if msg := err.Error(); strings.HasPrefix(msg, "x509:") {
			return nil, refuse(ErrMalformed, "not a PKCS#10 certificate request (%s)", msg)
		}
		return nil, refuse(ErrMalformed, "not a PKCS#10 certificate request, in PEM or DER")
	}
	// The key first: a weak RSA key must be refused as weak, before the
	// signature check refuses it for its size with a vaguer message.
	if err := checkDeviceKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(ErrBadSignature, "the request is not signed by the key it carries (%v)", err)
	}
	if err := checkRequestedExtensions(csr); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	return csr, nil
}

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
)

// checkRequestedExtensions refuses a request that asks to be a CA, by basic
// constraints or by key usage. Nothing a request asks for is copied into
// the certificate; the refusal only makes a confused or hostile request
// fail loudly rather than get a certificate it did not expect.
func checkRequestedExtensions(csr *x509.CertificateRequest) error {
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if rest, err := asn1.Unmarshal(ext.Value, &bc); err != nil || len(rest) != 0 {
				return fmt.Errorf("%w: basic constraints extension does not parse", ErrMalformed)
			}
			if bc.IsCA {
				return fmt.Errorf("%w: the request asks for basic constraints CA:TRUE; devices get end-entity certificates only", ErrCANotAllowed)
			}
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if rest, err := asn1.Unmarshal(ext.Value, &bits); err != nil || len(rest) != 0 {
				return fmt.Errorf("%w: key usage extension does not parse", ErrMalformed)
			}
			if bits.At(5) == 1 || bits.At(6) == 1 { // keyCertSign, cRLSign
				return fmt.Errorf("%w: the request asks for the keyCertSign or cRLSign key usage", ErrCANotAllowed)
			}
		}
	}
	return nil
}

// ParseCertificates parses a certificate chain from untrusted input: PEM
// "CERTIFICATE" blocks (text before a block is ignored, as openssl writes
// it; anything after the last one is refused), or concatenated DER. At
// least one certificate and at most MaxChainLength. Refusals wrap
// ErrBadCertificate.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %w: %s", ErrBadCertificate, ErrMalformed, fmt.Sprintf(format, args...))
	}
	if err := checkSize("certificate", data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
	}
	if !looksPEM(data) {
		certs, err := x509.ParseCertificates(data)
		if err != nil {
			return nil, refuse("%v", err)
		}
		if len(certs) == 0 {
			return nil, refuse("no certificate")
		}
		if len(certs) > MaxChainLength {
			return nil, refuse("more than %d certificates", MaxChainLength)
		}
		return certs, nil
	}
	var certs []*x509.Certificate
	rest := data
	for {
		block, r := pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, refuse("data after the last certificate, or a broken PEM block")
			}
			break
		}
		rest = r
		if block.Type != "CERTIFICATE" {
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return nil, refuse("a private key where certificates were expected: never send a private key")
			}
			return nil, refuse("PEM block of type %s where certificates were expected", quote(block.Type))
		}
		if len(certs) == MaxChainLength {
			return nil, refuse("more than %d certificates", MaxChainLength)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, refuse("certificate %d: %v", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, refuse("no certificate")
	}
	return certs, nil
}

// ParseCertificate parses exactly one certificate, PEM or DER (see
// ParseCertificates).
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%w: %w: %d certificates where one was expected", ErrBadCertificate, ErrMalformed, len(certs))
	}
	return certs[0], nil
}

// parsePrivateKey reads an operator's unencrypted private key: PEM
// ("PRIVATE KEY" PKCS#8, "RSA PRIVATE KEY" PKCS#1, "EC PRIVATE KEY" SEC1;
// "EC PARAMETERS" and "CERTIFICATE" blocks are skipped, so a combined file
// works) or DER in any of the three. Refusals wrap ErrBadKey.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadKey, fmt.Sprintf(format, args...))
	}
	malformed := func(format string, args ...any) error {
		return fmt.Errorf("%w: %w: %s", ErrBadKey, ErrMalformed, fmt.Sprintf(format, args...))
	}
	if err := checkSize("private key", data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if !looksPEM(data) {
		for _, parse := range []func([]byte) (any, error){
			x509.ParsePKCS8PrivateKey,
			func(b []byte) (any, error) { return x509.ParsePKCS1PrivateKey(b) },
			func(b []byte) (any, error) { return x509.ParseECPrivateKey(b) },
		} {
			if k, err := parse(data); err == nil {
				return asSigner(k)
			}
		}
		return nil, malformed("neither PEM nor a DER PKCS#8, PKCS#1 or SEC1 key")
	}
	var key crypto.Signer
	rest := data
	for {
		block, r := pem.Decode(rest)
		if block == nil {
			break
		}
		rest = r
		var k any
		var err error
		switch block.Type {
		case "EC PARAMETERS", "CERTIFICATE":
			continue
		case "ENCRYPTED PRIVATE KEY":
			return nil, refuse("the key is encrypted: decrypt it first, e.g. openssl pkey -in key.pem -out plain.pem (zerotouch seals it again)")
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			return nil, malformed("PEM block of type %s where a private key was expected", quote(block.Type))
		}
		if strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
			return nil, refuse("the key is encrypted: decrypt it first, e.g. openssl pkey -in key.pem -out plain.pem (zerotouch seals it again)")
		}
		if err != nil {
			return nil, malformed("%s: %v", block.Type, err)
		}
		if key != nil {
			return nil, refuse("more than one private key")
		}
		if key, err = asSigner(k); err != nil {
			return nil, err
		}
	}
	if key == nil {
		return nil, malformed("no private key")
	}
	return key, nil
}

func asSigner(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("%w: %T keys cannot sign certificates", ErrBadKey, k)
}

// quote prints untrusted text for an error message: quoted, escaped and
// cut short.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// checkText validates a name the CA writes into a certificate.
func checkText(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrBadProfile, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrBadProfile, what, max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadProfile, what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s contains a control character", ErrBadProfile, what)
		}
	}
	return nil
}
