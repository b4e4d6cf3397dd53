package bench

import (
	"fmt"
	"strings"
	"time"
)

// progress reports the storm on cfg.Progress until the returned function
// is called: on a terminal a bar redrawn in place five times a second,
// elsewhere (a log, CI) a plain line every five seconds.
func (s *storm) progress() (stop func()) {
	w := s.cfg.Progress
	if w == nil {
		return func() {}
	}
	every := 5 * time.Second
	if s.cfg.ProgressTTY {
		every = 200 * time.Millisecond
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		var lastDone int64
		last := s.start
		for {
			var final bool
			select {
			case <-t.C:
			case <-quit:
				final = true
			}
			now := time.Now()
			done := s.done.Load()
			rate := float64(done-lastDone) / now.Sub(last).Seconds()
			if final {
				rate = float64(done) / now.Sub(s.start).Seconds()
			}
			lastDone, last = done, now
			line := s.progressLine(done, rate, now.Sub(s.start))
			if s.cfg.ProgressTTY {
				fmt.Fprintf(w, "\r%s\x1b[K", line)
				if final {
					fmt.Fprintln(w)
				}
			} else {
				fmt.Fprintln(w, line)
			}
			if final {
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

// progressLine is one line of progress: a bar (on a terminal), devices
// done of the total, the recent rate, errors and devices in flight.
func (s *storm) progressLine(done int64, rate float64, elapsed time.Duration) string {
	total := int64(len(s.recs))
	var b strings.Builder
	if s.cfg.ProgressTTY {
		const width = 30
		n := int(done * width / max(total, 1))
		b.WriteString("[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "] ")
	}
	fmt.Fprintf(&b, "%d/%d devices, %.0f/s, %d errors, %d in flight, %.1fs",
		done, total, rate, s.failed.Load(), s.inFlight.Load(), elapsed.Seconds())
	return b.String()
}
