package sqlite

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// TestCertificatesMigrateExistingDatabase opens a database made by the
// previous schema (0001 only), with a device in it: 0002 is applied, the
// device stays, and its certificates can be recorded.
func TestCertificatesMigrateExistingDatabase(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "zerotouch.db")
	migs, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) < 2 || migs[1].name != "0002_certificates.sql" {
		t.Fatalf("migrations = %v, want 0002_certificates.sql second", migs)
	}
	db, err := sql.Open("sqlite", dsn(path, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := applyMigrations(ctx, db, testLogger(t), migs[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO profiles (org_id, id, name, strategy, provision_key, provision_secret_hash,
		default_credential_type, reprovision_policy, created_at, updated_at) VALUES (?, 'p1', 'p', 'allow-create', 'k', 'h', 'ACCESS_TOKEN', 'never', 0, 0)`,
		registry.DefaultOrgID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO devices (org_id, id, profile_id, name, status, version, created_at, updated_at)
		VALUES (?, 'd1', 'p1', 'dev', 'enabled', 1, 0, 0)`, registry.DefaultOrgID); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path)
	defer s.Close()
	var version int
	if err := s.rdb.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_version").Scan(&version); err != nil || version != len(migs) {
		t.Fatalf("schema version %d (%v), want %d", version, err, len(migs))
	}
	var strict int
	if err := s.rdb.QueryRowContext(ctx, "SELECT strict FROM pragma_table_list WHERE name = 'certificates'").Scan(&strict); err != nil || strict != 1 {
		t.Fatalf("certificates table strict = %d (%v), want a STRICT table", strict, err)
	}
	if _, err := s.GetDevice(ctx, registry.DefaultOrgID, "d1"); err != nil {
		t.Fatalf("device lost in the migration: %v", err)
	}
	c := registry.Certificate{
		Serial: "4abc", OrgID: registry.DefaultOrgID, DeviceID: "d1", Issuer: strings.Repeat("a", 64),
		Fingerprint: strings.Repeat("b", 64), CommonName: "dev", NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
	}
	if err := s.RecordCertificates(ctx, []registry.Certificate{c}); err != nil {
		t.Fatalf("RecordCertificates after the migration: %v", err)
	}
}
