package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the answers")

// TestGolden pins representative answers byte for byte, after ids, times
// and secrets are replaced by placeholders. Run with -update to accept changes.
func TestGolden(t *testing.T) {
	e := newEnv(t)
	var p ProfileWithSecret
	profile := e.must(http.StatusCreated, "POST", "/api/profiles", CreateProfileRequest{
		Name: "sensors", Description: "hall 3", Strategy: registry.StrategyPreProvisioned,
		DefaultCredentialsType: registry.CredentialMQTTBasic, ReprovisionPolicy: registry.ReprovisionRotate,
	}, &p)
	var d CreatedDevice
	device := e.must(http.StatusCreated, "POST", "/api/devices", CreateDeviceRequest{
		Name: "sensor-001", ProfileName: "sensors", Attributes: map[string]any{"mac": "00:1b:63:84:45:e6"},
		Credentials: &CredentialsInput{},
	}, &d)
	cases := []struct {
		name string
		r    resp
	}{
		{"profile-create", profile},
		{"profile-get", e.must(http.StatusOK, "GET", "/api/profiles/"+p.ID, nil, nil)},
		{"device-create", device},
		{"device-list", e.must(http.StatusOK, "GET", "/api/devices?limit=1", nil, nil)},
		{"credentials-list", e.must(http.StatusOK, "GET", "/api/devices/"+d.ID+"/credentials", nil, nil)},
		{"import-refused", e.do(registry.RoleOperator, "POST", "/api/devices/import?profileName=sensors",
			csvBody("name,mac\nsensor-001,a\nsensor-002\nsensor-003,c\n"))},
		{"import-skipped", e.do(registry.RoleOperator, "POST", "/api/devices/import?profileName=sensors&skipInvalid=true",
			csvBody("name,mac\nsensor-001,a\nsensor-002\nsensor-003,c\n"))},
		{"audit-list", e.must(http.StatusOK, "GET", "/api/audit?limit=2", nil, nil)},
		{"apikey-create", e.must(http.StatusCreated, "POST", "/api/apikeys", CreateAPIKeyRequest{Name: "ci", Role: registry.RoleOperator}, nil)},
		{"error-unauthorized", e.do("", "GET", "/api/devices", nil)},
		{"error-forbidden", e.do(registry.RoleViewer, "POST", "/api/profiles", `{}`)},
		{"error-not-found", e.do(registry.RoleViewer, "GET", "/api/devices/"+missingID, nil)},
		{"error-unknown-field", e.do(registry.RoleOperator, "POST", "/api/profiles", `{"name":"x","strategy":"allow-create","colour":1}`)},
		{"error-invalid", e.do(registry.RoleOperator, "POST", "/api/profiles", `{"name":"x","strategy":"sometimes"}`)},
		{"error-conflict", e.do(registry.RoleOperator, "POST", "/api/devices", `{"name":"sensor-001","profileName":"sensors"}`)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkGolden(t, c.name, c.r) })
	}
}

// checkGolden compares an answer, normalised, with testdata/name.golden,
// or with -update writes it there.
func checkGolden(t *testing.T, name string, r resp) {
	t.Helper()
	got := normalise(t, r)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("answer differs from %s (go test -update accepts it)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// volatile are the fields whose values change from run to run.
var volatile = regexp.MustCompile(`^(id|profileId|deviceId|createdAt|updatedAt|provisionedAt|revokedAt|time|seq|provisionDeviceKey|provisionDeviceSecret|token|key|password|clientId|userName|next|source|version|lastConnect|lastDisconnect|lastActivity)$`)

var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// normalise renders the status and the JSON body with volatile values
// replaced by <field> placeholders and UUIDs inside text by <uuid>.
func normalise(t *testing.T, r resp) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if volatile.MatchString(k) && c != nil && c != "" {
					v[k] = "<" + k + ">"
				} else {
					v[k] = walk(c)
				}
			}
		case []any:
			for i, c := range v {
				v[i] = walk(c)
			}
		}
		return v
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(walk(v)); err != nil {
		t.Fatal(err)
	}
	b := uuidPattern.ReplaceAll(buf.Bytes(), []byte("<uuid>"))
	return append([]byte(http.StatusText(r.status)+"\n"), b...)
}
