package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/zerotouch/zerotouch/internal/registry"
)

const auditCols = `seq, org_id, time, actor, action, result, device_id, profile_id, source, dialect, detail`

// validateAudit checks what the store needs; the organisation is checked by
// its foreign key.
func validateAudit(e *registry.AuditEvent) error {
	if e.OrgID == "" {
		return fmt.Errorf("%w: audit event has no organisation", registry.ErrInvalid)
	}
	if e.Action == "" {
		return fmt.Errorf("%w: audit event has no action", registry.ErrInvalid)
	}
	return nil
}

// insertAudit appends e and sets e.Seq.
func insertAudit(ctx context.Context, tx *sql.Tx, e *registry.AuditEvent) error {
	res, err := tx.ExecContext(ctx, `INSERT INTO audit_events (org_id, time, actor, action, result, device_id,
		profile_id, source, dialect, detail) VALUES (?,?,?,?,?,?,?,?,?,?)`,
		e.OrgID, toDB(e.Time), e.Actor, e.Action, e.Result, e.DeviceID, e.ProfileID, e.Source, e.Dialect, e.Detail)
	if err != nil {
		if kind, _ := constraintOf(err); kind == foreignKeyViolation {
			return fmt.Errorf("%w: audit event's organisation %q does not exist", registry.ErrInvalid, e.OrgID)
		}
		return fmt.Errorf("append audit event: %w", err)
	}
	if e.Seq, err = res.LastInsertId(); err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	return nil
}

// AppendAudit records events in one transaction, all or nothing. A zero
// Time is set to now.
func (s *Store) AppendAudit(ctx context.Context, events ...registry.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	t := now()
	evs := make([]registry.AuditEvent, len(events))
	for i, e := range events {
		e.Time = orNow(e.Time, t)
		if err := validateAudit(&e); err != nil {
			return err
		}
		evs[i] = e
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for i := range evs {
			if err := insertAudit(ctx, tx, &evs[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// ListAudit returns the organisation's events matching f, newest first.
func (s *Store) ListAudit(ctx context.Context, orgID string, f registry.AuditFilter) ([]registry.AuditEvent, error) {
	var q strings.Builder
	q.WriteString(`SELECT ` + auditCols + ` FROM audit_events WHERE org_id = ?`)
	args := []any{orgID}
	if f.Before > 0 {
		q.WriteString(` AND seq < ?`)
		args = append(args, f.Before)
	}
	if f.DeviceID != "" {
		q.WriteString(` AND device_id = ?`)
		args = append(args, f.DeviceID)
	}
	if f.Action != "" {
		q.WriteString(` AND action = ?`)
		args = append(args, f.Action)
	}
	if f.Result != "" {
		q.WriteString(` AND result = ?`)
		args = append(args, f.Result)
	}
	if !f.Since.IsZero() {
		q.WriteString(` AND time >= ?`)
		args = append(args, toDB(f.Since))
	}
	q.WriteString(` ORDER BY seq DESC LIMIT ?`)
	args = append(args, registry.ListOptions{Limit: f.Limit}.EffectiveLimit())

	rows, err := s.rdb.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	defer rows.Close()
	var out []registry.AuditEvent
	for rows.Next() {
		var e registry.AuditEvent
		var t int64
		if err := rows.Scan(&e.Seq, &e.OrgID, &t, &e.Actor, &e.Action, &e.Result, &e.DeviceID, &e.ProfileID,
			&e.Source, &e.Dialect, &e.Detail); err != nil {
			return nil, fmt.Errorf("list audit events: %w", err)
		}
		e.Time = fromDB(t)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit events: %w", err)
	}
	return out, nil
}
