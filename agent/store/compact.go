package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Compact rewrites the store's file with only its live records, dropping
// the superseded and deleted values buntdb's append-only file keeps, and
// syncs the result (see Durability in the package doc). The store stays
// usable meanwhile. It is a no-op in memory.
func (s *Store) Compact() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	return s.compact()
}

// maybeCompact compacts the file when it has passed autoCompactMinSize and
// doubled since the last compaction (buntdb's own policy), unless a
// compaction is already running. Errors are logged: the write that
// triggered it has succeeded.
func (s *Store) maybeCompact() {
	if s.path == MemoryPath {
		return
	}
	minSize := int64(autoCompactMinSize)
	if s.compactMin > 0 {
		minSize = s.compactMin
	}
	fi, err := os.Stat(s.path)
	if err != nil || fi.Size() <= minSize || fi.Size() <= 2*s.lastCompactSize.Load() {
		return
	}
	if !s.compactMu.TryLock() {
		return
	}
	defer s.compactMu.Unlock()
	if err := s.compact(); err != nil {
		s.log.Warn("store file compaction failed", "err", err)
	}
}

// compact runs buntdb's Shrink and makes its result durable. compactMu
// must be held.
func (s *Store) compact() (err error) {
	if s.path == MemoryPath {
		return nil
	}
	defer func() {
		// buntdb panics when the rename that ends a shrink fails.
		if r := recover(); r != nil {
			perr, ok := r.(error)
			if !ok {
				perr = fmt.Errorf("%v", r)
			}
			err = fmt.Errorf("%w: %w (reopen the store)", ErrCompaction, perr)
		}
	}()
	before, _ := os.Stat(s.path)
	if err := s.db.Shrink(); err != nil {
		if errors.Is(dbErr(err), ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("%w: %w", ErrCompaction, err)
	}
	// buntdb renamed the rewritten file into place without syncing it or
	// the directory, and with the umask's mode.
	if err := ownerOnly(s.path); err != nil {
		return fmt.Errorf("%w: %w", ErrCompaction, err)
	}
	if err := syncFile(s.path); err != nil {
		return fmt.Errorf("%w: %w", ErrCompaction, err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("%w: %w", ErrCompaction, err)
	}
	if after, err := os.Stat(s.path); err == nil {
		s.lastCompactSize.Store(after.Size())
		if before != nil {
			s.log.Info("store file compacted", "bytes_before", before.Size(), "bytes_after", after.Size())
		}
	}
	return nil
}

// syncFile fsyncs the file at path.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	serr := f.Sync()
	return errors.Join(serr, f.Close())
}

// syncDir fsyncs a directory, making renames and creations in it durable.
// Some systems cannot sync a directory; that is not an error.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
