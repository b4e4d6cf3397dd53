package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/seal"
)

const (
	sealTestKey  = "c3ltbWV0cmljLWtleS1hLTAxMjM0NTY3ODlhYmNkZWY="
	sealTestKey2 = "c3ltbWV0cmljLWtleS1iLTAxMjM0NTY3ODlhYmNkZWY="
)

// TestSymmetricKeysSealedAtRest reads the raw columns: no key is stored
// as given, each opens only under its own record's label and this
// store's data key.
func TestSymmetricKeysSealedAtRest(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "zerotouch.db")
	s := openTest(t, path)
	keys := &registry.SymmetricKeyAttestation{PrimaryKey: sealTestKey, SecondaryKey: sealTestKey2}
	policies := registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionMigrate}
	e := &registry.Enrollment{OrgID: registry.DefaultOrgID, RegistrationID: "dev-1", EnrollmentPolicies: policies,
		Attestation: registry.Attestation{Type: registry.AttestationSymmetricKey, SymmetricKey: keys}}
	if err := s.CreateEnrollment(ctx, e); err != nil {
		t.Fatal(err)
	}
	g := &registry.EnrollmentGroup{OrgID: registry.DefaultOrgID, ID: "group-1", EnrollmentPolicies: policies,
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey, SymmetricKey: keys}}
	if err := s.CreateEnrollmentGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	p := testProfile(t, s, "dps")
	c := &registry.ProvisionCommit{Create: true,
		Device:      &registry.Device{OrgID: registry.DefaultOrgID, ProfileID: p.ID, Name: "dev-1", Status: registry.DeviceEnabled},
		Credentials: []registry.Credential{{Type: registry.CredentialSymmetricKey, LookupKey: "dev-1", SymmetricKey: keys}},
		Audit:       registry.AuditEvent{Actor: "device", Action: "provision", Result: "success"}}
	if err := s.CommitProvision(ctx, c); err != nil {
		t.Fatal(err)
	}

	var raw []string
	for _, q := range []string{
		`SELECT symmetric_primary_key || ' ' || symmetric_secondary_key FROM enrollments`,
		`SELECT symmetric_primary_key || ' ' || symmetric_secondary_key FROM enrollment_groups`,
		`SELECT sealed_key FROM credentials`,
	} {
		var v string
		if err := s.rdb.QueryRowContext(ctx, q).Scan(&v); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		raw = append(raw, v)
	}
	for _, v := range raw {
		if strings.Contains(v, sealTestKey) || strings.Contains(v, sealTestKey2) || strings.Contains(v, "c3ltbWV0") {
			t.Fatalf("a symmetric key is stored in clear: %q", v)
		}
		for f := range strings.FieldsSeq(v) {
			if !seal.IsSealed(f) {
				t.Fatalf("stored value %q is not sealed", f)
			}
		}
	}
	// A sealed value moved to another record does not open there.
	if _, err := s.wdb.ExecContext(ctx, `UPDATE enrollment_groups SET symmetric_primary_key =
		(SELECT symmetric_primary_key FROM enrollments)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetEnrollmentGroup(ctx, registry.DefaultOrgID, "group-1"); !errors.Is(err, seal.ErrCorrupt) {
		t.Fatalf("GetEnrollmentGroup with another record's sealed key: err = %v, want ErrCorrupt", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Under another data key, keys do not open; without one, they are
	// neither read nor written.
	other, _ := seal.New(bytes.Repeat([]byte{1}, seal.KeyLen))
	for name, opts := range map[string]Options{"other key": {Sealer: other}, "no sealer": {}} {
		s, err := Open(ctx, path, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetEnrollment(ctx, registry.DefaultOrgID, "dev-1"); err == nil {
			t.Errorf("%s: GetEnrollment opened the keys", name)
		}
		if _, _, err := s.FindActiveCredential(ctx, registry.CredentialSymmetricKey, "dev-1"); err == nil {
			t.Errorf("%s: FindActiveCredential opened the key", name)
		}
		e2 := *e
		e2.RegistrationID, e2.Version = "dev-2", 0
		err = s.CreateEnrollment(ctx, &e2)
		if name == "no sealer" && !errors.Is(err, errNoSealer) {
			t.Errorf("CreateEnrollment without a sealer: err = %v, want errNoSealer", err)
		}
		s.Close()
	}
}

// TestCredentialsSurviveMigration6 upgrades a version-5 database holding a
// device with a token: 0006 rebuilds the credentials table, which must
// keep every row and its unique indexes.
func TestCredentialsSurviveMigration6(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "zerotouch.db")
	migs, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) < 6 || migs[5].name != "0006_dps_registrations.sql" {
		t.Fatalf("migrations = %v, want 0006_dps_registrations.sql sixth", migs)
	}
	db, err := sql.Open("sqlite", dsn(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyMigrations(ctx, db, testLogger(t), migs[:5]); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO profiles (org_id, id, name, strategy, provision_key, provision_secret_hash, default_credential_type,
			reprovision_policy, created_at, updated_at) VALUES ('` + registry.DefaultOrgID + `', 'p1', 'p', 'allow-create', 'k', 'h', 'ACCESS_TOKEN', 'never', 0, 0)`,
		`INSERT INTO devices (org_id, id, profile_id, name, status, version, created_at, updated_at)
			VALUES ('` + registry.DefaultOrgID + `', 'd1', 'p1', 'dev', 'enabled', 1, 0, 0)`,
		`INSERT INTO credentials (org_id, id, device_id, type, lookup_key, user_key, status, created_at)
			VALUES ('` + registry.DefaultOrgID + `', 'c1', 'd1', 'ACCESS_TOKEN', 'tok-hash', 'tok-hash', 'active', 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, path)
	defer s.Close()
	c, d, err := s.FindActiveCredential(ctx, registry.CredentialAccessToken, "tok-hash")
	if err != nil || c.ID != "c1" || d.ID != "d1" {
		t.Fatalf("FindActiveCredential after the migration = %+v, %v", c, err)
	}
	dup := &registry.ProvisionCommit{Create: true,
		Device:      &registry.Device{OrgID: registry.DefaultOrgID, ProfileID: "p1", Name: "dev2", Status: registry.DeviceEnabled},
		Credentials: []registry.Credential{{Type: registry.CredentialAccessToken, LookupKey: "tok-hash"}},
		Audit:       registry.AuditEvent{Actor: "device", Action: "provision", Result: "success"}}
	var ce *registry.ConflictError
	if err := s.CommitProvision(ctx, dup); !errors.As(err, &ce) || ce.What != "credential" {
		t.Fatalf("a duplicate token after the migration: err = %v, want a credential conflict (index lost?)", err)
	}
	// Deleting the device still cascades to its credentials.
	if err := s.DeleteDevice(ctx, registry.DefaultOrgID, "d1"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM credentials`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d credentials left after deleting their device (%v), want 0", n, err)
	}
}
