-- 0001: the first schema. Every table carries org_id from the start so that
-- multi-tenancy needs no schema rewrite. Times are INTEGER Unix microseconds
-- (UTC); attributes are JSON text.

CREATE TABLE organisations (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Must equal registry.DefaultOrgID.
INSERT INTO organisations (id, name, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 'default', CAST(unixepoch('subsec') * 1000000 AS INTEGER));

CREATE TABLE profiles (
    org_id                  TEXT    NOT NULL REFERENCES organisations (id),
    id                      TEXT    NOT NULL,
    name                    TEXT    NOT NULL,
    description             TEXT    NOT NULL DEFAULT '',
    strategy                TEXT    NOT NULL,
    provision_key           TEXT    NOT NULL,
    provision_secret_hash   TEXT    NOT NULL,
    default_credential_type TEXT    NOT NULL,
    reprovision_policy      TEXT    NOT NULL,
    version                 INTEGER NOT NULL DEFAULT 1,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
);
-- A device's request names its profile by provision key alone, across organisations.
CREATE UNIQUE INDEX profiles_provision_key ON profiles (provision_key);
CREATE UNIQUE INDEX profiles_org_name ON profiles (org_id, name);

CREATE TABLE devices (
    org_id         TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    profile_id     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('enabled', 'disabled')),
    provisioned_at INTEGER,
    attributes     TEXT,
    version        INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (org_id, id),
    -- Composite: a device's profile must belong to the same organisation.
    FOREIGN KEY (org_id, profile_id) REFERENCES profiles (org_id, id)
);
CREATE UNIQUE INDEX devices_org_name ON devices (org_id, name);
-- Serves the profile filter and the "profile still in use" check.
CREATE INDEX devices_org_profile ON devices (org_id, profile_id);

CREATE TABLE credentials (
    org_id          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    type            TEXT    NOT NULL CHECK (type IN ('ACCESS_TOKEN', 'MQTT_BASIC', 'X509_CERTIFICATE')),
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
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, device_id) REFERENCES devices (org_id, id) ON DELETE CASCADE
);
-- The hub authenticates by (type, lookup key) across organisations; only one
-- active credential may hold a key, revoked ones keep theirs for the record.
CREATE UNIQUE INDEX credentials_active_lookup ON credentials (type, lookup_key) WHERE status = 'active';
-- One MQTT user name space for tokens and MQTT basic user names (see
-- registry.Credential.UserKey): otherwise one device could register, as its
-- token, another device's user name and be taken for it at CONNECT.
CREATE UNIQUE INDEX credentials_active_user ON credentials (user_key) WHERE status = 'active' AND user_key <> '';
CREATE INDEX credentials_org_device ON credentials (org_id, device_id);

CREATE TABLE audit_events (
    -- AUTOINCREMENT: a sequence number is never reused, even after pruning.
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     TEXT    NOT NULL REFERENCES organisations (id),
    time       INTEGER NOT NULL,
    actor      TEXT    NOT NULL DEFAULT '',
    action     TEXT    NOT NULL,
    result     TEXT    NOT NULL DEFAULT '',
    -- No foreign key: the trail outlives deleted devices and profiles.
    device_id  TEXT    NOT NULL DEFAULT '',
    profile_id TEXT    NOT NULL DEFAULT '',
    source     TEXT    NOT NULL DEFAULT '',
    dialect    TEXT    NOT NULL DEFAULT '',
    detail     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_org_seq ON audit_events (org_id, seq);
CREATE INDEX audit_events_org_device_seq ON audit_events (org_id, device_id, seq);

CREATE TABLE api_keys (
    org_id     TEXT    NOT NULL REFERENCES organisations (id),
    id         TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash);
