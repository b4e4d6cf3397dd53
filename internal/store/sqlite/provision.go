package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// CommitProvision writes one provisioning decision in one transaction (shared
// with the other commits queued at the same moment, each in its own
// savepoint): the device created or updated, active credentials revoked,
// new credentials inserted, the audit event appended. On success it writes
// back into c: the device as stored (ID, Version, timestamps, ProvisionedAt
// set to the commit time when it was nil), the credentials and certificates
// as stored, Revoked, RevokedCertificates, At and the audit event with its
// Seq. On failure c is unchanged.
func (s *Store) CommitProvision(ctx context.Context, c *registry.ProvisionCommit) error {
	if c == nil || c.Device == nil {
		return fmt.Errorf("%w: provision commit without a device", registry.ErrInvalid)
	}
	at := orNow(c.At, now())
	d := *c.Device
	if c.Create {
		var err error
		if d, err = prepareNewDevice(d, at); err != nil {
			return err
		}
		d.UpdatedAt = at
	} else {
		if err := d.Validate(); err != nil {
			return err
		}
		if d.ID == "" {
			return fmt.Errorf("%w: device to update has no id", registry.ErrInvalid)
		}
		d.UpdatedAt = at
		d.Version = c.ExpectVersion + 1
	}
	if d.ProvisionedAt == nil {
		d.ProvisionedAt = &at
	} else {
		d.ProvisionedAt = normPtr(d.ProvisionedAt)
	}
	creds := make([]registry.Credential, len(c.Credentials))
	for i, cr := range c.Credentials {
		var err error
		if creds[i], err = prepareCredential(cr, &d, at); err != nil {
			return err
		}
	}
	certs := make([]registry.Certificate, len(c.Certificates))
	for i, cert := range c.Certificates {
		cert.OrgID, cert.DeviceID = d.OrgID, d.ID
		var err error
		if certs[i], err = prepareCertificate(cert, at); err != nil {
			return err
		}
	}
	var reg *registry.Registration
	if c.Registration != nil {
		r, err := prepareRegistration(*c.Registration, &d, at)
		if err != nil {
			return err
		}
		reg = &r
	}
	ev := c.Audit
	ev.DeviceID = d.ID
	if ev.OrgID == "" {
		ev.OrgID = d.OrgID
	}
	ev.Time = orNow(ev.Time, at)
	if err := validateAudit(&ev); err != nil {
		return err
	}

	var revoked []registry.Credential
	var revokedCerts []registry.Certificate
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		revoked, revokedCerts = nil, nil
		if c.Create {
			if err := insertDevice(ctx, tx, &d); err != nil {
				return err
			}
		} else if err := updateDevice(ctx, tx, &d, c.ExpectVersion); err != nil {
			return err
		}
		if c.RevokeActive {
			// Before the inserts, so a rotation may reissue the same identity.
			rows, err := tx.QueryContext(ctx, `UPDATE credentials SET status = 'revoked', revoked_at = ?
				WHERE org_id = ? AND device_id = ? AND status = 'active' RETURNING `+credentialCols,
				toDB(at), d.OrgID, d.ID)
			if err != nil {
				return fmt.Errorf("revoke credentials: %w", err)
			}
			if revoked, err = scanCredentials(rows); err != nil {
				return fmt.Errorf("revoke credentials: %w", err)
			}
			if revokedCerts, err = revokeDeviceCertificates(ctx, tx, d.OrgID, d.ID, registry.RevocationSuperseded, at); err != nil {
				return err
			}
		}
		for i := range creds {
			if err := s.insertCredential(ctx, tx, &creds[i]); err != nil {
				return err
			}
		}
		if err := insertCertificates(ctx, tx, certs); err != nil {
			return err
		}
		if reg != nil {
			if err := writeRegistration(ctx, tx, reg, c.Registration.Version); err != nil {
				return err
			}
		}
		return insertAudit(ctx, tx, &ev)
	})
	if err != nil {
		return err
	}
	*c.Device = d
	c.Credentials = creds
	c.Revoked = revoked
	if len(certs) > 0 {
		c.Certificates = certs
	}
	c.RevokedCertificates = revokedCerts
	if reg != nil {
		*c.Registration = *reg
	}
	c.At = at
	c.Audit = ev
	return nil
}

// updateDevice writes d's mutable fields if the stored version is
// expectVersion, and sets d.CreatedAt from the stored row.
func updateDevice(ctx context.Context, tx *sql.Tx, d *registry.Device, expectVersion int64) error {
	attrs, err := encodeAttributes(d.Attributes)
	if err != nil {
		return err
	}
	var created int64
	err = tx.QueryRowContext(ctx, `UPDATE devices SET profile_id = ?, name = ?, status = ?, provisioned_at = ?,
		attributes = ?, version = version + 1, updated_at = ?
		WHERE org_id = ? AND id = ? AND version = ? RETURNING created_at`,
		d.ProfileID, d.Name, d.Status, nullTime(d.ProvisionedAt), attrs, toDB(d.UpdatedAt),
		d.OrgID, d.ID, expectVersion).Scan(&created)
	if err == nil {
		d.CreatedAt = fromDB(created)
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return deviceWriteErr(err, d)
	}
	var stored int64
	err = tx.QueryRowContext(ctx, `SELECT version FROM devices WHERE org_id = ? AND id = ?`, d.OrgID, d.ID).Scan(&stored)
	if err != nil {
		return notFound(err, fmt.Sprintf("update device %q", d.ID))
	}
	return registry.Conflict("device", fmt.Sprintf("device %q changed since it was read (version %d, expected %d)", d.Name, stored, expectVersion))
}
