package provision

import (
	"net"
	"sync"
	"time"
)

// SourceHost is the source a request or a connection is counted against:
// the host of a remote address, without its port, so that a client cannot
// escape the limits by opening new connections.
func SourceHost(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// FailureLimiter slows down sources that keep failing attestation (wrong
// provision secret, unknown key): brute force gets expensive while a device
// that typed its secret right is never delayed unless its source address is
// failing too.
//
// Each failure adds one to the source's score; the score leaks away at one
// point per Leak. Up to Burst no delay applies; above it each request from
// the source waits Base·2^⌊score-Burst⌋, capped at Max.
type FailureLimiter struct {
	Burst int
	Leak  time.Duration
	Base  time.Duration
	Max   time.Duration
	// MaxSources bounds memory; when exceeded, sources whose score has
	// leaked away are forgotten, then the oldest.
	MaxSources int

	mu      sync.Mutex
	sources map[string]*sourceScore
}

type sourceScore struct {
	score float64
	at    time.Time // when score was last computed
}

// NewFailureLimiter returns a limiter with production defaults: 10 free
// failures, one forgiven every 6 s, delays from 100 ms doubling up to 10 s.
func NewFailureLimiter() *FailureLimiter {
	return &FailureLimiter{Burst: 10, Leak: 6 * time.Second, Base: 100 * time.Millisecond, Max: 10 * time.Second, MaxSources: 100_000}
}

func (l *FailureLimiter) current(s *sourceScore, now time.Time) float64 {
	leaked := float64(now.Sub(s.at)) / float64(l.Leak)
	if leaked >= s.score {
		return 0
	}
	return s.score - leaked
}

// Delay returns how long a request from source must wait before it is served.
func (l *FailureLimiter) Delay(source string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sources[source]
	if !ok {
		return 0
	}
	over := l.current(s, now) - float64(l.Burst)
	if over <= 0 {
		return 0
	}
	if over > 30 { // 2^30·Base is beyond any sane Max
		return l.Max
	}
	d := l.Base << uint(over)
	if d > l.Max || d <= 0 {
		return l.Max
	}
	return d
}

// Fail records a failure from source.
func (l *FailureLimiter) Fail(source string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources == nil {
		l.sources = make(map[string]*sourceScore)
	}
	s, ok := l.sources[source]
	if !ok {
		if len(l.sources) >= l.MaxSources {
			l.prune(now)
		}
		s = &sourceScore{}
		l.sources[source] = s
	}
	s.score = l.current(s, now) + 1
	s.at = now
}

// prune forgets sources whose score has leaked to zero; if none has, the
// one with the oldest failure. Called with mu held.
func (l *FailureLimiter) prune(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for k, s := range l.sources {
		if l.current(s, now) == 0 {
			delete(l.sources, k)
			continue
		}
		if oldest == "" || s.at.Before(oldestAt) {
			oldest, oldestAt = k, s.at
		}
	}
	if len(l.sources) >= l.MaxSources && oldest != "" {
		delete(l.sources, oldest)
	}
}
