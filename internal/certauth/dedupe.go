package certauth

import (
	"sync"
	"time"
)

// auditWindow is how long an audited refusal stays deduplicated: a device
// retrying with a revoked certificate in a loop is audited once a minute.
const auditWindow = time.Minute

// dedupeMax bounds the dedupe memory.
const dedupeMax = 10_000

// dedupe remembers recently audited refusals.
type dedupe struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// first reports whether key was not seen within auditWindow, and
// remembers it.
func (d *dedupe) first(key string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = make(map[string]time.Time)
	}
	if t, ok := d.seen[key]; ok && now.Sub(t) < auditWindow {
		return false
	}
	if len(d.seen) >= dedupeMax {
		for k, t := range d.seen {
			if now.Sub(t) >= auditWindow {
				delete(d.seen, k)
			}
		}
		if len(d.seen) >= dedupeMax {
			clear(d.seen)
		}
	}
	d.seen[key] = now
	return true
}
