package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// startProgress writes line() to w until the returned function is called:
// on a terminal (tty) redrawn in place five times a second, elsewhere (a
// log, CI) a plain line every five seconds. line gets final = true for the
// last call, made by stop. A nil w reports nothing.
func startProgress(w io.Writer, tty bool, line func(final bool) string) (stop func()) {
	if w == nil {
		return func() {}
	}
	every := 5 * time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var final bool
			select {
			case <-t.C:
			case <-quit:
				final = true
			}
			l := line(final)
			if tty {
				fmt.Fprintf(w, "\r%s\x1b[K", l)
				if final {
					fmt.Fprintln(w)
				}
			} else {
				fmt.Fprintln(w, l)
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

// progress reports the storm on cfg.Progress until the returned function
// is called.
func (s *storm) progress() (stop func()) {
	var lastDone int64
	last := s.start
	return startProgress(s.cfg.Progress, s.cfg.ProgressTTY, func(final bool) string {
		now := time.Now()
		done := s.done.Load()
		rate := float64(done-lastDone) / now.Sub(last).Seconds()
		if final {
			rate = float64(done) / now.Sub(s.start).Seconds()
		}
		lastDone, last = done, now
		return s.progressLine(done, rate, now.Sub(s.start))
	})
}

// progressBar is a bar of done out of total, for a terminal.
func progressBar(done, total int64) string {
	const width = 30
	n := int(min(done, total) * width / max(total, 1))
	return "[" + strings.Repeat("#", n) + strings.Repeat("-", width-n) + "] "
}

// progressLine is one line of progress: a bar (on a terminal), devices
// done of the total, the recent rate, errors and devices in flight.
func (s *storm) progressLine(done int64, rate float64, elapsed time.Duration) string {
	total := int64(len(s.recs))
	var b strings.Builder
	if s.cfg.ProgressTTY {
		b.WriteString(progressBar(done, total))
	}
	fmt.Fprintf(&b, "%d/%d devices, %.0f/s, %d errors, %d in flight, %.1fs",
		done, total, rate, s.failed.Load(), s.inFlight.Load(), elapsed.Seconds())
	return b.String()
}
