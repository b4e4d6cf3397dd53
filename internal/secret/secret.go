// Package secret generates and hashes the secrets zerotouch hands out:
// access tokens, provision keys and secrets, API keys, MQTT passwords.
//
// Secrets that are only ever checked are stored as hashes. High-entropy,
// server-generated secrets need no slow hash; LookupHash is a plain SHA-256 so
// that a token can be found by its hash at CONNECT. Hash adds a random salt
// for generated secrets checked against a record found by other means (a
// provision secret, an MQTT password). HashSlow is for the same kind of
// secrets when a person may have chosen them (an operator's provision secret,
// a device's or operator's MQTT password): it is deliberately slow, so that a
// stolen database does not let them be guessed quickly. Verify and
// Verifier.Verify check both formats; a Verifier remembers successful slow
// verifications so that a device presenting the same secret again is fast.
package secret

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
)

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// Generate returns a random alphanumeric string of n characters
// (about 5.95 bits each: n=24 gives 142 bits).
func Generate(n int) string {
	out := make([]byte, n)
	buf := make([]byte, n+n/2)
	for i := 0; i < n; {
		rand.Read(buf) // never fails (crypto/rand panics rather than return short)
		for _, b := range buf {
			// Reject bytes ≥ 248 so that b%62 is uniform.
			if b >= 248 {
				continue
			}
			out[i] = alphabet[b%62]
			i++
			if i == n {
				break
			}
		}
	}
	return string(out)
}

// TokenLength is the length of generated access tokens, secrets and keys:
// 24 alphanumerics ≈ 142 bits.
const TokenLength = 24

// LookupHash is the unsalted SHA-256 (hex) of a high-entropy secret, used to
// find the record that owns it.
func LookupHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Hash returns a salted hash of s for storage: "sha256$<salt>$<hash>".
// It is fast: use it only for server-generated secrets (at least 128 bits),
// and HashSlow for any secret a person may have chosen.
func Hash(s string) string {
	salt := newSalt()
	return fastPrefix + "$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(saltedSum(salt, s))
}

// SlowIterations is the PBKDF2-HMAC-SHA256 iteration count of HashSlow.
// Measured with Go 1.26 on the 2-core development machine (Intel Xeon with
// SHA-NI): about 130 ns per iteration, so 120,000 iterations take 15.7 ms
// (best of 15; ~16 ms typical) per hash or verification. Hashes record their
// iteration count, so it can be raised later without invalidating stored
// ones.
const SlowIterations = 120_000

// Bounds on the iteration count Verify accepts from a stored hash: a
// tampered or corrupt hash must neither make verification trivial nor
// stall the server.
const (
	minSlowIterations = 1_000
	maxSlowIterations = 10_000_000
)

const (
	fastPrefix = "sha256"
	slowPrefix = "pbkdf2-sha256"
	saltLen    = 16
	sumLen     = sha256.Size
)

// b64 encodes salts and hashes. Decoding is strict: the unused low bits of
// the last character must be zero, so each hash has one spelling (Hash has
// always written it so).
var b64 = base64.RawStdEncoding.Strict()

// HashSlow returns a salted, deliberately slow hash of s for storage:
// "pbkdf2-sha256$<iterations>$<salt>$<hash>" (PBKDF2-HMAC-SHA256, see
// SlowIterations). Use it for secrets a person may choose.
func HashSlow(s string) string {
	return hashSlow(s, SlowIterations)
}

func hashSlow(s string, iter int) string {
	salt := newSalt()
	sum, err := pbkdf2.Key(sha256.New, s, salt, iter, sumLen)
	if err != nil {
		// Only possible in FIPS 140-only mode with parameters it does not
		// approve; ours are fixed, so this is a programming error.
		panic("secret: pbkdf2: " + err.Error())
	}
	return slowPrefix + "$" + strconv.Itoa(iter) + "$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(sum)
}

// Verify reports whether s matches a hash made by Hash or HashSlow,
// comparing in constant time. It remembers nothing: see Verifier for a
// version that makes repeated slow verifications cheap.
func Verify(s, hashed string) bool {
	switch kind(hashed) {
	case kindFast:
		return verifyFast(s, hashed)
	case kindSlow:
		return verifySlow(s, hashed)
	}
	return false
}

type hashKind int

const (
	kindUnknown hashKind = iota
	kindFast
	kindSlow
)

func kind(hashed string) hashKind {
	switch {
	case strings.HasPrefix(hashed, fastPrefix+"$"):
		return kindFast
	case strings.HasPrefix(hashed, slowPrefix+"$"):
		return kindSlow
	}
	return kindUnknown
}

func verifyFast(s, hashed string) bool {
	parts := strings.Split(hashed, "$")
	if len(parts) != 3 || parts[0] != fastPrefix {
		return false
	}
	salt, err1 := b64.DecodeString(parts[1])
	want, err2 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return false
	}
	return subtle.ConstantTimeCompare(saltedSum(salt, s), want) == 1
}

func verifySlow(s, hashed string) bool {
	parts := strings.Split(hashed, "$")
	if len(parts) != 4 || parts[0] != slowPrefix {
		return false
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < minSlowIterations || iter > maxSlowIterations || parts[1] != strconv.Itoa(iter) {
		return false
	}
	salt, err1 := b64.DecodeString(parts[2])
	want, err2 := b64.DecodeString(parts[3])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(want) != sumLen {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, s, salt, iter, sumLen)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}

func newSalt() []byte {
	salt := make([]byte, saltLen)
	rand.Read(salt) // never fails
	return salt
}

func saltedSum(salt []byte, s string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(s))
	return h.Sum(nil)
}
