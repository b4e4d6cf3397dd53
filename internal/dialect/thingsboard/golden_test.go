package thingsboard

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixture: profiles with known keys and secrets, and one existing device.
func newFixture(t *testing.T) *Handler {
	t.Helper()
	ctx := context.Background()
	st := testutil.NewStore(t, nil)
	now := time.Now().UTC()
	profiles := []registry.Profile{
		{ID: "p-create", Name: "create", Strategy: registry.StrategyAllowCreate, ProvisionKey: "create-key", DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever},
		{ID: "p-basic", Name: "basic", Strategy: registry.StrategyAllowCreate, ProvisionKey: "basic-key", DefaultCredentialType: registry.CredentialMQTTBasic, ReprovisionPolicy: registry.ReprovisionNever},
		{ID: "p-pre", Name: "pre", Strategy: registry.StrategyPreProvisioned, ProvisionKey: "pre-key", DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever},
		{ID: "p-rotate", Name: "rotate", Strategy: registry.StrategyAllowCreate, ProvisionKey: "rotate-key", DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionRotate},
		{ID: "p-off", Name: "off", Strategy: registry.StrategyDisabled, ProvisionKey: "off-key", DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever},
	}
	for i := range profiles {
		p := &profiles[i]
		p.OrgID, p.ProvisionSecretHash, p.CreatedAt, p.UpdatedAt = registry.DefaultOrgID, secret.Hash("secret"), now, now
		if err := st.CreateProfile(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	devices := []registry.NewDevice{
		{Device: registry.Device{ID: "d-pre", OrgID: registry.DefaultOrgID, ProfileID: "p-pre", Name: "pre-1", Status: registry.DeviceEnabled}},
		{Device: registry.Device{ID: "d-pre-off", OrgID: registry.DefaultOrgID, ProfileID: "p-pre", Name: "pre-disabled", Status: registry.DeviceDisabled}},
		{Device: registry.Device{ID: "d-done", OrgID: registry.DefaultOrgID, ProfileID: "p-create", Name: "done", Status: registry.DeviceEnabled, ProvisionedAt: &now},
			Credentials: []registry.Credential{{ID: "c-done", Type: registry.CredentialAccessToken, LookupKey: secret.LookupHash("taken-token-1"), Status: registry.CredentialActive, CreatedAt: now}}},
		{Device: registry.Device{ID: "d-rot", OrgID: registry.DefaultOrgID, ProfileID: "p-rotate", Name: "rotating", Status: registry.DeviceEnabled, ProvisionedAt: &now}},
	}
	if err := st.CreateDevices(ctx, devices); err != nil {
		t.Fatal(err)
	}
	svc := provision.New(provision.Options{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return NewHandler(svc)
}

func testCertPEM(t *testing.T) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "golden"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestGolden runs every request/answer pair of testdata/*.request.json
// through the handler and compares the answer with *.answer.json. Generated
// secrets are replaced by <generated> so the files are stable; the
// certificate PEM by <certificate>.
func TestGolden(t *testing.T) {
	h := newFixture(t)
	cert := testCertPEM(t)
	requests, _ := filepath.Glob("testdata/*.request.json")
	if len(requests) < 20 {
		t.Fatalf("only %d golden requests found", len(requests))
	}
	generated := regexp.MustCompile(`"(credentialsValue|clientId|userName|password)":"(zt-)?[A-Za-z0-9]{16,24}"`)
	for _, reqFile := range requests {
		name := strings.TrimSuffix(filepath.Base(reqFile), ".request.json")
		t.Run(name, func(t *testing.T) {
			payload, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			payload = []byte(strings.ReplaceAll(string(payload), "<certificate>", strings.ReplaceAll(strings.TrimSpace(cert), "\n", `\n`)))
			resp, decoded := h.Provision(context.Background(), "192.0.2.1", payload)
			if !decoded && resp.Status != StatusFailure {
				t.Fatalf("undecodable request answered %s", resp.Status)
			}
			got := string(resp.Encode())
			got = strings.ReplaceAll(got, mustJSON(strings.TrimSpace(cert)+"\n"), `"<certificate>"`)
			got = strings.ReplaceAll(got, mustJSON(strings.TrimSpace(cert)), `"<certificate>"`)
			got = generated.ReplaceAllString(got, `"$1":"<generated>"`)
			var pretty map[string]any
			if err := json.Unmarshal([]byte(got), &pretty); err != nil {
				t.Fatalf("answer is not JSON: %s", got)
			}
			answerFile := strings.TrimSuffix(reqFile, ".request.json") + ".answer.json"
			if *update {
				os.WriteFile(answerFile, []byte(got+"\n"), 0o644)
				return
			}
			want, err := os.ReadFile(answerFile)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != strings.TrimSpace(string(want)) {
				t.Errorf("answer differs from %s\n got: %s\nwant: %s", answerFile, got, want)
			}
		})
	}
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
