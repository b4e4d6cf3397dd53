-- 0002: certificates issued by the built-in CA (registry.Certificate).
-- STRICT, so a value of the wrong type is an error rather than stored as is.

CREATE TABLE certificates (
    -- Lowercase hex. Unique across organisations: one CA issues for all,
    -- and the uniqueness of serials is what this key enforces.
    serial            TEXT    NOT NULL PRIMARY KEY,
    org_id            TEXT    NOT NULL REFERENCES organisations (id),
    -- No foreign key: a deleted device's certificates stay (revoked) so that
    -- the CRL lists them until they expire. '' for no device.
    device_id         TEXT    NOT NULL DEFAULT '',
    issuer            TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    common_name       TEXT    NOT NULL DEFAULT '',
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
    revoked_at        INTEGER,
    revocation_reason TEXT    NOT NULL DEFAULT '',
    issued_at         INTEGER NOT NULL,
    pem               TEXT    NOT NULL DEFAULT '',
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
) STRICT;
-- A TLS handshake finds the certificate by its fingerprint.
CREATE UNIQUE INDEX certificates_fingerprint ON certificates (fingerprint);
-- Lists are ordered by expiry, then serial (the cursor).
CREATE INDEX certificates_org_expiry ON certificates (org_id, not_after, serial);
CREATE INDEX certificates_org_device_expiry ON certificates (org_id, device_id, not_after, serial);
-- The entries of a CRL.
CREATE INDEX certificates_revoked ON certificates (issuer, serial) WHERE status = 'revoked';
