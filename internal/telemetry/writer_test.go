package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/store/sqlite"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// faultyStore is a real SQLite telemetry store whose Write can be made to
// fail, to play a full disk or a locked database.
type faultyStore struct {
	telemetry.Store
	failNext atomic.Int32 // Writes left to fail
	failWith error
	writes   atomic.Int32
	// hold, when set, keeps a failing Write waiting until it is closed,
	// so that a test can add records while a commit is in flight.
	hold chan struct{}
	// gate, when set, keeps every Write waiting until it is closed.
	gate    chan struct{}
	largest atomic.Int32 // the most records one Write got
}

func (f *faultyStore) Write(ctx context.Context, b *telemetry.Batch) error {
	f.writes.Add(1)
	if n := int32(b.Len()); n > f.largest.Load() {
		f.largest.Store(n) // Writes are never concurrent
	}
	if f.gate != nil {
		<-f.gate
	}
	if f.failNext.Add(-1) >= 0 {
		if f.hold != nil {
			<-f.hold
		}
		return f.failWith
	}
	return f.Store.Write(ctx, b)
}

func newStore(t *testing.T) *faultyStore {
	t.Helper()
	st, err := sqlite.OpenTelemetry(context.Background(), filepath.Join(t.TempDir(), "telemetry.db"), sqlite.TelemetryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &faultyStore{Store: st, failWith: errors.New("disk full")}
}

func sample(dev, key string, ts int64, v int64) telemetry.Sample {
	return telemetry.Sample{DeviceID: dev, Key: key, TS: ts, Value: telemetry.Long(v)}
}

func latestLong(t *testing.T, st telemetry.Store, dev, key string) (int64, bool) {
	t.Helper()
	got, err := st.Latest(context.Background(), dev, []string{key})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		return 0, false
	}
	return got[0].Value.Long, true
}

// TestWriterBatchesWithinTheWindow: what is added during one window is
// committed together, and Flush makes it durable at once.
func TestWriterBatchesWithinTheWindow(t *testing.T) {
	st := newStore(t)
	w := telemetry.NewWriter(telemetry.WriterOptions{Store: st, Interval: time.Hour})
	t.Cleanup(func() { w.Close(context.Background()) })
	for i := range 100 {
		if err := w.AddSamples(context.Background(), []telemetry.Sample{sample("d", "k", int64(i+1), int64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := latestLong(t, st, "d", "k"); ok {
		t.Fatal("stored before the window ended")
	}
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v, _ := latestLong(t, st, "d", "k"); v != 99 {
		t.Errorf("latest %d, want 99", v)
	}
	if w.Commits() != 1 || w.Committed() != 100 || w.Pending() != 0 {
		t.Errorf("commits %d, committed %d, pending %d; want 1, 100, 0", w.Commits(), w.Committed(), w.Pending())
	}
}

// TestWriterCommitsEveryInterval: without Flush, a window's values are
// stored by the end of the next one.
func TestWriterCommitsEveryInterval(t *testing.T) {
	st := newStore(t)
	w := telemetry.NewWriter(telemetry.WriterOptions{Store: st, Interval: 20 * time.Millisecond})
	t.Cleanup(func() { w.Close(context.Background()) })
	w.AddSamples(context.Background(), []telemetry.Sample{sample("d", "k", 1, 7)})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v, ok := latestLong(t, st, "d", "k"); ok && v == 7 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("not committed within 5s with a 20ms window")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWriterMaxBatchCommitsEarly: reaching MaxBatch starts a commit before
// the window ends.
func TestWriterMaxBatchCommitsEarly(t *testing.T) {
	st := newStore(t)
	w := telemetry.NewWriter(telemetry.WriterOptions{Store: st, Interval: time.Hour, MaxBatch: 10})
	t.Cleanup(func() { w.Close(context.Background()) })
	batch := make([]telemetry.Sample, 10)
	for i := range batch {
		batch[i] = sample("d", fmt.Sprint("k", i), 1, 1)
	}
	w.AddSamples(context.Background(), batch)
	deadline := time.Now().Add(5 * time.Second)
	for w.Commits() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a full batch was not committed before the window ended")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWriterRetriesAFailedCommit: a failing store keeps the values (in
// order, before the ones that came later) and commits them once it works.
func TestWriterRetriesAFailedCommit(t *testing.T) {
	st := newStore(t)
	st.failNext.Store(2)
	st.hold = make(chan struct{})
	w := telemetry.NewWriter(telemetry.WriterOptions{Store: st, Interval: 10 * time.Millisecond})
	t.Cleanup(func() { w.Close(context.Background()) })
	w.AddAttributes(context.Background(), []telemetry.AttributeWrite{{DeviceID: "d", Scope: telemetry.ScopeClient, Attribute: telemetry.Attribute{Key: "fw", Value: telemetry.String("1"), UpdatedAt: 1}}})
	for st.writes.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	w.AddAttributes(context.Background(), []telemetry.AttributeWrite{{DeviceID: "d", Scope: telemetry.ScopeClient, Attribute: telemetry.Attribute{Key: "fw", Value: telemetry.String("2"), UpdatedAt: 2}}})
	w.Touch(telemetry.ConnState{DeviceID: "d", LastActivity: 5})
	close(st.hold) // the first commit fails now, with fw=2 queued behind it
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := st.Attributes(t.Context(), "d", telemetry.ScopeClient, nil)
	if err != nil || len(got) != 1 || got[0].Value.Text != "2" {
		t.Errorf("after retries: %+v %v; want fw=2 (the later write wins)", got, err)
	}
	states, _ := st.ConnStates(t.Context(), []string{"d"})
	if states["d"].LastActivity != 5 {
		t.Errorf("connection state %+v", states["d"])
	}
	if w.Failures() != 2 || w.Err() != "" {
		t.Errorf("failures %d, last error %q; want 2 and none", w.Failures(), w.Err())
	}
}

// TestWriterOverloaded: when the store fails, Add waits for room at most
// MaxWait, then refuses once MaxPending records wait, and accepts again
// once they are stored.
func TestWriterOverloaded(t *testing.T) {
	st := newStore(t)
	st.failNext.Store(1 << 30)
	w := telemetry.NewWriter(telemetry.WriterOptions{Store: st, Interval: 5 * time.Millisecond, MaxBatch: 10, MaxPending: 20, MaxWait: 20 * time.Millisecond})
	t.Cleanup(func() { w.Close(context.Background()) })
	ten := make([]telemetry.Sample, 10)
	for i := range ten {
		ten[i] = sample("d", fmt.Sprint("k", i), 1, 1)
	}
	for range 2 {
		if err := w.AddSamples(context.Background(), ten); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AddSamples(context.Background(), ten[:1]); !errors.Is(err, telemetry.ErrOverloaded) {
		t.Fatalf("21st record: %v, want ErrOverloaded", err)
	}
	if w.Waits() != 1 {
		t.Errorf("%d Adds waited for room, want 1", w.Waits())
	}
	w.Touch(telemetry.ConnState{DeviceID: "d", LastConnect: 1}) // never refused
	st.failNext.Store(0)
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := w.AddSamples(context.Background(), ten[:1]); err != nil {
		t.Errorf("after the store recovered: %v", err)
	}
}

// gatedWriter is a Writer over a store whose Writes wait until release is
// called.
func gatedWriter(t *testing.T, o telemetry.WriterOptions) (w *telemetry.Writer, st *faultyStore, release func()) {
	t.Helper()
	st = newStore(t)
	st.gate = make(chan struct{})
	o.Store = st
	w = telemetry.NewWriter(o)
	release = sync.OnceFunc(func() { close(st.gate) })
	t.Cleanup(func() {
		release()
		w.Close(context.Background())
	})
	return w, st, release
}

// addSeries adds n single-sample messages of one device and key,
// timestamps from 1.
func addSeries(t *testing.T, w *telemetry.Writer, dev string, n int) {
	t.Helper()
	for i := range n {
		if err := w.AddSamples(t.Context(), []telemetry.Sample{sample(dev, "k", int64(i+1), int64(i+1))}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriterBackPressure: past SoftPending records, Add waits until a
// commit makes room instead of refusing; a cancelled wait gives up
// waiting, and the record is taken when under MaxPending.
func TestWriterBackPressure(t *testing.T) {
	w, st, release := gatedWriter(t, telemetry.WriterOptions{Interval: time.Hour, MaxBatch: 10, SoftPending: 20, MaxWait: time.Minute})
	addSeries(t, w, "a", 20) // two full batches: the first is being written
	added := make(chan error, 1)
	go func() { added <- w.AddSamples(context.Background(), []telemetry.Sample{sample("b", "k", 1, 1)}) }()
	select {
	case err := <-added:
		t.Fatalf("Add past SoftPending returned at once (%v), want it to wait", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-added; err != nil {
		t.Fatalf("Add after the store caught up: %v", err)
	}
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if v, _ := latestLong(t, st, "b", "k"); v != 1 {
		t.Errorf("the waiting record was not stored")
	}

	w2, _, _ := gatedWriter(t, telemetry.WriterOptions{Interval: time.Hour, MaxBatch: 10, SoftPending: 20, MaxWait: time.Minute})
	addSeries(t, w2, "a", 20)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := w2.AddSamples(ctx, []telemetry.Sample{sample("b", "k", 1, 1)}); err != nil {
		t.Errorf("Add whose wait was cancelled under MaxPending: %v, want it taken", err)
	}
	if w2.Pending() != 21 || w2.Waits() != 1 {
		t.Errorf("pending %d, waits %d; want 21 and 1", w2.Pending(), w2.Waits())
	}
}

// TestWriterCapsBatches: however much waits, one commit holds at most
// MaxBatch records, and all of them are committed in the end.
func TestWriterCapsBatches(t *testing.T) {
	w, st, release := gatedWriter(t, telemetry.WriterOptions{Interval: time.Hour, MaxBatch: 10, MaxWait: time.Minute})
	addSeries(t, w, "a", 35)
	release()
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := st.largest.Load(); n > 10 {
		t.Errorf("a commit of %d records, MaxBatch is 10", n)
	}
	if w.Commits() < 4 || w.Committed() != 35 {
		t.Errorf("%d commits of %d records, want ≥ 4 of 35", w.Commits(), w.Committed())
	}
	if v, _ := latestLong(t, st, "a", "k"); v != 35 {
		t.Errorf("latest %d, want 35", v)
	}
}

// TestWriterForgetDropsQueuedBatches: Forget removes a device's records
// from every batch not yet being written, and the backlog count follows.
func TestWriterForgetDropsQueuedBatches(t *testing.T) {
	w, st, release := gatedWriter(t, telemetry.WriterOptions{Interval: time.Hour, MaxBatch: 10, MaxWait: time.Minute})
	addSeries(t, w, "x", 10) // sealed, and being written
	for i := range 12 {
		w.AddSamples(t.Context(), []telemetry.Sample{sample("a", "k", int64(i+1), 1), sample("b", "k", int64(i+1), 2)})
	}
	w.Touch(telemetry.ConnState{DeviceID: "a", LastConnect: 5})
	w.Forget("a")
	if got := w.Pending(); got != 10+12 {
		t.Errorf("pending %d after Forget, want 22", got)
	}
	release()
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := latestLong(t, st, "a", "k"); ok {
		t.Error("a forgotten device's queued samples were stored")
	}
	if v, _ := latestLong(t, st, "b", "k"); v != 2 {
		t.Error("another device's samples were lost")
	}
	if v, _ := latestLong(t, st, "x", "k"); v != 10 {
		t.Error("the batch being written was not stored")
	}
}

// TestWriterDropsAnInvalidBatch: a batch the store calls invalid cannot be
// mended by retrying; it is dropped, counted, and does not block the rest.
func TestWriterDropsAnInvalidBatch(t *testing.T) {
	st := newStore(t)
	w := telemetry.NewWriter(telemetry.WriterOptions{Store: st, Interval: time.Hour})
	t.Cleanup(func() { w.Close(context.Background()) })
	w.AddSamples(context.Background(), []telemetry.Sample{{DeviceID: "d", Key: "", TS: 1, Value: telemetry.Long(1)}})
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if w.Failures() != 1 || w.Err() == "" {
		t.Errorf("failures %d, err %q", w.Failures(), w.Err())
	}
	w.AddSamples(context.Background(), []telemetry.Sample{sample("d", "k", 1, 3)})
	w.Flush(t.Context())
	if v, _ := latestLong(t, st, "d", "k"); v != 3 {
		t.Errorf("the next batch was not stored")
	}
}

// TestWriterCloseCommitsTheRest: Close stores what is queued, and later
// Adds fail.
func TestWriterCloseCommitsTheRest(t *testing.T) {
	st := newStore(t)
	w := telemetry.NewWriter(telemetry.WriterOptions{Store: st, Interval: time.Hour})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				w.AddSamples(context.Background(), []telemetry.Sample{sample(fmt.Sprint("d", g), "k", int64(i+1), int64(i))})
			}
		})
	}
	wg.Wait()
	if err := w.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for g := range 8 {
		if v, _ := latestLong(t, st, fmt.Sprint("d", g), "k"); v != 99 {
			t.Errorf("device %d: latest %d after Close, want 99", g, v)
		}
	}
	if err := w.AddSamples(context.Background(), []telemetry.Sample{sample("d", "k", 1, 1)}); !errors.Is(err, telemetry.ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
	if err := w.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestValueRefusesInvalidUTF8InJSON: encoding/json does not check the
// UTF-8 of strings inside a JSON text; a stored JSON value must be valid.
func TestValueRefusesInvalidUTF8InJSON(t *testing.T) {
	if _, err := telemetry.JSON([]byte("{\"a\":\"\xff\"}")); err == nil {
		t.Error("JSON accepted invalid UTF-8")
	}
	if err := (telemetry.Value{Kind: telemetry.KindJSON, Text: "[\"\xff\"]"}).Valid(); err == nil {
		t.Error("Valid accepted invalid UTF-8")
	}
	if _, err := telemetry.ParseJSON([]byte(`{"a":"é"}`)); err != nil {
		t.Errorf("valid UTF-8 refused: %v", err)
	}
}
