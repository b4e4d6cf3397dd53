package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// interleavingStore runs a hook right before the first UpdateProfile or
// DeleteAPIKey it is asked for, on the real store: a write of someone else
// that gets in between a handler's read and its write.
type interleavingStore struct {
	registry.Store
	mu           sync.Mutex
	beforeUpdate func(ctx context.Context)
	beforeDelete func(ctx context.Context)
}

func (s *interleavingStore) take(hook *func(ctx context.Context)) func(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := *hook
	*hook = nil
	return h
}

func (s *interleavingStore) UpdateProfile(ctx context.Context, p *registry.Profile) error {
	if h := s.take(&s.beforeUpdate); h != nil {
		h(ctx)
	}
	return s.Store.UpdateProfile(ctx, p)
}

func (s *interleavingStore) DeleteAPIKey(ctx context.Context, orgID, id string) error {
	if h := s.take(&s.beforeDelete); h != nil {
		h(ctx)
	}
	return s.Store.DeleteAPIKey(ctx, orgID, id)
}

// interleave makes the API use an interleavingStore over e's store.
func (e *env) interleave() *interleavingStore {
	is := &interleavingStore{Store: e.store}
	e.api.store = is
	return is
}

// storedProfile reads a profile straight from the store.
func (e *env) storedProfile(id string) *registry.Profile {
	e.t.Helper()
	p, err := e.store.GetProfile(context.Background(), registry.DefaultOrgID, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func TestProfileVersion(t *testing.T) {
	e := newEnv(t)
	p := e.profile("versioned", registry.StrategyAllowCreate)
	if p.Version != 1 {
		t.Fatalf("created profile at version %d, want 1", p.Version)
	}
	var got map[string]any
	e.must(http.StatusOK, "GET", "/api/profiles/"+p.ID, nil, &got)
	if got["version"] != 1.0 {
		t.Fatalf("GET shows version %v, want 1", got["version"])
	}

	var up registry.Profile
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"description":"a"}`, &up)
	if up.Version != 2 {
		t.Fatalf("PATCH answered version %d, want 2", up.Version)
	}
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"description":"b","version":2}`, &up)
	if up.Version != 3 || up.Description != "b" {
		t.Fatalf("PATCH at the current version: %+v", up)
	}
	var rot ProfileWithSecret
	e.must(http.StatusOK, "POST", "/api/profiles/"+p.ID+"/rotate-secret", nil, &rot)
	if rot.Version != 4 {
		t.Fatalf("rotate-secret answered version %d, want 4", rot.Version)
	}

	// A PATCH based on a version read before the rotation is refused and
	// changes nothing.
	for _, v := range []int64{3, 0, 5} {
		r := e.do(registry.RoleOperator, "PATCH", "/api/profiles/"+p.ID,
			fmt.Sprintf(`{"description":"stale","provisionDeviceSecret":"old-secret","version":%d}`, v))
		if r.status != http.StatusConflict || r.err(t).Code != CodeConflict {
			t.Fatalf("PATCH at version %d: status %d, want 409: %s", v, r.status, r.body)
		}
		if msg := r.err(t).Message; !strings.Contains(msg, "version 4") {
			t.Errorf("PATCH at version %d: message %q does not name the current version", v, msg)
		}
	}
	stored := e.storedProfile(p.ID)
	if stored.Version != 4 || stored.Description != "b" || !secret.Verify(rot.ProvisionDeviceSecret, stored.ProvisionSecretHash) {
		t.Fatalf("stale PATCHes wrote: %+v", stored)
	}
	if r := e.do(registry.RoleOperator, "PATCH", "/api/profiles/"+p.ID, `{"version":"4"}`); r.status != http.StatusBadRequest {
		t.Errorf("string version: status %d, want 400", r.status)
	}
}

// TestPatchRacingRotation is the lost update the version check prevents: a
// PATCH reads the profile, a rotation writes a new secret, then the PATCH
// writes what it read, the old secret hash included.
func TestPatchRacingRotation(t *testing.T) {
	e := newEnv(t)
	p := e.profile("raced", registry.StrategyAllowCreate)
	is := e.interleave()
	var rotated string
	is.beforeUpdate = func(ctx context.Context) {
		q, err := e.store.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		if err != nil {
			t.Error(err)
			return
		}
		rotated = secret.Generate(secret.TokenLength)
		q.ProvisionSecretHash = secret.Hash(rotated)
		if err := e.store.UpdateProfile(ctx, q); err != nil {
			t.Error(err)
		}
	}
	r := e.do(registry.RoleOperator, "PATCH", "/api/profiles/"+p.ID, `{"description":"changed"}`)
	if r.status != http.StatusConflict || r.err(t).Code != CodeConflict {
		t.Fatalf("PATCH racing a rotation: status %d, want 409: %s", r.status, r.body)
	}
	if msg := r.err(t).Message; !strings.Contains(msg, "changed while") || !strings.Contains(msg, "retry") {
		t.Errorf("message %q does not say the profile changed meanwhile", msg)
	}
	stored := e.storedProfile(p.ID)
	if !secret.Verify(rotated, stored.ProvisionSecretHash) {
		t.Fatal("the PATCH wrote the old provision secret back over the rotated one")
	}
	if stored.Description == "changed" || stored.Version != 2 {
		t.Fatalf("stored %+v, want the rotation only (version 2)", stored)
	}

	// Retried, the PATCH applies on top of the rotation.
	var up registry.Profile
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"description":"changed"}`, &up)
	stored = e.storedProfile(p.ID)
	if up.Version != 3 || stored.Description != "changed" || !secret.Verify(rotated, stored.ProvisionSecretHash) {
		t.Fatalf("retried PATCH: answered %+v, stored %+v", up, stored)
	}

	// A uniqueness conflict keeps its own message.
	e.profile("taken", registry.StrategyAllowCreate)
	r = e.do(registry.RoleOperator, "PATCH", "/api/profiles/"+p.ID, `{"name":"taken"}`)
	if r.status != http.StatusConflict || !strings.Contains(r.err(t).Message, `"taken" already exists`) {
		t.Fatalf("name taken: %d %s", r.status, r.body)
	}
}

func TestRotationRacingPatch(t *testing.T) {
	e := newEnv(t)
	p := e.profile("raced", registry.StrategyAllowCreate)
	is := e.interleave()
	is.beforeUpdate = func(ctx context.Context) {
		q, err := e.store.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		if err != nil {
			t.Error(err)
			return
		}
		q.Description = "patched meanwhile"
		if err := e.store.UpdateProfile(ctx, q); err != nil {
			t.Error(err)
		}
	}
	r := e.do(registry.RoleOperator, "POST", "/api/profiles/"+p.ID+"/rotate-secret", nil)
	if r.status != http.StatusConflict {
		t.Fatalf("rotation racing a PATCH: status %d, want 409: %s", r.status, r.body)
	}
	if e := r.err(t); e.Code != CodeConflict || e.Message != "the profile changed while rotating its secret; retry" {
		t.Errorf("answer %+v", e)
	}
	if strings.Contains(string(r.body), "provisionDeviceSecret") {
		t.Error("a refused rotation shows a secret")
	}
	stored := e.storedProfile(p.ID)
	if !secret.Verify(p.ProvisionDeviceSecret, stored.ProvisionSecretHash) || stored.Description != "patched meanwhile" || stored.Version != 2 {
		t.Fatalf("stored %+v, want the PATCH only, with the original secret", stored)
	}
	var audit List[registry.AuditEvent]
	e.must(http.StatusOK, "GET", "/api/audit?action=profile.rotate-secret", nil, &audit)
	if len(audit.Items) != 0 {
		t.Errorf("a refused rotation was audited: %+v", audit.Items)
	}

	var rot ProfileWithSecret
	e.must(http.StatusOK, "POST", "/api/profiles/"+p.ID+"/rotate-secret", nil, &rot)
	stored = e.storedProfile(p.ID)
	if !secret.Verify(rot.ProvisionDeviceSecret, stored.ProvisionSecretHash) || stored.Description != "patched meanwhile" || rot.Version != 3 {
		t.Fatalf("retried rotation: answered %+v, stored %+v", rot.Profile, stored)
	}
}

// TestConcurrentPatchesAndRotations races real requests: no write may be
// lost, so the stored secret is the one of the last successful rotation.
func TestConcurrentPatchesAndRotations(t *testing.T) {
	e := newEnv(t)
	p := e.profile("contended", registry.StrategyAllowCreate)
	const n = 16
	type answer struct {
		status  int
		version int64
		secret  string
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			var r resp
			if i%2 == 0 {
				r = e.doNoFatal(registry.RoleOperator, "POST", "/api/profiles/"+p.ID+"/rotate-secret", nil)
			} else {
				r = e.doNoFatal(registry.RoleOperator, "PATCH", "/api/profiles/"+p.ID, fmt.Sprintf(`{"description":"writer %d"}`, i))
			}
			answers[i].status = r.status
			if r.status == http.StatusOK {
				var q ProfileWithSecret
				if err := json.Unmarshal(r.body, &q); err != nil {
					t.Errorf("request %d: %v: %s", i, err, r.body)
				}
				answers[i].version, answers[i].secret = q.Version, q.ProvisionDeviceSecret
			}
		})
	}
	close(start)
	wg.Wait()

	versions := map[int64]int{}
	ok, last := 0, answer{version: 1, secret: p.ProvisionDeviceSecret}
	for i, a := range answers {
		switch a.status {
		case http.StatusOK:
			ok++
			if j, dup := versions[a.version]; dup {
				t.Fatalf("requests %d and %d both wrote version %d", j, i, a.version)
			}
			versions[a.version] = i
			if a.secret != "" && a.version > last.version {
				last = a
			}
		case http.StatusConflict:
		default:
			t.Fatalf("request %d: status %d", i, a.status)
		}
	}
	stored := e.storedProfile(p.ID)
	if stored.Version != int64(1+ok) {
		t.Fatalf("stored version %d after %d successful writes, want %d", stored.Version, ok, 1+ok)
	}
	if !secret.Verify(last.secret, stored.ProvisionSecretHash) {
		t.Fatalf("stored secret is not the one of the last successful rotation (version %d)", last.version)
	}
}

// TestDeleteRacingLastAdminKey is the race the check inside the store's
// transaction prevents: another deletion removes the other admin key after
// the handler has looked at the keys, before its own deletion.
func TestDeleteRacingLastAdminKey(t *testing.T) {
	e := newEnv(t)
	var second CreatedAPIKey
	e.must(http.StatusCreated, "POST", "/api/apikeys", CreateAPIKeyRequest{Name: "second-admin", Role: registry.RoleAdmin}, &second)
	is := e.interleave()
	is.beforeDelete = func(ctx context.Context) {
		if err := e.store.DeleteAPIKey(ctx, registry.DefaultOrgID, second.ID); err != nil {
			t.Error(err)
		}
	}
	r := e.do(registry.RoleAdmin, "DELETE", "/api/apikeys/"+e.ids[registry.RoleAdmin], nil)
	if r.status != http.StatusConflict || !strings.Contains(r.err(t).Message, "last admin key") {
		t.Fatalf("deleting the admin key while the other one goes: %d %s", r.status, r.body)
	}
	wantAdminKeys(t, e, 1)
	// The refused deletion was not audited.
	var audit List[registry.AuditEvent]
	e.must(http.StatusOK, "GET", "/api/audit?action=apikey.delete", nil, &audit)
	if len(audit.Items) != 0 {
		t.Errorf("a refused deletion was audited: %+v", audit.Items)
	}
}

// TestConcurrentDeletesOfAdminKeys deletes the two admin keys at once over
// HTTP, each request authenticated by the key it deletes (so neither can be
// refused as unauthorized): exactly one must succeed, whatever the
// interleaving.
func TestConcurrentDeletesOfAdminKeys(t *testing.T) {
	for round := range 5 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			e := newEnv(t)
			var second CreatedAPIKey
			e.must(http.StatusCreated, "POST", "/api/apikeys", CreateAPIKeyRequest{Name: "second-admin", Role: registry.RoleAdmin}, &second)
			e.keys["second"] = second.Key
			targets := []struct{ as, id string }{{registry.RoleAdmin, e.ids[registry.RoleAdmin]}, {"second", second.ID}}
			statuses := make([]int, len(targets))
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, tg := range targets {
				wg.Go(func() {
					<-start
					statuses[i] = e.doNoFatal(tg.as, "DELETE", "/api/apikeys/"+tg.id, nil).status
				})
			}
			close(start)
			wg.Wait()
			deleted := 0
			for i, st := range statuses {
				switch st {
				case http.StatusNoContent:
					deleted++
				case http.StatusConflict:
				default:
					t.Fatalf("request %d: status %d", i, st)
				}
			}
			if deleted != 1 {
				t.Fatalf("statuses %v: %d deletions, want exactly 1", statuses, deleted)
			}
			wantAdminKeys(t, e, 1)
		})
	}
}

// wantAdminKeys checks how many admin-role API keys the store holds.
func wantAdminKeys(t *testing.T, e *env, want int) {
	t.Helper()
	ks, err := e.store.ListAPIKeys(context.Background(), registry.DefaultOrgID)
	if err != nil {
		t.Fatal(err)
	}
	admins := 0
	for _, k := range ks {
		if k.Role == registry.RoleAdmin {
			admins++
		}
	}
	if admins != want {
		t.Fatalf("%d admin keys left, want %d", admins, want)
	}
}
