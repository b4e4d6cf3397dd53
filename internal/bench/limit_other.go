//go:build !unix

package bench

import "time"

// ensureFileLimit does nothing where there is no RLIMIT_NOFILE: the
// operating system's own limit shows as errors of KindLocal.
func ensureFileLimit(need uint64) error { return nil }

// selfCPU is unknown here.
func selfCPU() time.Duration { return 0 }
