package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
)

// File names in a log directory.
const (
	EntriesFile     = "entries.jsonl"
	CheckpointsFile = "checkpoints.jsonl"
	KeyFile         = "node.key"
)

// MaxLeafSize is the largest leaf, in bytes.
const MaxLeafSize = 64 << 10

// tmpSuffix marks the files Reset writes before renaming them.
const tmpSuffix = ".tmp"

// checkLeaf says why a leaf cannot be stored, or nil.
func checkLeaf(leaf []byte) error {
	switch {
	case len(leaf) == 0:
		return fmt.Errorf("%w: empty", ErrInvalidLeaf)
	case len(leaf) > MaxLeafSize:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidLeaf, len(leaf), MaxLeafSize)
	case bytes.IndexByte(leaf, '\n') >= 0:
		return fmt.Errorf("%w: contains a newline", ErrInvalidLeaf)
	}
	return nil
}

// dirPaths are the files of a log directory that count. Reset renames
// checkpoints.jsonl.tmp, then entries.jsonl.tmp: an entries.jsonl.tmp with
// no checkpoints.jsonl.tmp beside it is the entries of an interrupted Reset,
// whose checkpoints are already in place.
type dirPaths struct {
	dir         string
	entries     string
	checkpoints string
	key         string
	// pendingReset: entries is entries.jsonl.tmp, to be renamed.
	pendingReset bool
}

func resolvePaths(dir string) (dirPaths, error) {
	p := dirPaths{
		dir:         dir,
		entries:     filepath.Join(dir, EntriesFile),
		checkpoints: filepath.Join(dir, CheckpointsFile),
		key:         filepath.Join(dir, KeyFile),
	}
	etmp, err := exists(p.entries + tmpSuffix)
	if err != nil {
		return p, err
	}
	ctmp, err := exists(p.checkpoints + tmpSuffix)
	if err != nil {
		return p, err
	}
	if etmp && !ctmp {
		p.entries += tmpSuffix
		p.pendingReset = true
	}
	return p, nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// entriesScan is what reading entries.jsonl found.
type entriesScan struct {
	tree    *tree
	offsets []int64 // offsets[i] is where entry i starts; offsets[size] is the end
	torn    int64   // bytes after the last '\n'
	problem *TamperError
}

// scanEntries reads and hashes every line of path (a missing file is an
// empty log). Lines that cannot be leaves (empty, too long) are hashed like
// the others and the first one is reported in problem.
func scanEntries(path string) (*entriesScan, error) {
	s := &entriesScan{tree: &tree{}, offsets: []int64{0}}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, MaxLeafSize+1)
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			if len(line) == 1 && s.problem == nil {
				s.problem = entryTamper(s.tree.size, "is empty, and the log never writes an empty entry")
			}
			s.tree.appendHash(hasher.HashLeaf(line[:len(line)-1]))
			off += int64(len(line))
			s.offsets = append(s.offsets, off)
		case err == io.EOF:
			s.torn = int64(len(line))
			return s, nil
		case errors.Is(err, bufio.ErrBufferFull):
			// Longer than any leaf: hash it in pieces (RFC 6962 leaf hash).
			h := sha256.New()
			h.Write([]byte{0})
			n := int64(0)
			for errors.Is(err, bufio.ErrBufferFull) {
				h.Write(line)
				n += int64(len(line))
				line, err = br.ReadSlice('\n')
			}
			n += int64(len(line))
			switch {
			case err == io.EOF:
				s.torn = n
				return s, nil
			case err != nil:
				return nil, err
			}
			h.Write(line[:len(line)-1])
			if s.problem == nil {
				s.problem = entryTamper(s.tree.size, "is %d bytes long, more than the largest leaf (%d)", n-1, MaxLeafSize)
			}
			s.tree.appendHash(h.Sum(nil))
			off += n
			s.offsets = append(s.offsets, off)
		default:
			return nil, err
		}
	}
}

// checkpointsScan is what reading checkpoints.jsonl found.
type checkpointsScan struct {
	cps    []Checkpoint // every line, verified, in file order
	end    int64        // bytes in complete lines
	torn   int64        // bytes after the last '\n'
	origin string
}

// scanCheckpoints reads and verifies every line of path with pub (a missing
// file has no checkpoints). A line that does not parse or is not signed by
// pub is a *TamperError; with origin != "", a checkpoint of another origin is
// an ErrOrigin error (with origin == "", the first checkpoint's counts).
func scanCheckpoints(path string, pub ed25519.PublicKey, origin string) (*checkpointsScan, error) {
	s := &checkpointsScan{origin: origin}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Read every line up to the first that is malformed (problem), then
	// verify the signatures of those before it: the first problem by line
	// is the one reported.
	problem, err := readCheckpoints(f, s, KeyID(pub))
	if err != nil {
		return nil, err
	}
	if i, err := firstBadSignature(s.cps, pub); err != nil {
		return s, checkpointTamper(i, "(size %d) was altered: %v", s.cps[i].Size, err)
	}
	for i, c := range s.cps {
		if s.origin == "" {
			s.origin = c.Origin
		}
		if c.Origin != s.origin {
			return s, fmt.Errorf("%w: checkpoint %d (line %d of %s) is for %q, not %q", ErrOrigin, i, i+1, CheckpointsFile, c.Origin, s.origin)
		}
	}
	if problem != nil {
		return s, problem
	}
	return s, nil
}

// readCheckpoints parses the lines of r into s.cps, up to the first line
// that does not parse or names another key than keyID, which it returns.
func readCheckpoints(r io.Reader, s *checkpointsScan, keyID string) (*TamperError, error) {
	br := bufio.NewReaderSize(r, maxCheckpointLine+1)
	for i := 0; ; i++ {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
		case err == io.EOF:
			s.torn = int64(len(line))
			return nil, nil
		case errors.Is(err, bufio.ErrBufferFull):
			n := int64(0)
			for errors.Is(err, bufio.ErrBufferFull) {
				n += int64(len(line))
				line, err = br.ReadSlice('\n')
			}
			n += int64(len(line))
			switch {
			case err == io.EOF:
				s.torn = n
				return nil, nil
			case err != nil:
				return nil, err
			}
			return checkpointTamper(i, "is %d bytes long; no checkpoint is longer than %d", n-1, maxCheckpointLine), nil
		default:
			return nil, err
		}
		c, err := parseCheckpoint(line[:len(line)-1])
		if err != nil {
			return checkpointTamper(i, "does not parse: %v", err), nil
		}
		if c.KeyID != keyID {
			return checkpointTamper(i, "(size %d) is signed by key %q, not this node's key %s: it comes from another node or was forged", c.Size, c.KeyID, keyID), nil
		}
		s.cps = append(s.cps, c)
		s.end += int64(len(line))
	}
}

// firstBadSignature verifies every checkpoint with pub, on up to GOMAXPROCS
// goroutines (a log has a checkpoint per append, and verifying is what
// opening a long log spends its time on), and returns the first that fails.
func firstBadSignature(cps []Checkpoint, pub ed25519.PublicKey) (int, error) {
	const minChunk = 256
	workers := min(runtime.GOMAXPROCS(0), (len(cps)+minChunk-1)/minChunk)
	if workers <= 1 {
		return firstBadIn(cps, 0, pub)
	}
	type result struct {
		i   int
		err error
	}
	results := make([]result, workers)
	chunk := (len(cps) + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*chunk, min((w+1)*chunk, len(cps))
		wg.Go(func() {
			i, err := firstBadIn(cps[lo:hi], lo, pub)
			results[w] = result{i, err}
		})
	}
	wg.Wait()
	for _, r := range results { // chunks are in order: the first failure wins
		if r.err != nil {
			return r.i, r.err
		}
	}
	return 0, nil
}

func firstBadIn(cps []Checkpoint, offset int, pub ed25519.PublicKey) (int, error) {
	for i, c := range cps {
		if err := c.Verify(pub); err != nil {
			return offset + i, err
		}
	}
	return 0, nil
}

// treeCheck is the outcome of comparing a tree with checkpoints.
type treeCheck struct {
	matched int    // checkpoints whose root matches
	maxSize uint64 // the largest checkpoint size
	problem *TamperError
}

// checkTree compares t with every checkpoint, smallest size first, and
// locates the first entry that does not match.
func checkTree(t *tree, cps []Checkpoint) treeCheck {
	var tc treeCheck
	order := make([]int, len(cps))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case cps[a].Size < cps[b].Size:
			return -1
		case cps[a].Size > cps[b].Size:
			return 1
		}
		return 0
	})
	maxIdx := 0 // the checkpoint with the largest size
	for i, c := range cps {
		if c.Size >= tc.maxSize {
			tc.maxSize, maxIdx = c.Size, i
		}
	}
	n := t.size
	var good uint64 // the largest size known to match (0: the empty tree)
	for _, i := range order {
		c := cps[i]
		if c.Size > n {
			tc.problem = missingTail(n, tc.maxSize, maxIdx)
			return tc
		}
		root, err := t.rootAt(c.Size)
		if err != nil {
			tc.problem = checkpointTamper(i, "cannot be checked: %v", err)
			return tc
		}
		if bytes.Equal(root, c.Root) {
			tc.matched++
			good = c.Size
			continue
		}
		tc.problem = locate(t, good, c, i, tc.maxSize)
		return tc
	}
	return tc
}

// missingTail reports entries [n, size) missing: a checkpoint (record i) was
// signed at size beyond the n entries.
func missingTail(n, size uint64, i int) *TamperError {
	if size == n+1 {
		e := entryTamper(n, "is missing: the log has %d entries but checkpoint %d (line %d of %s) was signed at size %d, so the last entry was deleted",
			n, i, i+1, CheckpointsFile, size)
		return e
	}
	return &TamperError{
		Index: n,
		Reason: fmt.Sprintf("entries %d to %d (lines %d to %d) are missing: the log has %d entries but checkpoint %d (line %d of %s) was signed at size %d, so entries were deleted from the end",
			n, size-1, n+1, size, n, i, i+1, CheckpointsFile, size),
		File: EntriesFile,
		Line: lineOf(n),
	}
}

// locate explains why checkpoint c (record i) does not match t, given that
// the tree of the first good leaves matched a checkpoint (or good is 0).
func locate(t *tree, good uint64, c Checkpoint, i int, maxSize uint64) *TamperError {
	if c.Size <= good {
		// Another checkpoint of this size matched: this one signs a
		// different root for the same leaves.
		return checkpointTamper(i, "signs root %s at size %d, but the entries (which match another checkpoint of that size) give %s",
			hex.EncodeToString(c.Root), c.Size, rootHex(t, c.Size))
	}
	if c.Size-good > 1 {
		return &TamperError{
			Index: good,
			Reason: fmt.Sprintf("an entry among entries %d to %d (lines %d to %d) does not match the checkpoint signed at size %d; the checkpoints before it match, and none was signed in between to say which",
				good, c.Size-1, good+1, c.Size, c.Size),
			File: EntriesFile,
			Line: lineOf(good),
		}
	}
	// Exactly entry k = good is wrong. Is the entry that was signed there
	// elsewhere in the file?
	k := good
	hs, err := t.rangeHashes(k)
	for j := k + 1; err == nil && j < t.size; j++ {
		root, err := rootWithLeaf(k, hs, t.leaf(j))
		if err == nil && bytes.Equal(root, c.Root) {
			return entryTamper(k, "does not match the checkpoint signed at size %d: the entry signed at index %d is now entry %d (line %d), so lines were reordered or inserted",
				c.Size, k, j, j+1)
		}
	}
	if t.size < maxSize {
		return entryTamper(k, "does not match the checkpoint signed at size %d: it was altered or deleted (the log has %d entries but a checkpoint was signed at size %d)",
			c.Size, t.size, maxSize)
	}
	return entryTamper(k, "does not match the checkpoint signed at size %d: it was altered", c.Size)
}

func rootHex(t *tree, size uint64) string {
	r, err := t.rootAt(size)
	if err != nil {
		return "?"
	}
	return hex.EncodeToString(r)
}

// dirScan is the whole verification of a log directory.
type dirScan struct {
	paths    dirPaths
	entries  *entriesScan
	cps      *checkpointsScan
	check    treeCheck
	warnings []string
}

// scanDir reads and checks the log in p with pub. It returns what it found
// so far together with any error: a *TamperError for a mismatch, ErrOrigin,
// or an I/O error.
func scanDir(p dirPaths, pub ed25519.PublicKey, origin string) (*dirScan, error) {
	d := &dirScan{paths: p}
	cps, cerr := scanCheckpoints(p.checkpoints, pub, origin)
	if cps == nil {
		return d, fmt.Errorf("audit: read %s: %w", p.checkpoints, cerr)
	}
	d.cps = cps
	entries, err := scanEntries(p.entries)
	if err != nil {
		return d, fmt.Errorf("audit: read %s: %w", p.entries, err)
	}
	d.entries = entries
	if d.entries.torn > 0 {
		d.warnings = append(d.warnings, fmt.Sprintf("%s ends with %d bytes after its last newline (a write cut by a crash)", filepath.Base(p.entries), d.entries.torn))
	}
	if d.cps.torn > 0 {
		d.warnings = append(d.warnings, fmt.Sprintf("%s ends with %d bytes after its last newline (a write cut by a crash)", CheckpointsFile, d.cps.torn))
	}
	if cerr != nil {
		return d, cerr
	}
	d.check = checkTree(d.entries.tree, d.cps.cps)
	problem := d.check.problem
	if sp := d.entries.problem; sp != nil && (problem == nil || problem.File != CheckpointsFile && sp.Index <= problem.Index) {
		problem = sp
	}
	if problem != nil {
		return d, problem
	}
	if n := d.entries.tree.size; n > d.check.maxSize {
		if len(d.cps.cps) == 0 {
			d.warnings = append(d.warnings, fmt.Sprintf("no checkpoint covers the %d entries", n))
		} else {
			d.warnings = append(d.warnings, fmt.Sprintf("entries %d to %d are after the last checkpoint (size %d), so nothing checks them", d.check.maxSize, n-1, d.check.maxSize))
		}
	}
	return d, nil
}

// VerifyReport is what VerifyDir found.
type VerifyReport struct {
	// Dir is the directory checked.
	Dir string
	// KeyID names the key the checkpoints were checked with.
	KeyID string
	// Origin is the log's name in its checkpoints ("" if it has none).
	Origin string
	// Entries is the number of complete lines in entries.jsonl.
	Entries uint64
	// Root is the root of those entries, recomputed.
	Root []byte
	// Checkpoints is the number of checkpoints whose signature verified.
	Checkpoints int
	// Matched is the number of checkpoints whose root matches the entries.
	Matched int
	// Latest is the last checkpoint in checkpoints.jsonl, if any verified.
	Latest *Checkpoint
	// Unchecked is the number of entries after the largest checkpoint, which
	// nothing checks.
	Unchecked uint64
	// Warnings are findings that are not tampering (a line cut by a crash,
	// entries no checkpoint covers, a key file others can read).
	Warnings []string
	// Problem is the first mismatch found, or nil; VerifyDir returns it as
	// its error too.
	Problem *TamperError
}

// VerifyDir checks a log directory without changing it: every entry against
// every checkpoint, like Open. pub is the node's public key; nil means the
// one derived from dir/node.key. A mismatch is returned both as the error
// (a *TamperError wrapping ErrTampered) and in the report.
func VerifyDir(dir string, pub ed25519.PublicKey) (VerifyReport, error) {
	r := VerifyReport{Dir: dir}
	if fi, err := os.Stat(dir); err != nil {
		return r, fmt.Errorf("audit: %w", err)
	} else if !fi.IsDir() {
		return r, fmt.Errorf("audit: %s is not a directory", dir)
	}
	p, err := resolvePaths(dir)
	if err != nil {
		return r, fmt.Errorf("audit: %w", err)
	}
	if pub == nil {
		priv, err := loadKey(p.key, false)
		if err != nil {
			return r, fmt.Errorf("audit: no public key given and %w", err)
		}
		pub = priv.Public().(ed25519.PublicKey)
		if _, err := loadKey(p.key, true); errors.Is(err, ErrBadKey) {
			r.Warnings = append(r.Warnings, err.Error())
		}
	} else if len(pub) != ed25519.PublicKeySize {
		return r, fmt.Errorf("audit: public key of %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	r.KeyID = KeyID(pub)
	if p.pendingReset {
		r.Warnings = append(r.Warnings, fmt.Sprintf("a Reset was interrupted: checked %s%s, which the next Open renames to %s", EntriesFile, tmpSuffix, EntriesFile))
	}
	d, err := scanDir(p, pub, "")
	r.Warnings = append(r.Warnings, d.warnings...)
	if d.cps != nil {
		r.Origin = d.cps.origin
		r.Checkpoints = len(d.cps.cps)
		if n := len(d.cps.cps); n > 0 {
			latest := d.cps.cps[n-1]
			r.Latest = &latest
		}
	}
	if d.entries != nil {
		r.Entries = d.entries.tree.size
		r.Root, _ = d.entries.tree.rootAt(r.Entries)
		r.Matched = d.check.matched
		if r.Entries > d.check.maxSize {
			r.Unchecked = r.Entries - d.check.maxSize
		}
	}
	var te *TamperError
	if errors.As(err, &te) {
		r.Problem = te
	}
	return r, err
}

// VerifyEntries checks entries (leaves 0..len-1, as served by the admin API)
// against cp: cp must be signed by one of keys, and the first cp.Size entries
// must hash to cp.Root (entries beyond cp.Size are not checked). If they do
// not, leafHashes (the server's leaf hashes; nil if unknown) locate the first
// bad entry, once they are shown to hash to cp.Root themselves: the error is
// then a *TamperError naming it. Without usable leaf hashes the error only
// says that the entries do not match; it wraps ErrTampered either way.
func VerifyEntries(entries [][]byte, leafHashes [][]byte, cp Checkpoint, keys ...ed25519.PublicKey) error {
	if err := verifyWithAny(cp, keys); err != nil {
		return err
	}
	n := uint64(len(entries))
	m := min(n, cp.Size)
	got := &tree{}
	for _, e := range entries[:m] {
		got.appendHash(hasher.HashLeaf(e))
	}
	root, err := got.rootAt(m)
	if err != nil {
		return err
	}
	if m == cp.Size && bytes.Equal(root, cp.Root) {
		return nil
	}
	missing := func() error {
		return &TamperError{
			Index:  n,
			Reason: fmt.Sprintf("only %d entries for a checkpoint signed at size %d: entries %d to %d are missing", n, cp.Size, n, cp.Size-1),
		}
	}
	want, whyNot := signedLeaves(leafHashes, cp)
	if want == nil {
		if n < cp.Size {
			return missing()
		}
		return fmt.Errorf("%w: the entries do not match the checkpoint signed at size %d (root %s, the entries give %s)%s",
			ErrTampered, cp.Size, hex.EncodeToString(cp.Root), hex.EncodeToString(root), whyNot)
	}
	for i := range m {
		if !bytes.Equal(got.leaf(i), want.leaf(i)) {
			return &TamperError{Index: i, Reason: fmt.Sprintf("entry %d (line %d) %s", i, i+1, describeEntry(got, want, i))}
		}
	}
	if n < cp.Size {
		return missing()
	}
	// Unreachable unless SHA-256 collides: equal leaves give equal roots.
	return fmt.Errorf("%w: the entries do not match the checkpoint signed at size %d", ErrTampered, cp.Size)
}

// signedLeaves returns the tree of leafHashes[:cp.Size] if it is the tree cp
// signed, or nil and why not (as a clause for an error message).
func signedLeaves(leafHashes [][]byte, cp Checkpoint) (*tree, string) {
	if leafHashes == nil {
		return nil, ""
	}
	if uint64(len(leafHashes)) < cp.Size {
		return nil, fmt.Sprintf("; the %d leaf hashes given cannot say where (fewer than the checkpoint's size)", len(leafHashes))
	}
	want := &tree{}
	for i, h := range leafHashes[:cp.Size] {
		if len(h) != hashSize {
			return nil, fmt.Sprintf("; leaf hash %d has %d bytes, so the leaf hashes cannot say where", i, len(h))
		}
		want.appendHash(h)
	}
	if wr, _ := want.rootAt(cp.Size); !bytes.Equal(wr, cp.Root) {
		return nil, fmt.Sprintf("; the leaf hashes given are not the signed tree either (they give root %s), so they cannot say where", hex.EncodeToString(wr))
	}
	return want, ""
}

// describeEntry says how entry i of got differs from the signed leaves want
// (got and want differ at i, and agree before it).
func describeEntry(got, want *tree, i uint64) string {
	const prefix = "does not match the signed leaf: "
	n := want.size
	j, found := uint64(0), false
	for ; j < n; j++ {
		if bytes.Equal(want.leaf(j), got.leaf(i)) {
			found = true
			break
		}
	}
	// shifted: the entries from i on are the signed ones from j on.
	shifted := func() bool {
		d := j - i
		for k := i; k+d < n && k < got.size; k++ {
			if !bytes.Equal(got.leaf(k), want.leaf(k+d)) {
				return false
			}
		}
		return true
	}
	switch {
	case found && j == i+1 && shifted():
		return prefix + fmt.Sprintf("the signed entry %d was deleted (the entries after it moved up by one)", i)
	case found && j > i && shifted():
		return prefix + fmt.Sprintf("the signed entries %d to %d were deleted (the entries after them moved up by %d)", i, j-1, j-i)
	case found && j > i:
		return prefix + fmt.Sprintf("it holds the signed entry %d, so entries were reordered", j)
	case found:
		return prefix + fmt.Sprintf("it repeats the signed entry %d", j)
	case i+1 < got.size && bytes.Equal(got.leaf(i+1), want.leaf(i)):
		return prefix + "it was inserted (the signed entry is the next one)"
	}
	return prefix + "it was altered"
}

// verifyWithAny verifies cp with the key it names among keys.
func verifyWithAny(cp Checkpoint, keys []ed25519.PublicKey) error {
	if len(keys) == 0 {
		return fmt.Errorf("%w: no key to verify it with", ErrBadCheckpoint)
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		id := KeyID(k)
		if id == cp.KeyID {
			return cp.Verify(k)
		}
		ids = append(ids, id)
	}
	return fmt.Errorf("%w: signed by key %q, which is none of %v", ErrBadCheckpoint, cp.KeyID, ids)
}
