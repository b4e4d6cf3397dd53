package provision

import (
	"fmt"
	"testing"
	"time"
)

func TestFailureLimiterDelays(t *testing.T) {
	l := &FailureLimiter{Burst: 3, Leak: time.Second, Base: 100 * time.Millisecond, Max: time.Second, MaxSources: 10}
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		failures int
		after    time.Duration // time since the last failure
		want     time.Duration
	}{
		{0, 0, 0},
		{3, 0, 0},                      // within the burst
		{4, 0, 200 * time.Millisecond}, // score 4: 100ms·2^(4-3)
		{5, 0, 400 * time.Millisecond}, //
		{8, 0, time.Second},            // capped at Max
		{5, 2 * time.Second, 0},        // two points leaked: score 3
		{5, 1500 * time.Millisecond, 100 * time.Millisecond}, // score 3.5: the first step
		{40, 0, time.Second}, // huge scores do not overflow
		{5, time.Hour, 0},    // fully forgiven
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d failures +%v", tt.failures, tt.after), func(t *testing.T) {
			l.sources = nil
			for i := 0; i < tt.failures; i++ {
				l.Fail("10.0.0.1", t0)
			}
			got := l.Delay("10.0.0.1", t0.Add(tt.after))
			if got != tt.want {
				t.Errorf("Delay = %v, want %v", got, tt.want)
			}
			if d := l.Delay("10.0.0.2", t0); d != 0 {
				t.Errorf("another source is delayed by %v", d)
			}
		})
	}
}

func TestFailureLimiterBoundsMemory(t *testing.T) {
	l := &FailureLimiter{Burst: 1, Leak: time.Minute, Base: time.Millisecond, Max: time.Second, MaxSources: 100}
	t0 := time.Unix(1_700_000_000, 0)
	for i := 0; i < 10_000; i++ {
		l.Fail(fmt.Sprintf("src-%d", i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(l.sources); n > l.MaxSources {
		t.Fatalf("limiter holds %d sources, max %d", n, l.MaxSources)
	}
}
