package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

const registrationCols = `org_id, registration_id, enrollment_group_id, device_id, hub_device_id, assigned_hub,
	substatus, operation_id, payload, version, created_at, updated_at`

func scanRegistration(sc scanner) (registry.Registration, error) {
	var r registry.Registration
	var payload sql.NullString
	var created, updated int64
	err := sc.Scan(&r.OrgID, &r.RegistrationID, &r.EnrollmentGroupID, &r.DeviceID, &r.HubDeviceID, &r.AssignedHub,
		&r.Substatus, &r.OperationID, &payload, &r.Version, &created, &updated)
	r.Payload = rawJSON(payload)
	r.CreatedAt, r.UpdatedAt = fromDB(created), fromDB(updated)
	return r, err
}

// GetRegistration returns the registration state; the id is lower-cased
// first, as ids are stored.
func (s *Store) GetRegistration(ctx context.Context, orgID, registrationID string) (*registry.Registration, error) {
	r, err := scanRegistration(s.rdb.QueryRowContext(ctx, `SELECT `+registrationCols+` FROM registrations
		WHERE org_id = ? AND registration_id = ?`, orgID, strings.ToLower(registrationID)))
	if err != nil {
		return nil, notFound(err, "get registration")
	}
	return &r, nil
}

// prepareRegistration checks r and fills what the commit sets: the
// device's ids, the new version and the times.
func prepareRegistration(r registry.Registration, d *registry.Device, at time.Time) (registry.Registration, error) {
	r.OrgID, r.DeviceID = d.OrgID, d.ID
	r.Payload = cloneRaw(r.Payload)
	if err := r.Validate(); err != nil {
		return r, err
	}
	if r.Version == 0 {
		r.CreatedAt = orNow(r.CreatedAt, at)
	} else {
		r.CreatedAt = norm(r.CreatedAt)
	}
	r.UpdatedAt = at
	return r, nil
}

// writeRegistration inserts r (expect 0) or updates it at version expect,
// and sets r.Version to the stored one.
func writeRegistration(ctx context.Context, tx *sql.Tx, r *registry.Registration, expect int64) error {
	var err error
	if expect == 0 {
		_, err = tx.ExecContext(ctx, `INSERT INTO registrations (`+registrationCols+`) VALUES (?,?,?,?,?,?,?,?,?,1,?,?)`,
			r.OrgID, r.RegistrationID, r.EnrollmentGroupID, r.DeviceID, r.HubDeviceID, r.AssignedHub,
			r.Substatus, r.OperationID, nullJSON(r.Payload), toDB(r.CreatedAt), toDB(r.UpdatedAt))
		if err == nil {
			r.Version = 1
			return nil
		}
	} else {
		var created int64
		err = tx.QueryRowContext(ctx, `UPDATE registrations SET enrollment_group_id = ?, device_id = ?, hub_device_id = ?,
			assigned_hub = ?, substatus = ?, operation_id = ?, payload = ?, version = version + 1, updated_at = ?
			WHERE org_id = ? AND registration_id = ? AND version = ? RETURNING created_at`,
			r.EnrollmentGroupID, r.DeviceID, r.HubDeviceID, r.AssignedHub, r.Substatus, r.OperationID,
			nullJSON(r.Payload), toDB(r.UpdatedAt), r.OrgID, r.RegistrationID, expect).Scan(&created)
		if err == nil {
			r.Version, r.CreatedAt = expect+1, fromDB(created)
			return nil
		}
		if errors.Is(err, sql.ErrNoRows) {
			return registry.Conflict("registration", fmt.Sprintf("registration %q changed since it was read", r.RegistrationID))
		}
	}
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		if strings.Contains(msg, "device_id") {
			return registry.Conflict("registration", "the device already has another registration")
		}
		return registry.Conflict("registration", fmt.Sprintf("registration %q already exists", r.RegistrationID))
	case foreignKeyViolation:
		return fmt.Errorf("%w: registration's device %q does not exist", registry.ErrInvalid, r.DeviceID)
	}
	return fmt.Errorf("write registration: %w", err)
}
