package provision

import (
	"sync"
	"time"
)

// auditSuppressor bounds the audit events a source that is being slowed down
// (see FailureLimiter) can cause: per source and reason, one event a window,
// the next one saying how many were folded into it. Sources that are not
// throttled are audited in full.
type auditSuppressor struct {
	window time.Duration
	max    int // entries kept; beyond, expired ones are dropped, then all

	mu      sync.Mutex
	entries map[suppressKey]*suppressed
}

type suppressKey struct{ source, reason string }

type suppressed struct {
	since  time.Time
	folded int
}

// admit reports whether an event for (source, reason) is to be written now,
// and how many earlier ones it stands for.
func (a *auditSuppressor) admit(source, reason string, now time.Time) (write bool, folded int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.entries == nil {
		a.entries = make(map[suppressKey]*suppressed)
	}
	k := suppressKey{source, reason}
	e := a.entries[k]
	switch {
	case e == nil:
		if len(a.entries) >= a.max {
			a.prune(now)
		}
		a.entries[k] = &suppressed{since: now}
		return true, 0
	case now.Sub(e.since) >= a.window:
		folded = e.folded
		e.since, e.folded = now, 0
		return true, folded
	}
	e.folded++
	return false, 0
}

// prune drops entries whose window is over; if that frees too little, all
// of them (a source then gets one more event, which is harmless).
func (a *auditSuppressor) prune(now time.Time) {
	for k, e := range a.entries {
		if now.Sub(e.since) >= a.window {
			delete(a.entries, k)
		}
	}
	if len(a.entries) >= a.max {
		clear(a.entries)
	}
}

// auditOnceWindow is how long AuditOnce keeps a key.
const auditOnceWindow = time.Minute

// auditOnceMax bounds AuditOnce's memory.
const auditOnceMax = 10_000

// AuditOnce remembers recently audited refusals, so that a device retrying
// in a loop (a revoked certificate, a full server) is audited or logged
// once a minute per key rather than at every attempt. The zero value is
// ready; it keeps at most 10,000 keys.
type AuditOnce struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// First reports whether key was not seen in the last minute, and remembers
// it.
func (d *AuditOnce) First(key string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = make(map[string]time.Time)
	}
	if t, ok := d.seen[key]; ok && now.Sub(t) < auditOnceWindow {
		return false
	}
	if len(d.seen) >= auditOnceMax {
		for k, t := range d.seen {
			if now.Sub(t) >= auditOnceWindow {
				delete(d.seen, k)
			}
		}
		if len(d.seen) >= auditOnceMax {
			clear(d.seen)
		}
	}
	d.seen[key] = now
	return true
}
