//go:build unix

package bench

import (
	"fmt"
	"syscall"
	"time"
)

// ensureFileLimit raises the soft limit of open files to the hard one and
// fails with a *FileLimitError if that is still below need.
func ensureFileLimit(need uint64) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("reading the open-file limit: %w", err)
	}
	if l.Cur < l.Max && l.Cur < need {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return fmt.Errorf("raising the open-file limit to %d: %w", l.Max, err)
		}
	}
	if l.Cur < need {
		return &FileLimitError{Need: need, Limit: l.Cur}
	}
	return nil
}

// selfCPU is the CPU time this process used so far (user + system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
