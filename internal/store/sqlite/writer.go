package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
)

// Group commit.
//
// With synchronous=FULL every commit costs an fsync of the WAL, a few
// milliseconds on most disks; one commit per provisioning request would cap
// throughput at a few hundred per second. So every write is a writeReq sent
// to one goroutine, which takes the first request and whatever else is queued
// at that moment (up to maxBatch, without waiting for more), runs them in one
// transaction with a SAVEPOINT each, commits once, and only then answers each
// caller. A request that fails rolls back to its savepoint and gets its own
// error; the others are unaffected. Requests are applied in queue order, so
// a later request in a batch sees the earlier ones' writes, exactly as if
// they had been committed one by one.

// Request states: a caller whose context ends may abandon a queued request,
// but once the writer has claimed it, it runs and the caller waits for it.
const (
	reqQueued int32 = iota
	reqRunning
	reqAbandoned
)

// writeOp runs inside the batch transaction. It must not change anything the
// caller can see: the caller applies results after the commit succeeded.
// ctx is the writer's, not the caller's: a batch belongs to many callers.
type writeOp func(ctx context.Context, tx *sql.Tx) error

type writeReq struct {
	op    writeOp
	state atomic.Int32
	done  chan error // buffered: the writer never blocks on an answer
}

// write runs op in the writer goroutine and returns once its transaction is
// committed (durable) or failed.
//
// If ctx ends while the request is still queued, it is withdrawn and write
// returns ctx.Err(): nothing is written. If it ends after the writer has
// claimed the request, the request is in a committing batch: write waits for
// the outcome and returns it (nil when committed), since the caller must
// know whether its write happened.
func (s *Store) write(ctx context.Context, op writeOp) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeReq{op: op, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.queue <- r:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ctx.Err()
		}
		return <-r.done
	}
}

// run is the writer goroutine. It ends when Close has closed the queue and
// every request in it has been answered.
func (s *Store) run() {
	defer close(s.stopped)
	batch := make([]*writeReq, 0, s.maxBatch)
	for first := range s.queue {
		batch = append(batch[:0], first)
	collect:
		for len(batch) < s.maxBatch {
			select {
			case r, ok := <-s.queue:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			default:
				break collect
			}
		}
		s.commitBatch(batch)
		clear(batch) // let answered requests be collected
	}
}

// commitBatch runs the requests still wanted in one transaction and answers
// every one of them.
func (s *Store) commitBatch(batch []*writeReq) {
	live := batch[:0]
	for _, r := range batch {
		if r.state.CompareAndSwap(reqQueued, reqRunning) {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}
	errs := make([]error, len(live))
	s.batches.Add(1)
	s.batched.Add(int64(len(live)))
	if err := s.runBatch(live, errs); err != nil {
		s.log.Error("group commit failed", "requests", len(live), "err", err)
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	for i, r := range live {
		r.done <- errs[i]
	}
}

// runBatch fills errs with each request's own error and returns an error
// when the transaction as a whole failed (then nothing of the batch is
// written).
func (s *Store) runBatch(live []*writeReq, errs []error) error {
	ctx := context.Background()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	for i, r := range live {
		if _, err := tx.ExecContext(ctx, "SAVEPOINT req"); err != nil {
			tx.Rollback()
			return fmt.Errorf("savepoint: %w", err)
		}
		if errs[i] = r.op(ctx, tx); errs[i] != nil {
			// Some errors (I/O, disk full) make SQLite roll back the whole
			// transaction; then the savepoint is gone and so is the batch.
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO req"); err != nil {
				tx.Rollback()
				return fmt.Errorf("roll back a failed write (%v): %w", errs[i], err)
			}
		}
		if _, err := tx.ExecContext(ctx, "RELEASE req"); err != nil {
			tx.Rollback()
			return fmt.Errorf("release savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
