package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tidwall/buntdb"
)

// RotateMasterKey rewraps the store's data key (or keys, during an
// unfinished data-key rotation) under newKey, in one transaction that
// writes one record: atomic, even across a crash, and fast whatever the
// store's size. From then on the store opens only with newKey. The file
// is then compacted so it no longer holds the data key wrapped under the
// old master key; if only that compaction fails, the error wraps
// ErrCompaction and the rotation has still happened.
func (s *Store) RotateMasterKey(newKey []byte) error {
	if len(newKey) != MasterKeySize {
		return fmt.Errorf("%w: new master key is %d bytes, want %d", ErrInvalidConfig, len(newKey), MasterKeySize)
	}
	newMaster, err := newAEAD(newKey)
	if err != nil {
		return err
	}
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	err = s.db.Update(func(tx *buntdb.Tx) error {
		plain, err := s.unwrapDataKeys(tx)
		if err != nil {
			return err
		}
		w, err := seal(newMaster, []byte(keyDataKey), plain)
		if err != nil {
			return err
		}
		_, _, err = tx.Set(keyDataKey, string(w), nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("rotate master key: %w", dbErr(err))
	}
	s.master = newMaster
	s.log.Info("master key rotated")
	return s.compactAfter("master key rotation")
}

// unwrapDataKeys returns the plaintext of meta:datakey. adminMu must be
// held.
func (s *Store) unwrapDataKeys(tx *buntdb.Tx) ([]byte, error) {
	wrapped, err := tx.Get(keyDataKey)
	if err != nil {
		return nil, fmt.Errorf("read data key: %w", err)
	}
	plain, err := open(s.master, []byte(keyDataKey), []byte(wrapped))
	if err != nil {
		return nil, fmt.Errorf("data key record: %w", ErrCorrupt)
	}
	return plain, nil
}

// setDataKeys wraps plain under the master key into meta:datakey. adminMu
// must be held.
func (s *Store) setDataKeys(tx *buntdb.Tx, plain []byte) error {
	w, err := seal(s.master, []byte(keyDataKey), plain)
	if err != nil {
		return err
	}
	_, _, err = tx.Set(keyDataKey, string(w), nil)
	return err
}

// RotateDataKey re-seals every value in the store under a new, random data
// key, resuming an interrupted rotation if there is one. It works in
// batches of about a thousand records per transaction, with a durable
// cursor (see Key rotation in the package doc): the store stays usable
// meanwhile, and after an interruption at any point (error, crash, power
// loss) it opens and reads normally and a new call finishes the rotation.
// Values that do not decrypt under either key are left as they are (and
// stay corrupt; Verify lists them). The file is compacted at the end, so it
// no longer holds values sealed under the old key; if only that fails, the
// error wraps ErrCompaction and the rotation is complete.
func (s *Store) RotateDataKey() error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()

	kr := s.keys.Load()
	if kr.next == nil {
		// Step 1: record the new key beside the current one, in the one
		// meta:datakey record (one command: atomic). New writes use it
		// from the next transaction on.
		nk := make([]byte, dataKeySize)
		if _, err := io.ReadFull(rand.Reader, nk); err != nil {
			return fmt.Errorf("generate data key: %w", err)
		}
		var next *keyring
		err := s.db.Update(func(tx *buntdb.Tx) error {
			plain, err := s.unwrapDataKeys(tx)
			if err != nil {
				return err
			}
			if len(plain) != dataKeySize {
				return fmt.Errorf("data key record: %w", ErrCorrupt)
			}
			both := append(plain[:dataKeySize:dataKeySize], nk...)
			if next, err = newKeyring(both); err != nil {
				return err
			}
			return s.setDataKeys(tx, both)
		})
		if err != nil {
			return fmt.Errorf("rotate data key: start: %w", dbErr(err))
		}
		// Published only once committed and synced: a write sealed under
		// the new key is never on disk before the key is.
		s.keys.Store(next)
		kr = next
		s.log.Info("data key rotation started")
	} else {
		s.log.Info("data key rotation resumed")
	}

	// Step 2: re-seal every value after the cursor, batch by batch. The
	// cursor written with batch n is the last key of batch n-1, which was
	// synced before batch n was written, so the cursor never runs ahead of
	// re-sealed values on disk, however much of the last batch survives a
	// crash. The cursor is sealed under the new key: one left over from an
	// earlier rotation does not open, and the scan starts from the top.
	var cursor string
	err := s.db.View(func(tx *buntdb.Tx) error {
		v, err := tx.Get(keyRotation)
		if err == nil {
			if b, err := open(kr.next, []byte(keyRotation), []byte(v)); err == nil {
				cursor = string(b)
			}
			return nil
		}
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("rotate data key: read cursor: %w", dbErr(err))
	}
	size := s.opBatch()
	resealed, corrupt := 0, 0
	for n := 1; ; n++ {
		var last string
		var done bool
		var batchResealed, batchCorrupt int
		err := s.db.Update(func(tx *buntdb.Tx) error {
			batchResealed, batchCorrupt = 0, 0
			var keys, vals []string
			err := tx.AscendGreaterOrEqual("", cursor, func(k, v string) bool {
				if k == cursor || k == keyDataKey || k == keyRotation {
					return true
				}
				keys, vals = append(keys, k), append(vals, v)
				return len(keys) < size
			})
			if err != nil {
				return err
			}
			done = len(keys) < size
			for i, k := range keys {
				plain, err := kr.open([]byte(k), []byte(vals[i]))
				if err != nil {
					batchCorrupt++
					continue
				}
				v, err := seal(kr.next, []byte(k), plain)
				if err != nil {
					return err
				}
				if _, _, err := tx.Set(k, string(v), nil); err != nil {
					return err
				}
				batchResealed++
			}
			if len(keys) > 0 {
				last = keys[len(keys)-1]
			}
			c, err := seal(kr.next, []byte(keyRotation), []byte(cursor))
			if err != nil {
				return err
			}
			_, _, err = tx.Set(keyRotation, string(c), nil)
			return err
		})
		if err != nil {
			return fmt.Errorf("rotate data key: batch %d: %w", n, dbErr(err))
		}
		resealed += batchResealed
		corrupt += batchCorrupt
		if h := s.hooks.afterRotateBatch; h != nil {
			if err := h(n); err != nil {
				return fmt.Errorf("rotate data key: batch %d: %w", n, err)
			}
		}
		if n%100 == 0 {
			s.log.Info("data key rotation progress", "records", resealed)
		}
		if done {
			break
		}
		cursor = last
	}

	// Step 3: drop the old key (one command again). Every batch is synced,
	// so no value on disk needs it any more.
	var only *keyring
	err = s.db.Update(func(tx *buntdb.Tx) error {
		plain, err := s.unwrapDataKeys(tx)
		if err != nil {
			return err
		}
		if len(plain) != 2*dataKeySize {
			return fmt.Errorf("data key record: %w", ErrCorrupt)
		}
		if only, err = newKeyring(plain[dataKeySize:]); err != nil {
			return err
		}
		return s.setDataKeys(tx, plain[dataKeySize:])
	})
	if err != nil {
		return fmt.Errorf("rotate data key: finish: %w", dbErr(err))
	}
	s.keys.Store(only)
	err = s.db.Update(func(tx *buntdb.Tx) error {
		if _, err := tx.Delete(keyRotation); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil { // harmless: a stale cursor does not open under a later key
		s.log.Warn("data key rotation: cursor not removed", "err", dbErr(err))
	}
	if corrupt > 0 {
		s.log.Warn("data key rotation left records that did not decrypt as they were", "count", corrupt)
	}
	s.log.Info("data key rotated", "records", resealed)
	return s.compactAfter("data key rotation")
}

// compactAfter compacts the file at the end of a bulk operation.
func (s *Store) compactAfter(op string) error {
	if s.hooks.noCompact {
		return nil
	}
	if err := s.Compact(); err != nil {
		return fmt.Errorf("%s done, but: %w", op, err)
	}
	return nil
}

// opBatch is the number of records per transaction of bulk operations.
func (s *Store) opBatch() int {
	if s.batch > 0 {
		return s.batch
	}
	return opBatch
}

// isMeta reports whether key is one of the store's metadata records.
func isMeta(key string) bool { return strings.HasPrefix(key, prefixMeta) }
