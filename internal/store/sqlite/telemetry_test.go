package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/telemetry"
	"github.com/zerotouch/zerotouch/internal/telemetry/telemetrytest"
)

func newTestTelemetryStore(t testing.TB) *TelemetryStore {
	t.Helper()
	s, err := OpenTelemetry(context.Background(), filepath.Join(t.TempDir(), "telemetry.db"), TelemetryOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("OpenTelemetry: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// The suite runs with samples left in ts_recent (the default threshold is
// never reached), moved to ts_samples after every write, and in between,
// so that reads, replacements, backfills and deletes meet both tables.
func TestTelemetryConformance(t *testing.T) {
	for _, tc := range []struct {
		name              string
		compactRows, step int64
	}{
		{"Staged", 0, 0},
		{"CompactAllEveryWrite", 1, math.MaxInt32},
		{"CompactSomeSeriesOften", 7, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			telemetrytest.Run(t, func(t *testing.T) telemetry.Store {
				s := newTestTelemetryStore(t)
				if tc.compactRows > 0 {
					s.compactRows, s.compactStep = tc.compactRows, tc.step
				}
				return s
			})
		})
	}
}

// benchSeries names the benchmark's series: 1,000 devices × 5 keys.
type benchSeries struct{ devices, keys []string }

func newBenchSeries() benchSeries {
	var s benchSeries
	for d := range 1000 {
		s.devices = append(s.devices, fmt.Sprintf("device-%04d", d))
	}
	s.keys = []string{"temperature", "humidity", "pressure", "battery", "rssi"}
	return s
}

// fill sets batch b to the n samples that follow sample number first, in
// the order a fleet reporting once a second produces them: every series
// once, then every series again one second later.
func (s benchSeries) fill(b *telemetry.Batch, first, n int) {
	series := len(s.devices) * len(s.keys)
	b.Samples = b.Samples[:0]
	for g := first; g < first+n; g++ {
		i := g % series
		v := telemetry.Double(20 + float64(g%1000)/10)
		if i%len(s.keys) == 4 {
			v = telemetry.Long(int64(-40 - g%50))
		}
		b.Samples = append(b.Samples, telemetry.Sample{
			DeviceID: s.devices[i/len(s.keys)],
			Key:      s.keys[i%len(s.keys)],
			TS:       1_700_000_000_000 + int64(g/series)*1000,
			Value:    v,
		})
	}
}

// BenchmarkTelemetryWrite measures durable ingestion: one Write (one
// transaction, one fsync) per batch, over 1,000 devices × 5 keys whose
// series already exist. Run with e.g.
//
//	go test -run XXX -bench TelemetryWrite -benchtime 20x ./internal/store/sqlite/
func BenchmarkTelemetryWrite(b *testing.B) {
	bs := newBenchSeries()
	for _, size := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := newTestTelemetryStore(b)
			ctx := context.Background()
			var batch telemetry.Batch
			next := 0
			var slowest time.Duration
			write := func() {
				bs.fill(&batch, next, size)
				next += size
				start := time.Now()
				if err := s.Write(ctx, &batch); err != nil {
					b.Fatal(err)
				}
				slowest = max(slowest, time.Since(start))
			}
			for next < len(bs.devices)*len(bs.keys) {
				write() // create every series before measuring
			}
			slowest = 0
			b.ResetTimer()
			for range b.N {
				write()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "samples/s")
			// The slowest write includes any compaction it triggered.
			b.ReportMetric(float64(slowest.Milliseconds()), "max-ms")
		})
	}
}

// BenchmarkTelemetryQuery measures reads of one series holding a day of
// one-second samples (86,400), among 50 series of 10 devices.
//
//	go test -run XXX -bench TelemetryQuery -benchtime 200x ./internal/store/sqlite/
func BenchmarkTelemetryQuery(b *testing.B) {
	s := newTestTelemetryStore(b)
	ctx := context.Background()
	const day = 86_400
	const t0 = 1_700_000_000_000
	keys := []string{"temperature", "humidity", "pressure", "battery", "rssi"}
	var batch telemetry.Batch
	for sec := 0; sec < day; sec += 200 {
		batch.Samples = batch.Samples[:0]
		for d := range 10 {
			for k, key := range keys {
				for i := sec; i < sec+200; i++ {
					v := telemetry.Double(float64(i%1000) / 10)
					if k == 4 {
						v = telemetry.Long(int64(i % 100))
					}
					batch.Samples = append(batch.Samples, telemetry.Sample{
						DeviceID: fmt.Sprintf("device-%02d", d), Key: key, TS: t0 + int64(i)*1000, Value: v})
				}
			}
		}
		if err := s.Write(ctx, &batch); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name    string
		samples int // values a call reads
		run     func() (int, error)
	}{
		{"Latest/5keys", 5, func() (int, error) {
			r, err := s.Latest(ctx, "device-03", nil)
			return len(r), err
		}},
		{"Query/limit=100", 100, func() (int, error) {
			r, err := s.Query(ctx, telemetry.Query{DeviceID: "device-03", Keys: keys[:1], From: t0, To: t0 + day*1000})
			return len(r), err
		}},
		{"Query/limit=10000/5keys", 50_000, func() (int, error) {
			r, err := s.Query(ctx, telemetry.Query{DeviceID: "device-03", Keys: keys, From: t0, To: t0 + day*1000,
				Limit: telemetry.MaxLimit, Order: telemetry.Ascending})
			return len(r), err
		}},
		{"Aggregate/avg/day/1000buckets", day, func() (int, error) {
			r, err := s.Aggregate(ctx, telemetry.AggregateQuery{DeviceID: "device-03", Keys: keys[:1], From: t0, To: t0 + day*1000,
				Interval: day, Func: telemetry.Avg})
			return len(r), err
		}},
		{"Aggregate/sum/day/24buckets", day, func() (int, error) {
			r, err := s.Aggregate(ctx, telemetry.AggregateQuery{DeviceID: "device-03", Keys: keys[4:], From: t0, To: t0 + day*1000,
				Interval: 3_600_000, Func: telemetry.Sum})
			return len(r), err
		}},
		{"Aggregate/max/hour/60buckets", 3600, func() (int, error) {
			r, err := s.Aggregate(ctx, telemetry.AggregateQuery{DeviceID: "device-03", Keys: keys[:1], From: t0, To: t0 + 3_600_000,
				Interval: 60_000, Func: telemetry.Max})
			return len(r), err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for range b.N {
				if n, err := bc.run(); err != nil || n == 0 {
					b.Fatalf("%d results, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			b.ReportMetric(float64(b.N*bc.samples)/b.Elapsed().Seconds(), "values/s")
		})
	}
}

func TestTelemetryJoinSum(t *testing.T) {
	for _, tc := range []struct {
		values []int64
		exact  bool
	}{
		{[]int64{1, 2, 3}, true},
		{[]int64{-1, -2, -3}, true},
		{[]int64{math.MaxInt64, math.MinInt64}, true},
		{[]int64{math.MaxInt64 - 5, 5}, true},
		{[]int64{math.MinInt64 + 5, -5}, true},
		{[]int64{math.MaxInt64, 1}, false},
		{[]int64{math.MinInt64, -1}, false},
		{[]int64{math.MaxInt64, math.MaxInt64, math.MinInt64, math.MinInt64 + 2}, true}, // overflows half-way only
		{[]int64{-1 << 62, -1 << 62, -1 << 62, -1 << 62, 1}, false},
		{[]int64{1 << 62, 1 << 62, -(1 << 62), -(1 << 62), 1}, true},
		{[]int64{0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, true},
	} {
		var high, low, want int64
		var f float64
		for _, v := range tc.values {
			high += v >> 32
			low += v & 0xFFFFFFFF
			want += v // wraps; checked only when exact
			f += float64(v)
		}
		n, approx, exact := joinSum(high, low)
		if exact != tc.exact || (exact && n != want) {
			t.Errorf("joinSum of %v = %d, %v; want %d, %v", tc.values, n, exact, want, tc.exact)
		}
		if !exact && math.Abs(approx-f) > math.Abs(f)*1e-15 {
			t.Errorf("joinSum of %v ≈ %g, want %g", tc.values, approx, f)
		}
	}
}

// A long-only sum beyond 64 bits comes back as a double, instead of
// failing the query with SQLite's "integer overflow".
func TestTelemetrySumOverflowIsDouble(t *testing.T) {
	s := newTestTelemetryStore(t)
	ctx := t.Context()
	var b telemetry.Batch
	for i := range int64(4) {
		b.Samples = append(b.Samples, telemetry.Sample{DeviceID: "d", Key: "k", TS: i, Value: telemetry.Long(math.MaxInt64)})
	}
	if err := s.Write(ctx, &b); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []telemetry.Aggregation{telemetry.Sum, telemetry.Avg} {
		got, err := s.Aggregate(ctx, telemetry.AggregateQuery{DeviceID: "d", Keys: []string{"k"}, From: 0, To: 10, Interval: 10, Func: fn})
		if err != nil {
			t.Fatalf("Aggregate(%s): %v", fn, err)
		}
		want := 4 * float64(math.MaxInt64)
		if fn == telemetry.Avg {
			want = float64(math.MaxInt64)
		}
		if len(got) != 1 || got[0].Value != telemetry.Double(want) || got[0].Count != 4 {
			t.Fatalf("Aggregate(%s) = %+v, want one bucket of %g", fn, got, want)
		}
	}
}

// Random batches (new samples, replacements, backfills) checked against a
// model, with compactions in between and retention at the end: every read
// must see the union of ts_recent and ts_samples exactly once.
func TestTelemetryMatchesModel(t *testing.T) {
	for _, tc := range []struct{ rows, step int64 }{{1, math.MaxInt32}, {1, 1}, {37, 10}, {500, 50}, {defaultCompactRows, defaultCompactStep}} {
		t.Run(fmt.Sprintf("compactRows=%d,step=%d", tc.rows, tc.step), func(t *testing.T) {
			s := newTestTelemetryStore(t)
			s.compactRows, s.compactStep = tc.rows, tc.step
			ctx := t.Context()
			rng := rand.New(rand.NewPCG(1, uint64(tc.rows*tc.step)))
			type ref struct{ dev, key string }
			type point struct {
				ref
				ts int64
			}
			samples := map[point]int64{}
			latest := map[ref]telemetry.Sample{}
			for batch := range 60 {
				var b telemetry.Batch
				for range 1 + rng.IntN(100) {
					// Mostly newer samples, some far older ones.
					ts := int64(batch*10 + rng.IntN(15))
					if rng.IntN(10) == 0 {
						ts = rng.Int64N(int64(batch*10 + 1))
					}
					sm := telemetry.Sample{DeviceID: fmt.Sprintf("d%d", rng.IntN(4)), Key: fmt.Sprintf("k%d", rng.IntN(3)),
						TS: ts, Value: telemetry.Long(rng.Int64N(1000))}
					b.Samples = append(b.Samples, sm)
					r := ref{sm.DeviceID, sm.Key}
					samples[point{r, sm.TS}] = sm.Value.Long
					if cur, ok := latest[r]; !ok || sm.TS >= cur.TS {
						latest[r] = sm
					}
				}
				if err := s.Write(ctx, &b); err != nil {
					t.Fatal(err)
				}
			}
			check := func(when string) {
				t.Helper()
				for r, want := range latest {
					got, err := s.Latest(ctx, r.dev, []string{r.key})
					if err != nil || len(got) != 1 || got[0] != want {
						t.Fatalf("%s: Latest(%s, %s) = %+v, %v; want %+v", when, r.dev, r.key, got, err, want)
					}
					var wantSamples []telemetry.Sample
					var sum int64
					for p, v := range samples {
						if p.ref == r {
							wantSamples = append(wantSamples, telemetry.Sample{DeviceID: r.dev, Key: r.key, TS: p.ts, Value: telemetry.Long(v)})
							sum += v
						}
					}
					slices.SortFunc(wantSamples, func(a, b telemetry.Sample) int { return int(a.TS - b.TS) })
					gotSamples, err := s.Query(ctx, telemetry.Query{DeviceID: r.dev, Keys: []string{r.key}, From: 0, To: 1 << 20,
						Limit: telemetry.MaxLimit, Order: telemetry.Ascending})
					if err != nil || !slices.Equal(gotSamples, wantSamples) {
						t.Fatalf("%s: Query(%s, %s) = %v, %v\nwant %v", when, r.dev, r.key, gotSamples, err, wantSamples)
					}
					bs, err := s.Aggregate(ctx, telemetry.AggregateQuery{DeviceID: r.dev, Keys: []string{r.key}, From: 0, To: 1 << 20,
						Interval: 1 << 20, Func: telemetry.Sum})
					if len(wantSamples) == 0 {
						if err != nil || len(bs) != 0 {
							t.Fatalf("%s: Aggregate(%s, %s) = %+v, %v; want none", when, r.dev, r.key, bs, err)
						}
						continue
					}
					if err != nil || len(bs) != 1 || bs[0].Value != telemetry.Long(sum) || bs[0].Count != int64(len(wantSamples)) {
						t.Fatalf("%s: Aggregate(%s, %s) = %+v, %v; want sum %d of %d", when, r.dev, r.key, bs, err, sum, len(wantSamples))
					}
				}
			}
			check("after writes")
			for _, cutoff := range []int64{100, 300, 450} {
				var want int64
				for p := range samples {
					if p.ts < cutoff {
						delete(samples, p)
						want++
					}
				}
				var got int64
				for {
					n, err := s.DeleteBefore(ctx, cutoff, 13)
					if err != nil {
						t.Fatal(err)
					}
					got += n
					if n < 13 {
						break
					}
				}
				if got != want {
					t.Fatalf("DeleteBefore(%d) deleted %d, want %d", cutoff, got, want)
				}
				check(fmt.Sprintf("after DeleteBefore(%d)", cutoff))
			}
		})
	}
}

func TestTelemetryMigrationsAreNumbered(t *testing.T) {
	migs, err := telemetryMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) == 0 || migs[0].name != "0001_init.sql" {
		t.Fatalf("telemetry migrations = %v, want 0001_init.sql first", migs)
	}
	reg, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range reg {
		if m.sql == migs[0].sql {
			t.Fatalf("the registry's migrations include the telemetry schema (%s)", m.name)
		}
	}
}

func TestTelemetryPragmasAndReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "telemetry.db")
	s, err := OpenTelemetry(ctx, path, TelemetryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.wdb, "journal_mode", "wal"},
		{s.wdb, "synchronous", "2"}, // FULL
		{s.rdb.DB, "journal_mode", "wal"},
		{s.rdb.DB, "query_only", "1"},
	} {
		var got string
		if err := tc.db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %q, want %q", tc.pragma, got, tc.want)
		}
	}
	want := telemetry.Sample{DeviceID: "d", Key: "k", TS: 1, Value: telemetry.Double(1.5)}
	if err := s.Write(ctx, &telemetry.Batch{Samples: []telemetry.Sample{want}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s2, err := OpenTelemetry(ctx, path, TelemetryOptions{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	var versions int
	if err := s2.rdb.QueryRowContext(ctx, "SELECT count(*) FROM schema_version").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if migs, _ := telemetryMigrations(); versions != len(migs) {
		t.Fatalf("schema_version has %d rows after reopening, want %d", versions, len(migs))
	}
	got, err := s2.Latest(ctx, "d", nil)
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("Latest after reopen = %+v, %v; want %+v", got, err, want)
	}
	// The cache starts empty after a reopen: writes find the series again.
	if err := s2.Write(ctx, &telemetry.Batch{Samples: []telemetry.Sample{{DeviceID: "d", Key: "k", TS: 0, Value: telemetry.Long(1)}}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s2.DeleteBefore(ctx, 1, 10); err != nil || n != 1 {
		t.Fatalf("DeleteBefore after reopen = %d, %v; want 1", n, err)
	}
}

// The queries must use the primary key, not scan the samples.
func TestTelemetryQueryPlans(t *testing.T) {
	s := newTestTelemetryStore(t)
	ctx := t.Context()
	for _, q := range []string{sqlQueryDesc, sqlQueryAsc, aggQueries[telemetry.Sum]} {
		rows, err := s.rdb.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, "d", "k", 0, 10, 10)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, table := range []string{"ts_samples", "ts_recent"} {
			found := false
			for _, p := range plan {
				if strings.Contains(p, table) {
					found = true
					if !strings.Contains(p, "PRIMARY KEY (series_id=? AND ts>? AND ts<?)") {
						t.Errorf("plan of %q reads %s with %q, want a primary key range", q, table, p)
					}
				}
			}
			if !found {
				t.Errorf("plan of %q does not read %s: %q", q, table, plan)
			}
		}
		t.Logf("plan: %q", plan)
	}
}
