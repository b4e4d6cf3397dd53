-- 0005: Azure DPS enrollments (registry.Enrollment, registry.EnrollmentGroup)
-- and each organisation's ID scope. STRICT, so a value of the wrong type is
-- an error rather than stored as is.
--
-- Symmetric keys (*_key columns) are stored as given, NOT sealed: see
-- registry.SymmetricKeyAttestation. A later migration seals them.
-- Twin tags, desired properties and the payload are JSON text as written,
-- NULL when absent; iot_hubs is a JSON array of hub names.

CREATE TABLE enrollments (
    org_id                  TEXT    NOT NULL REFERENCES organisations (id),
    -- Lower case (registry.ValidateRegistrationID): DPS ids are case-insensitive.
    registration_id         TEXT    NOT NULL,
    device_id               TEXT    NOT NULL DEFAULT '',
    attestation_type        TEXT    NOT NULL CHECK (attestation_type IN ('symmetricKey', 'x509', 'tpm')),
    symmetric_primary_key   TEXT    NOT NULL DEFAULT '',
    symmetric_secondary_key TEXT    NOT NULL DEFAULT '',
    x509_certificate_pem    TEXT    NOT NULL DEFAULT '',
    -- Lowercase hex SHA-256 of the device certificate, '' for other types.
    x509_thumbprint         TEXT    NOT NULL DEFAULT '',
    tpm_endorsement_key     TEXT    NOT NULL DEFAULT '',
    tpm_storage_root_key    TEXT    NOT NULL DEFAULT '',
    status                  TEXT    NOT NULL CHECK (status IN ('enabled', 'disabled')),
    allocation_policy       TEXT    NOT NULL DEFAULT '',
    iot_hubs                TEXT    NOT NULL DEFAULT '[]',
    reprovision_policy      TEXT    NOT NULL CHECK (reprovision_policy IN ('never', 'reprovision-and-reset', 'reprovision-and-migrate')),
    twin_tags               TEXT,
    twin_desired            TEXT,
    payload                 TEXT,
    version                 INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    PRIMARY KEY (org_id, registration_id)
) STRICT;
-- A TLS handshake knows the certificate, not the organisation: one
-- certificate designates at most one enrollment, across organisations.
CREATE UNIQUE INDEX enrollments_x509_thumbprint ON enrollments (x509_thumbprint) WHERE x509_thumbprint <> '';

CREATE TABLE enrollment_groups (
    org_id                  TEXT    NOT NULL REFERENCES organisations (id),
    id                      TEXT    NOT NULL,
    attestation_type        TEXT    NOT NULL CHECK (attestation_type IN ('symmetricKey', 'x509')),
    symmetric_primary_key   TEXT    NOT NULL DEFAULT '',
    symmetric_secondary_key TEXT    NOT NULL DEFAULT '',
    x509_ca_pem             TEXT    NOT NULL DEFAULT '',
    status                  TEXT    NOT NULL CHECK (status IN ('enabled', 'disabled')),
    allocation_policy       TEXT    NOT NULL DEFAULT '',
    iot_hubs                TEXT    NOT NULL DEFAULT '[]',
    reprovision_policy      TEXT    NOT NULL CHECK (reprovision_policy IN ('never', 'reprovision-and-reset', 'reprovision-and-migrate')),
    twin_tags               TEXT,
    twin_desired            TEXT,
    payload                 TEXT,
    version                 INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
) STRICT;

-- One ID scope per organisation, generated on first use (registry.NewIDScope),
-- unique across organisations: a device's registration names the scope alone.
CREATE TABLE id_scopes (
    org_id     TEXT    NOT NULL PRIMARY KEY REFERENCES organisations (id),
    id_scope   TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;
