package server

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Linked IoT hubs end to end: hubs registered through the management API
// become candidates of DPS allocation beside the node's built-in hub, and
// the region map places devices by their source address (127.0.0.1 here).

// groupKey is the symmetric key of the test group id: one per group, so
// that each device's key matches its own group only.
func groupKey(id string) string {
	sum := sha256.Sum256([]byte("group key of " + id))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// hubGroup creates a symmetric-key enrollment group with an allocation
// policy and hubs.
func hubGroup(t *testing.T, n *node, id string, policy registry.AllocationPolicy, hubs ...string) {
	t.Helper()
	g := &registry.EnrollmentGroup{OrgID: registry.DefaultOrgID, ID: id,
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: groupKey(id)}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, AllocationPolicy: policy,
			IoTHubs: hubs, ReprovisionPolicy: registry.EnrollmentReprovisionMigrate}}
	if err := n.srv.Store().CreateEnrollmentGroup(t.Context(), g); err != nil {
		t.Fatal(err)
	}
}

// registerInGroup registers a device of a group (see hubGroup) and
// returns its assigned hub.
func registerInGroup(t *testing.T, n *node, scope, group, regID string) string {
	t.Helper()
	key, err := attest.DeriveDeviceKey(groupKey(group), regID)
	if err != nil {
		t.Fatal(err)
	}
	return n.registerMQTT(t, scope, regID, key).str("registrationState", "assignedHub")
}

type hubOut struct {
	Name    string `json:"name"`
	Weight  int    `json:"weight"`
	Region  string `json:"region"`
	Enabled bool   `json:"enabled"`
	Builtin bool   `json:"builtin"`
}

func TestHubsAllocation(t *testing.T) {
	regions := filepath.Join(t.TempDir(), "regions")
	if err := os.WriteFile(regions, []byte("# test network\n10.0.0.0/8=elsewhere\n127.0.0.0/8 = eu-north\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, "", func(c *config.Config) {
		c.RegionMapFile, c.HubRegion = regions, "us-east"
		if err := c.Finish(); err != nil {
			t.Fatal(err)
		}
	})
	scope := n.idScope(t)
	builtin := n.srv.builtinHubName()

	for _, h := range []map[string]any{
		{"name": "Hub-A.example.com", "weight": 1},
		{"name": "hub-b.example.com:8884", "weight": 3, "region": "eu-north"},
		{"name": "hub-off.example.com", "weight": 5, "enabled": false},
		{"name": "hub-zero.example.com", "weight": 0},
	} {
		if code := n.api("POST", "/api/hubs", h, nil); code != http.StatusCreated {
			t.Fatalf("POST /api/hubs %v: %d", h, code)
		}
	}
	if code := n.api("POST", "/api/hubs", map[string]any{"name": strings.ToUpper(builtin)}, nil); code != http.StatusConflict {
		t.Fatalf("registering the built-in hub's name: %d, want 409", code)
	}
	var list struct{ Items []hubOut }
	if code := n.api("GET", "/api/hubs", nil, &list); code != http.StatusOK || len(list.Items) != 5 {
		t.Fatalf("GET /api/hubs: %d %+v", code, list.Items)
	}
	if b := list.Items[0]; !b.Builtin || b.Name != builtin || b.Region != "us-east" || b.Weight != 1 || !b.Enabled {
		t.Fatalf("built-in hub listed as %+v", b)
	}

	t.Run("hashed over every enabled hub", func(t *testing.T) {
		hubGroup(t, n, "hashed", registry.AllocationHashed)
		enabled := map[string]bool{builtin: true, "Hub-A.example.com": true, "hub-b.example.com:8884": true}
		seen := map[string]int{}
		for i := range 24 {
			hub := registerInGroup(t, n, scope, "hashed", fmt.Sprintf("hashed-%02d", i))
			if !enabled[hub] {
				t.Fatalf("hashed-%02d assigned to %q, not one of the enabled hubs of positive weight %v", i, hub, enabled)
			}
			seen[hub]++
		}
		if len(seen) < 2 {
			t.Fatalf("24 devices all on one hub: %v", seen)
		}
		if seen["hub-b.example.com:8884"] == 0 {
			t.Errorf("the hub of weight 3 got no device: %v", seen)
		}
		// The same device lands on the same hub again.
		first := registerInGroup(t, n, scope, "hashed", "hashed-00")
		if again := registerInGroup(t, n, scope, "hashed", "hashed-00"); again != first {
			t.Errorf("re-registration moved hashed-00 from %q to %q", first, again)
		}
	})

	t.Run("hashed among the enrollment's hubs", func(t *testing.T) {
		hubGroup(t, n, "pair", registry.AllocationHashed, "hub-off.example.com", "hub-a.example.com")
		for i := range 6 {
			if hub := registerInGroup(t, n, scope, "pair", fmt.Sprintf("pair-%d", i)); hub != "Hub-A.example.com" {
				t.Fatalf("pair-%d assigned to %q, want the one enabled hub of its enrollment, verbatim", i, hub)
			}
		}
	})

	t.Run("static to a registered hub", func(t *testing.T) {
		hubGroup(t, n, "static", registry.AllocationStatic, "HUB-B.example.com:8884")
		if hub := registerInGroup(t, n, scope, "static", "static-1"); hub != "hub-b.example.com:8884" {
			t.Fatalf("static-1 assigned to %q", hub)
		}
	})

	t.Run("a disabled hub is never assigned", func(t *testing.T) {
		hubGroup(t, n, "off", registry.AllocationStatic, "hub-off.example.com")
		key, _ := attest.DeriveDeviceKey(groupKey("off"), "off-1")
		s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.tlsConfig(t), dpsUsername(scope, "off-1"), dpsToken(t, scope, "off-1", key, time.Hour), "off-1")
		if a := s.register("off-1", ""); a.Status != 200 || a.str("status") != "failed" || a.str("registrationState", "assignedHub") != "" {
			t.Fatalf("static to a disabled hub = %d %s, want status failed", a.Status, a.Raw)
		}
		if _, err := n.srv.Store().GetDeviceByName(t.Context(), registry.DefaultOrgID, "off-1"); err == nil {
			t.Fatal("a registration that failed allocation created a device")
		}
		// Enabled through the API, it takes the device.
		if code := n.api("PATCH", "/api/hubs/hub-off.example.com", map[string]any{"enabled": true}, nil); code != http.StatusOK {
			t.Fatalf("PATCH: %d", code)
		}
		if hub := registerInGroup(t, n, scope, "off", "off-1"); hub != "hub-off.example.com" {
			t.Fatalf("off-1 assigned to %q after the hub was enabled", hub)
		}
		if code := n.api("PATCH", "/api/hubs/hub-off.example.com", map[string]any{"enabled": false}, nil); code != http.StatusOK {
			t.Fatalf("PATCH: %d", code)
		}
	})

	t.Run("geoLatency by the region map", func(t *testing.T) {
		hubGroup(t, n, "geo", registry.AllocationGeoLatency)
		for i := range 6 {
			if hub := registerInGroup(t, n, scope, "geo", fmt.Sprintf("geo-%d", i)); hub != "hub-b.example.com:8884" {
				t.Fatalf("geo-%d from 127.0.0.1 (eu-north) assigned to %q, want the eu-north hub", i, hub)
			}
		}
		// With its region's hub disabled, a device is hashed over the others.
		if code := n.api("PATCH", "/api/hubs/hub-b.example.com:8884", map[string]any{"enabled": false}, nil); code != http.StatusOK {
			t.Fatalf("PATCH: %d", code)
		}
		for i := range 6 {
			hub := registerInGroup(t, n, scope, "geo", fmt.Sprintf("geo-late-%d", i))
			if hub != builtin && hub != "Hub-A.example.com" {
				t.Fatalf("geo-late-%d assigned to %q, want an enabled hub of another region", i, hub)
			}
		}
	})

	t.Run("a deleted hub is no longer a candidate", func(t *testing.T) {
		if code := n.api("DELETE", "/api/hubs/hub-a.example.com", nil, nil); code != http.StatusNoContent {
			t.Fatalf("DELETE: %d", code)
		}
		for i := range 6 {
			if hub := registerInGroup(t, n, scope, "geo", fmt.Sprintf("late-%d", i)); hub != builtin {
				t.Fatalf("late-%d assigned to %q, want the built-in hub, the only enabled one left", i, hub)
			}
		}
	})
}

func TestHubSettings(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("10.0.0.0/8=ok\n300.1.1.1=oops\n"), 0o600)
	badRegion := filepath.Join(dir, "bad-region")
	os.WriteFile(badRegion, []byte("# fine\n\n10.0.0.0/8=has space\n"), 0o600)
	for _, tc := range []struct {
		mod  func(*config.Config)
		want []string
	}{
		{func(c *config.Config) { c.RegionMapFile = bad }, []string{"--region-map", "line 2"}},
		{func(c *config.Config) { c.RegionMapFile = badRegion }, []string{"--region-map", "line 3"}},
		{func(c *config.Config) { c.RegionMapFile = filepath.Join(dir, "none") }, []string{"--region-map"}},
		{func(c *config.Config) { c.HubRegion = "eu west" }, []string{"--hub-region"}},
	} {
		c := config.Defaults()
		tc.mod(&c)
		err := c.Finish()
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Finish() = %v, want an error mentioning %q", err, w)
			}
		}
	}
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("10.1.0.0/16=eu-west\n::1=local\n"), 0o600)
	c := config.Defaults()
	c.RegionMapFile = good
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if r, ok := c.Regions.LookupRemote("10.1.2.3:5000"); !ok || r != "eu-west" {
		t.Errorf("10.1.2.3 → %q, %v", r, ok)
	}
	if strings.Contains(c.Redacted(), "eu-west") {
		t.Error("the parsed region map leaks into the printed configuration")
	}
	var help []string
	for _, s := range config.Settings() {
		help = append(help, s.Name)
	}
	if h := strings.Join(help, " "); !strings.Contains(h, "region-map") || !strings.Contains(h, "hub-region") {
		t.Errorf("settings %s lack region-map or hub-region", h)
	}
}
