-- 0008: IoT hubs linked to an organisation's DPS (registry.Hub), the
-- candidates of DPS allocation besides the node's built-in hub. STRICT.
--
-- name is kept as given (devices are told it verbatim); name_key is its
-- lower-case form (registry.HubKey), the unique key: host names are
-- case-insensitive. enabled is 0 or 1.

CREATE TABLE hubs (
    org_id     TEXT    NOT NULL REFERENCES organisations (id),
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL CHECK (name_key = lower(name)),
    weight     INTEGER NOT NULL CHECK (weight >= 0),
    region     TEXT    NOT NULL DEFAULT '',
    enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, name_key)
) STRICT;
