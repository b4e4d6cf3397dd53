package api

import (
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

func TestParseImportCSVLines(t *testing.T) {
	var rows []importRow
	err := parseImportCSV(strings.NewReader("name,note\n\na,\"two\nlines\"\nb,x\n\"c\",y,z\n"), func(r importRow) { rows = append(rows, r) })
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line int
		name string
		bad  bool
	}{{3, "a", false}, {5, "b", false}, {6, "", true}}
	if len(rows) != len(want) {
		t.Fatalf("%d rows: %+v", len(rows), rows)
	}
	for i, w := range want {
		if rows[i].line != w.line || rows[i].name != w.name || (rows[i].err != nil) != w.bad {
			t.Errorf("row %d: %+v, want %+v", i, rows[i], w)
		}
	}
	if rows[0].attrs["note"] != "two\nlines" {
		t.Errorf("attrs %v", rows[0].attrs)
	}
}

// FuzzImportCSV feeds arbitrary bytes to the import parser and planner:
// they must never panic, and every row must come out, in line order,
// either planned as a valid device or reported.
func FuzzImportCSV(f *testing.F) {
	for _, seed := range []string{
		"name\nunit-1\n",
		"name,mac,location\nunit-1,00:01,hall\nunit-2,00:02\n",
		"\ufeffName,credentialsType,token,clientId,username,password,certificate\r\nu,ACCESS_TOKEN,tok-12345,,,,\r\nv,,,c,u,p,\r\n",
		"name,certificate\nx,-----BEGIN CERTIFICATE-----\nMIIB\n",
		"name,\"quoted\nheader\"\n\"a\"\"b\",\"c\"\n",
		"name\n\"unterminated\n",
		"name,a,a\n",
		"a,b\n1,2\n",
		"",
		"name\n\xff\xfe\n",
		"name,x\n,\n,\n",
	} {
		f.Add([]byte(seed))
	}
	p := &registry.Profile{ID: "p", OrgID: registry.DefaultOrgID, DefaultCredentialType: registry.CredentialAccessToken}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		plan := newImportPlan(p, now)
		rows, last := 0, 1
		err := parseImportCSV(strings.NewReader(string(data)), func(r importRow) {
			if r.line <= last {
				t.Fatalf("line %d after %d", r.line, last)
			}
			rows, last = rows+1, r.line
			plan.add(r)
		})
		if err != nil {
			return
		}
		if len(plan.ok)+len(plan.bad) != rows {
			t.Fatalf("%d rows, %d planned, %d reported", rows, len(plan.ok), len(plan.bad))
		}
		for _, pd := range plan.ok {
			if err := pd.nd.Device.Validate(); err != nil {
				t.Fatalf("planned an invalid device: %v", err)
			}
		}
	})
}
