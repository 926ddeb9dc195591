package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"

	"github.com/cohort-fl/cohort/clock"
)

// Config says where a Log lives and what it is called.
type Config struct {
	// Dir is the log's directory (created with mode 0700 if missing).
	Dir string
	// Origin names the log in its checkpoints, e.g. "cohort-audit/<cluster
	// id>": at most MaxOriginSize bytes of UTF-8, no line breaks.
	Origin string
	// Logger receives warnings from Open (a line cut by a crash truncated,
	// entries no checkpoint covers); nil discards them.
	Logger *slog.Logger
	// Clock stamps checkpoints; nil is the system clock.
	Clock clock.Clock
}

// Validate says what is wrong with c, or nil.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("audit: empty directory")
	}
	if err := checkOrigin(c.Origin); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Log is an append-only Merkle log in a directory. It is safe for one
// writer and any number of concurrent readers.
type Log struct {
	origin   string
	paths    dirPaths
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	clock    clock.Clock
	logger   *slog.Logger
	warnings []string

	mu          sync.RWMutex
	entries     *os.File // entries.jsonl, opened to append
	checkpoints *os.File // checkpoints.jsonl, opened to append
	tree        *tree
	offsets     []int64 // offsets[i]: where entry i starts; offsets[size]: the end
	latest      *Checkpoint
	buf         []byte // reused by AppendAt
	// failed is set when a write failed in a way that may leave the files
	// unlike the memory; AppendAt and Checkpoint refuse until Reset
	// succeeds (or the log is reopened, which checks the files).
	failed error
	closed bool
}

// Open opens the log in dir, or creates it. See OpenConfig.
func Open(dir, origin string) (*Log, error) {
	return OpenConfig(Config{Dir: dir, Origin: origin})
}

// OpenConfig opens the log in cfg.Dir, or creates it: the directory (0700),
// and the signing key node.key (0600) on first use. It re-reads and
// re-hashes every entry and checks the tree against every checkpoint; any
// mismatch is a *TamperError wrapping ErrTampered. A last line cut by a
// crash (no trailing newline) is truncated, with a warning. A key file that
// group or others may access is refused (ErrBadKey).
func OpenConfig(cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Log{origin: cfg.Origin, clock: cfg.Clock, logger: cfg.Logger}
	if l.clock == nil {
		l.clock = clock.System()
	}
	if l.logger == nil {
		l.logger = slog.New(slog.DiscardHandler)
	}
	if err := l.open(cfg.Dir); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Dir, err)
	}
	return l, nil
}

func (l *Log) open(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	p, err := resolvePaths(dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	l.paths = p
	if err := l.loadOrCreateKey(); err != nil {
		return err
	}
	d, err := scanDir(p, l.pub, l.origin)
	if err != nil {
		return err
	}
	for _, w := range d.warnings {
		l.warn(w)
	}

	// Verified: now repair what a crash left.
	if d.entries.torn > 0 {
		if err := os.Truncate(p.entries, d.entries.offsets[len(d.entries.offsets)-1]); err != nil {
			return fmt.Errorf("audit: truncate the cut last line: %w", err)
		}
		l.warn(fmt.Sprintf("truncated the last %d bytes of %s", d.entries.torn, p.entries))
	}
	if d.cps.torn > 0 {
		if err := os.Truncate(p.checkpoints, d.cps.end); err != nil {
			return fmt.Errorf("audit: truncate the cut last line: %w", err)
		}
		l.warn(fmt.Sprintf("truncated the last %d bytes of %s", d.cps.torn, p.checkpoints))
	}
	dirChanged := false // a rename or creation to fsync the directory for
	if p.pendingReset {
		dirChanged = true
		final := p.entries[:len(p.entries)-len(tmpSuffix)]
		if err := os.Rename(p.entries, final); err != nil {
			return fmt.Errorf("audit: finish an interrupted reset: %w", err)
		}
		l.paths.entries, l.paths.pendingReset = final, false
		l.warn("finished a Reset that a crash interrupted")
	}
	// Leftovers of a Reset interrupted before it renamed anything.
	for _, path := range []string{l.paths.entries + tmpSuffix, l.paths.checkpoints + tmpSuffix} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("audit: %w", err)
		}
	}

	l.tree = d.entries.tree
	l.offsets = d.entries.offsets
	if n := len(d.cps.cps); n > 0 {
		latest := d.cps.cps[n-1]
		l.latest = &latest
	}
	for _, path := range []string{l.paths.entries, l.paths.checkpoints} {
		if ok, err := exists(path); err != nil {
			return fmt.Errorf("audit: %w", err)
		} else if !ok {
			dirChanged = true
		}
	}
	if err := l.openFiles(); err != nil {
		return err
	}
	if dirChanged {
		if err := syncDir(dir); err != nil {
			l.closeFiles()
			return fmt.Errorf("audit: %w", err)
		}
	}
	return nil
}

func (l *Log) loadOrCreateKey() error {
	priv, err := loadKey(l.paths.key, true)
	if errors.Is(err, fs.ErrNotExist) {
		fi, serr := os.Stat(l.paths.checkpoints)
		if serr == nil && fi.Size() > 0 {
			return fmt.Errorf("%w: %s is missing but %s holds checkpoints signed with it; restore the key, or move the directory aside to start a new log",
				ErrBadKey, l.paths.key, l.paths.checkpoints)
		}
		priv, err = createKey(l.paths.key)
	}
	if err != nil {
		if errors.Is(err, ErrBadKey) {
			return err
		}
		return fmt.Errorf("audit: key: %w", err)
	}
	l.priv = priv
	l.pub = priv.Public().(ed25519.PublicKey)
	return nil
}

// openFiles opens both files to append (creating them).
func (l *Log) openFiles() error {
	e, err := os.OpenFile(l.paths.entries, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	c, err := os.OpenFile(l.paths.checkpoints, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		e.Close()
		return fmt.Errorf("audit: %w", err)
	}
	l.entries, l.checkpoints = e, c
	return nil
}

func (l *Log) closeFiles() error {
	return errors.Join(l.entries.Close(), l.checkpoints.Close())
}

func (l *Log) warn(msg string) {
	l.warnings = append(l.warnings, msg)
	l.logger.Warn("audit log: "+msg, "dir", l.paths.dir)
}

// Warnings returns what Open found and repaired or could not check (also
// sent to Config.Logger).
func (l *Log) Warnings() []string {
	return append([]string(nil), l.warnings...)
}

// Close closes the files. It is idempotent; in-memory reads (Size, Root,
// proofs) keep working after it.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.closeFiles()
}

// Origin returns the log's name in its checkpoints.
func (l *Log) Origin() string { return l.origin }

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.paths.dir }

// PublicKey returns the node's checkpoint signing key.
func (l *Log) PublicKey() ed25519.PublicKey {
	return append(ed25519.PublicKey(nil), l.pub...)
}

// Size returns the number of leaves.
func (l *Log) Size() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.size
}

// Root returns the RFC 6962 root of the whole log (for an empty log, the
// SHA-256 of nothing).
func (l *Log) Root() []byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	r, _ := l.tree.rootAt(l.tree.size) // cannot fail at the tree's own size
	return r
}

// RootAt returns the root of the first size leaves.
func (l *Log) RootAt(size uint64) ([]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.rootAt(size)
}

// LeafHash returns the RFC 6962 hash of leaf i, as computed when it was
// appended (or when Open read it).
func (l *Log) LeafHash(i uint64) ([]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i >= l.tree.size {
		return nil, fmt.Errorf("%w: leaf %d of %d", ErrOutOfRange, i, l.tree.size)
	}
	return clone(l.tree.leaf(i)), nil
}

// LeafHashes returns the hashes of leaves start, start+1, ..., at most
// limit of them (limit <= 0: to the end). They are what VerifyEntries takes
// to locate a bad entry.
func (l *Log) LeafHashes(start uint64, limit int) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	end, err := l.span(start, limit)
	if err != nil {
		return nil, err
	}
	hs := make([][]byte, 0, end-start)
	for i := start; i < end; i++ {
		hs = append(hs, clone(l.tree.leaf(i)))
	}
	return hs, nil
}

// span returns the end of the range of at most limit leaves from start.
func (l *Log) span(start uint64, limit int) (uint64, error) {
	size := l.tree.size
	if start > size {
		return 0, fmt.Errorf("%w: start %d beyond size %d", ErrOutOfRange, start, size)
	}
	end := size
	if limit > 0 && uint64(limit) < end-start {
		end = start + uint64(limit)
	}
	return end, nil
}

// InclusionProof returns the RFC 6962 inclusion proof of leaf index in the
// tree of the first size leaves (index < size <= Size()).
func (l *Log) InclusionProof(index, size uint64) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.inclusion(index, size)
}

// ConsistencyProof returns the RFC 6962 consistency proof between the trees
// of the first size1 and size2 leaves (size1 <= size2 <= Size()).
func (l *Log) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.tree.consistency(size1, size2)
}

// Entries returns leaves start, start+1, ..., at most limit of them (limit
// <= 0: to the end). They are read from entries.jsonl at the offsets
// recorded in memory, so a file changed behind the log's back shows in what
// is served (and VerifyEntries finds it). A file cut short is a *TamperError
// naming the first entry it lacks.
func (l *Log) Entries(start uint64, limit int) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	end, err := l.span(start, limit)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, end-start)
	if start == end {
		return out, nil
	}
	lo, hi := l.offsets[start], l.offsets[end]
	buf := make([]byte, hi-lo)
	n, err := l.entries.ReadAt(buf, lo)
	if n < len(buf) {
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("audit: read %s: %w", l.paths.entries, err)
		}
		i := start
		for l.offsets[i+1] <= lo+int64(n) {
			i++
		}
		return nil, entryTamper(i, "is cut short: %s ends at byte %d, inside it (the file was truncated while the log was open)", EntriesFile, lo+int64(n))
	}
	for i := start; i < end; i++ {
		a, b := l.offsets[i]-lo, l.offsets[i+1]-lo
		if buf[b-1] == '\n' {
			b--
		}
		out = append(out, buf[a:b:b])
	}
	return out, nil
}

// All returns every leaf (for a Raft snapshot).
func (l *Log) All() ([][]byte, error) {
	return l.Entries(0, 0)
}

// Checkpoint returns the latest signed checkpoint. A log that has none yet
// (a new, empty log) signs one for its current size. After a crash between
// an append and its checkpoint, the latest checkpoint is for fewer leaves
// than Size() until the next AppendAt (or a replay that reaches the end).
func (l *Log) Checkpoint() (Checkpoint, error) {
	l.mu.RLock()
	cp := l.latest
	l.mu.RUnlock()
	if cp != nil {
		return *cp, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.latest != nil {
		return *l.latest, nil
	}
	if err := l.writable(); err != nil {
		return Checkpoint{}, err
	}
	c, err := l.signLocked()
	return c, err
}

// writable says why the log cannot be written, or nil. l.mu is held.
func (l *Log) writable() error {
	if l.closed {
		return ErrClosed
	}
	if l.failed != nil {
		return fmt.Errorf("audit: refusing to write after an earlier write failed: %w", l.failed)
	}
	return nil
}

// signLocked signs and writes a checkpoint for the current size. l.mu is
// held to write.
func (l *Log) signLocked() (Checkpoint, error) {
	root, err := l.tree.rootAt(l.tree.size)
	if err != nil {
		return Checkpoint{}, err
	}
	c := signCheckpoint(l.priv, l.origin, l.tree.size, root, l.clock.Now())
	line, err := c.marshalLine()
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: encode checkpoint: %w", err)
	}
	if _, err := l.checkpoints.Write(line); err != nil {
		// A cut line is truncated by the next Open; until then, stop.
		l.failed = err
		return Checkpoint{}, fmt.Errorf("audit: write checkpoint: %w", err)
	}
	l.latest = &c
	return c, nil
}

// AppendAt appends leaves as entries first, first+1, .... Leaves the log
// already holds (first < Size(), a replay after a restart) must be the same
// bytes (compared by leaf hash): they are skipped and the rest appended; a
// different one is a *TamperError with its index, matching ErrDiverged and
// ErrTampered. first > Size() is ErrGap.
// If leaves were added, one checkpoint is signed for the new size. It
// returns the new size and root.
//
// Appends reach the operating system before AppendAt returns but are not
// fsynced: Sync does that.
func (l *Log) AppendAt(first uint64, leaves ...[]byte) (size uint64, root []byte, err error) {
	for i, leaf := range leaves {
		if err := checkLeaf(leaf); err != nil {
			return 0, nil, fmt.Errorf("audit: leaf %d: %w", first+uint64(i), err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return 0, nil, err
	}
	size = l.tree.size
	if first > size {
		return 0, nil, fmt.Errorf("%w: append at %d, but the log has %d entries", ErrGap, first, size)
	}
	skip := min(uint64(len(leaves)), size-first)
	for i := range skip {
		idx := first + i
		if !bytes.Equal(hasher.HashLeaf(leaves[i]), l.tree.leaf(idx)) {
			return 0, nil, &TamperError{
				Index:  idx,
				Reason: fmt.Sprintf("entry %d (line %d) differs from the leaf replayed at that index: the local log diverged from the replicated one", idx, idx+1),
				File:   EntriesFile,
				Line:   lineOf(idx),
				Err:    ErrDiverged,
			}
		}
	}
	rest := leaves[skip:]
	if len(rest) == 0 {
		// A replay that reached the end vouches for entries a crash left
		// without a checkpoint.
		if size > 0 && first+skip == size && (l.latest == nil || l.latest.Size != size) {
			if _, err := l.signLocked(); err != nil {
				return 0, nil, err
			}
		}
		root, err = l.tree.rootAt(size)
		return size, root, err
	}

	hashes := make([][]byte, len(rest))
	l.buf = l.buf[:0]
	for i, leaf := range rest {
		hashes[i] = hasher.HashLeaf(leaf)
		l.buf = append(append(l.buf, leaf...), '\n')
	}
	end := l.offsets[size]
	if n, err := l.entries.Write(l.buf); err != nil {
		if n > 0 {
			if terr := l.entries.Truncate(end); terr != nil {
				l.failed = errors.Join(err, terr)
			}
		}
		return 0, nil, fmt.Errorf("audit: write %s: %w", EntriesFile, err)
	}
	for i, h := range hashes {
		l.tree.appendHash(h)
		end += int64(len(rest[i])) + 1
		l.offsets = append(l.offsets, end)
	}
	if cap(l.buf) > 1<<20 {
		l.buf = nil // do not keep a large batch's buffer
	}
	c, err := l.signLocked()
	if err != nil {
		return 0, nil, err
	}
	return c.Size, clone(c.Root), nil
}

// Sync fsyncs entries.jsonl, then checkpoints.jsonl.
func (l *Log) Sync() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	if err := l.entries.Sync(); err != nil {
		return fmt.Errorf("audit: sync %s: %w", EntriesFile, err)
	}
	if err := l.checkpoints.Sync(); err != nil {
		return fmt.Errorf("audit: sync %s: %w", CheckpointsFile, err)
	}
	return nil
}

// Reset replaces the whole log with leaves (a Raft snapshot restored on a
// node that lacks them) and signs one checkpoint for it. Both files are
// written to temporary files, fsynced and renamed (checkpoints first): a
// crash in between leaves a state the next Open completes, never a mix of
// old and new. After a failure past the first rename the log refuses writes
// until a Reset succeeds.
func (l *Log) Reset(leaves [][]byte) error {
	t := &tree{}
	offsets := make([]int64, 1, len(leaves)+1)
	var buf []byte
	for i, leaf := range leaves {
		if err := checkLeaf(leaf); err != nil {
			return fmt.Errorf("audit: leaf %d: %w", i, err)
		}
		t.appendHash(hasher.HashLeaf(leaf))
		buf = append(append(buf, leaf...), '\n')
		offsets = append(offsets, int64(len(buf)))
	}
	root, err := t.rootAt(t.size)
	if err != nil {
		return err
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	c := signCheckpoint(l.priv, l.origin, t.size, root, l.clock.Now())
	line, err := c.marshalLine()
	if err != nil {
		return fmt.Errorf("audit: encode checkpoint: %w", err)
	}
	etmp, ctmp := l.paths.entries+tmpSuffix, l.paths.checkpoints+tmpSuffix
	cleanup := func(err error) error {
		os.Remove(etmp)
		os.Remove(ctmp)
		return fmt.Errorf("audit: reset: %w", err)
	}
	// checkpoints.jsonl.tmp first: a lone entries.jsonl.tmp then always
	// means "checkpoints renamed, entries not yet" (see resolvePaths).
	if err := writeFileSync(ctmp, line); err != nil {
		return cleanup(err)
	}
	if err := writeFileSync(etmp, buf); err != nil {
		return cleanup(err)
	}
	if err := syncDir(l.paths.dir); err != nil {
		return cleanup(err)
	}
	if err := os.Rename(ctmp, l.paths.checkpoints); err != nil {
		return cleanup(err)
	}
	fail := func(err error) error {
		l.failed = err
		return fmt.Errorf("audit: reset: %w", err)
	}
	if err := syncDir(l.paths.dir); err != nil {
		return fail(err)
	}
	if err := os.Rename(etmp, l.paths.entries); err != nil {
		return fail(err)
	}
	if err := syncDir(l.paths.dir); err != nil {
		return fail(err)
	}
	oldE, oldC := l.entries, l.checkpoints
	if err := l.openFiles(); err != nil {
		return fail(err)
	}
	oldE.Close()
	oldC.Close()
	l.tree, l.offsets, l.latest, l.failed = t, offsets, &c, nil
	return nil
}
