//go:build tpmsim

package attest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Activation blobs against a software TPM (the Microsoft reference TPM
// that go-tpm-tools/simulator builds with cgo): the device's side runs as
// the Azure IoT C SDK's hsm_client_tpm.c insert_key_in_tpm does it.
// Run with: go test -tags tpmsim ./internal/attest/

// simTPM is a simulated TPM with an EK and an SRK.
type simTPM struct {
	t        testing.TB
	tpm      transport.TPMCloser
	ek, srk  tpm2.AuthHandle
	ekPublic []byte // TPM2B_PUBLIC, as the SDKs send it
	srkPub   []byte
}

func newSimTPM(t testing.TB, seed int64, ekTemplate, srkTemplate tpm2.TPMTPublic) *simTPM {
	t.Helper()
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		t.Fatalf("start the TPM simulator: %v", err)
	}
	d := &simTPM{t: t, tpm: transport.FromReadWriteCloser(sim)}
	t.Cleanup(func() { d.tpm.Close() })
	primary := func(hierarchy tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (tpm2.AuthHandle, []byte) {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(d.tpm)
		if err != nil {
			t.Fatalf("CreatePrimary: %v", err)
		}
		return tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, tpm2.Marshal(rsp.OutPublic)
	}
	d.ek, d.ekPublic = primary(tpm2.TPMRHEndorsement, ekTemplate)
	d.srk, d.srkPub = primary(tpm2.TPMRHOwner, srkTemplate)
	d.ek.Auth = tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tpm transport.TPM, session tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
		// The EK's policy: PolicySecret(TPM_RH_ENDORSEMENT), as the SDKs'
		// create_tpm_session runs it.
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: session,
			NonceTPM:      nonceTPM,
		}.Execute(tpm)
		return err
	})
	d.srk.Auth = tpm2.PasswordAuth(nil)
	return d
}

// activate imports the key of an activation blob, as the C SDK does:
// unmarshal TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET, TPM2B_PRIVATE,
// TPM2B_ENCRYPTED_SECRET, TPM2B_PUBLIC and the UINT16 size of encrypted
// data; ActivateCredential(SRK, EK); Import under the SRK with the
// credential as the AES-128-CFB inner key; Load. It returns the loaded
// key, or the first TPM error.
func (d *simTPM) activate(blob []byte) (tpm2.AuthHandle, error) {
	d.t.Helper()
	var parts [6][]byte
	rest := blob
	for i := range parts {
		if len(rest) < 2 || int(binary.BigEndian.Uint16(rest)) > len(rest)-2 {
			d.t.Fatalf("activation blob: part %d is truncated", i+1)
		}
		n := int(binary.BigEndian.Uint16(rest))
		parts[i], rest = rest[2:2+n], rest[2+n:]
	}
	if len(rest) != 0 || len(parts[5]) != 0 {
		d.t.Fatalf("activation blob: %d trailing bytes, %d bytes of encrypted data", len(rest), len(parts[5]))
	}
	act, err := tpm2.ActivateCredential{
		ActivateHandle: d.srk,
		KeyHandle:      d.ek,
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: parts[0]},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: parts[1]},
	}.Execute(d.tpm)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("TPM2_ActivateCredential: %w", err)
	}
	pub := tpm2.BytesAs2B[tpm2.TPMTPublic](parts[4])
	imp, err := tpm2.Import{
		ParentHandle:  d.srk,
		EncryptionKey: tpm2.TPM2BData{Buffer: act.CertInfo.Buffer},
		ObjectPublic:  pub,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: parts[2]},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: parts[3]},
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
	}.Execute(d.tpm)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("TPM2_Import: %w", err)
	}
	load, err := tpm2.Load{ParentHandle: d.srk, InPrivate: imp.OutPrivate, InPublic: pub}.Execute(d.tpm)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("TPM2_Load: %w", err)
	}
	d.t.Cleanup(func() { tpm2.FlushContext{FlushHandle: load.ObjectHandle}.Execute(d.tpm) })
	return tpm2.AuthHandle{Handle: load.ObjectHandle, Name: load.Name, Auth: tpm2.PasswordAuth(nil)}, nil
}

// hmac signs data with a loaded key, as the SDKs' SignData does
// (TPM2_HMAC, SHA-256).
func (d *simTPM) hmac(key tpm2.AuthHandle, data []byte) []byte {
	d.t.Helper()
	rsp, err := tpm2.Hmac{Handle: key, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: tpm2.TPMAlgSHA256}.Execute(d.tpm)
	if err != nil {
		d.t.Fatalf("TPM2_HMAC: %v", err)
	}
	return rsp.OutHMAC.Buffer
}

func TestTPMActivationInSimulator(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ek, srk tpm2.TPMTPublic
	}{
		{"RSA EK, RSA SRK", tpm2.RSAEKTemplate, tpm2.RSASRKTemplate},
		{"ECC EK, ECC SRK", tpm2.ECCEKTemplate, tpm2.ECCSRKTemplate},
		{"RSA EK, ECC SRK", tpm2.RSAEKTemplate, tpm2.ECCSRKTemplate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newSimTPM(t, 1, tc.ek, tc.srk)
			ek, err := ParseTPMKeyBytes(d.ekPublic)
			if err != nil {
				t.Fatal(err)
			}
			srk, err := ParseTPMKeyBytes(d.srkPub)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ek.Name, d.ek.Name.Buffer) || !bytes.Equal(srk.Name, d.srk.Name.Buffer) {
				t.Fatal("the names computed differ from the TPM's")
			}
			key := make([]byte, TPMIdentityKeySize)
			rand.Read(key)
			blob, err := BuildTPMActivation(rand.Reader, ek, srk, key)
			if err != nil {
				t.Fatal(err)
			}
			h, err := d.activate(blob)
			if err != nil {
				t.Fatalf("activate: %v", err)
			}
			msg := []byte("0ne00000000/registrations/tpm-1\n1900000000")
			want := hmac.New(sha256.New, key)
			want.Write(msg)
			if got := d.hmac(h, msg); !hmac.Equal(got, want.Sum(nil)) {
				t.Fatalf("the TPM's HMAC %x differs from the key's %x", got, want.Sum(nil))
			}
		})
	}
}

// A blob made for another TPM's EK does not activate.
func TestTPMActivationOtherTPM(t *testing.T) {
	other := newSimTPM(t, 2, tpm2.RSAEKTemplate, tpm2.RSASRKTemplate)
	otherEK, otherSRK := other.ekPublic, other.srkPub
	other.tpm.Close()
	d := newSimTPM(t, 3, tpm2.RSAEKTemplate, tpm2.RSASRKTemplate)
	ek, _ := ParseTPMKeyBytes(otherEK)
	srk, _ := ParseTPMKeyBytes(otherSRK)
	blob, err := BuildTPMActivation(rand.Reader, ek, srk, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.activate(blob); err == nil {
		t.Fatal("a blob for another TPM activated")
	}
}
