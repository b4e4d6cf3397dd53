package main

import (
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Known answers of device key derivation.
const (
	// internal/attest's known answer (Python's hmac, cross-checked with
	// node): registration id sensor-0042 in the group of kaGroupKey.
	kaGroupKey  = "Zm9vYmFyLWdyb3VwLWtleS0wMTIzNDU2Nzg5YWJjZGVm"
	kaDeviceKey = "UkXPdktywHY4Y5MnYhyw8m73FuWa9l0Mst8zzTeK9RY="
	// The group key of the Azure IoT CLI's "az iot dps compute-device-key"
	// test (azext_iot/tests/dps), whose registration id
	// "myarbitrarydeviceId" gives cT/EXZvsplPEpT//p98Pc6sKh8mY3kYgSxavHwMkl7w=.
	// zerotouch lower-cases registration ids, so derives from
	// "myarbitrarydeviceid": azCLIDeviceKeyLower, computed with Python's
	// hmac (base64(HMAC-SHA256(b64decode(key), "myarbitrarydeviceid"))).
	azCLIGroupKey = "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAibym9HQP9vxCGF5dVc1Q" +
		"QsAGe021aUGJzNol1/gycBx3jFsTpwmWbISRwnFvflWd0w2Mc44FAAZNaJOAAxwZvG8GvyLlHh6fGKdh+mSBL4iLH2bZ4Ry22cB3" +
		"CJVjXmdGoz9Y/j3/NwLndBxQC+baNvzvyVQZ4/A2YL7vzIIj2ik4y+ve9ir7U0GbNdnxskqK1KFIITVVtkTIYyyFTIR0BySjPrRI" +
		"Dj7r7Mh5uF9HBppGKQCBoVSVV8dI91lNazmSdpGWyqCkO7iM4VvUMv2HT/ym53aYlUrau+Qq87Tu+uQipWYgRdF11KDfcpMHqqzB" +
		"QQ1NpOJVhrsTrhyJzO7KNw=="
	azCLIDeviceKeyLower = "xHAc0BVnGUveBF+EDbRhg4NuD7a8iVOWiOPeqECeCMk="
)

// writeText is writeFile for text.
func writeText(t *testing.T, dir, name, content string) string {
	t.Helper()
	return writeFile(t, dir, name, []byte(content))
}

func TestIDScopeCommand(t *testing.T) {
	c := newCLI(t)
	r := c.run(registry.RoleViewer, "idscope")
	if r.code != 0 || !regexp.MustCompile(`^0ne[0-9A-F]{8}\n$`).MatchString(r.stdout) {
		t.Fatalf("idscope: %+v", r)
	}
	var s api.IDScope
	c.json(&s, "idscope")
	if s.IDScope+"\n" != r.stdout {
		t.Errorf("json %q, table %q", s.IDScope, r.stdout)
	}
}

func TestEnrollmentCommands(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	leaf := testutil.NewCert(t, "press-0043", nil, testutil.CertOptions{})
	leafFile := writeText(t, dir, "leaf.pem", leaf.PEM())
	desiredFile := writeText(t, dir, "desired.json", `{"interval": 30}`)
	ek := base64.StdEncoding.EncodeToString([]byte("an endorsement key, public part"))

	// The factory enrolls units disabled.
	var e registry.Enrollment
	c.json(&e, "enrollment", "create", "--registration-id", "Press-0042", "--symmetric-key", "--disabled")
	if e.RegistrationID != "press-0042" || e.Status != registry.EnrollmentDisabled || e.Attestation.SymmetricKey == nil {
		t.Fatalf("create: %+v", e)
	}
	if b, err := base64.StdEncoding.DecodeString(e.Attestation.SymmetricKey.PrimaryKey); err != nil || len(b) != 64 {
		t.Errorf("generated key: %d bytes, %v", len(b), err)
	}
	r := c.run(registry.RoleOperator, "enrollment", "create", "--registration-id", "press-0043", "--certificate", leafFile,
		"--device-id", "Press-43", "--iot-hub", "hub-a", "--iot-hub", "hub-b", "--allocation-policy", "hashed",
		"--reprovision-policy", "never", "--tags", `{"line":"A"}`, "--desired", "@"+desiredFile, "--payload", `[1,2]`)
	if r.code != 0 {
		t.Fatalf("create x509: %+v", r)
	}
	for _, want := range []string{"Registration ID:", "press-0043", "Certificate SHA-256:", leaf.Fingerprint(), "hub-a, hub-b", "hashed",
		"never", `{"line":"A"}`, `{"interval":30}`, "[1,2]", "Press-43", "Version:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("create table lacks %q:\n%s", want, r.stdout)
		}
	}
	var tpm registry.Enrollment
	c.json(&tpm, "enrollment", "create", "--registration-id", "press-0044", "--tpm-ek", ek, "--tpm-srk", ek)
	if tpm.Attestation.TPM == nil || tpm.Attestation.TPM.EndorsementKey != ek || tpm.Status != registry.EnrollmentEnabled {
		t.Fatalf("create tpm: %+v", tpm)
	}
	var chosen registry.Enrollment
	key1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	c.json(&chosen, "enrollment", "create", "--registration-id", "press-0045", "--primary-key", "@"+writeText(t, dir, "k1", key1+"\n"))
	if chosen.Attestation.SymmetricKey == nil || chosen.Attestation.SymmetricKey.PrimaryKey != key1 || chosen.Attestation.SymmetricKey.SecondaryKey != "" {
		t.Fatalf("create with a chosen key: %+v", chosen.Attestation)
	}

	t.Run("list", func(t *testing.T) {
		r := c.ok("enrollment", "list")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 5 || !strings.HasPrefix(lines[0], "REGISTRATION ID") || !strings.Contains(lines[1], "press-0042") || !strings.Contains(lines[1], "disabled") {
			t.Errorf("list:\n%s", r.stdout)
		}
		if r := c.ok("enrollment", "list", "--limit", "1"); !strings.Contains(r.stderr, "--after") {
			t.Errorf("no paging hint: %q", r.stderr)
		}
		var l api.List[registry.Enrollment]
		c.json(&l, "enrollment", "list", "--limit", "1", "--all")
		if len(l.Items) != 4 {
			t.Errorf("--all: %d", len(l.Items))
		}
	})

	t.Run("keys by role", func(t *testing.T) {
		for _, role := range []string{registry.RoleViewer, registry.RoleOEM} {
			r := c.run(role, "enrollment", "show", "PRESS-0042")
			if r.code != 0 || strings.Contains(r.stdout, e.Attestation.SymmetricKey.PrimaryKey) || !strings.Contains(r.stdout, "hidden") {
				t.Errorf("%s show: %+v", role, r)
			}
			r = c.run(role, "enrollment", "show", "press-0042", "-o", "json")
			if r.code != 0 || strings.Contains(r.stdout, e.Attestation.SymmetricKey.PrimaryKey) {
				t.Errorf("%s show json: %+v", role, r)
			}
		}
		r := c.run(registry.RoleOperator, "enrollment", "get", "press-0042")
		if r.code != 0 || !strings.Contains(r.stdout, e.Attestation.SymmetricKey.PrimaryKey) || !strings.Contains(r.stdout, "Secondary key:") {
			t.Errorf("operator show: %+v", r)
		}
	})

	t.Run("activation by the oem", func(t *testing.T) {
		r := c.run(registry.RoleOEM, "enrollment", "enable", "press-0042", "--tags", `{"chassis":"C-17"}`, "--desired", "@"+desiredFile,
			"--iot-hub", "hub-a", "--allocation-policy", "static", "-o", "json")
		if r.code != 0 {
			t.Fatalf("enable: %+v", r)
		}
		var got registry.Enrollment
		decode(t, r.stdout, &got)
		if got.Status != registry.EnrollmentEnabled || compactJSONText(got.InitialTwin.Tags) != `{"chassis":"C-17"}` ||
			compactJSONText(got.InitialTwin.DesiredProperties) != `{"interval":30}` || got.AllocationPolicy != registry.AllocationStatic || got.Version != 2 {
			t.Fatalf("enable: %+v", got)
		}
		if r := c.run(registry.RoleOEM, "enrollment", "update", "press-0042", "--device-id", "x"); r.code != exitFailure || !strings.Contains(r.stderr, "needs operator") {
			t.Errorf("oem --device-id: %+v", r)
		}
		if r := c.run(registry.RoleOEM, "enrollment", "update", "press-0042", "--tags", "null", "--if-version", "1"); r.code != exitFailure || !strings.Contains(r.stderr, "409") {
			t.Errorf("stale --if-version: %+v", r)
		}
		r = c.run(registry.RoleOEM, "enrollment", "update", "press-0042", "--tags", "null", "--payload", `{"site":"Lyon"}`, "--if-version", "2", "-o", "json")
		if r.code != 0 {
			t.Fatalf("update: %+v", r)
		}
		got = registry.Enrollment{}
		decode(t, r.stdout, &got)
		if got.InitialTwin.Tags != nil || compactJSONText(got.CustomPayload) != `{"site":"Lyon"}` || got.Version != 3 {
			t.Errorf("update: %+v", got)
		}
		if r := c.run(registry.RoleOEM, "enrollment", "disable", "press-0042"); r.code != 0 || !strings.Contains(r.stdout, "disabled") {
			t.Errorf("disable: %+v", r)
		}
		if r := c.run(registry.RoleViewer, "enrollment", "enable", "press-0042"); r.code != exitFailure || !strings.Contains(r.stderr, "403") {
			t.Errorf("viewer enable: %+v", r)
		}
	})

	t.Run("operator update", func(t *testing.T) {
		var got registry.Enrollment
		c.json(&got, "enrollment", "update", "press-0042", "--symmetric-key", "--reprovision-policy", "reprovision-and-reset", "--device-id", "press-42")
		if got.Attestation.SymmetricKey == nil || got.Attestation.SymmetricKey.PrimaryKey == e.Attestation.SymmetricKey.PrimaryKey ||
			got.ReprovisionPolicy != registry.EnrollmentReprovisionReset || got.DeviceID != "press-42" {
			t.Errorf("update: %+v", got)
		}
		if r := c.run(registry.RoleOperator, "enrollment", "update", "press-0042", "--status", "asleep"); r.code != exitFailure || !strings.Contains(r.stderr, "unknown enrollment status") {
			t.Errorf("bad status: %+v", r)
		}
	})

	t.Run("delete", func(t *testing.T) {
		r := c.ok("enrollment", "delete", "press-0044")
		if !strings.Contains(r.stderr, "deleted enrollment press-0044") || r.stdout != "" {
			t.Errorf("delete: %+v", r)
		}
		if r := c.run(registry.RoleAdmin, "enrollment", "show", "press-0044"); r.code != exitFailure || !strings.Contains(r.stderr, "not found") {
			t.Errorf("show deleted: %+v", r)
		}
	})

	if r := c.ok("audit", "list", "--action", "enrollment.enable"); !strings.Contains(r.stdout, "enrollment.enable") || !strings.Contains(r.stdout, "press-0042") {
		t.Errorf("audit:\n%s", r.stdout)
	}
}

func TestEnrollmentGroupCommands(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	ca := testutil.NewCert(t, "Maker CA", nil, testutil.CertOptions{CA: true})
	caFile := writeText(t, dir, "ca.pem", ca.PEM())

	var g registry.EnrollmentGroup
	c.json(&g, "enrollment", "group", "create", "Line-A", "--primary-key", kaGroupKey, "--disabled", "--desired", `{"fw":"2.1"}`)
	if g.ID != "line-a" || g.Status != registry.EnrollmentDisabled || g.Attestation.SymmetricKey.PrimaryKey != kaGroupKey {
		t.Fatalf("create: %+v", g)
	}
	var gen registry.EnrollmentGroup
	c.json(&gen, "enrollment", "group", "create", "line-b", "--symmetric-key")
	if gen.Attestation.SymmetricKey == nil || gen.Attestation.SymmetricKey.PrimaryKey == "" || gen.Attestation.SymmetricKey.SecondaryKey == "" {
		t.Fatalf("create with generated keys: %+v", gen)
	}
	r := c.ok("enrollment", "group", "create", "maker-ca", "--ca-certificate", caFile)
	if !strings.Contains(r.stdout, "CN=Maker CA") || !strings.Contains(r.stdout, "x509") {
		t.Errorf("create x509:\n%s", r.stdout)
	}

	t.Run("derive-key via the server", func(t *testing.T) {
		var k api.DerivedDeviceKey
		c.json(&k, "enrollment", "group", "derive-key", "LINE-A", "--registration-id", "Sensor-0042")
		if k.RegistrationID != "sensor-0042" || k.DeviceKey != kaDeviceKey {
			t.Fatalf("got %+v, want %s", k, kaDeviceKey)
		}
		r := c.run(registry.RoleOperator, "enrollment", "group", "derive-key", "line-a", "--registration-id", "sensor-0042")
		if r.code != 0 || !strings.Contains(r.stdout, "Device key:") || !strings.Contains(r.stdout, kaDeviceKey) {
			t.Errorf("table: %+v", r)
		}
		if r := c.run(registry.RoleOEM, "enrollment", "group", "derive-key", "line-a", "--registration-id", "sensor-0042"); r.code != exitFailure || !strings.Contains(r.stderr, "403") {
			t.Errorf("oem: %+v", r)
		}
		if r := c.run(registry.RoleOperator, "enrollment", "group", "derive-key", "maker-ca", "--registration-id", "sensor-0042"); r.code != exitFailure || !strings.Contains(r.stderr, "not a symmetric key") {
			t.Errorf("x509 group: %+v", r)
		}
	})

	t.Run("derive-key offline", func(t *testing.T) {
		// No server: --server points nowhere and no API key is given.
		var k api.DerivedDeviceKey
		r := execute("--server", "http://127.0.0.1:1", "enrollment", "derive-key", "--group-key", kaGroupKey, "--registration-id", "sensor-0042", "-o", "json")
		if r.code != 0 {
			t.Fatalf("offline: %+v", r)
		}
		decode(t, r.stdout, &k)
		if k.DeviceKey != kaDeviceKey || k.RegistrationID != "sensor-0042" || r.stderr != "" {
			t.Errorf("offline: %+v, stderr %q", k, r.stderr)
		}
		keyFile := writeText(t, dir, "group.key", azCLIGroupKey+"\n")
		r = execute("enrollment", "derive-key", "--group-key", "@"+keyFile, "--registration-id", "myarbitrarydeviceId")
		if r.code != 0 || !strings.Contains(r.stdout, azCLIDeviceKeyLower) || !strings.Contains(r.stdout, "myarbitrarydeviceid") ||
			!strings.Contains(r.stderr, "case-insensitive") {
			t.Errorf("Azure CLI group key: %+v", r)
		}
		// The server and the offline command agree.
		var srv api.DerivedDeviceKey
		c.json(&srv, "enrollment", "group", "derive-key", "line-b", "--registration-id", "Unit-9")
		r = execute("enrollment", "derive-key", "--group-key", gen.Attestation.SymmetricKey.PrimaryKey, "--registration-id", "Unit-9", "-o", "json")
		decode(t, r.stdout, &k)
		if k.DeviceKey != srv.DeviceKey || k.RegistrationID != srv.RegistrationID {
			t.Errorf("offline %+v, server %+v", k, srv)
		}
	})

	t.Run("list, show, update, enable, disable, delete", func(t *testing.T) {
		r := c.ok("enrollment", "group", "list")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "GROUP ID") || !strings.Contains(lines[1], "line-a") {
			t.Errorf("list:\n%s", r.stdout)
		}
		if r := c.run(registry.RoleViewer, "enrollment", "group", "show", "line-a"); r.code != 0 || strings.Contains(r.stdout, kaGroupKey) || !strings.Contains(r.stdout, "hidden") {
			t.Errorf("viewer show: %+v", r)
		}
		var got registry.EnrollmentGroup
		r = c.run(registry.RoleOEM, "enrollment", "group", "enable", "line-a", "--iot-hub", "hub-a", "-o", "json")
		if r.code != 0 {
			t.Fatalf("enable: %+v", r)
		}
		decode(t, r.stdout, &got)
		if got.Status != registry.EnrollmentEnabled || len(got.IoTHubs) != 1 || compactJSONText(got.InitialTwin.DesiredProperties) != `{"fw":"2.1"}` {
			t.Errorf("enable: %+v", got)
		}
		if r := c.run(registry.RoleOEM, "enrollment", "group", "update", "line-a", "--ca-certificate", caFile); r.code != exitFailure || !strings.Contains(r.stderr, "needs operator") {
			t.Errorf("oem attestation: %+v", r)
		}
		got = registry.EnrollmentGroup{}
		c.json(&got, "enrollment", "group", "update", "line-a", "--iot-hub", "", "--status", "disabled")
		if got.IoTHubs != nil || got.Status != registry.EnrollmentDisabled {
			t.Errorf("update: %+v", got)
		}
		c.ok("enrollment", "group", "disable", "line-b")
		c.ok("enrollment", "group", "delete", "LINE-B")
		if r := c.run(registry.RoleAdmin, "enrollment", "group", "show", "line-b"); r.code != exitFailure {
			t.Errorf("show deleted: %+v", r)
		}
	})
}

func TestEnrollmentCommandFailures(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	key := []string{"--server", c.srv.URL, "--api-key", c.srv.Keys[registry.RoleOperator]}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no registration id", []string{"enrollment", "create", "--symmetric-key"}, exitUsage, "--registration-id is required"},
		{"no attestation", []string{"enrollment", "create", "--registration-id", "x"}, exitUsage, "give the attestation"},
		{"two attestations", []string{"enrollment", "create", "--registration-id", "x", "--symmetric-key", "--tpm-ek", "AA=="}, exitUsage, "choose one attestation"},
		{"srk without ek", []string{"enrollment", "create", "--registration-id", "x", "--tpm-srk", "AA=="}, exitUsage, "--tpm-srk needs --tpm-ek"},
		{"secondary without primary", []string{"enrollment", "create", "--registration-id", "x", "--secondary-key", "AA=="}, exitUsage, "--secondary-key needs --primary-key"},
		{"tags not JSON", []string{"enrollment", "create", "--registration-id", "x", "--symmetric-key", "--tags", "{line:A}"}, exitUsage, "--tags: not valid JSON"},
		{"tags not an object", []string{"enrollment", "create", "--registration-id", "x", "--symmetric-key", "--tags", "[1]"}, exitUsage, "want a JSON object"},
		{"null on create", []string{"enrollment", "create", "--registration-id", "x", "--symmetric-key", "--desired", "null"}, exitUsage, "null is not allowed"},
		{"missing certificate", []string{"enrollment", "create", "--registration-id", "x", "--certificate", filepath.Join(dir, "none.pem")}, exitFailure, "none.pem"},
		{"missing JSON file", []string{"enrollment", "create", "--registration-id", "x", "--symmetric-key", "--tags", "@" + filepath.Join(dir, "none.json")}, exitFailure, "none.json"},
		{"server refuses", []string{"enrollment", "create", "--registration-id", "bad id", "--symmetric-key"}, exitFailure, "registration id may hold only"},
		{"taken", []string{"enrollment", "create", "--registration-id", "taken", "--symmetric-key"}, exitFailure, "already exists"},
		{"nothing to update", []string{"enrollment", "update", "x"}, exitUsage, "nothing to change"},
		{"group without attestation", []string{"enrollment", "group", "create", "g"}, exitUsage, "--symmetric-key or --ca-certificate"},
		{"group with certificate", []string{"enrollment", "group", "create", "g", "--certificate", "x.pem"}, exitUsage, "unknown flag"},
		{"group derive without id", []string{"enrollment", "group", "derive-key", "g"}, exitUsage, "--registration-id is required"},
		{"offline without key", []string{"enrollment", "derive-key", "--registration-id", "x"}, exitUsage, "--group-key and --registration-id are required"},
		{"offline bad key", []string{"enrollment", "derive-key", "--group-key", "not base64!", "--registration-id", "x"}, exitUsage, "not a base64 key"},
		{"offline bad id", []string{"enrollment", "derive-key", "--group-key", "AA==", "--registration-id", "a b"}, exitUsage, "--registration-id"},
		{"unknown subcommand", []string{"enrollment", "frobnicate"}, exitUsage, "unknown command"},
		{"missing argument", []string{"enrollment", "show"}, exitUsage, "accepts 1 arg"},
	}
	c.ok("enrollment", "create", "--registration-id", "taken", "--symmetric-key")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := execute(append(key, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q lacks %q", r.code, tc.code, r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout on failure: %q", r.stdout)
			}
		})
	}

	t.Run("help everywhere", func(t *testing.T) {
		for _, args := range [][]string{
			{"enrollment"}, {"enrollment", "--help"}, {"enrollment", "create", "--help"}, {"enrollment", "enable", "-h"},
			{"enrollment", "derive-key", "--help"}, {"enrollment", "group"}, {"enrollment", "group", "create", "--help"},
			{"enrollment", "group", "derive-key", "--help"}, {"enrollment", "group", "update", "--help"}, {"idscope", "--help"},
		} {
			r := execute(args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
				t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
			}
		}
	})
}

// decode decodes JSON output.
func decode(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decoding %q: %v", out, err)
	}
}
