// Package sqlite is the embedded registry.Store: one SQLite file in WAL mode,
// through the pure-Go driver modernc.org/sqlite so the binary stays static.
//
// SQLite allows one writer at a time, so the store has exactly one writer
// connection, owned by one goroutine, and a separate pool of read
// connections that run in parallel with it (WAL readers never block the
// writer). Every write goes through the writer goroutine, which groups the
// writes queued at that moment into one transaction (group commit, see
// writer.go): durable commits cost one fsync per batch instead of one per
// write. A method returns only once its transaction is committed with
// synchronous=FULL, i.e. the WAL is fsynced: the write survives a SIGKILL or
// a power loss.
//
// A caller whose context ends while its write is still queued gets ctx.Err()
// and nothing is written. Once the writer has taken the write into a batch,
// it is committed with the batch whatever the context says, and the call
// waits and returns the real outcome (nil when committed): the caller must
// know whether its write happened. Close refuses new writes and commits the
// queued ones before closing the file.
//
// Times are stored as Unix microseconds, so they come back in UTC truncated
// to the microsecond; the store truncates the times it writes back the same
// way, so a record read back equals the one written.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/seal"
)

// ErrSchemaTooNew: the database was migrated by a newer zerotouch; opening
// it with this binary could corrupt it, so Open refuses.
var ErrSchemaTooNew = errors.New("database schema is newer than this binary supports")

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store is closed")

// Options tunes Open. The zero value is usable.
type Options struct {
	// Logger receives migration and write-failure logs; nil discards them.
	Logger *slog.Logger
	// MaxBatch caps how many queued writes share one transaction; 0 means
	// DefaultMaxBatch.
	MaxBatch int
	// ReadConns caps the parallel read connections; 0 means
	// 2×GOMAXPROCS, at least 4.
	ReadConns int
	// Sealer seals the symmetric keys of enrollments and SYMMETRIC_KEY
	// credentials at rest (internal/seal). Without it, writing or reading
	// such a key fails; everything else works.
	Sealer *seal.Sealer
}

// DefaultMaxBatch bounds a group commit so one transaction (and the wait of
// its first caller) stays short.
const DefaultMaxBatch = 256

// busyTimeoutMS lets a connection wait for a lock (a checkpoint, another
// process opening the file) instead of failing at once.
const busyTimeoutMS = 10000

// Store is the SQLite registry.Store. It is safe for concurrent use.
type Store struct {
	log      *slog.Logger
	wdb      *sql.DB   // one connection, used only by the writer goroutine
	rdb      *readPool // read-only pool, queries prepared once
	maxBatch int
	sealer   *seal.Sealer // nil: symmetric keys cannot be stored

	mu      sync.RWMutex // guards closed and sending on queue
	closed  bool
	queue   chan *writeReq
	stopped chan struct{} // closed when the writer goroutine has drained the queue

	closeOnce sync.Once
	closeErr  error

	// Group-commit counters, for benchmarks: transactions and the requests
	// they carried.
	batches, batched atomic.Int64
}

var _ registry.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path, applies pending
// migrations and starts the writer. The directory must exist.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = max(4, 2*runtime.GOMAXPROCS(0))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	// The writer: WAL so readers run beside it; synchronous=FULL so a commit
	// is on disk (WAL fsynced) before it returns; IMMEDIATE transactions so
	// the write lock is taken at BEGIN, not half-way through.
	wdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma": {
			"busy_timeout(" + strconv.Itoa(busyTimeoutMS) + ")",
			"foreign_keys(1)",
			"journal_mode(WAL)",
			"synchronous(FULL)",
		},
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := checkWAL(ctx, wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	if err := migrate(ctx, wdb, log); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}

	// Readers are opened after the writer has switched the file to WAL
	// (a persistent setting) and query_only guards against a stray write.
	rdb, err := sql.Open("sqlite", dsn(abs, url.Values{
		"_pragma":     {"busy_timeout(" + strconv.Itoa(busyTimeoutMS) + ")"},
		"_query_only": {"1"},
	}))
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)
	if err := rdb.PingContext(ctx); err != nil {
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}

	s := &Store{
		log:      log,
		wdb:      wdb,
		rdb:      newReadPool(rdb),
		maxBatch: opts.MaxBatch,
		sealer:   opts.Sealer,
		// Room for a few batches, so callers rarely block on the send.
		queue:   make(chan *writeReq, 4*opts.MaxBatch),
		stopped: make(chan struct{}),
	}
	go s.run()
	return s, nil
}

// dsn builds a file: URI, so that any character in the path is escaped and
// cannot be read as a parameter.
func dsn(path string, params url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: params.Encode()}
	return u.String()
}

// checkWAL fails when the file system refused WAL mode (SQLite then silently
// keeps another journal mode, and readers would block the writer).
func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL: is the file system local?", mode)
	}
	return nil
}

// Ping checks that both the reader pool and the writer are usable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return nil
}

// Close stops accepting writes, finishes every write already queued
// (committing it), then closes the connections. Closing twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.queue)
		s.mu.Unlock()
		<-s.stopped
		s.closeErr = errors.Join(s.rdb.Close(), s.wdb.Close())
	})
	return s.closeErr
}

//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the registry's embedded migrations in order.
func migrations() ([]migration, error) {
	return loadMigrations(migrationFS, "migrations")
}

// loadMigrations returns the migrations in dir/*.sql of fsys in order,
// checking that they are numbered 1, 2, 3… without gaps (a gap is a
// packaging mistake). Each database (registry, telemetry) has its own
// directory and its own numbering.
func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	names, err := fs.Glob(fsys, dir+"/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, name := range names {
		base := filepath.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and '_'", base)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d", m.name, i+1)
		}
	}
	return out, nil
}

// migrate applies the registry's pending migrations.
func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	migs, err := migrations()
	if err != nil {
		return err
	}
	return applyMigrations(ctx, db, log, migs)
}

// applyMigrations applies the pending ones of migs in one transaction, so a
// crash half-way leaves the previous schema intact.
func applyMigrations(ctx context.Context, db *sql.DB, log *slog.Logger, migs []migration) error {
	latest := len(migs)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER NOT NULL PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_version").Scan(&current); err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	if current > latest {
		return fmt.Errorf("%w: the database is at version %d, this zerotouch knows up to %d; run a newer zerotouch", ErrSchemaTooNew, current, latest)
	}
	if current == latest {
		return nil
	}
	for _, m := range migs[current:] {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("migrate: apply %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", m.version, toDB(time.Now())); err != nil {
			return fmt.Errorf("migrate: record %s: %w", m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	log.Info("database schema migrated", "from", current, "to", latest)
	return nil
}

// Time conversions: Unix microseconds, UTC.

func now() time.Time { return norm(time.Now()) }

// norm is the form a time has after a round trip through the database.
func norm(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

func toDB(t time.Time) int64 { return t.UnixMicro() }

func fromDB(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullTime(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: toDB(*t), Valid: true}
}

func timePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromDB(n.Int64)
	return &t
}

func normPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	n := norm(*t)
	return &n
}

// Error mapping: SQLite constraint errors become registry errors so that
// nothing driver-specific leaks out of the package.

type constraint int

const (
	noConstraint constraint = iota
	uniqueViolation
	foreignKeyViolation
	checkViolation
)

func constraintOf(err error) (constraint, string) {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return noConstraint, ""
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return uniqueViolation, e.Error()
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return foreignKeyViolation, e.Error()
	case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL:
		return checkViolation, e.Error()
	}
	return noConstraint, ""
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// notFound turns sql.ErrNoRows into registry.ErrNotFound.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, registry.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}
