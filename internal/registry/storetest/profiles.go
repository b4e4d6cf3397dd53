package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

var profileTests = []testCase{
	{"CreateAndGet", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		before := time.Now()
		p := profileFixture("sensors")
		must(t, s.CreateProfile(ctx, &p), "CreateProfile")
		if p.ID == "" {
			t.Fatal("CreateProfile did not set ID")
		}
		checkRecent(t, "CreatedAt", p.CreatedAt, before)
		checkRecent(t, "UpdatedAt", p.UpdatedAt, before)

		got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, &p)
		got, err = s.GetProfileByProvisionKey(ctx, p.ProvisionKey)
		must(t, err, "GetProfileByProvisionKey")
		checkProfile(t, got, &p)

		_, err = s.GetProfile(ctx, registry.DefaultOrgID, "no-such-profile")
		wantNotFound(t, err, "GetProfile(unknown id)")
		_, err = s.GetProfileByProvisionKey(ctx, "no-such-key")
		wantNotFound(t, err, "GetProfileByProvisionKey(unknown key)")
	}},

	{"CreateKeepsGivenIDAndTimes", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := profileFixture("given")
		p.ID = "6f1c2d3e-0000-4000-8000-000000000001"
		p.CreatedAt = time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("UTC+5", 5*3600))
		p.UpdatedAt = p.CreatedAt.Add(time.Hour)
		p.Version = 7 // ignored: a new profile is at version 1
		want := p
		want.Version = 1
		must(t, s.CreateProfile(ctx, &p), "CreateProfile")
		got, err := s.GetProfile(ctx, registry.DefaultOrgID, want.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, &want)
	}},

	{"CreateInvalid", func(t *testing.T, s registry.Store) {
		cases := []struct {
			name   string
			mutate func(p *registry.Profile)
		}{
			{"empty name", func(p *registry.Profile) { p.Name = "" }},
			{"long name", func(p *registry.Profile) { p.Name = strings.Repeat("n", registry.MaxNameLen+1) }},
			{"control character", func(p *registry.Profile) { p.Name = "a\nb" }},
			{"invalid UTF-8", func(p *registry.Profile) { p.Name = "a\xffb" }},
			{"unknown strategy", func(p *registry.Profile) { p.Strategy = "sometimes" }},
			{"unknown policy", func(p *registry.Profile) { p.ReprovisionPolicy = "maybe" }},
			{"X.509 default type", func(p *registry.Profile) { p.DefaultCredentialType = registry.CredentialX509 }},
			{"empty provision key", func(p *registry.Profile) { p.ProvisionKey = "" }},
			{"no secret", func(p *registry.Profile) { p.ProvisionSecretHash = "" }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				p := profileFixture("invalid")
				tc.mutate(&p)
				wantInvalid(t, s.CreateProfile(t.Context(), &p), "CreateProfile")
			})
		}
		ps, _, err := s.ListProfiles(t.Context(), registry.DefaultOrgID, registry.ListOptions{})
		must(t, err, "ListProfiles")
		if len(ps) != 0 {
			t.Fatalf("invalid profiles were written: %+v", ps)
		}
	}},

	{"CreateConflicts", func(t *testing.T, s registry.Store) {
		first := mkProfile(t, s, "taken")
		cases := []struct {
			name   string
			mutate func(p *registry.Profile)
		}{
			{"same name", func(p *registry.Profile) { p.Name = first.Name }},
			{"same provision key", func(p *registry.Profile) { p.ProvisionKey = first.ProvisionKey }},
			{"same id", func(p *registry.Profile) { p.ID = first.ID }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				p := profileFixture("other")
				tc.mutate(&p)
				wantConflict(t, s.CreateProfile(t.Context(), &p), "profile", "CreateProfile")
			})
		}
		ps, _, err := s.ListProfiles(t.Context(), registry.DefaultOrgID, registry.ListOptions{})
		must(t, err, "ListProfiles")
		if len(ps) != 1 {
			t.Fatalf("after conflicts, %d profiles, want 1", len(ps))
		}
		checkProfile(t, &ps[0], first)
	}},

	{"Update", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "before")
		created := p.CreatedAt
		time.Sleep(2 * timeTolerance) // so UpdatedAt must visibly move
		before := time.Now()
		p.Name = "after"
		p.Description = "changed"
		p.Strategy = registry.StrategyPreProvisioned
		p.ProvisionKey = "key-after"
		p.ProvisionSecretHash = secretHash + "2"
		p.DefaultCredentialType = registry.CredentialMQTTBasic
		p.ReprovisionPolicy = registry.ReprovisionRotate
		must(t, s.UpdateProfile(ctx, p), "UpdateProfile")
		checkRecent(t, "UpdatedAt", p.UpdatedAt, before)
		checkTime(t, "CreatedAt after update", p.CreatedAt, created)

		got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, p)
		_, err = s.GetProfileByProvisionKey(ctx, "key-before")
		wantNotFound(t, err, "GetProfileByProvisionKey(old key)")
		got, err = s.GetProfileByProvisionKey(ctx, "key-after")
		must(t, err, "GetProfileByProvisionKey(new key)")
		checkProfile(t, got, p)
	}},

	{"UpdateRefused", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		other := mkProfile(t, s, "other")
		p := mkProfile(t, s, "mine")
		want := *p

		bad := *p
		bad.Strategy = "sometimes"
		wantInvalid(t, s.UpdateProfile(ctx, &bad), "UpdateProfile(invalid)")

		dup := *p
		dup.Name = other.Name
		wantConflict(t, s.UpdateProfile(ctx, &dup), "profile", "UpdateProfile(name taken)")
		dup = *p
		dup.ProvisionKey = other.ProvisionKey
		wantConflict(t, s.UpdateProfile(ctx, &dup), "profile", "UpdateProfile(key taken)")

		unknown := *p
		unknown.ID = "no-such-profile"
		wantNotFound(t, s.UpdateProfile(ctx, &unknown), "UpdateProfile(unknown id)")
		foreign := *p
		foreign.OrgID = OtherOrgID
		foreign.Name = "foreign"
		wantNotFound(t, s.UpdateProfile(ctx, &foreign), "UpdateProfile(other organisation)")

		got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, &want)
	}},

	{"VersionStartsAtOneAndIncrements", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "versioned")
		if p.Version != 1 {
			t.Fatalf("CreateProfile wrote back Version %d, want 1", p.Version)
		}
		got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		must(t, err, "GetProfile")
		if got.Version != 1 {
			t.Fatalf("stored Version %d after create, want 1", got.Version)
		}
		for want := int64(2); want <= 4; want++ {
			p.Description = fmt.Sprintf("write %d", want)
			must(t, s.UpdateProfile(ctx, p), "UpdateProfile")
			if p.Version != want {
				t.Fatalf("UpdateProfile wrote back Version %d, want %d", p.Version, want)
			}
			got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
			must(t, err, "GetProfile")
			checkProfile(t, got, p)
		}
		got, err = s.GetProfileByProvisionKey(ctx, p.ProvisionKey)
		must(t, err, "GetProfileByProvisionKey")
		checkProfile(t, got, p)
		ps, _, err := s.ListProfiles(ctx, registry.DefaultOrgID, registry.ListOptions{})
		must(t, err, "ListProfiles")
		if len(ps) != 1 {
			t.Fatalf("%d profiles, want 1", len(ps))
		}
		checkProfile(t, &ps[0], p)
	}},

	{"StaleUpdateIsConflict", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		other := mkProfile(t, s, "other")
		read := mkProfile(t, s, "mine") // what a second writer read, at version 1

		// A first writer rotates the secret: version 2.
		rotated := *read
		rotated.ProvisionSecretHash = secretHash + "-rotated"
		must(t, s.UpdateProfile(ctx, &rotated), "UpdateProfile(rotation)")
		if rotated.Version != 2 {
			t.Fatalf("Version after rotation = %d, want 2", rotated.Version)
		}

		// The second writer, based on version 1, would write the old hash back.
		cases := []struct {
			name   string
			mutate func(p *registry.Profile)
		}{
			{"old version", func(p *registry.Profile) { p.Description = "stale" }},
			{"zero version", func(p *registry.Profile) { p.Version = 0; p.Description = "stale" }},
			{"future version", func(p *registry.Profile) { p.Version = 3; p.Description = "stale" }},
			// A stale write is refused as stale, whatever else it would break.
			{"old version and name taken", func(p *registry.Profile) { p.Name = other.Name }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				stale := *read
				tc.mutate(&stale)
				before := stale
				wantConflict(t, s.UpdateProfile(ctx, &stale), "profile", "UpdateProfile(stale)")
				if stale != before {
					t.Errorf("a failed UpdateProfile changed the caller's profile:\n got %+v\nwant %+v", stale, before)
				}
			})
		}
		got, err := s.GetProfile(ctx, registry.DefaultOrgID, read.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, &rotated)

		// Based on the current version, the update applies.
		fresh := *got
		fresh.Description = "fresh"
		must(t, s.UpdateProfile(ctx, &fresh), "UpdateProfile(current version)")
		if fresh.Version != 3 || fresh.ProvisionSecretHash != rotated.ProvisionSecretHash {
			t.Fatalf("after update: Version %d, hash %q; want 3 and the rotated hash", fresh.Version, fresh.ProvisionSecretHash)
		}
	}},

	{"ConcurrentUpdatesOneWins", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		read := mkProfile(t, s, "contended")
		const n = 8
		updates := make([]registry.Profile, n)
		errs := make([]error, n)
		for i := range updates {
			updates[i] = *read
			updates[i].Description = fmt.Sprintf("writer %d", i)
			updates[i].ProvisionSecretHash = fmt.Sprintf("%s-%d", secretHash, i)
		}
		parallel(n, func(i int) { errs[i] = s.UpdateProfile(ctx, &updates[i]) })
		winner := -1
		for i, err := range errs {
			if err == nil {
				if winner >= 0 {
					t.Fatalf("writers %d and %d both updated version %d", winner, i, read.Version)
				}
				winner = i
				continue
			}
			wantConflict(t, err, "profile", fmt.Sprintf("UpdateProfile(writer %d)", i))
			if updates[i].Version != read.Version || updates[i].Description != fmt.Sprintf("writer %d", i) {
				t.Errorf("writer %d failed but its profile was changed: %+v", i, updates[i])
			}
		}
		if winner < 0 {
			t.Fatalf("none of %d concurrent updates succeeded: %v", n, errs)
		}
		if updates[winner].Version != read.Version+1 {
			t.Fatalf("winner's Version = %d, want %d", updates[winner].Version, read.Version+1)
		}
		got, err := s.GetProfile(ctx, registry.DefaultOrgID, read.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, &updates[winner])
	}},

	{"ListPagination", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		var names []string
		for i := range 25 {
			names = append(names, fmt.Sprintf("p-%02d", i))
		}
		shuffled := slices.Clone(names)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		for _, n := range shuffled {
			mkProfile(t, s, n)
		}
		for _, limit := range []int{1, 5, 10, 24, 25, 0, registry.MaxPageSize + 1} {
			t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
				opts := registry.ListOptions{Limit: limit}
				var got []string
				for page := 0; ; page++ {
					if page > len(names) {
						t.Fatal("cursor never ends")
					}
					ps, next, err := s.ListProfiles(ctx, registry.DefaultOrgID, opts)
					must(t, err, "ListProfiles")
					if len(ps) > opts.EffectiveLimit() {
						t.Fatalf("page of %d profiles, limit %d", len(ps), opts.EffectiveLimit())
					}
					if next != "" && len(ps) != opts.EffectiveLimit() {
						t.Fatalf("short page of %d (limit %d) with a next cursor", len(ps), opts.EffectiveLimit())
					}
					for _, p := range ps {
						got = append(got, p.Name)
					}
					if next == "" {
						break
					}
					opts.After = next
				}
				if !slices.Equal(got, names) {
					t.Fatalf("pages gave %v, want %v", got, names)
				}
			})
		}
		_, _, err := s.ListProfiles(ctx, registry.DefaultOrgID, registry.ListOptions{After: "%%% not a cursor %%%"})
		wantInvalid(t, err, "ListProfiles(malformed cursor)")
	}},

	{"Delete", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		unused := mkProfile(t, s, "unused")
		must(t, s.DeleteProfile(ctx, registry.DefaultOrgID, unused.ID), "DeleteProfile(unused)")
		_, err := s.GetProfile(ctx, registry.DefaultOrgID, unused.ID)
		wantNotFound(t, err, "GetProfile(deleted)")
		_, err = s.GetProfileByProvisionKey(ctx, unused.ProvisionKey)
		wantNotFound(t, err, "GetProfileByProvisionKey(deleted)")
		wantNotFound(t, s.DeleteProfile(ctx, registry.DefaultOrgID, unused.ID), "DeleteProfile(again)")

		// The name and key of a deleted profile are free again.
		mkProfile(t, s, "unused")

		used := mkProfile(t, s, "used")
		d := mkDevice(t, s, used.ID, "dev")
		wantConflict(t, s.DeleteProfile(ctx, registry.DefaultOrgID, used.ID), "profile", "DeleteProfile(in use)")
		_, err = s.GetProfile(ctx, registry.DefaultOrgID, used.ID)
		must(t, err, "GetProfile after refused delete")
		must(t, s.DeleteDevice(ctx, registry.DefaultOrgID, d.ID), "DeleteDevice")
		must(t, s.DeleteProfile(ctx, registry.DefaultOrgID, used.ID), "DeleteProfile(no longer used)")
	}},

	{"OrganisationScope", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "scoped")
		_, err := s.GetProfile(ctx, OtherOrgID, p.ID)
		wantNotFound(t, err, "GetProfile(other organisation)")
		ps, next, err := s.ListProfiles(ctx, OtherOrgID, registry.ListOptions{})
		if err != nil || len(ps) != 0 || next != "" {
			t.Fatalf("ListProfiles(other organisation) = %d profiles, %q, %v; want none", len(ps), next, err)
		}
		wantNotFound(t, s.DeleteProfile(ctx, OtherOrgID, p.ID), "DeleteProfile(other organisation)")
		got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		must(t, err, "GetProfile after foreign delete")
		checkProfile(t, got, p)
		// Provision keys are global: the lookup ignores organisations.
		got, err = s.GetProfileByProvisionKey(ctx, p.ProvisionKey)
		must(t, err, "GetProfileByProvisionKey")
		if got.OrgID != registry.DefaultOrgID {
			t.Fatalf("profile OrgID = %q, want %q", got.OrgID, registry.DefaultOrgID)
		}
	}},
}
