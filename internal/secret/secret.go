// Package secret generates and hashes the secrets zerotouch hands out:
// access tokens, provision keys and secrets, API keys, MQTT passwords.
//
// Secrets that are only ever checked are stored as hashes. High-entropy,
// server-generated secrets need no slow hash; LookupHash is a plain SHA-256 so
// that a token can be found by its hash at CONNECT. Hash adds a random salt
// for secrets checked against a record found by other means (a provision
// secret, an MQTT password), which may be chosen by a person.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
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
func Hash(s string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	return "sha256$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(saltedSum(salt, s))
}

// Verify reports in constant time whether s matches a hash made by Hash.
func Verify(s, hashed string) bool {
	parts := strings.Split(hashed, "$")
	if len(parts) != 3 || parts[0] != "sha256" {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[1])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return false
	}
	return subtle.ConstantTimeCompare(saltedSum(salt, s), want) == 1
}

func saltedSum(salt []byte, s string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(s))
	return h.Sum(nil)
}
