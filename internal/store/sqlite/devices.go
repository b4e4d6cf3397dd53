package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/zerotouch/zerotouch/internal/registry"
)

const deviceCols = `org_id, id, profile_id, name, status, provisioned_at, attributes, version, created_at, updated_at`

// deviceRow receives a device's columns, also as part of a join.
type deviceRow struct {
	d                registry.Device
	provisioned      sql.NullInt64
	attrs            sql.NullString
	created, updated int64
}

func (r *deviceRow) dest() []any {
	return []any{&r.d.OrgID, &r.d.ID, &r.d.ProfileID, &r.d.Name, &r.d.Status, &r.provisioned, &r.attrs,
		&r.d.Version, &r.created, &r.updated}
}

func (r *deviceRow) device() (registry.Device, error) {
	d := r.d
	d.ProvisionedAt = timePtr(r.provisioned)
	d.CreatedAt, d.UpdatedAt = fromDB(r.created), fromDB(r.updated)
	if r.attrs.Valid {
		// Numbers come back as float64, as encoding/json decodes them into any.
		if err := json.Unmarshal([]byte(r.attrs.String), &d.Attributes); err != nil {
			return d, fmt.Errorf("device %q: decode attributes: %w", d.ID, err)
		}
	}
	return d, nil
}

func scanDevice(sc scanner) (registry.Device, error) {
	var r deviceRow
	if err := sc.Scan(r.dest()...); err != nil {
		return registry.Device{}, err
	}
	return r.device()
}

// encodeAttributes stores no attributes as NULL, so an empty map reads back nil.
func encodeAttributes(m map[string]any) (sql.NullString, error) {
	if len(m) == 0 {
		return sql.NullString{}, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return sql.NullString{}, fmt.Errorf("%w: attributes: %v", registry.ErrInvalid, err)
	}
	return sql.NullString{String: string(b), Valid: true}, nil
}

const credentialCols = `org_id, id, device_id, type, lookup_key, client_id, username, secret_hash, certificate_pem,
	fingerprint, status, created_at, revoked_at`

type credentialRow struct {
	c       registry.Credential
	created int64
	revoked sql.NullInt64
}

func (r *credentialRow) dest() []any {
	return []any{&r.c.OrgID, &r.c.ID, &r.c.DeviceID, &r.c.Type, &r.c.LookupKey, &r.c.ClientID, &r.c.Username,
		&r.c.SecretHash, &r.c.CertificatePEM, &r.c.Fingerprint, &r.c.Status, &r.created, &r.revoked}
}

func (r *credentialRow) credential() registry.Credential {
	c := r.c
	c.CreatedAt = fromDB(r.created)
	c.RevokedAt = timePtr(r.revoked)
	return c
}

func scanCredentials(rows *sql.Rows) ([]registry.Credential, error) {
	defer rows.Close()
	var out []registry.Credential
	for rows.Next() {
		var r credentialRow
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, err
		}
		out = append(out, r.credential())
	}
	return out, rows.Err()
}

// prepareNewDevice validates d and fills what the store sets on creation.
func prepareNewDevice(d registry.Device, t time.Time) (registry.Device, error) {
	if err := d.Validate(); err != nil {
		return d, err
	}
	if d.OrgID == "" {
		return d, fmt.Errorf("%w: device has no organisation", registry.ErrInvalid)
	}
	if d.ID == "" {
		d.ID = uuid.NewString()
	}
	d.Version = 1
	d.CreatedAt, d.UpdatedAt = orNow(d.CreatedAt, t), orNow(d.UpdatedAt, t)
	d.ProvisionedAt = normPtr(d.ProvisionedAt)
	return d, nil
}

// prepareCredential validates c and attaches it to device d.
func prepareCredential(c registry.Credential, d *registry.Device, t time.Time) (registry.Credential, error) {
	if !c.Type.Valid() {
		return c, fmt.Errorf("%w: unknown credentials type %q", registry.ErrInvalid, c.Type)
	}
	if c.LookupKey == "" {
		return c, fmt.Errorf("%w: %s credential has no lookup key", registry.ErrInvalid, c.Type)
	}
	switch c.Status {
	case "":
		c.Status = registry.CredentialActive
	case registry.CredentialActive, registry.CredentialRevoked:
	default:
		return c, fmt.Errorf("%w: unknown credential status %q", registry.ErrInvalid, c.Status)
	}
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	c.OrgID, c.DeviceID = d.OrgID, d.ID
	c.CreatedAt = orNow(c.CreatedAt, t)
	c.RevokedAt = normPtr(c.RevokedAt)
	if c.Status == registry.CredentialRevoked && c.RevokedAt == nil {
		c.RevokedAt = &t
	}
	return c, nil
}

func deviceWriteErr(err error, d *registry.Device) error {
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		if strings.Contains(msg, "devices.name") {
			return registry.Conflict("device", fmt.Sprintf("a device named %q already exists", d.Name))
		}
		return registry.Conflict("device", fmt.Sprintf("a device with id %q already exists", d.ID))
	case foreignKeyViolation:
		return fmt.Errorf("%w: profile %q does not exist in organisation %q", registry.ErrInvalid, d.ProfileID, d.OrgID)
	case checkViolation:
		return fmt.Errorf("%w: device: %s", registry.ErrInvalid, msg)
	}
	return fmt.Errorf("write device: %w", err)
}

func insertDevice(ctx context.Context, tx *sql.Tx, d *registry.Device) error {
	attrs, err := encodeAttributes(d.Attributes)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES (?,?,?,?,?,?,?,?,?,?)`,
		d.OrgID, d.ID, d.ProfileID, d.Name, d.Status, nullTime(d.ProvisionedAt), attrs, d.Version,
		toDB(d.CreatedAt), toDB(d.UpdatedAt))
	if err != nil {
		return deviceWriteErr(err, d)
	}
	return nil
}

// insertCredential writes c. user_key is derived (registry.Credential.UserKey)
// and only written: its unique index keeps the MQTT user name space unambiguous.
func (s *Store) insertCredential(ctx context.Context, tx *sql.Tx, c *registry.Credential) error {
	sealed, err := s.sealCredentialKey(c)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO credentials (`+credentialCols+`, user_key, sealed_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		c.OrgID, c.ID, c.DeviceID, c.Type, c.LookupKey, c.ClientID, c.Username, c.SecretHash, c.CertificatePEM,
		c.Fingerprint, c.Status, toDB(c.CreatedAt), nullTime(c.RevokedAt), c.UserKey(), sealed)
	if err == nil {
		return nil
	}
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		if strings.Contains(msg, "lookup_key") {
			return registry.Conflict("credential", fmt.Sprintf("another active %s credential has the same identity", c.Type))
		}
		if strings.Contains(msg, "user_key") {
			return registry.Conflict("credential", "another active credential uses the same MQTT user name (tokens and MQTT user names share one name space)")
		}
		return registry.Conflict("credential", fmt.Sprintf("a credential with id %q already exists", c.ID))
	case foreignKeyViolation:
		return fmt.Errorf("%w: credential's device %q does not exist", registry.ErrInvalid, c.DeviceID)
	case checkViolation:
		return fmt.Errorf("%w: credential: %s", registry.ErrInvalid, msg)
	}
	return fmt.Errorf("write credential: %w", err)
}

// CreateDevices inserts devices and their credentials, all or nothing.
func (s *Store) CreateDevices(ctx context.Context, devices []registry.NewDevice) error {
	if len(devices) == 0 {
		return nil
	}
	t := now()
	prepared := make([]registry.NewDevice, len(devices))
	for i, nd := range devices {
		d, err := prepareNewDevice(nd.Device, t)
		if err != nil {
			return fmt.Errorf("device %d of %d: %w", i+1, len(devices), err)
		}
		creds := make([]registry.Credential, len(nd.Credentials))
		for j, c := range nd.Credentials {
			if creds[j], err = prepareCredential(c, &d, t); err != nil {
				return fmt.Errorf("device %d of %d (%q): %w", i+1, len(devices), d.Name, err)
			}
		}
		prepared[i] = registry.NewDevice{Device: d, Credentials: creds}
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for i := range prepared {
			nd := &prepared[i]
			if err := insertDevice(ctx, tx, &nd.Device); err != nil {
				return fmt.Errorf("device %d of %d: %w", i+1, len(prepared), err)
			}
			for j := range nd.Credentials {
				if err := s.insertCredential(ctx, tx, &nd.Credentials[j]); err != nil {
					return fmt.Errorf("device %d of %d (%q): %w", i+1, len(prepared), nd.Device.Name, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	copy(devices, prepared)
	return nil
}

// GetDevice returns the device id of organisation orgID.
func (s *Store) GetDevice(ctx context.Context, orgID, id string) (*registry.Device, error) {
	d, err := scanDevice(s.rdb.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE org_id = ? AND id = ?`, orgID, id))
	if err != nil {
		return nil, notFound(err, "get device")
	}
	return &d, nil
}

// GetDeviceByName returns the device named name in organisation orgID.
func (s *Store) GetDeviceByName(ctx context.Context, orgID, name string) (*registry.Device, error) {
	d, err := scanDevice(s.rdb.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE org_id = ? AND name = ?`, orgID, name))
	if err != nil {
		return nil, notFound(err, "get device by name")
	}
	return &d, nil
}

// ListDevices returns one page of the devices matching f, ordered by name.
func (s *Store) ListDevices(ctx context.Context, orgID string, f registry.DeviceFilter) ([]registry.Device, string, error) {
	after, err := decodeCursor(f.After)
	if err != nil {
		return nil, "", err
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", fmt.Errorf("%w: unknown device status %q", registry.ErrInvalid, f.Status)
	}
	limit := f.EffectiveLimit()
	var q strings.Builder
	q.WriteString(`SELECT ` + deviceCols + ` FROM devices WHERE org_id = ? AND name > ?`)
	args := []any{orgID, after}
	if f.ProfileID != "" {
		q.WriteString(` AND profile_id = ?`)
		args = append(args, f.ProfileID)
	}
	if f.Status != "" {
		q.WriteString(` AND status = ?`)
		args = append(args, f.Status)
	}
	if f.Provisioned != nil {
		if *f.Provisioned {
			q.WriteString(` AND provisioned_at IS NOT NULL`)
		} else {
			q.WriteString(` AND provisioned_at IS NULL`)
		}
	}
	if f.NamePrefix != "" {
		// The range lets the (org_id, name) index narrow the scan; substr
		// makes the match exact (no LIKE wildcards to escape).
		q.WriteString(` AND name >= ? AND substr(name, 1, length(?)) = ?`)
		args = append(args, f.NamePrefix, f.NamePrefix, f.NamePrefix)
	}
	q.WriteString(` ORDER BY name LIMIT ?`)
	args = append(args, limit+1)

	rows, err := s.rdb.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, "", fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []registry.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list devices: %w", err)
	}
	var next string
	if len(out) > limit {
		out = out[:limit]
		next = encodeCursor(out[limit-1].Name)
	}
	return out, next, nil
}

// SetDeviceStatus enables or disables a device.
func (s *Store) SetDeviceStatus(ctx context.Context, orgID, id string, status registry.DeviceStatus) (*registry.Device, error) {
	if !status.Valid() {
		return nil, fmt.Errorf("%w: unknown device status %q (want enabled or disabled)", registry.ErrInvalid, status)
	}
	t := now()
	var d registry.Device
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		d, err = scanDevice(tx.QueryRowContext(ctx, `UPDATE devices SET status = ?, version = version + 1, updated_at = ?
			WHERE org_id = ? AND id = ? RETURNING `+deviceCols, status, toDB(t), orgID, id))
		if err != nil {
			return notFound(err, fmt.Sprintf("set status of device %q", id))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// DeleteDevice removes the device; its credentials go with it (ON DELETE
// CASCADE). Its audit events stay, and so do its certificates, revoked, so
// that the CRL lists them until they expire.
func (s *Store) DeleteDevice(ctx context.Context, orgID, id string) error {
	t := now()
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE org_id = ? AND id = ?`, orgID, id)
		if err != nil {
			return fmt.Errorf("delete device: %w", err)
		}
		if err := checkAffected(res, fmt.Sprintf("delete device %q", id)); err != nil {
			return err
		}
		_, err = revokeDeviceCertificates(ctx, tx, orgID, id, registry.RevocationCessationOfOperation, t)
		return err
	})
}

// checkAffected returns ErrNotFound when a statement touched no row.
func checkAffected(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, registry.ErrNotFound)
	}
	return nil
}

// ListCredentials returns the device's credentials, newest first;
// ErrNotFound when the organisation has no such device.
func (s *Store) ListCredentials(ctx context.Context, orgID, deviceID string) ([]registry.Credential, error) {
	var one int
	err := s.rdb.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE org_id = ? AND id = ?`, orgID, deviceID).Scan(&one)
	if err != nil {
		return nil, notFound(err, "list credentials")
	}
	// rowid breaks ties between credentials created in the same commit.
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+credentialCols+` FROM credentials
		WHERE org_id = ? AND device_id = ? ORDER BY created_at DESC, rowid DESC`, orgID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	out, err := scanCredentials(rows)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	return out, nil
}

// FindActiveCredential finds, in any organisation, the active credential of
// type t with the lookup key, and its device.
func (s *Store) FindActiveCredential(ctx context.Context, t registry.CredentialType, lookupKey string) (*registry.Credential, *registry.Device, error) {
	var cr credentialRow
	var dr deviceRow
	var sealed string
	// status = 'active' spelled out so the partial unique index applies.
	err := s.rdb.QueryRowContext(ctx, `SELECT `+prefixCols("c", credentialCols)+`, c.sealed_key, `+prefixCols("d", deviceCols)+`
		FROM credentials c JOIN devices d ON d.org_id = c.org_id AND d.id = c.device_id
		WHERE c.type = ? AND c.lookup_key = ? AND c.status = 'active'`, t, lookupKey).
		Scan(append(append(cr.dest(), &sealed), dr.dest()...)...)
	if err != nil {
		return nil, nil, notFound(err, "find credential")
	}
	c := cr.credential()
	if err := s.openCredentialKey(&c, sealed); err != nil {
		return nil, nil, err
	}
	d, err := dr.device()
	if err != nil {
		return nil, nil, err
	}
	return &c, &d, nil
}

// prefixCols qualifies each column of a column list with a table alias.
func prefixCols(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = alias + "." + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

// RevokeCredential marks a credential revoked; an already revoked one is
// returned unchanged.
func (s *Store) RevokeCredential(ctx context.Context, orgID, id string) (*registry.Credential, error) {
	t := now()
	var c registry.Credential
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE credentials SET status = 'revoked', revoked_at = ?
			WHERE org_id = ? AND id = ? AND status = 'active'`, toDB(t), orgID, id); err != nil {
			return fmt.Errorf("revoke credential: %w", err)
		}
		var r credentialRow
		if err := tx.QueryRowContext(ctx, `SELECT `+credentialCols+` FROM credentials WHERE org_id = ? AND id = ?`,
			orgID, id).Scan(r.dest()...); err != nil {
			return notFound(err, fmt.Sprintf("revoke credential %q", id))
		}
		c = r.credential()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}
