//go:build tpmsim

package tpmsim

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The C SDK's persistent handles (TPM_20_EK_HANDLE, TPM_20_SRK_HANDLE).
const (
	EKHandle  tpm2.TPMHandle = 0x81010001
	SRKHandle tpm2.TPMHandle = 0x81000001
)

// Device is a simulated TPM with an endorsement key and a storage root
// key.
type Device struct {
	TPM     transport.TPMCloser
	EK, SRK tpm2.AuthHandle
	// EKPublic and SRKPublic are the keys' TPM2B_PUBLIC, as the SDKs send
	// them to DPS.
	EKPublic, SRKPublic []byte
}

// New starts a simulated TPM (seed: which TPM) with an EK and an SRK made
// from the templates; with persistent, they are moved to the C SDK's
// persistent handles as its TSS_CreatePersistentKey does. The EK's auth
// is the standard policy, PolicySecret(TPM_RH_ENDORSEMENT), as the SDK's
// create_tpm_session runs it. The TPM is closed when t ends.
func New(t testing.TB, seed int64, ekTemplate, srkTemplate tpm2.TPMTPublic, persistent bool) *Device {
	t.Helper()
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		t.Fatalf("start the TPM simulator: %v", err)
	}
	d := &Device{TPM: transport.FromReadWriteCloser(sim)}
	t.Cleanup(func() { d.TPM.Close() })
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	primary := func(hierarchy, handle tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (tpm2.AuthHandle, []byte) {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(d.TPM)
		if err != nil {
			t.Fatalf("CreatePrimary: %v", err)
		}
		h := tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
		if persistent {
			if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
				PersistentHandle: handle}).Execute(d.TPM); err != nil {
				t.Fatalf("EvictControl: %v", err)
			}
			if _, err := (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(d.TPM); err != nil {
				t.Fatalf("FlushContext: %v", err)
			}
			h.Handle = handle
		}
		return h, tpm2.Marshal(rsp.OutPublic)
	}
	d.EK, d.EKPublic = primary(tpm2.TPMRHEndorsement, EKHandle, ekTemplate)
	d.SRK, d.SRKPublic = primary(tpm2.TPMRHOwner, SRKHandle, srkTemplate)
	d.EK.Auth = tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tpm transport.TPM, session tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: session,
			NonceTPM:      nonceTPM,
		}.Execute(tpm)
		return err
	})
	d.SRK.Auth = tpm2.PasswordAuth(nil)
	return d
}

// Activate imports the key of a DPS activation blob as the C SDK's
// insert_key_in_tpm does: unmarshal TPM2B_ID_OBJECT,
// TPM2B_ENCRYPTED_SECRET, TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET,
// TPM2B_PUBLIC and the UINT16 size of encrypted data (which must be 0);
// TPM2_ActivateCredential (activate handle the SRK, key handle the EK);
// TPM2_Import under the SRK with the recovered credential as the
// AES-128-CFB inner key; TPM2_Load. It returns the loaded, transient
// key, and the key's name; the caller flushes or persists it.
func (d *Device) Activate(blob []byte) (tpm2.AuthHandle, error) {
	var parts [6][]byte
	rest := blob
	for i := range parts {
		if len(rest) < 2 || int(binary.BigEndian.Uint16(rest)) > len(rest)-2 {
			return tpm2.AuthHandle{}, fmt.Errorf("activation blob: part %d is truncated", i+1)
		}
		n := int(binary.BigEndian.Uint16(rest))
		parts[i], rest = rest[2:2+n], rest[2+n:]
	}
	if len(rest) != 0 || len(parts[5]) != 0 {
		return tpm2.AuthHandle{}, fmt.Errorf("activation blob: %d trailing bytes, %d bytes of encrypted data", len(rest), len(parts[5]))
	}
	act, err := tpm2.ActivateCredential{
		ActivateHandle: d.SRK,
		KeyHandle:      d.EK,
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: parts[0]},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: parts[1]},
	}.Execute(d.TPM)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("TPM2_ActivateCredential: %w", err)
	}
	pub := tpm2.BytesAs2B[tpm2.TPMTPublic](parts[4])
	imp, err := tpm2.Import{
		ParentHandle:  d.SRK,
		EncryptionKey: tpm2.TPM2BData{Buffer: act.CertInfo.Buffer},
		ObjectPublic:  pub,
		Duplicate:     tpm2.TPM2BPrivate{Buffer: parts[2]},
		InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: parts[3]},
		Symmetric: tpm2.TPMTSymDef{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		},
	}.Execute(d.TPM)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("TPM2_Import: %w", err)
	}
	load, err := tpm2.Load{ParentHandle: d.SRK, InPrivate: imp.OutPrivate, InPublic: pub}.Execute(d.TPM)
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("TPM2_Load: %w", err)
	}
	return tpm2.AuthHandle{Handle: load.ObjectHandle, Name: load.Name, Auth: tpm2.PasswordAuth(nil)}, nil
}

// HMAC signs data with a loaded key, as the SDKs' SignData does
// (TPM2_HMAC, SHA-256).
func (d *Device) HMAC(key tpm2.AuthHandle, data []byte) ([]byte, error) {
	rsp, err := tpm2.Hmac{Handle: key, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: tpm2.TPMAlgSHA256}.Execute(d.TPM)
	if err != nil {
		return nil, fmt.Errorf("TPM2_HMAC: %w", err)
	}
	return rsp.OutHMAC.Buffer, nil
}
