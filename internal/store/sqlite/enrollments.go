package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// Enrollments and enrollment groups share their policy columns; these
// helpers map registry.EnrollmentPolicies onto them and back.

const policyCols = `status, allocation_policy, iot_hubs, reprovision_policy, twin_tags, twin_desired, payload,
	version, created_at, updated_at`

// policyArgs are the values of policyCols but version and times.
func policyArgs(p *registry.EnrollmentPolicies) ([]any, error) {
	hubs, err := json.Marshal(nonNil(p.IoTHubs))
	if err != nil {
		return nil, err
	}
	return []any{p.Status, p.AllocationPolicy, string(hubs), p.ReprovisionPolicy,
		nullJSON(p.InitialTwin.Tags), nullJSON(p.InitialTwin.DesiredProperties), nullJSON(p.CustomPayload)}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nullJSON(raw json.RawMessage) sql.NullString {
	if len(raw) == 0 {
		return sql.NullString{}
	}
	return sql.NullString{String: string(raw), Valid: true}
}

func rawJSON(s sql.NullString) json.RawMessage {
	if !s.Valid {
		return nil
	}
	return json.RawMessage(s.String)
}

// policyScan holds the scanned policy columns until decode.
type policyScan struct {
	hubs                   string
	tags, desired, payload sql.NullString
	created, updated       int64
}

func (ps *policyScan) dest(p *registry.EnrollmentPolicies, version *int64) []any {
	return []any{&p.Status, &p.AllocationPolicy, &ps.hubs, &p.ReprovisionPolicy, &ps.tags, &ps.desired, &ps.payload,
		version, &ps.created, &ps.updated}
}

func (ps *policyScan) decode(p *registry.EnrollmentPolicies) error {
	if err := json.Unmarshal([]byte(ps.hubs), &p.IoTHubs); err != nil {
		return fmt.Errorf("decode iot_hubs: %w", err)
	}
	if len(p.IoTHubs) == 0 {
		p.IoTHubs = nil
	}
	p.InitialTwin.Tags, p.InitialTwin.DesiredProperties, p.CustomPayload = rawJSON(ps.tags), rawJSON(ps.desired), rawJSON(ps.payload)
	return nil
}

// clonePolicies copies p deeply and normalises empty to nil, the form a
// record read back has.
func clonePolicies(p registry.EnrollmentPolicies) registry.EnrollmentPolicies {
	p.IoTHubs = slices.Clone(p.IoTHubs)
	if len(p.IoTHubs) == 0 {
		p.IoTHubs = nil
	}
	p.InitialTwin.Tags = cloneRaw(p.InitialTwin.Tags)
	p.InitialTwin.DesiredProperties = cloneRaw(p.InitialTwin.DesiredProperties)
	p.CustomPayload = cloneRaw(p.CustomPayload)
	return p
}

func cloneRaw(r json.RawMessage) json.RawMessage {
	if len(r) == 0 {
		return nil
	}
	return slices.Clone(r)
}

func cloneKey(k *registry.SymmetricKeyAttestation) *registry.SymmetricKeyAttestation {
	if k == nil {
		return nil
	}
	c := *k
	return &c
}

// Individual enrollments.

const enrollmentCols = `org_id, registration_id, device_id, attestation_type,
	symmetric_primary_key, symmetric_secondary_key, x509_certificate_pem, x509_thumbprint,
	tpm_endorsement_key, tpm_storage_root_key, ` + policyCols

func (s *Store) scanEnrollment(sc scanner) (registry.Enrollment, error) {
	var e registry.Enrollment
	var primary, secondary, certPEM, thumb, ek, srk string
	var ps policyScan
	dest := append([]any{&e.OrgID, &e.RegistrationID, &e.DeviceID, &e.Attestation.Type,
		&primary, &secondary, &certPEM, &thumb, &ek, &srk}, ps.dest(&e.EnrollmentPolicies, &e.Version)...)
	if err := sc.Scan(dest...); err != nil {
		return e, err
	}
	switch e.Attestation.Type {
	case registry.AttestationSymmetricKey:
		k, err := s.openKeys(primary, secondary, func(w string) string { return enrollmentKeyLabel(e.OrgID, e.RegistrationID, w) })
		if err != nil {
			return e, err
		}
		e.Attestation.SymmetricKey = k
	case registry.AttestationX509:
		e.Attestation.X509 = &registry.X509Attestation{CertificatePEM: certPEM, Thumbprint: thumb}
	case registry.AttestationTPM:
		e.Attestation.TPM = &registry.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}
	}
	e.CreatedAt, e.UpdatedAt = fromDB(ps.created), fromDB(ps.updated)
	return e, ps.decode(&e.EnrollmentPolicies)
}

// cloneEnrollment copies e so that what is written back to the caller
// shares nothing with what the caller keeps.
func cloneEnrollment(e *registry.Enrollment) registry.Enrollment {
	q := *e
	q.Attestation.SymmetricKey = cloneKey(e.Attestation.SymmetricKey)
	if x := e.Attestation.X509; x != nil {
		c := *x
		q.Attestation.X509 = &c
	}
	if t := e.Attestation.TPM; t != nil {
		c := *t
		q.Attestation.TPM = &c
	}
	q.EnrollmentPolicies = clonePolicies(e.EnrollmentPolicies)
	return q
}

// enrollmentAttestationArgs are the values of the attestation columns;
// the lookup column x509_thumbprint holds the fingerprint whether it was
// given or computed from the certificate, so the X509Attestation comes
// back with its Thumbprint as stored.
func (s *Store) enrollmentAttestationArgs(e *registry.Enrollment) ([]any, error) {
	var primary, secondary, certPEM, thumb, ek, srk string
	a := e.Attestation
	switch {
	case a.SymmetricKey != nil:
		var err error
		primary, secondary, err = s.sealKeys(a.SymmetricKey, func(w string) string { return enrollmentKeyLabel(e.OrgID, e.RegistrationID, w) })
		if err != nil {
			return nil, err
		}
	case a.X509 != nil:
		fp, err := a.X509.Fingerprint()
		if err != nil {
			return nil, err
		}
		certPEM, thumb = a.X509.CertificatePEM, fp
	case a.TPM != nil:
		ek, srk = a.TPM.EndorsementKey, a.TPM.StorageRootKey
	}
	return []any{primary, secondary, certPEM, thumb, ek, srk}, nil
}

func enrollmentWriteErr(err error, e *registry.Enrollment) error {
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		if strings.Contains(msg, "x509_thumbprint") {
			return registry.Conflict("enrollment", "the device certificate is already enrolled")
		}
		return registry.Conflict("enrollment", fmt.Sprintf("an enrollment with registration id %q already exists", e.RegistrationID))
	case foreignKeyViolation:
		return fmt.Errorf("%w: organisation %q does not exist", registry.ErrInvalid, e.OrgID)
	case checkViolation:
		return fmt.Errorf("%w: enrollment: %s", registry.ErrInvalid, msg)
	}
	return fmt.Errorf("write enrollment: %w", err)
}

// CreateEnrollment inserts e at version 1.
func (s *Store) CreateEnrollment(ctx context.Context, e *registry.Enrollment) error {
	if err := e.Validate(); err != nil {
		return err
	}
	q := cloneEnrollment(e)
	if q.Attestation.X509 != nil {
		fp, _ := q.Attestation.X509.Fingerprint() // validated above
		q.Attestation.X509.Thumbprint = fp
	}
	q.Version = 1
	t := now()
	q.CreatedAt, q.UpdatedAt = orNow(q.CreatedAt, t), orNow(q.UpdatedAt, t)
	att, err := s.enrollmentAttestationArgs(&q)
	if err != nil {
		return err
	}
	pol, err := policyArgs(&q.EnrollmentPolicies)
	if err != nil {
		return err
	}
	args := append([]any{q.OrgID, q.RegistrationID, q.DeviceID, q.Attestation.Type}, att...)
	args = append(args, pol...)
	args = append(args, q.Version, toDB(q.CreatedAt), toDB(q.UpdatedAt))
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO enrollments (`+enrollmentCols+`)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, args...)
		if err != nil {
			return enrollmentWriteErr(err, &q)
		}
		return nil
	})
	if err != nil {
		return err
	}
	*e = q
	return nil
}

// GetEnrollment returns the enrollment; the id is lower-cased first, as
// ids are stored.
func (s *Store) GetEnrollment(ctx context.Context, orgID, registrationID string) (*registry.Enrollment, error) {
	e, err := s.scanEnrollment(s.rdb.QueryRowContext(ctx, `SELECT `+enrollmentCols+` FROM enrollments
		WHERE org_id = ? AND registration_id = ?`, orgID, strings.ToLower(registrationID)))
	if err != nil {
		return nil, notFound(err, "get enrollment")
	}
	return &e, nil
}

// ListEnrollments returns one page of enrollments ordered by registration id.
func (s *Store) ListEnrollments(ctx context.Context, orgID string, opts registry.ListOptions) ([]registry.Enrollment, string, error) {
	return listPage(ctx, s, opts, `SELECT `+enrollmentCols+` FROM enrollments
		WHERE org_id = ? AND registration_id > ? ORDER BY registration_id LIMIT ?`, orgID, "list enrollments",
		s.scanEnrollment, func(e *registry.Enrollment) string { return e.RegistrationID })
}

// listPage runs a keyset-paged query whose parameters are orgID, the
// cursor's key and the limit, and returns the page and the next cursor.
func listPage[T any](ctx context.Context, s *Store, opts registry.ListOptions, query, orgID, what string,
	scan func(scanner) (T, error), key func(*T) string) ([]T, string, error) {
	after, err := decodeCursor(opts.After)
	if err != nil {
		return nil, "", err
	}
	limit := opts.EffectiveLimit()
	rows, err := s.rdb.QueryContext(ctx, query, orgID, after, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	var next string
	if len(out) > limit {
		out = out[:limit]
		next = encodeCursor(key(&out[limit-1]))
	}
	return out, next, nil
}

// UpdateEnrollment replaces the mutable fields at the expected version.
func (s *Store) UpdateEnrollment(ctx context.Context, e *registry.Enrollment) error {
	if err := e.Validate(); err != nil {
		return err
	}
	q := cloneEnrollment(e)
	if q.Attestation.X509 != nil {
		fp, _ := q.Attestation.X509.Fingerprint()
		q.Attestation.X509.Thumbprint = fp
	}
	q.UpdatedAt = now()
	att, err := s.enrollmentAttestationArgs(&q)
	if err != nil {
		return err
	}
	pol, err := policyArgs(&q.EnrollmentPolicies)
	if err != nil {
		return err
	}
	args := append([]any{q.DeviceID, q.Attestation.Type}, att...)
	args = append(args, pol...)
	args = append(args, toDB(q.UpdatedAt), q.OrgID, q.RegistrationID, q.Version)
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var created, version int64
		err := tx.QueryRowContext(ctx, `UPDATE enrollments SET device_id = ?, attestation_type = ?,
			symmetric_primary_key = ?, symmetric_secondary_key = ?, x509_certificate_pem = ?, x509_thumbprint = ?,
			tpm_endorsement_key = ?, tpm_storage_root_key = ?,
			status = ?, allocation_policy = ?, iot_hubs = ?, reprovision_policy = ?, twin_tags = ?, twin_desired = ?,
			payload = ?, updated_at = ?, version = version + 1
			WHERE org_id = ? AND registration_id = ? AND version = ? RETURNING created_at, version`, args...).Scan(&created, &version)
		if errors.Is(err, sql.ErrNoRows) {
			return staleOrGone(ctx, tx, "enrollment", `SELECT version FROM enrollments WHERE org_id = ? AND registration_id = ?`,
				q.OrgID, q.RegistrationID, q.Version)
		}
		if err != nil {
			return enrollmentWriteErr(err, &q)
		}
		q.CreatedAt, q.Version = fromDB(created), version
		return nil
	})
	if err != nil {
		return err
	}
	*e = q
	return nil
}

// staleOrGone tells, inside the transaction of an update that matched no
// row, whether the record is gone (ErrNotFound) or was written by someone
// else since it was read (ConflictError{What: what}).
func staleOrGone(ctx context.Context, tx *sql.Tx, what, query, orgID, id string, based int64) error {
	var stored int64
	switch err := tx.QueryRowContext(ctx, query, orgID, id).Scan(&stored); {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("update %s %q: %w", what, id, registry.ErrNotFound)
	case err != nil:
		return fmt.Errorf("update %s %q: %w", what, id, err)
	}
	return registry.Conflict(what, fmt.Sprintf(
		"the %s was changed by someone else (version %d, the update was based on version %d); read it again and retry",
		what, stored, based))
}

// DeleteEnrollment deletes the enrollment.
func (s *Store) DeleteEnrollment(ctx context.Context, orgID, registrationID string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM enrollments WHERE org_id = ? AND registration_id = ?`,
			orgID, strings.ToLower(registrationID))
		if err != nil {
			return fmt.Errorf("delete enrollment: %w", err)
		}
		return checkAffected(res, fmt.Sprintf("delete enrollment %q", registrationID))
	})
}

// Enrollment groups.

const groupCols = `org_id, id, attestation_type, symmetric_primary_key, symmetric_secondary_key, x509_ca_pem,
	x509_ca_verified, x509_ca_verified_at, x509_ca_verification_code, ` + policyCols

func (s *Store) scanGroup(sc scanner) (registry.EnrollmentGroup, error) {
	var g registry.EnrollmentGroup
	var primary, secondary, caPEM, code string
	var verified bool
	var verifiedAt sql.NullInt64
	var ps policyScan
	dest := append([]any{&g.OrgID, &g.ID, &g.Attestation.Type, &primary, &secondary, &caPEM, &verified, &verifiedAt, &code},
		ps.dest(&g.EnrollmentPolicies, &g.Version)...)
	if err := sc.Scan(dest...); err != nil {
		return g, err
	}
	switch g.Attestation.Type {
	case registry.AttestationSymmetricKey:
		k, err := s.openKeys(primary, secondary, func(w string) string { return groupKeyLabel(g.OrgID, g.ID, w) })
		if err != nil {
			return g, err
		}
		g.Attestation.SymmetricKey = k
	case registry.AttestationX509:
		g.Attestation.X509CA = &registry.X509CAAttestation{CACertificatePEM: caPEM, Verified: verified, VerificationCode: code}
		if verifiedAt.Valid {
			t := fromDB(verifiedAt.Int64)
			g.Attestation.X509CA.VerifiedAt = &t
		}
	}
	g.CreatedAt, g.UpdatedAt = fromDB(ps.created), fromDB(ps.updated)
	return g, ps.decode(&g.EnrollmentPolicies)
}

func cloneGroup(g *registry.EnrollmentGroup) registry.EnrollmentGroup {
	q := *g
	q.Attestation.SymmetricKey = cloneKey(g.Attestation.SymmetricKey)
	if x := g.Attestation.X509CA; x != nil {
		c := *x
		if x.VerifiedAt != nil {
			t := norm(*x.VerifiedAt)
			c.VerifiedAt = &t
		}
		q.Attestation.X509CA = &c
	}
	q.EnrollmentPolicies = clonePolicies(g.EnrollmentPolicies)
	return q
}

func (s *Store) groupAttestationArgs(g *registry.EnrollmentGroup) ([]any, error) {
	primary, secondary, err := s.sealKeys(g.Attestation.SymmetricKey, func(w string) string { return groupKeyLabel(g.OrgID, g.ID, w) })
	if err != nil {
		return nil, err
	}
	var caPEM, code string
	var verified bool
	var verifiedAt sql.NullInt64
	if x := g.Attestation.X509CA; x != nil {
		caPEM, verified, verifiedAt, code = x.CACertificatePEM, x.Verified, nullTime(x.VerifiedAt), x.VerificationCode
	}
	return []any{primary, secondary, caPEM, verified, verifiedAt, code}, nil
}

func groupWriteErr(err error, g *registry.EnrollmentGroup) error {
	switch kind, msg := constraintOf(err); kind {
	case uniqueViolation:
		return registry.Conflict("enrollmentGroup", fmt.Sprintf("an enrollment group with id %q already exists", g.ID))
	case foreignKeyViolation:
		return fmt.Errorf("%w: organisation %q does not exist", registry.ErrInvalid, g.OrgID)
	case checkViolation:
		return fmt.Errorf("%w: enrollment group: %s", registry.ErrInvalid, msg)
	}
	return fmt.Errorf("write enrollment group: %w", err)
}

// CreateEnrollmentGroup inserts g at version 1.
func (s *Store) CreateEnrollmentGroup(ctx context.Context, g *registry.EnrollmentGroup) error {
	if err := g.Validate(); err != nil {
		return err
	}
	q := cloneGroup(g)
	q.Version = 1
	t := now()
	q.CreatedAt, q.UpdatedAt = orNow(q.CreatedAt, t), orNow(q.UpdatedAt, t)
	pol, err := policyArgs(&q.EnrollmentPolicies)
	if err != nil {
		return err
	}
	att, err := s.groupAttestationArgs(&q)
	if err != nil {
		return err
	}
	args := append([]any{q.OrgID, q.ID, q.Attestation.Type}, att...)
	args = append(args, pol...)
	args = append(args, q.Version, toDB(q.CreatedAt), toDB(q.UpdatedAt))
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollment_groups (`+groupCols+`)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, args...); err != nil {
			return groupWriteErr(err, &q)
		}
		return nil
	})
	if err != nil {
		return err
	}
	*g = q
	return nil
}

// GetEnrollmentGroup returns the group; the id is lower-cased first.
func (s *Store) GetEnrollmentGroup(ctx context.Context, orgID, id string) (*registry.EnrollmentGroup, error) {
	g, err := s.scanGroup(s.rdb.QueryRowContext(ctx, `SELECT `+groupCols+` FROM enrollment_groups
		WHERE org_id = ? AND id = ?`, orgID, strings.ToLower(id)))
	if err != nil {
		return nil, notFound(err, "get enrollment group")
	}
	return &g, nil
}

// ListEnrollmentGroups returns one page of groups ordered by id.
func (s *Store) ListEnrollmentGroups(ctx context.Context, orgID string, opts registry.ListOptions) ([]registry.EnrollmentGroup, string, error) {
	return listPage(ctx, s, opts, `SELECT `+groupCols+` FROM enrollment_groups
		WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?`, orgID, "list enrollment groups",
		s.scanGroup, func(g *registry.EnrollmentGroup) string { return g.ID })
}

// UpdateEnrollmentGroup replaces the mutable fields at the expected version.
func (s *Store) UpdateEnrollmentGroup(ctx context.Context, g *registry.EnrollmentGroup) error {
	if err := g.Validate(); err != nil {
		return err
	}
	q := cloneGroup(g)
	q.UpdatedAt = now()
	pol, err := policyArgs(&q.EnrollmentPolicies)
	if err != nil {
		return err
	}
	att, err := s.groupAttestationArgs(&q)
	if err != nil {
		return err
	}
	args := append([]any{q.Attestation.Type}, att...)
	args = append(args, pol...)
	args = append(args, toDB(q.UpdatedAt), q.OrgID, q.ID, q.Version)
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var created, version int64
		err := tx.QueryRowContext(ctx, `UPDATE enrollment_groups SET attestation_type = ?,
			symmetric_primary_key = ?, symmetric_secondary_key = ?, x509_ca_pem = ?,
			x509_ca_verified = ?, x509_ca_verified_at = ?, x509_ca_verification_code = ?,
			status = ?, allocation_policy = ?, iot_hubs = ?, reprovision_policy = ?, twin_tags = ?, twin_desired = ?,
			payload = ?, updated_at = ?, version = version + 1
			WHERE org_id = ? AND id = ? AND version = ? RETURNING created_at, version`, args...).Scan(&created, &version)
		if errors.Is(err, sql.ErrNoRows) {
			return staleOrGone(ctx, tx, "enrollmentGroup", `SELECT version FROM enrollment_groups WHERE org_id = ? AND id = ?`,
				q.OrgID, q.ID, q.Version)
		}
		if err != nil {
			return groupWriteErr(err, &q)
		}
		q.CreatedAt, q.Version = fromDB(created), version
		return nil
	})
	if err != nil {
		return err
	}
	*g = q
	return nil
}

// DeleteEnrollmentGroup deletes the group.
func (s *Store) DeleteEnrollmentGroup(ctx context.Context, orgID, id string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM enrollment_groups WHERE org_id = ? AND id = ?`, orgID, strings.ToLower(id))
		if err != nil {
			return fmt.Errorf("delete enrollment group: %w", err)
		}
		return checkAffected(res, fmt.Sprintf("delete enrollment group %q", id))
	})
}

// ID scopes.

// IDScope returns the organisation's ID scope, creating it on first use.
// Two first calls racing both insert "if absent" in the writer, so both
// return the one scope that was stored.
func (s *Store) IDScope(ctx context.Context, orgID string) (string, error) {
	var scope string
	err := s.rdb.QueryRowContext(ctx, `SELECT id_scope FROM id_scopes WHERE org_id = ?`, orgID).Scan(&scope)
	if err == nil {
		return scope, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("get ID scope: %w", err)
	}
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM organisations WHERE id = ?`, orgID).Scan(&n); err != nil {
			return fmt.Errorf("create ID scope: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("ID scope of organisation %q: %w", orgID, registry.ErrNotFound)
		}
		// 2^32 scopes: a clash with another organisation's is unlikely
		// but possible, so a few fresh draws are tried.
		for range 8 {
			_, err := tx.ExecContext(ctx, `INSERT INTO id_scopes (org_id, id_scope, created_at) VALUES (?, ?, ?)
				ON CONFLICT (org_id) DO NOTHING`, orgID, registry.NewIDScope(), toDB(now()))
			if kind, _ := constraintOf(err); kind == uniqueViolation {
				continue
			}
			if err != nil {
				return fmt.Errorf("create ID scope: %w", err)
			}
			return tx.QueryRowContext(ctx, `SELECT id_scope FROM id_scopes WHERE org_id = ?`, orgID).Scan(&scope)
		}
		return errors.New("create ID scope: no free scope after 8 draws")
	})
	if err != nil {
		return "", err
	}
	return scope, nil
}

// OrgByIDScope returns the organisation of the ID scope.
func (s *Store) OrgByIDScope(ctx context.Context, idScope string) (string, error) {
	scope, ok := registry.CanonicalIDScope(idScope)
	if !ok {
		return "", fmt.Errorf("ID scope %q: %w", idScope, registry.ErrNotFound)
	}
	var orgID string
	if err := s.rdb.QueryRowContext(ctx, `SELECT org_id FROM id_scopes WHERE id_scope = ?`, scope).Scan(&orgID); err != nil {
		return "", notFound(err, "find ID scope")
	}
	return orgID, nil
}
