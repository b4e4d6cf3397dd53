//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// canProbeLocks: lockHolder sees other processes' locks here.
const canProbeLocks = true

// lockHolder returns the id of another process holding a POSIX advisory
// lock on path (SQLite's locks: a running server keeps a shared lock on
// its database and the WAL index while it has them open), or 0 when none
// does or path does not exist. Locks of this process are not seen.
func lockHolder(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// Would a write lock on the whole file, to its end and beyond (SQLite
	// locks bytes past the end of the database file), be refused?
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return 0, err
	}
	if lk.Type == syscall.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}
