package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// IoT hubs linked to an organisation's DPS (registry.Hub).

const hubCols = `org_id, name, weight, region, enabled, version, created_at, updated_at`

func scanHub(sc scanner) (registry.Hub, error) {
	var h registry.Hub
	var created, updated int64
	if err := sc.Scan(&h.OrgID, &h.Name, &h.Weight, &h.Region, &h.Enabled, &h.Version, &created, &updated); err != nil {
		return h, err
	}
	h.CreatedAt, h.UpdatedAt = fromDB(created), fromDB(updated)
	return h, nil
}

func hubWriteErr(err error, h *registry.Hub) error {
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		return registry.Conflict("hub", fmt.Sprintf("a hub named %q is already registered", h.Name))
	case foreignKeyViolation:
		return fmt.Errorf("%w: organisation %q does not exist", registry.ErrInvalid, h.OrgID)
	case checkViolation:
		return fmt.Errorf("%w: hub: %s", registry.ErrInvalid, msg)
	}
	return fmt.Errorf("write hub: %w", err)
}

// CreateHub inserts h at version 1.
func (s *Store) CreateHub(ctx context.Context, h *registry.Hub) error {
	if err := h.Validate(); err != nil {
		return err
	}
	q := *h
	q.Version = 1
	t := now()
	q.CreatedAt, q.UpdatedAt = orNow(q.CreatedAt, t), orNow(q.UpdatedAt, t)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO hubs (org_id, name, name_key, weight, region, enabled, version, created_at, updated_at)
			VALUES (?,?,?,?,?,?,?,?,?)`, q.OrgID, q.Name, registry.HubKey(q.Name), q.Weight, q.Region, q.Enabled, q.Version,
			toDB(q.CreatedAt), toDB(q.UpdatedAt))
		if err != nil {
			return hubWriteErr(err, &q)
		}
		return nil
	})
	if err != nil {
		return err
	}
	*h = q
	return nil
}

// GetHub returns the hub, matched without regard to case.
func (s *Store) GetHub(ctx context.Context, orgID, name string) (*registry.Hub, error) {
	h, err := scanHub(s.rdb.QueryRowContext(ctx, `SELECT `+hubCols+` FROM hubs WHERE org_id = ? AND name_key = ?`,
		orgID, registry.HubKey(name)))
	if err != nil {
		return nil, notFound(err, "get hub")
	}
	return &h, nil
}

// ListHubs returns one page of hubs ordered by lower-cased name.
func (s *Store) ListHubs(ctx context.Context, orgID string, opts registry.ListOptions) ([]registry.Hub, string, error) {
	return listPage(ctx, s, opts, `SELECT `+hubCols+` FROM hubs
		WHERE org_id = ? AND name_key > ? ORDER BY name_key LIMIT ?`, orgID, "list hubs",
		scanHub, func(h *registry.Hub) string { return registry.HubKey(h.Name) })
}

// UpdateHub replaces weight, region and enabled at the expected version.
func (s *Store) UpdateHub(ctx context.Context, h *registry.Hub) error {
	if err := h.Validate(); err != nil {
		return err
	}
	q := *h
	q.UpdatedAt = now()
	key := registry.HubKey(q.Name)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var created, version int64
		err := tx.QueryRowContext(ctx, `UPDATE hubs SET weight = ?, region = ?, enabled = ?, updated_at = ?, version = version + 1
			WHERE org_id = ? AND name_key = ? AND version = ? RETURNING name, created_at, version`,
			q.Weight, q.Region, q.Enabled, toDB(q.UpdatedAt), q.OrgID, key, q.Version).Scan(&q.Name, &created, &version)
		if errors.Is(err, sql.ErrNoRows) {
			return staleOrGone(ctx, tx, "hub", `SELECT version FROM hubs WHERE org_id = ? AND name_key = ?`, q.OrgID, key, q.Version)
		}
		if err != nil {
			return hubWriteErr(err, &q)
		}
		q.CreatedAt, q.Version = fromDB(created), version
		return nil
	})
	if err != nil {
		return err
	}
	*h = q
	return nil
}

// DeleteHub deletes the hub.
func (s *Store) DeleteHub(ctx context.Context, orgID, name string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM hubs WHERE org_id = ? AND name_key = ?`, orgID, registry.HubKey(name))
		if err != nil {
			return fmt.Errorf("delete hub: %w", err)
		}
		return checkAffected(res, fmt.Sprintf("delete hub %q", name))
	})
}
