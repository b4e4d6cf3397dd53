package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Batching.
//
// Devices send telemetry every few seconds, thousands of them: one durable
// commit per message would cap ingestion at a few hundred messages per
// second (one fsync each). The Writer collects what arrives during one
// window (WriterOptions.Interval) and writes it as one Batch, in one
// transaction. A message is acknowledged once it is in the Writer's memory,
// so a crash loses what arrived since the last commit: at most one window,
// plus the batch being written at that moment. Operator writes do not go
// through the Writer; they are durable when their call returns.

// Writer defaults.
const (
	DefaultInterval = 500 * time.Millisecond
	// DefaultMaxBatch starts a commit before the window ends once this
	// many records are waiting, so that one transaction stays short.
	DefaultMaxBatch = 20_000
	// DefaultMaxPending is how many records may wait (being written or
	// queued) before Add refuses more with ErrOverloaded: about ten
	// seconds of ingestion at 100,000 values/s, a few tens of MiB.
	DefaultMaxPending = 1_000_000
)

// ErrOverloaded: the store does not keep up (or is failing), and the
// Writer holds as much as it may; the caller should refuse the message so
// that the device retries later.
var ErrOverloaded = errors.New("telemetry ingestion overloaded: too many values waiting to be stored")

// WriterOptions configures a Writer. Store is required.
type WriterOptions struct {
	Store Store
	// Interval is the batch window (DefaultInterval when 0): the most
	// telemetry a crash can lose.
	Interval time.Duration
	// MaxBatch triggers a commit before the window ends (DefaultMaxBatch
	// when 0).
	MaxBatch int
	// MaxPending bounds the records waiting (DefaultMaxPending when 0).
	MaxPending int
	Logger     *slog.Logger
}

// Writer batches ingestion into durable commits. Its methods are safe for
// concurrent use.
type Writer struct {
	store    Store
	log      *slog.Logger
	interval time.Duration
	maxBatch int
	maxPend  int

	mu       sync.Mutex
	cur      *Batch
	states   map[string]int // device → index in cur.States, to merge touches
	inFlight int            // records in the batch being written
	closed   bool
	// Every Add and Touch takes the next sequence number; durable is the
	// highest one whose records are committed (or given up), so Flush
	// waits for durable to reach the number current at its call.
	seq, curSeq, durable uint64        // curSeq: the highest in cur
	doneCh               chan struct{} // closed and replaced whenever durable advances
	// attrSeq: the sequence number of each device's last queued attribute
	// write, while it is not durable (see PendingAttributes).
	attrSeq map[string]uint64
	// gone: devices forgotten (deleted), whose records are dropped, and
	// when; remembered for goneMemory.
	gone map[string]time.Time

	kick chan struct{} // a commit is wanted now (buffered, 1)
	stop chan struct{}
	exit chan struct{}

	commits, committed, failures atomic.Uint64
	lastErr                      atomic.Pointer[string]
}

// NewWriter starts a Writer; Close stops it.
func NewWriter(o WriterOptions) *Writer {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{
		store:    o.Store,
		log:      o.Logger,
		interval: o.Interval,
		maxBatch: o.MaxBatch,
		maxPend:  max(o.MaxPending, o.MaxBatch),
		cur:      &Batch{},
		states:   make(map[string]int),
		attrSeq:  make(map[string]uint64),
		gone:     make(map[string]time.Time),
		doneCh:   make(chan struct{}),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		exit:     make(chan struct{}),
	}
	go w.run()
	return w
}

// AddSamples queues samples for the next commit. It fails with
// ErrOverloaded when too much is waiting and ErrClosed after Close; the
// samples are then not stored.
func (w *Writer) AddSamples(s []Sample) error {
	return w.add(len(s), func(b *Batch) {
		for _, x := range s {
			if !w.isGone(x.DeviceID) {
				b.Samples = append(b.Samples, x)
			}
		}
	})
}

// AddAttributes queues attribute writes for the next commit, like
// AddSamples.
func (w *Writer) AddAttributes(a []AttributeWrite) error {
	return w.add(len(a), func(b *Batch) {
		for _, x := range a {
			if !w.isGone(x.DeviceID) {
				b.Attributes = append(b.Attributes, x)
				w.attrSeq[x.DeviceID] = w.seq + 1 // the number add gives this call
			}
		}
	})
}

// PendingAttributes reports whether attribute writes of the device are
// queued or being written: a read of its attributes must Flush first to
// see them.
func (w *Writer) PendingAttributes(deviceID string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.attrSeq[deviceID] > w.durable
}

// goneMemory is how long a forgotten device's late records are dropped:
// far longer than any message can take to arrive.
const goneMemory = 10 * time.Minute

// Forget drops what is queued for a deleted device and whatever arrives
// for it later (a message in flight, the end of its session). Records in
// the batch being written are not recalled: Flush, then delete the
// device's stored data.
func (w *Writer) Forget(deviceID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for id, at := range w.gone {
		if now.Sub(at) > goneMemory {
			delete(w.gone, id)
		}
	}
	w.gone[deviceID] = now
	delete(w.attrSeq, deviceID)
	b := w.cur
	b.Samples = slices.DeleteFunc(b.Samples, func(x Sample) bool { return x.DeviceID == deviceID })
	b.Attributes = slices.DeleteFunc(b.Attributes, func(x AttributeWrite) bool { return x.DeviceID == deviceID })
	if _, ok := w.states[deviceID]; ok {
		b.States = slices.DeleteFunc(b.States, func(x ConnState) bool { return x.DeviceID == deviceID })
		clear(w.states)
		for i, st := range b.States {
			w.states[st.DeviceID] = i
		}
	}
}

// isGone reports whether deviceID was forgotten. Called with mu held.
func (w *Writer) isGone(deviceID string) bool {
	if len(w.gone) == 0 {
		return false
	}
	_, ok := w.gone[deviceID]
	return ok
}

// Touch records connection times for the next commit, merged with any
// already waiting for the device (the latest of each time wins). It is
// never refused: it adds at most one record per device.
func (w *Writer) Touch(st ConnState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.isGone(st.DeviceID) {
		return
	}
	w.seq++
	w.curSeq = w.seq
	w.mergeState(st)
}

// mergeState adds st to cur, merged with the device's waiting state if
// any. Called with mu held.
func (w *Writer) mergeState(st ConnState) {
	if i, ok := w.states[st.DeviceID]; ok {
		cur := &w.cur.States[i]
		cur.LastConnect = max(cur.LastConnect, st.LastConnect)
		cur.LastDisconnect = max(cur.LastDisconnect, st.LastDisconnect)
		cur.LastActivity = max(cur.LastActivity, st.LastActivity)
		return
	}
	w.states[st.DeviceID] = len(w.cur.States)
	w.cur.States = append(w.cur.States, st)
}

func (w *Writer) add(n int, appendTo func(*Batch)) error {
	if n == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return ErrClosed
	case w.inFlight+w.cur.Len()+n > w.maxPend:
		return ErrOverloaded
	}
	appendTo(w.cur)
	w.seq++
	w.curSeq = w.seq
	if w.cur.Len() >= w.maxBatch {
		w.wake()
	}
	return nil
}

// wake asks the run loop for a commit now.
func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Flush returns once everything queued before the call is durable (or
// given up after a failure, which Err reports), or when ctx ends.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.seq
	w.mu.Unlock()
	w.wake()
	for {
		w.mu.Lock()
		if w.durable >= target {
			w.mu.Unlock()
			return nil
		}
		ch := w.doneCh
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.exit:
			w.mu.Lock()
			done := w.durable >= target
			w.mu.Unlock()
			if done {
				return nil
			}
			return ErrClosed
		}
	}
}

// Close commits what is queued (until ctx ends) and stops the Writer;
// later Adds fail with ErrClosed.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.exit
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	select {
	case <-w.exit:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.cur.Len(); n > 0 {
		return fmt.Errorf("telemetry: %d records could not be stored before shutdown", n)
	}
	return nil
}

// Pending is the number of records waiting to be stored.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inFlight + w.cur.Len()
}

// Commits is the number of batches committed.
func (w *Writer) Commits() uint64 { return w.commits.Load() }

// Committed is the number of records committed.
func (w *Writer) Committed() uint64 { return w.committed.Load() }

// Failures is the number of failed commit attempts.
func (w *Writer) Failures() uint64 { return w.failures.Load() }

// Err is the last commit error, or "" when the last commit succeeded.
func (w *Writer) Err() string {
	if p := w.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// run commits a batch every interval, or sooner when kicked, until stop;
// then it commits what is left.
func (w *Writer) run() {
	defer close(w.exit)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.kick:
		case <-w.stop:
			// Commit what is left, retrying a failing store a few times.
			for range 5 {
				if w.commitOnce() {
					return
				}
				time.Sleep(w.interval)
			}
			return
		}
		w.commitOnce()
	}
}

// commitOnce writes the current batch. It reports whether nothing is left
// queued afterwards. A batch that fails is retried (merged in front of what
// arrived meanwhile) unless the store calls it invalid, which retrying
// cannot fix.
func (w *Writer) commitOnce() (empty bool) {
	w.mu.Lock()
	b := w.cur
	if b.Len() == 0 {
		// Records may have been dropped (Forget): what was numbered is
		// settled all the same.
		if w.durable < w.curSeq {
			w.durable = w.curSeq
			close(w.doneCh)
			w.doneCh = make(chan struct{})
		}
		w.mu.Unlock()
		return true
	}
	bSeq := w.curSeq
	w.cur = &Batch{}
	clear(w.states)
	w.inFlight = b.Len()
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err := w.store.Write(ctx, b)
	cancel()

	w.mu.Lock()
	defer w.mu.Unlock()
	w.inFlight = 0
	switch {
	case err == nil:
		w.commits.Add(1)
		w.committed.Add(uint64(b.Len()))
		w.lastErr.Store(nil)
	case errors.Is(err, ErrInvalid):
		w.failures.Add(1)
		msg := err.Error()
		w.lastErr.Store(&msg)
		w.log.Error("telemetry batch refused by the store and dropped", "records", b.Len(), "error", err)
	default:
		w.failures.Add(1)
		msg := err.Error()
		w.lastErr.Store(&msg)
		w.log.Error("telemetry commit failed; retrying", "records", b.Len(), "error", err)
		w.requeue(b)
		return false
	}
	w.durable = bSeq
	for id, seq := range w.attrSeq {
		if seq <= bSeq {
			delete(w.attrSeq, id)
		}
	}
	close(w.doneCh)
	w.doneCh = make(chan struct{})
	return w.cur.Len() == 0
}

// requeue puts a failed batch back in front of what arrived since, so that
// order (which decides the latest attribute values) is kept. Called with mu
// held.
func (w *Writer) requeue(b *Batch) {
	next := w.cur
	b.Samples = append(b.Samples, next.Samples...)
	b.Attributes = append(b.Attributes, next.Attributes...)
	w.cur = b
	clear(w.states)
	for i, st := range b.States {
		w.states[st.DeviceID] = i
	}
	for _, st := range next.States {
		w.mergeState(st)
	}
}
