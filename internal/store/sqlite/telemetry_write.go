package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Writes of the telemetry store.
//
// Every write holds the writer lock, runs one IMMEDIATE transaction on the
// writer connection and commits it with synchronous=FULL. The transaction is
// not bound to the caller's context (database/sql would roll it back, or the
// driver interrupt the COMMIT, whenever the context ends, and the caller
// could not know whether its write happened); instead the context is checked
// between statements and one last time before COMMIT, so an error always
// means that nothing was written, and nil that everything was.

// writeStmts are the statements of the write path, prepared once on the
// writer connection (database/sql reuses them inside its transactions).
type writeStmts struct {
	seriesGet, seriesAdd, minTS, attr, state *sql.Stmt
	samples, recent, latest                  multiInsert
}

const (
	sqlSeriesGet = `SELECT id, min_ts, flushed_ts FROM ts_series WHERE device_id = ? AND key = ?`
	sqlSeriesAdd = `INSERT INTO ts_series (device_id, key) VALUES (?, ?) RETURNING id`
	sqlMinTS     = `UPDATE ts_series SET min_ts = ?2 WHERE id = ?1 AND (min_ts IS NULL OR min_ts > ?2)`
	sqlAttr      = `INSERT INTO attributes (device_id, scope, key, kind, v, updated_at) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (device_id, scope, key) DO UPDATE SET kind = excluded.kind, v = excluded.v, updated_at = excluded.updated_at`
	// Connection times only move forward.
	sqlState = `INSERT INTO conn_states (device_id, last_connect, last_disconnect, last_activity) VALUES (?, ?, ?, ?)
		ON CONFLICT (device_id) DO UPDATE SET
			last_connect    = max(last_connect, excluded.last_connect),
			last_disconnect = max(last_disconnect, excluded.last_disconnect),
			last_activity   = max(last_activity, excluded.last_activity)`

	// A sample at an existing (series, ts) replaces it; of two in one
	// statement, the later row wins (SQLite applies rows in order).
	sqlSamples      = `INSERT INTO ts_samples (series_id, ts, kind, v) VALUES %s ON CONFLICT (series_id, ts) DO UPDATE SET kind = excluded.kind, v = excluded.v`
	sqlRecent       = `INSERT INTO ts_recent (series_id, ts, kind, v) VALUES %s ON CONFLICT (series_id, ts) DO UPDATE SET kind = excluded.kind, v = excluded.v`
	sqlLatestUpsert = `INSERT INTO ts_latest (series_id, ts, kind, v) VALUES %s ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, kind = excluded.kind, v = excluded.v
		WHERE excluded.ts >= ts_latest.ts` // the latest value moves to a sample at the same or a higher ts only
)

// insertSizes are the row counts of the prepared multi-row INSERTs of a
// table, largest first. A statement costs, in SQLite and database/sql,
// about as much as the rows it writes (binding, cursors, halting), so rows
// go 64 to a statement; the rest of a batch takes the smaller sizes.
var insertSizes = [...]int{64, 16, 4, 1}

// multiInsert is one INSERT of rows of 4 values, prepared for each of
// insertSizes.
type multiInsert [len(insertSizes)]*sql.Stmt

func (m *multiInsert) prepare(ctx context.Context, db *sql.DB, format string) error {
	for i, n := range insertSizes {
		q := fmt.Sprintf(format, strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", n), ", "))
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %.80q: %w", q, err)
		}
		m[i] = st
	}
	return nil
}

func (m *multiInsert) close() {
	for _, st := range m {
		if st != nil {
			st.Close()
		}
	}
}

func (w *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&w.seriesGet, sqlSeriesGet},
		{&w.seriesAdd, sqlSeriesAdd},
		{&w.minTS, sqlMinTS},
		{&w.attr, sqlAttr},
		{&w.state, sqlState},
	} {
		st, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.stmt = st
	}
	for _, m := range []struct {
		ins    *multiInsert
		format string
	}{
		{&w.samples, sqlSamples},
		{&w.recent, sqlRecent},
		{&w.latest, sqlLatestUpsert},
	} {
		if err := m.ins.prepare(ctx, db, m.format); err != nil {
			return err
		}
	}
	return nil
}

func (w *writeStmts) close() {
	for _, st := range []*sql.Stmt{w.seriesGet, w.seriesAdd, w.minTS, w.attr, w.state} {
		if st != nil {
			st.Close()
		}
	}
	w.samples.close()
	w.recent.close()
	w.latest.close()
}

// rowWriter writes rows of 4 values into one table within a transaction,
// through its multiInsert: add buffers a row and writes a full statement's
// worth; flush writes the rest.
type rowWriter struct {
	tx    *sql.Tx
	ins   *multiInsert
	inTx  [len(insertSizes)]*sql.Stmt // ins bound to tx, on first use
	args  []any
	rows  int64 // rows written
	table string
}

func newRowWriter(tx *sql.Tx, ins *multiInsert, table string) *rowWriter {
	return &rowWriter{tx: tx, ins: ins, table: table, args: make([]any, 0, 4*insertSizes[0])}
}

func (w *rowWriter) add(a, b, c, d any) error {
	w.args = append(w.args, a, b, c, d)
	w.rows++
	if len(w.args) == cap(w.args) {
		if err := w.exec(0, w.args); err != nil {
			return err
		}
		w.args = w.args[:0]
	}
	return nil
}

func (w *rowWriter) flush() error {
	rest := w.args
	for i, n := range insertSizes {
		for len(rest) >= 4*n {
			if err := w.exec(i, rest[:4*n]); err != nil {
				return err
			}
			rest = rest[4*n:]
		}
	}
	w.args = w.args[:0]
	return nil
}

func (w *rowWriter) exec(size int, args []any) error {
	bg := context.Background()
	if w.inTx[size] == nil {
		w.inTx[size] = w.tx.StmtContext(bg, w.ins[size])
	}
	if _, err := w.inTx[size].ExecContext(bg, args...); err != nil {
		return fmt.Errorf("store %d rows in %s: %w", len(args)/4, w.table, err)
	}
	return nil
}

// ctxCheckEvery is how many rows a write applies between two looks at the
// caller's context.
const ctxCheckEvery = 256

// inWriteTx runs f in a write transaction under the writer lock and
// commits. f returns what to do once the transaction is committed (update
// in-memory caches), so that a rolled-back transaction leaves them alone.
func (s *TelemetryStore) inWriteTx(ctx context.Context, op string, f func(tx *sql.Tx) (after func(), err error)) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, telemetry.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	select {
	case s.wlock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	defer func() { <-s.wlock }()
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, telemetry.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	tx, err := s.wdb.BeginTx(context.Background(), nil)
	if err != nil {
		return s.failure(op, fmt.Errorf("begin: %w", err))
	}
	after, err := f(tx)
	if err == nil {
		err = ctx.Err() // the last moment the caller can still withdraw
	}
	if err != nil {
		tx.Rollback()
		return s.failure(op, err)
	}
	if err := tx.Commit(); err != nil {
		return s.failure(op, fmt.Errorf("commit: %w", err))
	}
	if after != nil {
		after()
	}
	return nil
}

// Write stores a batch durably, in one transaction.
func (s *TelemetryStore) Write(ctx context.Context, b *telemetry.Batch) error {
	const op = "write telemetry"
	if err := validateBatch(b); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if b == nil || b.Len() == 0 {
		if s.closed.Load() {
			return fmt.Errorf("%s: %w", op, telemetry.ErrClosed)
		}
		return ctx.Err()
	}
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) (func(), error) {
		after, err := s.writeSamples(ctx, tx, b.Samples)
		if err != nil {
			return nil, err
		}
		if err := s.writeAttributes(ctx, tx, b.Attributes); err != nil {
			return nil, err
		}
		if err := s.writeStates(ctx, tx, b.States); err != nil {
			return nil, err
		}
		return func() {
			if after != nil {
				after()
			}
			s.maybeCompact(int64(len(b.Samples)))
		}, nil
	})
}

// maybeCompact runs a compaction step when ts_recent has grown past
// compactRows. A step moves at least compactStep rows, and at least as many
// as the write just added, so that ts_recent stays bounded whatever the
// batch size. The caller holds the writer lock, right after a commit.
func (s *TelemetryStore) maybeCompact(written int64) {
	if s.recentRows < s.compactRows {
		return
	}
	start := time.Now()
	moved, err := s.compactSome(max(s.compactStep, written))
	if err != nil {
		// The write is committed; ts_recent grows until a later step
		// succeeds.
		s.log.Error("telemetry compaction failed", "recent_rows", s.recentRows, "err", err)
		return
	}
	s.log.Debug("telemetry compacted", "rows", moved, "took", time.Since(start), "recent_rows", s.recentRows)
}

// compactSome moves the ts_recent rows of a range of series into
// ts_samples, in one transaction: in key order, so that each series' last
// page of ts_samples is written once for all its recent samples. Steps go
// round the series (s.compactFrom is where the next one starts), taking
// whole series until they hold at least rows rows. Each moved series'
// flushed_ts becomes its highest recent ts, which keeps every later
// ts_recent row of it newer than its rows in ts_samples. The caller holds
// the writer lock.
func (s *TelemetryStore) compactSome(rows int64) (moved int64, err error) {
	ctx := context.Background()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("compact: begin: %w", err)
	}
	defer tx.Rollback()

	// The range [lo, hi) of series ids: from the cursor to the series of
	// the row after the first rows ones, or to the end.
	lo := s.compactFrom
	var first sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT min(series_id) FROM ts_recent WHERE series_id >= ?`, lo).Scan(&first); err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	if !first.Valid && lo > 0 {
		lo = 0 // past the last series: round again
		if err := tx.QueryRowContext(ctx, `SELECT min(series_id) FROM ts_recent`).Scan(&first); err != nil {
			return 0, fmt.Errorf("compact: %w", err)
		}
	}
	if !first.Valid {
		s.recentRows = 0 // nothing to move: the count had drifted
		return 0, nil
	}
	lo = first.Int64
	hi := int64(math.MaxInt64)
	var next int64
	switch err := tx.QueryRowContext(ctx, `SELECT series_id FROM ts_recent WHERE series_id >= ? ORDER BY series_id, ts LIMIT 1 OFFSET ?`,
		lo, rows).Scan(&next); {
	case err == nil:
		hi = max(next, lo+1) // a series with more than rows rows goes whole
	case !errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("compact: %w", err)
	}

	type flushed struct {
		device, key string
		ts          int64
	}
	var done []flushed
	res, err := tx.QueryContext(ctx, `UPDATE ts_series SET flushed_ts = r.mx
		FROM (SELECT series_id, max(ts) AS mx FROM ts_recent WHERE series_id >= ?1 AND series_id < ?2 GROUP BY series_id) AS r
		WHERE ts_series.id = r.series_id
		RETURNING device_id, key, flushed_ts`, lo, hi)
	if err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	for res.Next() {
		var f flushed
		if err := res.Scan(&f.device, &f.key, &f.ts); err != nil {
			res.Close()
			return 0, fmt.Errorf("compact: %w", err)
		}
		done = append(done, f)
	}
	res.Close()
	if err := res.Err(); err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	// No (series, ts) is in both tables; the upsert is only a safety net
	// (the newer write, in ts_recent, would win).
	if _, err := tx.ExecContext(ctx, `INSERT INTO ts_samples (series_id, ts, kind, v)
		SELECT series_id, ts, kind, v FROM ts_recent WHERE series_id >= ?1 AND series_id < ?2
		ON CONFLICT (series_id, ts) DO UPDATE SET kind = excluded.kind, v = excluded.v`, lo, hi); err != nil {
		return 0, fmt.Errorf("compact: move samples: %w", err)
	}
	del, err := tx.ExecContext(ctx, `DELETE FROM ts_recent WHERE series_id >= ?1 AND series_id < ?2`, lo, hi)
	if err != nil {
		return 0, fmt.Errorf("compact: delete moved samples: %w", err)
	}
	if moved, err = del.RowsAffected(); err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("compact: commit: %w", err)
	}
	for _, f := range done {
		s.series.setFlushed(f.device, f.key, f.ts)
	}
	s.recentRows = max(0, s.recentRows-moved)
	if hi == math.MaxInt64 {
		s.compactFrom = 0
	} else {
		s.compactFrom = hi
	}
	return moved, nil
}

// validateBatch checks every record of b, so that an invalid one fails the
// call before anything is written.
func validateBatch(b *telemetry.Batch) error {
	if b == nil {
		return nil
	}
	for i := range b.Samples {
		sm := &b.Samples[i]
		if err := validateSample(sm); err != nil {
			return fmt.Errorf("%w sample %d of the batch (device %.100q, key %.100q): %v", telemetry.ErrInvalid, i, sm.DeviceID, sm.Key, err)
		}
	}
	for i := range b.Attributes {
		aw := &b.Attributes[i]
		if err := validateAttribute(aw.DeviceID, aw.Scope, &aw.Attribute); err != nil {
			return fmt.Errorf("%w attribute write %d of the batch (device %.100q, key %.100q): %v", telemetry.ErrInvalid, i, aw.DeviceID, aw.Attribute.Key, err)
		}
	}
	for i := range b.States {
		if b.States[i].DeviceID == "" {
			return fmt.Errorf("%w connection state %d of the batch: empty device id", telemetry.ErrInvalid, i)
		}
	}
	return nil
}

func validateSample(sm *telemetry.Sample) error {
	switch {
	case sm.DeviceID == "":
		return fmt.Errorf("empty device id")
	case sm.Key == "":
		return fmt.Errorf("empty key")
	}
	return sm.Value.Valid()
}

func validateAttribute(deviceID string, scope telemetry.Scope, a *telemetry.Attribute) error {
	switch {
	case deviceID == "":
		return fmt.Errorf("empty device id")
	case a.Key == "":
		return fmt.Errorf("empty key")
	}
	if _, err := telemetry.ParseScope(string(scope)); err != nil {
		return err
	}
	return a.Value.Valid()
}

// seriesRef names a time series.
type seriesRef struct{ device, key string }

// seriesInfo is what the writer knows of a series:
//   - minTS, an upper bound of its stored min_ts (noMin for NULL): a write
//     whose oldest sample is not below it needs not lower min_ts;
//   - flushed, its flushed_ts (noFlush for NULL), at least the highest ts of
//     the series in ts_samples: a sample above it goes to ts_recent.
type seriesInfo struct{ id, minTS, flushed int64 }

// maxCachedSeries bounds the series cache (about 100 bytes an entry); past
// it the cache starts again empty, which only costs a lookup per series.
const maxCachedSeries = 1 << 20

// seriesCache maps (device, key) to its series, by device so that
// DeleteDevice can drop a device's entries at once. It holds only committed
// rows.
type seriesCache struct {
	byDevice map[string]map[string]seriesInfo
	n        int
}

func (c *seriesCache) get(device, key string) (seriesInfo, bool) {
	info, ok := c.byDevice[device][key]
	return info, ok
}

func (c *seriesCache) put(device, key string, info seriesInfo) {
	if c.byDevice == nil || c.n >= maxCachedSeries {
		c.byDevice, c.n = make(map[string]map[string]seriesInfo), 0
	}
	keys := c.byDevice[device]
	if keys == nil {
		keys = make(map[string]seriesInfo)
		c.byDevice[device] = keys
	}
	if _, ok := keys[key]; !ok {
		c.n++
	}
	keys[key] = info
}

// setMin sets the minTS of an entry that is cached, and adds none.
func (c *seriesCache) setMin(device, key string, minTS int64) {
	if info, ok := c.byDevice[device][key]; ok {
		info.minTS = minTS
		c.byDevice[device][key] = info
	}
}

// setFlushed sets the flushed of an entry that is cached, and adds none.
func (c *seriesCache) setFlushed(device, key string, flushed int64) {
	if info, ok := c.byDevice[device][key]; ok {
		info.flushed = flushed
		c.byDevice[device][key] = info
	}
}

func (c *seriesCache) dropDevice(device string) {
	c.n -= len(c.byDevice[device])
	delete(c.byDevice, device)
}

// loadSeries returns the series of (device, key), creating it.
func (s *TelemetryStore) loadSeries(tx *sql.Tx, device, key string) (seriesInfo, error) {
	ctx := context.Background()
	var minTS, flushed sql.NullInt64
	info := seriesInfo{minTS: noMin, flushed: noFlush}
	err := tx.StmtContext(ctx, s.stmts.seriesGet).QueryRowContext(ctx, device, key).Scan(&info.id, &minTS, &flushed)
	switch {
	case err == nil:
		if minTS.Valid {
			info.minTS = minTS.Int64
		}
		if flushed.Valid {
			info.flushed = flushed.Int64
		}
		return info, nil
	case err != sql.ErrNoRows:
		return info, fmt.Errorf("read series: %w", err)
	}
	if err := tx.StmtContext(ctx, s.stmts.seriesAdd).QueryRowContext(ctx, device, key).Scan(&info.id); err != nil {
		return info, fmt.Errorf("create series: %w", err)
	}
	return info, nil
}

// writeSamples stores samples and moves the latest values. Samples are
// written sorted by (series, ts), which keeps B-tree inserts local and lets
// each series' latest value and min_ts be written once per batch: the
// first sample of a series' run is its oldest, the last its latest (the
// sort is stable, so of equal timestamps the one later in the batch is
// written last and wins, both in ts_samples and ts_latest).
func (s *TelemetryStore) writeSamples(ctx context.Context, tx *sql.Tx, samples []telemetry.Sample) (func(), error) {
	if len(samples) == 0 {
		return nil, nil
	}
	bg := context.Background()
	infos := make([]seriesInfo, len(samples))
	var fresh map[seriesRef]seriesInfo // series read or created by this transaction
	for i := range samples {
		sm := &samples[i]
		if info, ok := s.series.get(sm.DeviceID, sm.Key); ok {
			infos[i] = info
			continue
		}
		ref := seriesRef{sm.DeviceID, sm.Key}
		info, ok := fresh[ref]
		if !ok {
			var err error
			if info, err = s.loadSeries(tx, sm.DeviceID, sm.Key); err != nil {
				return nil, err
			}
			if fresh == nil {
				fresh = make(map[seriesRef]seriesInfo)
			}
			fresh[ref] = info
		}
		infos[i] = info
	}

	order := make([]int32, len(samples))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		if c := cmp.Compare(infos[a].id, infos[b].id); c != 0 {
			return c
		}
		return cmp.Compare(samples[a].TS, samples[b].TS)
	})

	main := newRowWriter(tx, &s.stmts.samples, "ts_samples")
	recent := newRowWriter(tx, &s.stmts.recent, "ts_recent")
	latest := newRowWriter(tx, &s.stmts.latest, "ts_latest")
	minStmt := tx.StmtContext(bg, s.stmts.minTS)
	type cacheUpdate struct {
		ref  seriesRef
		info seriesInfo
	}
	var updates []cacheUpdate
	for start := 0; start < len(order); {
		info := infos[order[start]]
		end := start + 1
		for end < len(order) && infos[order[end]].id == info.id {
			end++
		}
		for k, i := range order[start:end] {
			if (start+k)%ctxCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
			}
			sm := &samples[i]
			kind, v, err := encodeValue(sm.Value)
			if err != nil {
				return nil, err
			}
			w := main // a replacement or a backfill: see ts_recent in the schema
			if sm.TS > info.flushed {
				w = recent
			}
			if err := w.add(info.id, sm.TS, kind, v); err != nil {
				return nil, err
			}
		}
		last := &samples[order[end-1]]
		kind, v, err := encodeValue(last.Value)
		if err != nil {
			return nil, err
		}
		if err := latest.add(info.id, last.TS, kind, v); err != nil {
			return nil, err
		}
		first := &samples[order[start]]
		_, isFresh := fresh[seriesRef{first.DeviceID, first.Key}]
		changed := false
		if first.TS < info.minTS {
			if _, err := minStmt.ExecContext(bg, info.id, first.TS); err != nil {
				return nil, fmt.Errorf("store oldest time of a series: %w", err)
			}
			info.minTS, changed = first.TS, true
		}
		if isFresh || changed {
			updates = append(updates, cacheUpdate{seriesRef{first.DeviceID, first.Key}, info})
		}
		start = end
	}
	for _, w := range []*rowWriter{main, recent, latest} {
		if err := w.flush(); err != nil {
			return nil, err
		}
	}
	return func() {
		for _, u := range updates {
			s.series.put(u.ref.device, u.ref.key, u.info)
		}
		s.recentRows += recent.rows
	}, nil
}

// writeAttributes writes attributes in order; a zero UpdatedAt is the time
// of the write.
func (s *TelemetryStore) writeAttributes(ctx context.Context, tx *sql.Tx, attrs []telemetry.AttributeWrite) error {
	if len(attrs) == 0 {
		return nil
	}
	bg := context.Background()
	st := tx.StmtContext(bg, s.stmts.attr)
	now := time.Now().UnixMilli()
	for i := range attrs {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		aw := &attrs[i]
		kind, v, err := encodeValue(aw.Attribute.Value)
		if err != nil {
			return err
		}
		at := aw.Attribute.UpdatedAt
		if at == 0 {
			at = now
		}
		if _, err := st.ExecContext(bg, aw.DeviceID, string(aw.Scope), aw.Attribute.Key, kind, v, at); err != nil {
			return fmt.Errorf("store attribute (device %.100q, key %.100q): %w", aw.DeviceID, aw.Attribute.Key, err)
		}
	}
	return nil
}

func (s *TelemetryStore) writeStates(ctx context.Context, tx *sql.Tx, states []telemetry.ConnState) error {
	if len(states) == 0 {
		return nil
	}
	bg := context.Background()
	st := tx.StmtContext(bg, s.stmts.state)
	for i := range states {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		cs := &states[i]
		if _, err := st.ExecContext(bg, cs.DeviceID, cs.LastConnect, cs.LastDisconnect, cs.LastActivity); err != nil {
			return fmt.Errorf("store connection state (device %.100q): %w", cs.DeviceID, err)
		}
	}
	return nil
}

// SetAttributes writes attributes of one scope durably, in order; a zero
// UpdatedAt is the time of the write.
func (s *TelemetryStore) SetAttributes(ctx context.Context, deviceID string, scope telemetry.Scope, attrs []telemetry.Attribute) error {
	const op = "set attributes"
	if err := validateDeviceScope(deviceID, scope); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	writes := make([]telemetry.AttributeWrite, len(attrs))
	for i, a := range attrs {
		if err := validateAttribute(deviceID, scope, &a); err != nil {
			return fmt.Errorf("%s: %w attribute %d (key %.100q): %v", op, telemetry.ErrInvalid, i, a.Key, err)
		}
		writes[i] = telemetry.AttributeWrite{DeviceID: deviceID, Scope: scope, Attribute: a}
	}
	if len(writes) == 0 {
		if s.closed.Load() {
			return fmt.Errorf("%s: %w", op, telemetry.ErrClosed)
		}
		return ctx.Err()
	}
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) (func(), error) {
		return nil, s.writeAttributes(ctx, tx, writes)
	})
}

// validateDeviceScope checks the device id and scope of an attribute call.
func validateDeviceScope(deviceID string, scope telemetry.Scope) error {
	if deviceID == "" {
		return fmt.Errorf("%w: empty device id", telemetry.ErrInvalid)
	}
	if _, err := telemetry.ParseScope(string(scope)); err != nil {
		return fmt.Errorf("%w: %v", telemetry.ErrInvalid, err)
	}
	return nil
}

// DeleteAttributes deletes attributes of scope and returns the keys that
// existed, sorted.
func (s *TelemetryStore) DeleteAttributes(ctx context.Context, deviceID string, scope telemetry.Scope, keys []string) ([]string, error) {
	const op = "delete attributes"
	if err := validateDeviceScope(deviceID, scope); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	keys, err := uniqueKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if len(keys) == 0 {
		if s.closed.Load() {
			return nil, fmt.Errorf("%s: %w", op, telemetry.ErrClosed)
		}
		return nil, ctx.Err()
	}
	var deleted []string
	err = s.inWriteTx(ctx, op, func(tx *sql.Tx) (func(), error) {
		deleted = deleted[:0]
		for _, chunk := range chunks(keys) {
			args := append([]any{deviceID, string(scope)}, stringArgs(chunk)...)
			rows, err := tx.QueryContext(ctx,
				`DELETE FROM attributes WHERE device_id = ? AND scope = ? AND key IN (`+placeholders(len(chunk))+`) RETURNING key`, args...)
			if err != nil {
				return nil, err
			}
			for rows.Next() {
				var k string
				if err := rows.Scan(&k); err != nil {
					rows.Close()
					return nil, err
				}
				deleted = append(deleted, k)
			}
			if err := rows.Close(); err != nil {
				return nil, err
			}
			if err := rows.Err(); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(deleted)
	return deleted, nil
}

// DeleteBefore deletes up to limit samples with TS < cutoff, oldest series
// first, and returns how many it deleted. It never touches latest values,
// attributes or connection times. A limit below 1 is ErrInvalid: retention
// calls until fewer than limit come back, which would never happen.
//
// It finds the series holding old samples by their min_ts (indexed) and
// deletes a range of each one's primary key, so its cost follows what it
// deletes, not the size of the database.
func (s *TelemetryStore) DeleteBefore(ctx context.Context, cutoff int64, limit int) (int64, error) {
	const op = "delete old samples"
	if limit <= 0 {
		return 0, fmt.Errorf("%s: %w limit %d: must be positive", op, telemetry.ErrInvalid, limit)
	}
	var deleted int64
	err := s.inWriteTx(ctx, op, func(tx *sql.Tx) (func(), error) {
		deleted = 0
		type cacheUpdate struct {
			ref  seriesRef
			info seriesInfo
		}
		var updates []cacheUpdate
		var recentDeleted int64
		for remaining := int64(limit); remaining > 0; {
			type old struct {
				id          int64
				device, key string
			}
			var olds []old
			rows, err := tx.QueryContext(ctx,
				`SELECT id, device_id, key FROM ts_series WHERE min_ts < ? ORDER BY min_ts LIMIT ?`, cutoff, min(remaining, 1000))
			if err != nil {
				return nil, fmt.Errorf("find old series: %w", err)
			}
			for rows.Next() {
				var o old
				if err := rows.Scan(&o.id, &o.device, &o.key); err != nil {
					rows.Close()
					return nil, fmt.Errorf("find old series: %w", err)
				}
				olds = append(olds, o)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, fmt.Errorf("find old series: %w", err)
			}
			if len(olds) == 0 {
				break
			}
			for _, o := range olds {
				if remaining == 0 {
					break
				}
				// ts_samples first: its rows are the older ones.
				for _, table := range []string{"ts_samples", "ts_recent"} {
					if remaining == 0 {
						break
					}
					// The remaining-th oldest sample bounds the range when
					// the series has more old samples than may be deleted.
					res, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE series_id = ?1 AND ts < ?2
						AND ts <= coalesce((SELECT ts FROM `+table+` WHERE series_id = ?1 AND ts < ?2 ORDER BY ts LIMIT 1 OFFSET ?3), ?2)`,
						o.id, cutoff, remaining-1)
					if err != nil {
						return nil, fmt.Errorf("delete samples: %w", err)
					}
					n, err := res.RowsAffected()
					if err != nil {
						return nil, fmt.Errorf("delete samples: %w", err)
					}
					if table == "ts_recent" {
						recentDeleted += n
					}
					deleted += n
					remaining -= n
				}
				// min(a, b) is NULL when either is: each coalesce stands in
				// for the other.
				var minTS sql.NullInt64
				if err := tx.QueryRowContext(ctx, `UPDATE ts_series SET min_ts = (
						SELECT min(coalesce(m, r), coalesce(r, m)) FROM (
							SELECT (SELECT min(ts) FROM ts_samples WHERE series_id = ?1) AS m,
							       (SELECT min(ts) FROM ts_recent WHERE series_id = ?1) AS r))
					WHERE id = ?1 RETURNING min_ts`, o.id).Scan(&minTS); err != nil {
					return nil, fmt.Errorf("store oldest time of a series: %w", err)
				}
				info := seriesInfo{id: o.id, minTS: noMin}
				if minTS.Valid {
					info.minTS = minTS.Int64
				}
				if remaining > 0 && info.minTS < cutoff {
					// Every old sample of the series should be gone: the
					// next round would pick it again, for ever.
					return nil, fmt.Errorf("delete samples: series %d still has samples before %d", o.id, cutoff)
				}
				updates = append(updates, cacheUpdate{seriesRef{o.device, o.key}, info})
			}
		}
		return func() {
			// min_ts went up: a cached lower value would let a later write
			// skip lowering it again.
			for _, u := range updates {
				s.series.setMin(u.ref.device, u.ref.key, u.info.minTS)
			}
			s.recentRows = max(0, s.recentRows-recentDeleted)
		}, nil
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// DeleteDevice deletes everything stored about a device.
func (s *TelemetryStore) DeleteDevice(ctx context.Context, deviceID string) error {
	const op = "delete device telemetry"
	if deviceID == "" {
		return fmt.Errorf("%s: %w: empty device id", op, telemetry.ErrInvalid)
	}
	return s.inWriteTx(ctx, op, func(tx *sql.Tx) (func(), error) {
		var recentDeleted int64
		for _, q := range []string{
			`DELETE FROM ts_samples WHERE series_id IN (SELECT id FROM ts_series WHERE device_id = ?)`,
			`DELETE FROM ts_recent WHERE series_id IN (SELECT id FROM ts_series WHERE device_id = ?)`,
			`DELETE FROM ts_latest WHERE series_id IN (SELECT id FROM ts_series WHERE device_id = ?)`,
			`DELETE FROM ts_series WHERE device_id = ?`,
			`DELETE FROM attributes WHERE device_id = ?`,
			`DELETE FROM conn_states WHERE device_id = ?`,
		} {
			res, err := tx.ExecContext(ctx, q, deviceID)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(q, "DELETE FROM ts_recent") {
				if recentDeleted, err = res.RowsAffected(); err != nil {
					return nil, err
				}
			}
		}
		return func() {
			s.series.dropDevice(deviceID)
			s.recentRows = max(0, s.recentRows-recentDeleted)
		}, nil
	})
}
