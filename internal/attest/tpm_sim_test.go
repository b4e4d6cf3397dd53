//go:build tpmsim

package attest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/zerotouch/zerotouch/internal/attest/tpmsim"
)

// Activation blobs against a software TPM (the Microsoft reference TPM
// that go-tpm-tools/simulator builds with cgo): the device's side runs as
// the Azure IoT C SDK's hsm_client_tpm.c insert_key_in_tpm does it.
// Run with: go test -tags tpmsim ./internal/attest/

// simTPM is a simulated TPM whose loaded keys are flushed when the test
// ends.
type simTPM struct {
	*tpmsim.Device
	t testing.TB
}

func newSimTPM(t testing.TB, seed int64, ekTemplate, srkTemplate tpm2.TPMTPublic) *simTPM {
	t.Helper()
	return &simTPM{Device: tpmsim.New(t, seed, ekTemplate, srkTemplate, false), t: t}
}

// activate imports the key of an activation blob (tpmsim.Device.Activate)
// and flushes it when the test ends.
func (d *simTPM) activate(blob []byte) (tpm2.AuthHandle, error) {
	h, err := d.Activate(blob)
	if err == nil {
		d.t.Cleanup(func() { tpm2.FlushContext{FlushHandle: h.Handle}.Execute(d.TPM) })
	}
	return h, err
}

func (d *simTPM) hmac(key tpm2.AuthHandle, data []byte) []byte {
	d.t.Helper()
	sum, err := d.HMAC(key, data)
	if err != nil {
		d.t.Fatal(err)
	}
	return sum
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
			ek, err := ParseTPMKeyBytes(d.EKPublic)
			if err != nil {
				t.Fatal(err)
			}
			srk, err := ParseTPMKeyBytes(d.SRKPublic)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ek.Name, d.EK.Name.Buffer) || !bytes.Equal(srk.Name, d.SRK.Name.Buffer) {
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
	otherEK, otherSRK := other.EKPublic, other.SRKPublic
	other.TPM.Close()
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
