package storetest

import (
	"encoding/json"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
)

func registrationFixture(regID string) *registry.Registration {
	return &registry.Registration{
		RegistrationID: regID, HubDeviceID: regID, AssignedHub: "hub.example.com",
		Substatus: registry.SubstatusInitialAssignment, OperationID: "op-1",
		Payload: json.RawMessage(`{"line":3}`),
	}
}

func symmetricKeyCredential(hubDeviceID string) registry.Credential {
	return registry.Credential{Type: registry.CredentialSymmetricKey, LookupKey: registry.HubDeviceLookupKey(hubDeviceID),
		SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: keyA, SecondaryKey: keyB}}
}

// registrationCommit creates a device with a SYMMETRIC_KEY credential and
// its registration.
func registrationCommit(profileID, regID string) *registry.ProvisionCommit {
	c := createCommit(profileID, regID, "")
	c.Credentials = []registry.Credential{symmetricKeyCredential(regID)}
	c.Registration = registrationFixture(regID)
	return c
}

func checkRegistration(t *testing.T, got, want *registry.Registration) {
	t.Helper()
	g, w := *got, *want
	checkTime(t, "CreatedAt", g.CreatedAt, w.CreatedAt)
	checkTime(t, "UpdatedAt", g.UpdatedAt, w.UpdatedAt)
	g.CreatedAt, g.UpdatedAt = w.CreatedAt, w.UpdatedAt
	if dump(g) != dump(w) {
		t.Fatalf("registration = %s\nwant %s", dump(g), dump(w))
	}
}

var registrationTests = []testCase{
	{"CommitCreatesAndGetFinds", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "dps")
		c := registrationCommit(p.ID, "dev-1")
		must(t, s.CommitProvision(ctx, c), "CommitProvision")
		r := c.Registration
		if r.Version != 1 || r.OrgID != registry.DefaultOrgID || r.DeviceID != c.Device.ID {
			t.Fatalf("written back %+v: want version 1 in the default organisation, of device %s", r, c.Device.ID)
		}
		checkTime(t, "CreatedAt", r.CreatedAt, c.At)
		got, err := s.GetRegistration(ctx, registry.DefaultOrgID, "DEV-1")
		must(t, err, "GetRegistration (other case)")
		checkRegistration(t, got, r)
		_, err = s.GetRegistration(ctx, OtherOrgID, "dev-1")
		wantNotFound(t, err, "GetRegistration in another organisation")
		_, err = s.GetRegistration(ctx, registry.DefaultOrgID, "dev-2")
		wantNotFound(t, err, "GetRegistration of an unknown id")
	}},
	{"UpdateAtVersion", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "dps")
		c := registrationCommit(p.ID, "dev-1")
		must(t, s.CommitProvision(ctx, c), "CommitProvision")
		first := *c.Registration

		again := *c.Registration
		again.OperationID, again.Substatus, again.AssignedHub = "op-2", registry.SubstatusDeviceDataReset, "hub2.example.com"
		u := &registry.ProvisionCommit{Device: c.Device, ExpectVersion: c.Device.Version, RevokeActive: true,
			Credentials: []registry.Credential{symmetricKeyCredential("dev-1")}, Registration: &again, Audit: auditFixture("provision")}
		must(t, s.CommitProvision(ctx, u), "CommitProvision (update)")
		if again.Version != 2 {
			t.Fatalf("Version after an update = %d, want 2", again.Version)
		}
		checkTime(t, "CreatedAt kept", again.CreatedAt, first.CreatedAt)
		got, err := s.GetRegistration(ctx, registry.DefaultOrgID, "dev-1")
		must(t, err, "GetRegistration")
		checkRegistration(t, got, &again)

		// A stale version changes nothing: neither the registration nor the device.
		stale := first
		stale.OperationID = "op-3"
		d, err := s.GetDevice(ctx, registry.DefaultOrgID, c.Device.ID)
		must(t, err, "GetDevice")
		events := auditCount(t, s)
		err = s.CommitProvision(ctx, &registry.ProvisionCommit{Device: d, ExpectVersion: d.Version,
			Registration: &stale, Audit: auditFixture("provision")})
		wantConflict(t, err, "registration", "CommitProvision at a stale registration version")
		got, err = s.GetRegistration(ctx, registry.DefaultOrgID, "dev-1")
		must(t, err, "GetRegistration")
		checkRegistration(t, got, &again)
		after, err := s.GetDevice(ctx, registry.DefaultOrgID, c.Device.ID)
		must(t, err, "GetDevice")
		if after.Version != d.Version || auditCount(t, s) != events {
			t.Fatal("a refused registration update wrote the device or an audit event")
		}
	}},
	{"InvalidWritesNothing", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "dps")
		for name, mutate := range map[string]func(r *registry.Registration){
			"substatus":    func(r *registry.Registration) { r.Substatus = "assigned" },
			"no hub":       func(r *registry.Registration) { r.AssignedHub = "" },
			"upper-case":   func(r *registry.Registration) { r.RegistrationID = "Dev-1" },
			"payload":      func(r *registry.Registration) { r.Payload = json.RawMessage(`{`) },
			"no operation": func(r *registry.Registration) { r.OperationID = "" },
		} {
			c := registrationCommit(p.ID, "dev-1")
			mutate(c.Registration)
			wantInvalid(t, s.CommitProvision(ctx, c), "CommitProvision with a bad registration: "+name)
		}
		if n := deviceCount(t, s); n != 0 {
			t.Fatalf("%d devices after refused commits, want 0", n)
		}
	}},
	{"GoesWithItsDevice", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "dps")
		c := registrationCommit(p.ID, "dev-1")
		must(t, s.CommitProvision(ctx, c), "CommitProvision")
		must(t, s.DeleteDevice(ctx, registry.DefaultOrgID, c.Device.ID), "DeleteDevice")
		_, err := s.GetRegistration(ctx, registry.DefaultOrgID, "dev-1")
		wantNotFound(t, err, "GetRegistration after the device was deleted")
		// The registration id is free again.
		must(t, s.CommitProvision(ctx, registrationCommit(p.ID, "dev-1")), "CommitProvision after deletion")
	}},
	{"SymmetricKeyCredential", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "dps")
		c := registrationCommit(p.ID, "Dev-Case")
		c.Registration.RegistrationID = "dev-case"
		must(t, s.CommitProvision(ctx, c), "CommitProvision")
		cred, dev, err := s.FindActiveCredential(ctx, registry.CredentialSymmetricKey, "Dev-Case")
		must(t, err, "FindActiveCredential")
		if dev.ID != c.Device.ID || cred.SymmetricKey == nil ||
			cred.SymmetricKey.PrimaryKey != keyA || cred.SymmetricKey.SecondaryKey != keyB {
			t.Fatalf("FindActiveCredential = %+v (key %+v) of device %s; want the keys of device %s", cred, cred.SymmetricKey, dev.ID, c.Device.ID)
		}
		// Hub device ids are case-sensitive.
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialSymmetricKey, "dev-case")
		wantNotFound(t, err, "FindActiveCredential in another case")
		creds, err := s.ListCredentials(ctx, registry.DefaultOrgID, c.Device.ID)
		must(t, err, "ListCredentials")
		if len(creds) != 1 || creds[0].SymmetricKey != nil {
			t.Fatalf("ListCredentials = %+v: want one credential, without its key", creds)
		}
		dup := registrationCommit(p.ID, "other")
		dup.Credentials = []registry.Credential{symmetricKeyCredential("Dev-Case")}
		wantConflict(t, s.CommitProvision(ctx, dup), "credential", "CommitProvision with a taken hub device id")

		for name, cr := range map[string]registry.Credential{
			"no key":       {Type: registry.CredentialSymmetricKey, LookupKey: "x"},
			"key on token": {Type: registry.CredentialAccessToken, LookupKey: "x", SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: keyA}},
			"short key":    {Type: registry.CredentialSymmetricKey, LookupKey: "x", SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: "c2hvcnQ="}},
		} {
			bad := registrationCommit(p.ID, "bad")
			bad.Credentials = []registry.Credential{cr}
			wantInvalid(t, s.CommitProvision(ctx, bad), "CommitProvision: "+name)
		}
		if n := deviceCount(t, s); n != 1 {
			t.Fatalf("%d devices, want 1", n)
		}
	}},
}
