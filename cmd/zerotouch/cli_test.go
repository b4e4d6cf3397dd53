package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/api/apitest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// cli runs the zerotouch command in-process against one API server.
type cli struct {
	t   *testing.T
	srv *apitest.Server
}

// result is what a command printed and the exit code main would use.
type result struct {
	stdout, stderr string
	code           int
}

func newCLI(t *testing.T) *cli {
	// The key and server come from flags; the environment must not interfere.
	t.Setenv("ZEROTOUCH_API_KEY", "")
	t.Setenv("ZEROTOUCH_SERVER", "")
	return &cli{t: t, srv: apitest.New(t)}
}

// run executes zerotouch with args as the given role.
func (c *cli) run(role string, args ...string) result {
	c.t.Helper()
	return execute(append([]string{"--server", c.srv.URL, "--api-key", c.srv.Keys[role]}, args...)...)
}

func execute(args ...string) result {
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		errb.WriteString("zerotouch: " + err.Error() + "\n") // as main prints it
		code = exitFailure
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return result{out.String(), errb.String(), code}
}

// ok runs a command that must succeed.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(registry.RoleAdmin, args...)
	if r.code != 0 {
		c.t.Fatalf("zerotouch %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// json runs a command with -o json and decodes its output.
func (c *cli) json(v any, args ...string) {
	c.t.Helper()
	r := c.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		c.t.Fatalf("zerotouch %s: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

func TestProfileCommands(t *testing.T) {
	c := newCLI(t)
	var p api.ProfileWithSecret
	c.json(&p, "profile", "create", "sensors", "--strategy", "allow-create")
	if p.ProvisionKey == "" || p.ProvisionDeviceSecret == "" || p.Strategy != registry.StrategyAllowCreate || p.DefaultCredentialType != registry.CredentialAccessToken {
		t.Fatalf("got %+v", p)
	}

	r := c.ok("profile", "create", "tb", "--strategy", "pre-provisioned", "--credentials-type", "MQTT_BASIC", "--reprovision", "rotate", "--key", "my-key", "--secret", "my-secret")
	for _, want := range []string{"Provision key:", "my-key", "Provision secret:", "my-secret", "MQTT_BASIC", "rotate"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "shown only this once") {
		t.Errorf("no warning on stderr: %q", r.stderr)
	}

	r = c.ok("profile", "list")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[2], "tb") {
		t.Errorf("list:\n%s", r.stdout)
	}
	r = c.ok("profile", "list", "--limit", "1")
	if !strings.Contains(r.stderr, "--after") {
		t.Errorf("no paging hint: %q", r.stderr)
	}
	var l api.List[registry.Profile]
	c.json(&l, "profile", "list", "--limit", "1", "--all")
	if len(l.Items) != 2 {
		t.Errorf("--all: %+v", l)
	}

	var got registry.Profile
	c.json(&got, "profile", "update", p.ID, "--description", "hall 3", "--reprovision", "rotate")
	if got.Description != "hall 3" || got.ReprovisionPolicy != registry.ReprovisionRotate || got.Strategy != registry.StrategyAllowCreate {
		t.Errorf("update: %+v", got)
	}
	c.json(&got, "profile", "get", p.ID)
	if got.Description != "hall 3" {
		t.Errorf("get: %+v", got)
	}
	var rot api.ProfileWithSecret
	c.json(&rot, "profile", "rotate-secret", p.ID)
	if rot.ProvisionDeviceSecret == "" || rot.ProvisionDeviceSecret == p.ProvisionDeviceSecret {
		t.Errorf("rotate: %+v", rot)
	}
	c.ok("profile", "delete", p.ID)
	if r := c.run(registry.RoleAdmin, "profile", "get", p.ID); r.code != exitFailure || !strings.Contains(r.stderr, "not found") {
		t.Errorf("get deleted: %+v", r)
	}
}

func TestDeviceCommands(t *testing.T) {
	c := newCLI(t)
	var p api.ProfileWithSecret
	c.json(&p, "profile", "create", "units", "--strategy", "pre-provisioned")

	var d api.CreatedDevice
	c.json(&d, "device", "create", "unit-1", "--profile", "units", "--attr", "mac=00:01", "--attr", "location=hall 3")
	if d.ProfileID != p.ID || d.Attributes["location"] != "hall 3" || d.Credentials != nil {
		t.Fatalf("create: %+v", d)
	}
	var d2 api.CreatedDevice
	c.json(&d2, "device", "create", "unit-2", "--profile", p.ID, "--disabled", "--credentials-type", "ACCESS_TOKEN")
	if d2.Status != registry.DeviceDisabled || d2.Credentials == nil || d2.Credentials.Token == "" {
		t.Fatalf("create with credentials: %+v", d2)
	}

	r := c.ok("device", "get", d.ID)
	if !strings.Contains(r.stdout, "Attribute location:") || !strings.Contains(r.stdout, "unit-1") {
		t.Errorf("get:\n%s", r.stdout)
	}
	var l api.List[registry.Device]
	c.json(&l, "device", "list", "--profile", "units", "--status", "disabled")
	if len(l.Items) != 1 || l.Items[0].Name != "unit-2" {
		t.Errorf("list disabled: %+v", l.Items)
	}
	c.json(&l, "device", "list", "--provisioned=false", "--prefix", "unit-", "--limit", "1", "--all")
	if len(l.Items) != 2 {
		t.Errorf("list --all: %+v", l.Items)
	}
	c.json(&l, "device", "list", "--provisioned")
	if len(l.Items) != 0 {
		t.Errorf("list --provisioned: %+v", l.Items)
	}

	var dd registry.Device
	c.json(&dd, "device", "enable", d2.ID)
	if dd.Status != registry.DeviceEnabled {
		t.Errorf("enable: %+v", dd)
	}
	if r := c.run(registry.RoleOEM, "device", "disable", d2.ID); r.code != 0 || !strings.Contains(r.stdout, "disabled") {
		t.Errorf("oem disable: %+v", r)
	}

	r = c.ok("device", "credentials", d2.ID)
	if !strings.Contains(r.stdout, "ACCESS_TOKEN") || !strings.Contains(r.stdout, "active") || strings.Contains(r.stdout, d2.Credentials.Token) {
		t.Errorf("credentials:\n%s", r.stdout)
	}
	var cr registry.Credential
	c.json(&cr, "credential", "revoke", d2.Credentials.ID)
	if cr.Status != registry.CredentialRevoked {
		t.Errorf("revoke: %+v", cr)
	}

	c.ok("device", "delete", d.ID)
	if r := c.run(registry.RoleAdmin, "device", "get", d.ID); r.code != exitFailure {
		t.Errorf("get deleted: %+v", r)
	}

	r = c.ok("audit", "list", "--action", "device.disable", "--since", "1h")
	if !strings.Contains(r.stdout, "device.disable") || !strings.Contains(r.stdout, "api-key:") {
		t.Errorf("audit:\n%s", r.stdout)
	}
	var ev api.List[registry.AuditEvent]
	c.json(&ev, "audit", "list", "--device", d2.ID, "--limit", "2")
	if len(ev.Items) != 2 || ev.Next == "" {
		t.Errorf("audit paging: %+v", ev)
	}
	c.json(&ev, "audit", "list", "--device", d2.ID, "--before", ev.Next)
	if len(ev.Items) == 0 {
		t.Error("audit --before: nothing")
	}
}

func TestDeviceImport(t *testing.T) {
	c := newCLI(t)
	c.ok("profile", "create", "units", "--strategy", "pre-provisioned")
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	bad := write("bad.csv", "name,mac\nunit-1,a\nunit-2\nunit-1,c\nunit-4,d\n")

	r := c.run(registry.RoleOperator, "device", "import", bad, "--profile", "units")
	if r.code != exitFailure || !strings.Contains(r.stderr, "line 3:") || !strings.Contains(r.stderr, "line 4:") || !strings.Contains(r.stderr, "nothing was imported") {
		t.Fatalf("refused import: %+v", r)
	}
	var l api.List[registry.Device]
	c.json(&l, "device", "list")
	if len(l.Items) != 0 {
		t.Fatalf("a refused import wrote %d devices", len(l.Items))
	}

	r = c.run(registry.RoleOperator, "device", "import", bad, "--profile", "units", "--skip-invalid")
	if r.code != 0 || !strings.Contains(r.stdout, "created 2 devices, skipped 2 invalid rows") || !strings.Contains(r.stdout, "LINE") {
		t.Fatalf("skip-invalid: %+v", r)
	}
	// stderr is not a terminal here: one summary line, no progress redraws.
	if !strings.Contains(r.stderr, "sent 43 B of 43 B") || strings.Contains(r.stderr, "\r") {
		t.Errorf("summary: %q", r.stderr)
	}

	var res api.ImportResult
	c.json(&res, "device", "import", write("ok.csv", "name,token\nunit-9,token-of-unit-9\n"), "--profile", "units")
	if res.Created != 1 {
		t.Errorf("json: %+v", res)
	}

	for _, args := range [][]string{
		{"device", "import", bad},                                    // no --profile
		{"device", "import", "--profile", "units"},                   // no file
		{"device", "import", bad, "--profile", "units", "--skip-it"}, // unknown flag
	} {
		if r := c.run(registry.RoleOperator, args...); r.code != exitUsage {
			t.Errorf("%v: exit %d: %s", args, r.code, r.stderr)
		}
	}
	if r := c.run(registry.RoleOperator, "device", "import", filepath.Join(dir, "missing.csv"), "--profile", "units"); r.code != exitFailure {
		t.Errorf("missing file: %+v", r)
	}
	if r := c.run(registry.RoleViewer, "device", "import", bad, "--profile", "units"); r.code != exitFailure || !strings.Contains(r.stderr, "403") {
		t.Errorf("viewer import: %+v", r)
	}
}

func TestAPIKeyCommands(t *testing.T) {
	c := newCLI(t)
	var k api.CreatedAPIKey
	c.json(&k, "apikey", "create", "ci", "--role", "viewer")
	if k.Key == "" || k.Role != registry.RoleViewer {
		t.Fatalf("create: %+v", k)
	}
	r := execute("--server", c.srv.URL, "--api-key", k.Key, "profile", "list")
	if r.code != 0 {
		t.Fatalf("new key: %+v", r)
	}
	if r := c.ok("apikey", "list"); !strings.Contains(r.stdout, "ci") || strings.Contains(r.stdout, k.Key) {
		t.Errorf("list:\n%s", r.stdout)
	}
	c.ok("apikey", "delete", k.ID)
	if r := execute("--server", c.srv.URL, "--api-key", k.Key, "profile", "list"); r.code != exitFailure || !strings.Contains(r.stderr, "401") {
		t.Errorf("deleted key: %+v", r)
	}
}

func TestCLIFailures(t *testing.T) {
	c := newCLI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()

	cases := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"no API key", []string{"--server", c.srv.URL, "profile", "list"}, exitUsage, "set --api-key or ZEROTOUCH_API_KEY"},
		{"server down", []string{"--server", down, "--api-key", "k", "profile", "list"}, exitFailure, "is `zerotouch serve` running at " + down},
		{"bad server URL", []string{"--server", "localhost:8080", "--api-key", "k", "profile", "list"}, exitUsage, "want http://"},
		{"bad output", []string{"--server", c.srv.URL, "--api-key", "k", "-o", "yaml", "profile", "list"}, exitUsage, "unknown output format"},
		{"missing argument", []string{"--server", c.srv.URL, "--api-key", "k", "profile", "get"}, exitUsage, "accepts 1 arg"},
		{"extra argument", []string{"--server", c.srv.URL, "--api-key", "k", "device", "list", "x"}, exitUsage, "accepts 0 arg"},
		{"unknown flag", []string{"profile", "list", "--colour"}, exitUsage, "unknown flag"},
		{"unknown subcommand", []string{"profile", "frobnicate"}, exitUsage, "unknown command"},
		{"no strategy", []string{"--server", c.srv.URL, "--api-key", "k", "profile", "create", "x"}, exitUsage, "--strategy is required"},
		{"bad --since", []string{"--server", c.srv.URL, "--api-key", c.srv.Keys[registry.RoleAdmin], "audit", "list", "--since", "yesterday"}, exitUsage, "--since"},
		{"bad --attr", []string{"--server", c.srv.URL, "--api-key", "k", "device", "create", "x", "--profile", "p", "--attr", "novalue"}, exitUsage, "KEY=VALUE"},
		{"nothing to update", []string{"--server", c.srv.URL, "--api-key", "k", "profile", "update", "x"}, exitUsage, "nothing to change"},
		{"wrong key", []string{"--server", c.srv.URL, "--api-key", "wrong", "profile", "list"}, exitFailure, "unknown API key"},
		{"server refuses", []string{"--server", c.srv.URL, "--api-key", c.srv.Keys[registry.RoleAdmin], "profile", "create", "x", "--strategy", "sometimes"}, exitFailure, "unknown strategy"},
		{"viewer writes", []string{"--server", c.srv.URL, "--api-key", c.srv.Keys[registry.RoleViewer], "profile", "create", "x", "--strategy", "disabled"}, exitFailure, "may not"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := execute(tc.args...)
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
			{"--help"}, {"profile"}, {"profile", "create", "--help"}, {"device", "import", "--help"},
			{"device", "list", "-h"}, {"audit", "list", "--help"}, {"apikey", "--help"}, {"credential", "revoke", "--help"},
		} {
			r := execute(args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
				t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
			}
		}
	})
}
