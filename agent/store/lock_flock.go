//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// acquireLock takes an exclusive flock(2) on the lock file at path,
// creating it if needed. The lock dies with the process, so a crash leaves
// no stale lock.
func acquireLock(path string) (*fileLock, error) {
	// A holder's release removes the file before unlocking it: a lock won
	// on a file that is no longer at path is worthless, so try again.
	for range 5 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock file: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, lockedErr(path)
			}
			return nil, fmt.Errorf("lock file: %w", err)
		}
		held, err1 := f.Stat()
		named, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, named) {
			if err := writePID(f); err != nil {
				f.Close()
				return nil, fmt.Errorf("lock file: %w", err)
			}
			return &fileLock{f: f, path: path}, nil
		}
		f.Close()
	}
	return nil, lockedErr(path)
}

// release removes the lock file, then unlocks it.
func (l *fileLock) release() error {
	rerr := os.Remove(l.path)
	cerr := l.f.Close() // drops the flock
	if err := errors.Join(rerr, cerr); err != nil {
		return fmt.Errorf("release lock: %w", err)
	}
	return nil
}
