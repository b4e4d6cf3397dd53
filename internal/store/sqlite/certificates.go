package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

const (
	certificateColsNoPEM = `serial, org_id, device_id, issuer, fingerprint, common_name, not_before, not_after, status,
	revoked_at, revocation_reason, issued_at, renews`
	certificateCols = certificateColsNoPEM + `, pem`
)

type certificateRow struct {
	c                           registry.Certificate
	notBefore, notAfter, issued int64
	revoked                     sql.NullInt64
}

func (r *certificateRow) dest() []any {
	return []any{&r.c.Serial, &r.c.OrgID, &r.c.DeviceID, &r.c.Issuer, &r.c.Fingerprint, &r.c.CommonName,
		&r.notBefore, &r.notAfter, &r.c.Status, &r.revoked, &r.c.RevocationReason, &r.issued, &r.c.Renews, &r.c.PEM}
}

func (r *certificateRow) certificate() registry.Certificate {
	c := r.c
	c.NotBefore, c.NotAfter, c.IssuedAt = fromDB(r.notBefore), fromDB(r.notAfter), fromDB(r.issued)
	c.RevokedAt = timePtr(r.revoked)
	return c
}

func scanCertificates(rows *sql.Rows) ([]registry.Certificate, error) {
	defer rows.Close()
	var out []registry.Certificate
	for rows.Next() {
		var r certificateRow
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, err
		}
		out = append(out, r.certificate())
	}
	return out, rows.Err()
}

// prepareCertificate validates c and fills what the store sets.
func prepareCertificate(c registry.Certificate, t time.Time) (registry.Certificate, error) {
	if err := c.Validate(); err != nil {
		return c, err
	}
	if c.OrgID == "" {
		return c, fmt.Errorf("%w: certificate %s has no organisation", registry.ErrInvalid, c.Serial)
	}
	c.NotBefore, c.NotAfter = norm(c.NotBefore), norm(c.NotAfter)
	c.IssuedAt = orNow(c.IssuedAt, t)
	c.RevokedAt = normPtr(c.RevokedAt)
	if c.Status == "" {
		c.Status = registry.CertificateActive
	}
	if c.Status == registry.CertificateRevoked {
		if c.RevokedAt == nil {
			c.RevokedAt = &t
		}
		if c.RevocationReason == "" {
			c.RevocationReason = registry.RevocationUnspecified
		}
	}
	return c, nil
}

// insertCertificates writes certs with one prepared statement: a batch of
// records should cost one parse, not one per row.
func insertCertificates(ctx context.Context, tx *sql.Tx, certs []registry.Certificate) error {
	if len(certs) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, certInsert)
	if err != nil {
		return fmt.Errorf("record certificates: %w", err)
	}
	defer stmt.Close()
	for i := range certs {
		c := &certs[i]
		res, err := stmt.ExecContext(ctx, c.Serial, c.OrgID, c.DeviceID, c.Issuer, c.Fingerprint, c.CommonName,
			toDB(c.NotBefore), toDB(c.NotAfter), c.Status, nullTime(c.RevokedAt), c.RevocationReason,
			toDB(c.IssuedAt), c.Renews, c.PEM)
		if err != nil {
			return certificateWriteErr(err, c)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("record certificate %s: %w", c.Serial, err)
		} else if n == 0 {
			return fmt.Errorf("%w: certificate %s: device %q does not exist in organisation %q",
				registry.ErrInvalid, c.Serial, c.DeviceID, c.OrgID)
		}
	}
	return nil
}

// certInsert inserts one certificate. Its WHERE checks, in the same
// statement, that the device (?3) belongs to the organisation (?2): a
// record outlives its device, so no foreign key can do it.
const certInsert = `INSERT INTO certificates (` + certificateCols + `)
	SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14
	WHERE ?3 = '' OR EXISTS (SELECT 1 FROM devices WHERE org_id = ?2 AND id = ?3)`

func certificateWriteErr(err error, c *registry.Certificate) error {
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		if strings.Contains(msg, "fingerprint") {
			return registry.Conflict("certificate", fmt.Sprintf("a certificate with fingerprint %s is already recorded", c.Fingerprint))
		}
		return registry.Conflict("certificate", fmt.Sprintf("serial %s is already taken: sign again with a new serial", c.Serial))
	case foreignKeyViolation:
		return fmt.Errorf("%w: certificate's organisation %q does not exist", registry.ErrInvalid, c.OrgID)
	case checkViolation:
		return fmt.Errorf("%w: certificate: %s", registry.ErrInvalid, msg)
	}
	return fmt.Errorf("record certificate %s: %w", c.Serial, err)
}

// RecordCertificates inserts certs in one transaction, all or nothing, and
// writes back the records as stored.
func (s *Store) RecordCertificates(ctx context.Context, certs []registry.Certificate) error {
	if len(certs) == 0 {
		return nil
	}
	t := now()
	prepared := make([]registry.Certificate, len(certs))
	for i, c := range certs {
		var err error
		if prepared[i], err = prepareCertificate(c, t); err != nil {
			return fmt.Errorf("certificate %d of %d: %w", i+1, len(certs), err)
		}
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return insertCertificates(ctx, tx, prepared)
	})
	if err != nil {
		return err
	}
	copy(certs, prepared)
	return nil
}

// GetCertificate returns the organisation's certificate with the serial.
func (s *Store) GetCertificate(ctx context.Context, orgID, serial string) (*registry.Certificate, error) {
	var r certificateRow
	err := s.rdb.QueryRowContext(ctx, `SELECT `+certificateCols+` FROM certificates WHERE serial = ? AND org_id = ?`,
		serial, orgID).Scan(r.dest()...)
	if err != nil {
		return nil, notFound(err, fmt.Sprintf("get certificate %s", serial))
	}
	c := r.certificate()
	return &c, nil
}

// GetCertificateByFingerprint finds a certificate in any organisation.
func (s *Store) GetCertificateByFingerprint(ctx context.Context, fingerprint string) (*registry.Certificate, error) {
	var r certificateRow
	err := s.rdb.QueryRowContext(ctx, `SELECT `+certificateCols+` FROM certificates WHERE fingerprint = ?`,
		fingerprint).Scan(r.dest()...)
	if err != nil {
		return nil, notFound(err, "get certificate by fingerprint")
	}
	c := r.certificate()
	return &c, nil
}

// Certificate cursors are "<not_after µs>/<serial>" of the last row, base64
// like the others.

func encodeCertCursor(c *registry.Certificate) string {
	return encodeCursor(strconv.FormatInt(toDB(c.NotAfter), 10) + "/" + c.Serial)
}

func decodeCertCursor(cursor string) (notAfter int64, serial string, err error) {
	s, err := decodeCursor(cursor)
	if err != nil {
		return 0, "", err
	}
	num, serial, ok := strings.Cut(s, "/")
	notAfter, perr := strconv.ParseInt(num, 10, 64)
	if !ok || perr != nil || serial == "" {
		return 0, "", fmt.Errorf("%w: malformed list cursor", registry.ErrInvalid)
	}
	return notAfter, serial, nil
}

// ListCertificates returns one page of the organisation's certificates
// matching f, ordered by NotAfter, then serial.
func (s *Store) ListCertificates(ctx context.Context, orgID string, f registry.CertificateFilter) ([]registry.Certificate, string, error) {
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", fmt.Errorf("%w: unknown certificate status %q", registry.ErrInvalid, f.Status)
	}
	var q strings.Builder
	q.WriteString(`SELECT ` + certificateCols + ` FROM certificates WHERE org_id = ?`)
	args := []any{orgID}
	if f.After != "" {
		notAfter, serial, err := decodeCertCursor(f.After)
		if err != nil {
			return nil, "", err
		}
		q.WriteString(` AND (not_after, serial) > (?, ?)`)
		args = append(args, notAfter, serial)
	}
	if f.DeviceID != "" {
		q.WriteString(` AND device_id = ?`)
		args = append(args, f.DeviceID)
	}
	if f.Status != "" {
		q.WriteString(` AND status = ?`)
		args = append(args, f.Status)
	}
	if !f.ExpiresFrom.IsZero() {
		q.WriteString(` AND not_after >= ?`)
		args = append(args, toDB(f.ExpiresFrom))
	}
	if !f.ExpiresBefore.IsZero() {
		q.WriteString(` AND not_after < ?`)
		args = append(args, toDB(f.ExpiresBefore))
	}
	limit := f.EffectiveLimit()
	q.WriteString(` ORDER BY not_after, serial LIMIT ?`)
	args = append(args, limit+1)

	rows, err := s.rdb.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, "", fmt.Errorf("list certificates: %w", err)
	}
	out, err := scanCertificates(rows)
	if err != nil {
		return nil, "", fmt.Errorf("list certificates: %w", err)
	}
	var next string
	if len(out) > limit {
		out = out[:limit]
		next = encodeCertCursor(&out[limit-1])
	}
	return out, next, nil
}

// RevokeCertificate marks a certificate revoked; an already revoked one is
// returned unchanged.
func (s *Store) RevokeCertificate(ctx context.Context, orgID, serial string, reason registry.RevocationReason) (*registry.Certificate, error) {
	if reason == "" {
		reason = registry.RevocationUnspecified
	}
	if !reason.Valid() {
		return nil, fmt.Errorf("%w: unknown revocation reason %q", registry.ErrInvalid, reason)
	}
	t := now()
	var c registry.Certificate
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
			WHERE serial = ? AND org_id = ? AND status = 'active'`, toDB(t), reason, serial, orgID); err != nil {
			return fmt.Errorf("revoke certificate: %w", err)
		}
		var r certificateRow
		if err := tx.QueryRowContext(ctx, `SELECT `+certificateCols+` FROM certificates WHERE serial = ? AND org_id = ?`,
			serial, orgID).Scan(r.dest()...); err != nil {
			return notFound(err, fmt.Sprintf("revoke certificate %s", serial))
		}
		c = r.certificate()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// CountExpiringCertificates implements registry.Store.
func (s *Store) CountExpiringCertificates(ctx context.Context, from, before time.Time) (int, error) {
	var n int
	err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM certificates WHERE status = 'active' AND device_id != '' AND not_after >= ? AND not_after < ?`,
		toDB(from), toDB(before)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count expiring certificates: %w", err)
	}
	return n, nil
}

// ListRenewedCertificates implements registry.Store.
func (s *Store) ListRenewedCertificates(ctx context.Context, issuedBefore time.Time, limit int) ([]registry.Certificate, error) {
	if limit <= 0 {
		limit = registry.MaxPageSize
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+certificateCols+` FROM certificates
		WHERE status = 'active' AND serial IN (SELECT renews FROM certificates WHERE renews != '' AND issued_at < ?)
		ORDER BY serial LIMIT ?`, toDB(issuedBefore), limit)
	if err != nil {
		return nil, fmt.Errorf("list renewed certificates: %w", err)
	}
	return scanCertificates(rows)
}

// ListRevokedCertificates returns the entries of issuer's CRL.
func (s *Store) ListRevokedCertificates(ctx context.Context, issuer string, validAt time.Time) ([]registry.Certificate, error) {
	// pem is left out ('' in its place): a CRL of many entries needs only
	// serials and times.
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+certificateColsNoPEM+`, '' FROM certificates
		WHERE issuer = ? AND status = 'revoked' AND not_after > ? ORDER BY serial`, issuer, toDB(validAt))
	if err != nil {
		return nil, fmt.Errorf("list revoked certificates: %w", err)
	}
	out, err := scanCertificates(rows)
	if err != nil {
		return nil, fmt.Errorf("list revoked certificates: %w", err)
	}
	return out, nil
}

// revokeDeviceCertificates revokes the device's active certificates inside
// tx and returns them as revoked.
func revokeDeviceCertificates(ctx context.Context, tx *sql.Tx, orgID, deviceID string, reason registry.RevocationReason, t time.Time) ([]registry.Certificate, error) {
	rows, err := tx.QueryContext(ctx, `UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ?
		WHERE org_id = ? AND device_id = ? AND status = 'active' RETURNING `+certificateCols,
		toDB(t), reason, orgID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("revoke certificates: %w", err)
	}
	out, err := scanCertificates(rows)
	if err != nil {
		return nil, fmt.Errorf("revoke certificates: %w", err)
	}
	return out, nil
}
