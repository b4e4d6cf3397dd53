package sqlite

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/zerotouch/zerotouch/internal/registry"
)

const profileCols = `org_id, id, name, description, strategy, provision_key, provision_secret_hash,
	default_credential_type, reprovision_policy, version, created_at, updated_at,
	x509_chain_ca_pem, x509_chain_cn_pattern, x509_chain_allow_create`

func scanProfile(sc scanner) (registry.Profile, error) {
	var p registry.Profile
	var created, updated int64
	var caPEM sql.NullString
	var pattern string
	var allowCreate bool
	err := sc.Scan(&p.OrgID, &p.ID, &p.Name, &p.Description, &p.Strategy, &p.ProvisionKey, &p.ProvisionSecretHash,
		&p.DefaultCredentialType, &p.ReprovisionPolicy, &p.Version, &created, &updated,
		&caPEM, &pattern, &allowCreate)
	p.CreatedAt, p.UpdatedAt = fromDB(created), fromDB(updated)
	if caPEM.Valid {
		p.X509Chain = &registry.X509ChainProvisioning{CACertificates: caPEM.String, CNPattern: pattern, AllowCreate: allowCreate}
	}
	return p, err
}

// x509ChainArgs are the values of the x509_chain_* columns of p.
func x509ChainArgs(p *registry.Profile) (caPEM sql.NullString, pattern string, allowCreate bool) {
	if x := p.X509Chain; x != nil {
		return sql.NullString{String: x.CACertificates, Valid: true}, x.CNPattern, x.AllowCreate
	}
	return sql.NullString{}, "", false
}

// profileWriteErr maps a constraint error of an insert or update of p.
func profileWriteErr(err error, p *registry.Profile) error {
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		switch {
		case strings.Contains(msg, "provision_key"):
			return registry.Conflict("profile", "the provision key is already used by another profile")
		case strings.Contains(msg, "profiles.name"):
			return registry.Conflict("profile", fmt.Sprintf("a profile named %q already exists", p.Name))
		}
		return registry.Conflict("profile", fmt.Sprintf("a profile with id %q already exists", p.ID))
	case foreignKeyViolation:
		return fmt.Errorf("%w: organisation %q does not exist", registry.ErrInvalid, p.OrgID)
	case checkViolation:
		return fmt.Errorf("%w: profile: %s", registry.ErrInvalid, msg)
	}
	return fmt.Errorf("write profile: %w", err)
}

// CreateProfile inserts p, setting ID and timestamps when empty and Version
// to 1.
func (s *Store) CreateProfile(ctx context.Context, p *registry.Profile) error {
	if err := p.Validate(); err != nil {
		return err
	}
	q := *p
	q.X509Chain = cloneX509Chain(p.X509Chain)
	if q.ID == "" {
		q.ID = uuid.NewString()
	}
	q.Version = 1
	t := now()
	q.CreatedAt, q.UpdatedAt = orNow(q.CreatedAt, t), orNow(q.UpdatedAt, t)
	caPEM, pattern, allowCreate := x509ChainArgs(&q)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO profiles (`+profileCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			q.OrgID, q.ID, q.Name, q.Description, q.Strategy, q.ProvisionKey, q.ProvisionSecretHash,
			q.DefaultCredentialType, q.ReprovisionPolicy, q.Version, toDB(q.CreatedAt), toDB(q.UpdatedAt),
			caPEM, pattern, allowCreate)
		if err != nil {
			return profileWriteErr(err, &q)
		}
		return nil
	})
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// cloneX509Chain copies x, so that the record written back to the caller
// shares nothing with what the caller keeps changing.
func cloneX509Chain(x *registry.X509ChainProvisioning) *registry.X509ChainProvisioning {
	if x == nil {
		return nil
	}
	c := *x
	return &c
}

// orNow returns t normalised, or now when t is zero.
func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return norm(t)
}

// GetProfile returns the profile id of organisation orgID.
func (s *Store) GetProfile(ctx context.Context, orgID, id string) (*registry.Profile, error) {
	p, err := scanProfile(s.rdb.QueryRowContext(ctx, `SELECT `+profileCols+` FROM profiles WHERE org_id = ? AND id = ?`, orgID, id))
	if err != nil {
		return nil, notFound(err, "get profile")
	}
	return &p, nil
}

// GetProfileByProvisionKey finds a profile in any organisation.
func (s *Store) GetProfileByProvisionKey(ctx context.Context, key string) (*registry.Profile, error) {
	p, err := scanProfile(s.rdb.QueryRowContext(ctx, `SELECT `+profileCols+` FROM profiles WHERE provision_key = ?`, key))
	if err != nil {
		return nil, notFound(err, "get profile by provision key")
	}
	return &p, nil
}

// ListProfiles returns one page of profiles ordered by name.
func (s *Store) ListProfiles(ctx context.Context, orgID string, opts registry.ListOptions) ([]registry.Profile, string, error) {
	after, err := decodeCursor(opts.After)
	if err != nil {
		return nil, "", err
	}
	limit := opts.EffectiveLimit()
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+profileCols+` FROM profiles
		WHERE org_id = ? AND name > ? ORDER BY name LIMIT ?`, orgID, after, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("list profiles: %w", err)
	}
	defer rows.Close()
	var out []registry.Profile
	for rows.Next() {
		p, err := scanProfile(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list profiles: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list profiles: %w", err)
	}
	var next string
	if len(out) > limit {
		out = out[:limit]
		next = encodeCursor(out[limit-1].Name)
	}
	return out, next, nil
}

// ListX509ChainProfiles returns, across organisations, the profiles that
// trust CAs for X.509 chain provisioning, ordered by organisation and name.
func (s *Store) ListX509ChainProfiles(ctx context.Context) ([]registry.Profile, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+profileCols+` FROM profiles
		WHERE x509_chain_ca_pem IS NOT NULL ORDER BY org_id, name`)
	if err != nil {
		return nil, fmt.Errorf("list X.509 chain profiles: %w", err)
	}
	defer rows.Close()
	var out []registry.Profile
	for rows.Next() {
		p, err := scanProfile(rows)
		if err != nil {
			return nil, fmt.Errorf("list X.509 chain profiles: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list X.509 chain profiles: %w", err)
	}
	return out, nil
}

// UpdateProfile replaces the mutable fields of the profile p.ID with p's,
// provided the stored version is still p.Version (optimistic concurrency),
// and writes back Version (incremented), UpdatedAt and CreatedAt. A stale
// version is ConflictError{What: "profile"}; then nothing is written.
func (s *Store) UpdateProfile(ctx context.Context, p *registry.Profile) error {
	if err := p.Validate(); err != nil {
		return err
	}
	q := *p
	q.X509Chain = cloneX509Chain(p.X509Chain)
	q.UpdatedAt = now()
	caPEM, pattern, allowCreate := x509ChainArgs(&q)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var created, version int64
		err := tx.QueryRowContext(ctx, `UPDATE profiles SET name = ?, description = ?, strategy = ?, provision_key = ?,
			provision_secret_hash = ?, default_credential_type = ?, reprovision_policy = ?, updated_at = ?,
			x509_chain_ca_pem = ?, x509_chain_cn_pattern = ?, x509_chain_allow_create = ?,
			version = version + 1
			WHERE org_id = ? AND id = ? AND version = ? RETURNING created_at, version`,
			q.Name, q.Description, q.Strategy, q.ProvisionKey, q.ProvisionSecretHash, q.DefaultCredentialType,
			q.ReprovisionPolicy, toDB(q.UpdatedAt), caPEM, pattern, allowCreate,
			q.OrgID, q.ID, q.Version).Scan(&created, &version)
		if err == sql.ErrNoRows {
			// Either the profile is gone or someone else wrote it since it
			// was read: tell which, in the same transaction.
			var stored int64
			switch err := tx.QueryRowContext(ctx, `SELECT version FROM profiles WHERE org_id = ? AND id = ?`, q.OrgID, q.ID).Scan(&stored); {
			case err == sql.ErrNoRows:
				return fmt.Errorf("update profile %q: %w", q.ID, registry.ErrNotFound)
			case err != nil:
				return fmt.Errorf("update profile %q: %w", q.ID, err)
			}
			return registry.Conflict("profile", fmt.Sprintf(
				"the profile was changed by someone else (version %d, the update was based on version %d); read it again and retry",
				stored, q.Version))
		}
		if err != nil {
			return profileWriteErr(err, &q)
		}
		q.CreatedAt, q.Version = fromDB(created), version
		return nil
	})
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// DeleteProfile deletes a profile no device uses.
func (s *Store) DeleteProfile(ctx context.Context, orgID, id string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE org_id = ? AND profile_id = ?`, orgID, id).Scan(&n); err != nil {
			return fmt.Errorf("delete profile: %w", err)
		}
		if n > 0 {
			return registry.Conflict("profile", fmt.Sprintf("%d devices still use the profile", n))
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM profiles WHERE org_id = ? AND id = ?`, orgID, id)
		if err != nil {
			return fmt.Errorf("delete profile: %w", err)
		}
		return checkAffected(res, fmt.Sprintf("delete profile %q", id))
	})
}

// Cursors are the last name of the previous page (names are unique per
// organisation), base64-encoded so callers treat them as opaque.

func encodeCursor(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", fmt.Errorf("%w: malformed list cursor", registry.ErrInvalid)
	}
	return string(b), nil
}
