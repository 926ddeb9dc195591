//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// acquireLock creates the lock file at path with O_EXCL. A lock file left
// by a crash must be removed by hand, once no agent runs.
func acquireLock(path string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, lockedErr(path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := writePID(f); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("lock file: %w", err)
	}
	return &fileLock{f: f, path: path}, nil
}

// release closes and removes the lock file.
func (l *fileLock) release() error {
	cerr := l.f.Close()
	rerr := os.Remove(l.path)
	if err := errors.Join(cerr, rerr); err != nil {
		return fmt.Errorf("release lock: %w", err)
	}
	return nil
}
