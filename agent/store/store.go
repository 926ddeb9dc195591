// Package store is the site agent's encrypted local store, on buntdb.
//
// Envelope encryption: a random 256-bit data key, generated when a store is
// first created, is kept in the file wrapped (AES-256-GCM) under the
// operator's master key. Every value is sealed with AES-256-GCM under the data
// key, with a random nonce and the record's buntdb key as associated data,
// so a value copied to another key does not open.
//
// Keys carry no PHI: a patient appears only as a pseudonym, the first 32 hex
// digits of HMAC-SHA256(site secret, "patient:"+id), and a resource only as an
// HMAC of its id. Values hold only what the feature builder needs (birth
// date, gender, codes, numbers, times), never raw ids. Records read back
// carry the pseudonyms in place of the ids.
//
// Layout:
//
//	meta:datakey                 data key, wrapped under the master key
//	meta:pseudocheck             proof of the pseudonym key, sealed
//	pt:<pseudo>                  Patient
//	obs:<pseudo>:<hmac of id>    Observation
//	cond:<pseudo>:<hmac of id>   Condition
package store

import (
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
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
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
	prefixPatient = "pt:"
	prefixObs     = "obs:"
	prefixCond    = "cond:"
	prefixEnc     = "enc:"
)

// Config configures a Store.
type Config struct {
	// Path is the buntdb file; MemoryPath (":memory:") keeps everything in
	// memory.
	Path string
	// MasterKey (32 bytes) wraps the store's data key. Keep it outside the
	// store's directory (a key file from LoadOrCreateKey, or a secret
	// manager).
	MasterKey []byte
	// PseudonymKey is the site secret (at least 32 bytes) behind patient
	// pseudonyms. It must stay the same for the life of the store and never
	// leave the site.
	PseudonymKey []byte
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

// Store is the encrypted local store. It implements fhir.Sink: writes are
// upserts keyed by resource id, so ingesting the same resource twice leaves
// one record. It is safe for concurrent use.
type Store struct {
	db        *buntdb.DB
	aead      cipher.AEAD // under the data key
	pseudoKey []byte
	log       *slog.Logger

	closeMu  sync.Mutex
	closed   bool
	closeErr error
}

var _ fhir.Sink = (*Store)(nil)

// Open opens or creates the store at cfg.Path. A new store gets a fresh
// data key wrapped under cfg.MasterKey; an existing one must be opened with
// the same master key (else ErrWrongKey) and pseudonym key (else
// ErrPseudonymKeyChanged).
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := buntdb.Open(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("open db: %w", err)
	}
	var bc buntdb.Config
	if err := db.ReadConfig(&bc); err != nil {
		db.Close()
		return nil, fmt.Errorf("read db config: %w", err)
	}
	// Every committed write is on disk before the write returns.
	bc.SyncPolicy = buntdb.Always
	if err := db.SetConfig(bc); err != nil {
		db.Close()
		return nil, fmt.Errorf("set db config: %w", err)
	}
	// No buntdb indexes are created: every scan is by key prefix, which the
	// key B-tree serves in order. (buntdb does not persist indexes; any
	// index added later must be created here, after every open.)
	s := &Store{db: db, pseudoKey: append([]byte(nil), cfg.PseudonymKey...), log: log}
	created, err := s.initKeys(cfg.MasterKey)
	if err != nil {
		db.Close()
		return nil, err
	}
	log.Info("store opened", "new", created, "in_memory", cfg.Path == MemoryPath)
	return s, nil
}

// initKeys unwraps (or, in a new store, creates) the data key and checks
// (or records) the pseudonym key.
func (s *Store) initKeys(masterKey []byte) (created bool, err error) {
	master, err := newAEAD(masterKey)
	if err != nil {
		return false, err
	}
	err = s.db.Update(func(tx *buntdb.Tx) error {
		wrapped, err := tx.Get(keyDataKey)
		switch {
		case errors.Is(err, buntdb.ErrNotFound):
			dk := make([]byte, dataKeySize)
			if _, err := io.ReadFull(rand.Reader, dk); err != nil {
				return fmt.Errorf("generate data key: %w", err)
			}
			w, err := seal(master, []byte(keyDataKey), dk)
			if err != nil {
				return err
			}
			if _, _, err := tx.Set(keyDataKey, string(w), nil); err != nil {
				return fmt.Errorf("store data key: %w", err)
			}
			if s.aead, err = newAEAD(dk); err != nil {
				return err
			}
			created = true
		case err != nil:
			return fmt.Errorf("read data key: %w", err)
		default:
			dk, err := open(master, []byte(keyDataKey), []byte(wrapped))
			if err != nil {
				return ErrWrongKey
			}
			if s.aead, err = newAEAD(dk); err != nil {
				return err
			}
		}

		check := s.mac("store-check:pseudonym-key")
		sealed, err := tx.Get(keyPseudoChk)
		switch {
		case errors.Is(err, buntdb.ErrNotFound):
			v, err := seal(s.aead, []byte(keyPseudoChk), check)
			if err != nil {
				return err
			}
			if _, _, err := tx.Set(keyPseudoChk, string(v), nil); err != nil {
				return fmt.Errorf("store pseudonym check: %w", err)
			}
		case err != nil:
			return fmt.Errorf("read pseudonym check: %w", err)
		default:
			got, err := open(s.aead, []byte(keyPseudoChk), []byte(sealed))
			if err != nil {
				return fmt.Errorf("pseudonym check: %w", ErrCorrupt)
			}
			if subtle.ConstantTimeCompare(got, check) != 1 {
				return ErrPseudonymKeyChanged
			}
		}
		return nil
	})
	return created, err
}

// Close closes the store. It is idempotent: later calls return the first
// call's result.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if !s.closed {
		s.closed = true
		s.closeErr = s.db.Close()
	}
	return s.closeErr
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
type (
	patientRec struct {
		BirthDate    time.Time `json:"b,omitzero"`
		Gender       string    `json:"g,omitempty"`
		Deceased     bool      `json:"d,omitempty"`
		DeceasedTime time.Time `json:"dt,omitzero"`
	}
	encRec struct {
		Class     string    `json:"k,omitempty"`
		Start     time.Time `json:"s"`
		End       time.Time `json:"e,omitzero"`
		Discharge string    `json:"x,omitempty"`
	}
	obsRec struct {
		Code  string    `json:"c"`
		Unit  string    `json:"u,omitempty"`
		Value float64   `json:"v"`
		Time  time.Time `json:"t,omitzero"`
	}
	condRec struct {
		System string    `json:"s,omitempty"`
		Code   string    `json:"c"`
		Onset  time.Time `json:"o,omitzero"`
	}
)

// kv is one sealed record ready to write.
type kv struct{ key, val string }

func (s *Store) patientKV(p fhir.Patient) (kv, error) {
	if p.ID == "" {
		return kv{}, fmt.Errorf("patient: %w: empty id", ErrInvalidRecord)
	}
	return s.sealKV(prefixPatient+s.Pseudonym(p.ID), patientRec{BirthDate: p.BirthDate.UTC(), Gender: p.Gender,
		Deceased: p.Deceased, DeceasedTime: p.DeceasedTime.UTC()})
}

func (s *Store) encounterKV(e fhir.Encounter) (kv, error) {
	if e.ID == "" || e.PatientID == "" {
		return kv{}, fmt.Errorf("encounter: %w: empty id", ErrInvalidRecord)
	}
	key := prefixEnc + s.Pseudonym(e.PatientID) + ":" + s.resourceHash("encounter", e.ID)
	return s.sealKV(key, encRec{Class: e.Class, Start: e.Start.UTC(), End: e.End.UTC(), Discharge: e.Discharge})
}

func (s *Store) observationKV(o fhir.Observation) (kv, error) {
	switch {
	case o.ID == "" || o.PatientID == "":
		return kv{}, fmt.Errorf("observation: %w: empty id", ErrInvalidRecord)
	case math.IsNaN(o.Value) || math.IsInf(o.Value, 0):
		return kv{}, fmt.Errorf("observation: %w: value not finite", ErrInvalidRecord)
	}
	key := prefixObs + s.Pseudonym(o.PatientID) + ":" + s.resourceHash("observation", o.ID)
	return s.sealKV(key, obsRec{Code: o.Code, Unit: o.Unit, Value: o.Value, Time: o.Time.UTC()})
}

func (s *Store) conditionKV(c fhir.Condition) (kv, error) {
	if c.ID == "" || c.PatientID == "" {
		return kv{}, fmt.Errorf("condition: %w: empty id", ErrInvalidRecord)
	}
	key := prefixCond + s.Pseudonym(c.PatientID) + ":" + s.resourceHash("condition", c.ID)
	return s.sealKV(key, condRec{System: c.System, Code: c.Code, Onset: c.Onset.UTC()})
}

func (s *Store) sealKV(key string, rec any) (kv, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return kv{}, fmt.Errorf("encode record: %w", err)
	}
	v, err := seal(s.aead, []byte(key), b)
	if err != nil {
		return kv{}, err
	}
	return kv{key: key, val: string(v)}, nil
}

// write commits records in one transaction (one fsync).
func (s *Store) write(recs ...kv) error {
	err := s.db.Update(func(tx *buntdb.Tx) error {
		for _, r := range recs {
			if _, _, err := tx.Set(r.key, r.val, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("write: %w", dbErr(err))
	}
	return nil
}

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
// pseudonym; Observation and Condition ids are the HMACs from their keys.
// Observations are sorted by time. A patient known only from observations
// or conditions has a Patient with just its ID set. fn runs outside any
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

// loadPatient reads and decrypts one patient's records.
func (s *Store) loadPatient(pseudo string) (fhir.PatientData, error) {
	pd := fhir.PatientData{Patient: fhir.Patient{ID: pseudo}}
	var derr error // decode error, set inside iterators
	err := s.db.View(func(tx *buntdb.Tx) error {
		key := prefixPatient + pseudo
		v, err := tx.Get(key)
		switch {
		case errors.Is(err, buntdb.ErrNotFound):
		case err != nil:
			return err
		default:
			var r patientRec
			if err := s.openRec(key, v, &r); err != nil {
				return fmt.Errorf("patient record: %w", err)
			}
			pd.Patient.BirthDate, pd.Patient.Gender = r.BirthDate, r.Gender
			pd.Patient.Deceased, pd.Patient.DeceasedTime = r.Deceased, r.DeceasedTime
		}
		err = scanPrefix(tx, prefixObs+pseudo+":", func(key, v string) bool {
			var r obsRec
			if derr = s.openRec(key, v, &r); derr != nil {
				derr = fmt.Errorf("observation record: %w", derr)
				return false
			}
			pd.Observations = append(pd.Observations, fhir.Observation{
				ID: key[len(prefixObs)+pseudoLen+1:], PatientID: pseudo,
				Code: r.Code, Unit: r.Unit, Value: r.Value, Time: r.Time,
			})
			return true
		})
		if err != nil || derr != nil {
			return errors.Join(err, derr)
		}
		err = scanPrefix(tx, prefixCond+pseudo+":", func(key, v string) bool {
			var r condRec
			if derr = s.openRec(key, v, &r); derr != nil {
				derr = fmt.Errorf("condition record: %w", derr)
				return false
			}
			pd.Conditions = append(pd.Conditions, fhir.Condition{
				ID: key[len(prefixCond)+pseudoLen+1:], PatientID: pseudo,
				System: r.System, Code: r.Code, Onset: r.Onset,
			})
			return true
		})
		if err != nil || derr != nil {
			return errors.Join(err, derr)
		}
		err = scanPrefix(tx, prefixEnc+pseudo+":", func(key, v string) bool {
			var r encRec
			if derr = s.openRec(key, v, &r); derr != nil {
				derr = fmt.Errorf("encounter record: %w", derr)
				return false
			}
			pd.Encounters = append(pd.Encounters, fhir.Encounter{
				ID: key[len(prefixEnc)+pseudoLen+1:], PatientID: pseudo,
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
func (s *Store) openRec(key, val string, rec any) error {
	b, err := open(s.aead, []byte(key), []byte(val))
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
	return aead.Seal(out, out[1:], plaintext, ad), nil
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
