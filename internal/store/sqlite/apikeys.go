package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/zerotouch/zerotouch/internal/registry"
)

const apiKeyCols = `org_id, id, name, role, hash, created_at`

func scanAPIKey(sc scanner) (registry.APIKey, error) {
	var k registry.APIKey
	var created int64
	err := sc.Scan(&k.OrgID, &k.ID, &k.Name, &k.Role, &k.Hash, &created)
	k.CreatedAt = fromDB(created)
	return k, err
}

// CreateAPIKey stores k, setting ID and CreatedAt when empty. The hash is
// unique across organisations.
func (s *Store) CreateAPIKey(ctx context.Context, k *registry.APIKey) error {
	if err := registry.ValidateName("api key", k.Name); err != nil {
		return err
	}
	switch k.Role {
	case registry.RoleAdmin, registry.RoleOperator, registry.RoleOEM, registry.RoleViewer:
	default:
		return fmt.Errorf("%w: unknown role %q (want admin, operator, oem or viewer)", registry.ErrInvalid, k.Role)
	}
	if k.Hash == "" {
		return fmt.Errorf("%w: api key has no hash", registry.ErrInvalid)
	}
	q := *k
	if q.ID == "" {
		q.ID = uuid.NewString()
	}
	q.CreatedAt = orNow(q.CreatedAt, now())
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (`+apiKeyCols+`) VALUES (?,?,?,?,?,?)`,
			q.OrgID, q.ID, q.Name, q.Role, q.Hash, toDB(q.CreatedAt))
		switch kind, msg := constraintOf(err); {
		case err == nil:
			return nil
		case kind == uniqueViolation && strings.Contains(msg, "hash"):
			return registry.Conflict("apikey", "this key is already registered")
		case kind == uniqueViolation:
			return registry.Conflict("apikey", fmt.Sprintf("an api key with id %q already exists", q.ID))
		case kind == foreignKeyViolation:
			return fmt.Errorf("%w: organisation %q does not exist", registry.ErrInvalid, q.OrgID)
		}
		return fmt.Errorf("create api key: %w", err)
	})
	if err != nil {
		return err
	}
	*k = q
	return nil
}

// GetAPIKeyByHash finds a key in any organisation.
func (s *Store) GetAPIKeyByHash(ctx context.Context, hash string) (*registry.APIKey, error) {
	k, err := scanAPIKey(s.rdb.QueryRowContext(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE hash = ?`, hash))
	if err != nil {
		return nil, notFound(err, "get api key")
	}
	return &k, nil
}

// ListAPIKeys returns the organisation's keys, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context, orgID string) ([]registry.APIKey, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE org_id = ? ORDER BY created_at, id`, orgID)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	defer rows.Close()
	var out []registry.APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list api keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return out, nil
}

// DeleteAPIKey deletes a key of the organisation. The check that it is not
// the organisation's last admin key runs in the writer's transaction, so two
// concurrent deletions cannot remove every admin key between them.
func (s *Store) DeleteAPIKey(ctx context.Context, orgID, id string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var role string
		switch err := tx.QueryRowContext(ctx, `SELECT role FROM api_keys WHERE org_id = ? AND id = ?`, orgID, id).Scan(&role); {
		case err == sql.ErrNoRows:
			return fmt.Errorf("delete api key %q: %w", id, registry.ErrNotFound)
		case err != nil:
			return fmt.Errorf("delete api key: %w", err)
		}
		if role == registry.RoleAdmin {
			var others int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM api_keys WHERE org_id = ? AND role = ? AND id <> ?`,
				orgID, registry.RoleAdmin, id).Scan(&others); err != nil {
				return fmt.Errorf("delete api key: %w", err)
			}
			if others == 0 {
				return registry.Conflict("apikey", "it is the last admin key of the organisation; create another admin key first")
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM api_keys WHERE org_id = ? AND id = ?`, orgID, id); err != nil {
			return fmt.Errorf("delete api key: %w", err)
		}
		return nil
	})
}
