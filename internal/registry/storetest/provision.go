package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// Concurrency of the concurrent-commit tests: enough for a group-committing
// store to put many commits in one transaction.
const (
	sameNameWriters = 50
	distinctWriters = 200
)

var provisionTests = []testCase{
	{"Create", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		c := createCommit(p.ID, "new-device", "tok")
		c.Device.Attributes = map[string]any{"fw": "1.2.3"}
		before := time.Now()
		must(t, s.CommitProvision(ctx, c), "CommitProvision")
		d := c.Device
		if d.ID == "" || d.Version < 1 {
			t.Fatalf("written back ID %q, Version %d; want an ID and a version ≥ 1", d.ID, d.Version)
		}
		checkRecent(t, "At", c.At, before)
		checkTime(t, "CreatedAt", d.CreatedAt, c.At)
		checkTime(t, "UpdatedAt", d.UpdatedAt, c.At)
		if d.ProvisionedAt == nil {
			t.Fatal("ProvisionedAt not written back")
		}
		checkTime(t, "ProvisionedAt", *d.ProvisionedAt, c.At)
		if len(c.Revoked) != 0 {
			t.Fatalf("Revoked = %v on a create", c.Revoked)
		}

		got, err := s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "GetDevice")
		checkDevice(t, got, d)
		fc, fd, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "tok")
		must(t, err, "FindActiveCredential")
		if fc.DeviceID != d.ID || fc.OrgID != registry.DefaultOrgID || fc.Status != registry.CredentialActive {
			t.Fatalf("credential = %+v, want an active one of device %s", fc, d.ID)
		}
		checkDevice(t, fd, d)

		evs, err := s.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{DeviceID: d.ID})
		must(t, err, "ListAudit")
		if len(evs) != 1 {
			t.Fatalf("%d audit events for the device, want 1", len(evs))
		}
		e := evs[0]
		if e.Seq <= 0 || e.Action != "provision" || e.Result != "success" || e.Dialect != "thingsboard" ||
			e.Actor != "device" || e.Source != "192.0.2.1" || e.OrgID != registry.DefaultOrgID {
			t.Fatalf("audit event = %+v", e)
		}
		checkTime(t, "audit Time", e.Time, c.At)
	}},

	{"CreateAtGivenTime", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		c := createCommit(p.ID, "dev", "tok")
		at := time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.FixedZone("UTC+9", 9*3600))
		c.At = at
		must(t, s.CommitProvision(ctx, c), "CommitProvision")
		checkTime(t, "At", c.At, at)
		got, err := s.GetDevice(ctx, registry.DefaultOrgID, c.Device.ID)
		must(t, err, "GetDevice")
		checkTime(t, "CreatedAt", got.CreatedAt, at)
		checkTime(t, "UpdatedAt", got.UpdatedAt, at)
		checkTimePtr(t, "ProvisionedAt", got.ProvisionedAt, &at)
		cs, err := s.ListCredentials(ctx, registry.DefaultOrgID, c.Device.ID)
		must(t, err, "ListCredentials")
		checkTime(t, "credential CreatedAt", cs[0].CreatedAt, at)
	}},

	{"CreateRefusedWritesNothing", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		existing := createCommit(p.ID, "existing", "existing-token")
		must(t, s.CommitProvision(t.Context(), existing), "CommitProvision(existing)")
		cases := []struct {
			name    string
			mutate  func(c *registry.ProvisionCommit)
			check   func(t *testing.T, err error)
			devices int
		}{
			{"name taken", func(c *registry.ProvisionCommit) { c.Device.Name = "existing" },
				func(t *testing.T, err error) { wantConflict(t, err, "device", "CommitProvision") }, 1},
			{"credential active elsewhere", func(c *registry.ProvisionCommit) { c.Credentials = append(c.Credentials, token("existing-token")) },
				func(t *testing.T, err error) { wantConflict(t, err, "credential", "CommitProvision") }, 1},
			{"same credential twice", func(c *registry.ProvisionCommit) { c.Credentials = append(c.Credentials, c.Credentials[0]) },
				func(t *testing.T, err error) { wantConflict(t, err, "credential", "CommitProvision") }, 1},
			{"invalid device", func(c *registry.ProvisionCommit) { c.Device.Status = "asleep" },
				func(t *testing.T, err error) { wantInvalid(t, err, "CommitProvision") }, 1},
			{"unknown profile", func(c *registry.ProvisionCommit) { c.Device.ProfileID = "no-such-profile" },
				func(t *testing.T, err error) { wantInvalid(t, err, "CommitProvision") }, 1},
			{"invalid credential", func(c *registry.ProvisionCommit) { c.Credentials[0].Type = "PSK" },
				func(t *testing.T, err error) { wantInvalid(t, err, "CommitProvision") }, 1},
			{"audit event without action", func(c *registry.ProvisionCommit) { c.Audit.Action = "" },
				func(t *testing.T, err error) { wantInvalid(t, err, "CommitProvision") }, 1},
			{"cancelled context", nil,
				func(t *testing.T, err error) {
					if !errors.Is(err, context.Canceled) {
						t.Fatalf("CommitProvision(cancelled context): err = %v, want context.Canceled", err)
					}
				}, 1},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx := t.Context()
				c := createCommit(p.ID, "refused", "refused-token")
				if tc.mutate != nil {
					tc.mutate(c)
				} else {
					ctx = cancelled(ctx)
				}
				tc.check(t, s.CommitProvision(ctx, c))
				if c.Device.Version != 0 || len(c.Revoked) != 0 {
					t.Errorf("a failed commit wrote back Version %d, Revoked %v", c.Device.Version, c.Revoked)
				}
				if n := deviceCount(t, s); n != tc.devices {
					t.Fatalf("%d devices after a refused commit, want %d", n, tc.devices)
				}
				_, _, err := s.FindActiveCredential(t.Context(), registry.CredentialAccessToken, "refused-token")
				wantNotFound(t, err, "FindActiveCredential(credential of a refused commit)")
				if n := auditCount(t, s); n != 1 {
					t.Fatalf("%d audit events after a refused commit, want only the first commit's", n)
				}
				if n := activeCount(t, s, existing.Device.ID); n != 1 {
					t.Fatalf("existing device has %d active credentials, want 1", n)
				}
			})
		}
	}},

	{"UpdatePreProvisioned", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		pre := mkDevice(t, s, p.ID, "mac-aa")
		d := *pre
		d.Attributes = map[string]any{"location": "line 3", "slot": 7}
		c := &registry.ProvisionCommit{Device: &d, ExpectVersion: pre.Version,
			Credentials: []registry.Credential{token("pre-token")}, Audit: auditFixture("provision")}
		time.Sleep(2 * timeTolerance)
		must(t, s.CommitProvision(ctx, c), "CommitProvision(update)")
		if d.Version != pre.Version+1 {
			t.Fatalf("Version = %d, want %d", d.Version, pre.Version+1)
		}
		checkTime(t, "UpdatedAt", d.UpdatedAt, c.At)
		checkTime(t, "CreatedAt", d.CreatedAt, pre.CreatedAt)
		if d.ProvisionedAt == nil {
			t.Fatal("ProvisionedAt not set by the first provisioning")
		}
		checkTime(t, "ProvisionedAt", *d.ProvisionedAt, c.At)
		got, err := s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "GetDevice")
		want := d
		want.Attributes = map[string]any{"location": "line 3", "slot": float64(7)}
		checkDevice(t, got, &want)
		_, fd, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "pre-token")
		must(t, err, "FindActiveCredential")
		checkDevice(t, fd, &want)
		evs, err := s.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{DeviceID: d.ID})
		must(t, err, "ListAudit")
		if len(evs) != 1 {
			t.Fatalf("%d audit events for the device, want 1", len(evs))
		}

		// A later commit keeps a ProvisionedAt it is given.
		first := *d.ProvisionedAt
		c2 := &registry.ProvisionCommit{Device: &d, ExpectVersion: d.Version, Audit: auditFixture("provision")}
		must(t, s.CommitProvision(ctx, c2), "CommitProvision(second update)")
		got, err = s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "GetDevice")
		checkTimePtr(t, "ProvisionedAt", got.ProvisionedAt, &first)
		if got.Version != want.Version+1 {
			t.Fatalf("Version = %d, want %d", got.Version, want.Version+1)
		}
	}},

	{"UpdateRefusedWritesNothing", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		mkDevice(t, s, p.ID, "other-device", token("other-token"))
		pre := mkDevice(t, s, p.ID, "target", token("old-token"))
		cases := []struct {
			name   string
			mutate func(c *registry.ProvisionCommit)
			check  func(t *testing.T, err error)
		}{
			{"stale version", func(c *registry.ProvisionCommit) { c.ExpectVersion = pre.Version - 1 },
				func(t *testing.T, err error) { wantConflict(t, err, "device", "CommitProvision") }},
			{"future version", func(c *registry.ProvisionCommit) { c.ExpectVersion = pre.Version + 1 },
				func(t *testing.T, err error) { wantConflict(t, err, "device", "CommitProvision") }},
			{"renamed onto a taken name", func(c *registry.ProvisionCommit) { c.Device.Name = "other-device" },
				func(t *testing.T, err error) { wantConflict(t, err, "device", "CommitProvision") }},
			{"credential active elsewhere", func(c *registry.ProvisionCommit) { c.Credentials = []registry.Credential{token("other-token")} },
				func(t *testing.T, err error) { wantConflict(t, err, "credential", "CommitProvision") }},
			{"unknown device", func(c *registry.ProvisionCommit) { c.Device.ID = "no-such-device" },
				func(t *testing.T, err error) { wantNotFound(t, err, "CommitProvision") }},
			{"other organisation", func(c *registry.ProvisionCommit) { c.Device.OrgID = OtherOrgID },
				func(t *testing.T, err error) { wantNotFound(t, err, "CommitProvision") }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				d := *pre
				d.Attributes = map[string]any{"changed": true}
				c := &registry.ProvisionCommit{Device: &d, ExpectVersion: pre.Version, RevokeActive: true,
					Credentials: []registry.Credential{token("new-token")}, Audit: auditFixture("provision")}
				tc.mutate(c)
				tc.check(t, s.CommitProvision(t.Context(), c))
				if len(c.Revoked) != 0 {
					t.Errorf("a failed commit wrote back Revoked %v", c.Revoked)
				}
				got, err := s.GetDevice(t.Context(), registry.DefaultOrgID, pre.ID)
				must(t, err, "GetDevice")
				checkDevice(t, got, pre)
				if _, _, err := s.FindActiveCredential(t.Context(), registry.CredentialAccessToken, "old-token"); err != nil {
					t.Fatalf("a failed rotation revoked the old credential: %v", err)
				}
				_, _, err = s.FindActiveCredential(t.Context(), registry.CredentialAccessToken, "new-token")
				wantNotFound(t, err, "FindActiveCredential(credential of a refused commit)")
				if n := auditCount(t, s); n != 0 {
					t.Fatalf("%d audit events after refused commits, want 0", n)
				}
			})
		}
	}},

	{"RotateRevokesActive", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		old := registry.Credential{Type: registry.CredentialAccessToken, LookupKey: "gone", Status: registry.CredentialRevoked}
		pre := mkDevice(t, s, p.ID, "dev", token("t1"),
			registry.Credential{Type: registry.CredentialMQTTBasic, LookupKey: registry.MQTTBasicLookupKey("c", "u"), ClientID: "c", Username: "u"},
			old)
		before, err := s.ListCredentials(ctx, registry.DefaultOrgID, pre.ID)
		must(t, err, "ListCredentials")
		var revokedBefore registry.Credential
		for _, c := range before {
			if c.Status == registry.CredentialRevoked {
				revokedBefore = c
			}
		}

		d := *pre
		c := &registry.ProvisionCommit{Device: &d, ExpectVersion: pre.Version, RevokeActive: true,
			Credentials: []registry.Credential{token("t2")}, Audit: auditFixture("provision")}
		must(t, s.CommitProvision(ctx, c), "CommitProvision(rotate)")

		if len(c.Revoked) != 2 {
			t.Fatalf("Revoked = %d credentials, want the 2 that were active", len(c.Revoked))
		}
		for _, r := range c.Revoked {
			if r.Status != registry.CredentialRevoked || r.RevokedAt == nil || r.DeviceID != pre.ID {
				t.Errorf("Revoked holds %+v, want a revoked credential of the device with RevokedAt", r)
				continue
			}
			checkTime(t, "RevokedAt", *r.RevokedAt, c.At)
			if r.LookupKey != "t1" && r.ClientID != "c" {
				t.Errorf("Revoked holds %+v, which was not active", r)
			}
		}
		after, err := s.ListCredentials(ctx, registry.DefaultOrgID, pre.ID)
		must(t, err, "ListCredentials")
		if len(after) != 4 {
			t.Fatalf("%d credentials after rotation, want 4", len(after))
		}
		for _, r := range c.Revoked {
			checkCredential(t, credentialByID(after, r.ID), &r)
		}
		// The credential revoked earlier keeps its own RevokedAt.
		checkCredential(t, credentialByID(after, revokedBefore.ID), &revokedBefore)
		if n := activeCount(t, s, pre.ID); n != 1 {
			t.Fatalf("%d active credentials after rotation, want 1", n)
		}
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialAccessToken, "t1")
		wantNotFound(t, err, "FindActiveCredential(rotated out)")
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialMQTTBasic, registry.MQTTBasicLookupKey("c", "u"))
		wantNotFound(t, err, "FindActiveCredential(rotated out)")
		_, fd, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "t2")
		must(t, err, "FindActiveCredential(new)")
		if fd.Version != pre.Version+1 {
			t.Fatalf("device version %d, want %d", fd.Version, pre.Version+1)
		}
	}},

	{"RotateMayReissueSameIdentity", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		// A device that brings the same X.509 certificate again.
		cert := registry.Credential{Type: registry.CredentialX509, LookupKey: "f00d", Fingerprint: "f00d"}
		pre := mkDevice(t, s, p.ID, "dev", cert)
		d := *pre
		c := &registry.ProvisionCommit{Device: &d, ExpectVersion: pre.Version, RevokeActive: true,
			Credentials: []registry.Credential{cert}, Audit: auditFixture("provision")}
		must(t, s.CommitProvision(ctx, c), "CommitProvision(rotate to the same certificate)")
		if len(c.Revoked) != 1 {
			t.Fatalf("Revoked = %d credentials, want 1", len(c.Revoked))
		}
		fc, _, err := s.FindActiveCredential(ctx, registry.CredentialX509, "f00d")
		must(t, err, "FindActiveCredential")
		if fc.ID == c.Revoked[0].ID {
			t.Fatal("the revoked credential is still the active one")
		}
	}},

	{"RevokedKeyMayBeReused", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		first := createCommit(p.ID, "first", "recycled")
		must(t, s.CommitProvision(ctx, first), "CommitProvision(first)")
		cs, err := s.ListCredentials(ctx, registry.DefaultOrgID, first.Device.ID)
		must(t, err, "ListCredentials")
		_, err = s.RevokeCredential(ctx, registry.DefaultOrgID, cs[0].ID)
		must(t, err, "RevokeCredential")
		second := createCommit(p.ID, "second", "recycled")
		must(t, s.CommitProvision(ctx, second), "CommitProvision(reusing a revoked key)")
		_, fd, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "recycled")
		must(t, err, "FindActiveCredential")
		if fd.ID != second.Device.ID {
			t.Fatalf("key authenticates %q, want %q", fd.Name, "second")
		}
	}},

	{"ConcurrentSameName", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		errs := make([]error, sameNameWriters)
		parallel(sameNameWriters, func(i int) {
			errs[i] = s.CommitProvision(context.Background(), createCommit(p.ID, "contested", fmt.Sprintf("tok-%d", i)))
		})
		winners := 0
		for _, err := range errs {
			if err == nil {
				winners++
				continue
			}
			wantConflict(t, err, "device", "concurrent CommitProvision")
		}
		if winners != 1 {
			t.Fatalf("%d of %d concurrent creates of one name succeeded, want exactly 1", winners, sameNameWriters)
		}
		if n := deviceCount(t, s); n != 1 {
			t.Fatalf("%d devices, want 1", n)
		}
		if n := auditCount(t, s); n != 1 {
			t.Fatalf("%d audit events, want 1 (losers write nothing)", n)
		}
		d, err := s.GetDeviceByName(t.Context(), registry.DefaultOrgID, "contested")
		must(t, err, "GetDeviceByName")
		if n := activeCount(t, s, d.ID); n != 1 {
			t.Fatalf("%d credentials on the device, want 1", n)
		}
	}},

	{"ConcurrentDistinct", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		errs := make([]error, distinctWriters)
		commits := make([]*registry.ProvisionCommit, distinctWriters)
		parallel(distinctWriters, func(i int) {
			commits[i] = createCommit(p.ID, fmt.Sprintf("dev-%03d", i), fmt.Sprintf("tok-%03d", i))
			errs[i] = s.CommitProvision(context.Background(), commits[i])
		})
		for i, err := range errs {
			must(t, err, fmt.Sprintf("CommitProvision(dev-%03d)", i))
		}
		if n := deviceCount(t, s); n != distinctWriters {
			t.Fatalf("%d devices, want %d", n, distinctWriters)
		}
		evs, err := s.ListAudit(t.Context(), registry.DefaultOrgID, registry.AuditFilter{Limit: registry.MaxPageSize})
		must(t, err, "ListAudit")
		if len(evs) != distinctWriters {
			t.Fatalf("%d audit events, want %d", len(evs), distinctWriters)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Seq >= evs[i-1].Seq {
				t.Fatalf("audit seqs not strictly decreasing: %d then %d", evs[i-1].Seq, evs[i].Seq)
			}
		}
		for i, c := range commits {
			_, fd, err := s.FindActiveCredential(t.Context(), registry.CredentialAccessToken, fmt.Sprintf("tok-%03d", i))
			must(t, err, "FindActiveCredential")
			if fd.ID != c.Device.ID || fd.Version != c.Device.Version {
				t.Fatalf("token %d authenticates %s v%d, want %s v%d", i, fd.ID, fd.Version, c.Device.ID, c.Device.Version)
			}
		}
	}},

	{"ConcurrentMixedOutcomes", func(t *testing.T, s registry.Store) {
		// Failing commits interleaved with good ones: in a group commit,
		// each must fail alone.
		p := mkProfile(t, s, "p")
		must(t, s.CommitProvision(t.Context(), createCommit(p.ID, "holder", "held")), "CommitProvision(holder)")
		const n = 100
		errs := make([]error, n)
		parallel(n, func(i int) {
			key := fmt.Sprintf("tok-%d", i)
			switch i % 4 {
			case 1:
				key = "held" // credential conflict
			case 2:
				key = "" // no credential, fine
			case 3:
				c := createCommit(p.ID, "holder", key) // name conflict
				errs[i] = s.CommitProvision(context.Background(), c)
				return
			}
			errs[i] = s.CommitProvision(context.Background(), createCommit(p.ID, fmt.Sprintf("dev-%03d", i), key))
		})
		want := 1
		for i, err := range errs {
			switch i % 4 {
			case 0, 2:
				must(t, err, fmt.Sprintf("CommitProvision(%d)", i))
				want++
			case 1:
				wantConflict(t, err, "credential", fmt.Sprintf("CommitProvision(%d)", i))
				_, err := s.GetDeviceByName(t.Context(), registry.DefaultOrgID, fmt.Sprintf("dev-%03d", i))
				wantNotFound(t, err, "GetDeviceByName(device of a refused commit)")
			case 3:
				wantConflict(t, err, "device", fmt.Sprintf("CommitProvision(%d)", i))
			}
		}
		if got := deviceCount(t, s); got != want {
			t.Fatalf("%d devices, want %d", got, want)
		}
		if got := auditCount(t, s); got != want {
			t.Fatalf("%d audit events, want %d", got, want)
		}
	}},

	{"ConcurrentSameVersion", func(t *testing.T, s registry.Store) {
		// Concurrent rotations of one device read at the same version:
		// optimistic concurrency lets exactly one through.
		p := mkProfile(t, s, "p")
		pre := mkDevice(t, s, p.ID, "dev", token("t0"))
		const n = 20
		errs := make([]error, n)
		parallel(n, func(i int) {
			d := *pre
			c := &registry.ProvisionCommit{Device: &d, ExpectVersion: pre.Version, RevokeActive: true,
				Credentials: []registry.Credential{token(fmt.Sprintf("t%d", i+1))}, Audit: auditFixture("provision")}
			errs[i] = s.CommitProvision(context.Background(), c)
		})
		winners := 0
		for _, err := range errs {
			if err == nil {
				winners++
				continue
			}
			wantConflict(t, err, "device", "concurrent CommitProvision(update)")
		}
		if winners != 1 {
			t.Fatalf("%d of %d concurrent updates at one version succeeded, want 1", winners, n)
		}
		got, err := s.GetDevice(t.Context(), registry.DefaultOrgID, pre.ID)
		must(t, err, "GetDevice")
		if got.Version != pre.Version+1 {
			t.Fatalf("Version = %d, want %d", got.Version, pre.Version+1)
		}
		if c := activeCount(t, s, pre.ID); c != 1 {
			t.Fatalf("%d active credentials, want 1", c)
		}
		if c := auditCount(t, s); c != 1 {
			t.Fatalf("%d audit events, want 1", c)
		}
	}},
}

// parallel runs fn(0..n-1) in n goroutines released at once.
func parallel(n int, fn func(i int)) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
}
