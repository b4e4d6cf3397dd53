// Package telemetrytest is the conformance suite every telemetry.Store
// implementation must pass. It states, as tests, the rules of the Store
// interface and the choices the interface leaves open:
//
//   - Values round-trip exactly: a double keeps its bits (-0.0 stays
//     negative, 5.0 stays a double), a long its 64 bits, a string its bytes
//     (NUL, non-ASCII, digits stay a string), JSON its compact text.
//   - Reads of a device or key never written find nothing, without error.
//   - Query and Aggregate fail with ErrInvalid on an empty device id, no
//     keys, an empty key or From > To; From == To is an empty range. Query
//     also on a limit outside 0…MaxLimit or an unknown Order; Aggregate on
//     Interval <= 0, (To-From)/Interval > MaxBuckets or an unknown Func.
//   - A bucket of Count counts values of every kind; a bucket of Min, Max,
//     Avg or Sum counts (Bucket.Count) and aggregates its longs and doubles
//     only, and is left out when it has none.
//   - An Attribute's non-zero UpdatedAt is stored as given. Attribute
//     writes replace in call and batch order, whatever their UpdatedAt.
//   - DeleteBefore with max <= 0 is ErrInvalid (retention's loop, "until it
//     returns fewer than max", would never end).
//   - After DeleteDevice the device starts afresh: a new sample becomes its
//     latest value even when older than the deleted one.
//   - A write or delete whose context is already cancelled fails with an
//     error wrapping context.Canceled and changes nothing.
//   - After Close, every method fails with an error wrapping ErrClosed.
//
// Every subtest gets its own fresh store from newStore.
package telemetrytest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Run runs the whole suite. newStore must return an empty store and
// register its Close with t.Cleanup (the suite may close it first).
func Run(t *testing.T, newStore func(t *testing.T) telemetry.Store) {
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Write", writeTests},
		{"Latest", latestTests},
		{"Query", queryTests},
		{"Aggregate", aggregateTests},
		{"Attributes", attributeTests},
		{"ConnStates", connStateTests},
		{"DeleteBefore", deleteBeforeTests},
		{"DeleteDevice", deleteDeviceTests},
		{"Lifecycle", lifecycleTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.cases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, newStore(t))
				})
			}
		})
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, s telemetry.Store)
}

// Fixtures.

const (
	devA = "device-a"
	devB = "device-b"
)

func smp(device, key string, ts int64, v telemetry.Value) telemetry.Sample {
	return telemetry.Sample{DeviceID: device, Key: key, TS: ts, Value: v}
}

func long(device, key string, ts, n int64) telemetry.Sample {
	return smp(device, key, ts, telemetry.Long(n))
}

func jsonValue(t *testing.T, raw string) telemetry.Value {
	t.Helper()
	v, err := telemetry.JSON([]byte(raw))
	if err != nil {
		t.Fatalf("telemetry.JSON(%s): %v", raw, err)
	}
	return v
}

func write(t *testing.T, s telemetry.Store, b *telemetry.Batch) {
	t.Helper()
	if err := s.Write(t.Context(), b); err != nil {
		t.Fatalf("Write(%d samples, %d attributes, %d states): %v", len(b.Samples), len(b.Attributes), len(b.States), err)
	}
}

func writeSamples(t *testing.T, s telemetry.Store, samples ...telemetry.Sample) {
	t.Helper()
	write(t, s, &telemetry.Batch{Samples: samples})
}

func setAttrs(t *testing.T, s telemetry.Store, device string, scope telemetry.Scope, attrs ...telemetry.Attribute) {
	t.Helper()
	if err := s.SetAttributes(t.Context(), device, scope, attrs); err != nil {
		t.Fatalf("SetAttributes(%s, %s): %v", device, scope, err)
	}
}

func attr(key string, v telemetry.Value, updatedAt int64) telemetry.Attribute {
	return telemetry.Attribute{Key: key, Value: v, UpdatedAt: updatedAt}
}

// Reads that must succeed.

func latest(t *testing.T, s telemetry.Store, device string, keys ...string) []telemetry.Sample {
	t.Helper()
	got, err := s.Latest(t.Context(), device, keys)
	must(t, err, fmt.Sprintf("Latest(%s, %q)", device, keys))
	return got
}

func query(t *testing.T, s telemetry.Store, q telemetry.Query) []telemetry.Sample {
	t.Helper()
	got, err := s.Query(t.Context(), q)
	must(t, err, fmt.Sprintf("Query(%+v)", q))
	return got
}

// all returns every sample of the device's keys, oldest first.
func all(t *testing.T, s telemetry.Store, device string, keys ...string) []telemetry.Sample {
	t.Helper()
	return query(t, s, telemetry.Query{DeviceID: device, Keys: keys, From: math.MinInt64, To: math.MaxInt64,
		Limit: telemetry.MaxLimit, Order: telemetry.Ascending})
}

func aggregate(t *testing.T, s telemetry.Store, q telemetry.AggregateQuery) []telemetry.Bucket {
	t.Helper()
	got, err := s.Aggregate(t.Context(), q)
	must(t, err, fmt.Sprintf("Aggregate(%+v)", q))
	return got
}

func attrs(t *testing.T, s telemetry.Store, device string, scope telemetry.Scope, keys ...string) []telemetry.Attribute {
	t.Helper()
	got, err := s.Attributes(t.Context(), device, scope, keys)
	must(t, err, fmt.Sprintf("Attributes(%s, %s, %q)", device, scope, keys))
	return got
}

func connStates(t *testing.T, s telemetry.Store, devices ...string) map[string]telemetry.ConnState {
	t.Helper()
	got, err := s.ConnStates(t.Context(), devices)
	must(t, err, fmt.Sprintf("ConnStates(%q)", devices))
	return got
}

// Assertions.

func must(t *testing.T, err error, call string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", call, err)
	}
}

func wantInvalid(t *testing.T, err error, call string) {
	t.Helper()
	if !errors.Is(err, telemetry.ErrInvalid) {
		t.Fatalf("%s: err = %v, want ErrInvalid", call, err)
	}
}

// sameValue compares values exactly: a double by its bits, so that -0.0 is
// not 0.0.
func sameValue(a, b telemetry.Value) bool {
	if math.Float64bits(a.Double) != math.Float64bits(b.Double) {
		return false
	}
	a.Double, b.Double = 0, 0
	return a == b
}

func showValue(v telemetry.Value) string {
	switch v.Kind {
	case telemetry.KindDouble:
		return fmt.Sprintf("double(%v, bits %#x)", v.Double, math.Float64bits(v.Double))
	case telemetry.KindString, telemetry.KindJSON:
		if len(v.Text) > 60 {
			return fmt.Sprintf("%s(%q… %d bytes)", v.Kind, v.Text[:60], len(v.Text))
		}
		return fmt.Sprintf("%s(%q)", v.Kind, v.Text)
	}
	return fmt.Sprintf("%+v", v)
}

func showSamples(ss []telemetry.Sample) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "\n\t%s/%s@%d = %s", s.DeviceID, s.Key, s.TS, showValue(s.Value))
	}
	if len(ss) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

func checkSamples(t *testing.T, what string, got, want []telemetry.Sample) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.DeviceID == w.DeviceID && g.Key == w.Key && g.TS == w.TS && sameValue(g.Value, w.Value)
	}
	if !ok {
		t.Fatalf("%s =%s\nwant%s", what, showSamples(got), showSamples(want))
	}
}

func showBuckets(bs []telemetry.Bucket) string {
	var b strings.Builder
	for _, x := range bs {
		fmt.Fprintf(&b, "\n\t%s@%d = %s (count %d)", x.Key, x.Start, showValue(x.Value), x.Count)
	}
	if len(bs) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

func checkBuckets(t *testing.T, what string, got, want []telemetry.Bucket) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.Key == w.Key && g.Start == w.Start && g.Count == w.Count && sameValue(g.Value, w.Value)
	}
	if !ok {
		t.Fatalf("%s =%s\nwant%s", what, showBuckets(got), showBuckets(want))
	}
}

func showAttrs(as []telemetry.Attribute) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "\n\t%s = %s (updated %d)", a.Key, showValue(a.Value), a.UpdatedAt)
	}
	if len(as) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

func checkAttrs(t *testing.T, what string, got, want []telemetry.Attribute) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		g, w := got[i], want[i]
		ok = g.Key == w.Key && g.UpdatedAt == w.UpdatedAt && sameValue(g.Value, w.Value)
	}
	if !ok {
		t.Fatalf("%s =%s\nwant%s", what, showAttrs(got), showAttrs(want))
	}
}

func checkStates(t *testing.T, what string, got map[string]telemetry.ConnState, want ...telemetry.ConnState) {
	t.Helper()
	ok := len(got) == len(want)
	for _, w := range want {
		ok = ok && got[w.DeviceID] == w
	}
	if !ok {
		t.Fatalf("%s = %+v, want %+v", what, got, want)
	}
}

// checkEmpty checks that nothing at all is stored about device.
func checkEmpty(t *testing.T, s telemetry.Store, device string, keys ...string) {
	t.Helper()
	checkSamples(t, "Latest of "+device, latest(t, s, device), nil)
	if len(keys) > 0 {
		checkSamples(t, "samples of "+device, all(t, s, device, keys...), nil)
	}
	for _, sc := range scopes {
		checkAttrs(t, fmt.Sprintf("%s attributes of %s", sc, device), attrs(t, s, device, sc), nil)
	}
	checkStates(t, "ConnStates of "+device, connStates(t, s, device))
}

var scopes = []telemetry.Scope{telemetry.ScopeClient, telemetry.ScopeShared, telemetry.ScopeServer}

func sortedKeys(ss []telemetry.Sample) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Key
	}
	return out
}

func cancelled(ctx context.Context) context.Context {
	c, cancel := context.WithCancel(ctx)
	cancel()
	return c
}

// roundTripValues are the values every kind must store exactly.
func roundTripValues(t *testing.T) []struct {
	key string
	v   telemetry.Value
} {
	return []struct {
		key string
		v   telemetry.Value
	}{
		{"bool-false", telemetry.Bool(false)},
		{"bool-true", telemetry.Bool(true)},
		{"double-0.1", telemetry.Double(0.1)},
		{"double-1e300", telemetry.Double(1e300)},
		{"double-integral", telemetry.Double(5)},
		{"double-integral-big", telemetry.Double(1e18)},
		{"double-max", telemetry.Double(math.MaxFloat64)},
		{"double-negative", telemetry.Double(-2.5e-7)},
		{"double-negative-zero", telemetry.Double(math.Copysign(0, -1))},
		{"double-tiny", telemetry.Double(math.SmallestNonzeroFloat64)},
		{"double-zero", telemetry.Double(0)},
		{"json-array", jsonValue(t, `[]`)},
		{"json-nested", jsonValue(t, `{"a":[1,2.5,{"b":null,"c":true}],"é":"✓","n":123456789012345678901234567890}`)},
		{"json-object", jsonValue(t, `{}`)},
		{"long-max", telemetry.Long(math.MaxInt64)},
		{"long-min", telemetry.Long(math.MinInt64)},
		{"long-negative", telemetry.Long(-42)},
		{"long-over-2^53", telemetry.Long(1<<53 + 1)},
		{"long-zero", telemetry.Long(0)},
		{"string-digits", telemetry.String("42")},
		{"string-empty", telemetry.String("")},
		{"string-float", telemetry.String("1.5")},
		{"string-json-like", telemetry.String(`{"a":1}`)},
		{"string-large", telemetry.String(strings.Repeat("0123456789", 20_000))},
		{"string-nul", telemetry.String("a\x00b")},
		{"string-quotes", telemetry.String("it's \"quoted\";\n-- not SQL")},
		{"string-unicode", telemetry.String("héllo wörld ✓ 世界 🎉")},
	}
}

// Write.

var writeTests = []testCase{
	{"EmptyStore", func(t *testing.T, s telemetry.Store) {
		ctx := t.Context()
		must(t, s.Ping(ctx), "Ping")
		checkEmpty(t, s, devA, "k")
		bs := aggregate(t, s, telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 1000, Interval: 10, Func: telemetry.Count})
		checkBuckets(t, "Aggregate on an empty store", bs, nil)
		n, err := s.DeleteBefore(ctx, math.MaxInt64, 100)
		if err != nil || n != 0 {
			t.Fatalf("DeleteBefore on an empty store = %d, %v; want 0, nil", n, err)
		}
		must(t, s.DeleteDevice(ctx, devA), "DeleteDevice of a device never seen")
		must(t, s.Write(ctx, &telemetry.Batch{}), "Write(empty batch)")
		if err := s.Write(ctx, nil); err != nil && !errors.Is(err, telemetry.ErrInvalid) {
			t.Fatalf("Write(nil) = %v, want nil or ErrInvalid", err)
		}
		checkEmpty(t, s, devA, "k")
	}},
	{"AllKindsRoundTripExactly", func(t *testing.T, s telemetry.Store) {
		vals := roundTripValues(t)
		var b telemetry.Batch
		var want []telemetry.Sample
		var wantAttrs []telemetry.Attribute
		for i, rv := range vals {
			sm := smp(devA, rv.key, int64(1000+i), rv.v)
			b.Samples = append(b.Samples, sm)
			want = append(want, sm)
			a := attr(rv.key, rv.v, int64(5000+i))
			b.Attributes = append(b.Attributes, telemetry.AttributeWrite{DeviceID: devA, Scope: telemetry.ScopeClient, Attribute: a})
			wantAttrs = append(wantAttrs, a)
		}
		write(t, s, &b)
		slices.SortFunc(want, func(a, b telemetry.Sample) int { return strings.Compare(a.Key, b.Key) })
		slices.SortFunc(wantAttrs, func(a, b telemetry.Attribute) int { return strings.Compare(a.Key, b.Key) })
		checkSamples(t, "Latest", latest(t, s, devA), want)
		for _, w := range want {
			checkSamples(t, "Query of "+w.Key, all(t, s, devA, w.Key), []telemetry.Sample{w})
		}
		checkAttrs(t, "client attributes", attrs(t, s, devA, telemetry.ScopeClient), wantAttrs)
	}},
	{"SameTimestampReplaces", func(t *testing.T, s telemetry.Store) {
		writeSamples(t, s, long(devA, "k", 100, 1), long(devA, "k", 200, 2), long(devA, "other", 100, 3))
		writeSamples(t, s, smp(devA, "k", 100, telemetry.String("replaced")))
		checkSamples(t, "samples of k", all(t, s, devA, "k"), []telemetry.Sample{
			smp(devA, "k", 100, telemetry.String("replaced")), long(devA, "k", 200, 2)})
		checkSamples(t, "samples of other", all(t, s, devA, "other"), []telemetry.Sample{long(devA, "other", 100, 3)})
	}},
	{"SameTimestampInOneBatchLastWins", func(t *testing.T, s telemetry.Store) {
		writeSamples(t, s, long(devA, "k", 100, 1), long(devA, "k", 50, 7), long(devA, "k", 100, 2), smp(devA, "k", 100, telemetry.Double(3.5)))
		checkSamples(t, "samples of k", all(t, s, devA, "k"), []telemetry.Sample{
			long(devA, "k", 50, 7), smp(devA, "k", 100, telemetry.Double(3.5))})
		checkSamples(t, "Latest", latest(t, s, devA), []telemetry.Sample{smp(devA, "k", 100, telemetry.Double(3.5))})
	}},
	{"InvalidRecordWritesNothing", func(t *testing.T, s telemetry.Store) {
		valid := telemetry.Batch{
			Samples: []telemetry.Sample{long(devA, "k", 1, 1), smp(devA, "s", 1, telemetry.String("x"))},
			Attributes: []telemetry.AttributeWrite{
				{DeviceID: devA, Scope: telemetry.ScopeClient, Attribute: attr("a", telemetry.Long(1), 1)},
			},
			States: []telemetry.ConnState{{DeviceID: devA, LastConnect: 1, LastActivity: 1}},
		}
		sampleWith := func(v telemetry.Value) telemetry.Sample { return smp(devA, "bad", 2, v) }
		attrWith := func(dev string, scope telemetry.Scope, key string, v telemetry.Value) telemetry.AttributeWrite {
			return telemetry.AttributeWrite{DeviceID: dev, Scope: scope, Attribute: attr(key, v, 1)}
		}
		for _, tc := range []struct {
			name string
			edit func(b *telemetry.Batch)
		}{
			{"SampleEmptyDevice", func(b *telemetry.Batch) { b.Samples = append(b.Samples, long("", "k", 1, 1)) }},
			{"SampleEmptyKey", func(b *telemetry.Batch) { b.Samples = append(b.Samples, long(devA, "", 1, 1)) }},
			{"SampleZeroValue", func(b *telemetry.Batch) { b.Samples = append(b.Samples, sampleWith(telemetry.Value{})) }},
			{"SampleUnknownKind", func(b *telemetry.Batch) {
				b.Samples = append(b.Samples, sampleWith(telemetry.Value{Kind: 42, Long: 1}))
			}},
			{"SampleNaN", func(b *telemetry.Batch) { b.Samples = append(b.Samples, sampleWith(telemetry.Double(math.NaN()))) }},
			{"SampleInfinity", func(b *telemetry.Batch) { b.Samples = append(b.Samples, sampleWith(telemetry.Double(math.Inf(1)))) }},
			{"SampleMinusInfinity", func(b *telemetry.Batch) {
				b.Samples = append(b.Samples, sampleWith(telemetry.Double(math.Inf(-1))))
			}},
			{"SampleInvalidUTF8", func(b *telemetry.Batch) { b.Samples = append(b.Samples, sampleWith(telemetry.String("a\xffb"))) }},
			{"SampleInvalidJSON", func(b *telemetry.Batch) {
				b.Samples = append(b.Samples, sampleWith(telemetry.Value{Kind: telemetry.KindJSON, Text: `{"a":`}))
			}},
			{"SampleJSONScalar", func(b *telemetry.Batch) {
				b.Samples = append(b.Samples, sampleWith(telemetry.Value{Kind: telemetry.KindJSON, Text: `42`}))
			}},
			{"SampleEmptyJSON", func(b *telemetry.Batch) {
				b.Samples = append(b.Samples, sampleWith(telemetry.Value{Kind: telemetry.KindJSON}))
			}},
			{"InvalidSampleFirst", func(b *telemetry.Batch) {
				b.Samples = append([]telemetry.Sample{sampleWith(telemetry.Double(math.NaN()))}, b.Samples...)
			}},
			{"AttributeUnknownScope", func(b *telemetry.Batch) {
				b.Attributes = append(b.Attributes, attrWith(devA, "public", "b", telemetry.Long(1)))
			}},
			{"AttributeEmptyScope", func(b *telemetry.Batch) {
				b.Attributes = append(b.Attributes, attrWith(devA, "", "b", telemetry.Long(1)))
			}},
			{"AttributeEmptyDevice", func(b *telemetry.Batch) {
				b.Attributes = append(b.Attributes, attrWith("", telemetry.ScopeServer, "b", telemetry.Long(1)))
			}},
			{"AttributeEmptyKey", func(b *telemetry.Batch) {
				b.Attributes = append(b.Attributes, attrWith(devA, telemetry.ScopeServer, "", telemetry.Long(1)))
			}},
			{"AttributeInvalidValue", func(b *telemetry.Batch) {
				b.Attributes = append(b.Attributes, attrWith(devA, telemetry.ScopeServer, "b", telemetry.Double(math.Inf(1))))
			}},
			{"StateEmptyDevice", func(b *telemetry.Batch) {
				b.States = append(b.States, telemetry.ConnState{LastConnect: 5})
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := telemetry.Batch{
					Samples:    slices.Clone(valid.Samples),
					Attributes: slices.Clone(valid.Attributes),
					States:     slices.Clone(valid.States),
				}
				tc.edit(&b)
				wantInvalid(t, s.Write(t.Context(), &b), "Write(batch with "+tc.name+")")
				checkEmpty(t, s, devA, "k", "s", "bad")
			})
		}
		// The store is still usable, and the valid records alone are written.
		b := valid
		write(t, s, &b)
		checkSamples(t, "Latest after a valid write", latest(t, s, devA), valid.Samples)
	}},
	{"LargeBatch", func(t *testing.T, s telemetry.Store) {
		const devices, keys, points = 20, 5, 60
		var b telemetry.Batch
		for p := range points {
			for d := range devices {
				for k := range keys {
					b.Samples = append(b.Samples, long(fmt.Sprintf("dev-%02d", d), fmt.Sprintf("key-%d", k), int64(1000*p), int64(d*1000+k*100+p)))
				}
			}
		}
		write(t, s, &b)
		for d := range devices {
			dev := fmt.Sprintf("dev-%02d", d)
			got := latest(t, s, dev)
			if len(got) != keys {
				t.Fatalf("Latest(%s) = %d keys, want %d", dev, len(got), keys)
			}
			for k, sm := range got {
				if want := long(dev, fmt.Sprintf("key-%d", k), 1000*(points-1), int64(d*1000+k*100+points-1)); sm != want {
					t.Fatalf("Latest(%s)[%d] = %+v, want %+v", dev, k, sm, want)
				}
			}
			if n := len(all(t, s, dev, "key-0", "key-4")); n != 2*points {
				t.Fatalf("Query(%s) = %d samples, want %d", dev, n, 2*points)
			}
		}
	}},
}

// Latest.

var latestTests = []testCase{
	{"HighestTimestampAcrossWrites", func(t *testing.T, s telemetry.Store) {
		steps := []struct {
			write telemetry.Sample
			want  telemetry.Sample
		}{
			{long(devA, "k", 100, 1), long(devA, "k", 100, 1)},
			{long(devA, "k", 50, 2), long(devA, "k", 100, 1)},  // older: not the latest
			{long(devA, "k", 100, 3), long(devA, "k", 100, 3)}, // equal: replaces
			{long(devA, "k", 200, 4), long(devA, "k", 200, 4)}, // newer
			{long(devA, "k", -5, 5), long(devA, "k", 200, 4)},
		}
		for i, st := range steps {
			writeSamples(t, s, st.write)
			checkSamples(t, fmt.Sprintf("Latest after write %d", i), latest(t, s, devA), []telemetry.Sample{st.want})
		}
		// Every sample is kept, whether or not it became the latest.
		checkSamples(t, "samples", all(t, s, devA, "k"), []telemetry.Sample{
			long(devA, "k", -5, 5), long(devA, "k", 50, 2), long(devA, "k", 100, 3), long(devA, "k", 200, 4)})
	}},
	{"HighestTimestampWithinBatch", func(t *testing.T, s telemetry.Store) {
		writeSamples(t, s, long(devA, "k", 100, 1), long(devA, "k", 300, 2), long(devA, "k", 200, 3),
			long(devA, "j", 10, 1), long(devA, "j", 10, 2))
		checkSamples(t, "Latest", latest(t, s, devA), []telemetry.Sample{long(devA, "j", 10, 2), long(devA, "k", 300, 2)})
		writeSamples(t, s, long(devA, "k", 400, 5), long(devA, "k", 400, 6), long(devA, "k", 250, 7), long(devA, "j", 5, 3))
		checkSamples(t, "Latest", latest(t, s, devA), []telemetry.Sample{long(devA, "j", 10, 2), long(devA, "k", 400, 6)})
	}},
	{"AllKeysSortedByteWise", func(t *testing.T, s telemetry.Store) {
		keys := []string{"temperature", "B", "a", "é", "_x", "a1", "Z", "a.b"}
		var samples []telemetry.Sample
		for i, k := range keys {
			samples = append(samples, long(devA, k, int64(i), int64(i)))
		}
		writeSamples(t, s, samples...)
		want := slices.Clone(keys)
		slices.Sort(want) // byte-wise
		if got := sortedKeys(latest(t, s, devA)); !slices.Equal(got, want) {
			t.Fatalf("Latest keys = %q, want %q", got, want)
		}
		if got := sortedKeys(latest(t, s, devA, "é", "a", "B")); !slices.Equal(got, []string{"B", "a", "é"}) {
			t.Fatalf("Latest(é, a, B) keys = %q, want [B a é]", got)
		}
	}},
	{"SelectedKeysLeaveOutMissing", func(t *testing.T, s telemetry.Store) {
		writeSamples(t, s, long(devA, "a", 1, 1), long(devA, "b", 2, 2), long(devA, "c", 3, 3))
		checkSamples(t, "Latest(zz, c, missing, a)", latest(t, s, devA, "zz", "c", "missing", "a"),
			[]telemetry.Sample{long(devA, "a", 1, 1), long(devA, "c", 3, 3)})
		checkSamples(t, "Latest(missing)", latest(t, s, devA, "missing"), nil)
		checkSamples(t, "Latest of a device never seen", latest(t, s, "nobody"), nil)
		checkSamples(t, "Latest of a device never seen, with keys", latest(t, s, "nobody", "a"), nil)
	}},
}

// Query.

// tenSamples writes k at ts 10, 20, … 100 with values 1…10, and one sample
// at a negative time.
func tenSamples(t *testing.T, s telemetry.Store) {
	t.Helper()
	var ss []telemetry.Sample
	for i := int64(1); i <= 10; i++ {
		ss = append(ss, long(devA, "k", 10*i, i))
	}
	ss = append(ss, long(devA, "k", -5, -1))
	writeSamples(t, s, ss...)
}

func tsOf(ss []telemetry.Sample) []int64 {
	out := make([]int64, len(ss))
	for i, s := range ss {
		out[i] = s.TS
	}
	return out
}

var queryTests = []testCase{
	{"RangeFromInclusiveToExclusive", func(t *testing.T, s telemetry.Store) {
		tenSamples(t, s)
		for _, tc := range []struct {
			from, to int64
			order    telemetry.Order
			want     []int64
		}{
			{20, 50, telemetry.Ascending, []int64{20, 30, 40}},
			{20, 50, telemetry.Descending, []int64{40, 30, 20}},
			{19, 51, telemetry.Ascending, []int64{20, 30, 40, 50}},
			{20, 21, telemetry.Ascending, []int64{20}},
			{20, 20, telemetry.Ascending, []int64{}},
			{101, 1000, telemetry.Ascending, []int64{}},
			{-10, 0, telemetry.Ascending, []int64{-5}},
			{math.MinInt64, math.MaxInt64, telemetry.Descending, []int64{100, 90, 80, 70, 60, 50, 40, 30, 20, 10, -5}},
		} {
			q := telemetry.Query{DeviceID: devA, Keys: []string{"k"}, From: tc.from, To: tc.to, Order: tc.order}
			got := query(t, s, q)
			if !slices.Equal(tsOf(got), tc.want) {
				t.Errorf("Query(%+v) timestamps = %v, want %v", q, tsOf(got), tc.want)
			}
			for _, sm := range got {
				if want := long(devA, "k", sm.TS, sm.TS/10); sm.TS > 0 && sm != want {
					t.Errorf("Query(%+v) returned %+v, want %+v", q, sm, want)
				}
			}
		}
	}},
	{"LimitPerKeyBothOrders", func(t *testing.T, s telemetry.Store) {
		tenSamples(t, s)
		q := telemetry.Query{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 1000, Limit: 3}
		if got := tsOf(query(t, s, q)); !slices.Equal(got, []int64{100, 90, 80}) {
			t.Errorf("Query(limit 3, descending) = %v, want the 3 newest [100 90 80]", got)
		}
		q.Order = telemetry.Ascending
		if got := tsOf(query(t, s, q)); !slices.Equal(got, []int64{10, 20, 30}) {
			t.Errorf("Query(limit 3, ascending) = %v, want the 3 oldest [10 20 30]", got)
		}
		q.Limit = 1
		if got := tsOf(query(t, s, q)); !slices.Equal(got, []int64{10}) {
			t.Errorf("Query(limit 1, ascending) = %v, want [10]", got)
		}
	}},
	{"DefaultAndMaxLimit", func(t *testing.T, s telemetry.Store) {
		var ss []telemetry.Sample
		for i := range int64(telemetry.DefaultLimit + 50) {
			ss = append(ss, long(devA, "k", i, i))
		}
		writeSamples(t, s, ss...)
		q := telemetry.Query{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 1 << 40}
		got := query(t, s, q)
		if len(got) != telemetry.DefaultLimit || got[0].TS != int64(telemetry.DefaultLimit+49) || got[len(got)-1].TS != 50 {
			t.Fatalf("Query(limit 0) = %d samples from %v; want the %d newest", len(got), tsOf(got)[:min(3, len(got))], telemetry.DefaultLimit)
		}
		q.Order = telemetry.Ascending
		if got := query(t, s, q); len(got) != telemetry.DefaultLimit || got[0].TS != 0 {
			t.Fatalf("Query(limit 0, ascending) = %d samples; want the %d oldest", len(got), telemetry.DefaultLimit)
		}
		q.Limit = telemetry.MaxLimit
		if got := query(t, s, q); len(got) != telemetry.DefaultLimit+50 {
			t.Fatalf("Query(limit MaxLimit) = %d samples, want all %d", len(got), telemetry.DefaultLimit+50)
		}
	}},
	{"KeysGroupedInOrderOfQuery", func(t *testing.T, s telemetry.Store) {
		var ss []telemetry.Sample
		for _, k := range []string{"a", "b", "c"} {
			for ts := int64(1); ts <= 4; ts++ {
				ss = append(ss, smp(devA, k, ts, telemetry.String(fmt.Sprintf("%s%d", k, ts))))
			}
		}
		writeSamples(t, s, ss...)
		q := telemetry.Query{DeviceID: devA, Keys: []string{"c", "a", "missing", "b"}, From: 0, To: 100, Limit: 2}
		got := query(t, s, q)
		want := []telemetry.Sample{
			smp(devA, "c", 4, telemetry.String("c4")), smp(devA, "c", 3, telemetry.String("c3")),
			smp(devA, "a", 4, telemetry.String("a4")), smp(devA, "a", 3, telemetry.String("a3")),
			smp(devA, "b", 4, telemetry.String("b4")), smp(devA, "b", 3, telemetry.String("b3")),
		}
		checkSamples(t, fmt.Sprintf("Query(%+v)", q), got, want)
		q.Order = telemetry.Ascending
		want = []telemetry.Sample{
			smp(devA, "c", 1, telemetry.String("c1")), smp(devA, "c", 2, telemetry.String("c2")),
			smp(devA, "a", 1, telemetry.String("a1")), smp(devA, "a", 2, telemetry.String("a2")),
			smp(devA, "b", 1, telemetry.String("b1")), smp(devA, "b", 2, telemetry.String("b2")),
		}
		checkSamples(t, fmt.Sprintf("Query(%+v)", q), query(t, s, q), want)
		checkSamples(t, "Query of a device never seen",
			query(t, s, telemetry.Query{DeviceID: "nobody", Keys: []string{"a"}, From: 0, To: 100}), nil)
	}},
	{"InvalidQueries", func(t *testing.T, s telemetry.Store) {
		tenSamples(t, s)
		ok := telemetry.Query{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 100}
		query(t, s, ok)
		for _, tc := range []struct {
			name string
			edit func(q *telemetry.Query)
		}{
			{"NoKeys", func(q *telemetry.Query) { q.Keys = nil }},
			{"EmptyKeys", func(q *telemetry.Query) { q.Keys = []string{} }},
			{"EmptyKey", func(q *telemetry.Query) { q.Keys = []string{"k", ""} }},
			{"EmptyDevice", func(q *telemetry.Query) { q.DeviceID = "" }},
			{"FromAfterTo", func(q *telemetry.Query) { q.From, q.To = 50, 49 }},
			{"NegativeLimit", func(q *telemetry.Query) { q.Limit = -1 }},
			{"LimitAboveMax", func(q *telemetry.Query) { q.Limit = telemetry.MaxLimit + 1 }},
			{"UnknownOrder", func(q *telemetry.Query) { q.Order = 7 }},
		} {
			q := ok
			tc.edit(&q)
			_, err := s.Query(t.Context(), q)
			wantInvalid(t, err, fmt.Sprintf("Query(%s: %+v)", tc.name, q))
		}
	}},
}

// Aggregate.

// aggData writes, for key "n" of devA, with From 1000 and Interval 100:
//
//	[1000,1100): longs 1, 5, 3
//	[1100,1200): long 2, double 0.5
//	[1200,1300): a string, a boolean, a JSON object (nothing numeric)
//	[1300,1400): nothing
//	[1400,1500): long 10, a string, double -4
//
// and longs outside [1000, 1500) that must not count.
func aggData(t *testing.T, s telemetry.Store) {
	t.Helper()
	writeSamples(t, s,
		long(devA, "n", 999, 1000),
		long(devA, "n", 1000, 1), long(devA, "n", 1050, 5), long(devA, "n", 1099, 3),
		long(devA, "n", 1100, 2), smp(devA, "n", 1150, telemetry.Double(0.5)),
		smp(devA, "n", 1200, telemetry.String("x")), smp(devA, "n", 1210, telemetry.Bool(true)), smp(devA, "n", 1220, jsonValue(t, `{"a":1}`)),
		long(devA, "n", 1400, 10), smp(devA, "n", 1450, telemetry.String("12")), smp(devA, "n", 1499, telemetry.Double(-4)),
		long(devA, "n", 1500, 1000),
		long(devB, "n", 1000, 1000), // another device
	)
}

func bucket(start int64, v telemetry.Value, count int64) telemetry.Bucket {
	return telemetry.Bucket{Key: "n", Start: start, Value: v, Count: count}
}

var aggregateTests = []testCase{
	{"Functions", func(t *testing.T, s telemetry.Store) {
		aggData(t, s)
		L, D := telemetry.Long, telemetry.Double
		for _, tc := range []struct {
			fn   telemetry.Aggregation
			want []telemetry.Bucket
		}{
			{telemetry.Min, []telemetry.Bucket{bucket(1000, L(1), 3), bucket(1100, D(0.5), 2), bucket(1400, D(-4), 2)}},
			{telemetry.Max, []telemetry.Bucket{bucket(1000, L(5), 3), bucket(1100, D(2), 2), bucket(1400, D(10), 2)}},
			{telemetry.Sum, []telemetry.Bucket{bucket(1000, L(9), 3), bucket(1100, D(2.5), 2), bucket(1400, D(6), 2)}},
			{telemetry.Avg, []telemetry.Bucket{bucket(1000, D(3), 3), bucket(1100, D(1.25), 2), bucket(1400, D(3), 2)}},
			{telemetry.Count, []telemetry.Bucket{bucket(1000, L(3), 3), bucket(1100, L(2), 2), bucket(1200, L(3), 3), bucket(1400, L(3), 3)}},
		} {
			q := telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"n"}, From: 1000, To: 1500, Interval: 100, Func: tc.fn}
			checkBuckets(t, fmt.Sprintf("Aggregate(%s)", tc.fn), aggregate(t, s, q), tc.want)
		}
	}},
	{"LongsStayExact", func(t *testing.T, s telemetry.Store) {
		// Beyond 2^53 a float64 cannot hold every integer: a store that
		// aggregates longs as doubles gets these wrong.
		const big = 1 << 53
		writeSamples(t, s, long(devA, "n", 0, big+1), long(devA, "n", 1, big+2),
			long(devA, "n", 10, math.MaxInt64-1), long(devA, "n", 11, 1),
			long(devA, "n", 20, math.MinInt64), long(devA, "n", 21, math.MaxInt64))
		L := telemetry.Long
		for _, tc := range []struct {
			fn   telemetry.Aggregation
			want []telemetry.Bucket
		}{
			{telemetry.Min, []telemetry.Bucket{bucket(0, L(big+1), 2), bucket(10, L(1), 2), bucket(20, L(math.MinInt64), 2)}},
			{telemetry.Max, []telemetry.Bucket{bucket(0, L(big+2), 2), bucket(10, L(math.MaxInt64-1), 2), bucket(20, L(math.MaxInt64), 2)}},
			{telemetry.Sum, []telemetry.Bucket{bucket(0, L(2*big+3), 2), bucket(10, L(math.MaxInt64), 2), bucket(20, L(-1), 2)}},
		} {
			q := telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"n"}, From: 0, To: 30, Interval: 10, Func: tc.fn}
			checkBuckets(t, fmt.Sprintf("Aggregate(%s)", tc.fn), aggregate(t, s, q), tc.want)
		}
	}},
	{"BucketBoundaries", func(t *testing.T, s telemetry.Store) {
		// Buckets start at From, whatever its alignment; the last one is cut
		// at To.
		writeSamples(t, s, long(devA, "n", 6, 1), long(devA, "n", 7, 1), long(devA, "n", 16, 1), long(devA, "n", 17, 1),
			long(devA, "n", 36, 1), long(devA, "n", 37, 1), long(devA, "n", 38, 1))
		L := telemetry.Long
		q := telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"n"}, From: 7, To: 37, Interval: 10, Func: telemetry.Count}
		checkBuckets(t, "Aggregate [7,37) by 10", aggregate(t, s, q),
			[]telemetry.Bucket{bucket(7, L(2), 2), bucket(17, L(1), 1), bucket(27, L(1), 1)})
		q.To = 38
		checkBuckets(t, "Aggregate [7,38) by 10", aggregate(t, s, q),
			[]telemetry.Bucket{bucket(7, L(2), 2), bucket(17, L(1), 1), bucket(27, L(1), 1), bucket(37, L(1), 1)})
		q.From, q.To, q.Interval = -20, 100, 1000
		checkBuckets(t, "Aggregate [-20,100) by 1000", aggregate(t, s, q), []telemetry.Bucket{bucket(-20, L(7), 7)})
		q.From, q.To = 7, 7
		checkBuckets(t, "Aggregate of an empty range", aggregate(t, s, q), nil)
	}},
	{"KeysInOrderOfQuery", func(t *testing.T, s telemetry.Store) {
		writeSamples(t, s, long(devA, "a", 0, 1), long(devA, "a", 15, 2), long(devA, "b", 5, 3), long(devA, "c", 25, 4))
		q := telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"c", "missing", "a", "b"}, From: 0, To: 30, Interval: 10, Func: telemetry.Sum}
		L := telemetry.Long
		checkBuckets(t, "Aggregate(c, missing, a, b)", aggregate(t, s, q), []telemetry.Bucket{
			{Key: "c", Start: 20, Value: L(4), Count: 1},
			{Key: "a", Start: 0, Value: L(1), Count: 1},
			{Key: "a", Start: 10, Value: L(2), Count: 1},
			{Key: "b", Start: 0, Value: L(3), Count: 1},
		})
		q.DeviceID = "nobody"
		checkBuckets(t, "Aggregate of a device never seen", aggregate(t, s, q), nil)
	}},
	{"InvalidQueries", func(t *testing.T, s telemetry.Store) {
		aggData(t, s)
		ok := telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"n"}, From: 0, To: 100 * telemetry.MaxBuckets, Interval: 100, Func: telemetry.Avg}
		aggregate(t, s, ok) // exactly MaxBuckets intervals
		for _, tc := range []struct {
			name string
			edit func(q *telemetry.AggregateQuery)
		}{
			{"NoKeys", func(q *telemetry.AggregateQuery) { q.Keys = nil }},
			{"EmptyKey", func(q *telemetry.AggregateQuery) { q.Keys = []string{""} }},
			{"EmptyDevice", func(q *telemetry.AggregateQuery) { q.DeviceID = "" }},
			{"FromAfterTo", func(q *telemetry.AggregateQuery) { q.From, q.To = 100, 0 }},
			{"ZeroInterval", func(q *telemetry.AggregateQuery) { q.Interval = 0 }},
			{"NegativeInterval", func(q *telemetry.AggregateQuery) { q.Interval = -100 }},
			{"TooManyBuckets", func(q *telemetry.AggregateQuery) { q.To = 100 * (telemetry.MaxBuckets + 1) }},
			{"HugeRange", func(q *telemetry.AggregateQuery) { q.From, q.To, q.Interval = math.MinInt64, math.MaxInt64, 1 }},
			{"UnknownFunc", func(q *telemetry.AggregateQuery) { q.Func = "median" }},
			{"NoFunc", func(q *telemetry.AggregateQuery) { q.Func = "" }},
		} {
			q := ok
			tc.edit(&q)
			_, err := s.Aggregate(t.Context(), q)
			wantInvalid(t, err, fmt.Sprintf("Aggregate(%s: %+v)", tc.name, q))
		}
	}},
}

// Attributes.

var attributeTests = []testCase{
	{"SetGetDelete", func(t *testing.T, s telemetry.Store) {
		ctx := t.Context()
		a1, b1 := attr("a", telemetry.Long(1), 100), attr("b", telemetry.String("x"), 101)
		setAttrs(t, s, devA, telemetry.ScopeServer, b1, a1)
		checkAttrs(t, "attributes", attrs(t, s, devA, telemetry.ScopeServer), []telemetry.Attribute{a1, b1})
		checkAttrs(t, "attributes(b, missing)", attrs(t, s, devA, telemetry.ScopeServer, "b", "missing"), []telemetry.Attribute{b1})
		checkAttrs(t, "attributes(missing)", attrs(t, s, devA, telemetry.ScopeServer, "missing"), nil)

		a2 := attr("a", jsonValue(t, `{"on":true}`), 50) // replaces, even with an older time
		setAttrs(t, s, devA, telemetry.ScopeServer, a2)
		checkAttrs(t, "attributes after replacing a", attrs(t, s, devA, telemetry.ScopeServer), []telemetry.Attribute{a2, b1})

		deleted, err := s.DeleteAttributes(ctx, devA, telemetry.ScopeServer, []string{"missing", "b", "a"})
		must(t, err, "DeleteAttributes")
		if !slices.Equal(deleted, []string{"a", "b"}) {
			t.Fatalf("DeleteAttributes = %q, want the existing keys sorted [a b]", deleted)
		}
		checkAttrs(t, "attributes after delete", attrs(t, s, devA, telemetry.ScopeServer), nil)
		deleted, err = s.DeleteAttributes(ctx, devA, telemetry.ScopeServer, []string{"a"})
		if err != nil || len(deleted) != 0 {
			t.Fatalf("DeleteAttributes of a deleted key = %q, %v; want none", deleted, err)
		}
		must(t, s.SetAttributes(ctx, devA, telemetry.ScopeServer, nil), "SetAttributes(no attributes)")
	}},
	{"ScopesAreIndependent", func(t *testing.T, s telemetry.Store) {
		for i, sc := range scopes {
			setAttrs(t, s, devA, sc, attr("k", telemetry.Long(int64(i)), 10), attr(string(sc), telemetry.Bool(true), 10))
		}
		for i, sc := range scopes {
			want := []telemetry.Attribute{attr(string(sc), telemetry.Bool(true), 10), attr("k", telemetry.Long(int64(i)), 10)}
			slices.SortFunc(want, func(a, b telemetry.Attribute) int { return strings.Compare(a.Key, b.Key) })
			checkAttrs(t, string(sc)+" attributes", attrs(t, s, devA, sc), want)
		}
		deleted, err := s.DeleteAttributes(t.Context(), devA, telemetry.ScopeShared, []string{"k", "client", "server"})
		must(t, err, "DeleteAttributes(shared)")
		if !slices.Equal(deleted, []string{"k"}) {
			t.Fatalf("DeleteAttributes(shared: k, client, server) = %q, want [k]", deleted)
		}
		checkAttrs(t, "shared attributes", attrs(t, s, devA, telemetry.ScopeShared), []telemetry.Attribute{attr("shared", telemetry.Bool(true), 10)})
		checkAttrs(t, "client attributes", attrs(t, s, devA, telemetry.ScopeClient),
			[]telemetry.Attribute{attr("client", telemetry.Bool(true), 10), attr("k", telemetry.Long(0), 10)})
		checkAttrs(t, "server attributes", attrs(t, s, devA, telemetry.ScopeServer),
			[]telemetry.Attribute{attr("k", telemetry.Long(2), 10), attr("server", telemetry.Bool(true), 10)})
	}},
	{"SortedByteWise", func(t *testing.T, s telemetry.Store) {
		keys := []string{"b", "B", "a", "é", "_", "a0", "Z"}
		var as []telemetry.Attribute
		for i, k := range keys {
			as = append(as, attr(k, telemetry.Long(int64(i)), 1))
		}
		setAttrs(t, s, devA, telemetry.ScopeClient, as...)
		want := slices.Clone(keys)
		slices.Sort(want)
		var got []string
		for _, a := range attrs(t, s, devA, telemetry.ScopeClient) {
			got = append(got, a.Key)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("attribute keys = %q, want %q", got, want)
		}
		got = got[:0]
		for _, a := range attrs(t, s, devA, telemetry.ScopeClient, "é", "b", "B") {
			got = append(got, a.Key)
		}
		if !slices.Equal(got, []string{"B", "b", "é"}) {
			t.Fatalf("attribute keys (é, b, B) = %q, want [B b é]", got)
		}
		deleted, err := s.DeleteAttributes(t.Context(), devA, telemetry.ScopeClient, []string{"é", "b", "B"})
		must(t, err, "DeleteAttributes")
		if !slices.Equal(deleted, []string{"B", "b", "é"}) {
			t.Fatalf("DeleteAttributes(é, b, B) = %q, want [B b é]", deleted)
		}
	}},
	{"BatchWritesApplyInOrder", func(t *testing.T, s telemetry.Store) {
		aw := func(scope telemetry.Scope, a telemetry.Attribute) telemetry.AttributeWrite {
			return telemetry.AttributeWrite{DeviceID: devA, Scope: scope, Attribute: a}
		}
		write(t, s, &telemetry.Batch{Attributes: []telemetry.AttributeWrite{
			aw(telemetry.ScopeShared, attr("k", telemetry.Long(1), 200)),
			aw(telemetry.ScopeClient, attr("k", telemetry.Long(9), 1)),
			aw(telemetry.ScopeShared, attr("k", telemetry.String("second"), 100)), // later in the batch: wins
			aw(telemetry.ScopeShared, attr("j", telemetry.Long(1), 1)),
		}})
		checkAttrs(t, "shared attributes", attrs(t, s, devA, telemetry.ScopeShared),
			[]telemetry.Attribute{attr("j", telemetry.Long(1), 1), attr("k", telemetry.String("second"), 100)})
		checkAttrs(t, "client attributes", attrs(t, s, devA, telemetry.ScopeClient), []telemetry.Attribute{attr("k", telemetry.Long(9), 1)})
	}},
	{"InvalidInput", func(t *testing.T, s telemetry.Store) {
		ctx := t.Context()
		setAttrs(t, s, devA, telemetry.ScopeServer, attr("keep", telemetry.Long(1), 1))
		for _, sc := range []telemetry.Scope{"", "public", "Server"} {
			wantInvalid(t, s.SetAttributes(ctx, devA, sc, []telemetry.Attribute{attr("a", telemetry.Long(1), 1)}), fmt.Sprintf("SetAttributes(scope %q)", sc))
			_, err := s.Attributes(ctx, devA, sc, nil)
			wantInvalid(t, err, fmt.Sprintf("Attributes(scope %q)", sc))
			_, err = s.DeleteAttributes(ctx, devA, sc, []string{"keep"})
			wantInvalid(t, err, fmt.Sprintf("DeleteAttributes(scope %q)", sc))
		}
		for _, a := range []telemetry.Attribute{
			attr("", telemetry.Long(1), 1),
			attr("a", telemetry.Value{}, 1),
			attr("a", telemetry.Double(math.NaN()), 1),
			attr("a", telemetry.String("\xc3"), 1),
		} {
			err := s.SetAttributes(ctx, devA, telemetry.ScopeServer, []telemetry.Attribute{attr("first", telemetry.Long(2), 2), a})
			wantInvalid(t, err, fmt.Sprintf("SetAttributes(%+v)", a))
		}
		wantInvalid(t, s.SetAttributes(ctx, "", telemetry.ScopeServer, []telemetry.Attribute{attr("a", telemetry.Long(1), 1)}), "SetAttributes(empty device)")
		checkAttrs(t, "attributes after invalid writes", attrs(t, s, devA, telemetry.ScopeServer), []telemetry.Attribute{attr("keep", telemetry.Long(1), 1)})
		for _, sc := range []telemetry.Scope{telemetry.ScopeClient, telemetry.ScopeShared} {
			checkAttrs(t, string(sc)+" attributes after invalid writes", attrs(t, s, devA, sc), nil)
		}
	}},
}

// Connection states.

var connStateTests = []testCase{
	{"TimesOnlyMoveForward", func(t *testing.T, s telemetry.Store) {
		write(t, s, &telemetry.Batch{States: []telemetry.ConnState{{DeviceID: devA, LastConnect: 100, LastDisconnect: 50, LastActivity: 200}}})
		checkStates(t, "ConnStates", connStates(t, s, devA), telemetry.ConnState{DeviceID: devA, LastConnect: 100, LastDisconnect: 50, LastActivity: 200})
		write(t, s, &telemetry.Batch{States: []telemetry.ConnState{{DeviceID: devA, LastConnect: 90, LastDisconnect: 150}}})
		checkStates(t, "ConnStates", connStates(t, s, devA), telemetry.ConnState{DeviceID: devA, LastConnect: 100, LastDisconnect: 150, LastActivity: 200})
		// Within one batch too.
		write(t, s, &telemetry.Batch{States: []telemetry.ConnState{
			{DeviceID: devA, LastActivity: 500},
			{DeviceID: devA, LastConnect: 400, LastActivity: 300},
			{DeviceID: devB, LastDisconnect: 7},
		}})
		checkStates(t, "ConnStates", connStates(t, s, devA, devB),
			telemetry.ConnState{DeviceID: devA, LastConnect: 400, LastDisconnect: 150, LastActivity: 500},
			telemetry.ConnState{DeviceID: devB, LastDisconnect: 7})
	}},
	{"DevicesNeverSeenAreAbsent", func(t *testing.T, s telemetry.Store) {
		write(t, s, &telemetry.Batch{States: []telemetry.ConnState{{DeviceID: devA, LastConnect: 1}}})
		checkStates(t, "ConnStates(a, nobody)", connStates(t, s, "nobody", devA), telemetry.ConnState{DeviceID: devA, LastConnect: 1})
		checkStates(t, "ConnStates(nobody)", connStates(t, s, "nobody"))
		checkStates(t, "ConnStates()", connStates(t, s))
		// Telemetry and attributes are no connection state.
		writeSamples(t, s, long(devB, "k", 1, 1))
		setAttrs(t, s, devB, telemetry.ScopeClient, attr("k", telemetry.Long(1), 1))
		checkStates(t, "ConnStates(b)", connStates(t, s, devB))
	}},
	{"ManyDevices", func(t *testing.T, s telemetry.Store) {
		var b telemetry.Batch
		var ids []string
		for i := range 1200 {
			id := fmt.Sprintf("dev-%04d", i)
			ids = append(ids, id)
			if i%2 == 0 {
				b.States = append(b.States, telemetry.ConnState{DeviceID: id, LastActivity: int64(i + 1)})
			}
		}
		write(t, s, &b)
		got := connStates(t, s, ids...)
		if len(got) != 600 {
			t.Fatalf("ConnStates(1200 devices) = %d states, want 600", len(got))
		}
		for i, id := range ids {
			if cs, ok := got[id]; ok != (i%2 == 0) || (ok && cs != telemetry.ConnState{DeviceID: id, LastActivity: int64(i + 1)}) {
				t.Fatalf("ConnStates[%s] = %+v, %v", id, cs, ok)
			}
		}
	}},
}

// DeleteBefore.

func deleteBefore(t *testing.T, s telemetry.Store, cutoff int64, max int) int64 {
	t.Helper()
	n, err := s.DeleteBefore(t.Context(), cutoff, max)
	must(t, err, fmt.Sprintf("DeleteBefore(%d, %d)", cutoff, max))
	return n
}

var deleteBeforeTests = []testCase{
	{"DeletesOnlyOlderSamples", func(t *testing.T, s telemetry.Store) {
		writeSamples(t, s, long(devA, "k", 10, 1), long(devA, "k", 20, 2), long(devA, "k", 30, 3), long(devA, "k", 40, 4),
			long(devA, "j", 5, 5), long(devA, "j", 25, 6), long(devB, "k", 15, 7), long(devB, "k", -100, 8))
		if n := deleteBefore(t, s, 25, 1000); n != 5 {
			t.Fatalf("DeleteBefore(25) = %d, want 5", n)
		}
		checkSamples(t, "samples of a", all(t, s, devA, "j", "k"), []telemetry.Sample{
			long(devA, "j", 25, 6), long(devA, "k", 30, 3), long(devA, "k", 40, 4)})
		checkSamples(t, "samples of b", all(t, s, devB, "k"), nil)
		if n := deleteBefore(t, s, 25, 1000); n != 0 {
			t.Fatalf("DeleteBefore(25) again = %d, want 0", n)
		}
	}},
	{"RespectsMax", func(t *testing.T, s telemetry.Store) {
		var ss []telemetry.Sample
		for i := range int64(10) {
			ss = append(ss, long(devA, "k", i, i), long(devA, "j", 100+i, i), long(devB, "k", 200+i, i))
		}
		ss = append(ss, long(devA, "k", 1000, 1), long(devB, "k", 1000, 1))
		writeSamples(t, s, ss...)
		var steps []int64
		for range 20 {
			n := deleteBefore(t, s, 500, 7)
			steps = append(steps, n)
			if n < 7 {
				break
			}
		}
		if !slices.Equal(steps, []int64{7, 7, 7, 7, 2}) {
			t.Fatalf("DeleteBefore(500, 7) until fewer than 7 = %v, want [7 7 7 7 2]", steps)
		}
		checkSamples(t, "samples of a", all(t, s, devA, "j", "k"), []telemetry.Sample{long(devA, "k", 1000, 1)})
		checkSamples(t, "samples of b", all(t, s, devB, "k"), []telemetry.Sample{long(devB, "k", 1000, 1)})
	}},
	{"KeepsLatestAttributesAndStates", func(t *testing.T, s telemetry.Store) {
		write(t, s, &telemetry.Batch{
			Samples:    []telemetry.Sample{long(devA, "k", 10, 1), long(devA, "k", 20, 2), smp(devA, "s", 5, telemetry.String("old"))},
			Attributes: []telemetry.AttributeWrite{{DeviceID: devA, Scope: telemetry.ScopeClient, Attribute: attr("a", telemetry.Long(1), 1)}},
			States:     []telemetry.ConnState{{DeviceID: devA, LastConnect: 1, LastDisconnect: 2, LastActivity: 3}},
		})
		if n := deleteBefore(t, s, 1000, 100); n != 3 {
			t.Fatalf("DeleteBefore(1000) = %d, want 3", n)
		}
		checkSamples(t, "samples", all(t, s, devA, "k", "s"), nil)
		checkSamples(t, "Latest after retention", latest(t, s, devA),
			[]telemetry.Sample{long(devA, "k", 20, 2), smp(devA, "s", 5, telemetry.String("old"))})
		checkAttrs(t, "attributes after retention", attrs(t, s, devA, telemetry.ScopeClient), []telemetry.Attribute{attr("a", telemetry.Long(1), 1)})
		checkStates(t, "ConnStates after retention", connStates(t, s, devA),
			telemetry.ConnState{DeviceID: devA, LastConnect: 1, LastDisconnect: 2, LastActivity: 3})
	}},
	{"FindsBackfilledSamples", func(t *testing.T, s telemetry.Store) {
		// Samples older than those already stored, in later writes, must be
		// found too (a store may track each series' oldest sample).
		writeSamples(t, s, long(devA, "k", 100, 1))
		writeSamples(t, s, long(devA, "k", 5, 2))
		if n := deleteBefore(t, s, 50, 100); n != 1 {
			t.Fatalf("DeleteBefore(50) after a backfill = %d, want 1", n)
		}
		checkSamples(t, "samples", all(t, s, devA, "k"), []telemetry.Sample{long(devA, "k", 100, 1)})
		if n := deleteBefore(t, s, 1000, 100); n != 1 {
			t.Fatalf("DeleteBefore(1000) = %d, want 1", n)
		}
		writeSamples(t, s, long(devA, "k", 7, 3))
		writeSamples(t, s, long(devA, "k", 3, 4), long(devA, "k", 2000, 5))
		if n := deleteBefore(t, s, 50, 100); n != 2 {
			t.Fatalf("DeleteBefore(50) of a series emptied before = %d, want 2", n)
		}
		checkSamples(t, "samples", all(t, s, devA, "k"), []telemetry.Sample{long(devA, "k", 2000, 5)})
		checkSamples(t, "Latest", latest(t, s, devA), []telemetry.Sample{long(devA, "k", 2000, 5)})
	}},
	{"InvalidMax", func(t *testing.T, s telemetry.Store) {
		writeSamples(t, s, long(devA, "k", 1, 1))
		for _, max := range []int{0, -1} {
			_, err := s.DeleteBefore(t.Context(), 100, max)
			wantInvalid(t, err, fmt.Sprintf("DeleteBefore(100, %d)", max))
		}
		checkSamples(t, "samples", all(t, s, devA, "k"), []telemetry.Sample{long(devA, "k", 1, 1)})
	}},
}

// DeleteDevice.

// fullDevice writes samples, attributes in every scope and a connection
// state of device.
func fullDevice(t *testing.T, s telemetry.Store, device string) {
	t.Helper()
	b := telemetry.Batch{
		Samples: []telemetry.Sample{long(device, "k", 10, 1), long(device, "k", 20, 2), smp(device, "s", 10, telemetry.String(device))},
		States:  []telemetry.ConnState{{DeviceID: device, LastConnect: 1, LastActivity: 2}},
	}
	for _, sc := range scopes {
		b.Attributes = append(b.Attributes, telemetry.AttributeWrite{DeviceID: device, Scope: sc, Attribute: attr("a", telemetry.String(device), 1)})
	}
	write(t, s, &b)
}

func checkFullDevice(t *testing.T, s telemetry.Store, device string) {
	t.Helper()
	checkSamples(t, "samples of "+device, all(t, s, device, "k", "s"), []telemetry.Sample{
		long(device, "k", 10, 1), long(device, "k", 20, 2), smp(device, "s", 10, telemetry.String(device))})
	checkSamples(t, "Latest of "+device, latest(t, s, device), []telemetry.Sample{
		long(device, "k", 20, 2), smp(device, "s", 10, telemetry.String(device))})
	for _, sc := range scopes {
		checkAttrs(t, fmt.Sprintf("%s attributes of %s", sc, device), attrs(t, s, device, sc),
			[]telemetry.Attribute{attr("a", telemetry.String(device), 1)})
	}
	checkStates(t, "ConnStates of "+device, connStates(t, s, device), telemetry.ConnState{DeviceID: device, LastConnect: 1, LastActivity: 2})
}

var deleteDeviceTests = []testCase{
	{"RemovesEverythingOfOneDevice", func(t *testing.T, s telemetry.Store) {
		fullDevice(t, s, devA)
		fullDevice(t, s, devB)
		must(t, s.DeleteDevice(t.Context(), devA), "DeleteDevice")
		checkEmpty(t, s, devA, "k", "s")
		bs := aggregate(t, s, telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 100, Interval: 10, Func: telemetry.Count})
		checkBuckets(t, "Aggregate of a deleted device", bs, nil)
		checkFullDevice(t, s, devB)
		if n := deleteBefore(t, s, 1000, 100); n != 3 {
			t.Fatalf("DeleteBefore after DeleteDevice = %d, want the other device's 3 samples", n)
		}
	}},
	{"DeviceStartsAfresh", func(t *testing.T, s telemetry.Store) {
		fullDevice(t, s, devA)
		must(t, s.DeleteDevice(t.Context(), devA), "DeleteDevice")
		// Older than the deleted latest value, and still the latest now.
		writeSamples(t, s, long(devA, "k", 5, 9))
		checkSamples(t, "samples", all(t, s, devA, "k", "s"), []telemetry.Sample{long(devA, "k", 5, 9)})
		checkSamples(t, "Latest", latest(t, s, devA), []telemetry.Sample{long(devA, "k", 5, 9)})
		if n := deleteBefore(t, s, 1000, 100); n != 1 {
			t.Fatalf("DeleteBefore after DeleteDevice and a new write = %d, want 1", n)
		}
	}},
	{"InvalidDevice", func(t *testing.T, s telemetry.Store) {
		fullDevice(t, s, devA)
		wantInvalid(t, s.DeleteDevice(t.Context(), ""), `DeleteDevice("")`)
		checkFullDevice(t, s, devA)
	}},
}

// Lifecycle: isolation, cancellation, Close, concurrency.

var lifecycleTests = []testCase{
	{"DeviceIsolation", func(t *testing.T, s telemetry.Store) {
		// Device ids that are prefixes of one another, and keys shared.
		devs := []string{"dev", "dev1", "dev%", "Dev"}
		for i, d := range devs {
			write(t, s, &telemetry.Batch{
				Samples:    []telemetry.Sample{long(d, "k", 10, int64(i)), long(d, "k", int64(20+i), int64(i))},
				Attributes: []telemetry.AttributeWrite{{DeviceID: d, Scope: telemetry.ScopeShared, Attribute: attr("a", telemetry.Long(int64(i)), 1)}},
				States:     []telemetry.ConnState{{DeviceID: d, LastConnect: int64(i + 1)}},
			})
		}
		for i, d := range devs {
			checkSamples(t, "samples of "+d, all(t, s, d, "k"), []telemetry.Sample{long(d, "k", 10, int64(i)), long(d, "k", int64(20+i), int64(i))})
			checkSamples(t, "Latest of "+d, latest(t, s, d), []telemetry.Sample{long(d, "k", int64(20+i), int64(i))})
			bs := aggregate(t, s, telemetry.AggregateQuery{DeviceID: d, Keys: []string{"k"}, From: 0, To: 100, Interval: 100, Func: telemetry.Sum})
			checkBuckets(t, "Aggregate of "+d, bs, []telemetry.Bucket{{Key: "k", Start: 0, Value: telemetry.Long(2 * int64(i)), Count: 2}})
			checkAttrs(t, "attributes of "+d, attrs(t, s, d, telemetry.ScopeShared), []telemetry.Attribute{attr("a", telemetry.Long(int64(i)), 1)})
			checkStates(t, "ConnStates of "+d, connStates(t, s, d), telemetry.ConnState{DeviceID: d, LastConnect: int64(i + 1)})
		}
		checkEmpty(t, s, "de", "k")
	}},
	{"CancelledContextChangesNothing", func(t *testing.T, s telemetry.Store) {
		fullDevice(t, s, devA)
		ctx := cancelled(t.Context())
		wantCanceled := func(err error, call string) {
			t.Helper()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s with a cancelled context: err = %v, want context.Canceled", call, err)
			}
		}
		wantCanceled(s.Write(ctx, &telemetry.Batch{
			Samples:    []telemetry.Sample{long(devA, "k", 30, 3), long(devB, "k", 1, 1)},
			Attributes: []telemetry.AttributeWrite{{DeviceID: devA, Scope: telemetry.ScopeClient, Attribute: attr("b", telemetry.Long(1), 1)}},
			States:     []telemetry.ConnState{{DeviceID: devA, LastConnect: 100}},
		}), "Write")
		wantCanceled(s.SetAttributes(ctx, devA, telemetry.ScopeServer, []telemetry.Attribute{attr("a", telemetry.Long(5), 5)}), "SetAttributes")
		_, err := s.DeleteAttributes(ctx, devA, telemetry.ScopeServer, []string{"a"})
		wantCanceled(err, "DeleteAttributes")
		_, err = s.DeleteBefore(ctx, 1000, 100)
		wantCanceled(err, "DeleteBefore")
		wantCanceled(s.DeleteDevice(ctx, devA), "DeleteDevice")
		_, err = s.Latest(ctx, devA, nil)
		wantCanceled(err, "Latest")
		_, err = s.Query(ctx, telemetry.Query{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 100})
		wantCanceled(err, "Query")
		_, err = s.Aggregate(ctx, telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 100, Interval: 10, Func: telemetry.Count})
		wantCanceled(err, "Aggregate")
		_, err = s.Attributes(ctx, devA, telemetry.ScopeServer, nil)
		wantCanceled(err, "Attributes")
		_, err = s.ConnStates(ctx, []string{devA})
		wantCanceled(err, "ConnStates")
		checkFullDevice(t, s, devA)
		checkEmpty(t, s, devB, "k")
	}},
	{"ClosedStoreFails", func(t *testing.T, s telemetry.Store) {
		ctx := t.Context()
		fullDevice(t, s, devA)
		must(t, s.Close(), "Close")
		wantClosed := func(err error, call string) {
			t.Helper()
			if !errors.Is(err, telemetry.ErrClosed) {
				t.Errorf("%s after Close: err = %v, want ErrClosed", call, err)
			}
		}
		wantClosed(s.Ping(ctx), "Ping")
		wantClosed(s.Write(ctx, &telemetry.Batch{Samples: []telemetry.Sample{long(devA, "k", 1, 1)}}), "Write")
		wantClosed(s.SetAttributes(ctx, devA, telemetry.ScopeServer, []telemetry.Attribute{attr("a", telemetry.Long(5), 5)}), "SetAttributes")
		_, err := s.DeleteAttributes(ctx, devA, telemetry.ScopeServer, []string{"a"})
		wantClosed(err, "DeleteAttributes")
		_, err = s.DeleteBefore(ctx, 1000, 100)
		wantClosed(err, "DeleteBefore")
		wantClosed(s.DeleteDevice(ctx, devA), "DeleteDevice")
		_, err = s.Latest(ctx, devA, nil)
		wantClosed(err, "Latest")
		_, err = s.Query(ctx, telemetry.Query{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 100})
		wantClosed(err, "Query")
		_, err = s.Aggregate(ctx, telemetry.AggregateQuery{DeviceID: devA, Keys: []string{"k"}, From: 0, To: 100, Interval: 10, Func: telemetry.Count})
		wantClosed(err, "Aggregate")
		_, err = s.Attributes(ctx, devA, telemetry.ScopeServer, nil)
		wantClosed(err, "Attributes")
		_, err = s.ConnStates(ctx, []string{devA})
		wantClosed(err, "ConnStates")
		s.Close() // a second Close must not panic; its result is the implementation's choice
	}},
	{"ConcurrentWritersAndReaders", func(t *testing.T, s telemetry.Store) {
		const writers, batches, perBatch = 8, 10, 50
		var wg sync.WaitGroup
		done := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				dev := fmt.Sprintf("dev-%d", w)
				for b := range batches {
					var batch telemetry.Batch
					for i := range perBatch {
						ts := int64(b*perBatch + i)
						batch.Samples = append(batch.Samples, long(dev, "k", ts, ts))
					}
					batch.States = []telemetry.ConnState{{DeviceID: dev, LastActivity: int64(b)}}
					batch.Attributes = []telemetry.AttributeWrite{{DeviceID: dev, Scope: telemetry.ScopeClient, Attribute: attr("b", telemetry.Long(int64(b)), 1)}}
					if err := s.Write(t.Context(), &batch); err != nil {
						t.Errorf("Write(%s, batch %d): %v", dev, b, err)
						return
					}
				}
			})
		}
		var readers sync.WaitGroup
		for r := range 4 {
			readers.Go(func() {
				dev := fmt.Sprintf("dev-%d", r)
				for {
					select {
					case <-done:
						return
					default:
					}
					got, err := s.Query(t.Context(), telemetry.Query{DeviceID: dev, Keys: []string{"k"}, From: 0, To: 1 << 40, Limit: telemetry.MaxLimit})
					if err != nil {
						t.Errorf("Query(%s) during writes: %v", dev, err)
						return
					}
					// Batches are atomic: a reader sees whole batches only.
					if len(got)%perBatch != 0 {
						t.Errorf("Query(%s) during writes saw %d samples, not a whole number of batches", dev, len(got))
						return
					}
					if _, err := s.Latest(t.Context(), dev, nil); err != nil {
						t.Errorf("Latest(%s) during writes: %v", dev, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(done)
		readers.Wait()
		for w := range writers {
			dev := fmt.Sprintf("dev-%d", w)
			if n := len(all(t, s, dev, "k")); n != batches*perBatch {
				t.Errorf("%s has %d samples, want %d", dev, n, batches*perBatch)
			}
			last := int64(batches*perBatch - 1)
			checkSamples(t, "Latest of "+dev, latest(t, s, dev), []telemetry.Sample{long(dev, "k", last, last)})
			checkStates(t, "ConnStates of "+dev, connStates(t, s, dev), telemetry.ConnState{DeviceID: dev, LastActivity: batches - 1})
		}
	}},
}
