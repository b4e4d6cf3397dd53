-- 0006: Azure DPS registrations and SYMMETRIC_KEY device credentials.
--
-- credentials is rebuilt (SQLite cannot change a CHECK in place) to admit
-- the SYMMETRIC_KEY type and to add sealed_key: the device's keys, sealed
-- with internal/seal under the registry's data key, '' for other types.
-- Enrollment keys (0005's *_key columns) are written sealed from now on; no
-- release wrote them before this migration.

CREATE TABLE credentials_v6 (
    org_id          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    type            TEXT    NOT NULL CHECK (type IN ('ACCESS_TOKEN', 'MQTT_BASIC', 'X509_CERTIFICATE', 'SYMMETRIC_KEY')),
    lookup_key      TEXT    NOT NULL,
    user_key        TEXT    NOT NULL DEFAULT '',
    client_id       TEXT    NOT NULL DEFAULT '',
    username        TEXT    NOT NULL DEFAULT '',
    secret_hash     TEXT    NOT NULL DEFAULT '',
    certificate_pem TEXT    NOT NULL DEFAULT '',
    fingerprint     TEXT    NOT NULL DEFAULT '',
    status          TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    sealed_key      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, device_id) REFERENCES devices (org_id, id) ON DELETE CASCADE
);
INSERT INTO credentials_v6 (org_id, id, device_id, type, lookup_key, user_key, client_id, username, secret_hash,
        certificate_pem, fingerprint, status, created_at, revoked_at)
    SELECT org_id, id, device_id, type, lookup_key, user_key, client_id, username, secret_hash,
        certificate_pem, fingerprint, status, created_at, revoked_at FROM credentials;
DROP TABLE credentials;
ALTER TABLE credentials_v6 RENAME TO credentials;
CREATE UNIQUE INDEX credentials_active_lookup ON credentials (type, lookup_key) WHERE status = 'active';
CREATE UNIQUE INDEX credentials_active_user ON credentials (user_key) WHERE status = 'active' AND user_key <> '';
CREATE INDEX credentials_org_device ON credentials (org_id, device_id);

-- registry.Registration: one row per registration id that was assigned,
-- gone with its device.
CREATE TABLE registrations (
    org_id              TEXT    NOT NULL,
    -- Lower case, as enrollments.registration_id.
    registration_id     TEXT    NOT NULL,
    enrollment_group_id TEXT    NOT NULL DEFAULT '',
    device_id           TEXT    NOT NULL,
    hub_device_id       TEXT    NOT NULL,
    assigned_hub        TEXT    NOT NULL,
    substatus           TEXT    NOT NULL,
    operation_id        TEXT    NOT NULL,
    payload             TEXT,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (org_id, registration_id),
    FOREIGN KEY (org_id, device_id) REFERENCES devices (org_id, id) ON DELETE CASCADE
) STRICT;
CREATE UNIQUE INDEX registrations_device ON registrations (org_id, device_id);
