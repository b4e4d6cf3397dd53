package main

import (
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
)

func TestHubCommands(t *testing.T) {
	c := newCLI(t)

	var h registry.Hub
	c.json(&h, "hub", "add", "Hub-EU.example.com:8883", "--region", "eu-west")
	if h.Name != "Hub-EU.example.com:8883" || h.Weight != 1 || !h.Enabled || h.Region != "eu-west" || h.Version != 1 {
		t.Fatalf("add: %+v", h)
	}
	r := c.ok("hub", "add", "hub-us.example.com", "--weight", "0", "--disabled")
	for _, want := range []string{"Name:", "hub-us.example.com", "Weight:", "0", "disabled", "Version:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("add output lacks %q:\n%s", want, r.stdout)
		}
	}

	r = c.run(registry.RoleViewer, "hub", "list")
	if r.code != 0 {
		t.Fatalf("list: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "Hub-EU.example.com:8883") ||
		!strings.Contains(lines[2], "disabled") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	var l api.List[api.HubInfo]
	c.json(&l, "hub", "list")
	if len(l.Items) != 2 {
		t.Fatalf("list -o json: %+v", l)
	}

	var got api.HubInfo
	c.json(&got, "hub", "show", "hub-eu.EXAMPLE.com:8883")
	if got.Name != "Hub-EU.example.com:8883" || got.Builtin {
		t.Errorf("show: %+v", got)
	}

	c.json(&h, "hub", "update", "hub-us.example.com", "--enable", "--weight", "4", "--region", "us-east")
	if !h.Enabled || h.Weight != 4 || h.Region != "us-east" || h.Version != 2 {
		t.Fatalf("update: %+v", h)
	}
	h = registry.Hub{}
	c.json(&h, "hub", "update", "hub-us.example.com", "--disable", "--region", "")
	if h.Enabled || h.Region != "" || h.Version != 3 {
		t.Fatalf("update: %+v", h)
	}
	if r := c.run(registry.RoleAdmin, "hub", "update", "hub-us.example.com", "--weight", "1", "--if-version", "2"); r.code != exitFailure ||
		!strings.Contains(r.stderr, "version") {
		t.Errorf("stale update: %+v", r)
	}

	// Usage errors and refusals.
	for _, args := range [][]string{
		{"hub", "update", "hub-us.example.com"},
		{"hub", "update", "hub-us.example.com", "--enable", "--disable"},
		{"hub", "add"},
		{"hub", "show"},
		{"hub", "frobnicate"},
	} {
		if r := c.run(registry.RoleAdmin, args...); r.code != exitUsage {
			t.Errorf("zerotouch %s: exit %d, want %d (%s)", strings.Join(args, " "), r.code, exitUsage, r.stderr)
		}
	}
	for _, tc := range []struct {
		role string
		args []string
		want string
	}{
		{registry.RoleAdmin, []string{"hub", "add", "hub eu"}, "host name"},
		{registry.RoleAdmin, []string{"hub", "add", "HUB-EU.example.com:8883"}, "conflict"},
		{registry.RoleAdmin, []string{"hub", "add", "x.example.com", "--weight", "-1"}, "weight"},
		{registry.RoleViewer, []string{"hub", "add", "x.example.com"}, "operator"},
		{registry.RoleAdmin, []string{"hub", "show", "nope.example.com"}, "not found"},
	} {
		r := c.run(tc.role, tc.args...)
		if r.code != exitFailure || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("zerotouch %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, exitFailure, tc.want)
		}
	}

	r = c.ok("hub", "remove", "HUB-US.example.com")
	if !strings.Contains(r.stderr, "deleted hub HUB-US.example.com") {
		t.Errorf("remove: %+v", r)
	}
	c.json(&l, "hub", "list")
	if len(l.Items) != 1 || l.Items[0].Name != "Hub-EU.example.com:8883" {
		t.Fatalf("after remove: %+v", l.Items)
	}
}
