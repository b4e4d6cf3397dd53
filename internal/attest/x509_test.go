package attest_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

func chainOf(cs ...*testutil.TestCert) []*x509.Certificate {
	out := make([]*x509.Certificate, len(cs))
	for i, c := range cs {
		out[i] = c.Cert
	}
	return out
}

func TestX509Attestation(t *testing.T) {
	now := time.Now()
	root := testutil.NewCert(t, "Maker Root CA", nil, testutil.CertOptions{CA: true})
	inter := testutil.NewCert(t, "Maker Line CA", root, testutil.CertOptions{CA: true})
	foreign := testutil.NewCert(t, "Other Maker CA", nil, testutil.CertOptions{CA: true})
	notCA := testutil.NewCert(t, "Not A CA", nil, testutil.CertOptions{})
	// A CA certificate whose subject is root's, with another key: it
	// names the same issuer but signs nothing root signed.
	forged := testutil.NewCert(t, "", nil, testutil.CertOptions{CA: true, Subject: &root.Cert.Subject})

	leaf := testutil.NewCert(t, "sensor-0042", root, testutil.CertOptions{})
	selfSigned := testutil.NewCert(t, "sensor-0042", nil, testutil.CertOptions{})
	viaInter := testutil.NewCert(t, "sensor-0043", inter, testutil.CertOptions{})
	expired := testutil.NewCert(t, "sensor-0042", root, testutil.CertOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	future := testutil.NewCert(t, "sensor-0042", root, testutil.CertOptions{NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	serverOnly := testutil.NewCert(t, "sensor-0042", root, testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	anyUsage := testutil.NewCert(t, "sensor-0042", root, testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	noUsage := testutil.NewCert(t, "sensor-0042", root, testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{}})
	upperCN := testutil.NewCert(t, "Sensor-0042", root, testutil.CertOptions{})
	foreignLeaf := testutil.NewCert(t, "sensor-0042", foreign, testutil.CertOptions{})
	underNotCA := testutil.NewCert(t, "sensor-0042", notCA, testutil.CertOptions{})

	t.Run("individual", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			chain      []*x509.Certificate
			regID, fp  string
			want       error
			wantAccept bool
		}{
			{name: "valid leaf", chain: chainOf(leaf), regID: "sensor-0042", fp: leaf.Fingerprint(), wantAccept: true},
			{name: "self-signed leaf", chain: chainOf(selfSigned), regID: "sensor-0042", fp: selfSigned.Fingerprint(), wantAccept: true},
			{name: "upper-case thumbprint", chain: chainOf(leaf), regID: "sensor-0042", fp: upper(leaf.Fingerprint()), wantAccept: true},
			{name: "common name in another case", chain: chainOf(upperCN), regID: "sensor-0042", fp: upperCN.Fingerprint(), wantAccept: true},
			{name: "any extended key usage", chain: chainOf(anyUsage), regID: "sensor-0042", fp: anyUsage.Fingerprint(), wantAccept: true},
			{name: "no extended key usage", chain: chainOf(noUsage), regID: "sensor-0042", fp: noUsage.Fingerprint(), wantAccept: true},
			{name: "thumbprint of another certificate", chain: chainOf(selfSigned), regID: "sensor-0042", fp: leaf.Fingerprint(), want: attest.ErrThumbprintMismatch},
			{name: "wrong common name", chain: chainOf(leaf), regID: "sensor-0099", fp: leaf.Fingerprint(), want: attest.ErrCommonNameMismatch},
			{name: "expired", chain: chainOf(expired), regID: "sensor-0042", fp: expired.Fingerprint(), want: attest.ErrCertificateExpired},
			{name: "not yet valid", chain: chainOf(future), regID: "sensor-0042", fp: future.Fingerprint(), want: attest.ErrCertificateNotYetValid},
			{name: "server authentication only", chain: chainOf(serverOnly), regID: "sensor-0042", fp: serverOnly.Fingerprint(), want: attest.ErrNotClientCertificate},
			{name: "no certificate", regID: "sensor-0042", fp: leaf.Fingerprint(), want: attest.ErrNoCertificate},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := attest.VerifyIndividual(tc.chain, tc.regID, tc.fp, now)
				check(t, err, tc.want, tc.wantAccept)
			})
		}
	})

	t.Run("group", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			chain      []*x509.Certificate
			regID      string
			ca         *x509.Certificate
			want       error
			wantAccept bool
		}{
			{name: "leaf of the CA", chain: chainOf(leaf), regID: "sensor-0042", ca: root.Cert, wantAccept: true},
			{name: "leaf with the CA in its chain", chain: chainOf(leaf, root), regID: "sensor-0042", ca: root.Cert, wantAccept: true},
			{name: "intermediate chain", chain: chainOf(viaInter, inter), regID: "sensor-0043", ca: root.Cert, wantAccept: true},
			{name: "the intermediate as the group's CA", chain: chainOf(viaInter, inter), regID: "sensor-0043", ca: inter.Cert, wantAccept: true},
			{name: "intermediate missing", chain: chainOf(viaInter), regID: "sensor-0043", ca: root.Cert, want: attest.ErrNotChained},
			{name: "foreign CA", chain: chainOf(foreignLeaf, foreign), regID: "sensor-0042", ca: root.Cert, want: attest.ErrNotChained},
			{name: "same issuer name, another key", chain: chainOf(leaf), regID: "sensor-0042", ca: forged.Cert, want: attest.ErrNotChained},
			{name: "CA:false certificate as the group's CA", chain: chainOf(underNotCA), regID: "sensor-0042", ca: notCA.Cert, want: attest.ErrNotCA},
			{name: "wrong common name", chain: chainOf(leaf), regID: "sensor-0099", ca: root.Cert, want: attest.ErrCommonNameMismatch},
			{name: "expired", chain: chainOf(expired), regID: "sensor-0042", ca: root.Cert, want: attest.ErrCertificateExpired},
			{name: "not yet valid", chain: chainOf(future), regID: "sensor-0042", ca: root.Cert, want: attest.ErrCertificateNotYetValid},
			{name: "server authentication only", chain: chainOf(serverOnly), regID: "sensor-0042", ca: root.Cert, want: attest.ErrNotClientCertificate},
			{name: "self-signed leaf", chain: chainOf(selfSigned), regID: "sensor-0042", ca: root.Cert, want: attest.ErrNotChained},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := attest.VerifyGroup(tc.chain, tc.regID, tc.ca, now)
				check(t, err, tc.want, tc.wantAccept)
			})
		}
		if !attest.ClaimsCA(chainOf(leaf), forged.Cert) || attest.ClaimsCA(chainOf(foreignLeaf), root.Cert) {
			t.Error("ClaimsCA: a leaf naming the CA's subject claims it; a foreign leaf does not")
		}
	})

	t.Run("proof of possession", func(t *testing.T) {
		const code = "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567"
		good := testutil.NewCert(t, code, root, testutil.CertOptions{})
		wrongCN := testutil.NewCert(t, "0A1B2C", root, testutil.CertOptions{})
		otherKey := testutil.NewCert(t, code, foreign, testutil.CertOptions{})
		forgedProof := testutil.NewCert(t, code, forged, testutil.CertOptions{})
		selfProof := testutil.NewCert(t, code, nil, testutil.CertOptions{})
		expiredProof := testutil.NewCert(t, code, root, testutil.CertOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
		for _, tc := range []struct {
			name       string
			ca, proof  *x509.Certificate
			code       string
			want       error
			wantAccept bool
		}{
			{name: "good", ca: root.Cert, proof: good.Cert, code: code, wantAccept: true},
			{name: "wrong common name", ca: root.Cert, proof: wrongCN.Cert, code: code, want: attest.ErrBadProof},
			{name: "code in another case", ca: root.Cert, proof: good.Cert, code: lower(code), want: attest.ErrBadProof},
			{name: "signed by another key", ca: root.Cert, proof: otherKey.Cert, code: code, want: attest.ErrBadProof},
			{name: "signed by a key under the CA's name", ca: root.Cert, proof: forgedProof.Cert, code: code, want: attest.ErrBadProof},
			{name: "self-signed", ca: root.Cert, proof: selfProof.Cert, code: code, want: attest.ErrBadProof},
			{name: "expired", ca: root.Cert, proof: expiredProof.Cert, code: code, want: attest.ErrBadProof},
			{name: "no pending code", ca: root.Cert, proof: good.Cert, code: "", want: attest.ErrBadProof},
			{name: "no certificate", ca: root.Cert, code: code, want: attest.ErrBadProof},
			{name: "CA:false 'CA'", ca: notCA.Cert, proof: testutil.NewCert(t, code, notCA, testutil.CertOptions{}).Cert, code: code, want: attest.ErrNotCA},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := attest.VerifyProofOfPossession(tc.ca, tc.proof, tc.code, now)
				check(t, err, tc.want, tc.wantAccept)
			})
		}
	})
}

func check(t *testing.T, err, want error, accept bool) {
	t.Helper()
	switch {
	case accept && err != nil:
		t.Fatalf("refused: %v", err)
	case !accept && !errors.Is(err, want):
		t.Fatalf("error = %v, want %v", err, want)
	case !accept && err.Error() == want.Error() && want != attest.ErrNoCertificate:
		t.Fatalf("error %q says no more than its kind", err)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}
