package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// t0 is a fixed instant (2023-11-14T22:13:20Z) for the samples of the tests.
const t0 = int64(1_700_000_000_000)

// newCLIDevice starts a CLI test with one device, and returns its id.
func newCLIDevice(t *testing.T) (*cli, string) {
	c := newCLI(t)
	c.ok("profile", "create", "units", "--strategy", "pre-provisioned")
	var d api.CreatedDevice
	c.json(&d, "device", "create", "unit-1", "--profile", "units")
	return c, d.ID
}

// table splits a table on stdout into lines of cells (cells hold no spaces
// in these tests, so spacing does not matter).
func table(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func checkTable(t *testing.T, what, out string, want [][]string) {
	t.Helper()
	got := table(out)
	if len(got) != len(want) {
		t.Fatalf("%s: %d lines, want %d:\n%s", what, len(got), len(want), out)
	}
	for i := range want {
		if strings.Join(got[i], " | ") != strings.Join(want[i], " | ") {
			t.Errorf("%s line %d:\n got %q\nwant %q", what, i, got[i], want[i])
		}
	}
}

func TestTelemetryCommands(t *testing.T) {
	c, id := newCLIDevice(t)
	minute := int64(60_000)
	if err := c.srv.Devices.Ingest(context.Background(), id, []telemetry.Sample{
		{Key: "temp", TS: t0, Value: telemetry.Long(20)},
		{Key: "temp", TS: t0 + minute, Value: telemetry.Double(21)},
		{Key: "temp", TS: t0 + 6*minute, Value: telemetry.Long(25)},
		{Key: "mode", TS: t0, Value: telemetry.String("eco")},
	}); err != nil {
		t.Fatal(err)
	}
	from, to := strconv.FormatInt(t0, 10), strconv.FormatInt(t0+10*minute, 10)

	r := c.ok("telemetry", "latest", id)
	checkTable(t, "latest", r.stdout, [][]string{
		{"KEY", "TIME", "TYPE", "VALUE"},
		{"mode", fmtMillis(t0), "string", "eco"},
		{"temp", fmtMillis(t0 + 6*minute), "long", "25"},
	})
	var latest api.LatestValues
	c.json(&latest, "telemetry", "latest", id, "--keys", "temp")
	if len(latest.Values) != 1 || latest.Values[0].Value != telemetry.Long(25) {
		t.Errorf("latest -o json: %+v", latest)
	}

	r = c.ok("telemetry", "query", id, "--keys", "temp", "--from", from, "--to", to, "--order", "asc")
	checkTable(t, "query", r.stdout, [][]string{
		{"KEY", "TIME", "VALUE"},
		{"temp", fmtMillis(t0), "20"},
		{"temp", fmtMillis(t0 + minute), "21.0"},
		{"temp", fmtMillis(t0 + 6*minute), "25"},
	})
	r = c.ok("telemetry", "query", id, "--from", time.UnixMilli(t0).UTC().Format(time.RFC3339), "--to", to, "--limit", "1")
	checkTable(t, "query every key", r.stdout, [][]string{
		{"KEY", "TIME", "VALUE"},
		{"mode", fmtMillis(t0), "eco"},
		{"temp", fmtMillis(t0 + 6*minute), "25"},
	})
	r = c.ok("telemetry", "query", id, "--keys", "temp", "--from", from, "--to", to, "--agg", "avg", "--interval", "5m")
	checkTable(t, "aggregate", r.stdout, [][]string{
		{"KEY", "TIME", "VALUE", "COUNT"},
		{"temp", fmtMillis(t0), "20.5", "2"},
		{"temp", fmtMillis(t0 + 5*minute), "25.0", "1"},
	})
	var series api.TelemetrySeries
	c.json(&series, "telemetry", "query", id, "--keys", "temp", "--from", from, "--to", to, "--agg", "count", "--interval", "10m")
	if len(series.Series) != 1 || series.Series[0].Aggregation != "count" || len(series.Series[0].Values) != 1 || series.Series[0].Values[0].Count != 3 {
		t.Errorf("aggregate -o json: %+v", series)
	}
	r = c.ok("telemetry", "query", id, "--since", "1h")
	if !strings.Contains(r.stderr, "no values in the time range") {
		t.Errorf("empty range: %+v", r)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"telemetry", "query", id, "--since", "1h", "--from", "2h"}, exitUsage, "not both"},
		{[]string{"telemetry", "query", id, "--agg", "avg"}, exitUsage, "needs --interval"},
		{[]string{"telemetry", "query", id, "--interval", "5m"}, exitUsage, "needs --agg"},
		{[]string{"telemetry", "query", id, "--agg", "median", "--interval", "5m"}, exitUsage, "unknown aggregation"},
		{[]string{"telemetry", "query", id, "--agg", "avg", "--interval", "5m", "--limit", "3"}, exitUsage, "not with --agg"},
		{[]string{"telemetry", "query", id, "--order", "newest"}, exitUsage, "want asc or desc"},
		{[]string{"telemetry", "query", id, "--from", "yesterday"}, exitUsage, "--from"},
		{[]string{"telemetry", "query"}, exitUsage, "accepts 1 arg"},
		{[]string{"telemetry", "lastest", id}, exitUsage, "unknown command"},
		{[]string{"telemetry", "query", id, "--agg", "avg", "--interval", "1ms", "--since", "24h"}, exitFailure, "at most 10000"},
		{[]string{"telemetry", "latest", "6d199857-be94-4317-aef7-62ce9aa9f530"}, exitFailure, "not found"},
	} {
		if r := c.run(registry.RoleViewer, tc.args...); r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit %d mentioning %q", tc.args, r.code, r.stderr, r.stdout, tc.code, tc.want)
		}
	}
}

func TestAttributesCommands(t *testing.T) {
	c, id := newCLIDevice(t)
	devs := c.srv.NewTransport()
	devs.Connect(id)

	r := c.run(registry.RoleOEM, "attributes", "set", id, "--scope", "shared",
		"interval=30", "fw=1.2", "version=\"1.2\"", "name=hall 3", "led=true", "cfg={\"a\":[1]}", "semver=1.2.0")
	if r.code != 0 || r.stdout != "set 7 shared attributes (cfg, fw, interval, led, name, semver, version); sent to 1 live session\n" {
		t.Fatalf("set: %+v", r)
	}
	r = c.ok("attr", "set", id, "--scope", "server", "--strings", "fw=1.2", "--json", `{"rack": 12, "fw": 1}`)
	if r.stdout != "set 2 server attributes (fw, rack)\n" {
		t.Errorf("set --strings --json: %q", r.stdout)
	}

	var got api.Attributes
	c.json(&got, "attributes", "get", id)
	var types []string
	for _, a := range got.Attributes {
		v, _ := a.Value.MarshalJSON()
		types = append(types, string(a.Scope)+" "+a.Key+" "+a.Type+" "+string(v))
	}
	want := []string{
		`shared cfg json {"a":[1]}`,
		`shared fw double 1.2`,
		`shared interval long 30`,
		`shared led boolean true`,
		`shared name string "hall 3"`,
		`shared semver string "1.2.0"`,
		`shared version string "1.2"`,
		`server fw string "1.2"`,
		`server rack long 12`,
	}
	if strings.Join(types, "\n") != strings.Join(want, "\n") {
		t.Errorf("attributes\n got %q\nwant %q", types, want)
	}

	r = c.ok("attributes", "get", id, "--scope", "server")
	rows := table(r.stdout)
	if len(rows) != 3 || strings.Join(rows[0], " ") != "SCOPE KEY TYPE VALUE UPDATED" ||
		strings.Join(rows[1][:4], " ") != "server fw string 1.2" || strings.Join(rows[2][:4], " ") != "server rack long 12" {
		t.Errorf("get --scope server:\n%s", r.stdout)
	}

	r = c.run(registry.RoleOEM, "attributes", "delete", id, "--scope", "shared", "fw", "nope")
	if r.code != 0 || r.stdout != "deleted 1 shared attributes (fw)\n" {
		t.Errorf("delete: %+v", r)
	}
	var del api.AttributesDeleted
	c.json(&del, "attributes", "delete", id, "--scope", "shared", "nope")
	if del.Deleted == nil || len(del.Deleted) != 0 {
		t.Errorf("delete -o json: %+v", del)
	}

	for _, tc := range []struct {
		role string
		args []string
		code int
		want string
	}{
		{registry.RoleOEM, []string{"attributes", "set", id, "a=1"}, exitUsage, "--scope is required"},
		{registry.RoleOEM, []string{"attributes", "set", id, "--scope", "client", "a=1"}, exitUsage, "reported by the device"},
		{registry.RoleOEM, []string{"attributes", "set", id, "--scope", "shared"}, exitUsage, "no attributes"},
		{registry.RoleOEM, []string{"attributes", "set", id, "--scope", "shared", "novalue"}, exitUsage, "KEY=VALUE"},
		{registry.RoleOEM, []string{"attributes", "set", id, "--scope", "shared", "a=null"}, exitUsage, "null is not a value"},
		{registry.RoleOEM, []string{"attributes", "set", id, "--scope", "shared", "--json", "[1]"}, exitUsage, "JSON object"},
		{registry.RoleOEM, []string{"attributes", "delete", id, "--scope", "shared"}, exitUsage, "at least one KEY"},
		{registry.RoleOEM, []string{"attributes", "get", id, "--scope", "public"}, exitUsage, "unknown attribute scope"},
		{registry.RoleViewer, []string{"attributes", "set", id, "--scope", "shared", "a=1"}, exitFailure, "may not"},
	} {
		if r := c.run(tc.role, tc.args...); r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

func TestRPCCommand(t *testing.T) {
	c, id := newCLIDevice(t)
	var off api.CreatedDevice
	c.json(&off, "device", "create", "unit-2", "--profile", "units")
	devs := c.srv.NewTransport()
	devs.Connect(id)
	devs.Answer("getTemp", json.RawMessage(`{"temp":21.5,"unit":"C"}`))

	r := c.run(registry.RoleOperator, "rpc", id, "getTemp", `{"unit": "C"}`, "--timeout", "5s")
	if r.code != 0 || r.stdout != "{\n  \"temp\": 21.5,\n  \"unit\": \"C\"\n}\n" {
		t.Fatalf("rpc: %+v", r)
	}
	if calls := devs.Calls(); len(calls) != 1 || calls[0].Method != "getTemp" || string(calls[0].Params) != `{"unit":"C"}` {
		t.Errorf("calls: %+v", calls)
	}
	// -o json prints the same: the answer is JSON already.
	if r2 := c.run(registry.RoleOperator, "rpc", id, "getTemp", "-o", "json"); r2.stdout != r.stdout {
		t.Errorf("-o json: %q", r2.stdout)
	}

	r = c.run(registry.RoleOperator, "rpc", id, "reboot", "--oneway")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "delivered") {
		t.Errorf("one-way: %+v", r)
	}
	var del api.RPCDelivered
	c.json(&del, "rpc", id, "reboot", "--oneway")
	if !del.Delivered {
		t.Errorf("one-way -o json: %+v", del)
	}

	for _, tc := range []struct {
		role string
		args []string
		code int
		want string
	}{
		{registry.RoleOperator, []string{"rpc", off.ID, "getTemp"}, exitFailure, "zerotouch device state " + off.ID},
		{registry.RoleOperator, []string{"rpc", id, "silent", "--timeout", "100ms"}, exitFailure, "did not answer"},
		{registry.RoleOperator, []string{"rpc", id, "setGpio", "{pin: 4}"}, exitUsage, "not valid JSON"},
		{registry.RoleOperator, []string{"rpc", id}, exitUsage, "accepts between 2 and 3 arg"},
		{registry.RoleOperator, []string{"rpc", id, "getTemp", "--timeout", "soon"}, exitUsage, "--timeout"},
		{registry.RoleOperator, []string{"rpc", id, "getTemp", "--timeout", "11m"}, exitFailure, "timeout"},
		{registry.RoleViewer, []string{"rpc", id, "getTemp"}, exitFailure, "may not"},
	} {
		if r := c.run(tc.role, tc.args...); r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

func TestDeviceStateCommand(t *testing.T) {
	c, id := newCLIDevice(t)
	r := c.ok("device", "state", id)
	if !strings.Contains(r.stdout, "Connected:") || !strings.Contains(r.stdout, "no") || strings.Count(r.stdout, "never") != 3 {
		t.Errorf("never connected:\n%s", r.stdout)
	}
	c.srv.NewTransport().Connect(id)
	r = c.ok("device", "state", id)
	for _, want := range [][]string{{"Connected:", "yes"}, {"Sessions:", "1"}, {"Last", "disconnect:", "never"}, {"Last", "activity:", "never"}} {
		found := false
		for _, row := range table(r.stdout) {
			if strings.Join(row, " ") == strings.Join(want, " ") {
				found = true
			}
		}
		if !found {
			t.Errorf("no line %q in\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "Last connect:") || strings.Count(r.stdout, "never") != 2 {
		t.Errorf("connected:\n%s", r.stdout)
	}
	var st api.DeviceState
	c.json(&st, "device", "state", id)
	if !st.Connected || st.Sessions != 1 || st.LastConnect == nil || st.LastDisconnect != nil {
		t.Errorf("-o json: %+v", st)
	}
}

func TestDeviceCommandsHelp(t *testing.T) {
	for _, args := range [][]string{
		{"telemetry", "--help"}, {"telemetry", "query", "--help"}, {"telemetry", "latest", "--help"},
		{"attributes", "--help"}, {"attributes", "get", "--help"}, {"attributes", "set", "--help"}, {"attributes", "delete", "--help"},
		{"rpc", "--help"}, {"device", "state", "--help"},
	} {
		r := execute(args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
		if len(args) > 2 || args[0] == "rpc" {
			if !strings.Contains(r.stdout, "Examples:") {
				t.Errorf("%v: no examples", args)
			}
		}
	}
}
