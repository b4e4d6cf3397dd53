package attest

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// TPM 2.0 attestation, as Azure IoT Hub DPS runs it (the server's side).
//
// A TPM device registers with the public areas of its endorsement key (EK)
// and storage root key (SRK) and no token. The service checks the EK
// against the enrollment's and answers 401 with an "activation blob"
// (BuildTPMActivation): a fresh random HMAC key that only that TPM can
// load. The device recovers it with TPM2_ActivateCredential (under the
// EK), TPM2_Import and TPM2_Load (under the SRK), signs its registration
// SAS token with TPM2_HMAC, and registers again; the service verifies the
// token with the key it generated (SASVerifier.Verify).
//
// The blob is what the Azure IoT device SDKs unmarshal, in this order
// (C SDK provisioning_client/adapters/hsm_client_tpm.c, insert_key_in_tpm;
// C# SDK security/tpm/src/SecurityProviderTpmHsm.cs, ActivateIdentityKey):
//
//	TPM2B_ID_OBJECT        credential blob      (TPM2_MakeCredential to the EK, bound to the SRK's name)
//	TPM2B_ENCRYPTED_SECRET its seed, encrypted to the EK ("IDENTITY")
//	TPM2B_PRIVATE          the HMAC key, duplicated with an inner AES-128-CFB wrapper
//	                       whose key is the credential, and an outer wrapper to the SRK
//	TPM2B_ENCRYPTED_SECRET the outer wrapper's seed, encrypted to the SRK ("DUPLICATE")
//	TPM2B_PUBLIC           the HMAC key's public area
//	TPM2B (UINT16 size)    encrypted data: empty (the SDKs read the size)
//
// The SDKs activate the credential with TPM2_ActivateCredential(
// activateHandle = SRK, keyHandle = EK), so the credential is bound to the
// SRK's name, and import with symmetricAlg AES-128-CFB and the credential
// as encryptionKey: the credential is a 16-byte AES key.

// Errors of TPM attestation; test them with errors.Is.
var (
	// ErrTPMKey: a TPM public area that does not parse, or is not an
	// endorsement or storage key the service can encrypt to.
	ErrTPMKey = errors.New("unusable TPM public key")
)

// TPMIdentityKeySize is the size in bytes of the HMAC key an activation
// blob carries: HMAC-SHA256's block-sized key is overkill, its output size
// is what DPS and the SDKs use for symmetric keys.
const TPMIdentityKeySize = 32

// maxTPMPublicSize bounds a TPM2B_PUBLIC: an RSA-4096 key's is under 700
// bytes, TPM2B_PUBLIC's own limit is 0xFFFF.
const maxTPMPublicSize = 2048

// tpmCredentialSize is the inner wrapper's key size: AES-128, the
// symmetricAlg the SDKs give TPM2_Import.
const tpmCredentialSize = 16

// TPMKey is a parsed TPM 2.0 public area (TPMT_PUBLIC) of an asymmetric
// key, with its TPM name.
type TPMKey struct {
	Public tpm2.TPMTPublic
	// Name is the TPM name: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC).
	Name []byte
	// encoded is the canonical TPMT_PUBLIC.
	encoded []byte
}

// ParseTPMKey parses a base64 TPM public area (standard alphabet, padding
// optional), as DPS takes endorsement and storage root keys: a
// TPM2B_PUBLIC, or a bare TPMT_PUBLIC.
func ParseTPMKey(b64 string) (*TPMKey, error) {
	if base64.StdEncoding.DecodedLen(len(b64)) > maxTPMPublicSize+2 {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrTPMKey, maxTPMPublicSize)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrTPMKey)
	}
	return ParseTPMKeyBytes(b)
}

// ParseTPMKeyBytes parses a TPM2B_PUBLIC or a bare TPMT_PUBLIC. The
// encoding must be exact (no trailing bytes, canonical), the key RSA or
// ECC with a public key that is usable, and its name algorithm SHA-256,
// SHA-384 or SHA-512.
func ParseTPMKeyBytes(b []byte) (*TPMKey, error) {
	if len(b) > maxTPMPublicSize+2 {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrTPMKey, maxTPMPublicSize)
	}
	body := b
	if len(b) >= 2 && int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		body = b[2:] // TPM2B_PUBLIC
	}
	pub, err := unmarshalPublic(body)
	if err != nil {
		return nil, err
	}
	k := &TPMKey{Public: *pub, encoded: body}
	switch pub.NameAlg {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
	default:
		return nil, fmt.Errorf("%w: name algorithm %#04x is not SHA-256, SHA-384 or SHA-512", ErrTPMKey, uint16(pub.NameAlg))
	}
	if _, err := k.publicKey(); err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTPMKey, err)
	}
	k.Name = name.Buffer
	return k, nil
}

// unmarshalPublic decodes exactly one canonical TPMT_PUBLIC. The
// reflection-driven decoder is not written for hostile input: a panic is
// a malformed key.
func unmarshalPublic(b []byte) (pub *tpm2.TPMTPublic, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("%w: does not decode", ErrTPMKey)
		}
	}()
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrTPMKey)
	}
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, fmt.Errorf("%w: not a TPM2B_PUBLIC or TPMT_PUBLIC: %v", ErrTPMKey, err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), b) {
		return nil, fmt.Errorf("%w: trailing bytes or a non-canonical encoding", ErrTPMKey)
	}
	return pub, nil
}

// Bytes returns the key as a TPM2B_PUBLIC, as the SDKs send it.
func (k *TPMKey) Bytes() []byte {
	out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(k.encoded)), uint16(len(k.encoded)))
	return append(out, k.encoded...)
}

// publicKey returns the *rsa.PublicKey or *ecdh.PublicKey.
func (k *TPMKey) publicKey() (crypto.PublicKey, error) {
	switch k.Public.Type {
	case tpm2.TPMAlgRSA:
		parms, err := k.Public.Parameters.RSADetail()
		if err != nil {
			return nil, fmt.Errorf("%w: RSA parameters: %v", ErrTPMKey, err)
		}
		n, err := k.Public.Unique.RSA()
		if err != nil {
			return nil, fmt.Errorf("%w: RSA modulus: %v", ErrTPMKey, err)
		}
		switch parms.KeyBits {
		case 2048, 3072, 4096:
		default:
			return nil, fmt.Errorf("%w: RSA key of %d bits (2048, 3072 or 4096 are accepted)", ErrTPMKey, parms.KeyBits)
		}
		if len(n.Buffer) != int(parms.KeyBits)/8 || n.Buffer[0]&0x80 == 0 {
			return nil, fmt.Errorf("%w: the RSA modulus is not %d bits", ErrTPMKey, parms.KeyBits)
		}
		if e := parms.Exponent; e != 0 && (e < 3 || e&1 == 0) {
			return nil, fmt.Errorf("%w: RSA exponent %d", ErrTPMKey, e)
		}
		pub, err := tpm2.RSAPub(parms, n)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTPMKey, err)
		}
		return pub, nil
	case tpm2.TPMAlgECC:
		parms, err := k.Public.Parameters.ECCDetail()
		if err != nil {
			return nil, fmt.Errorf("%w: ECC parameters: %v", ErrTPMKey, err)
		}
		point, err := k.Public.Unique.ECC()
		if err != nil {
			return nil, fmt.Errorf("%w: ECC point: %v", ErrTPMKey, err)
		}
		pub, err := tpm2.ECDHPub(parms, point) // checks the point is on the curve
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTPMKey, err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("%w: type %#04x is neither RSA nor ECC", ErrTPMKey, uint16(k.Public.Type))
}

// checkStorage checks what encrypting to the key needs: a restricted
// decryption key (not a signing key) whose symmetric algorithm is
// AES-CFB, which MakeCredential and duplication use.
func (k *TPMKey) checkStorage(what string) error {
	a := k.Public.ObjectAttributes
	if !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return fmt.Errorf("%w: the %s is not a restricted decryption key", ErrTPMKey, what)
	}
	var sym *tpm2.TPMTSymDefObject
	switch k.Public.Type {
	case tpm2.TPMAlgRSA:
		p, _ := k.Public.Parameters.RSADetail()
		sym = &p.Symmetric
	case tpm2.TPMAlgECC:
		p, _ := k.Public.Parameters.ECCDetail()
		sym = &p.Symmetric
	}
	if sym.Algorithm != tpm2.TPMAlgAES {
		return fmt.Errorf("%w: the %s's symmetric algorithm is not AES", ErrTPMKey, what)
	}
	if mode, err := sym.Mode.AES(); err != nil || *mode != tpm2.TPMAlgCFB {
		return fmt.Errorf("%w: the %s's symmetric mode is not CFB", ErrTPMKey, what)
	}
	if bits, err := sym.KeyBits.AES(); err != nil || (*bits != 128 && *bits != 192 && *bits != 256) {
		return fmt.Errorf("%w: the %s's AES key size is not 128, 192 or 256 bits", ErrTPMKey, what)
	}
	return nil
}

// CheckEndorsementKey checks that k can be an endorsement key the
// service encrypts a credential to: a restricted decryption key with an
// AES-CFB symmetric algorithm, as the TCG EK templates are.
func (k *TPMKey) CheckEndorsementKey() error { return k.checkStorage("endorsement key") }

// CheckStorageRootKey checks that k can be the parent a key is
// duplicated to: a restricted decryption key with an AES-CFB symmetric
// algorithm, as the TCG SRK templates are.
func (k *TPMKey) CheckStorageRootKey() error { return k.checkStorage("storage root key") }

// SameKey reports whether k and o hold the same public key (RSA modulus
// and exponent, or ECC curve and point), however their public areas
// differ otherwise (attributes, policy, encoding): an enrollment's EK is
// compared with the one a device presents by its key, as DPS does.
func (k *TPMKey) SameKey(o *TPMKey) bool {
	if k.Public.Type != o.Public.Type {
		return false
	}
	switch k.Public.Type {
	case tpm2.TPMAlgRSA:
		kp, _ := k.Public.Parameters.RSADetail()
		op, _ := o.Public.Parameters.RSADetail()
		kn, _ := k.Public.Unique.RSA()
		on, _ := o.Public.Unique.RSA()
		exp := func(e uint32) uint32 {
			if e == 0 {
				return 65537
			}
			return e
		}
		return exp(kp.Exponent) == exp(op.Exponent) &&
			new(big.Int).SetBytes(kn.Buffer).Cmp(new(big.Int).SetBytes(on.Buffer)) == 0
	case tpm2.TPMAlgECC:
		kk, err1 := k.publicKey()
		ok, err2 := o.publicKey()
		if err1 != nil || err2 != nil {
			return false
		}
		return kk.(*ecdh.PublicKey).Equal(ok)
	}
	return false
}

// HMAC key template: a keyed-hash signing key for HMAC-SHA256, usable
// with its (empty) password and duplicable (fixedTPM and fixedParent
// clear), which TPM2_Import requires.
func hmacKeyPublic(seed, key []byte) tpm2.TPMTPublic {
	unique := tpm2.TPMAlgSHA256
	h, _ := unique.Hash()
	d := h.New()
	d.Write(seed) // unique = H_nameAlg(seedValue || sensitive), Part 1 §27.7.2
	d.Write(key)
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			UserWithAuth: true,
			NoDA:         true,
			SignEncrypt:  true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: d.Sum(nil)}),
	}
}

// BuildTPMActivation builds the activation blob that carries key (the
// HMAC key the device will sign its token with) to the TPM of ek and srk,
// in the layout the Azure IoT SDKs parse (see the top of this file).
// rand is the randomness source (crypto/rand.Reader).
func BuildTPMActivation(rand io.Reader, ek, srk *TPMKey, key []byte) ([]byte, error) {
	if len(key) == 0 || len(key) > 128 {
		return nil, errors.New("tpm activation: the key must be 1 to 128 bytes")
	}
	if err := ek.CheckEndorsementKey(); err != nil {
		return nil, err
	}
	if err := srk.CheckStorageRootKey(); err != nil {
		return nil, err
	}
	ekKEM, err := tpm2.ImportEncapsulationKey(&ek.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: endorsement key: %v", ErrTPMKey, err)
	}
	srkKEM, err := tpm2.ImportEncapsulationKey(&srk.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: storage root key: %v", ErrTPMKey, err)
	}

	// The credential: the inner wrapper's key, for the TPM holding the EK,
	// to release only for the object named like the SRK.
	credential := make([]byte, tpmCredentialSize)
	if _, err := io.ReadFull(rand, credential); err != nil {
		return nil, fmt.Errorf("tpm activation: %w", err)
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand, ekKEM, srk.Name, credential)
	if err != nil {
		return nil, fmt.Errorf("tpm activation: make credential: %w", err)
	}

	// The HMAC key as an object to import under the SRK.
	seed := make([]byte, crypto.SHA256.Size())
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, fmt.Errorf("tpm activation: %w", err)
	}
	pub := hmacKeyPublic(seed, key)
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return nil, fmt.Errorf("tpm activation: %w", err)
	}
	sensitive := tpm2.Marshal(tpm2.New2B(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: key}),
	}))
	duplicate, encWrapKey, err := duplicateInnerOuter(rand, srkKEM, name.Buffer, credential, sensitive)
	if err != nil {
		return nil, err
	}

	var b []byte
	for _, part := range [][]byte{idObject, encSecret, duplicate, encWrapKey, tpm2.Marshal(pub), nil} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(part)))
		b = append(b, part...)
	}
	return b, nil
}

// duplicateInnerOuter wraps sensitive (a marshalled TPM2B_SENSITIVE) for
// TPM2_Import under the parent whose KEM is parent, as TPM2_Duplicate does
// with an inner wrapper (TPM 2.0 Part 1, §23.3.2 "Duplication"):
//
//	innerIntegrity = H_nameAlg(sensitive || name)          (the object's nameAlg: SHA-256)
//	encSensitive   = AES-128-CFB(innerKey, IV 0)(TPM2B(innerIntegrity) || sensitive)
//	seed, inSymSeed = Encapsulate(parent, "DUPLICATE")
//	dupSensitive   = AES-CFB(KDFa(parent nameAlg, seed, "STORAGE", name), IV 0)(encSensitive)
//	outerHMAC      = HMAC(KDFa(parent nameAlg, seed, "INTEGRITY"), dupSensitive || name)
//	duplicate      = TPM2B(outerHMAC) || dupSensitive       (the TPM2B_PRIVATE's contents)
func duplicateInnerOuter(rand io.Reader, parent tpm2.LabeledEncapsulationKey, name, innerKey, sensitive []byte) (duplicate, inSymSeed []byte, err error) {
	d := crypto.SHA256.New()
	d.Write(sensitive)
	d.Write(name)
	inner := tpm2.Marshal(tpm2.TPM2BDigest{Buffer: d.Sum(nil)})
	inner = append(inner, sensitive...)
	encSensitive, err := cfbEncrypt(innerKey, inner)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm activation: inner wrapper: %w", err)
	}

	seed, inSymSeed, err := parent.Encapsulate(rand, "DUPLICATE")
	if err != nil {
		return nil, nil, fmt.Errorf("tpm activation: encrypt to the storage root key: %w", err)
	}
	hash, err := parent.NameAlg().Hash()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: storage root key: %v", ErrTPMKey, err)
	}
	bits, err := parent.SymmetricParameters().KeyBits.AES()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: storage root key: %v", ErrTPMKey, err)
	}
	dupSensitive, err := cfbEncrypt(tpm2.KDFa(hash, seed, "STORAGE", name, nil, int(*bits)), encSensitive)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm activation: outer wrapper: %w", err)
	}
	m := hmac.New(hash.New, tpm2.KDFa(hash, seed, "INTEGRITY", nil, nil, hash.Size()*8))
	m.Write(dupSensitive)
	m.Write(name)
	duplicate = tpm2.Marshal(tpm2.TPM2BDigest{Buffer: m.Sum(nil)})
	return append(duplicate, dupSensitive...), inSymSeed, nil
}

// cfbEncrypt encrypts with AES in CFB mode and a zero IV, as the TPM's
// wrappers do (each key is used once).
func cfbEncrypt(key, plaintext []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(plaintext))
	//lint:ignore SA1019 TPM 2.0 specifies CFB for its wrappers.
	cipher.NewCFBEncrypter(block, make([]byte, block.BlockSize())).XORKeyStream(out, plaintext)
	return out, nil
}
