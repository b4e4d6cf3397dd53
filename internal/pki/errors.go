package pki

import "errors"

// Errors of the package; callers test them with errors.Is. A refusal wraps
// the general error (ErrBadCSR, ErrBadCertificate, ErrBadKey) and, where
// there is one, the more precise reason, followed by a sentence for the
// operator or device: "certificate request refused: key type or size not
// allowed: RSA key of 1024 bits; at least 2048 are required".
var (
	// ErrBadCSR: a certificate signing request was refused.
	ErrBadCSR = errors.New("certificate request refused")
	// ErrBadCertificate: a certificate (chain) was refused.
	ErrBadCertificate = errors.New("certificate refused")
	// ErrBadKey: a private key given for import was refused.
	ErrBadKey = errors.New("private key refused")

	// ErrMalformed: the input does not parse as what was expected.
	ErrMalformed = errors.New("malformed")
	// ErrBadSignature: a request's self-signature does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrKeyNotAllowed: a public key's type or size is not accepted.
	ErrKeyNotAllowed = errors.New("key type or size not allowed")
	// ErrNameNotAllowed: a request asks for a name its profile does not give.
	ErrNameNotAllowed = errors.New("name not allowed")
	// ErrCANotAllowed: a request asks for a CA certificate.
	ErrCANotAllowed = errors.New("CA certificate requested")

	// ErrBadProfile: the caller's Profile (or host list) is invalid.
	ErrBadProfile = errors.New("invalid certificate profile")
	// ErrCAExpired: the issuing CA is no longer valid; replace it.
	ErrCAExpired = errors.New("issuing CA expired")

	// ErrWrongKEK: the key-encryption key (passphrase or key file) does not
	// unseal the CA keys, or is missing.
	ErrWrongKEK = errors.New("CA keys cannot be unsealed")
	// ErrCorrupt: a file of the CA directory is damaged, missing or
	// inconsistent with the others.
	ErrCorrupt = errors.New("CA directory damaged")
	// ErrExists: Import into a directory that already holds a CA.
	ErrExists = errors.New("a CA already exists")
)
