package pki

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Sealed key format, version 1 (see the package documentation).
const (
	sealedBlockType = "ZEROTOUCH ENCRYPTED PRIVATE KEY"
	sealVersion     = "1"
	kekKindFile     = "key-file"
	kekKindPass     = "passphrase"
	kdfPBKDF2       = "pbkdf2-sha256"
	cipherAESGCM    = "aes-256-gcm"

	hdrVersion    = "Version"
	hdrPurpose    = "Purpose"
	hdrKEK        = "KEK"
	hdrKDF        = "KDF"
	hdrIterations = "KDF-Iterations"
	hdrSalt       = "KDF-Salt"
	hdrCipher     = "Cipher"
	hdrNonce      = "Nonce"
	hdrCheck      = "KEK-Check"
)

// Key-encryption key parameters.
const (
	kekLen = 32 // AES-256
	// PassphraseIterations is the PBKDF2-HMAC-SHA256 iteration count of a
	// new passphrase-sealed key (OWASP's 2023 figure): about a third of a
	// second per unseal on a server core, once per start.
	PassphraseIterations = 600_000
	// MinPassphraseLen is the shortest passphrase a new CA accepts.
	MinPassphraseLen = 12
	// maxIterations bounds what a (possibly damaged) header can ask for.
	maxIterations = 10_000_000
	saltLen       = 16
	checkLen      = 8
)

// b64 encodes header values; strict, so that a value has one spelling.
var b64 = base64.RawStdEncoding.Strict()

// kek is the key-encryption key as configured: a key file or a passphrase.
// It unseals keys of either kind and says clearly which one is missing.
type kek struct {
	keyFile    string
	passphrase []byte
	log        *slog.Logger

	mu      sync.Mutex
	fileKey []byte            // loaded lazily: not needed with a passphrase
	derived map[string][]byte // passphrase-derived keys by salt
	salt    []byte            // of the keys this kek seals, so one derivation serves all
	// used is the key-encryption key of the last seal or unseal: what
	// CA.SealingKey derives data keys from.
	used []byte
}

func (k *kek) kind() string {
	if len(k.passphrase) > 0 {
		return kekKindPass
	}
	return kekKindFile
}

// loadFileKey reads the key file; the caller holds k.mu.
func (k *kek) loadFileKey() ([]byte, error) {
	if k.fileKey != nil {
		return k.fileKey, nil
	}
	b, err := readFile(k.keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: the key file %s is missing: restore it from a backup (the CA keys cannot be unsealed without it)", ErrWrongKEK, k.keyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read the CA key file: %w", err)
	}
	key, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(key) != kekLen {
		return nil, fmt.Errorf("%w: the key file %s does not hold %d hex digits", ErrCorrupt, k.keyFile, 2*kekLen)
	}
	if st, err := os.Stat(k.keyFile); err == nil && st.Mode().Perm()&0o077 != 0 {
		k.log.Warn("the CA key file is readable by others than its owner: chmod 600 it", "file", k.keyFile, "mode", st.Mode().Perm().String())
	}
	k.fileKey = key
	return key, nil
}

// createFileKey makes the key file with a new random key, unless it exists
// (an operator may provide it before the first start).
func (k *kek) createFileKey() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	ok, err := exists(k.keyFile)
	if err != nil {
		return err
	}
	if ok {
		_, err := k.loadFileKey()
		return err
	}
	key := make([]byte, kekLen)
	rand.Read(key)
	if err := writeFileAtomic(k.keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return fmt.Errorf("write the CA key file: %w", err)
	}
	k.fileKey = key
	return nil
}

// derive returns the passphrase's key for salt and iterations; the
// caller holds k.mu.
func (k *kek) derive(salt []byte, iterations int) ([]byte, error) {
	id := string(salt) + "/" + strconv.Itoa(iterations)
	if key, ok := k.derived[id]; ok {
		return key, nil
	}
	key, err := pbkdf2.Key(sha256.New, string(k.passphrase), salt, iterations, kekLen)
	if err != nil {
		return nil, fmt.Errorf("derive the key-encryption key: %w", err)
	}
	if k.derived == nil {
		k.derived = map[string][]byte{}
	}
	k.derived[id] = key
	return key, nil
}

// checkValue commits to key without revealing it, so that unsealing can
// tell a wrong KEK from a damaged file.
func checkValue(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("zerotouch KEK check"))
	return m.Sum(nil)[:checkLen]
}

// aad is what GCM authenticates besides the ciphertext: every header but
// none of them twice, in a fixed order.
func aad(h map[string]string) []byte {
	keys := make([]string, 0, len(h))
	for name := range h {
		keys = append(keys, name)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	b.WriteString("zerotouch sealed key\n")
	for _, name := range keys {
		b.WriteString(name + ": " + h[name] + "\n")
	}
	return b.Bytes()
}

// seal encrypts the private key under the KEK, for the file of purpose
// ("root" or "issuing").
func (k *kek) seal(purpose string, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode the %s key: %w", purpose, err)
	}
	defer clear(der)
	k.mu.Lock()
	defer k.mu.Unlock()
	h := map[string]string{
		hdrVersion: sealVersion,
		hdrPurpose: purpose,
		hdrKEK:     k.kind(),
		hdrCipher:  cipherAESGCM,
	}
	var kekKey []byte
	if k.kind() == kekKindPass {
		if k.salt == nil {
			k.salt = make([]byte, saltLen)
			rand.Read(k.salt)
		}
		if kekKey, err = k.derive(k.salt, PassphraseIterations); err != nil {
			return nil, err
		}
		h[hdrKDF] = kdfPBKDF2
		h[hdrIterations] = strconv.Itoa(PassphraseIterations)
		h[hdrSalt] = b64.EncodeToString(k.salt)
	} else if kekKey, err = k.loadFileKey(); err != nil {
		return nil, err
	}
	k.used = kekKey
	h[hdrCheck] = b64.EncodeToString(checkValue(kekKey))
	nonce := make([]byte, 12)
	rand.Read(nonce)
	h[hdrNonce] = b64.EncodeToString(nonce)
	gcm, err := newGCM(kekKey)
	if err != nil {
		return nil, err
	}
	ct := gcm.Seal(nil, nonce, der, aad(h))
	return pem.EncodeToMemory(&pem.Block{Type: sealedBlockType, Headers: h, Bytes: ct}), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// unseal decrypts the sealed key read from path, which must be the key of
// purpose. Every failure says what to do about it.
func (k *kek) unseal(path, purpose string, data []byte) (crypto.Signer, error) {
	damaged := func(why string, args ...any) error {
		return fmt.Errorf("%w: %s: %s; restore it from a backup", ErrCorrupt, path, fmt.Sprintf(why, args...))
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != sealedBlockType {
		return nil, damaged("not a sealed zerotouch key")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, damaged("unexpected data after the key")
	}
	h := block.Headers
	if v := h[hdrVersion]; v != sealVersion {
		return nil, damaged("sealed key format %q, this zerotouch reads %q", v, sealVersion)
	}
	if p := h[hdrPurpose]; p != purpose {
		return nil, damaged("holds the %q key where the %s key was expected", p, purpose)
	}
	if c := h[hdrCipher]; c != cipherAESGCM {
		return nil, damaged("unknown cipher %q", c)
	}
	nonce, err := b64.DecodeString(h[hdrNonce])
	if err != nil || len(nonce) != 12 {
		return nil, damaged("bad nonce")
	}
	check, err := b64.DecodeString(h[hdrCheck])
	if err != nil || len(check) != checkLen {
		return nil, damaged("bad KEK check value")
	}

	k.mu.Lock()
	var kekKey []byte
	switch sealedWith := h[hdrKEK]; {
	case sealedWith == kekKindPass && k.kind() == kekKindPass:
		kekKey, err = k.passKey(h, damaged)
		if err == nil && !hmac.Equal(checkValue(kekKey), check) {
			err = fmt.Errorf("%w: the passphrase does not unseal %s: give the passphrase this CA was created with", ErrWrongKEK, path)
		}
	case sealedWith == kekKindPass:
		err = fmt.Errorf("%w: %s is sealed with a passphrase: supply the CA passphrase (by file or environment)", ErrWrongKEK, path)
	case sealedWith == kekKindFile && k.kind() == kekKindFile:
		kekKey, err = k.loadFileKey()
		if err == nil && !hmac.Equal(checkValue(kekKey), check) {
			err = fmt.Errorf("%w: the key file %s does not unseal %s: it is not the key file this CA was created with; restore that one",
				ErrWrongKEK, k.keyFile, path)
		}
	case sealedWith == kekKindFile:
		err = fmt.Errorf("%w: %s is sealed with a key file, not a passphrase: remove the CA passphrase setting and keep the key file (default %s in the CA directory)",
			ErrWrongKEK, path, defaultKEKFile)
	default:
		err = damaged("unknown key-encryption kind %q", sealedWith)
	}
	if err == nil {
		k.used = kekKey
	}
	k.mu.Unlock()
	if err != nil {
		return nil, err
	}

	gcm, err := newGCM(kekKey)
	if err != nil {
		return nil, err
	}
	der, err := gcm.Open(nil, nonce, block.Bytes, aad(h))
	if err != nil {
		// The KEK is the right one (its check value matched): the file changed.
		return nil, damaged("authentication failed")
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, damaged("the decrypted key does not parse")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, damaged("the decrypted key cannot sign")
	}
	return signer, nil
}

// passKey derives the key a passphrase-sealed header asks for; the caller
// holds k.mu.
func (k *kek) passKey(h map[string]string, damaged func(string, ...any) error) ([]byte, error) {
	if kdf := h[hdrKDF]; kdf != kdfPBKDF2 {
		return nil, damaged("unknown key derivation %q", kdf)
	}
	iter, err := strconv.Atoi(h[hdrIterations])
	if err != nil || iter < 1 || iter > maxIterations {
		return nil, damaged("bad iteration count %q", h[hdrIterations])
	}
	salt, err := b64.DecodeString(h[hdrSalt])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return nil, damaged("bad salt")
	}
	return k.derive(salt, iter)
}

// ReadPassphraseFile reads a CA passphrase from a file, without the line
// ending an editor adds.
func ReadPassphraseFile(path string) ([]byte, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the CA passphrase: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("read the CA passphrase: %s is empty", path)
	}
	return b, nil
}

// checkPassphrase is applied when a CA is created: a short passphrase
// would make the sealed keys guessable offline.
func checkPassphrase(p []byte) error {
	if n := len([]rune(string(p))); n < MinPassphraseLen {
		return fmt.Errorf("the CA passphrase has %d characters; at least %d are required", n, MinPassphraseLen)
	}
	if strings.TrimSpace(string(p)) != string(p) {
		return errors.New("the CA passphrase starts or ends with white space: remove it (files and environment variables lose it easily)")
	}
	return nil
}
