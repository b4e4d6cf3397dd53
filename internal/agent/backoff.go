package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff defaults: reconnects start around a second and never wait more
// than a minute.
const (
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = 60 * time.Second
)

// backoff is exponential backoff with full jitter (AWS architecture blog,
// "Exponential Backoff And Jitter"): the n-th wait is uniform in
// [min, min(max, base·2ⁿ)). Full jitter spreads a fleet that lost its hub
// at the same instant over the whole window instead of having it come back
// in waves; the floor (base/4) keeps a single agent from ever spinning.
type backoff struct {
	base, max time.Duration
	n         int
}

func (b *backoff) next() time.Duration {
	ceil := b.max
	if b.n < 30 && b.base<<b.n < b.max {
		ceil = b.base << b.n
	}
	b.n++
	floor := b.base / 4
	if ceil <= floor {
		return floor
	}
	return floor + rand.N(ceil-floor)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until ctx ends; it reports whether the wait was complete.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
