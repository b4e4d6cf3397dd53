package registry

import (
	"context"
	"time"
)

// Store is the persistence boundary. Every implementation (SQLite embedded,
// PostgreSQL) passes the conformance suite in internal/registry/storetest.
//
// Rules common to all methods:
//   - records are scoped to an organisation: a record of another organisation
//     is ErrNotFound;
//   - uniqueness violations return a *ConflictError (errors.Is ErrConflict);
//   - invalid records return an error wrapping ErrInvalid, and nothing is written;
//   - a method that returns nil has made its write durable;
//   - writing a record of an unknown organisation is ErrInvalid;
//   - names sort byte-wise (PostgreSQL: COLLATE "C"); Next is empty on the
//     last page; a malformed cursor is ErrInvalid;
//   - times come back in UTC with at least millisecond precision; attribute
//     numbers come back as float64;
//   - a failed write changes nothing, neither in the store nor in the
//     caller's structs.
//
// internal/registry/storetest is the executable form of these rules.
type Store interface {
	// Profiles.

	// CreateProfile inserts p; ID, CreatedAt and UpdatedAt are set by the
	// store when empty. Name is unique per organisation, ProvisionKey globally.
	CreateProfile(ctx context.Context, p *Profile) error
	GetProfile(ctx context.Context, orgID, id string) (*Profile, error)
	// GetProfileByProvisionKey finds a profile in any organisation.
	GetProfileByProvisionKey(ctx context.Context, key string) (*Profile, error)
	// ListProfiles returns profiles ordered by name; next is the cursor of
	// the following page, empty on the last page.
	ListProfiles(ctx context.Context, orgID string, opts ListOptions) (profiles []Profile, next string, err error)
	// UpdateProfile replaces every mutable field of the profile with p's,
	// provided the stored Version equals p.Version (else
	// ConflictError{What: "profile"}); on success p.Version is incremented.
	UpdateProfile(ctx context.Context, p *Profile) error
	// ListX509ChainProfiles returns, across organisations, the profiles
	// with X509Chain set (the CAs a TLS handshake may chain to), ordered
	// by organisation, then name.
	ListX509ChainProfiles(ctx context.Context) ([]Profile, error)
	// DeleteProfile fails with a *ConflictError while devices still use it.
	DeleteProfile(ctx context.Context, orgID, id string) error

	// Devices.

	// CreateDevices inserts devices with their credentials in one
	// transaction: all or nothing. IDs and timestamps are set when empty.
	CreateDevices(ctx context.Context, devices []NewDevice) error
	GetDevice(ctx context.Context, orgID, id string) (*Device, error)
	GetDeviceByName(ctx context.Context, orgID, name string) (*Device, error)
	// ListDevices returns devices ordered by name.
	ListDevices(ctx context.Context, orgID string, f DeviceFilter) (devices []Device, next string, err error)
	// SetDeviceStatus enables or disables a device and returns it updated.
	SetDeviceStatus(ctx context.Context, orgID, id string, status DeviceStatus) (*Device, error)
	// DeleteDevice removes the device and its credentials, and revokes its
	// active certificates (cessationOfOperation): their records stay, so
	// that the CRL keeps listing them until they expire.
	DeleteDevice(ctx context.Context, orgID, id string) error

	// Credentials.

	// ListCredentials returns every credential of a device, active and
	// revoked, newest first.
	ListCredentials(ctx context.Context, orgID, deviceID string) ([]Credential, error)
	// FindActiveCredential finds the active credential of type t with the
	// given lookup key, and its device.
	FindActiveCredential(ctx context.Context, t CredentialType, lookupKey string) (*Credential, *Device, error)
	// RevokeCredential marks one credential revoked; revoking a revoked one is a no-op.
	RevokeCredential(ctx context.Context, orgID, id string) (*Credential, error)

	// Provisioning.

	// CommitProvision applies one provisioning decision atomically and
	// durably: see ProvisionCommit. Implementations may group concurrent
	// commits into one transaction, but each commit succeeds or fails on its own.
	CommitProvision(ctx context.Context, c *ProvisionCommit) error

	// Certificates issued by the built-in CA.

	// RecordCertificates inserts certificate records in one transaction:
	// all or nothing. IssuedAt is set when zero, Status defaults to active,
	// a revoked record without RevokedAt or reason gets the write time and
	// "unspecified". A serial or fingerprint already recorded is
	// ConflictError{What: "certificate"} (with 128-bit random serials, a
	// serial clash means: sign again with a new serial). A DeviceID that is
	// not a device of OrgID is ErrInvalid. On success the records as stored
	// are written back into certs. Implementations may group concurrent
	// calls into one transaction, as for CommitProvision.
	RecordCertificates(ctx context.Context, certs []Certificate) error
	// GetCertificate returns the certificate with the serial (lowercase hex).
	GetCertificate(ctx context.Context, orgID, serial string) (*Certificate, error)
	// GetCertificateByFingerprint finds a certificate in any organisation
	// (a TLS handshake knows the certificate, not its organisation), by its
	// lowercase hex SHA-256 fingerprint.
	GetCertificateByFingerprint(ctx context.Context, fingerprint string) (*Certificate, error)
	// ListCertificates returns the organisation's certificates matching f,
	// ordered by NotAfter, then serial.
	ListCertificates(ctx context.Context, orgID string, f CertificateFilter) (certs []Certificate, next string, err error)
	// RevokeCertificate marks a certificate revoked with reason (empty means
	// unspecified) and returns it; revoking a revoked one is a no-op that
	// keeps the first time and reason.
	RevokeCertificate(ctx context.Context, orgID, serial string, reason RevocationReason) (*Certificate, error)
	// CountExpiringCertificates counts, across organisations, the active
	// device certificates (DeviceID set) whose NotAfter is in [from,
	// before): with from = now, those to renew.
	CountExpiringCertificates(ctx context.Context, from, before time.Time) (int, error)
	// ListRenewedCertificates returns, across organisations, at most limit
	// active certificates that another certificate renews (its Renews),
	// that renewal issued before issuedBefore: the renewed certificates
	// whose grace period is over, to revoke. Ordered by serial.
	ListRenewedCertificates(ctx context.Context, issuedBefore time.Time, limit int) ([]Certificate, error)
	// ListRevokedCertificates returns, across organisations, the revoked
	// certificates of issuer whose NotAfter is after validAt — the entries
	// of that issuer's CRL — ordered by serial, without their PEM.
	ListRevokedCertificates(ctx context.Context, issuer string, validAt time.Time) ([]Certificate, error)

	// Azure DPS enrollments (see enrollment.go).

	// CreateEnrollment inserts e; Version is set to 1, CreatedAt and
	// UpdatedAt when zero. RegistrationID is unique per organisation
	// (ConflictError{What: "enrollment"}).
	CreateEnrollment(ctx context.Context, e *Enrollment) error
	// GetEnrollment returns the individual enrollment with the
	// registration id, which is matched without regard to case.
	GetEnrollment(ctx context.Context, orgID, registrationID string) (*Enrollment, error)
	// ListEnrollments returns enrollments ordered by registration id.
	ListEnrollments(ctx context.Context, orgID string, opts ListOptions) (enrollments []Enrollment, next string, err error)
	// UpdateEnrollment replaces every mutable field (all but OrgID,
	// RegistrationID, CreatedAt) with e's, provided the stored Version
	// equals e.Version (else ConflictError{What: "enrollment"}); on
	// success e.Version is incremented and UpdatedAt set.
	UpdateEnrollment(ctx context.Context, e *Enrollment) error
	DeleteEnrollment(ctx context.Context, orgID, registrationID string) error

	// CreateEnrollmentGroup inserts g, as CreateEnrollment does; ID is
	// unique per organisation (ConflictError{What: "enrollmentGroup"}).
	CreateEnrollmentGroup(ctx context.Context, g *EnrollmentGroup) error
	// GetEnrollmentGroup returns the group with the id, matched without
	// regard to case.
	GetEnrollmentGroup(ctx context.Context, orgID, id string) (*EnrollmentGroup, error)
	// ListEnrollmentGroups returns groups ordered by id.
	ListEnrollmentGroups(ctx context.Context, orgID string, opts ListOptions) (groups []EnrollmentGroup, next string, err error)
	// UpdateEnrollmentGroup is UpdateEnrollment for groups
	// (ConflictError{What: "enrollmentGroup"}).
	UpdateEnrollmentGroup(ctx context.Context, g *EnrollmentGroup) error
	DeleteEnrollmentGroup(ctx context.Context, orgID, id string) error

	// Hubs linked to the organisation's DPS (see hub.go).

	// CreateHub inserts h; Version is set to 1, CreatedAt and UpdatedAt
	// when zero. Name is kept as given and unique per organisation
	// without regard to case (ConflictError{What: "hub"}).
	CreateHub(ctx context.Context, h *Hub) error
	// GetHub returns the hub with the name, matched without regard to case.
	GetHub(ctx context.Context, orgID, name string) (*Hub, error)
	// ListHubs returns hubs ordered by lower-cased name.
	ListHubs(ctx context.Context, orgID string, opts ListOptions) (hubs []Hub, next string, err error)
	// UpdateHub replaces Weight, Region and Enabled of the hub named
	// h.Name (any case) with h's, provided the stored Version equals
	// h.Version (else ConflictError{What: "hub"}); on success h is the
	// record as stored (Version incremented, UpdatedAt set).
	UpdateHub(ctx context.Context, h *Hub) error
	// DeleteHub deletes the hub with the name (any case).
	DeleteHub(ctx context.Context, orgID, name string) error

	// IDScope returns the organisation's DPS ID scope, generating it
	// (NewIDScope) on the first call; it never changes afterwards. An
	// unknown organisation is ErrNotFound.
	IDScope(ctx context.Context, orgID string) (string, error)
	// GetRegistration returns the DPS registration state of the
	// registration id (matched without regard to case).
	GetRegistration(ctx context.Context, orgID, registrationID string) (*Registration, error)

	// OrgByIDScope returns the organisation whose ID scope is idScope
	// (matched without regard to case), for a device's registration that
	// names the scope alone.
	OrgByIDScope(ctx context.Context, idScope string) (orgID string, err error)

	// Audit.

	// AppendAudit records events; Seq is assigned by the store.
	AppendAudit(ctx context.Context, events ...AuditEvent) error
	// ListAudit returns events newest first.
	ListAudit(ctx context.Context, orgID string, f AuditFilter) ([]AuditEvent, error)

	// API keys.

	CreateAPIKey(ctx context.Context, k *APIKey) error
	// GetAPIKeyByHash finds a key in any organisation.
	GetAPIKeyByHash(ctx context.Context, hash string) (*APIKey, error)
	ListAPIKeys(ctx context.Context, orgID string) ([]APIKey, error)
	// DeleteAPIKey refuses (ConflictError{What: "apikey"}) to delete the
	// organisation's last admin key, atomically with the deletion.
	DeleteAPIKey(ctx context.Context, orgID, id string) error

	// Ping checks the store is reachable (for /healthz).
	Ping(ctx context.Context) error
	// Close releases the store; pending group commits are finished first.
	Close() error
}

// ProvisionCommit is the single write of a provisioning decision: the
// device (created or updated), the credentials issued, those revoked, and
// the audit event — all in one transaction.
type ProvisionCommit struct {
	// Device to create (Create) or update. On success the store writes back
	// ID, Version, CreatedAt, UpdatedAt.
	Device *Device
	// Create inserts Device; a taken name fails with ConflictError{What: "device"}.
	Create bool
	// ExpectVersion, for an update, must equal the stored version or the
	// commit fails with ConflictError{What: "device"} (someone else wrote
	// the device since it was read). The store then increments the version.
	ExpectVersion int64
	// RevokeActive revokes every credential of the device that is active
	// before this commit (rotation). Their IDs are written to Revoked. It
	// also revokes the device's active certificates (reason superseded),
	// written to RevokedCertificates.
	RevokeActive bool
	// Credentials are inserted for the device (their DeviceID and OrgID are
	// filled in). A lookup key already used by another active credential
	// fails with ConflictError{What: "credential"}.
	Credentials []Credential
	// Certificates issued to the device are recorded with it (their
	// DeviceID and OrgID are filled in), as RecordCertificates does.
	Certificates []Certificate
	// Audit is recorded in the same transaction (its DeviceID filled in).
	Audit AuditEvent
	// Registration, when set, is the DPS registration state written with
	// the device (its OrgID and DeviceID filled in): inserted when its
	// Version is 0, else updated provided the stored version equals it
	// (else ConflictError{What: "registration"}). On success the store
	// writes back Version, CreatedAt and UpdatedAt.
	Registration *Registration

	// Revoked is set by the store: the credentials revoked by RevokeActive.
	Revoked []Credential
	// RevokedCertificates is set by the store: the certificates revoked by
	// RevokeActive.
	RevokedCertificates []Certificate
	// At is the commit time, set by the store when zero.
	At time.Time
}
