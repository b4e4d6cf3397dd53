package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

func apiKeyFixture(name, hash string) registry.APIKey {
	return registry.APIKey{OrgID: registry.DefaultOrgID, Name: name, Role: registry.RoleAdmin, Hash: hash}
}

func checkAPIKey(t *testing.T, got, want *registry.APIKey) {
	t.Helper()
	checkTime(t, "api key CreatedAt", got.CreatedAt, want.CreatedAt)
	g, w := *got, *want
	g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}
	if g != w {
		t.Errorf("api key = %+v\nwant      %+v", g, w)
	}
}

var apiKeyTests = []testCase{
	{"CreateGetListDelete", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		before := time.Now()
		k1 := apiKeyFixture("admin", "hash-1")
		must(t, s.CreateAPIKey(ctx, &k1), "CreateAPIKey")
		if k1.ID == "" {
			t.Fatal("CreateAPIKey did not set ID")
		}
		checkRecent(t, "CreatedAt", k1.CreatedAt, before)
		k2 := apiKeyFixture("ci", "hash-2")
		k2.Role = registry.RoleViewer
		k2.ID = "a0000000-0000-4000-8000-000000000001"
		k2.CreatedAt = time.Now().Add(time.Minute)
		must(t, s.CreateAPIKey(ctx, &k2), "CreateAPIKey")

		got, err := s.GetAPIKeyByHash(ctx, "hash-1")
		must(t, err, "GetAPIKeyByHash")
		checkAPIKey(t, got, &k1)
		got, err = s.GetAPIKeyByHash(ctx, "hash-2")
		must(t, err, "GetAPIKeyByHash")
		checkAPIKey(t, got, &k2)
		_, err = s.GetAPIKeyByHash(ctx, "no-such-hash")
		wantNotFound(t, err, "GetAPIKeyByHash(unknown)")

		keys, err := s.ListAPIKeys(ctx, registry.DefaultOrgID)
		must(t, err, "ListAPIKeys")
		if len(keys) != 2 {
			t.Fatalf("%d keys, want 2", len(keys))
		}
		checkAPIKey(t, &keys[0], &k1)
		checkAPIKey(t, &keys[1], &k2)

		// k1 is the only admin key: give it a successor so it may go.
		spare := apiKeyFixture("spare", "hash-3")
		must(t, s.CreateAPIKey(ctx, &spare), "CreateAPIKey(spare admin)")
		must(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, k1.ID), "DeleteAPIKey")
		_, err = s.GetAPIKeyByHash(ctx, "hash-1")
		wantNotFound(t, err, "GetAPIKeyByHash(deleted)")
		wantNotFound(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, k1.ID), "DeleteAPIKey(again)")
		keys, err = s.ListAPIKeys(ctx, registry.DefaultOrgID)
		must(t, err, "ListAPIKeys")
		if len(keys) != 2 || keys[0].ID != spare.ID || keys[1].ID != k2.ID {
			t.Fatalf("after delete, keys = %+v, want %s and %s", keys, spare.ID, k2.ID)
		}
		// The hash of a deleted key is free again.
		again := apiKeyFixture("admin", "hash-1")
		must(t, s.CreateAPIKey(ctx, &again), "CreateAPIKey(reused hash)")
	}},

	{"LastAdminKeyStays", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		admin := apiKeyFixture("admin", "hash-admin")
		must(t, s.CreateAPIKey(ctx, &admin), "CreateAPIKey(admin)")
		viewer := apiKeyFixture("viewer", "hash-viewer")
		viewer.Role = registry.RoleViewer
		must(t, s.CreateAPIKey(ctx, &viewer), "CreateAPIKey(viewer)")

		err := s.DeleteAPIKey(ctx, registry.DefaultOrgID, admin.ID)
		wantConflict(t, err, "apikey", "DeleteAPIKey(last admin key)")
		var ce *registry.ConflictError
		if errors.As(err, &ce) && !strings.Contains(ce.Detail, "last admin key") {
			t.Errorf("ConflictError.Detail = %q, want it to mention the last admin key", ce.Detail)
		}
		_, err = s.GetAPIKeyByHash(ctx, admin.Hash)
		must(t, err, "GetAPIKeyByHash(refused delete)")
		// Unknown keys are still not found, not refused.
		wantNotFound(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, "no-such-key"), "DeleteAPIKey(unknown)")

		// Keys of other roles never count as admin keys, and may go.
		must(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, viewer.ID), "DeleteAPIKey(viewer)")

		// With a second admin key, either may go, but not both.
		second := apiKeyFixture("second", "hash-second")
		must(t, s.CreateAPIKey(ctx, &second), "CreateAPIKey(second admin)")
		must(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, admin.ID), "DeleteAPIKey(one of two admin keys)")
		wantConflict(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, second.ID), "apikey", "DeleteAPIKey(now the last admin key)")
		keys, err := s.ListAPIKeys(ctx, registry.DefaultOrgID)
		must(t, err, "ListAPIKeys")
		if len(keys) != 1 || keys[0].ID != second.ID {
			t.Fatalf("keys = %+v, want only %s", keys, second.ID)
		}
	}},

	{"ConcurrentDeletesKeepOneAdmin", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		viewer := apiKeyFixture("viewer", "hash-viewer")
		viewer.Role = registry.RoleViewer
		must(t, s.CreateAPIKey(ctx, &viewer), "CreateAPIKey(viewer)")
		// Round 1 deletes the two admin keys at once; round 2 the survivor
		// and four new ones. Each time exactly one deletion must be refused.
		var admins []string
		for round, total := range []int{2, 5} {
			for i := len(admins); i < total; i++ {
				k := apiKeyFixture(fmt.Sprintf("admin-%d-%d", round, i), fmt.Sprintf("hash-%d-%d", round, i))
				must(t, s.CreateAPIKey(ctx, &k), "CreateAPIKey(admin)")
				admins = append(admins, k.ID)
			}
			errs := make([]error, len(admins))
			parallel(len(admins), func(i int) { errs[i] = s.DeleteAPIKey(ctx, registry.DefaultOrgID, admins[i]) })
			var refused []string
			for i, err := range errs {
				if err != nil {
					wantConflict(t, err, "apikey", fmt.Sprintf("round %d: DeleteAPIKey(admin %d)", round, i))
					refused = append(refused, admins[i])
				}
			}
			if len(refused) != 1 {
				t.Fatalf("round %d: %d of %d concurrent deletions of every admin key refused, want exactly 1", round, len(refused), len(admins))
			}
			keys, err := s.ListAPIKeys(ctx, registry.DefaultOrgID)
			must(t, err, "ListAPIKeys")
			var left []string
			for _, k := range keys {
				if k.Role == registry.RoleAdmin {
					left = append(left, k.ID)
				}
			}
			if len(keys) != 2 || len(left) != 1 || left[0] != refused[0] {
				t.Fatalf("round %d: keys = %+v, want the viewer key and admin key %s", round, keys, refused[0])
			}
			admins = left
		}
	}},

	{"Conflicts", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		k := apiKeyFixture("first", "hash")
		must(t, s.CreateAPIKey(ctx, &k), "CreateAPIKey")
		dup := apiKeyFixture("second", "hash")
		wantConflict(t, s.CreateAPIKey(ctx, &dup), "apikey", "CreateAPIKey(same hash)")
		dup = apiKeyFixture("second", "other-hash")
		dup.ID = k.ID
		wantConflict(t, s.CreateAPIKey(ctx, &dup), "apikey", "CreateAPIKey(same id)")
		keys, err := s.ListAPIKeys(ctx, registry.DefaultOrgID)
		must(t, err, "ListAPIKeys")
		if len(keys) != 1 {
			t.Fatalf("%d keys after conflicts, want 1", len(keys))
		}
	}},

	{"Invalid", func(t *testing.T, s registry.Store) {
		cases := []struct {
			name   string
			mutate func(k *registry.APIKey)
		}{
			{"empty name", func(k *registry.APIKey) { k.Name = "" }},
			{"control character", func(k *registry.APIKey) { k.Name = "a\x00b" }},
			{"unknown role", func(k *registry.APIKey) { k.Role = "root" }},
			{"no hash", func(k *registry.APIKey) { k.Hash = "" }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				k := apiKeyFixture("key", "hash")
				tc.mutate(&k)
				wantInvalid(t, s.CreateAPIKey(t.Context(), &k), "CreateAPIKey")
			})
		}
		keys, err := s.ListAPIKeys(t.Context(), registry.DefaultOrgID)
		must(t, err, "ListAPIKeys")
		if len(keys) != 0 {
			t.Fatalf("invalid keys were written: %+v", keys)
		}
	}},

	{"OrganisationScope", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		k := apiKeyFixture("admin", "hash")
		must(t, s.CreateAPIKey(ctx, &k), "CreateAPIKey")
		keys, err := s.ListAPIKeys(ctx, OtherOrgID)
		if err != nil || len(keys) != 0 {
			t.Fatalf("ListAPIKeys(other organisation) = %d keys, %v; want none", len(keys), err)
		}
		wantNotFound(t, s.DeleteAPIKey(ctx, OtherOrgID, k.ID), "DeleteAPIKey(other organisation)")
		// The hash lookup spans organisations: the key is still there.
		got, err := s.GetAPIKeyByHash(ctx, "hash")
		must(t, err, "GetAPIKeyByHash")
		checkAPIKey(t, got, &k)
	}},
}
