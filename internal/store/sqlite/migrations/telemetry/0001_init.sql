-- 0001: the telemetry database (telemetry.db, beside zerotouch.db). It holds
-- no foreign keys to the registry: a device id is opaque text here, and
-- DeleteDevice removes a device's rows explicitly.
--
-- Values: kind is the value's type (1 boolean, 2 long, 3 double, 4 string,
-- 5 json) and v the value in an ANY column of a STRICT table, so SQLite
-- keeps exactly the type it was given: INTEGER for booleans (0/1) and longs,
-- REAL for doubles (5.0 and -0.0 stay REAL), TEXT for strings and JSON.
-- kind tells apart what the storage class cannot (bool from long, string
-- from json) and lets aggregation pick numeric values (kinds 2 and 3)
-- without looking at v.

-- One row per time series (device, key), so samples carry an 8-byte integer
-- instead of two strings. The writer caches these rows in memory.
--
-- min_ts is a lower bound of the series' oldest sample (NULL when it has
-- none): retention (DeleteBefore) finds the series holding old samples
-- through its index and deletes a range of each one's primary key, instead
-- of scanning every sample or paying for an index on ts on every write.
-- Writes lower it only when they add an older sample (backfill), rarely.
--
-- flushed_ts is the highest ts moved from ts_recent into ts_samples (NULL
-- when none was): see ts_recent.
CREATE TABLE ts_series (
    id         INTEGER NOT NULL PRIMARY KEY,
    device_id  TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    min_ts     INTEGER,
    flushed_ts INTEGER,
    UNIQUE (device_id, key)
) STRICT;
CREATE INDEX ts_series_min_ts ON ts_series (min_ts) WHERE min_ts IS NOT NULL;

-- Samples, clustered by (series, ts): a range query or a per-series
-- retention delete is one contiguous range of the key, and the key is the
-- table (WITHOUT ROWID), so there is no second index to maintain.
CREATE TABLE ts_samples (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    kind      INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
    v         ANY     NOT NULL,
    PRIMARY KEY (series_id, ts)
) STRICT, WITHOUT ROWID;

-- ts_recent is a staging area of the same shape, for ingestion. Clustering
-- by series makes a commit dirty about one leaf page per series it touches,
-- and SQLite's WAL writes whole pages: 4 KiB per sample once ts_samples is
-- large. ts_recent stays small (the writer moves it into ts_samples, in key
-- order, once it holds enough rows), so a commit dirties at most its few
-- hundred pages, and the move dirties each series' page of ts_samples once
-- for many samples.
--
-- A sample goes to ts_recent when its ts is above its series' flushed_ts,
-- else (a replacement or a backfill) straight to ts_samples. So every row
-- of ts_recent is newer than every row of its series in ts_samples: the two
-- never hold the same (series, ts), and a read is their plain union.
CREATE TABLE ts_recent (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    kind      INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
    v         ANY     NOT NULL,
    PRIMARY KEY (series_id, ts)
) STRICT, WITHOUT ROWID;

-- The latest value of each series: the sample with the highest ts ever
-- written. Kept apart from the samples so that retention never touches it
-- and Latest reads one row per key.
CREATE TABLE ts_latest (
    series_id INTEGER NOT NULL PRIMARY KEY,
    ts        INTEGER NOT NULL,
    kind      INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
    v         ANY     NOT NULL
) STRICT;

-- Attributes; updated_at is Unix milliseconds. A rowid table (not WITHOUT
-- ROWID): attribute values can be large JSON documents.
CREATE TABLE attributes (
    device_id  TEXT    NOT NULL,
    scope      TEXT    NOT NULL CHECK (scope IN ('client', 'shared', 'server')),
    key        TEXT    NOT NULL,
    kind       INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 5),
    v          ANY     NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, scope, key)
) STRICT;

-- Connection times, Unix milliseconds, 0 for never; writes keep the
-- maximum of the stored and the written time.
CREATE TABLE conn_states (
    device_id       TEXT    NOT NULL PRIMARY KEY,
    last_connect    INTEGER NOT NULL DEFAULT 0,
    last_disconnect INTEGER NOT NULL DEFAULT 0,
    last_activity   INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
