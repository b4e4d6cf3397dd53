package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

var credentialTests = []testCase{
	// Tokens and MQTT basic user names are one name space (Credential.UserKey):
	// otherwise a device could register another's user name as its token and
	// be taken for it at CONNECT.
	{"UserNameSpaceIsShared", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		basic := func(cid, user string) registry.Credential {
			return registry.Credential{Type: registry.CredentialMQTTBasic, LookupKey: registry.MQTTBasicLookupKey(cid, user),
				ClientID: cid, Username: user, SecretHash: secretHash, Status: registry.CredentialActive}
		}
		victim := mkDevice(t, s, p.ID, "victim", basic("victim-cid", "plant7-gw"))
		mkDevice(t, s, p.ID, "token-holder", token(secret.LookupHash("tok-in-use")))
		before := deviceCount(t, s)
		for _, tt := range []struct {
			name string
			cred registry.Credential
		}{
			{"token equal to a user name", token(secret.LookupHash("plant7-gw"))},
			{"user name equal to a token", basic("other-cid", "tok-in-use")},
			{"same user name, other client id", basic("other-cid", "plant7-gw")},
		} {
			c := createCommit(p.ID, "attacker", "")
			c.Credentials = []registry.Credential{tt.cred}
			wantConflict(t, s.CommitProvision(ctx, c), "credential", tt.name)
		}
		if got := deviceCount(t, s); got != before {
			t.Fatalf("refused commits wrote devices: %d, want %d", got, before)
		}
		// A client-id-only credential claims no user name; the same client id
		// with another user name is another identity.
		mkDevice(t, s, p.ID, "cid-only", basic("victim-cid", ""))
		// Once revoked, the user name is free again.
		creds, err := s.ListCredentials(ctx, registry.DefaultOrgID, victim.ID)
		must(t, err, "ListCredentials")
		_, err = s.RevokeCredential(ctx, registry.DefaultOrgID, creds[0].ID)
		must(t, err, "RevokeCredential")
		c := createCommit(p.ID, "successor", "")
		c.Credentials = []registry.Credential{token(secret.LookupHash("plant7-gw"))}
		must(t, s.CommitProvision(ctx, c), "CommitProvision after revocation")
	}},

	{"FieldsRoundTrip", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		created := time.Date(2025, 1, 2, 3, 4, 5, 678912345, time.FixedZone("UTC+1", 3600))
		revokedAt := created.Add(time.Hour)
		creds := []registry.Credential{
			{ID: "c0000000-0000-4000-8000-000000000001", Type: registry.CredentialAccessToken, LookupKey: "tok-hash", Status: registry.CredentialActive, CreatedAt: created},
			{ID: "c0000000-0000-4000-8000-000000000002", Type: registry.CredentialMQTTBasic, LookupKey: registry.MQTTBasicLookupKey("client", "user"),
				ClientID: "client", Username: "user", SecretHash: secretHash, Status: registry.CredentialActive, CreatedAt: created.Add(time.Second)},
			{ID: "c0000000-0000-4000-8000-000000000003", Type: registry.CredentialX509, LookupKey: "ab12", Fingerprint: "ab12",
				CertificatePEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", Status: registry.CredentialActive, CreatedAt: created.Add(2 * time.Second)},
			{ID: "c0000000-0000-4000-8000-000000000004", Type: registry.CredentialAccessToken, LookupKey: "old-hash", Status: registry.CredentialRevoked,
				CreatedAt: created.Add(-time.Hour), RevokedAt: &revokedAt},
		}
		d := mkDevice(t, s, p.ID, "dev", creds...)
		got, err := s.ListCredentials(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "ListCredentials")
		if len(got) != len(creds) {
			t.Fatalf("ListCredentials returned %d credentials, want %d", len(got), len(creds))
		}
		for _, want := range creds {
			want.OrgID, want.DeviceID = registry.DefaultOrgID, d.ID
			g := credentialByID(got, want.ID)
			if g == nil {
				t.Fatalf("credential %s missing", want.ID)
			}
			checkCredential(t, g, &want)
			if want.Status != registry.CredentialActive {
				continue
			}
			fc, fd, err := s.FindActiveCredential(ctx, want.Type, want.LookupKey)
			must(t, err, "FindActiveCredential")
			checkCredential(t, fc, &want)
			checkDevice(t, fd, d)
		}
	}},

	{"ListNewestFirst", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		base := time.Now().Add(-time.Hour)
		var creds []registry.Credential
		for i, key := range []string{"k1", "k3", "k0", "k2"} {
			c := token(key)
			c.CreatedAt = base.Add(time.Duration(key[1]-'0') * time.Minute)
			if i == 2 {
				c.Status = registry.CredentialRevoked
			}
			creds = append(creds, c)
		}
		d := mkDevice(t, s, p.ID, "dev", creds...)
		got, err := s.ListCredentials(t.Context(), registry.DefaultOrgID, d.ID)
		must(t, err, "ListCredentials")
		var keys []string
		for _, c := range got {
			keys = append(keys, c.LookupKey)
		}
		if want := []string{"k3", "k2", "k1", "k0"}; !slices.Equal(keys, want) {
			t.Fatalf("ListCredentials order = %v, want newest first %v (revoked included)", keys, want)
		}
	}},

	{"FindActive", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev", token("shared-key"))
		// The same lookup key under another type is another identity.
		other := mkDevice(t, s, p.ID, "other", registry.Credential{Type: registry.CredentialX509, LookupKey: "shared-key", Fingerprint: "shared-key"})

		c, fd, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "shared-key")
		must(t, err, "FindActiveCredential(token)")
		if c.DeviceID != d.ID || fd.ID != d.ID || c.Type != registry.CredentialAccessToken {
			t.Fatalf("found credential of device %s (%s), want device %s", c.DeviceID, fd.Name, d.ID)
		}
		checkDevice(t, fd, d)
		c, fd, err = s.FindActiveCredential(ctx, registry.CredentialX509, "shared-key")
		must(t, err, "FindActiveCredential(x509)")
		if c.DeviceID != other.ID || fd.ID != other.ID {
			t.Fatalf("found credential of device %s, want device %s", c.DeviceID, other.ID)
		}
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialMQTTBasic, "shared-key")
		wantNotFound(t, err, "FindActiveCredential(wrong type)")
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialAccessToken, "unknown")
		wantNotFound(t, err, "FindActiveCredential(unknown key)")
		_, _, err = s.FindActiveCredential(ctx, registry.CredentialAccessToken, "SHARED-KEY")
		wantNotFound(t, err, "FindActiveCredential(key in other case)")

		// A disabled device's credential is still found: refusing it is the
		// caller's decision, made on the device returned.
		_, err = s.SetDeviceStatus(ctx, registry.DefaultOrgID, d.ID, registry.DeviceDisabled)
		must(t, err, "SetDeviceStatus")
		_, fd, err = s.FindActiveCredential(ctx, registry.CredentialAccessToken, "shared-key")
		must(t, err, "FindActiveCredential(disabled device)")
		if fd.Status != registry.DeviceDisabled {
			t.Fatalf("device status = %q, want disabled", fd.Status)
		}
	}},

	{"RevokeIsIdempotent", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev", token("k1"), token("k2"))
		cs, err := s.ListCredentials(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "ListCredentials")
		var target registry.Credential
		for _, c := range cs {
			if c.LookupKey == "k1" {
				target = c
			}
		}
		before := time.Now()
		r, err := s.RevokeCredential(ctx, registry.DefaultOrgID, target.ID)
		must(t, err, "RevokeCredential")
		if r.Status != registry.CredentialRevoked || r.RevokedAt == nil {
			t.Fatalf("revoked credential = %+v, want status revoked and RevokedAt set", r)
		}
		checkRecent(t, "RevokedAt", *r.RevokedAt, before)
		want := target
		want.Status, want.RevokedAt = registry.CredentialRevoked, r.RevokedAt
		checkCredential(t, r, &want)

		time.Sleep(2 * timeTolerance)
		again, err := s.RevokeCredential(ctx, registry.DefaultOrgID, target.ID)
		must(t, err, "RevokeCredential(again)")
		checkCredential(t, again, &want) // RevokedAt unchanged

		_, _, err = s.FindActiveCredential(ctx, registry.CredentialAccessToken, "k1")
		wantNotFound(t, err, "FindActiveCredential(revoked)")
		if _, _, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "k2"); err != nil {
			t.Fatalf("FindActiveCredential(the other credential): %v", err)
		}
		cs, err = s.ListCredentials(ctx, registry.DefaultOrgID, d.ID)
		must(t, err, "ListCredentials")
		if len(cs) != 2 {
			t.Fatalf("after revoking, %d credentials listed, want 2 (revoked ones stay)", len(cs))
		}
		checkCredential(t, credentialByID(cs, target.ID), &want)

		_, err = s.RevokeCredential(ctx, registry.DefaultOrgID, "no-such-credential")
		wantNotFound(t, err, "RevokeCredential(unknown)")
	}},

	{"RevokedKeyMayBeReused", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		first := mkDevice(t, s, p.ID, "first", token("recycled"))
		cs, err := s.ListCredentials(ctx, registry.DefaultOrgID, first.ID)
		must(t, err, "ListCredentials")
		_, err = s.RevokeCredential(ctx, registry.DefaultOrgID, cs[0].ID)
		must(t, err, "RevokeCredential")

		second := mkDevice(t, s, p.ID, "second", token("recycled"))
		_, fd, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "recycled")
		must(t, err, "FindActiveCredential")
		if fd.ID != second.ID {
			t.Fatalf("the reused key authenticates device %s, want %s", fd.Name, second.Name)
		}
		// Still only one active holder at a time.
		err = s.CreateDevices(ctx, []registry.NewDevice{{Device: deviceFixture(p.ID, "third"), Credentials: []registry.Credential{token("recycled")}}})
		wantConflict(t, err, "credential", "CreateDevices(key active elsewhere)")
	}},
}
