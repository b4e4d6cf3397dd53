package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

var auditTests = []testCase{
	{"AppendAndList", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		at := time.Date(2025, 6, 7, 8, 9, 10, 111222333, time.FixedZone("UTC-7", -7*3600))
		e1 := auditFixture("profile.create")
		e1.Time = at
		e1.Actor, e1.ProfileID, e1.Detail = "api-key:k1", "p1", "created profile p1"
		e2 := auditFixture("provision")
		e2.Time = at.Add(time.Second)
		e2.Result, e2.DeviceID = "bad-secret", "d1"
		must(t, s.AppendAudit(ctx, e1, e2), "AppendAudit")
		before := time.Now()
		e3 := auditFixture("device.disable") // zero Time: set by the store
		must(t, s.AppendAudit(ctx, e3), "AppendAudit")
		must(t, s.AppendAudit(ctx), "AppendAudit(nothing)")

		evs, err := s.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{})
		must(t, err, "ListAudit")
		if len(evs) != 3 {
			t.Fatalf("%d events, want 3", len(evs))
		}
		if evs[0].Action != "device.disable" || evs[1].Action != "provision" || evs[2].Action != "profile.create" {
			t.Fatalf("events not newest first: %s, %s, %s", evs[0].Action, evs[1].Action, evs[2].Action)
		}
		if !(evs[0].Seq > evs[1].Seq && evs[1].Seq > evs[2].Seq && evs[2].Seq > 0) {
			t.Fatalf("seqs %d, %d, %d: want positive and increasing with appends", evs[2].Seq, evs[1].Seq, evs[0].Seq)
		}
		checkRecent(t, "store-set Time", evs[0].Time, before)
		for i, want := range []registry.AuditEvent{e2, e1} {
			got := evs[i+1]
			checkTime(t, "Time", got.Time, want.Time)
			want.Seq, want.Time, got.Time = got.Seq, time.Time{}, time.Time{}
			if got != want {
				t.Errorf("event = %+v\nwant    %+v", got, want)
			}
		}
	}},

	{"Filters", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		base := time.Now().Add(-time.Hour).Truncate(time.Second)
		var evs []registry.AuditEvent
		for i := range 12 {
			e := auditFixture([]string{"provision", "device.disable", "profile.create"}[i%3])
			e.Result = []string{"success", "bad-secret"}[i%2]
			e.DeviceID = fmt.Sprintf("d%d", i%4)
			e.Time = base.Add(time.Duration(i) * time.Minute)
			e.Detail = fmt.Sprint(i)
			evs = append(evs, e)
		}
		must(t, s.AppendAudit(ctx, evs...), "AppendAudit")
		match := func(keep func(i int) bool) []string {
			var out []string
			for i := len(evs) - 1; i >= 0; i-- {
				if keep(i) {
					out = append(out, evs[i].Detail)
				}
			}
			return out
		}
		cases := []struct {
			name string
			f    registry.AuditFilter
			want []string
		}{
			{"none", registry.AuditFilter{}, match(func(int) bool { return true })},
			{"device", registry.AuditFilter{DeviceID: "d1"}, match(func(i int) bool { return i%4 == 1 })},
			{"action", registry.AuditFilter{Action: "provision"}, match(func(i int) bool { return i%3 == 0 })},
			{"result", registry.AuditFilter{Result: "bad-secret"}, match(func(i int) bool { return i%2 == 1 })},
			{"since (inclusive)", registry.AuditFilter{Since: base.Add(8 * time.Minute)}, match(func(i int) bool { return i >= 8 })},
			{"combined", registry.AuditFilter{Action: "provision", Result: "success"}, match(func(i int) bool { return i%3 == 0 && i%2 == 0 })},
			{"no match", registry.AuditFilter{DeviceID: "nobody"}, nil},
			{"limit", registry.AuditFilter{Limit: 5}, match(func(i int) bool { return i >= 7 })},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.ListAudit(ctx, registry.DefaultOrgID, tc.f)
				must(t, err, "ListAudit")
				var details []string
				for _, e := range got {
					details = append(details, e.Detail)
				}
				if !slices.Equal(details, tc.want) {
					t.Fatalf("ListAudit(%+v) = %v, want %v", tc.f, details, tc.want)
				}
			})
		}
	}},

	{"BeforeCursor", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		var evs []registry.AuditEvent
		for i := range 23 {
			e := auditFixture("provision")
			e.Detail = fmt.Sprint(i)
			e.DeviceID = fmt.Sprintf("d%d", i%2)
			evs = append(evs, e)
		}
		must(t, s.AppendAudit(ctx, evs...), "AppendAudit")
		for _, f := range []registry.AuditFilter{{Limit: 5}, {Limit: 5, DeviceID: "d1"}, {Limit: 1}} {
			var got []string
			for page := 0; ; page++ {
				if page > len(evs) {
					t.Fatal("the Before cursor never ends")
				}
				es, err := s.ListAudit(ctx, registry.DefaultOrgID, f)
				must(t, err, "ListAudit")
				if len(es) > f.Limit {
					t.Fatalf("page of %d events, limit %d", len(es), f.Limit)
				}
				for _, e := range es {
					got = append(got, e.Detail)
				}
				if len(es) < f.Limit {
					break
				}
				f.Before = es[len(es)-1].Seq
			}
			var want []string
			for i := len(evs) - 1; i >= 0; i-- {
				if f.DeviceID == "" || evs[i].DeviceID == f.DeviceID {
					want = append(want, evs[i].Detail)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("paging with %+v gave %v, want %v", f, got, want)
			}
		}
	}},

	{"InvalidWritesNothing", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		good := auditFixture("provision")
		noAction := auditFixture("")
		noOrg := auditFixture("provision")
		noOrg.OrgID = ""
		wantInvalid(t, s.AppendAudit(ctx, good, noAction), "AppendAudit(no action)")
		wantInvalid(t, s.AppendAudit(ctx, good, noOrg), "AppendAudit(no organisation)")
		if n := auditCount(t, s); n != 0 {
			t.Fatalf("%d events written by refused appends, want 0", n)
		}
	}},

	{"OrganisationScope", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		must(t, s.AppendAudit(ctx, auditFixture("provision")), "AppendAudit")
		evs, err := s.ListAudit(ctx, OtherOrgID, registry.AuditFilter{})
		if err != nil || len(evs) != 0 {
			t.Fatalf("ListAudit(other organisation) = %d events, %v; want none", len(evs), err)
		}
	}},

	{"ConcurrentAppend", func(t *testing.T, s registry.Store) {
		const n = 50
		errs := make([]error, n)
		parallel(n, func(i int) {
			a, b := auditFixture("provision"), auditFixture("provision")
			a.Detail, b.Detail = fmt.Sprintf("%d-a", i), fmt.Sprintf("%d-b", i)
			errs[i] = s.AppendAudit(t.Context(), a, b)
		})
		for _, err := range errs {
			must(t, err, "AppendAudit")
		}
		evs, err := s.ListAudit(t.Context(), registry.DefaultOrgID, registry.AuditFilter{Limit: registry.MaxPageSize})
		must(t, err, "ListAudit")
		if len(evs) != 2*n {
			t.Fatalf("%d events, want %d", len(evs), 2*n)
		}
		seen := map[string]int64{}
		for _, e := range evs {
			seen[e.Detail] = e.Seq
		}
		for i := range n {
			// One call's events are appended in order.
			a, b := seen[fmt.Sprintf("%d-a", i)], seen[fmt.Sprintf("%d-b", i)]
			if a == 0 || b == 0 || a >= b {
				t.Fatalf("call %d: seqs %d, %d; want both present and in order", i, a, b)
			}
		}
	}},
}
