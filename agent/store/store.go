package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/tidwall/buntdb"
)

// Sentinel errors.
var (
	// ErrInvalidConfig: a Config field is missing or has the wrong size.
	ErrInvalidConfig = errors.New("invalid store config")
	// ErrWrongKey: the master key does not unwrap the store's data key.
	ErrWrongKey = errors.New("master key does not open this store's data key (wrong master key, or another store's file)")
	// ErrPseudonymKeyChanged: the pseudonym key differs from the one the
	// store was created with; its keys would no longer match.
	ErrPseudonymKeyChanged = errors.New("pseudonym key differs from the one this store was created with")
	// ErrCorrupt: a stored value does not decrypt or decode (damaged, or
	// moved to another key).
	ErrCorrupt = errors.New("store record corrupt")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store closed")
	// ErrInvalidRecord: a record handed to the Sink lacks an id or has a
	// non-finite value.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrNoStore: Config.MustExist is set and there is no store at the
	// path (no file, or a file without a data key).
	ErrNoStore = errors.New("no store at this path")
	// ErrLocked: another Store, in this process or another, holds the
	// store open.
	ErrLocked = errors.New("store is in use (is the agent running?)")
	// ErrExists: Restore would overwrite an existing store.
	ErrExists = errors.New("a store already exists at this path")
	// ErrCompaction: rewriting the store's file failed. The store's
	// contents are unaffected.
	ErrCompaction = errors.New("store file compaction failed")
)

// Key sizes and names.
const (
	// MasterKeySize is the size of Config.MasterKey (AES-256).
	MasterKeySize = 32
	// MinPseudonymKeySize is the minimum size of Config.PseudonymKey.
	MinPseudonymKeySize = 32
	// MemoryPath is the Config.Path of an in-memory store (for tests).
	MemoryPath = ":memory:"

	dataKeySize   = 32
	sealVersion   = 1
	pseudoLen     = 32 // hex digits kept from an HMAC
	keyDataKey    = "meta:datakey"
	keyPseudoChk  = "meta:pseudocheck"
	keyRotation   = "meta:rotation"
	prefixMeta    = "meta:"
	prefixPatient = "pt:"
	prefixObs     = "obs:"
	prefixCond    = "cond:"
	prefixEnc     = "enc:"

	// opBatch is the number of records per transaction of the store's
	// bulk operations (rotation, retention, verification).
	opBatch = 1000
	// autoCompactMinSize is the file size below which the file is never
	// rewritten automatically (buntdb's default).
	autoCompactMinSize = 32 << 20
)

// Config configures a Store.
type Config struct {
	// Path is the buntdb file; MemoryPath (":memory:") keeps everything in
	// memory.
	Path string
	// MasterKey (32 bytes) wraps the store's data key. Keep it outside the
	// store's directory (a key file, or an environment variable fed from a
	// secret manager: see LoadMasterKey).
	MasterKey []byte
	// PseudonymKey is the site secret (at least 32 bytes) behind patient
	// pseudonyms. It must stay the same for the life of the store and never
	// leave the site.
	PseudonymKey []byte
	// MustExist makes Open fail with ErrNoStore instead of creating a new
	// store (maintenance tools set it, so a mistyped path is not silently
	// turned into an empty store).
	MustExist bool
	// Logger receives lifecycle events (never keys or record contents);
	// nil discards them.
	Logger *slog.Logger
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return fmt.Errorf("%w: path is empty", ErrInvalidConfig)
	case len(c.MasterKey) != MasterKeySize:
		return fmt.Errorf("%w: master key is %d bytes, want %d", ErrInvalidConfig, len(c.MasterKey), MasterKeySize)
	case len(c.PseudonymKey) < MinPseudonymKeySize:
		return fmt.Errorf("%w: pseudonym key is %d bytes, want at least %d", ErrInvalidConfig, len(c.PseudonymKey), MinPseudonymKeySize)
	}
	return nil
}

// Stats are the store's write counters since Open.
type Stats struct {
	// Written counts records written: new ids, and versions newer than the
	// stored one.
	Written uint64
	// Stale counts writes ignored because the store holds a newer version
	// of the record.
	Stale uint64
	// Duplicate counts writes ignored because the store holds the same
	// version of the record.
	Duplicate uint64
}

// Store is the encrypted local store. It implements fhir.Sink: writes are
// upserts keyed by resource id that keep the newest version. It is safe for
// concurrent use.
//
// Lock order: adminMu, then compactMu. Neither is held while calling user
// code.
type Store struct {
	db        *buntdb.DB
	path      string
	lock      *fileLock // nil in memory
	keys      atomic.Pointer[keyring]
	pseudoKey []byte
	log       *slog.Logger

	// adminMu serializes the bulk operations (rotation, retention,
	// compaction on request) and guards master.
	adminMu sync.Mutex
	master  cipher.AEAD // under the master key

	// compactMu is held while the file is rewritten.
	compactMu       sync.Mutex
	lastCompactSize atomic.Int64

	written, stale, duplicate atomic.Uint64

	// batch overrides opBatch, and compactMin autoCompactMinSize (tests).
	batch      int
	compactMin int64
	// hooks let tests interrupt bulk operations.
	hooks testHooks

	closeMu  sync.RWMutex // read-held by Backup: buntdb's Save does not check for a closed db
	closed   bool
	closeErr error
}

// testHooks are called by bulk operations when set (tests only).
type testHooks struct {
	// afterRotateBatch runs after each committed batch of a data-key
	// rotation; an error stops the rotation there, as a crash would.
	afterRotateBatch func(batch int) error
	// noCompact skips the compaction that ends rotation and retention.
	noCompact bool
}

var _ fhir.Sink = (*Store)(nil)

// Open opens or creates the store at cfg.Path. A new store gets a fresh
// data key wrapped under cfg.MasterKey; an existing one must be opened with
// the same master key (else ErrWrongKey) and pseudonym key (else
// ErrPseudonymKeyChanged). A store held by another Store fails with
// ErrLocked.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	master, err := newAEAD(cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	s := &Store{path: cfg.Path, pseudoKey: append([]byte(nil), cfg.PseudonymKey...), log: log, master: master}
	if cfg.Path != MemoryPath {
		if cfg.MustExist {
			if _, err := os.Stat(cfg.Path); errors.Is(err, fs.ErrNotExist) {
				return nil, ErrNoStore
			}
		}
		if s.lock, err = acquireLock(lockPath(cfg.Path)); err != nil {
			return nil, err
		}
	}
	fail := func(err error) (*Store, error) {
		if s.db != nil {
			s.db.Close()
		}
		if s.lock != nil {
			s.lock.release()
		}
		return nil, err
	}
	if s.db, err = buntdb.Open(cfg.Path); err != nil {
		return fail(fmt.Errorf("open db: %w", err))
	}
	if err := ownerOnly(cfg.Path); err != nil {
		return fail(err)
	}
	var bc buntdb.Config
	if err := s.db.ReadConfig(&bc); err != nil {
		return fail(fmt.Errorf("read db config: %w", err))
	}
	// Every committed write is on disk before the write returns. The file
	// is compacted by the store itself (maybeCompact), not by buntdb's
	// background goroutine, so that the store knows when it happens.
	bc.SyncPolicy = buntdb.Always
	bc.AutoShrinkDisabled = true
	if err := s.db.SetConfig(bc); err != nil {
		return fail(fmt.Errorf("set db config: %w", err))
	}
	// No buntdb indexes are created: every scan is by key prefix, which the
	// key B-tree serves in order. (buntdb does not persist indexes; any
	// index added later must be created here, after every open.)
	created, err := s.initKeys(cfg.MustExist)
	if err != nil {
		return fail(err)
	}
	if cfg.Path != MemoryPath {
		if fi, err := os.Stat(cfg.Path); err == nil {
			s.lastCompactSize.Store(fi.Size())
		}
	}
	pending := s.keys.Load().next != nil
	log.Info("store opened", "new", created, "in_memory", cfg.Path == MemoryPath, "rotation_pending", pending)
	if pending {
		log.Warn("a data key rotation was interrupted; the store works, and RotateDataKey (cohort agent store rotate-data-key) finishes it")
	}
	return s, nil
}

// keyring holds the data key AEADs.
type keyring struct {
	cur  cipher.AEAD // the data key
	next cipher.AEAD // during a data-key rotation, the new data key
}

// sealer is the AEAD new values are sealed with.
func (k *keyring) sealer() cipher.AEAD {
	if k.next != nil {
		return k.next
	}
	return k.cur
}

// open opens a value sealed under either key.
func (k *keyring) open(ad, sealed []byte) ([]byte, error) {
	if k.next != nil {
		if b, err := open(k.next, ad, sealed); err == nil {
			return b, nil
		}
	}
	return open(k.cur, ad, sealed)
}

// newKeyring builds a keyring from an unwrapped meta:datakey: one data key,
// or two (current, then next) during a rotation.
func newKeyring(plain []byte) (*keyring, error) {
	switch len(plain) {
	case dataKeySize, 2 * dataKeySize:
	default:
		return nil, fmt.Errorf("data key record: %w", ErrCorrupt)
	}
	cur, err := newAEAD(plain[:dataKeySize])
	if err != nil {
		return nil, err
	}
	kr := &keyring{cur: cur}
	if len(plain) == 2*dataKeySize {
		if kr.next, err = newAEAD(plain[dataKeySize:]); err != nil {
			return nil, err
		}
	}
	return kr, nil
}

// initKeys unwraps (or, in a new store, creates) the data key and checks
// (or records) the pseudonym key.
func (s *Store) initKeys(mustExist bool) (created bool, err error) {
	var kr *keyring
	err = s.db.Update(func(tx *buntdb.Tx) error {
		wrapped, err := tx.Get(keyDataKey)
		switch {
		case errors.Is(err, buntdb.ErrNotFound):
			if mustExist {
				return ErrNoStore
			}
			n, err := tx.Len()
			if err != nil {
				return err
			}
			if n > 0 { // records without a key to open them: never start afresh over them
				return fmt.Errorf("%w: the store holds records but no data key", ErrCorrupt)
			}
			dk := make([]byte, dataKeySize)
			if _, err := io.ReadFull(rand.Reader, dk); err != nil {
				return fmt.Errorf("generate data key: %w", err)
			}
			w, err := seal(s.master, []byte(keyDataKey), dk)
			if err != nil {
				return err
			}
			if _, _, err := tx.Set(keyDataKey, string(w), nil); err != nil {
				return fmt.Errorf("store data key: %w", err)
			}
			if kr, err = newKeyring(dk); err != nil {
				return err
			}
			created = true
		case err != nil:
			return fmt.Errorf("read data key: %w", err)
		default:
			dk, err := open(s.master, []byte(keyDataKey), []byte(wrapped))
			if err != nil {
				return ErrWrongKey
			}
			if kr, err = newKeyring(dk); err != nil {
				return err
			}
		}

		check := s.mac("store-check:pseudonym-key")
		sealed, err := tx.Get(keyPseudoChk)
		switch {
		case errors.Is(err, buntdb.ErrNotFound):
			v, err := seal(kr.sealer(), []byte(keyPseudoChk), check)
			if err != nil {
				return err
			}
			if _, _, err := tx.Set(keyPseudoChk, string(v), nil); err != nil {
				return fmt.Errorf("store pseudonym check: %w", err)
			}
		case err != nil:
			return fmt.Errorf("read pseudonym check: %w", err)
		default:
			got, err := kr.open([]byte(keyPseudoChk), []byte(sealed))
			if err != nil {
				return fmt.Errorf("pseudonym check: %w", ErrCorrupt)
			}
			if subtle.ConstantTimeCompare(got, check) != 1 {
				return ErrPseudonymKeyChanged
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	s.keys.Store(kr)
	return created, nil
}

// Close closes the store and releases its lock. It is idempotent: later
// calls return the first call's result.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if !s.closed {
		s.closed = true
		s.closeErr = s.db.Close()
		if s.lock != nil {
			s.closeErr = errors.Join(s.closeErr, s.lock.release())
		}
	}
	return s.closeErr
}

// Stats returns the write counters since Open.
func (s *Store) Stats() Stats {
	return Stats{Written: s.written.Load(), Stale: s.stale.Load(), Duplicate: s.duplicate.Load()}
}

// Pseudonym returns the patient's pseudonym: the first 32 hex digits of
// HMAC-SHA256(PseudonymKey, "patient:"+patientID).
func (s *Store) Pseudonym(patientID string) string {
	return hex.EncodeToString(s.mac("patient:" + patientID))[:pseudoLen]
}

// resourceHash is the key component standing for a resource id.
func (s *Store) resourceHash(kind, id string) string {
	return hex.EncodeToString(s.mac(kind + ":" + id))[:pseudoLen]
}

func (s *Store) mac(msg string) []byte {
	h := hmac.New(sha256.New, s.pseudoKey)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// Stored value shapes. No raw ids: they are in the key, pseudonymized.
// Every shape embeds verRec, so a value's version decodes alone.
type (
	verRec struct {
		VerID      string    `json:"vi,omitempty"`
		VerUpdated time.Time `json:"vu,omitzero"`
	}
	patientRec struct {
		verRec
		BirthDate    time.Time `json:"b,omitzero"`
		Gender       string    `json:"g,omitempty"`
		Deceased     bool      `json:"d,omitempty"`
		DeceasedTime time.Time `json:"dt,omitzero"`
	}
	encRec struct {
		verRec
		Class     string    `json:"k,omitempty"`
		Start     time.Time `json:"s"`
		End       time.Time `json:"e,omitzero"`
		Discharge string    `json:"x,omitempty"`
	}
	obsRec struct {
		verRec
		Code  string    `json:"c"`
		Unit  string    `json:"u,omitempty"`
		Value float64   `json:"v"`
		Time  time.Time `json:"t,omitzero"`
	}
	condRec struct {
		verRec
		System string    `json:"s,omitempty"`
		Code   string    `json:"c"`
		Onset  time.Time `json:"o,omitzero"`
	}
)

func toVerRec(v fhir.Version) verRec {
	r := verRec{VerID: v.ID}
	if !v.Updated.IsZero() {
		r.VerUpdated = v.Updated.UTC()
	}
	return r
}

func (r verRec) version() fhir.Version { return fhir.Version{ID: r.VerID, Updated: r.VerUpdated} }

// kv is one record ready to write: its key, its version and its encoded
// (not yet sealed) value. Values are sealed inside the write transaction,
// under the data key current then.
type kv struct {
	key   string
	ver   fhir.Version
	plain []byte
}

func (s *Store) patientKV(p fhir.Patient) (kv, error) {
	if p.ID == "" {
		return kv{}, fmt.Errorf("patient: %w: empty id", ErrInvalidRecord)
	}
	return encodeKV(prefixPatient+s.Pseudonym(p.ID), p.Version, patientRec{verRec: toVerRec(p.Version),
		BirthDate: p.BirthDate.UTC(), Gender: p.Gender, Deceased: p.Deceased, DeceasedTime: p.DeceasedTime.UTC()})
}

func (s *Store) encounterKV(e fhir.Encounter) (kv, error) {
	if e.ID == "" || e.PatientID == "" {
		return kv{}, fmt.Errorf("encounter: %w: empty id", ErrInvalidRecord)
	}
	key := prefixEnc + s.Pseudonym(e.PatientID) + ":" + s.resourceHash("encounter", e.ID)
	return encodeKV(key, e.Version, encRec{verRec: toVerRec(e.Version),
		Class: e.Class, Start: e.Start.UTC(), End: e.End.UTC(), Discharge: e.Discharge})
}

func (s *Store) observationKV(o fhir.Observation) (kv, error) {
	switch {
	case o.ID == "" || o.PatientID == "":
		return kv{}, fmt.Errorf("observation: %w: empty id", ErrInvalidRecord)
	case math.IsNaN(o.Value) || math.IsInf(o.Value, 0):
		return kv{}, fmt.Errorf("observation: %w: value not finite", ErrInvalidRecord)
	}
	key := prefixObs + s.Pseudonym(o.PatientID) + ":" + s.resourceHash("observation", o.ID)
	return encodeKV(key, o.Version, obsRec{verRec: toVerRec(o.Version),
		Code: o.Code, Unit: o.Unit, Value: o.Value, Time: o.Time.UTC()})
}

func (s *Store) conditionKV(c fhir.Condition) (kv, error) {
	if c.ID == "" || c.PatientID == "" {
		return kv{}, fmt.Errorf("condition: %w: empty id", ErrInvalidRecord)
	}
	key := prefixCond + s.Pseudonym(c.PatientID) + ":" + s.resourceHash("condition", c.ID)
	return encodeKV(key, c.Version, condRec{verRec: toVerRec(c.Version),
		System: c.System, Code: c.Code, Onset: c.Onset.UTC()})
}

func encodeKV(key string, ver fhir.Version, rec any) (kv, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return kv{}, fmt.Errorf("encode record: %w", err)
	}
	return kv{key: key, ver: toVerRec(ver).version(), plain: b}, nil
}

// write commits records in one transaction (one fsync). A record whose key
// holds the same or a newer version is skipped (and counted in Stats).
func (s *Store) write(recs ...kv) error {
	var written, stale, dup, overCorrupt uint64
	err := s.db.Update(func(tx *buntdb.Tx) error {
		written, stale, dup, overCorrupt = 0, 0, 0, 0
		kr := s.keys.Load() // inside the transaction: see RotateDataKey
		for _, r := range recs {
			old, err := tx.Get(r.key)
			switch {
			case errors.Is(err, buntdb.ErrNotFound):
			case err != nil:
				return err
			default:
				var ov verRec
				plain, err := kr.open([]byte(r.key), []byte(old))
				if err == nil && json.Unmarshal(plain, &ov) != nil {
					err = ErrCorrupt
				}
				if err != nil {
					overCorrupt++ // cannot be compared: the new value repairs it
					break
				}
				if !r.ver.Newer(ov.version()) {
					if sameVersion(r.ver, ov.version()) {
						dup++
					} else {
						stale++
					}
					continue
				}
				// A resource without meta.versionId or lastUpdated cannot
				// be ordered, so the last write wins; but the same record
				// read again (every restart re-reads the FHIR sources) is a
				// duplicate, not a rewrite.
				if r.ver.ID == "" && r.ver.Updated.IsZero() && bytes.Equal(plain, r.plain) {
					dup++
					continue
				}
			}
			v, err := seal(kr.sealer(), []byte(r.key), r.plain)
			if err != nil {
				return err
			}
			if _, _, err := tx.Set(r.key, string(v), nil); err != nil {
				return err
			}
			written++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write: %w", dbErr(err))
	}
	s.written.Add(written)
	s.stale.Add(stale)
	s.duplicate.Add(dup)
	if overCorrupt > 0 {
		s.log.Warn("overwrote records that did not decrypt", "count", overCorrupt)
	}
	if written > 0 {
		s.maybeCompact()
	}
	return nil
}

func sameVersion(a, b fhir.Version) bool { return a.ID == b.ID && a.Updated.Equal(b.Updated) }

// Patient implements fhir.Sink.
func (s *Store) Patient(p fhir.Patient) error {
	r, err := s.patientKV(p)
	if err != nil {
		return err
	}
	return s.write(r)
}

// Observation implements fhir.Sink.
func (s *Store) Observation(o fhir.Observation) error {
	r, err := s.observationKV(o)
	if err != nil {
		return err
	}
	return s.write(r)
}

// Condition implements fhir.Sink.
func (s *Store) Condition(c fhir.Condition) error {
	r, err := s.conditionKV(c)
	if err != nil {
		return err
	}
	return s.write(r)
}

// Encounter implements fhir.Sink.
func (s *Store) Encounter(e fhir.Encounter) error {
	r, err := s.encounterKV(e)
	if err != nil {
		return err
	}
	return s.write(r)
}

// ForEachPatient calls fn once per patient, in pseudonym order, with that
// patient's decrypted records. Patient.ID and every PatientID are the
// pseudonym; Observation, Condition and Encounter ids are the HMACs from
// their keys. Observations are sorted by time. A patient known only from
// other records has a Patient with just its ID set. fn runs outside any
// transaction (it may use the store); its error stops the walk and is
// returned unchanged.
func (s *Store) ForEachPatient(fn func(fhir.PatientData) error) error {
	pseudos, err := s.pseudonyms()
	if err != nil {
		return err
	}
	for _, p := range pseudos {
		pd, err := s.loadPatient(p)
		if err != nil {
			return err
		}
		if err := fn(pd); err != nil {
			return err
		}
	}
	return nil
}

// pseudonyms lists every patient pseudonym in the store, sorted.
func (s *Store) pseudonyms() ([]string, error) {
	set := map[string]struct{}{}
	err := s.db.View(func(tx *buntdb.Tx) error {
		for _, prefix := range []string{prefixPatient, prefixObs, prefixCond, prefixEnc} {
			err := scanPrefix(tx, prefix, func(key, _ string) bool {
				rest := key[len(prefix):]
				if len(rest) >= pseudoLen {
					set[rest[:pseudoLen]] = struct{}{}
				}
				return true
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list patients: %w", dbErr(err))
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// LoadPatient reads and decrypts the records of the patient with the
// hospital's id patientID (the store keys it by pseudonym); its
// Patient.ID is the pseudonym.
func (s *Store) LoadPatient(patientID string) (fhir.PatientData, error) {
	return s.loadPatient(s.Pseudonym(patientID))
}

// loadPatient reads and decrypts one patient's records.
func (s *Store) loadPatient(pseudo string) (fhir.PatientData, error) {
	pd := fhir.PatientData{Patient: fhir.Patient{ID: pseudo}}
	var derr error // decode error, set inside iterators
	err := s.db.View(func(tx *buntdb.Tx) error {
		kr := s.keys.Load()
		key := prefixPatient + pseudo
		v, err := tx.Get(key)
		switch {
		case errors.Is(err, buntdb.ErrNotFound):
		case err != nil:
			return err
		default:
			var r patientRec
			if err := openRec(kr, key, v, &r); err != nil {
				return fmt.Errorf("patient record: %w", err)
			}
			pd.Patient.Version = r.version()
			pd.Patient.BirthDate, pd.Patient.Gender = r.BirthDate, r.Gender
			pd.Patient.Deceased, pd.Patient.DeceasedTime = r.Deceased, r.DeceasedTime
		}
		err = scanPrefix(tx, prefixObs+pseudo+":", func(key, v string) bool {
			var r obsRec
			if derr = openRec(kr, key, v, &r); derr != nil {
				derr = fmt.Errorf("observation record: %w", derr)
				return false
			}
			pd.Observations = append(pd.Observations, fhir.Observation{
				ID: key[len(prefixObs)+pseudoLen+1:], Version: r.version(), PatientID: pseudo,
				Code: r.Code, Unit: r.Unit, Value: r.Value, Time: r.Time,
			})
			return true
		})
		if err != nil || derr != nil {
			return errors.Join(err, derr)
		}
		err = scanPrefix(tx, prefixCond+pseudo+":", func(key, v string) bool {
			var r condRec
			if derr = openRec(kr, key, v, &r); derr != nil {
				derr = fmt.Errorf("condition record: %w", derr)
				return false
			}
			pd.Conditions = append(pd.Conditions, fhir.Condition{
				ID: key[len(prefixCond)+pseudoLen+1:], Version: r.version(), PatientID: pseudo,
				System: r.System, Code: r.Code, Onset: r.Onset,
			})
			return true
		})
		if err != nil || derr != nil {
			return errors.Join(err, derr)
		}
		err = scanPrefix(tx, prefixEnc+pseudo+":", func(key, v string) bool {
			var r encRec
			if derr = openRec(kr, key, v, &r); derr != nil {
				derr = fmt.Errorf("encounter record: %w", derr)
				return false
			}
			pd.Encounters = append(pd.Encounters, fhir.Encounter{
				ID: key[len(prefixEnc)+pseudoLen+1:], Version: r.version(), PatientID: pseudo,
				Class: r.Class, Start: r.Start, End: r.End, Discharge: r.Discharge,
			})
			return true
		})
		return errors.Join(err, derr)
	})
	if err != nil {
		return fhir.PatientData{}, fmt.Errorf("load patient: %w", dbErr(err))
	}
	fhir.SortRecords(&pd)
	return pd, nil
}

// openRec decrypts and decodes a value stored under key.
func openRec(kr *keyring, key, val string, rec any) error {
	b, err := kr.open([]byte(key), []byte(val))
	if err != nil {
		return ErrCorrupt
	}
	if err := json.Unmarshal(b, rec); err != nil {
		return fmt.Errorf("%w: does not decode", ErrCorrupt)
	}
	return nil
}

// Counts returns the number of patient, observation and condition records.
func (s *Store) Counts() (patients, observations, conditions int, err error) {
	err = s.db.View(func(tx *buntdb.Tx) error {
		for _, c := range []struct {
			prefix string
			n      *int
		}{{prefixPatient, &patients}, {prefixObs, &observations}, {prefixCond, &conditions}} {
			if err := scanPrefix(tx, c.prefix, func(string, string) bool { *c.n++; return true }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("count: %w", dbErr(err))
	}
	return patients, observations, conditions, nil
}

// scanPrefix calls fn for each key with the prefix, in key order.
func scanPrefix(tx *buntdb.Tx, prefix string, fn func(key, val string) bool) error {
	return tx.AscendGreaterOrEqual("", prefix, func(key, val string) bool {
		if !strings.HasPrefix(key, prefix) {
			return false
		}
		return fn(key, val)
	})
}

// dbErr maps buntdb's closed error to ErrClosed.
func dbErr(err error) error {
	if errors.Is(err, buntdb.ErrDatabaseClosed) {
		return ErrClosed
	}
	return err
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}

// seal returns version(1) | nonce(12) | AES-GCM(plaintext, ad).
func seal(aead cipher.AEAD, ad, plaintext []byte) ([]byte, error) {
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out[0] = sealVersion
	if _, err := io.ReadFull(rand.Reader, out[1:]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return aead.Seal(out, out[1:], plaintext, ad), nil // #nosec G407 -- the nonce is read from crypto/rand into out[1:] just above
}

// open reverses seal.
func open(aead cipher.AEAD, ad, sealed []byte) ([]byte, error) {
	ns := aead.NonceSize()
	if len(sealed) < 1+ns+aead.Overhead() || sealed[0] != sealVersion {
		return nil, ErrCorrupt
	}
	b, err := aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], ad)
	if err != nil {
		return nil, ErrCorrupt
	}
	return b, nil
}

// ownerOnly makes the store file at path readable and writable by its
// owner only. buntdb creates it, and rewrites it at every compaction,
// with the process's umask (0644 under the usual 022); its values are
// encrypted, but the file is the site's patient data and gets the mode of
// a key file. The in-memory store has no file.
func ownerOnly(path string) error {
	if path == MemoryPath {
		return nil
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("make the store file owner-only: %w", err)
	}
	return nil
}
