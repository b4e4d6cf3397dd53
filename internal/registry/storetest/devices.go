package storetest

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

var deviceTests = []testCase{
	{"CreateAndGet", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		before := time.Now()
		nd := []registry.NewDevice{
			{Device: deviceFixture(p.ID, "mac-00-11-22-33-44-55"), Credentials: []registry.Credential{token("tok-1")}},
			{Device: deviceFixture(p.ID, "mac-00-11-22-33-44-66")},
		}
		must(t, s.CreateDevices(ctx, nd), "CreateDevices")
		for _, n := range nd {
			d := n.Device
			if d.ID == "" {
				t.Fatal("CreateDevices did not set ID")
			}
			if d.Version < 1 {
				t.Errorf("Version = %d, want ≥ 1", d.Version)
			}
			checkRecent(t, "CreatedAt", d.CreatedAt, before)
			checkRecent(t, "UpdatedAt", d.UpdatedAt, before)
			if d.ProvisionedAt != nil {
				t.Errorf("pre-provisioned device has ProvisionedAt %v", d.ProvisionedAt)
			}
			got, err := s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
			must(t, err, "GetDevice")
			checkDevice(t, got, &d)
			got, err = s.GetDeviceByName(ctx, registry.DefaultOrgID, d.Name)
			must(t, err, "GetDeviceByName")
			checkDevice(t, got, &d)
		}
		cs, err := s.ListCredentials(ctx, registry.DefaultOrgID, nd[0].Device.ID)
		must(t, err, "ListCredentials")
		if len(cs) != 1 {
			t.Fatalf("device has %d credentials, want 1", len(cs))
		}
		c := cs[0]
		if c.ID == "" || c.DeviceID != nd[0].Device.ID || c.OrgID != registry.DefaultOrgID ||
			c.Status != registry.CredentialActive || c.LookupKey != "tok-1" || c.RevokedAt != nil {
			t.Errorf("credential = %+v; want an active one of device %s with ID and OrgID filled in", c, nd[0].Device.ID)
		}
		checkRecent(t, "credential CreatedAt", c.CreatedAt, before)
		cs, err = s.ListCredentials(ctx, registry.DefaultOrgID, nd[1].Device.ID)
		if err != nil || len(cs) != 0 {
			t.Fatalf("ListCredentials(device without credentials) = %v, %v; want none", cs, err)
		}

		_, err = s.GetDevice(ctx, registry.DefaultOrgID, "no-such-device")
		wantNotFound(t, err, "GetDevice(unknown)")
		_, err = s.GetDeviceByName(ctx, registry.DefaultOrgID, "no-such-device")
		wantNotFound(t, err, "GetDeviceByName(unknown)")
		must(t, s.CreateDevices(ctx, nil), "CreateDevices(none)")
	}},

	{"CreateKeepsGivenFields", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		zone := time.FixedZone("UTC-3", -3*3600)
		prov := time.Date(2023, 7, 1, 12, 0, 0, 987654321, zone)
		d := deviceFixture(p.ID, "given")
		d.ID = "9a8b7c6d-0000-4000-8000-000000000002"
		d.Status = registry.DeviceDisabled
		d.ProvisionedAt = &prov
		d.CreatedAt = time.Date(2023, 6, 30, 1, 2, 3, 456789123, zone)
		d.UpdatedAt = d.CreatedAt.Add(time.Minute)
		d.Attributes = map[string]any{"site": "Lyon"}
		want := d
		nd := []registry.NewDevice{{Device: d}}
		must(t, s.CreateDevices(ctx, nd), "CreateDevices")
		want.Version = nd[0].Device.Version
		got, err := s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "GetDevice")
		checkDevice(t, got, &want)
	}},

	{"CreateInvalidWritesNothing", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		cases := []struct {
			name   string
			mutate func(nd *registry.NewDevice)
		}{
			{"empty name", func(nd *registry.NewDevice) { nd.Device.Name = "" }},
			{"long name", func(nd *registry.NewDevice) { nd.Device.Name = strings.Repeat("x", registry.MaxNameLen+1) }},
			{"control character", func(nd *registry.NewDevice) { nd.Device.Name = "a\tb" }},
			{"no profile", func(nd *registry.NewDevice) { nd.Device.ProfileID = "" }},
			{"unknown profile", func(nd *registry.NewDevice) { nd.Device.ProfileID = "no-such-profile" }},
			{"unknown status", func(nd *registry.NewDevice) { nd.Device.Status = "asleep" }},
			{"huge attributes", func(nd *registry.NewDevice) {
				nd.Device.Attributes = map[string]any{"blob": strings.Repeat("x", registry.MaxAttributesJSON)}
			}},
			{"unknown credential type", func(nd *registry.NewDevice) {
				nd.Credentials = []registry.Credential{{Type: "PSK", LookupKey: "k"}}
			}},
			{"credential without lookup key", func(nd *registry.NewDevice) {
				nd.Credentials = []registry.Credential{{Type: registry.CredentialAccessToken}}
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				good := registry.NewDevice{Device: deviceFixture(p.ID, "good"), Credentials: []registry.Credential{token("good-token")}}
				bad := registry.NewDevice{Device: deviceFixture(p.ID, "bad")}
				tc.mutate(&bad)
				wantInvalid(t, s.CreateDevices(t.Context(), []registry.NewDevice{good, bad}), "CreateDevices")
				if n := deviceCount(t, s); n != 0 {
					t.Fatalf("a refused batch wrote %d devices", n)
				}
				_, _, err := s.FindActiveCredential(t.Context(), registry.CredentialAccessToken, "good-token")
				wantNotFound(t, err, "FindActiveCredential(credential of a refused batch)")
			})
		}
	}},

	{"CreateConflictWritesNothing", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		existing := mkDevice(t, s, p.ID, "existing", token("existing-token"))
		cases := []struct {
			name  string
			what  string
			batch []registry.NewDevice
		}{
			{"name taken", "device", []registry.NewDevice{
				{Device: deviceFixture(p.ID, "new-1")},
				{Device: deviceFixture(p.ID, existing.Name)},
			}},
			{"same name twice in the batch", "device", []registry.NewDevice{
				{Device: deviceFixture(p.ID, "twin")},
				{Device: deviceFixture(p.ID, "twin")},
			}},
			{"id taken", "device", []registry.NewDevice{
				{Device: deviceFixture(p.ID, "new-1")},
				{Device: func() registry.Device { d := deviceFixture(p.ID, "new-2"); d.ID = existing.ID; return d }()},
			}},
			{"credential taken", "credential", []registry.NewDevice{
				{Device: deviceFixture(p.ID, "new-1")},
				{Device: deviceFixture(p.ID, "new-2"), Credentials: []registry.Credential{token("existing-token")}},
			}},
			{"same credential twice in the batch", "credential", []registry.NewDevice{
				{Device: deviceFixture(p.ID, "new-1"), Credentials: []registry.Credential{token("dup")}},
				{Device: deviceFixture(p.ID, "new-2"), Credentials: []registry.Credential{token("dup")}},
			}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				wantConflict(t, s.CreateDevices(t.Context(), tc.batch), tc.what, "CreateDevices")
				if n := deviceCount(t, s); n != 1 {
					t.Fatalf("a refused batch left %d devices, want only the existing one", n)
				}
				_, _, err := s.FindActiveCredential(t.Context(), registry.CredentialAccessToken, "dup")
				wantNotFound(t, err, "FindActiveCredential(credential of a refused batch)")
			})
		}
		got, err := s.GetDevice(t.Context(), registry.DefaultOrgID, existing.ID)
		must(t, err, "GetDevice(existing)")
		checkDevice(t, got, existing)
	}},

	{"AttributesRoundTrip", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := deviceFixture(p.ID, "attrs")
		d.Attributes = map[string]any{
			"string": "Zürich ✓",
			"int":    42,
			"float":  1.5,
			"neg":    -7,
			"big":    int64(1) << 40,
			"bool":   true,
			"null":   nil,
			"array":  []any{1, "two", false},
			"object": map[string]any{"k": "v", "n": 3},
		}
		want := map[string]any{
			"string": "Zürich ✓",
			"int":    float64(42),
			"float":  1.5,
			"neg":    float64(-7),
			"big":    float64(int64(1) << 40),
			"bool":   true,
			"null":   nil,
			"array":  []any{float64(1), "two", false},
			"object": map[string]any{"k": "v", "n": float64(3)},
		}
		nd := []registry.NewDevice{{Device: d, Credentials: []registry.Credential{token("attrs-token")}}}
		must(t, s.CreateDevices(ctx, nd), "CreateDevices")
		check := func(call string, got map[string]any) {
			t.Helper()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: attributes = %#v\nwant %#v", call, got, want)
			}
		}
		got, err := s.GetDevice(ctx, registry.DefaultOrgID, nd[0].Device.ID)
		must(t, err, "GetDevice")
		check("GetDevice", got.Attributes)
		got, err = s.GetDeviceByName(ctx, registry.DefaultOrgID, d.Name)
		must(t, err, "GetDeviceByName")
		check("GetDeviceByName", got.Attributes)
		ds, _, err := s.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{})
		must(t, err, "ListDevices")
		check("ListDevices", ds[0].Attributes)
		_, got, err = s.FindActiveCredential(ctx, registry.CredentialAccessToken, "attrs-token")
		must(t, err, "FindActiveCredential")
		check("FindActiveCredential", got.Attributes)

		// No attributes and empty attributes both come back empty.
		e := []registry.NewDevice{{Device: deviceFixture(p.ID, "none")}, {Device: deviceFixture(p.ID, "empty")}}
		e[1].Device.Attributes = map[string]any{}
		must(t, s.CreateDevices(ctx, e), "CreateDevices(no attributes)")
		for _, n := range e {
			got, err := s.GetDevice(ctx, registry.DefaultOrgID, n.Device.ID)
			must(t, err, "GetDevice")
			if len(got.Attributes) != 0 {
				t.Errorf("device %q: attributes = %v, want none", n.Device.Name, got.Attributes)
			}
		}
	}},

	{"ListPagination", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		var names []string
		for i := range 25 {
			names = append(names, fmt.Sprintf("dev-%02d", i))
		}
		shuffled := slices.Clone(names)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		var batch []registry.NewDevice
		for _, n := range shuffled {
			batch = append(batch, registry.NewDevice{Device: deviceFixture(p.ID, n)})
		}
		must(t, s.CreateDevices(t.Context(), batch), "CreateDevices")
		for _, limit := range []int{1, 5, 10, 24, 25, 0, registry.MaxPageSize + 1} {
			t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
				f := registry.DeviceFilter{ListOptions: registry.ListOptions{Limit: limit}}
				got := deviceNames(listAllDevices(t, s, registry.DefaultOrgID, f))
				if !slices.Equal(got, names) {
					t.Fatalf("pages gave %v, want %v", got, names)
				}
			})
		}
		// A page of exactly the remaining devices has no next cursor.
		ds, next, err := s.ListDevices(t.Context(), registry.DefaultOrgID, registry.DeviceFilter{ListOptions: registry.ListOptions{Limit: 25}})
		if err != nil || len(ds) != 25 || next != "" {
			t.Fatalf("ListDevices(limit 25 of 25) = %d devices, next %q, err %v; want 25 and no cursor", len(ds), next, err)
		}
		_, _, err = s.ListDevices(t.Context(), registry.DefaultOrgID, registry.DeviceFilter{ListOptions: registry.ListOptions{After: "%%% not a cursor %%%"}})
		wantInvalid(t, err, "ListDevices(malformed cursor)")
	}},

	{"ListFilters", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p1 := mkProfile(t, s, "p1")
		p2 := mkProfile(t, s, "p2")
		at := time.Now()
		type fixture struct {
			name        string
			profile     string
			status      registry.DeviceStatus
			provisioned bool
		}
		fixtures := []fixture{
			{"alpha-1", p1.ID, registry.DeviceEnabled, true},
			{"alpha-2", p1.ID, registry.DeviceDisabled, false},
			{"beta-1", p1.ID, registry.DeviceEnabled, false},
			{"alpha-3", p2.ID, registry.DeviceEnabled, true},
			{"al%ph", p2.ID, registry.DeviceDisabled, true},
			{"al_x", p2.ID, registry.DeviceEnabled, false},
			{"Äpfel", p2.ID, registry.DeviceEnabled, false},
		}
		var batch []registry.NewDevice
		for _, f := range fixtures {
			d := deviceFixture(f.profile, f.name)
			d.Status = f.status
			if f.provisioned {
				d.ProvisionedAt = &at
			}
			batch = append(batch, registry.NewDevice{Device: d})
		}
		must(t, s.CreateDevices(ctx, batch), "CreateDevices")
		yes, no := true, false
		cases := []struct {
			name string
			f    registry.DeviceFilter
			want []string
		}{
			{"none", registry.DeviceFilter{}, []string{"al%ph", "al_x", "alpha-1", "alpha-2", "alpha-3", "beta-1", "Äpfel"}},
			{"profile", registry.DeviceFilter{ProfileID: p1.ID}, []string{"alpha-1", "alpha-2", "beta-1"}},
			{"unknown profile", registry.DeviceFilter{ProfileID: "no-such-profile"}, nil},
			{"disabled", registry.DeviceFilter{Status: registry.DeviceDisabled}, []string{"al%ph", "alpha-2"}},
			{"enabled", registry.DeviceFilter{Status: registry.DeviceEnabled}, []string{"al_x", "alpha-1", "alpha-3", "beta-1", "Äpfel"}},
			{"provisioned", registry.DeviceFilter{Provisioned: &yes}, []string{"al%ph", "alpha-1", "alpha-3"}},
			{"not provisioned", registry.DeviceFilter{Provisioned: &no}, []string{"al_x", "alpha-2", "beta-1", "Äpfel"}},
			{"prefix", registry.DeviceFilter{NamePrefix: "alpha"}, []string{"alpha-1", "alpha-2", "alpha-3"}},
			{"prefix is not a LIKE pattern (%)", registry.DeviceFilter{NamePrefix: "al%"}, []string{"al%ph"}},
			{"prefix is not a LIKE pattern (_)", registry.DeviceFilter{NamePrefix: "al_"}, []string{"al_x"}},
			{"prefix is case-sensitive", registry.DeviceFilter{NamePrefix: "ALPHA"}, nil},
			{"non-ASCII prefix", registry.DeviceFilter{NamePrefix: "Äp"}, []string{"Äpfel"}},
			{"whole name as prefix", registry.DeviceFilter{NamePrefix: "beta-1"}, []string{"beta-1"}},
			{"no match", registry.DeviceFilter{NamePrefix: "zzz"}, nil},
			{"combined", registry.DeviceFilter{ProfileID: p2.ID, Status: registry.DeviceEnabled, Provisioned: &no}, []string{"al_x", "Äpfel"}},
			{"combined with prefix", registry.DeviceFilter{ProfileID: p1.ID, NamePrefix: "al", Provisioned: &yes}, []string{"alpha-1"}},
		}
		for _, tc := range cases {
			for _, limit := range []int{0, 1, 2} {
				t.Run(fmt.Sprintf("%s/limit=%d", tc.name, limit), func(t *testing.T) {
					f := tc.f
					f.Limit = limit
					got := deviceNames(listAllDevices(t, s, registry.DefaultOrgID, f))
					if !slices.Equal(got, tc.want) {
						t.Fatalf("ListDevices(%+v) = %v, want %v", f, got, tc.want)
					}
				})
			}
		}
		_, _, err := s.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{Status: "asleep"})
		wantInvalid(t, err, "ListDevices(unknown status)")
	}},

	{"SetStatus", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		time.Sleep(2 * timeTolerance)
		before := time.Now()
		got, err := s.SetDeviceStatus(ctx, registry.DefaultOrgID, d.ID, registry.DeviceDisabled)
		must(t, err, "SetDeviceStatus(disabled)")
		if got.Status != registry.DeviceDisabled || got.Version <= d.Version {
			t.Fatalf("SetDeviceStatus returned status %q version %d; want disabled and a version above %d", got.Status, got.Version, d.Version)
		}
		checkRecent(t, "UpdatedAt", got.UpdatedAt, before)
		want := *d
		want.Status, want.Version, want.UpdatedAt = registry.DeviceDisabled, got.Version, got.UpdatedAt
		checkDevice(t, got, &want)
		stored, err := s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "GetDevice")
		checkDevice(t, stored, &want)

		again, err := s.SetDeviceStatus(ctx, registry.DefaultOrgID, d.ID, registry.DeviceEnabled)
		must(t, err, "SetDeviceStatus(enabled)")
		if again.Status != registry.DeviceEnabled || again.Version <= got.Version {
			t.Fatalf("SetDeviceStatus returned status %q version %d; want enabled and a version above %d", again.Status, again.Version, got.Version)
		}

		_, err = s.SetDeviceStatus(ctx, registry.DefaultOrgID, d.ID, "asleep")
		wantInvalid(t, err, "SetDeviceStatus(unknown status)")
		_, err = s.SetDeviceStatus(ctx, registry.DefaultOrgID, "no-such-device", registry.DeviceDisabled)
		wantNotFound(t, err, "SetDeviceStatus(unknown device)")
	}},

	{"Delete", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "doomed", token("doomed-token"),
			registry.Credential{Type: registry.CredentialMQTTBasic, LookupKey: registry.MQTTBasicLookupKey("c", "u"), ClientID: "c", Username: "u"})
		keep := mkDevice(t, s, p.ID, "keep", token("keep-token"))
		must(t, s.DeleteDevice(ctx, registry.DefaultOrgID, d.ID), "DeleteDevice")
		_, err := s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
		wantNotFound(t, err, "GetDevice(deleted)")
		_, err = s.ListCredentials(ctx, registry.DefaultOrgID, d.ID)
		wantNotFound(t, err, "ListCredentials(deleted device)")
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialAccessToken, "doomed-token")
		wantNotFound(t, err, "FindActiveCredential(credential of a deleted device)")
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialMQTTBasic, registry.MQTTBasicLookupKey("c", "u"))
		wantNotFound(t, err, "FindActiveCredential(credential of a deleted device)")
		wantNotFound(t, s.DeleteDevice(ctx, registry.DefaultOrgID, d.ID), "DeleteDevice(again)")

		// Its name and credentials are free again.
		mkDevice(t, s, p.ID, "doomed", token("doomed-token"))
		if n := activeCount(t, s, keep.ID); n != 1 {
			t.Fatalf("the other device has %d active credentials, want 1", n)
		}
	}},

	{"OrganisationScope", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "scoped", token("scoped-token"))
		cs, err := s.ListCredentials(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "ListCredentials")

		_, err = s.GetDevice(ctx, OtherOrgID, d.ID)
		wantNotFound(t, err, "GetDevice(other organisation)")
		_, err = s.GetDeviceByName(ctx, OtherOrgID, d.Name)
		wantNotFound(t, err, "GetDeviceByName(other organisation)")
		ds, next, err := s.ListDevices(ctx, OtherOrgID, registry.DeviceFilter{})
		if err != nil || len(ds) != 0 || next != "" {
			t.Fatalf("ListDevices(other organisation) = %d devices, %q, %v; want none", len(ds), next, err)
		}
		ds, _, err = s.ListDevices(ctx, OtherOrgID, registry.DeviceFilter{ProfileID: p.ID})
		if err != nil || len(ds) != 0 {
			t.Fatalf("ListDevices(other organisation, profile filter) = %d devices, %v; want none", len(ds), err)
		}
		_, err = s.SetDeviceStatus(ctx, OtherOrgID, d.ID, registry.DeviceDisabled)
		wantNotFound(t, err, "SetDeviceStatus(other organisation)")
		wantNotFound(t, s.DeleteDevice(ctx, OtherOrgID, d.ID), "DeleteDevice(other organisation)")
		_, err = s.ListCredentials(ctx, OtherOrgID, d.ID)
		wantNotFound(t, err, "ListCredentials(other organisation)")
		_, err = s.RevokeCredential(ctx, OtherOrgID, cs[0].ID)
		wantNotFound(t, err, "RevokeCredential(other organisation)")

		got, err := s.GetDevice(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "GetDevice after foreign writes")
		checkDevice(t, got, d)
		if n := activeCount(t, s, d.ID); n != 1 {
			t.Fatalf("after a foreign revoke the device has %d active credentials, want 1", n)
		}
	}},
}
