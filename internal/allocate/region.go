package allocate

import (
	"bufio"
	"fmt"
	"net/netip"
	"strings"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// Limits of region maps, so that a configuration cannot exhaust memory
// nor make every registration scan forever.
const (
	MaxRegionRules   = 10000
	MaxRegionLineLen = 256
	MaxRegionNameLen = 64
)

// RegionRule maps the source addresses of Prefix to Region.
type RegionRule struct {
	Prefix netip.Prefix
	Region string
}

// String formats the rule as ParseRegionRule reads it.
func (r RegionRule) String() string { return r.Prefix.String() + "=" + r.Region }

// RegionMap is the operator's ordered list of source-address rules that
// tell a device's region (for geoLatency) from the address it connects
// from. The first matching rule wins, so a narrow prefix listed before a
// wide one overrides it. The zero value maps nothing.
type RegionMap struct {
	rules []RegionRule
}

// NewRegionMap returns a map of rules, in order.
func NewRegionMap(rules ...RegionRule) (RegionMap, error) {
	if len(rules) > MaxRegionRules {
		return RegionMap{}, fmt.Errorf("%w: more than %d region rules", registry.ErrInvalid, MaxRegionRules)
	}
	out := make([]RegionRule, len(rules))
	for i, r := range rules {
		if !r.Prefix.IsValid() {
			return RegionMap{}, fmt.Errorf("%w: region rule %d has no valid prefix", registry.ErrInvalid, i+1)
		}
		if err := validateRegion(r.Region); err != nil {
			return RegionMap{}, fmt.Errorf("region rule %d: %w", i+1, err)
		}
		out[i] = RegionRule{Prefix: canonicalPrefix(r.Prefix), Region: r.Region}
	}
	return RegionMap{rules: out}, nil
}

// ParseRegionMap reads one rule per line (see ParseRegionRule); blank
// lines and lines starting with '#' are skipped. Errors name the line.
func ParseRegionMap(text string) (RegionMap, error) {
	var rules []RegionRule
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 1024), MaxRegionLineLen+2) // room for "\r\n"
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if len(rules) == MaxRegionRules {
			return RegionMap{}, fmt.Errorf("%w: more than %d region rules", registry.ErrInvalid, MaxRegionRules)
		}
		r, err := ParseRegionRule(line)
		if err != nil {
			return RegionMap{}, fmt.Errorf("region map line %d: %w", n, err)
		}
		rules = append(rules, r)
	}
	if err := sc.Err(); err != nil {
		return RegionMap{}, fmt.Errorf("%w: region map: a line is longer than %d characters", registry.ErrInvalid, MaxRegionLineLen)
	}
	return RegionMap{rules: rules}, nil
}

// ParseRegionRule reads "prefix=region", e.g. "10.1.0.0/16=eu-west" or
// "2001:db8::/32 = us-east". A bare address stands for itself alone (/32
// or /128); host bits set in a prefix are cleared (10.1.2.3/16 is
// 10.1.0.0/16), as the operator evidently meant the network. A region is
// 1 to 64 letters, digits, '-', '_' and '.'.
func ParseRegionRule(line string) (RegionRule, error) {
	if len(line) > MaxRegionLineLen {
		return RegionRule{}, fmt.Errorf("%w: region rule longer than %d characters", registry.ErrInvalid, MaxRegionLineLen)
	}
	left, region, ok := strings.Cut(line, "=")
	if !ok {
		return RegionRule{}, fmt.Errorf("%w: region rule %q: want prefix=region", registry.ErrInvalid, line)
	}
	left, region = strings.TrimSpace(left), strings.TrimSpace(region)
	var p netip.Prefix
	var err error
	if strings.Contains(left, "/") {
		p, err = netip.ParsePrefix(left)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(left)
		if err == nil {
			if a.Zone() != "" {
				err = fmt.Errorf("zones are not allowed")
			} else {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
	}
	if err != nil {
		return RegionRule{}, fmt.Errorf("%w: region rule %q: bad address or prefix: %v", registry.ErrInvalid, line, err)
	}
	if err := validateRegion(region); err != nil {
		return RegionRule{}, fmt.Errorf("region rule %q: %w", line, err)
	}
	return RegionRule{Prefix: canonicalPrefix(p), Region: region}, nil
}

// canonicalPrefix clears host bits and unmaps IPv4-mapped IPv6 prefixes
// (::ffff:10.0.0.0/104 is 10.0.0.0/8), since Lookup unmaps addresses.
func canonicalPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

func validateRegion(r string) error {
	if r == "" || len(r) > MaxRegionNameLen {
		return fmt.Errorf("%w: a region name is 1 to %d characters", registry.ErrInvalid, MaxRegionNameLen)
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: region %q may hold only letters, digits, '-', '_' and '.'", registry.ErrInvalid, r)
		}
	}
	return nil
}

// Rules returns a copy of the map's rules, in order.
func (m RegionMap) Rules() []RegionRule { return append([]RegionRule(nil), m.rules...) }

// String formats the map as ParseRegionMap reads it, one rule a line.
func (m RegionMap) String() string {
	var b strings.Builder
	for _, r := range m.rules {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Lookup returns the region of the first rule whose prefix holds addr
// (IPv4-mapped IPv6 addresses match IPv4 rules), and false when none
// does.
func (m RegionMap) Lookup(addr netip.Addr) (string, bool) {
	addr = addr.Unmap().WithZone("")
	for _, r := range m.rules {
		if r.Prefix.Contains(addr) {
			return r.Region, true
		}
	}
	return "", false
}

// LookupRemote is Lookup for a remote address as net.Conn.RemoteAddr and
// http.Request.RemoteAddr give it ("10.1.2.3:5000", "[2001:db8::1]:443")
// or a bare address; an unparsable one maps to nothing.
func (m RegionMap) LookupRemote(remote string) (string, bool) {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return m.Lookup(ap.Addr())
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return m.Lookup(a)
	}
	return "", false
}
