package allocate

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
)

func TestParseRegionRule(t *testing.T) {
	tests := []struct {
		line    string
		want    string // String() of the rule; empty when an error is wanted
		wantErr bool
	}{
		{line: "10.1.0.0/16=eu-west", want: "10.1.0.0/16=eu-west"},
		{line: "  10.1.0.0/16 =  eu-west ", want: "10.1.0.0/16=eu-west"},
		{line: "10.1.2.3/16=eu-west", want: "10.1.0.0/16=eu-west"},
		{line: "192.0.2.7=lab", want: "192.0.2.7/32=lab"},
		{line: "2001:db8::/32=us_east.1", want: "2001:db8::/32=us_east.1"},
		{line: "2001:db8::1=v6host", want: "2001:db8::1/128=v6host"},
		{line: "::ffff:10.0.0.0/104=mapped", want: "10.0.0.0/8=mapped"},
		{line: "0.0.0.0/0=default", want: "0.0.0.0/0=default"},
		{line: "10.1.0.0/16", wantErr: true},
		{line: "10.1.0.0/16=", wantErr: true},
		{line: "=eu-west", wantErr: true},
		{line: "10.1.0.0/33=eu-west", wantErr: true},
		{line: "10.1.0/16=eu-west", wantErr: true},
		{line: "example.com=eu-west", wantErr: true},
		{line: "fe80::1%eth0=link", wantErr: true},
		{line: "10.0.0.0/8=eu west", wantErr: true},
		{line: "10.0.0.0/8=eu=west", wantErr: true},
		{line: "10.0.0.0/8=" + strings.Repeat("r", MaxRegionNameLen+1), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			r, err := ParseRegionRule(tt.line)
			if tt.wantErr {
				if !errors.Is(err, registry.ErrInvalid) {
					t.Fatalf("got %v, %v; want an ErrInvalid error", r, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.String() != tt.want {
				t.Fatalf("got %s, want %s", r, tt.want)
			}
		})
	}
}

func TestRegionMapLookup(t *testing.T) {
	m, err := ParseRegionMap(`
# operator's map: narrow rules first
10.1.5.0/24 = eu-north
10.1.0.0/16=eu-west
2001:db8:1::/48=us-east

10.0.0.0/8=lab   
`)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m.Rules()); n != 4 {
		t.Fatalf("%d rules, want 4", n)
	}
	tests := []struct {
		addr string
		want string
		ok   bool
	}{
		{"10.1.5.9", "eu-north", true},
		{"10.1.6.9", "eu-west", true},
		{"10.200.0.1", "lab", true},
		{"192.0.2.1", "", false},
		{"::ffff:10.1.5.9", "eu-north", true}, // IPv4-mapped, as dual-stack listeners report
		{"2001:db8:1::42", "us-east", true},
		{"2001:db8:2::42", "", false},
		{"fe80::1%eth0", "", false},
	}
	for _, tt := range tests {
		got, ok := m.Lookup(netip.MustParseAddr(tt.addr))
		if got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%s) = %q, %v; want %q, %v", tt.addr, got, ok, tt.want, tt.ok)
		}
	}
	remotes := []struct{ remote, want string }{
		{"10.1.5.9:50000", "eu-north"},
		{"[::ffff:10.1.6.1]:443", "eu-west"},
		{"[2001:db8:1::1]:8883", "us-east"},
		{"10.9.9.9", "lab"},
		{"not-an-address:1", ""},
		{"", ""},
	}
	for _, tt := range remotes {
		if got, _ := m.LookupRemote(tt.remote); got != tt.want {
			t.Errorf("LookupRemote(%q) = %q, want %q", tt.remote, got, tt.want)
		}
	}
	var zero RegionMap
	if _, ok := zero.LookupRemote("10.1.5.9:1"); ok {
		t.Error("the zero map maps an address")
	}
}

func TestParseRegionMapErrors(t *testing.T) {
	tests := []struct {
		name, text, wantInErr string
	}{
		{"names the line", "10.0.0.0/8=a\n\nbad line\n", "line 3"},
		{"line too long", "10.0.0.0/8=a\n" + strings.Repeat("x", 1000) + "\n", "longer than"},
		{"too many rules", strings.Repeat("10.0.0.0/8=a\n", MaxRegionRules+1), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRegionMap(tt.text)
			if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.wantInErr)
			}
		})
	}
}

func TestRegionMapRoundTrip(t *testing.T) {
	m, err := NewRegionMap(
		RegionRule{Prefix: netip.MustParsePrefix("10.1.2.3/16"), Region: "eu-west"},
		RegionRule{Prefix: netip.MustParsePrefix("2001:db8::/32"), Region: "us-east"},
	)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.String(); s != "10.1.0.0/16=eu-west\n2001:db8::/32=us-east\n" {
		t.Fatalf("String() = %q", s)
	}
	again, err := ParseRegionMap(m.String())
	if err != nil || again.String() != m.String() {
		t.Fatalf("round trip: %v, %q", err, again.String())
	}
	if _, err := NewRegionMap(RegionRule{Region: "x"}); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("invalid prefix accepted: %v", err)
	}
	if _, err := NewRegionMap(RegionRule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("empty region accepted: %v", err)
	}
}
