package sqlite

// The telemetry store: telemetry.Store over its own SQLite file
// (telemetry.db beside zerotouch.db), so that a flood of samples and their
// retention never compete with provisioning for the registry's writer, WAL
// and checkpoints.
//
// Layout (migrations/telemetry/0001_init.sql says why in detail):
//
//	ts_series   (id, device_id, key, min_ts, flushed_ts)  one row per series
//	ts_samples  (series_id, ts, kind, v)  WITHOUT ROWID, PK (series_id, ts)
//	ts_recent   (series_id, ts, kind, v)  the same, a small staging area
//	ts_latest   (series_id, ts, kind, v)  the highest-ts sample per series
//	attributes  (device_id, scope, key, kind, v, updated_at)
//	conn_states (device_id, last_connect, last_disconnect, last_activity)
//
// New samples go to ts_recent; once it holds compactRows rows, writes move
// it into ts_samples a range of series at a time (telemetry_write.go,
// compactSome). Reads take the union of both tables, which never hold the
// same (series, ts). The point is write amplification: SQLite's WAL writes
// whole pages, and a table clustered by series gets one page dirtied per
// series a commit touches, 4 KiB per sample once the table is large; the
// small ts_recent bounds that, and a compaction writes each series' page
// of ts_samples once for many samples.
//
// Writes go through one writer connection, one call at a time (batching
// happens upstream, in telemetry.Writer, so there is no group commit here);
// reads use a read-only pool that runs beside the writer (WAL). A write
// returns once committed with synchronous=FULL, i.e. durable.

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

//go:embed migrations/telemetry/*.sql
var telemetryMigrationFS embed.FS

// telemetryMigrations returns the telemetry database's migrations in order;
// they are numbered independently of the registry's.
func telemetryMigrations() ([]migration, error) {
	return loadMigrations(telemetryMigrationFS, "migrations/telemetry")
}

// TelemetryOptions tunes OpenTelemetry. The zero value is usable.
type TelemetryOptions struct {
	// Logger receives migration logs; nil discards them.
	Logger *slog.Logger
	// ReadConns caps the parallel read connections; 0 means 2×GOMAXPROCS,
	// at least 4.
	ReadConns int
}

// TelemetryStore is the SQLite telemetry.Store. It is safe for concurrent
// use.
type TelemetryStore struct {
	log *slog.Logger
	wdb *sql.DB   // one connection; used only while holding wlock
	rdb *readPool // read-only pool, queries prepared once

	// wlock is the writer mutex, as a channel so that a caller waiting for
	// it can give up when its context ends: holding it is having sent a
	// token.
	wlock chan struct{}
	// stmts are prepared once on the writer connection and reused by every
	// write transaction.
	stmts writeStmts
	// series caches ts_series; guarded by wlock.
	series seriesCache
	// recentRows counts (about: replacements count too) the rows of
	// ts_recent; past compactRows, a write runs a compaction step of
	// compactStep rows or more, from series id compactFrom. Guarded by
	// wlock.
	recentRows, compactRows, compactStep, compactFrom int64

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ telemetry.Store = (*TelemetryStore)(nil)

// OpenTelemetry opens (creating if needed) the telemetry database at path
// and applies its pending migrations. The directory must exist.
func OpenTelemetry(ctx context.Context, path string, opts TelemetryOptions) (*TelemetryStore, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = max(4, 2*runtime.GOMAXPROCS(0))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open telemetry store: %w", err)
	}
	fail := func(err error, dbs ...*sql.DB) (*TelemetryStore, error) {
		for _, db := range dbs {
			db.Close()
		}
		return nil, fmt.Errorf("open telemetry store %s: %w", abs, err)
	}

	// The same settings as the registry's writer (see Open): WAL, a commit
	// is fsynced before it returns, the write lock taken at BEGIN.
	wdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {
			"busy_timeout(" + strconv.Itoa(busyTimeoutMS) + ")",
			"journal_mode(WAL)",
			"synchronous(FULL)",
		},
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return fail(err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := checkWAL(ctx, wdb); err != nil {
		return fail(err, wdb)
	}
	migs, err := telemetryMigrations()
	if err != nil {
		return fail(err, wdb)
	}
	if err := applyMigrations(ctx, wdb, log.With("db", "telemetry"), migs); err != nil {
		return fail(err, wdb)
	}

	rdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma":     {"busy_timeout(" + strconv.Itoa(busyTimeoutMS) + ")"},
		"_query_only": {"1"},
	}))
	if err != nil {
		return fail(err, wdb)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)
	if err := rdb.PingContext(ctx); err != nil {
		return fail(err, rdb, wdb)
	}

	s := &TelemetryStore{log: log, wdb: wdb, rdb: newReadPool(rdb), wlock: make(chan struct{}, 1), compactRows: defaultCompactRows, compactStep: defaultCompactStep}
	if err := wdb.QueryRowContext(ctx, `SELECT count(*) FROM ts_recent`).Scan(&s.recentRows); err != nil {
		return fail(err, rdb, wdb)
	}
	if err := s.stmts.prepare(ctx, wdb); err != nil {
		s.stmts.close()
		return fail(err, rdb, wdb)
	}
	return s, nil
}

// Ping checks that the store is open and its read pool usable.
func (s *TelemetryStore) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return telemetry.ErrClosed
	}
	if err := s.rdb.PingContext(ctx); err != nil {
		return s.failure("ping telemetry store", err)
	}
	return nil
}

// Close waits for the write in progress, then closes the connections.
// Later calls fail with telemetry.ErrClosed; closing twice is harmless.
func (s *TelemetryStore) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.wlock <- struct{}{}
		s.stmts.close()
		s.closeErr = errors.Join(s.rdb.Close(), s.wdb.Close())
		// Callers blocked on the lock take it, see closed and give it back.
		<-s.wlock
	})
	return s.closeErr
}

// failure wraps err for the caller, as telemetry.ErrClosed when the store
// was closed under the call (database/sql then reports its own error).
func (s *TelemetryStore) failure(op string, err error) error {
	if s.closed.Load() && !errors.Is(err, telemetry.ErrClosed) {
		return fmt.Errorf("%s: %w", op, telemetry.ErrClosed)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Values in the database: kind is a stable number of its own, not
// telemetry.Kind's iota, so that reordering that enum cannot reinterpret
// stored rows.
const (
	dbBool   = 1
	dbLong   = 2
	dbDouble = 3
	dbString = 4
	dbJSON   = 5
)

// encodeValue returns the kind and the SQL value of a Value. Values are
// validated before they are encoded, so the error is only a safety net.
func encodeValue(v telemetry.Value) (int64, any, error) {
	switch v.Kind {
	case telemetry.KindBool:
		if v.Bool {
			return dbBool, int64(1), nil
		}
		return dbBool, int64(0), nil
	case telemetry.KindLong:
		return dbLong, v.Long, nil
	case telemetry.KindDouble:
		return dbDouble, v.Double, nil
	case telemetry.KindString:
		return dbString, v.Text, nil
	case telemetry.KindJSON:
		return dbJSON, v.Text, nil
	}
	return 0, nil, fmt.Errorf("%w value: unknown kind %d", telemetry.ErrInvalid, v.Kind)
}

// decodeValue turns a stored kind and value back into a Value. A row it
// cannot read (written by something else) is an error, not a panic.
func decodeValue(kind int64, raw any) (telemetry.Value, error) {
	switch kind {
	case dbBool, dbLong:
		n, ok := raw.(int64)
		if !ok {
			return telemetry.Value{}, fmt.Errorf("stored %s is a %T", kindName(kind), raw)
		}
		if kind == dbBool {
			return telemetry.Bool(n != 0), nil
		}
		return telemetry.Long(n), nil
	case dbDouble:
		switch f := raw.(type) {
		case float64:
			return telemetry.Double(f), nil
		case int64:
			return telemetry.Double(float64(f)), nil
		}
		return telemetry.Value{}, fmt.Errorf("stored double is a %T", raw)
	case dbString, dbJSON:
		var text string
		switch t := raw.(type) {
		case string:
			text = t
		case []byte:
			text = string(t)
		default:
			return telemetry.Value{}, fmt.Errorf("stored %s is a %T", kindName(kind), raw)
		}
		if kind == dbString {
			return telemetry.String(text), nil
		}
		return telemetry.Value{Kind: telemetry.KindJSON, Text: text}, nil
	}
	return telemetry.Value{}, fmt.Errorf("stored value has unknown kind %d", kind)
}

func kindName(kind int64) string {
	switch kind {
	case dbBool:
		return "boolean"
	case dbLong:
		return "long"
	case dbDouble:
		return "double"
	case dbString:
		return "string"
	case dbJSON:
		return "json"
	}
	return "kind " + strconv.FormatInt(kind, 10)
}

// defaultCompactRows is the size of ts_recent that triggers a compaction:
// large enough that a compaction moves many samples of each series at
// once, small enough that the pages a commit dirties in ts_recent stay few
// (about 25 bytes a row: 100,000 rows are some 600 pages of 4 KiB).
const defaultCompactRows = 100_000

// defaultCompactStep is the rows a compaction step moves: it holds the
// writer lock, so it is kept short (some 100 ms); steps go round the
// series, so each series still moves about defaultCompactRows/series rows
// at once.
const defaultCompactStep = 16_384

// noFlush is the cached flushed_ts of a series never compacted (NULL in
// the database): every sample of it is above.
const noFlush = math.MinInt64

// noMin is the cached min_ts of a series without samples (NULL in the
// database). A sample at math.MaxInt64 is never older than a cutoff, so
// conflating the two is harmless.
const noMin = math.MaxInt64
