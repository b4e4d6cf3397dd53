package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Reads of the telemetry store. They run on the read-only pool; a read of
// several statements runs in one read transaction, so that it sees one
// snapshot of the database.

// maxInArgs bounds the placeholders of one IN (…) list, well below
// SQLite's limit on bound parameters.
const maxInArgs = 500

// chunks splits a list of keys or device ids into IN lists.
func chunks(xs []string) [][]string {
	var out [][]string
	for len(xs) > maxInArgs {
		out = append(out, xs[:maxInArgs])
		xs = xs[maxInArgs:]
	}
	if len(xs) > 0 {
		out = append(out, xs)
	}
	return out
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func stringArgs(xs []string) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// uniqueKeys checks a list of keys (none empty) and drops repetitions,
// keeping the first of each.
func uniqueKeys(keys []string) ([]string, error) {
	seen := make(map[string]struct{}, len(keys))
	out := make([]string, 0, len(keys))
	for i, k := range keys {
		if k == "" {
			return nil, fmt.Errorf("%w: key %d is empty", telemetry.ErrInvalid, i)
		}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, k)
	}
	return out, nil
}

// readTx runs f in a read transaction of the pool.
func (s *TelemetryStore) readTx(ctx context.Context, op string, f func(tx *sql.Tx) error) error {
	if s.closed.Load() {
		return fmt.Errorf("%s: %w", op, telemetry.ErrClosed)
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s.failure(op, err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return s.failure(op, err)
	}
	return nil
}

// Latest returns the latest value of each of the device's keys, or of the
// given keys that have one, sorted by key.
func (s *TelemetryStore) Latest(ctx context.Context, deviceID string, keys []string) ([]telemetry.Sample, error) {
	const op = "read latest values"
	if deviceID == "" {
		return nil, fmt.Errorf("%s: %w: empty device id", op, telemetry.ErrInvalid)
	}
	keys, err := uniqueKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	const base = `SELECT s.key, l.ts, l.kind, l.v FROM ts_series s JOIN ts_latest l ON l.series_id = s.id WHERE s.device_id = ?`
	var out []telemetry.Sample
	err = s.readTx(ctx, op, func(tx *sql.Tx) error {
		read := func(query string, args ...any) error {
			rows, err := tx.QueryContext(ctx, query, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				sm := telemetry.Sample{DeviceID: deviceID}
				var kind int64
				var raw any
				if err := rows.Scan(&sm.Key, &sm.TS, &kind, &raw); err != nil {
					return err
				}
				if sm.Value, err = decodeValue(kind, raw); err != nil {
					return fmt.Errorf("key %.100q: %w", sm.Key, err)
				}
				out = append(out, sm)
			}
			return rows.Err()
		}
		if len(keys) == 0 {
			return read(base+` ORDER BY s.key`, deviceID)
		}
		for _, chunk := range chunks(keys) {
			if err := read(base+` AND s.key IN (`+placeholders(len(chunk))+`)`, append([]any{deviceID}, stringArgs(chunk)...)...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Byte-wise, as SQLite's BINARY collation orders the unfiltered case.
	slices.SortFunc(out, func(a, b telemetry.Sample) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// validateRange checks a query's device, keys and time range, and returns
// the keys without repetitions.
func validateRange(deviceID string, keys []string, from, to int64) ([]string, error) {
	if deviceID == "" {
		return nil, fmt.Errorf("%w query: empty device id", telemetry.ErrInvalid)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w query: no keys", telemetry.ErrInvalid)
	}
	keys, err := uniqueKeys(keys)
	if err != nil {
		return nil, err
	}
	if from > to {
		return nil, fmt.Errorf("%w query: from %d is after to %d", telemetry.ErrInvalid, from, to)
	}
	return keys, nil
}

// The raw queries: one key's range on the primary keys of ts_samples and
// ts_recent, merged (the two never hold the same ts).
const (
	rangeSelect = `SELECT ts, kind, v FROM ts_samples
		WHERE series_id = (SELECT id FROM ts_series WHERE device_id = ?1 AND key = ?2) AND ts >= ?3 AND ts < ?4
		UNION ALL
		SELECT ts, kind, v FROM ts_recent
		WHERE series_id = (SELECT id FROM ts_series WHERE device_id = ?1 AND key = ?2) AND ts >= ?3 AND ts < ?4`
	sqlQueryDesc = rangeSelect + ` ORDER BY ts DESC LIMIT ?5`
	sqlQueryAsc  = rangeSelect + ` ORDER BY ts ASC LIMIT ?5`
)

// Query returns raw values, grouped by key in the order of q.Keys, each
// key's values in q.Order, at most q.Limit per key.
func (s *TelemetryStore) Query(ctx context.Context, q telemetry.Query) ([]telemetry.Sample, error) {
	const op = "query telemetry"
	keys, err := validateRange(q.DeviceID, q.Keys, q.From, q.To)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = telemetry.DefaultLimit
	case limit < 0 || limit > telemetry.MaxLimit:
		return nil, fmt.Errorf("%s: %w query: limit %d is not within 0…%d", op, telemetry.ErrInvalid, q.Limit, telemetry.MaxLimit)
	}
	var query string
	switch q.Order {
	case telemetry.Descending:
		query = sqlQueryDesc
	case telemetry.Ascending:
		query = sqlQueryAsc
	default:
		return nil, fmt.Errorf("%s: %w query: unknown order %d", op, telemetry.ErrInvalid, q.Order)
	}
	var out []telemetry.Sample
	err = s.readTx(ctx, op, func(tx *sql.Tx) error {
		for _, key := range keys {
			if err := func() error {
				rows, err := tx.QueryContext(ctx, query, q.DeviceID, key, q.From, q.To, limit)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					sm := telemetry.Sample{DeviceID: q.DeviceID, Key: key}
					var kind int64
					var raw any
					if err := rows.Scan(&sm.TS, &kind, &raw); err != nil {
						return err
					}
					if sm.Value, err = decodeValue(kind, raw); err != nil {
						return fmt.Errorf("key %.100q at %d: %w", key, sm.TS, err)
					}
					out = append(out, sm)
				}
				return rows.Err()
			}(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Aggregation is done by SQLite, one GROUP BY per key over the key's
// ranges of ts_samples and ts_recent (bucket numbers are (ts-From)/Interval,
// never negative, and cannot overflow: To-From is checked). A value is
// numeric when its kind is long (2) or double (3); hasDouble tells whether a
// bucket's min, max or sum must be a double.
//
// Sums of longs are computed exactly and without SQLite's "integer
// overflow" error: as the sums of the high and the low 32 bits of each
// value, joined in Go. A long-only sum that does not fit in 64 bits comes
// back as a double.
const (
	numeric        = `CASE WHEN kind IN (2, 3) THEN v END`
	aggSelect      = `SELECT (ts - ?3) / ?5 AS b, count(*), count(` + numeric + `), coalesce(max(kind = 3), 0)`
	aggFrom        = ` FROM (` + rangeSelect + `) GROUP BY b`
	aggNumericOnly = ` HAVING count(` + numeric + `) > 0`
)

var aggQueries = map[telemetry.Aggregation]string{
	telemetry.Count: aggSelect + aggFrom + ` ORDER BY b`,
	telemetry.Min:   aggSelect + `, min(` + numeric + `)` + aggFrom + aggNumericOnly + ` ORDER BY b`,
	telemetry.Max:   aggSelect + `, max(` + numeric + `)` + aggFrom + aggNumericOnly + ` ORDER BY b`,
	telemetry.Avg:   aggSelect + `, total(` + numeric + `)` + aggFrom + aggNumericOnly + ` ORDER BY b`,
	telemetry.Sum: aggSelect + `, total(` + numeric + `),
		coalesce(sum(CASE WHEN kind = 2 THEN v >> 32 END), 0),
		coalesce(sum(CASE WHEN kind = 2 THEN v & 4294967295 END), 0)` + aggFrom + aggNumericOnly + ` ORDER BY b`,
}

// Aggregate returns the non-empty buckets, by key in the order of q.Keys,
// then by Start ascending.
func (s *TelemetryStore) Aggregate(ctx context.Context, q telemetry.AggregateQuery) ([]telemetry.Bucket, error) {
	const op = "aggregate telemetry"
	keys, err := validateRange(q.DeviceID, q.Keys, q.From, q.To)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	query, ok := aggQueries[q.Func]
	if !ok {
		return nil, fmt.Errorf("%s: %w query: unknown aggregation %.40q", op, telemetry.ErrInvalid, q.Func)
	}
	if q.Interval <= 0 {
		return nil, fmt.Errorf("%s: %w query: interval %d must be positive", op, telemetry.ErrInvalid, q.Interval)
	}
	// To-From must fit in an int64, and so then does ts-From in the query
	// (SQLite would silently turn an overflowing difference into a REAL).
	span := q.To - q.From
	if span < 0 {
		return nil, fmt.Errorf("%s: %w query: the range %d…%d is too long", op, telemetry.ErrInvalid, q.From, q.To)
	}
	if span/q.Interval > telemetry.MaxBuckets {
		return nil, fmt.Errorf("%s: %w query: %d intervals of %dms, more than %d", op, telemetry.ErrInvalid, span/q.Interval, q.Interval, telemetry.MaxBuckets)
	}
	var out []telemetry.Bucket
	err = s.readTx(ctx, op, func(tx *sql.Tx) error {
		for _, key := range keys {
			if err := func() error {
				rows, err := tx.QueryContext(ctx, query, q.DeviceID, key, q.From, q.To, q.Interval)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					b, err := scanBucket(rows, q.Func)
					if err != nil {
						return fmt.Errorf("key %.100q: %w", key, err)
					}
					b.Key = key
					b.Start = q.From + b.Start*q.Interval
					out = append(out, b)
				}
				return rows.Err()
			}(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scanBucket reads one row of an aggregate query; Start is the bucket's
// index.
func scanBucket(rows *sql.Rows, fn telemetry.Aggregation) (telemetry.Bucket, error) {
	var (
		b               telemetry.Bucket
		all, num        int64
		hasDouble       bool
		raw             any
		total           float64
		sumHigh, sumLow int64
	)
	switch fn {
	case telemetry.Count:
		if err := rows.Scan(&b.Start, &all, &num, &hasDouble); err != nil {
			return b, err
		}
		b.Value, b.Count = telemetry.Long(all), all
		return b, nil
	case telemetry.Min, telemetry.Max:
		if err := rows.Scan(&b.Start, &all, &num, &hasDouble, &raw); err != nil {
			return b, err
		}
		switch x := raw.(type) {
		case int64:
			if hasDouble {
				b.Value = telemetry.Double(float64(x))
			} else {
				b.Value = telemetry.Long(x)
			}
		case float64:
			b.Value = telemetry.Double(x)
		default:
			return b, fmt.Errorf("%s is a %T", fn, raw)
		}
	case telemetry.Avg:
		if err := rows.Scan(&b.Start, &all, &num, &hasDouble, &total); err != nil {
			return b, err
		}
		b.Value = telemetry.Double(total / float64(num))
	case telemetry.Sum:
		if err := rows.Scan(&b.Start, &all, &num, &hasDouble, &total, &sumHigh, &sumLow); err != nil {
			return b, err
		}
		switch n, f, exact := joinSum(sumHigh, sumLow); {
		case hasDouble:
			b.Value = telemetry.Double(total)
		case exact:
			b.Value = telemetry.Long(n)
		default:
			b.Value = telemetry.Double(f)
		}
	}
	b.Count = num
	return b, nil
}

// joinSum returns high·2³² + low, where high is a sum of the high 32 bits
// (signed) of longs and low the sum of their low 32 bits (unsigned): as an
// int64 when it fits (exact), else as a float64 only.
func joinSum(high, low int64) (n int64, f float64, exact bool) {
	// Carry the low sum's excess into the high one: then low < 2³² and the
	// total fits exactly when high fits in 32 signed bits.
	high += low >> 32
	low &= 1<<32 - 1
	f = float64(high)*(1<<32) + float64(low)
	if high < math.MinInt32 || high > math.MaxInt32 {
		return 0, f, false
	}
	return high<<32 + low, f, true
}

// Attributes returns the device's attributes of scope, all of them or those
// of keys that exist, sorted by key.
func (s *TelemetryStore) Attributes(ctx context.Context, deviceID string, scope telemetry.Scope, keys []string) ([]telemetry.Attribute, error) {
	const op = "read attributes"
	if err := validateDeviceScope(deviceID, scope); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	keys, err := uniqueKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	const base = `SELECT key, kind, v, updated_at FROM attributes WHERE device_id = ? AND scope = ?`
	var out []telemetry.Attribute
	err = s.readTx(ctx, op, func(tx *sql.Tx) error {
		read := func(query string, args ...any) error {
			rows, err := tx.QueryContext(ctx, query, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var a telemetry.Attribute
				var kind int64
				var raw any
				if err := rows.Scan(&a.Key, &kind, &raw, &a.UpdatedAt); err != nil {
					return err
				}
				if a.Value, err = decodeValue(kind, raw); err != nil {
					return fmt.Errorf("attribute %.100q: %w", a.Key, err)
				}
				out = append(out, a)
			}
			return rows.Err()
		}
		if len(keys) == 0 {
			return read(base+` ORDER BY key`, deviceID, string(scope))
		}
		for _, chunk := range chunks(keys) {
			if err := read(base+` AND key IN (`+placeholders(len(chunk))+`)`, append([]any{deviceID, string(scope)}, stringArgs(chunk)...)...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b telemetry.Attribute) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// ConnStates returns the stored connection times of the given devices; a
// device never seen is absent from the map.
func (s *TelemetryStore) ConnStates(ctx context.Context, deviceIDs []string) (map[string]telemetry.ConnState, error) {
	const op = "read connection states"
	out := make(map[string]telemetry.ConnState, len(deviceIDs))
	var ids []string
	for _, id := range deviceIDs {
		if id == "" {
			continue // no device has it
		}
		ids = append(ids, id)
	}
	err := s.readTx(ctx, op, func(tx *sql.Tx) error {
		for _, chunk := range chunks(ids) {
			if err := func() error {
				rows, err := tx.QueryContext(ctx, `SELECT device_id, last_connect, last_disconnect, last_activity
					FROM conn_states WHERE device_id IN (`+placeholders(len(chunk))+`)`, stringArgs(chunk)...)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var cs telemetry.ConnState
					if err := rows.Scan(&cs.DeviceID, &cs.LastConnect, &cs.LastDisconnect, &cs.LastActivity); err != nil {
						return err
					}
					out[cs.DeviceID] = cs
				}
				return rows.Err()
			}(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
