package store

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/buntdb"
)

// DeleteOlderThan removes the records dated before cutoff: observations by
// their time, conditions by their onset, encounters by their end (by their
// start while they have no end). A patient whose records this removes all
// of is removed too. Records without a date, and records that do not
// decrypt, are kept (their age is unknown); a patient that had no records
// to begin with is kept. It works through the patients in transactions of
// about a thousand records each, so the store stays usable, and it is safe
// to run again after an interruption. It returns the number of records
// removed, patients included, then compacts the file so the removed values
// leave it; if only that fails, the error wraps ErrCompaction.
func (s *Store) DeleteOlderThan(cutoff time.Time) (deleted int, err error) {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	pseudos, err := s.pseudonyms()
	if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	var total, undated, corrupt [4]int // by kind: patient, obs, cond, enc
	size := s.opBatch()
	for i := 0; i < len(pseudos); {
		var del, und, cor [4]int
		next := i
		err := s.db.Update(func(tx *buntdb.Tx) error {
			del, und, cor, next = [4]int{}, [4]int{}, [4]int{}, i
			kr := s.keys.Load()
			for examined := 0; next < len(pseudos) && examined < size; next++ {
				p := pseudos[next]
				var old []string
				remaining := 0
				for _, k := range datedKinds {
					kind := k.kind
					err := scanPrefix(tx, k.prefix+p+":", func(key, val string) bool {
						examined++
						t, ok, err := recordDate(kr, kind, key, val)
						switch {
						case err != nil:
							cor[kind]++
							remaining++
						case !ok:
							und[kind]++
							remaining++
						case t.Before(cutoff):
							old = append(old, key)
						default:
							remaining++
						}
						return true
					})
					if err != nil {
						return err
					}
				}
				for _, key := range old {
					if _, err := tx.Delete(key); err != nil {
						return err
					}
					del[kindOf(key)]++
				}
				if len(old) > 0 && remaining == 0 {
					_, err := tx.Delete(prefixPatient + p)
					switch {
					case err == nil:
						del[kindPatient]++
					case !errors.Is(err, buntdb.ErrNotFound):
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return sum(total), fmt.Errorf("retention: %w", dbErr(err))
		}
		for k := range total {
			total[k] += del[k]
			undated[k] += und[k]
			corrupt[k] += cor[k]
		}
		i = next
	}
	n := sum(total)
	s.log.Info("retention done", "cutoff", cutoff.UTC().Format(time.RFC3339), "deleted", n,
		"patients", total[kindPatient], "observations", total[kindObs], "conditions", total[kindCond], "encounters", total[kindEnc],
		"undated_kept", sum(undated))
	if c := sum(corrupt); c > 0 {
		s.log.Warn("retention kept records that did not decrypt", "count", c)
	}
	if n == 0 {
		return 0, nil
	}
	return n, s.compactAfter("retention")
}

// Record kinds, indexing per-kind counters.
const (
	kindPatient = iota
	kindObs
	kindCond
	kindEnc
)

// datedKinds are the kinds of record retention removes by date.
var datedKinds = [...]struct {
	kind   int
	prefix string
}{{kindObs, prefixObs}, {kindCond, prefixCond}, {kindEnc, prefixEnc}}

// kindOf returns the kind of a record key.
func kindOf(key string) int {
	for _, k := range datedKinds {
		if strings.HasPrefix(key, k.prefix) {
			return k.kind
		}
	}
	return kindPatient
}

// recordDate decrypts a record and returns the date retention goes by;
// ok is false for an undated record.
func recordDate(kr *keyring, kind int, key, val string) (t time.Time, ok bool, err error) {
	switch kind {
	case kindObs:
		var r obsRec
		err = openRec(kr, key, val, &r)
		t = r.Time
	case kindCond:
		var r condRec
		err = openRec(kr, key, val, &r)
		t = r.Onset
	case kindEnc:
		var r encRec
		err = openRec(kr, key, val, &r)
		t = r.End
		if t.IsZero() {
			t = r.Start
		}
	default:
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	return t, !t.IsZero(), nil
}

func sum(a [4]int) int { return a[0] + a[1] + a[2] + a[3] }
