package registry

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Hub is an IoT hub linked to an organisation's provisioning service, as
// Azure DPS links IoT hubs: a candidate of DPS allocation besides the
// node's own built-in hub. zerotouch does not connect to it; it only tells
// devices allocated to it its name.
type Hub struct {
	OrgID string `json:"orgId"`
	// Name is the hub's host name, optionally with ":port", given to
	// devices verbatim as their assigned hub (and the resource their SAS
	// tokens sign). Unique per organisation without regard to case. See
	// ValidateHubName.
	Name string `json:"name"`
	// Weight is the hub's share of new devices under the hashed policy
	// (and among region-mates under geoLatency); 0 means it takes no new
	// devices from those policies. Static and custom allocation ignore it.
	Weight int `json:"weight"`
	// Region names where the hub is, for geoLatency: devices whose source
	// address the region map places in the same region go to it. Empty
	// means no region. See ValidateHubRegion.
	Region string `json:"region,omitempty"`
	// Enabled hubs take devices; a disabled hub is never allocated.
	Enabled bool `json:"enabled"`
	// Version increases with every write; it is the hub's etag.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Limits of hubs.
const (
	// MaxHubNameLen caps a hub name, port included (host names of IoT
	// hubs are far shorter; the limit is that of registration ids, so a
	// hub name fits in the same path segments).
	MaxHubNameLen = MaxRegistrationIDLen
	// MaxHubWeight caps a hub's weight.
	MaxHubWeight = 1000
	// MaxHubRegionLen caps a hub's region, as region map names.
	MaxHubRegionLen = 64
	// DefaultHubWeight is the weight of a hub registered without one.
	DefaultHubWeight = 1
)

// Validate checks the hub's own fields (not uniqueness).
func (h *Hub) Validate() error {
	if err := ValidateHubName(h.Name); err != nil {
		return err
	}
	if h.Weight < 0 || h.Weight > MaxHubWeight {
		return fmt.Errorf("%w: hub weight %d: want 0 (no new devices) to %d", ErrInvalid, h.Weight, MaxHubWeight)
	}
	return ValidateHubRegion(h.Region)
}

// HubKey is the form hub names are compared in: lower case (host names
// are case-insensitive; a valid name is ASCII).
func HubKey(name string) string { return strings.ToLower(name) }

// ValidateHubName checks a hub name: a host name (letters, digits and '-'
// in dot-separated labels of 1 to 63 characters, not starting or ending
// with '-'; an IPv4 address is such a name) optionally followed by ":port"
// (1 to 65535), at most MaxHubNameLen characters. IPv6 literals are not
// accepted: give the hub a name.
func ValidateHubName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: hub name is empty", ErrInvalid)
	}
	if len(name) > MaxHubNameLen {
		return fmt.Errorf("%w: hub name is longer than %d characters", ErrInvalid, MaxHubNameLen)
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: hub name %q: %s (want a host name, optionally with :port, e.g. hub-eu.example.com or hub-eu.example.com:8883)",
			ErrInvalid, name, why)
	}
	host := name
	if h, port, ok := strings.Cut(name, ":"); ok {
		host = h
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '0' || port[0] == '+' {
			return bad("bad port")
		}
	}
	if host == "" {
		return bad("no host")
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 {
			return bad("each dot-separated label needs 1 to 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("a label may not start or end with '-'")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return bad("only letters, digits, '-' and '.' are allowed")
			}
		}
	}
	return nil
}

// ValidateHubRegion checks a hub's region: empty (none), or 1 to
// MaxHubRegionLen letters, digits, '-', '_' and '.', the names a region map
// (--region-map) gives devices, so that the two can match.
func ValidateHubRegion(region string) error {
	if len(region) > MaxHubRegionLen {
		return fmt.Errorf("%w: hub region is longer than %d characters", ErrInvalid, MaxHubRegionLen)
	}
	for i := 0; i < len(region); i++ {
		c := region[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: hub region %q may hold only letters, digits, '-', '_' and '.' (as region map names)", ErrInvalid, region)
		}
	}
	return nil
}
