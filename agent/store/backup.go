package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tidwall/buntdb"
)

// Backup writes a consistent snapshot of the store to w: a buntdb file
// holding every record as stored, values sealed and the data key wrapped
// under the master key. The backup is as encrypted as the store and is
// useless without the master key current when it was made (and the
// pseudonym key); keep those apart from it. Restore puts a backup back in
// place; a backup file can also be opened directly with Open. Writes wait
// while the snapshot is written (reads do not), so write to local storage
// and copy from there.
func (s *Store) Backup(w io.Writer) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return fmt.Errorf("backup: %w", ErrClosed)
	}
	if err := s.db.Save(w); err != nil {
		return fmt.Errorf("backup: %w", dbErr(err))
	}
	return nil
}

// Restore writes the backup read from r as a new store at cfg.Path, then
// opens it with cfg's keys and verifies every record before putting it in
// place. It refuses to overwrite an existing store (ErrExists) or to run
// while the store is locked (ErrLocked), fails with ErrWrongKey or
// ErrPseudonymKeyChanged when the backup does not open with the keys, with
// ErrNoStore when r holds no store, and with ErrCorrupt when any record
// does not decrypt; nothing is left at cfg.Path then. It returns the
// verification report (also on ErrCorrupt).
func Restore(r io.Reader, cfg Config) (*VerifyReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Path == MemoryPath {
		return nil, fmt.Errorf("%w: cannot restore into memory", ErrInvalidConfig)
	}
	lock, err := acquireLock(lockPath(cfg.Path))
	if err != nil {
		return nil, err
	}
	defer lock.release()
	if _, err := os.Lstat(cfg.Path); err == nil {
		return nil, ErrExists
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("restore: %w", err)
	}

	dir := filepath.Dir(cfg.Path)
	tmp, err := os.CreateTemp(dir, filepath.Base(cfg.Path)+".restore-*")
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath) // after a successful link, removes the extra name only
	_, err = io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	err = errors.Join(err, tmp.Close())
	if err != nil {
		return nil, fmt.Errorf("restore: write: %w", err)
	}

	vcfg := cfg
	vcfg.Path, vcfg.MustExist = tmpPath, true
	st, err := Open(vcfg)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	rep, err := st.Verify()
	err = errors.Join(err, st.Close())
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if rep.Corrupt > 0 {
		return rep, fmt.Errorf("restore: %w: %d records do not decrypt or decode", ErrCorrupt, rep.Corrupt)
	}
	// A hard link puts the file in place only if nothing is there yet.
	if err := os.Link(tmpPath, cfg.Path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, ErrExists
		}
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return rep, fmt.Errorf("restore: %w", err)
	}
	return rep, nil
}

// MaxCorruptKeys bounds VerifyReport.CorruptKeys.
const MaxCorruptKeys = 1000

// VerifyReport is the result of Verify.
type VerifyReport struct {
	// Patients, Observations, Conditions and Encounters count the records
	// of each kind that decrypt and decode.
	Patients, Observations, Conditions, Encounters int
	// Meta counts the store's own records (wrapped data key, pseudonym key
	// check, rotation cursor).
	Meta int
	// Corrupt counts records that do not decrypt or decode, or whose key
	// is not one the store writes.
	Corrupt int
	// CorruptKeys are the keys of the first MaxCorruptKeys corrupt records,
	// in key order. Keys hold only pseudonyms and HMACs, never raw ids.
	CorruptKeys []string
	// RotationPending is set when a data-key rotation was started and not
	// finished (RotateDataKey finishes it).
	RotationPending bool
}

// OK reports whether every record is sound.
func (r *VerifyReport) OK() bool { return r.Corrupt == 0 }

// Verify decrypts and decodes every record in the store and reports counts
// by kind and the keys of the corrupt records. It reads in transactions of
// a few thousand records, so writers are not held up; records written
// meanwhile may or may not be counted. An error means the store could not
// be read, not that a record is corrupt.
func (s *Store) Verify() (*VerifyReport, error) {
	rep := &VerifyReport{}
	size := 4 * s.opBatch()
	after, first := "", true
	for {
		n := 0
		err := s.db.View(func(tx *buntdb.Tx) error {
			kr := s.keys.Load()
			rep.RotationPending = kr.next != nil
			return tx.AscendGreaterOrEqual("", after, func(key, val string) bool {
				if !first && key == after {
					return true
				}
				if n == size {
					return false
				}
				n++
				after = key
				if kind, ok := s.checkRecord(kr, key, val); ok {
					rep.count(kind)
				} else {
					rep.Corrupt++
					if len(rep.CorruptKeys) < MaxCorruptKeys {
						rep.CorruptKeys = append(rep.CorruptKeys, key)
					}
				}
				return true
			})
		})
		if err != nil {
			return nil, fmt.Errorf("verify: %w", dbErr(err))
		}
		first = false
		if n < size {
			return rep, nil
		}
	}
}

// kindMeta is the kind of the store's own records, for VerifyReport.
const kindMeta = -1

func (r *VerifyReport) count(kind int) {
	switch kind {
	case kindMeta:
		r.Meta++
	case kindPatient:
		r.Patients++
	case kindObs:
		r.Observations++
	case kindCond:
		r.Conditions++
	case kindEnc:
		r.Encounters++
	}
}

// checkRecord checks one record: its key's shape, and that its value
// decrypts and decodes.
func (s *Store) checkRecord(kr *keyring, key, val string) (kind int, ok bool) {
	switch {
	case key == keyDataKey: // checked by Open
		return kindMeta, true
	case key == keyRotation: // opaque; one from an earlier rotation is harmless
		return kindMeta, true
	case key == keyPseudoChk:
		_, err := kr.open([]byte(key), []byte(val))
		return kindMeta, err == nil
	case isMeta(key):
		return kindMeta, false
	}
	var rec any
	var ids int // HMACs after the prefix: pseudonym, and resource for all but patients
	switch kind = kindOf(key); kind {
	case kindPatient:
		if !strings.HasPrefix(key, prefixPatient) {
			return kind, false
		}
		rec, ids = &patientRec{}, 1
	case kindObs:
		rec, ids = &obsRec{}, 2
	case kindCond:
		rec, ids = &condRec{}, 2
	case kindEnc:
		rec, ids = &encRec{}, 2
	}
	rest := key[strings.IndexByte(key, ':')+1:]
	parts := strings.Split(rest, ":")
	if len(parts) != ids {
		return kind, false
	}
	for _, p := range parts {
		if !isHex(p, pseudoLen) {
			return kind, false
		}
	}
	return kind, openRec(kr, key, val, rec) == nil
}

// isHex reports whether s is n lowercase hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
