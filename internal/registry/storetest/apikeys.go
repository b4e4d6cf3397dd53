package storetest

import (
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

		must(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, k1.ID), "DeleteAPIKey")
		_, err = s.GetAPIKeyByHash(ctx, "hash-1")
		wantNotFound(t, err, "GetAPIKeyByHash(deleted)")
		wantNotFound(t, s.DeleteAPIKey(ctx, registry.DefaultOrgID, k1.ID), "DeleteAPIKey(again)")
		keys, err = s.ListAPIKeys(ctx, registry.DefaultOrgID)
		must(t, err, "ListAPIKeys")
		if len(keys) != 1 || keys[0].ID != k2.ID {
			t.Fatalf("after delete, keys = %+v, want only %s", keys, k2.ID)
		}
		// The hash of a deleted key is free again.
		again := apiKeyFixture("admin", "hash-1")
		must(t, s.CreateAPIKey(ctx, &again), "CreateAPIKey(reused hash)")
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
