package store

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// lockPath is the lock file of the store at path: path without a ".db"
// suffix, plus ".lock" (store.db gets store.lock).
func lockPath(path string) string {
	return strings.TrimSuffix(path, ".db") + ".lock"
}

// fileLock is an exclusive lock on a store, held through a lock file.
type fileLock struct {
	f    *os.File
	path string
}

// lockedErr is ErrLocked, naming the holder's process id when the lock
// file records one.
func lockedErr(path string) error {
	b, err := os.ReadFile(path)
	if err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			return fmt.Errorf("%w: held by process %d (lock file %s)", ErrLocked, pid, path)
		}
	}
	return fmt.Errorf("%w: lock file %s", ErrLocked, path)
}

// writePID records this process's id in the lock file, for lockedErr.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := fmt.Fprintf(f, "%d\n", os.Getpid())
	return err
}
