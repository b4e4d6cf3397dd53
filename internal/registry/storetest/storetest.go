// Package storetest is the conformance suite every registry.Store
// implementation must pass. It states, as tests, the rules of the Store
// interface and the choices the interface leaves open:
//
//   - Writes use registry.DefaultOrgID, which every fresh store must hold;
//     OtherOrgID is never created, so reads with it must find nothing.
//   - Lists of profiles and devices are ordered by name, byte-wise (the C
//     collation), and paged by the opaque Next cursor; Next is empty on the
//     last page, even when that page is full. A malformed cursor is ErrInvalid.
//   - Times come back in UTC, at least to the millisecond (the suite
//     tolerates a difference below 1ms). Times set by the store are taken
//     from the clock of the process at the call (not a database server's)
//     and written back into the caller's record.
//   - Device attributes round-trip as JSON decoded by encoding/json into
//     map[string]any: numbers come back as float64 (integers above 2^53 lose
//     precision); an empty map may come back nil.
//   - ListCredentials of a device the organisation does not have is
//     ErrNotFound; ListAudit and the other lists return an empty result.
//   - CommitProvision sets Device.ProvisionedAt to the commit time when it is
//     nil, sets UpdatedAt to the commit time, and increments Version by
//     exactly one on update. An update of a device that does not exist is
//     ErrNotFound. A failed commit writes nothing: no device, no
//     credential, no revocation, no audit event.
//   - A write whose context is already cancelled fails and writes nothing.
//   - Audit events need an OrgID and an Action (ErrInvalid otherwise); a zero
//     Time is set to the time of the write; Since is inclusive.
//   - API keys need a valid name, a known role and a hash; the hash is
//     unique across organisations (ConflictError "apikey"). ListAPIKeys is
//     ordered oldest first. Deleting an organisation's last admin key is a
//     ConflictError "apikey", decided atomically with the deletion.
//   - Profiles start at Version 1; UpdateProfile applies only at the stored
//     version (else ConflictError "profile") and increments it.
//   - Tokens and MQTT basic user names share one name space
//     (registry.Credential.UserKey), unique among active credentials.
//   - Certificate records: serials and fingerprints are lowercase hex,
//     unique across organisations (ConflictError "certificate"), revoked
//     ones included; RecordCertificates is all or nothing; lists are
//     ordered by NotAfter, then serial; revoking is idempotent and keeps
//     the first time and reason; deleting a device revokes its active
//     certificates (cessationOfOperation) and keeps their records; a
//     rotation (RevokeActive) revokes them as superseded.
//   - A profile's X509Chain round-trips as given (nil stays nil);
//     ListX509ChainProfiles lists, across organisations, exactly the
//     profiles that have one.
//   - DPS enrollments, enrollment groups and ID scopes: see the rules at
//     the top of enrollments.go.
//
// Every subtest gets its own fresh store from newStore.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// OtherOrgID is an organisation no test creates: reads with it must behave
// as if the records written under DefaultOrgID did not exist.
const OtherOrgID = "00000000-0000-0000-0000-0000000000ff"

// Run runs the whole suite. newStore must return an empty, migrated store
// and register its Close with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) registry.Store) {
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Organisation", organisationTests},
		{"Profiles", profileTests},
		{"X509ChainProfiles", x509ChainProfileTests},
		{"Devices", deviceTests},
		{"Credentials", credentialTests},
		{"Provision", provisionTests},
		{"Audit", auditTests},
		{"APIKeys", apiKeyTests},
		{"Certificates", certificateTests},
		{"Enrollments", enrollmentTests},
		{"EnrollmentGroups", enrollmentGroupTests},
		{"IDScope", idScopeTests},
		{"Registrations", registrationTests},
		{"Hubs", hubTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.cases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, newStore(t))
				})
			}
		})
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, s registry.Store)
}

var organisationTests = []testCase{
	{"DefaultExistsAndStoreIsEmpty", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		ps, next, err := s.ListProfiles(ctx, registry.DefaultOrgID, registry.ListOptions{})
		if err != nil || len(ps) != 0 || next != "" {
			t.Fatalf("ListProfiles on a fresh store = %d profiles, next %q, err %v; want none", len(ps), next, err)
		}
		ds, next, err := s.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{})
		if err != nil || len(ds) != 0 || next != "" {
			t.Fatalf("ListDevices on a fresh store = %d devices, next %q, err %v; want none", len(ds), next, err)
		}
		evs, err := s.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{})
		if err != nil || len(evs) != 0 {
			t.Fatalf("ListAudit on a fresh store = %d events, err %v; want none", len(evs), err)
		}
		keys, err := s.ListAPIKeys(ctx, registry.DefaultOrgID)
		if err != nil || len(keys) != 0 {
			t.Fatalf("ListAPIKeys on a fresh store = %d keys, err %v; want none", len(keys), err)
		}
		// The default organisation exists: records can be written into it.
		p := mkProfile(t, s, "first")
		d := mkDevice(t, s, p.ID, "first-device")
		if d.OrgID != registry.DefaultOrgID {
			t.Fatalf("device OrgID = %q, want %q", d.OrgID, registry.DefaultOrgID)
		}
	}},
}

// Fixtures.

const secretHash = "sha256$c2FsdA$aGFzaA" // any non-empty hash: stores do not interpret it

func profileFixture(name string) registry.Profile {
	return registry.Profile{
		OrgID:                 registry.DefaultOrgID,
		Name:                  name,
		Description:           "profile " + name,
		Strategy:              registry.StrategyAllowCreate,
		ProvisionKey:          "key-" + name,
		ProvisionSecretHash:   secretHash,
		DefaultCredentialType: registry.CredentialAccessToken,
		ReprovisionPolicy:     registry.ReprovisionNever,
	}
}

func mkProfile(t *testing.T, s registry.Store, name string) *registry.Profile {
	t.Helper()
	p := profileFixture(name)
	if err := s.CreateProfile(t.Context(), &p); err != nil {
		t.Fatalf("CreateProfile(%q): %v", name, err)
	}
	return &p
}

func deviceFixture(profileID, name string) registry.Device {
	return registry.Device{
		OrgID:     registry.DefaultOrgID,
		ProfileID: profileID,
		Name:      name,
		Status:    registry.DeviceEnabled,
	}
}

// mkDevice creates a pre-provisioned device with CreateDevices.
func mkDevice(t *testing.T, s registry.Store, profileID, name string, creds ...registry.Credential) *registry.Device {
	t.Helper()
	nd := []registry.NewDevice{{Device: deviceFixture(profileID, name), Credentials: creds}}
	if err := s.CreateDevices(t.Context(), nd); err != nil {
		t.Fatalf("CreateDevices(%q): %v", name, err)
	}
	return &nd[0].Device
}

func token(lookupKey string) registry.Credential {
	return registry.Credential{Type: registry.CredentialAccessToken, LookupKey: lookupKey, Status: registry.CredentialActive}
}

func auditFixture(action string) registry.AuditEvent {
	return registry.AuditEvent{
		OrgID:   registry.DefaultOrgID,
		Actor:   "device",
		Action:  action,
		Result:  "success",
		Source:  "192.0.2.1",
		Dialect: "thingsboard",
	}
}

// createCommit is the commit of a new device with one access token.
func createCommit(profileID, name, tokenKey string) *registry.ProvisionCommit {
	d := deviceFixture(profileID, name)
	c := &registry.ProvisionCommit{Device: &d, Create: true, Audit: auditFixture("provision")}
	if tokenKey != "" {
		c.Credentials = []registry.Credential{token(tokenKey)}
	}
	return c
}

// Assertions.

func wantNotFound(t *testing.T, err error, call string) {
	t.Helper()
	if !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("%s: err = %v, want ErrNotFound", call, err)
	}
}

func wantInvalid(t *testing.T, err error, call string) {
	t.Helper()
	if !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("%s: err = %v, want ErrInvalid", call, err)
	}
}

func wantConflict(t *testing.T, err error, what, call string) {
	t.Helper()
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("%s: err = %v, want a *registry.ConflictError", call, err)
	}
	if ce.What != what {
		t.Fatalf("%s: ConflictError.What = %q, want %q (err %v)", call, ce.What, what, err)
	}
}

func must(t *testing.T, err error, call string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", call, err)
	}
}

// timeTolerance is the precision every store must keep.
const timeTolerance = time.Millisecond

func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if got.IsZero() {
		t.Fatalf("%s is zero, want %v", what, want)
	}
	if got.Location() != time.UTC {
		t.Errorf("%s = %v in %v, want UTC", what, got, got.Location())
	}
	if d := got.Sub(want); d >= timeTolerance || d <= -timeTolerance {
		t.Errorf("%s = %v, want %v (±%v)", what, got, want, timeTolerance)
	}
}

func checkTimePtr(t *testing.T, what string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", what, got, want)
	default:
		checkTime(t, what, *got, *want)
	}
}

// checkRecent checks that a time set by the store is the time of the call.
func checkRecent(t *testing.T, what string, got, before time.Time) {
	t.Helper()
	if got.Location() != time.UTC {
		t.Errorf("%s = %v in %v, want UTC", what, got, got.Location())
	}
	if got.Before(before.Add(-timeTolerance)) || got.After(time.Now().Add(timeTolerance)) {
		t.Errorf("%s = %v, want the time of the call (after %v)", what, got, before)
	}
}

func checkProfile(t *testing.T, got, want *registry.Profile) {
	t.Helper()
	g, w := *got, *want
	checkTime(t, "profile CreatedAt", g.CreatedAt, w.CreatedAt)
	checkTime(t, "profile UpdatedAt", g.UpdatedAt, w.UpdatedAt)
	g.CreatedAt, g.UpdatedAt, w.CreatedAt, w.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("profile = %+v (X509Chain %+v)\nwant      %+v (X509Chain %+v)", g, g.X509Chain, w, w.X509Chain)
	}
}

func checkDevice(t *testing.T, got, want *registry.Device) {
	t.Helper()
	checkTime(t, "device CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "device UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkTimePtr(t, "device ProvisionedAt", got.ProvisionedAt, want.ProvisionedAt)
	g, w := *got, *want
	g.CreatedAt, g.UpdatedAt, w.CreatedAt, w.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	g.ProvisionedAt, w.ProvisionedAt = nil, nil
	if len(g.Attributes) == 0 && len(w.Attributes) == 0 {
		g.Attributes, w.Attributes = nil, nil
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("device = %+v\nwant     %+v", g, w)
	}
}

func checkCredential(t *testing.T, got, want *registry.Credential) {
	t.Helper()
	checkTime(t, "credential CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTimePtr(t, "credential RevokedAt", got.RevokedAt, want.RevokedAt)
	g, w := *got, *want
	g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}
	g.RevokedAt, w.RevokedAt = nil, nil
	if g != w {
		t.Errorf("credential = %+v\nwant         %+v", g, w)
	}
}

func deviceNames(ds []registry.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Name
	}
	return out
}

// listAllDevices follows the cursor to the end, checking every page.
func listAllDevices(t *testing.T, s registry.Store, orgID string, f registry.DeviceFilter) []registry.Device {
	t.Helper()
	var all []registry.Device
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatalf("ListDevices(%+v): cursor never ends", f)
		}
		ds, next, err := s.ListDevices(t.Context(), orgID, f)
		must(t, err, fmt.Sprintf("ListDevices(%+v)", f))
		if len(ds) > f.EffectiveLimit() {
			t.Fatalf("ListDevices(%+v) returned %d devices, more than the limit %d", f, len(ds), f.EffectiveLimit())
		}
		all = append(all, ds...)
		if next == "" {
			return all
		}
		if len(ds) == 0 {
			t.Fatalf("ListDevices(%+v): empty page with a next cursor", f)
		}
		f.After = next
	}
}

func credentialByID(cs []registry.Credential, id string) *registry.Credential {
	for i := range cs {
		if cs[i].ID == id {
			return &cs[i]
		}
	}
	return nil
}

func activeCount(t *testing.T, s registry.Store, deviceID string) int {
	t.Helper()
	cs, err := s.ListCredentials(t.Context(), registry.DefaultOrgID, deviceID)
	must(t, err, "ListCredentials")
	n := 0
	for _, c := range cs {
		if c.Status == registry.CredentialActive {
			n++
		}
	}
	return n
}

func auditCount(t *testing.T, s registry.Store) int {
	t.Helper()
	evs, err := s.ListAudit(t.Context(), registry.DefaultOrgID, registry.AuditFilter{Limit: registry.MaxPageSize})
	must(t, err, "ListAudit")
	return len(evs)
}

func deviceCount(t *testing.T, s registry.Store) int {
	t.Helper()
	return len(listAllDevices(t, s, registry.DefaultOrgID, registry.DeviceFilter{ListOptions: registry.ListOptions{Limit: registry.MaxPageSize}}))
}

func sortedCopy(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out) // byte-wise, the order stores must list in
	return out
}

func cancelled(ctx context.Context) context.Context {
	c, cancel := context.WithCancel(ctx)
	cancel()
	return c
}
