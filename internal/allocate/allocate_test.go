package allocate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

func hub(name string, weight int) Hub { return Hub{Name: name, Weight: weight, Enabled: true} }

func regHub(name, region string, latency time.Duration) Hub {
	return Hub{Name: name, Weight: 1, Region: region, Latency: latency, Enabled: true}
}

func TestStatic(t *testing.T) {
	hubs := []Hub{hub("a.example.net", 1), {Name: "off.example.net", Weight: 1}, hub("zero.example.net", 0)}
	tests := []struct {
		name    string
		iotHubs []string
		want    string
		wantErr error
	}{
		{"named hub", []string{"a.example.net"}, "a.example.net", nil},
		{"case-insensitive, canonical name returned", []string{"A.Example.NET"}, "a.example.net", nil},
		{"weight 0 does not matter: the operator named it", []string{"zero.example.net"}, "zero.example.net", nil},
		{"no hub", nil, "", registry.ErrInvalid},
		{"two hubs", []string{"a.example.net", "zero.example.net"}, "", registry.ErrInvalid},
		{"unknown hub", []string{"gone.example.net"}, "", ErrNoHub},
		{"disabled hub", []string{"off.example.net"}, "", ErrNoHub},
	}
	a := New(Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := a.Allocate(context.Background(), hubs, Request{RegistrationID: "dev-1", Policy: registry.AllocationStatic, IoTHubs: tt.iotHubs})
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if res.Hub != tt.want {
				t.Fatalf("hub = %q, want %q", res.Hub, tt.want)
			}
		})
	}
}

func TestHashedCandidates(t *testing.T) {
	hubs := []Hub{hub("a", 1), hub("b", 1), {Name: "off", Weight: 5}, hub("zero", 0)}
	tests := []struct {
		name    string
		iotHubs []string
		allowed []string // the answer must be one of these
		wantErr error
	}{
		{"all enabled hubs of positive weight", nil, []string{"a", "b"}, nil},
		{"the enrollment's hubs", []string{"b"}, []string{"b"}, nil},
		{"unknown names are skipped", []string{"gone", "a"}, []string{"a"}, nil},
		{"only disabled", []string{"off"}, nil, ErrNoHub},
		{"only weight 0", []string{"zero"}, nil, ErrNoHub},
		{"only unknown", []string{"gone"}, nil, ErrNoHub},
	}
	a := New(Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 200 {
				res, err := a.Allocate(context.Background(), hubs, Request{RegistrationID: fmt.Sprintf("dev-%d", i), Policy: registry.AllocationHashed, IoTHubs: tt.iotHubs})
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("err = %v, want %v", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !contains(tt.allowed, res.Hub) {
					t.Fatalf("hub %q not among %q", res.Hub, tt.allowed)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestDefaultPolicy(t *testing.T) {
	hubs := []Hub{hub("a", 1), hub("b", 1)}
	ctx := context.Background()
	res, err := New(Options{}).Allocate(ctx, hubs, Request{RegistrationID: "dev-1"})
	if err != nil || res.Policy != registry.AllocationHashed {
		t.Fatalf("default: %+v, %v; want hashed", res, err)
	}
	res, err = New(Options{DefaultPolicy: registry.AllocationStatic}).Allocate(ctx, hubs, Request{RegistrationID: "dev-1", IoTHubs: []string{"b"}})
	if err != nil || res.Policy != registry.AllocationStatic || res.Hub != "b" {
		t.Fatalf("instance default static: %+v, %v", res, err)
	}
	if _, err := New(Options{}).Allocate(ctx, hubs, Request{RegistrationID: "dev-1", Policy: "nearest"}); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("unknown policy: %v", err)
	}
	if _, err := New(Options{}).Allocate(ctx, hubs, Request{}); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("no registration id: %v", err)
	}
}

// ids are fixed and the hash deterministic: the counts below are the
// same on every run, so the tolerances cannot flake; they are wide enough
// (many standard deviations) to survive any change of id set or hash.
func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("sensor-%06d", i)
	}
	return out
}

func count(t *testing.T, a *Allocator, hubs []Hub, ids []string) map[string]string {
	t.Helper()
	got := make(map[string]string, len(ids))
	for _, id := range ids {
		res, err := a.Allocate(context.Background(), hubs, Request{RegistrationID: id, Policy: registry.AllocationHashed})
		if err != nil {
			t.Fatal(err)
		}
		got[id] = res.Hub
	}
	return got
}

func shares(assign map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, h := range assign {
		out[h]++
	}
	for h := range out {
		out[h] /= float64(len(assign))
	}
	return out
}

func TestHashedWeightedDistribution(t *testing.T) {
	const n = 100_000
	tests := []struct {
		name string
		hubs []Hub
	}{
		{"equal", []Hub{hub("h1", 1), hub("h2", 1), hub("h3", 1), hub("h4", 1)}},
		{"1:2:3:4", []Hub{hub("h1", 1), hub("h2", 2), hub("h3", 3), hub("h4", 4)}},
		{"large weights", []Hub{hub("h1", 100), hub("h2", 300)}},
		{"weight 0 gets nothing", []Hub{hub("h1", 1), hub("h2", 0), hub("h3", 1)}},
	}
	a := New(Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total := 0
			for _, h := range tt.hubs {
				total += h.Weight
			}
			got := shares(count(t, a, tt.hubs, ids(n)))
			for _, h := range tt.hubs {
				want := float64(h.Weight) / float64(total)
				// Binomial sd at n=100k is at most 0.16%; 1% is > 6 sd.
				if math.Abs(got[h.Name]-want) > 0.01 {
					t.Errorf("hub %s: share %.4f, want %.4f ± 0.01", h.Name, got[h.Name], want)
				}
			}
		})
	}
}

func TestHashedDeterministic(t *testing.T) {
	hubs := []Hub{hub("h1", 1), hub("h2", 2), hub("h3", 3)}
	reversed := []Hub{hubs[2], hubs[1], hubs[0]}
	a := New(Options{})
	first := count(t, a, hubs, ids(2000))
	again := count(t, New(Options{}), reversed, ids(2000))
	for id, h := range first {
		if again[id] != h {
			t.Fatalf("%s: %s then %s (order of hubs must not matter)", id, h, again[id])
		}
	}
	again = count(t, a, hubs, ids(2000))
	for id, h := range first {
		if again[id] != h {
			t.Fatalf("%s: %s then %s", id, h, again[id])
		}
	}
}

func TestHashedPinned(t *testing.T) {
	// Values computed once with SHA-256 rendezvous hashing; if this test
	// fails the hash changed, and every deployed fleet would reshuffle.
	hubs := []Hub{hub("hub-a.example.net", 1), hub("hub-b.example.net", 1), hub("hub-c.example.net", 1)}
	want := map[string]string{
		"sensor-000000":                   "hub-c.example.net",
		"sensor-000005":                   "hub-b.example.net",
		"sensor-000006":                   "hub-a.example.net",
		"sensor-000007":                   "hub-b.example.net",
		"breakroom499-contoso-tstrsd-007": "hub-a.example.net",
		"mydevice":                        "hub-c.example.net",
	}
	a := New(Options{})
	for id, h := range want {
		res, err := a.Allocate(context.Background(), hubs, Request{RegistrationID: id, Policy: registry.AllocationHashed})
		if err != nil {
			t.Fatal(err)
		}
		if res.Hub != h {
			t.Errorf("%s → %s, want %s", id, res.Hub, h)
		}
	}
}

func TestHashedMinimalMovement(t *testing.T) {
	const n = 100_000
	a := New(Options{})
	before := []Hub{hub("h1", 1), hub("h2", 1), hub("h3", 1), hub("h4", 1)}
	t.Run("add a hub", func(t *testing.T) {
		after := append(append([]Hub(nil), before...), hub("h5", 1))
		old, cur := count(t, a, before, ids(n)), count(t, a, after, ids(n))
		moved := 0
		for id, h := range cur {
			if h != old[id] {
				moved++
				if h != "h5" {
					t.Fatalf("%s moved from %s to %s, not to the new hub", id, old[id], h)
				}
			}
		}
		// Ideal: 1/5 of the devices move, all to the new hub.
		if f := float64(moved) / n; math.Abs(f-0.2) > 0.01 {
			t.Errorf("moved %.4f of devices, want 0.20 ± 0.01", f)
		}
	})
	t.Run("remove a hub", func(t *testing.T) {
		after := before[:3]
		old, cur := count(t, a, before, ids(n)), count(t, a, after, ids(n))
		for id, h := range cur {
			if h != old[id] && old[id] != "h4" {
				t.Fatalf("%s moved from %s to %s though its hub stayed", id, old[id], h)
			}
		}
	})
	t.Run("weight 0 keeps others in place", func(t *testing.T) {
		after := append([]Hub(nil), before...)
		after[3].Weight = 0
		old, cur := count(t, a, before, ids(n)), count(t, a, after, ids(n))
		for id, h := range cur {
			if h != old[id] && old[id] != "h4" {
				t.Fatalf("%s moved from %s to %s", id, old[id], h)
			}
		}
	})
}

func TestGeoLatency(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name      string
		hubs      []Hub
		region    string
		tolerance time.Duration
		allowed   []string
	}{
		{
			name:    "region-mates only",
			hubs:    []Hub{regHub("eu1", "eu-west", 0), regHub("eu2", "eu-west", 0), regHub("us1", "us-east", 0)},
			region:  "eu-west",
			allowed: []string{"eu1", "eu2"},
		},
		{
			name:    "region compared without case",
			hubs:    []Hub{regHub("eu1", "EU-West", 0), regHub("us1", "us-east", 0)},
			region:  "eu-west",
			allowed: []string{"eu1"},
		},
		{
			name:    "no region-mate: hashed over all",
			hubs:    []Hub{regHub("eu1", "eu-west", 0), regHub("us1", "us-east", 0)},
			region:  "ap-south",
			allowed: []string{"eu1", "us1"},
		},
		{
			name:    "region unknown: hashed over all",
			hubs:    []Hub{regHub("eu1", "eu-west", 0), regHub("us1", "us-east", 0)},
			allowed: []string{"eu1", "us1"},
		},
		{
			name:    "lowest latency region-mate first",
			hubs:    []Hub{regHub("eu1", "eu-west", 30*ms), regHub("eu2", "eu-west", 10*ms), regHub("us1", "us-east", 1*ms)},
			region:  "eu-west",
			allowed: []string{"eu2"},
		},
		{
			name:    "equal lowest latency: hashed among them",
			hubs:    []Hub{regHub("eu1", "eu-west", 10*ms), regHub("eu2", "eu-west", 10*ms), regHub("eu3", "eu-west", 50*ms)},
			region:  "eu-west",
			allowed: []string{"eu1", "eu2"},
		},
		{
			name:      "within tolerance counts as equal",
			hubs:      []Hub{regHub("eu1", "eu-west", 10*ms), regHub("eu2", "eu-west", 14*ms), regHub("eu3", "eu-west", 50*ms)},
			region:    "eu-west",
			tolerance: 5 * ms,
			allowed:   []string{"eu1", "eu2"},
		},
		{
			name:    "measured beats unknown",
			hubs:    []Hub{regHub("eu1", "eu-west", 0), regHub("eu2", "eu-west", 40*ms)},
			region:  "eu-west",
			allowed: []string{"eu2"},
		},
		{
			name: "weight-0 and disabled region-mates are skipped",
			hubs: []Hub{
				{Name: "eu1", Region: "eu-west", Weight: 0, Latency: ms, Enabled: true},
				{Name: "eu2", Region: "eu-west", Weight: 1, Latency: ms},
				{Name: "eu3", Region: "eu-west", Weight: 1, Latency: 9 * ms, Enabled: true},
				regHub("us1", "us-east", 0),
			},
			region:  "eu-west",
			allowed: []string{"eu3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New(Options{LatencyTolerance: tt.tolerance})
			seen := map[string]bool{}
			for _, id := range ids(500) {
				res, err := a.Allocate(context.Background(), tt.hubs, Request{RegistrationID: id, Policy: registry.AllocationGeoLatency, Region: tt.region})
				if err != nil {
					t.Fatal(err)
				}
				if !contains(tt.allowed, res.Hub) {
					t.Fatalf("%s → %s, want one of %q", id, res.Hub, tt.allowed)
				}
				seen[res.Hub] = true
			}
			// 500 devices over at most 3 hubs: each allowed hub gets some.
			if len(seen) != len(tt.allowed) {
				t.Errorf("used hubs %v, want all of %q", seen, tt.allowed)
			}
		})
	}
}

func TestGeoLatencyNoHub(t *testing.T) {
	_, err := New(Options{}).Allocate(context.Background(), []Hub{{Name: "eu1", Region: "eu-west"}}, Request{RegistrationID: "d", Policy: registry.AllocationGeoLatency, Region: "eu-west"})
	if !errors.Is(err, ErrNoHub) {
		t.Fatalf("err = %v, want ErrNoHub", err)
	}
}

func BenchmarkHashed(b *testing.B) {
	hubs := make([]Hub, 8)
	for i := range hubs {
		hubs[i] = hub(fmt.Sprintf("hub-%d.example.net", i), i+1)
	}
	a := New(Options{})
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if _, err := a.Allocate(ctx, hubs, Request{RegistrationID: "sensor-0001", Policy: registry.AllocationHashed}); err != nil {
			b.Fatal(err)
		}
	}
}
