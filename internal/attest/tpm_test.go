package attest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// Software TPM keys: Go RSA keys in the TCG templates' public areas, so
// that the blob can be opened here, by the TPM 2.0 specification, without
// a TPM (tpm_sim_test.go runs the real one).

var (
	testRSAKeysOnce sync.Once
	testRSAKeys     [3]*rsa.PrivateKey
)

func testRSAKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	testRSAKeysOnce.Do(func() {
		for j := range testRSAKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			testRSAKeys[j] = k
		}
	})
	return testRSAKeys[i]
}

// rsaPublic is tmpl with k's public key.
func rsaPublic(tmpl tpm2.TPMTPublic, k *rsa.PublicKey) tpm2.TPMTPublic {
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
	return tmpl
}

func tpm2bPublic(p tpm2.TPMTPublic) []byte { return tpm2.Marshal(tpm2.New2B(p)) }

func mustParseTPMKey(t testing.TB, b []byte) *TPMKey {
	t.Helper()
	k, err := ParseTPMKeyBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseTPMKey(t *testing.T) {
	ekPub := rsaPublic(tpm2.RSAEKTemplate, &testRSAKey(t, 0).PublicKey)
	ek := tpm2bPublic(ekPub)
	withParms := func(p tpm2.TPMTPublic, f func(*tpm2.TPMSRSAParms)) []byte {
		parms, _ := p.Parameters.RSADetail()
		c := *parms
		f(&c)
		p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &c)
		return tpm2bPublic(p)
	}
	sha1 := ekPub
	sha1.NameAlg = tpm2.TPMAlgSHA1
	signing := ekPub
	signing.ObjectAttributes.Decrypt, signing.ObjectAttributes.SignEncrypt = false, true
	unrestricted := ekPub
	unrestricted.ObjectAttributes.Restricted = false
	shortModulus := ekPub
	shortModulus.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)})
	eccEK := tpm2.ECCEKTemplate
	// P-256's generator is a point on the curve.
	gx, _ := new(big.Int).SetString("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296", 16)
	gy, _ := new(big.Int).SetString("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5", 16)
	eccEK.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: gx.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: gy.FillBytes(make([]byte, 32))},
	})
	offCurve := tpm2.ECCEKTemplate // the template's zero point is not on the curve
	keyedHash := tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)})}

	tests := []struct {
		name    string
		in      string // base64
		parse   string // error substring, "" for success
		checkEK string // CheckEndorsementKey error substring
	}{
		{name: "RSA EK, TPM2B_PUBLIC", in: b64(ek)},
		{name: "RSA EK, bare TPMT_PUBLIC", in: b64(ek[2:])},
		{name: "unpadded base64", in: strings.TrimRight(b64(ek), "=")},
		{name: "ECC P-256 EK", in: b64(tpm2bPublic(eccEK))},
		{name: "exponent 65537 spelled out", in: b64(withParms(ekPub, func(p *tpm2.TPMSRSAParms) { p.Exponent = 65537 }))},
		{name: "empty", in: "", parse: "empty"},
		{name: "not base64", in: "not base64!", parse: "not base64"},
		{name: "truncated", in: b64(ek[:100]), parse: "not a TPM2B_PUBLIC"},
		{name: "trailing bytes", in: b64(append(append([]byte{}, ek[2:]...), 0)), parse: "trailing bytes"},
		{name: "TPM2B_PUBLIC with trailing bytes", in: b64(append(append([]byte{}, ek...), 0)), parse: "not a TPM2B_PUBLIC"},
		{name: "wrong TPM2B size", in: b64(append([]byte{0x01, 0x00}, ek[2:]...)), parse: "not a TPM2B_PUBLIC"},
		{name: "too long", in: b64(make([]byte, 4000)), parse: "longer than"},
		{name: "SHA-1 name algorithm", in: b64(tpm2bPublic(sha1)), parse: "name algorithm"},
		{name: "RSA 1024", in: b64(withParms(ekPub, func(p *tpm2.TPMSRSAParms) { p.KeyBits = 1024 })), parse: "1024 bits"},
		{name: "even exponent", in: b64(withParms(ekPub, func(p *tpm2.TPMSRSAParms) { p.Exponent = 4 })), parse: "exponent"},
		{name: "modulus of zeros", in: b64(tpm2bPublic(shortModulus)), parse: "modulus"},
		{name: "ECC point off the curve", in: b64(tpm2bPublic(offCurve)), parse: "unusable"},
		{name: "keyed hash", in: b64(tpm2bPublic(keyedHash)), parse: "neither RSA nor ECC"},
		{name: "signing key as EK", in: b64(tpm2bPublic(signing)), checkEK: "not a restricted decryption key"},
		{name: "unrestricted EK", in: b64(tpm2bPublic(unrestricted)), checkEK: "not a restricted decryption key"},
		{name: "EK without symmetric algorithm", in: b64(withParms(ekPub, func(p *tpm2.TPMSRSAParms) {
			p.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
		})), checkEK: "not AES"},
		{name: "EK with AES-CBC", in: b64(withParms(ekPub, func(p *tpm2.TPMSRSAParms) {
			p.Symmetric.Mode = tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCBC)
		})), checkEK: "not CFB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParseTPMKey(tc.in)
			if tc.parse != "" {
				if !errors.Is(err, ErrTPMKey) || !strings.Contains(err.Error(), tc.parse) {
					t.Fatalf("ParseTPMKey = %v, want ErrTPMKey with %q", err, tc.parse)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTPMKey: %v", err)
			}
			want, _ := tpm2.ObjectName(&k.Public)
			if !bytes.Equal(k.Name, want.Buffer) || len(k.Name) != 34 {
				t.Fatalf("name = %x, want %x", k.Name, want.Buffer)
			}
			if again, err := ParseTPMKeyBytes(k.Bytes()); err != nil || !bytes.Equal(again.Name, k.Name) {
				t.Fatalf("Bytes does not parse back: %v", err)
			}
			err = k.CheckEndorsementKey()
			switch {
			case tc.checkEK == "" && err != nil:
				t.Fatalf("CheckEndorsementKey: %v", err)
			case tc.checkEK != "" && (!errors.Is(err, ErrTPMKey) || !strings.Contains(err.Error(), tc.checkEK)):
				t.Fatalf("CheckEndorsementKey = %v, want ErrTPMKey with %q", err, tc.checkEK)
			}
		})
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestTPMKeySameKey(t *testing.T) {
	k0, k1 := &testRSAKey(t, 0).PublicKey, &testRSAKey(t, 1).PublicKey
	ek := mustParseTPMKey(t, tpm2bPublic(rsaPublic(tpm2.RSAEKTemplate, k0)))
	// The same key in another public area (the SRK template: other
	// attributes, no policy) and the bare encoding.
	other := rsaPublic(tpm2.RSASRKTemplate, k0)
	sameKey := mustParseTPMKey(t, tpm2.Marshal(other))
	parms, _ := other.Parameters.RSADetail()
	parms.Exponent = 65537
	explicit := mustParseTPMKey(t, tpm2bPublic(other))
	different := mustParseTPMKey(t, tpm2bPublic(rsaPublic(tpm2.RSAEKTemplate, k1)))
	for _, tc := range []struct {
		name string
		a, b *TPMKey
		want bool
	}{
		{"itself", ek, ek, true},
		{"other attributes, bare encoding", ek, sameKey, true},
		{"exponent 0 and 65537", ek, explicit, true},
		{"another key", ek, different, false},
	} {
		if got := tc.a.SameKey(tc.b); got != tc.want {
			t.Errorf("%s: SameKey = %v, want %v", tc.name, got, tc.want)
		}
	}
	if bytes.Equal(ek.Name, sameKey.Name) {
		t.Fatal("different public areas have the same name")
	}
}

// openActivation opens a blob with the EK's and SRK's private keys, as
// TPM2_ActivateCredential, TPM2_Import and TPM2_Load would (TPM 2.0 Part 1
// §24 "Credential Protection", §23.3.2 "Duplication"), and returns the
// HMAC key's public area and key.
func openActivation(t *testing.T, blob []byte, ekPriv, srkPriv *rsa.PrivateKey, srkName []byte) (tpm2.TPMTPublic, []byte) {
	t.Helper()
	var parts [6][]byte
	rest := blob
	for i := range parts {
		if len(rest) < 2 || int(binary.BigEndian.Uint16(rest)) > len(rest)-2 {
			t.Fatalf("part %d truncated", i+1)
		}
		n := int(binary.BigEndian.Uint16(rest))
		parts[i], rest = rest[2:2+n], rest[2+n:]
	}
	if len(rest) != 0 || len(parts[5]) != 0 {
		t.Fatalf("%d trailing bytes, encrypted data of %d bytes", len(rest), len(parts[5]))
	}
	// unwrap undoes a TPM outer wrapper: TPM2B(HMAC) || CFB-encrypted data.
	unwrap := func(seed, name, wrapped []byte) []byte {
		t.Helper()
		n := int(binary.BigEndian.Uint16(wrapped))
		mac, enc := wrapped[2:2+n], wrapped[2+n:]
		m := hmac.New(sha256.New, tpm2.KDFa(tpm2CryptoSHA256, seed, "INTEGRITY", nil, nil, 256))
		m.Write(enc)
		m.Write(name)
		if !hmac.Equal(m.Sum(nil), mac) {
			t.Fatal("outer HMAC does not verify")
		}
		return cfbDecrypt(t, tpm2.KDFa(tpm2CryptoSHA256, seed, "STORAGE", name, nil, 128), enc)
	}
	seed, err := rsa.DecryptOAEP(sha256.New(), nil, ekPriv, parts[1], []byte("IDENTITY\x00"))
	if err != nil {
		t.Fatalf("the secret does not decrypt with the EK: %v", err)
	}
	cred2b := unwrap(seed, srkName, parts[0])
	credential := cred2b[2:]
	if int(binary.BigEndian.Uint16(cred2b)) != len(credential) || len(credential) != 16 {
		t.Fatalf("credential of %d bytes, want an AES-128 key", len(credential))
	}

	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](parts[4])
	if err != nil {
		t.Fatal(err)
	}
	name, _ := tpm2.ObjectName(pub)
	seed, err = rsa.DecryptOAEP(sha256.New(), nil, srkPriv, parts[3], []byte("DUPLICATE\x00"))
	if err != nil {
		t.Fatalf("the wrapping seed does not decrypt with the SRK: %v", err)
	}
	inner := cfbDecrypt(t, credential, unwrap(seed, name.Buffer, parts[2]))
	n := int(binary.BigEndian.Uint16(inner))
	integrity, sensitive := inner[2:2+n], inner[2+n:]
	d := sha256.New()
	d.Write(sensitive)
	d.Write(name.Buffer)
	if !bytes.Equal(d.Sum(nil), integrity) {
		t.Fatal("inner integrity does not verify")
	}
	if int(binary.BigEndian.Uint16(sensitive)) != len(sensitive)-2 {
		t.Fatal("sensitive area is not a TPM2B_SENSITIVE")
	}
	sens, err := tpm2.Unmarshal[tpm2.TPMTSensitive](sensitive[2:])
	if err != nil {
		t.Fatal(err)
	}
	bits, err := sens.Sensitive.Bits()
	if err != nil || sens.SensitiveType != tpm2.TPMAlgKeyedHash || len(sens.AuthValue.Buffer) != 0 {
		t.Fatalf("sensitive area %+v: %v", sens, err)
	}
	// Load's binding check: unique = H(seedValue || key).
	unique, _ := pub.Unique.KeyedHash()
	d = sha256.New()
	d.Write(sens.SeedValue.Buffer)
	d.Write(bits.Buffer)
	if !bytes.Equal(unique.Buffer, d.Sum(nil)) {
		t.Fatal("the public area is not bound to the key")
	}
	return *pub, bits.Buffer
}

var tpm2CryptoSHA256, _ = tpm2.TPMAlgSHA256.Hash()

func cfbDecrypt(t *testing.T, key, data []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(data))
	cipher.NewCFBDecrypter(block, make([]byte, 16)).XORKeyStream(out, data)
	return out
}

func TestBuildTPMActivation(t *testing.T) {
	ekPriv, srkPriv := testRSAKey(t, 0), testRSAKey(t, 1)
	ek := mustParseTPMKey(t, tpm2bPublic(rsaPublic(tpm2.RSAEKTemplate, &ekPriv.PublicKey)))
	srk := mustParseTPMKey(t, tpm2bPublic(rsaPublic(tpm2.RSASRKTemplate, &srkPriv.PublicKey)))
	key := bytes.Repeat([]byte{0x5a}, TPMIdentityKeySize)

	blob, err := BuildTPMActivation(rand.Reader, ek, srk, key)
	if err != nil {
		t.Fatal(err)
	}
	pub, got := openActivation(t, blob, ekPriv, srkPriv, srk.Name)
	if !bytes.Equal(got, key) {
		t.Fatalf("key %x, want %x", got, key)
	}
	a := pub.ObjectAttributes
	scheme, _ := pub.Parameters.KeyedHashDetail()
	hmacScheme, _ := scheme.Scheme.Details.HMAC()
	switch {
	case pub.Type != tpm2.TPMAlgKeyedHash || pub.NameAlg != tpm2.TPMAlgSHA256:
		t.Fatalf("HMAC key type %v, name algorithm %v", pub.Type, pub.NameAlg)
	case a.FixedTPM || a.FixedParent || !a.SignEncrypt || a.Decrypt || !a.UserWithAuth:
		t.Fatalf("HMAC key attributes %+v: TPM2_Import needs fixedTPM and fixedParent clear, TPM2_HMAC sign and userWithAuth", a)
	case scheme.Scheme.Scheme != tpm2.TPMAlgHMAC || hmacScheme.HashAlg != tpm2.TPMAlgSHA256:
		t.Fatal("HMAC key scheme is not HMAC-SHA256")
	}

	// Fresh randomness each time: two blobs for the same key share nothing.
	again, _ := BuildTPMActivation(rand.Reader, ek, srk, key)
	if bytes.Equal(blob[:64], again[:64]) {
		t.Fatal("two blobs start alike")
	}

	// A blob is for one EK: another's private key does not open it.
	if _, err := rsa.DecryptOAEP(sha256.New(), nil, testRSAKey(t, 2), blob[2+int(binary.BigEndian.Uint16(blob))+2:][:256], []byte("IDENTITY\x00")); err == nil {
		t.Fatal("another key decrypts the secret")
	}
}

func TestBuildTPMActivationRefuses(t *testing.T) {
	ekPub := rsaPublic(tpm2.RSAEKTemplate, &testRSAKey(t, 0).PublicKey)
	ek := mustParseTPMKey(t, tpm2bPublic(ekPub))
	srk := mustParseTPMKey(t, tpm2bPublic(rsaPublic(tpm2.RSASRKTemplate, &testRSAKey(t, 1).PublicKey)))
	signing := ekPub
	signing.ObjectAttributes.Decrypt, signing.ObjectAttributes.SignEncrypt = false, true
	notStorage := mustParseTPMKey(t, tpm2bPublic(signing))
	for _, tc := range []struct {
		name     string
		ek, srk  *TPMKey
		key      []byte
		wantTPMK bool
	}{
		{"no key", ek, srk, nil, false},
		{"key too long", ek, srk, make([]byte, 129), false},
		{"EK is a signing key", notStorage, srk, make([]byte, 32), true},
		{"SRK is a signing key", ek, notStorage, make([]byte, 32), true},
	} {
		_, err := BuildTPMActivation(rand.Reader, tc.ek, tc.srk, tc.key)
		if err == nil || errors.Is(err, ErrTPMKey) != tc.wantTPMK {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// A failing randomness source is an error, not a weak blob.
	if _, err := BuildTPMActivation(strings.NewReader("short"), ek, srk, make([]byte, 32)); err == nil {
		t.Error("a blob without randomness")
	}
}

func FuzzParseTPMKey(f *testing.F) {
	f.Add(tpm2bPublic(rsaPublic(tpm2.RSAEKTemplate, &testRSAKey(f, 0).PublicKey)))
	f.Add(tpm2.Marshal(tpm2.RSASRKTemplate))
	f.Add(tpm2bPublic(tpm2.ECCEKTemplate))
	f.Add([]byte{0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseTPMKeyBytes(b)
		if err != nil {
			if !errors.Is(err, ErrTPMKey) {
				t.Fatalf("error %v is not ErrTPMKey", err)
			}
			return
		}
		again, err := ParseTPMKeyBytes(k.Bytes())
		if err != nil || !bytes.Equal(again.Name, k.Name) || !k.SameKey(again) {
			t.Fatalf("a parsed key does not parse back: %v", err)
		}
		k.CheckEndorsementKey()
		k.CheckStorageRootKey()
	})
}
