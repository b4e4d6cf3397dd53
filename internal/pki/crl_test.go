package pki

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCRL(t *testing.T) {
	ca := newTestCA(t, Options{})
	revokedAt := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	entries := []Revoked{
		{Serial: newSerial(), RevokedAt: revokedAt, Reason: 1},                           // keyCompromise
		{Serial: newSerial(), RevokedAt: revokedAt.Add(time.Hour), Reason: 0},            // unspecified: no reason extension
		{Serial: big.NewInt(0x4a3f), RevokedAt: revokedAt.Add(2 * time.Hour), Reason: 5}, // cessationOfOperation
	}
	before := time.Now().Truncate(time.Second)
	crl, err := ca.CRL(entries, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(crl.PEM())
	if block == nil || block.Type != "X509 CRL" {
		t.Fatalf("PEM = %q", crl.PEM())
	}
	rl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatalf("ParseRevocationList: %v", err)
	}
	if err := rl.CheckSignatureFrom(ca.Issuer()); err != nil {
		t.Fatalf("CRL not signed by the issuing CA: %v", err)
	}
	if rl.Number.Cmp(crl.Number) != 0 || !rl.ThisUpdate.Equal(crl.ThisUpdate) || !rl.NextUpdate.Equal(crl.NextUpdate) {
		t.Fatalf("CRL says number %v, %v–%v; returned %v, %v–%v", rl.Number, rl.ThisUpdate, rl.NextUpdate, crl.Number, crl.ThisUpdate, crl.NextUpdate)
	}
	if rl.ThisUpdate.Before(before) || rl.NextUpdate.Sub(rl.ThisUpdate) != 48*time.Hour {
		t.Fatalf("thisUpdate %v, nextUpdate %v", rl.ThisUpdate, rl.NextUpdate)
	}
	if string(rl.RawIssuer) != string(ca.Issuer().RawSubject) || string(rl.AuthorityKeyId) != string(ca.Issuer().SubjectKeyId) {
		t.Fatal("CRL issuer or authority key id is not the issuing CA's")
	}
	if len(rl.RevokedCertificateEntries) != len(entries) {
		t.Fatalf("%d entries, want %d", len(rl.RevokedCertificateEntries), len(entries))
	}
	for i, e := range rl.RevokedCertificateEntries {
		w := entries[i]
		if e.SerialNumber.Cmp(w.Serial) != 0 || !e.RevocationTime.Equal(w.RevokedAt) || e.ReasonCode != w.Reason {
			t.Errorf("entry %d = serial %x at %v reason %d; want %x at %v reason %d", i, e.SerialNumber, e.RevocationTime, e.ReasonCode,
				w.Serial, w.RevokedAt, w.Reason)
		}
		hasReason := false
		for _, ext := range e.Extensions {
			if ext.Id.Equal([]int{2, 5, 29, 21}) {
				hasReason = true
			}
		}
		if hasReason != (w.Reason != 0) {
			t.Errorf("entry %d: reason extension present %v, want %v", i, hasReason, w.Reason != 0)
		}
	}

	empty, err := ca.CRL(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if empty.Number.Cmp(crl.Number) <= 0 {
		t.Fatalf("CRL number %v after %v: not increasing", empty.Number, crl.Number)
	}
	if empty.NextUpdate.Sub(empty.ThisUpdate) != DefaultCRLValidity {
		t.Fatalf("default validity %v", empty.NextUpdate.Sub(empty.ThisUpdate))
	}

	for _, tc := range []struct {
		name string
		e    Revoked
	}{
		{"no serial", Revoked{RevokedAt: revokedAt}},
		{"zero serial", Revoked{Serial: big.NewInt(0), RevokedAt: revokedAt}},
		{"no time", Revoked{Serial: big.NewInt(1)}},
		{"reason 7 (unused)", Revoked{Serial: big.NewInt(1), RevokedAt: revokedAt, Reason: 7}},
		{"reason 11", Revoked{Serial: big.NewInt(1), RevokedAt: revokedAt, Reason: 11}},
	} {
		if _, err := ca.CRL([]Revoked{tc.e}, 0); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := ca.CRL(nil, -time.Hour); err == nil {
		t.Error("negative validity accepted")
	}
}

func TestCRLNumberSurvivesRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Open(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.CRL(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	reopened := mustOpen(t, dir)
	second, err := reopened.CRL(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if second.Number.Cmp(first.Number) <= 0 {
		t.Fatalf("number %v after a restart, %v before", second.Number, first.Number)
	}
	// A number ahead of the clock (the clock was set back since) is
	// followed, not reused.
	ahead := new(big.Int).Lsh(big.NewInt(1), 80)
	if err := os.WriteFile(filepath.Join(dir, crlNumberFile), []byte(ahead.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, err := mustOpen(t, dir).CRL(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := new(big.Int).Add(ahead, big.NewInt(1)); third.Number.Cmp(want) != 0 {
		t.Fatalf("number %v, want %v", third.Number, want)
	}
}

func TestCRLOfACAThatMayNotSignThem(t *testing.T) {
	key := testKey(t, "p256")
	cert := testCACert(t, key, "no cRLSign", nil, nil, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign })
	log, logs := logBuffer()
	ca, err := Import(t.Context(), t.TempDir(), pemCert(cert), pemKeyPKCS8(t, key), Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CRL(nil, 0); err == nil {
		t.Fatal("a CA without cRLSign signed a CRL")
	}
	if logs.Len() == 0 {
		t.Fatal("the import did not warn that the CA cannot sign CRLs")
	}
}
