package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// TestEnrollmentGroupCAVerification: proof of possession of an X.509
// group's CA, as DPS asks it — verification code, a certificate with it as
// its common name signed by the CA's key, verified; a new CA resets it; an
// operator may vouch for a CA at creation.
func TestEnrollmentGroupCAVerification(t *testing.T) {
	e := newEnv(t)
	ca := testutil.NewCert(t, "Maker CA", nil, testutil.CertOptions{CA: true})
	other := testutil.NewCert(t, "Other CA", nil, testutil.CertOptions{CA: true})

	// verificationCode and verifiedAt in a request are the server's: ignored.
	var g registry.EnrollmentGroup
	e.must(http.StatusCreated, "POST", "/api/enrollment-groups", map[string]any{"enrollmentGroupId": "maker",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{"caCertificatePem": ca.PEM(),
			"verificationCode": "CHOSEN", "verifiedAt": "2020-01-01T00:00:00Z"}}}, &g)
	if x := g.Attestation.X509CA; x.Verified || x.VerifiedAt != nil || x.VerificationCode != "" {
		t.Fatalf("new group's CA = %+v, want unverified without a code", x)
	}

	// Only operators ask for codes and verify.
	for _, role := range []string{registry.RoleOEM, registry.RoleViewer} {
		if r := e.do(role, "POST", "/api/enrollment-groups/maker/verification-code", nil); r.status != http.StatusForbidden {
			t.Errorf("verification-code as %s: %d, want 403", role, r.status)
		}
		if r := e.do(role, "POST", "/api/enrollment-groups/maker/verify", VerifyCARequest{CertificatePEM: ca.PEM()}); r.status != http.StatusForbidden {
			t.Errorf("verify as %s: %d, want 403", role, r.status)
		}
	}

	// Verify before any code: 422.
	proofOf := func(code string, signer *testutil.TestCert) string {
		return testutil.NewCert(t, code, signer, testutil.CertOptions{}).PEM()
	}
	if r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/maker/verify", VerifyCARequest{CertificatePEM: proofOf("X", ca)}); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("verify without a code: %d %s, want 422", r.status, r.body)
	}

	var vc VerificationCode
	r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/MAKER/verification-code", nil)
	if r.status != http.StatusOK {
		t.Fatalf("verification-code: %d %s", r.status, r.body)
	}
	r.decode(t, &vc)
	if len(vc.VerificationCode) < 32 || vc.EnrollmentGroupID != "maker" || vc.Verified || vc.CAThumbprint != ca.Fingerprint() ||
		!strings.Contains(vc.CASubject, "Maker CA") || r.header.Get("ETag") != etag(vc.Version) {
		t.Fatalf("verification code answer %+v (ETag %s)", vc, r.header.Get("ETag"))
	}
	var again VerificationCode
	e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/maker/verification-code", nil).decode(t, &again)
	if again.VerificationCode == vc.VerificationCode {
		t.Fatal("a second code is the first one")
	}
	code := again.VerificationCode

	for _, c := range []struct {
		name string
		body any
		want int
	}{
		{"the superseded code", VerifyCARequest{CertificatePEM: proofOf(vc.VerificationCode, ca)}, http.StatusUnprocessableEntity},
		{"wrong common name", VerifyCARequest{CertificatePEM: proofOf("not-the-code", ca)}, http.StatusUnprocessableEntity},
		{"signed by another key", VerifyCARequest{CertificatePEM: proofOf(code, other)}, http.StatusUnprocessableEntity},
		{"self-signed", VerifyCARequest{CertificatePEM: proofOf(code, nil)}, http.StatusUnprocessableEntity},
		{"not PEM", VerifyCARequest{CertificatePEM: "hello"}, http.StatusUnprocessableEntity},
		{"no certificate", `{}`, http.StatusUnprocessableEntity},
		{"unknown field", `{"certificate":"x"}`, http.StatusBadRequest},
	} {
		if r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/maker/verify", c.body); r.status != c.want {
			t.Errorf("verify with %s: %d %s, want %d", c.name, r.status, r.body, c.want)
		}
	}
	e.do(registry.RoleOperator, "GET", "/api/enrollment-groups/maker", nil).decode(t, fresh(&g))
	if x := g.Attestation.X509CA; x.Verified || x.VerificationCode != code {
		t.Fatalf("after failed proofs: %+v, want unverified with the code pending", x)
	}

	r = e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/maker/verify", VerifyCARequest{CertificatePEM: proofOf(code, ca)})
	if r.status != http.StatusOK {
		t.Fatalf("verify with a good proof: %d %s", r.status, r.body)
	}
	r.decode(t, fresh(&g))
	if x := g.Attestation.X509CA; !x.Verified || x.VerifiedAt == nil || x.VerificationCode != "" {
		t.Fatalf("verified CA = %+v, want verified, with its time, the code consumed", x)
	}

	// Rewriting the attestation with the same CA keeps the verification;
	// another CA resets it.
	same := registry.GroupAttestation{Type: registry.AttestationX509, X509CA: &registry.X509CAAttestation{CACertificatePEM: ca.PEM()}}
	e.do(registry.RoleOperator, "PATCH", "/api/enrollment-groups/maker", UpdateEnrollmentGroupRequest{Attestation: &same}).decode(t, fresh(&g))
	if !g.Attestation.X509CA.Verified {
		t.Fatalf("same CA rewritten: %+v, want still verified", g.Attestation.X509CA)
	}
	replaced := registry.GroupAttestation{Type: registry.AttestationX509, X509CA: &registry.X509CAAttestation{CACertificatePEM: other.PEM()}}
	r = e.do(registry.RoleOperator, "PATCH", "/api/enrollment-groups/maker", UpdateEnrollmentGroupRequest{Attestation: &replaced})
	r.decode(t, fresh(&g))
	if x := g.Attestation.X509CA; r.status != http.StatusOK || x.Verified || x.VerifiedAt != nil {
		t.Fatalf("CA replaced: %d %+v, want unverified", r.status, x)
	}
	// An oem key may not change the attestation at all.
	if r := e.do(registry.RoleOEM, "PATCH", "/api/enrollment-groups/maker", `{"attestation":{"type":"x509","x509":{"caCertificatePem":`+jsonString(ca.PEM())+`,"verified":true}}}`); r.status != http.StatusForbidden {
		t.Fatalf("oem vouching for a CA: %d, want 403", r.status)
	}

	// An operator vouches for a CA at creation.
	e.must(http.StatusCreated, "POST", "/api/enrollment-groups", `{"enrollmentGroupId":"vouched","attestation":{"type":"x509","x509":{"caCertificatePem":`+jsonString(ca.PEM())+`,"verified":true}}}`, fresh(&g))
	if x := g.Attestation.X509CA; !x.Verified || x.VerifiedAt == nil {
		t.Fatalf("vouched CA = %+v, want verified", x)
	}
	if r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups", `{"enrollmentGroupId":"not-ca","attestation":{"type":"x509","x509":{"caCertificatePem":`+jsonString(testutil.NewCert(t, "leaf", ca, testutil.CertOptions{}).PEM())+`,"verified":true}}}`); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("a leaf as a vouched CA: %d, want 422", r.status)
	}

	// A symmetric-key group has no CA to verify.
	e.must(http.StatusCreated, "POST", "/api/enrollment-groups", `{"enrollmentGroupId":"keys","attestation":{"type":"symmetricKey"}}`, nil)
	if r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/keys/verification-code", nil); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("verification-code of a symmetric-key group: %d, want 422", r.status)
	}
	if r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/nope/verification-code", nil); r.status != http.StatusNotFound {
		t.Fatalf("verification-code of a missing group: %d, want 404", r.status)
	}

	// Audited.
	var evs struct {
		Items []registry.AuditEvent `json:"items"`
	}
	e.must(http.StatusOK, "GET", "/api/audit?limit=100", nil, &evs)
	seen := map[string]bool{}
	for _, ev := range evs.Items {
		seen[ev.Action] = true
	}
	if !seen["enrollment-group.verification-code"] || !seen["enrollment-group.verify"] {
		t.Fatalf("audit actions %v lack the verification", seen)
	}
}

// fresh empties g before an answer is decoded into it: fields the answer
// leaves out must not keep a previous answer's values.
func fresh(g *registry.EnrollmentGroup) *registry.EnrollmentGroup {
	*g = registry.EnrollmentGroup{}
	return g
}
