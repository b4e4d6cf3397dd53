package storetest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// Rules of linked IoT hubs stated by this file:
//   - Hubs start at Version 1; UpdateHub applies only at the stored
//     version (else ConflictError "hub") and increments it; a missing hub
//     is ErrNotFound. UpdateHub changes Weight, Region and Enabled only.
//   - A hub's Name comes back exactly as written; it is unique per
//     organisation without regard to case (ConflictError "hub") and found,
//     updated and deleted in any case.
//   - Lists are ordered by lower-cased name and paged like profiles.
//   - Weight 0 is valid (the hub takes no new devices); a negative weight,
//     a weight above registry.MaxHubWeight, a name that is not a host name
//     with an optional port, and a region with other characters than a
//     region map's are ErrInvalid.

func hubFixture(name string) registry.Hub {
	return registry.Hub{OrgID: registry.DefaultOrgID, Name: name, Weight: 3, Region: "eu-west", Enabled: true}
}

func checkHub(t *testing.T, got, want *registry.Hub) {
	t.Helper()
	g, w := *got, *want
	checkTime(t, "hub CreatedAt", g.CreatedAt, w.CreatedAt)
	checkTime(t, "hub UpdatedAt", g.UpdatedAt, w.UpdatedAt)
	g.CreatedAt, g.UpdatedAt, w.CreatedAt, w.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("hub = %s\nwant  %s", dump(g), dump(w))
	}
}

func hubCount(t *testing.T, s registry.Store) int {
	t.Helper()
	hs, _, err := s.ListHubs(t.Context(), registry.DefaultOrgID, registry.ListOptions{Limit: registry.MaxPageSize})
	must(t, err, "ListHubs")
	return len(hs)
}

var hubTests = []testCase{
	{"CreateAndGet", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		for _, name := range []string{"Hub-EU.Example.com", "hub-us.example.com:8883", "10.0.0.7:1883", "localhost"} {
			t.Run(name, func(t *testing.T) {
				before := time.Now()
				h := hubFixture(name)
				want := h
				must(t, s.CreateHub(ctx, &h), "CreateHub")
				if h.Version != 1 {
					t.Errorf("Version = %d, want 1", h.Version)
				}
				checkRecent(t, "CreatedAt", h.CreatedAt, before)
				checkRecent(t, "UpdatedAt", h.UpdatedAt, before)
				want.Version, want.CreatedAt, want.UpdatedAt = 1, h.CreatedAt, h.UpdatedAt
				checkHub(t, &h, &want)
				for _, n := range []string{name, strings.ToLower(name), strings.ToUpper(name)} {
					got, err := s.GetHub(ctx, registry.DefaultOrgID, n)
					must(t, err, "GetHub("+n+")")
					checkHub(t, got, &want)
				}
			})
		}
		_, err := s.GetHub(ctx, registry.DefaultOrgID, "no-such-hub.example.com")
		wantNotFound(t, err, "GetHub(unknown)")
	}},

	{"CreateKeepsGivenTimesAndZeroWeight", func(t *testing.T, s registry.Store) {
		h := hubFixture("given.example.com")
		h.CreatedAt = time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("UTC+5", 5*3600))
		h.UpdatedAt = h.CreatedAt.Add(time.Hour)
		h.Version, h.Weight, h.Region, h.Enabled = 9, 0, "", false
		must(t, s.CreateHub(t.Context(), &h), "CreateHub")
		want := h
		want.Version = 1
		got, err := s.GetHub(t.Context(), registry.DefaultOrgID, "given.example.com")
		must(t, err, "GetHub")
		checkHub(t, got, &want)
		checkHub(t, &h, &want)
		checkTime(t, "CreatedAt", got.CreatedAt, time.Date(2024, 2, 29, 18, 59, 58, 123456789, time.UTC))
	}},

	{"CreateInvalid", func(t *testing.T, s registry.Store) {
		cases := []struct {
			name   string
			mutate func(h *registry.Hub)
		}{
			{"empty name", func(h *registry.Hub) { h.Name = "" }},
			{"space in name", func(h *registry.Hub) { h.Name = "hub eu.example.com" }},
			{"slash in name", func(h *registry.Hub) { h.Name = "hub/eu" }},
			{"URL", func(h *registry.Hub) { h.Name = "mqtts://hub.example.com" }},
			{"empty label", func(h *registry.Hub) { h.Name = "hub..example.com" }},
			{"trailing dot", func(h *registry.Hub) { h.Name = "hub.example.com." }},
			{"label starts with hyphen", func(h *registry.Hub) { h.Name = "-hub.example.com" }},
			{"label too long", func(h *registry.Hub) { h.Name = strings.Repeat("a", 64) + ".example.com" }},
			{"name too long", func(h *registry.Hub) { h.Name = strings.Repeat("a.", registry.MaxHubNameLen/2) + "com" }},
			{"port zero", func(h *registry.Hub) { h.Name = "hub.example.com:0" }},
			{"port too large", func(h *registry.Hub) { h.Name = "hub.example.com:65536" }},
			{"port not a number", func(h *registry.Hub) { h.Name = "hub.example.com:mqtt" }},
			{"empty port", func(h *registry.Hub) { h.Name = "hub.example.com:" }},
			{"two ports", func(h *registry.Hub) { h.Name = "hub.example.com:1:2" }},
			{"no host", func(h *registry.Hub) { h.Name = ":8883" }},
			{"IPv6 literal", func(h *registry.Hub) { h.Name = "[::1]:8883" }},
			{"control character", func(h *registry.Hub) { h.Name = "hub\x00.example.com" }},
			{"negative weight", func(h *registry.Hub) { h.Weight = -1 }},
			{"weight too large", func(h *registry.Hub) { h.Weight = registry.MaxHubWeight + 1 }},
			{"region with space", func(h *registry.Hub) { h.Region = "eu west" }},
			{"region too long", func(h *registry.Hub) { h.Region = strings.Repeat("r", registry.MaxHubRegionLen+1) }},
			{"unknown organisation", func(h *registry.Hub) { h.OrgID = OtherOrgID }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				h := hubFixture("invalid.example.com")
				tc.mutate(&h)
				before := dump(h)
				wantInvalid(t, s.CreateHub(t.Context(), &h), "CreateHub")
				if dump(h) != before {
					t.Errorf("a failed CreateHub changed the caller's record")
				}
			})
		}
		if n := hubCount(t, s); n != 0 {
			t.Fatalf("invalid hubs were written: %d", n)
		}
	}},

	{"CreateConflicts", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		first := hubFixture("taken.example.com")
		must(t, s.CreateHub(ctx, &first), "CreateHub")
		for _, name := range []string{"taken.example.com", "TAKEN.Example.COM"} {
			dup := hubFixture(name)
			dup.Weight = 7
			before := dump(dup)
			wantConflict(t, s.CreateHub(ctx, &dup), "hub", "CreateHub("+name+")")
			if dump(dup) != before {
				t.Errorf("a failed CreateHub changed the caller's record")
			}
		}
		// Another port is another hub.
		other := hubFixture("taken.example.com:8884")
		must(t, s.CreateHub(ctx, &other), "CreateHub(other port)")
		got, err := s.GetHub(ctx, registry.DefaultOrgID, "taken.example.com")
		must(t, err, "GetHub")
		checkHub(t, got, &first)
		if n := hubCount(t, s); n != 2 {
			t.Fatalf("after conflicts, %d hubs, want 2", n)
		}
	}},

	{"Update", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		h := hubFixture("Hub-1.example.com")
		must(t, s.CreateHub(ctx, &h), "CreateHub")
		stale := h
		created := h.CreatedAt
		time.Sleep(2 * timeTolerance)
		before := time.Now()

		h.Weight, h.Region, h.Enabled = 0, "us-east", false
		h.Name = "HUB-1.EXAMPLE.COM" // any case names the hub; the stored name stays
		must(t, s.UpdateHub(ctx, &h), "UpdateHub")
		if h.Version != 2 {
			t.Errorf("Version after update = %d, want 2", h.Version)
		}
		if h.Name != "Hub-1.example.com" {
			t.Errorf("Name after update = %q, want the stored %q", h.Name, "Hub-1.example.com")
		}
		checkTime(t, "CreatedAt after update", h.CreatedAt, created)
		checkRecent(t, "UpdatedAt after update", h.UpdatedAt, before)
		got, err := s.GetHub(ctx, registry.DefaultOrgID, "hub-1.example.com")
		must(t, err, "GetHub")
		checkHub(t, got, &h)

		// A write based on version 1 must not overwrite the change.
		stale.Weight = 9
		snapshot := dump(stale)
		wantConflict(t, s.UpdateHub(ctx, &stale), "hub", "UpdateHub(stale)")
		if dump(stale) != snapshot {
			t.Error("a failed UpdateHub changed the caller's record")
		}
		got, err = s.GetHub(ctx, registry.DefaultOrgID, "hub-1.example.com")
		must(t, err, "GetHub")
		checkHub(t, got, &h)

		invalid := h
		invalid.Weight = -5
		snapshot = dump(invalid)
		wantInvalid(t, s.UpdateHub(ctx, &invalid), "UpdateHub(invalid)")
		if dump(invalid) != snapshot {
			t.Error("a failed UpdateHub changed the caller's record")
		}
		got, err = s.GetHub(ctx, registry.DefaultOrgID, "hub-1.example.com")
		must(t, err, "GetHub")
		checkHub(t, got, &h)

		gone := hubFixture("never-created.example.com")
		gone.Version = 1
		wantNotFound(t, s.UpdateHub(ctx, &gone), "UpdateHub(unknown)")
	}},

	{"OtherOrganisation", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		h := hubFixture("mine.example.com")
		must(t, s.CreateHub(ctx, &h), "CreateHub")
		_, err := s.GetHub(ctx, OtherOrgID, "mine.example.com")
		wantNotFound(t, err, "GetHub(other org)")
		other := h
		other.OrgID, other.Weight = OtherOrgID, 5
		wantNotFound(t, s.UpdateHub(ctx, &other), "UpdateHub(other org)")
		wantNotFound(t, s.DeleteHub(ctx, OtherOrgID, "mine.example.com"), "DeleteHub(other org)")
		hs, next, err := s.ListHubs(ctx, OtherOrgID, registry.ListOptions{})
		if err != nil || len(hs) != 0 || next != "" {
			t.Fatalf("ListHubs(other org) = %d, %q, %v; want none", len(hs), next, err)
		}
		got, err := s.GetHub(ctx, registry.DefaultOrgID, "mine.example.com")
		must(t, err, "GetHub after other org's writes")
		checkHub(t, got, &h)
	}},

	{"ListPages", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		names := []string{"b-2.example.com", "A-1.example.com", "c.example.com:8883", "a-10.example.com", "z", "0-first", "c.example.com"}
		for _, n := range names {
			h := hubFixture(n)
			must(t, s.CreateHub(ctx, &h), "CreateHub")
		}
		var got []string
		opts := registry.ListOptions{Limit: 3}
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatal("cursor never ends")
			}
			hs, next, err := s.ListHubs(ctx, registry.DefaultOrgID, opts)
			must(t, err, "ListHubs")
			if len(hs) > 3 {
				t.Fatalf("page of %d, limit 3", len(hs))
			}
			for _, h := range hs {
				got = append(got, h.Name)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
		want := []string{"0-first", "A-1.example.com", "a-10.example.com", "b-2.example.com", "c.example.com", "c.example.com:8883", "z"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("listed %v, want %v", got, want)
		}
		_, _, err := s.ListHubs(ctx, registry.DefaultOrgID, registry.ListOptions{After: "!!"})
		wantInvalid(t, err, "ListHubs(malformed cursor)")
	}},

	{"Delete", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		h := hubFixture("hub-1.example.com")
		must(t, s.CreateHub(ctx, &h), "CreateHub")
		keep := hubFixture("hub-2.example.com")
		must(t, s.CreateHub(ctx, &keep), "CreateHub")
		must(t, s.DeleteHub(ctx, registry.DefaultOrgID, "HUB-1.example.com"), "DeleteHub(upper case)")
		_, err := s.GetHub(ctx, registry.DefaultOrgID, "hub-1.example.com")
		wantNotFound(t, err, "GetHub after delete")
		wantNotFound(t, s.DeleteHub(ctx, registry.DefaultOrgID, "hub-1.example.com"), "DeleteHub(again)")
		got, err := s.GetHub(ctx, registry.DefaultOrgID, "hub-2.example.com")
		must(t, err, "GetHub(the other hub)")
		checkHub(t, got, &keep)
		// The name is free again, and the new hub starts at version 1.
		again := hubFixture("hub-1.example.com")
		must(t, s.CreateHub(ctx, &again), "CreateHub after delete")
		if again.Version != 1 {
			t.Errorf("Version of the recreated hub = %d, want 1", again.Version)
		}
	}},

	{"CancelledWriteWritesNothing", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		h := hubFixture("cancelled.example.com")
		before := dump(h)
		if err := s.CreateHub(cancelled(ctx), &h); err == nil {
			t.Fatal("CreateHub with a cancelled context succeeded")
		}
		if dump(h) != before {
			t.Error("a failed CreateHub changed the caller's record")
		}
		_, err := s.GetHub(ctx, registry.DefaultOrgID, "cancelled.example.com")
		wantNotFound(t, err, "GetHub")

		kept := hubFixture("kept.example.com")
		must(t, s.CreateHub(ctx, &kept), "CreateHub")
		change := kept
		change.Weight = 8
		if err := s.UpdateHub(cancelled(ctx), &change); err == nil {
			t.Fatal("UpdateHub with a cancelled context succeeded")
		}
		if err := s.DeleteHub(cancelled(ctx), registry.DefaultOrgID, "kept.example.com"); err == nil {
			t.Fatal("DeleteHub with a cancelled context succeeded")
		}
		got, err := s.GetHub(ctx, registry.DefaultOrgID, "kept.example.com")
		must(t, err, "GetHub")
		checkHub(t, got, &kept)
	}},
}
