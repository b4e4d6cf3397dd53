package main

import (
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// TestEnrollmentGroupVerificationCommands: proof of possession of a
// group's CA from the command line, and --ca-verified.
func TestEnrollmentGroupVerificationCommands(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	ca := testutil.NewCert(t, "Maker CA", nil, testutil.CertOptions{CA: true})
	other := testutil.NewCert(t, "Other CA", nil, testutil.CertOptions{CA: true})
	caFile := writeText(t, dir, "ca.pem", ca.PEM())

	r := c.ok("enrollment", "group", "create", "maker-ca", "--ca-certificate", caFile)
	if !strings.Contains(r.stdout, "CA verified") || !strings.Contains(r.stdout, "no: the group admits no device") {
		t.Fatalf("create x509:\n%s", r.stdout)
	}

	var v api.VerificationCode
	c.json(&v, "enrollment", "group", "verification-code", "MAKER-CA")
	if v.VerificationCode == "" || v.CAThumbprint != ca.Fingerprint() || v.Verified {
		t.Fatalf("verification-code: %+v", v)
	}
	table := c.ok("enrollment", "group", "verification-code", "maker-ca") // a new code
	if !strings.Contains(table.stdout, "Verification code") || strings.Contains(table.stdout, v.VerificationCode) {
		t.Fatalf("verification-code table:\n%s", table.stdout)
	}
	var g registry.EnrollmentGroup
	c.json(&g, "enrollment", "group", "show", "maker-ca")
	code := g.Attestation.X509CA.VerificationCode

	bad := writeText(t, dir, "bad.pem", testutil.NewCert(t, code, other, testutil.CertOptions{}).PEM())
	if r := c.run(registry.RoleOperator, "enrollment", "group", "verify", "maker-ca", "--certificate", bad); r.code != exitFailure || !strings.Contains(r.stderr, "not signed by the CA") {
		t.Fatalf("verify with a certificate of another key: %+v", r)
	}
	good := writeText(t, dir, "good.pem", testutil.NewCert(t, code, ca, testutil.CertOptions{}).PEM())
	if r := c.run(registry.RoleOEM, "enrollment", "group", "verify", "maker-ca", "--certificate", good); r.code != exitFailure || !strings.Contains(r.stderr, "403") {
		t.Fatalf("verify as oem: %+v", r)
	}
	r = c.run(registry.RoleOperator, "enrollment", "group", "verify", "maker-ca", "--certificate", good)
	if r.code != 0 || !strings.Contains(r.stdout, "CA verified") || !strings.Contains(r.stdout, "yes") {
		t.Fatalf("verify:\n%+v", r)
	}

	c.json(&g, "enrollment", "group", "create", "vouched", "--ca-certificate", caFile, "--ca-verified")
	if !g.Attestation.X509CA.Verified {
		t.Fatalf("--ca-verified: %+v", g.Attestation.X509CA)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"enrollment", "group", "verify", "maker-ca"}, exitUsage, "--certificate is required"},
		{[]string{"enrollment", "group", "verify", "maker-ca", "--certificate", dir + "/missing.pem"}, exitFailure, "missing.pem"},
		{[]string{"enrollment", "group", "create", "g2", "--symmetric-key", "--ca-verified"}, exitUsage, "--ca-verified needs --ca-certificate"},
		{[]string{"enrollment", "group", "verification-code"}, exitUsage, ""},
	} {
		r := c.run(registry.RoleOperator, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d with %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
	for _, args := range [][]string{{"enrollment", "group", "verify", "--help"}, {"enrollment", "group", "verification-code", "--help"}} {
		if r := execute(args...); r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: exit %d", args, r.code)
		}
	}
}
