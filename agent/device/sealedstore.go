package device

import (
	"bytes"
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/tidwall/buntdb"
)

// StoreFile is the name of the SealedStore file the Subscriber keeps in
// Config.StoreDir.
const StoreFile = "mqtt-store.db"

// StoreKeySize is the size of Config.StoreKey and of NewSealedStore's key.
const StoreKeySize = 32

const (
	// storeKeyLabel is the HKDF info that derives the store's AES key from
	// the key it is given, so that key may also serve another purpose.
	storeKeyLabel = "cohort agent/device mqtt in-flight store v1"
	// seqSize is the size of an entry's sequence number, the first bytes
	// of each stored value.
	seqSize = 8
	// storeShrinkMinSize is the file size beyond which buntdb may rewrite
	// the file to its live entries (at most one in-flight window, a few
	// KiB): the file stays small instead of growing to buntdb's default
	// 32 MiB of old, deleted (sealed) entries.
	storeShrinkMinSize = 1 << 20
)

// SealedStore is a paho mqtt.Store that keeps paho's in-flight packets
// in one buntdb file, each sealed before it reaches the disk: the packet as
// it goes on the wire (packets.ControlPacket.Write) is encrypted with
// AES-256-GCM under a random 12-byte nonce, with the entry's key (paho's
// "i.<id>" or "o.<id>") and sequence number as associated data. A stored
// value is
//
//	sequence (8 bytes, big-endian) | nonce (12 bytes) | ciphertext and tag
//
// so neither payloads nor topics are ever written in plaintext (only the
// key names, message ids, are). The sequence number orders All by the
// time of each Put, like paho's FileStore (file modification times). A
// value that does not open (a damaged file, another key, a value moved to
// another entry) is logged as corrupt, deleted, and Get returns nil for it,
// as paho's stores do with unreadable entries.
//
// Durability: the file is synced once a second (buntdb's EverySecond), not
// on each Put and Del. For the Subscriber the store is session
// bookkeeping, not the source of any message: the broker keeps every
// unacknowledged QoS 1 message in the persistent session and delivers it
// again after a reconnect or a crash, and paho itself discards stored
// inbound messages when it resumes a session. A crash may lose the last
// second of Puts and Dels, or leave a torn last entry (buntdb truncates it
// on open); neither loses a reading. BenchmarkMosquittoEndToEnd measures a
// sync on every Put and Del (paho=sealed-fsync) for comparison.
//
// The methods follow paho's MemoryStore and FileStore: safe for concurrent
// use; errors (paho's interface has no error results) are logged, never
// returned, and never panic. NewSealedStore opens the file, so a store
// that cannot be used fails there; Open is then a no-op. Close syncs and
// closes the file (it is idempotent); Open after Close opens it again, as
// paho does when a client connects again after Disconnect. A closed store
// ignores Put, Del and Reset, and Get and All return nil. One file must
// serve one client at a time.
type SealedStore struct {
	path string
	aead cipher.AEAD
	sync buntdb.SyncPolicy
	log  *slog.Logger

	// mu guards db: read-held by every operation that uses db, write-held
	// by Open and Close, which replace it. Only buntdb's own lock is taken
	// while it is held.
	mu  sync.RWMutex
	db  *buntdb.DB // nil when closed
	seq atomic.Uint64
}

var _ mqtt.Store = (*SealedStore)(nil)

// NewSealedStore opens (creating it if need be, with mode 0600) the sealed
// store file at path, under key (StoreKeySize bytes; ErrBadStoreKey
// otherwise). The AES-256 key is derived from key with HKDF-SHA256 and a
// label of the store's own, so key may also be used elsewhere (such as the
// agent's master key) without the two ever encrypting under one AES key.
// The directory must exist and, like every directory that holds PHI, be
// private to the agent. logger receives errors and corrupt entries (key
// names, never contents); nil discards them.
func NewSealedStore(path string, key []byte, logger *slog.Logger) (*SealedStore, error) {
	return newSealedStore(path, key, logger, buntdb.EverySecond)
}

// newSealedStore is NewSealedStore with a sync policy (benchmarks).
func newSealedStore(path string, key []byte, logger *slog.Logger, policy buntdb.SyncPolicy) (*SealedStore, error) {
	if len(key) != StoreKeySize {
		return nil, fmt.Errorf("%w: got %d bytes", ErrBadStoreKey, len(key))
	}
	dk, err := hkdf.Key(sha256.New, key, nil, storeKeyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("derive mqtt store key: %w", err)
	}
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, fmt.Errorf("mqtt store cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("mqtt store cipher: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &SealedStore{path: path, aead: aead, sync: policy, log: logger}
	db, err := s.openDB()
	if err != nil {
		return nil, err
	}
	s.db = db
	return s, nil
}

// openDB opens the buntdb file and sets s.seq past every stored entry's.
// It is called with mu write-held (or before s is shared).
func (s *SealedStore) openDB() (*buntdb.DB, error) {
	// Create the file with mode 0600 (buntdb would use 0666 less the
	// umask).
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open mqtt store: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open mqtt store: %w", err)
	}
	db, err := buntdb.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("open mqtt store %s: %w", s.path, err)
	}
	var cfg buntdb.Config
	if err := db.ReadConfig(&cfg); err != nil {
		return nil, errors.Join(fmt.Errorf("open mqtt store: %w", err), db.Close())
	}
	cfg.SyncPolicy = s.sync
	cfg.AutoShrinkMinSize = storeShrinkMinSize
	if err := db.SetConfig(cfg); err != nil {
		return nil, errors.Join(fmt.Errorf("open mqtt store: %w", err), db.Close())
	}
	var last uint64
	err = db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(_, v string) bool {
			last = max(last, valueSeq(v))
			return true
		})
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open mqtt store: %w", err), db.Close())
	}
	s.seq.Store(last)
	return db, nil
}

// Open opens the store's file again after Close; on an open store it does
// nothing. If the file cannot be opened the error is logged and the store
// stays closed.
func (s *SealedStore) Open() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		return
	}
	db, err := s.openDB()
	if err != nil {
		s.log.Error("mqtt store: cannot open; in-flight state is not kept", "err", err)
		return
	}
	s.db = db
}

// Close syncs and closes the store's file. It is idempotent.
func (s *SealedStore) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return
	}
	if err := s.db.Close(); err != nil {
		s.log.Error("mqtt store: close", "err", err)
	}
	s.db = nil
}

// Put seals packet m and stores it under key, replacing any entry there
// (which then sorts last in All, as a rewritten file does in paho's
// FileStore).
func (s *SealedStore) Put(key string, m packets.ControlPacket) {
	if m == nil {
		s.log.Error("mqtt store: put of a nil packet", "key", key)
		return
	}
	var buf bytes.Buffer
	if err := m.Write(&buf); err != nil {
		s.log.Error("mqtt store: packet does not encode", "key", key, "err", err)
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		s.log.Warn("mqtt store: put on a closed store", "key", key)
		return
	}
	err := s.db.Update(func(tx *buntdb.Tx) error {
		// Numbered inside the write transaction: sequence follows commit
		// order.
		v, err := s.seal(key, s.seq.Add(1), buf.Bytes())
		if err != nil {
			return err
		}
		_, _, err = tx.Set(key, string(v), nil)
		return err
	})
	if err != nil {
		s.log.Error("mqtt store: put", "key", key, "err", err)
	}
}

// Get returns the packet stored under key, or nil if there is none or it
// does not open (a corrupt entry is logged and deleted).
func (s *SealedStore) Get(key string) packets.ControlPacket {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		s.log.Warn("mqtt store: get on a closed store", "key", key)
		return nil
	}
	var val string
	err := s.db.View(func(tx *buntdb.Tx) error {
		var err error
		val, err = tx.Get(key)
		return err
	})
	switch {
	case errors.Is(err, buntdb.ErrNotFound):
		s.log.Debug("mqtt store: get of a missing entry", "key", key)
		return nil
	case err != nil:
		s.log.Error("mqtt store: get", "key", key, "err", err)
		return nil
	}
	p, err := s.decode(key, val)
	if err == nil {
		return p
	}
	s.log.Warn("mqtt store: corrupt entry dropped", "key", key, "err", err)
	err = s.db.Update(func(tx *buntdb.Tx) error {
		cur, err := tx.Get(key)
		if err != nil || cur != val {
			return nil // gone, or replaced by a Put since
		}
		_, err = tx.Delete(key)
		return err
	})
	if err != nil {
		s.log.Error("mqtt store: delete corrupt entry", "key", key, "err", err)
	}
	return nil
}

// All returns the keys of every stored entry, oldest Put first.
func (s *SealedStore) All() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		s.log.Warn("mqtt store: all on a closed store")
		return nil
	}
	type entry struct {
		key string
		seq uint64
	}
	var entries []entry
	err := s.db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(k, v string) bool {
			entries = append(entries, entry{k, valueSeq(v)})
			return true
		})
	})
	if err != nil {
		s.log.Error("mqtt store: all", "err", err)
		return nil
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.key, b.key))
	})
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.key)
	}
	return keys
}

// Del deletes the entry under key, if there is one.
func (s *SealedStore) Del(key string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		s.log.Warn("mqtt store: del on a closed store", "key", key)
		return
	}
	err := s.db.Update(func(tx *buntdb.Tx) error {
		_, err := tx.Delete(key)
		return err
	})
	switch {
	case errors.Is(err, buntdb.ErrNotFound):
		s.log.Debug("mqtt store: del of a missing entry", "key", key)
	case err != nil:
		s.log.Error("mqtt store: del", "key", key, "err", err)
	}
}

// Reset deletes every entry.
func (s *SealedStore) Reset() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		s.log.Warn("mqtt store: reset on a closed store")
		return
	}
	if err := s.db.Update(func(tx *buntdb.Tx) error { return tx.DeleteAll() }); err != nil {
		s.log.Error("mqtt store: reset", "err", err)
	}
}

// seal returns seq | nonce | AES-GCM(plain, seq|key).
func (s *SealedStore) seal(key string, seq uint64, plain []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, seqSize+ns, seqSize+ns+len(plain)+s.aead.Overhead())
	binary.BigEndian.PutUint64(out, seq)
	if _, err := io.ReadFull(rand.Reader, out[seqSize:]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return s.aead.Seal(out, out[seqSize:], plain, associatedData(out[:seqSize], key)), nil // #nosec G407 -- the nonce is read from crypto/rand into out[seqSize:] just above
}

// open reverses seal.
func (s *SealedStore) open(key, val string) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(val) < seqSize+ns+s.aead.Overhead() {
		return nil, fmt.Errorf("%w: too short", ErrCorruptEntry)
	}
	v := []byte(val)
	plain, err := s.aead.Open(nil, v[seqSize:seqSize+ns], v[seqSize+ns:], associatedData(v[:seqSize], key))
	if err != nil {
		return nil, fmt.Errorf("%w: does not decrypt (damaged, another key, or moved)", ErrCorruptEntry)
	}
	return plain, nil
}

// decode opens a stored value and reads its packet, which must use every
// byte.
func (s *SealedStore) decode(key, val string) (packets.ControlPacket, error) {
	plain, err := s.open(key, val)
	if err != nil {
		return nil, err
	}
	r := bytes.NewReader(plain)
	p, err := packets.ReadPacket(r)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: not an mqtt packet: %w", ErrCorruptEntry, err)
	case p == nil:
		return nil, fmt.Errorf("%w: not an mqtt packet", ErrCorruptEntry)
	case r.Len() != 0:
		return nil, fmt.Errorf("%w: %d bytes after the packet", ErrCorruptEntry, r.Len())
	}
	return p, nil
}

// associatedData is seq (seqSize bytes) followed by key.
func associatedData(seq []byte, key string) []byte {
	ad := make([]byte, 0, seqSize+len(key))
	return append(append(ad, seq...), key...)
}

// valueSeq is a stored value's sequence number (0 if it is too short).
func valueSeq(v string) uint64 {
	if len(v) < seqSize {
		return 0
	}
	return binary.BigEndian.Uint64([]byte(v[:seqSize]))
}
