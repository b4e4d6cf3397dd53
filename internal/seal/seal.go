// Package seal encrypts the small secrets zerotouch must keep usable, not
// merely checkable: the symmetric keys of DPS enrollments and devices,
// which verify HMAC signatures and so cannot be stored as hashes.
//
// A Sealer holds one 256-bit data key (derived by the caller, e.g. from the
// built-in CA's key-encryption key, see pki.CA.SealingKey) and seals each
// value with AES-256-GCM under a fresh random nonce. The value's label
// (what it is and whose: "enrollment/<org>/<id>/primary") is authenticated
// with it, so a sealed value copied into another record's column does not
// open there. A sealed value is text:
//
//	zts1.<key id>.<base64url(nonce || ciphertext || tag)>
//
// where the key id is the first 8 hex digits of SHA-256 over the data key:
// opening a value sealed under another key says so instead of failing as
// if the value were damaged.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Errors of Open; test with errors.Is.
var (
	// ErrNotSealed: the value does not have the sealed form at all.
	ErrNotSealed = errors.New("value is not sealed")
	// ErrWrongKey: the value was sealed under another data key (the key
	// file or passphrase of another installation).
	ErrWrongKey = errors.New("value was sealed under another key")
	// ErrCorrupt: the value has the sealed form and the right key id but
	// does not decrypt under its label: damaged, or moved between records.
	ErrCorrupt = errors.New("sealed value is damaged or belongs to another record")
)

const (
	prefix   = "zts1."
	keyIDLen = 8
	nonceLen = 12
	// KeyLen is the length of a data key.
	KeyLen = 32
)

var b64 = base64.RawURLEncoding.Strict()

// Sealer seals and opens values under one data key. It is safe for
// concurrent use.
type Sealer struct {
	aead  cipher.AEAD
	keyID string
}

// New returns a Sealer for a KeyLen-byte data key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeyLen {
		return nil, fmt.Errorf("seal: data key is %d bytes, want %d", len(key), KeyLen)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(key)
	return &Sealer{aead: aead, keyID: hex.EncodeToString(sum[:])[:keyIDLen]}, nil
}

// KeyID names the data key without revealing it.
func (s *Sealer) KeyID() string { return s.keyID }

// Seal encrypts plaintext for the record named by label.
func (s *Sealer) Seal(plaintext []byte, label string) string {
	buf := make([]byte, nonceLen, nonceLen+len(plaintext)+s.aead.Overhead())
	rand.Read(buf)
	buf = s.aead.Seal(buf, buf[:nonceLen], plaintext, []byte(label))
	return prefix + s.keyID + "." + b64.EncodeToString(buf)
}

// Open decrypts a value Seal made for label.
func (s *Sealer) Open(sealed, label string) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return nil, ErrNotSealed
	}
	id, body, ok := strings.Cut(rest, ".")
	if !ok || len(id) != keyIDLen {
		return nil, ErrNotSealed
	}
	if id != s.keyID {
		return nil, fmt.Errorf("%w (key %s, this server's is %s)", ErrWrongKey, id, s.keyID)
	}
	buf, err := b64.DecodeString(body)
	if err != nil || len(buf) < nonceLen+s.aead.Overhead() {
		return nil, ErrCorrupt
	}
	pt, err := s.aead.Open(nil, buf[:nonceLen], buf[nonceLen:], []byte(label))
	if err != nil {
		return nil, ErrCorrupt
	}
	return pt, nil
}

// IsSealed reports whether v has the sealed form (whatever its key).
func IsSealed(v string) bool { return strings.HasPrefix(v, prefix) }
