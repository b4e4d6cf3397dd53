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
// second (one fsync each). The Writer collects what arrives and writes it
// in batches, one transaction each: every window (WriterOptions.Interval)
// when devices are few, back to back — each batch holding what arrived
// while the previous one was written, at most MaxBatch records — when they
// are many. A message is acknowledged once it is in the Writer's memory,
// so a crash loses what was acknowledged and not yet committed: at most one
// window, plus the batches being written. Operator writes do not go through
// the Writer; they are durable when their call returns.
//
// Back-pressure. When the store falls behind, the backlog is what a crash
// would lose, and memory. Past SoftPending waiting records an Add waits
// (at most MaxWait, or until its context ends) for a commit to make room:
// a device sending faster than the store writes is slowed down, through
// its own connection, instead of refused. Only past MaxPending — the store
// failing, or stalled for longer than MaxWait — is a message refused with
// ErrOverloaded.

// Writer defaults.
const (
	DefaultInterval = 500 * time.Millisecond
	// DefaultMaxBatch caps one transaction, so that each commit stays
	// short and room is made in steps.
	DefaultMaxBatch = 20_000
	// DefaultSoftPending: past this many waiting records, Add waits for
	// room (five full batches: about a second of ingestion at 100,000
	// values/s).
	DefaultSoftPending = 5 * DefaultMaxBatch
	// DefaultMaxPending is how many records may wait (being written or
	// queued) before Add refuses more with ErrOverloaded: about ten
	// seconds of ingestion at 100,000 values/s, a few tens of MiB.
	DefaultMaxPending = 1_000_000
	// DefaultMaxWait bounds how long one Add waits for room.
	DefaultMaxWait = 5 * time.Second
)

// ErrOverloaded: the store does not keep up (or is failing), and the
// Writer holds as much as it may; the caller should refuse the message so
// that the device retries later.
var ErrOverloaded = errors.New("telemetry ingestion overloaded: too many values waiting to be stored")

// WriterOptions configures a Writer. Store is required; zero values take
// the defaults above.
type WriterOptions struct {
	Store Store
	// Interval is the batch window when ingestion is light: the most
	// telemetry a crash can lose.
	Interval time.Duration
	// MaxBatch caps the records of one commit; reaching it starts a
	// commit before the window ends.
	MaxBatch int
	// SoftPending: past this many waiting records Add waits for room.
	SoftPending int
	// MaxPending: past this many Add refuses with ErrOverloaded.
	MaxPending int
	// MaxWait bounds the wait of one Add.
	MaxWait time.Duration
	Logger  *slog.Logger
}

// sealedBatch is a batch closed to new records, waiting for (or in) its
// commit; seq is the highest sequence number it settles.
type sealedBatch struct {
	b   *Batch
	seq uint64
}

// Writer batches ingestion into durable commits. Its methods are safe for
// concurrent use.
type Writer struct {
	store    Store
	log      *slog.Logger
	interval time.Duration
	maxBatch int
	softPend int
	maxPend  int
	maxWait  time.Duration

	mu     sync.Mutex
	cur    *Batch         // open: Adds go here
	states map[string]int // device → index in cur.States, to merge touches
	// sealed are committed in order; sealed[0] is the one being written
	// while writing is true. A failed commit stays at the head and is
	// retried, so order (which decides the latest attribute values) holds.
	sealed  []sealedBatch
	writing bool
	queued  int // records in sealed
	closed  bool
	// Every Add and Touch takes the next sequence number; durable is the
	// highest one whose records are committed (or given up), so Flush
	// waits for durable to reach the number current at its call.
	seq, durable uint64
	doneCh       chan struct{} // closed and replaced whenever durable advances
	// attrSeq: the sequence number of each device's last queued attribute
	// write, while it is not durable (see PendingAttributes).
	attrSeq map[string]uint64
	// gone: devices forgotten (deleted), whose records are dropped, and
	// when; remembered for goneMemory.
	gone map[string]time.Time

	kick chan struct{} // a commit is wanted now (buffered, 1)
	stop chan struct{}
	exit chan struct{}

	commits, committed, failures, waits atomic.Uint64
	lastErr                             atomic.Pointer[string]
}

// NewWriter starts a Writer; Close stops it.
func NewWriter(o WriterOptions) *Writer {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.SoftPending <= 0 {
		o.SoftPending = 5 * o.MaxBatch
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	maxPend := max(o.MaxPending, o.MaxBatch)
	w := &Writer{
		store:    o.Store,
		log:      o.Logger,
		interval: o.Interval,
		maxBatch: o.MaxBatch,
		softPend: min(o.SoftPending, maxPend),
		maxPend:  maxPend,
		maxWait:  o.MaxWait,
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

// AddSamples queues samples for a coming commit, waiting for room while
// the backlog is large (see Back-pressure). It fails with ErrOverloaded
// when too much is waiting and ErrClosed after Close; the samples are then
// not stored.
func (w *Writer) AddSamples(ctx context.Context, s []Sample) error {
	return w.add(ctx, len(s), func(b *Batch) {
		for _, x := range s {
			if !w.isGone(x.DeviceID) {
				b.Samples = append(b.Samples, x)
			}
		}
	})
}

// AddAttributes queues attribute writes for a coming commit, like
// AddSamples.
func (w *Writer) AddAttributes(ctx context.Context, a []AttributeWrite) error {
	return w.add(ctx, len(a), func(b *Batch) {
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
	for i := range w.sealed {
		if i == 0 && w.writing {
			continue
		}
		n := w.sealed[i].b.Len()
		dropDevice(w.sealed[i].b, deviceID)
		w.queued -= n - w.sealed[i].b.Len()
	}
	dropDevice(w.cur, deviceID)
	if _, ok := w.states[deviceID]; ok {
		clear(w.states)
		for i, st := range w.cur.States {
			w.states[st.DeviceID] = i
		}
	}
}

// dropDevice removes a device's records from b.
func dropDevice(b *Batch, deviceID string) {
	b.Samples = slices.DeleteFunc(b.Samples, func(x Sample) bool { return x.DeviceID == deviceID })
	b.Attributes = slices.DeleteFunc(b.Attributes, func(x AttributeWrite) bool { return x.DeviceID == deviceID })
	b.States = slices.DeleteFunc(b.States, func(x ConnState) bool { return x.DeviceID == deviceID })
}

// isGone reports whether deviceID was forgotten. Called with mu held.
func (w *Writer) isGone(deviceID string) bool {
	if len(w.gone) == 0 {
		return false
	}
	_, ok := w.gone[deviceID]
	return ok
}

// Touch records connection times for a coming commit, merged with any
// already waiting for the device (the latest of each time wins). It is
// never refused nor delayed: it adds at most one record per device.
func (w *Writer) Touch(st ConnState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.isGone(st.DeviceID) {
		return
	}
	w.seq++
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

func (w *Writer) add(ctx context.Context, n int, appendTo func(*Batch)) error {
	if n == 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed && w.pending()+n > w.softPend {
		w.waitForRoom(ctx, n)
	}
	switch {
	case w.closed:
		return ErrClosed
	case w.pending()+n > w.maxPend:
		return ErrOverloaded
	}
	appendTo(w.cur)
	w.seq++
	if w.cur.Len() >= w.maxBatch {
		w.seal()
		w.wake()
	}
	return nil
}

// waitForRoom waits until n more records fit under SoftPending, the Writer
// closes, MaxWait passes or ctx ends. Called with mu held; it releases it
// while waiting.
func (w *Writer) waitForRoom(ctx context.Context, n int) {
	w.waits.Add(1)
	timer := time.NewTimer(w.maxWait)
	defer timer.Stop()
	for !w.closed && w.pending()+n > w.softPend {
		ch := w.doneCh
		w.wake()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-w.exit:
		case <-timer.C:
			w.mu.Lock()
			return
		case <-ctx.Done():
			w.mu.Lock()
			return
		}
		w.mu.Lock()
	}
}

// pending is the number of records waiting. Called with mu held.
func (w *Writer) pending() int { return w.queued + w.cur.Len() }

// seal closes the current batch (when it holds anything) and opens a new
// one. Called with mu held.
func (w *Writer) seal() {
	if w.cur.Len() == 0 {
		return
	}
	w.sealed = append(w.sealed, sealedBatch{b: w.cur, seq: w.seq})
	w.queued += w.cur.Len()
	w.cur = &Batch{}
	clear(w.states)
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
	if n := w.pending(); n > 0 {
		return fmt.Errorf("telemetry: %d records could not be stored before shutdown", n)
	}
	return nil
}

// Pending is the number of records waiting to be stored.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending()
}

// Commits is the number of batches committed.
func (w *Writer) Commits() uint64 { return w.commits.Load() }

// Committed is the number of records committed.
func (w *Writer) Committed() uint64 { return w.committed.Load() }

// Failures is the number of failed commit attempts.
func (w *Writer) Failures() uint64 { return w.failures.Load() }

// Waits is the number of Adds that had to wait for room.
func (w *Writer) Waits() uint64 { return w.waits.Load() }

// Err is the last commit error, or "" when the last commit succeeded.
func (w *Writer) Err() string {
	if p := w.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// run commits every interval, or sooner when kicked, until stop; then it
// commits what is left.
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
				if w.drain() {
					return
				}
				time.Sleep(w.interval)
			}
			return
		}
		w.drain()
	}
}

// drain seals the current batch and commits the sealed ones in order,
// until none is left (it reports true) or one fails: that one stays at
// the head, to be retried at the next round.
func (w *Writer) drain() (empty bool) {
	for {
		w.mu.Lock()
		w.seal()
		if len(w.sealed) == 0 {
			// Records may have been dropped (Forget): what was numbered
			// is settled all the same.
			w.settle(w.seq)
			w.mu.Unlock()
			return true
		}
		head := w.sealed[0]
		w.writing = true
		w.mu.Unlock()

		if !w.commit(head) {
			return false
		}
	}
}

// commit writes the head batch, and reports whether it left the queue
// (committed, or refused by the store as invalid, which retrying cannot
// fix).
func (w *Writer) commit(head sealedBatch) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err := w.store.Write(ctx, head.b)
	cancel()

	w.mu.Lock()
	defer w.mu.Unlock()
	w.writing = false
	switch {
	case err == nil:
		w.commits.Add(1)
		w.committed.Add(uint64(head.b.Len()))
		w.lastErr.Store(nil)
	case errors.Is(err, ErrInvalid):
		w.failures.Add(1)
		msg := err.Error()
		w.lastErr.Store(&msg)
		w.log.Error("telemetry batch refused by the store and dropped", "records", head.b.Len(), "error", err)
	default:
		w.failures.Add(1)
		msg := err.Error()
		w.lastErr.Store(&msg)
		w.log.Error("telemetry commit failed; retrying", "records", head.b.Len(), "error", err)
		return false
	}
	w.sealed[0] = sealedBatch{} // let the batch go
	w.sealed = w.sealed[1:]
	w.queued -= head.b.Len()
	w.settle(head.seq)
	return true
}

// settle marks everything numbered up to seq durable. Called with mu held.
func (w *Writer) settle(seq uint64) {
	if seq <= w.durable {
		return
	}
	w.durable = seq
	for id, s := range w.attrSeq {
		if s <= seq {
			delete(w.attrSeq, id)
		}
	}
	close(w.doneCh)
	w.doneCh = make(chan struct{})
}
