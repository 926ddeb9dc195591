package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-fl/cohort/coordinator/audit"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

func TestRootsMatchRFC6962(t *testing.T) {
	const n = 40
	all := leaves(0, n)
	for _, tc := range []struct {
		name  string
		batch int
	}{
		{"one leaf per append", 1},
		{"batches of 3", 3},
		{"one batch", n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openLog(t, t.TempDir())
			if got, want := l.Root(), mth(nil); !bytes.Equal(got, want) {
				t.Fatalf("empty root = %x, want %x", got, want)
			}
			for i := 0; i < n; i += tc.batch {
				end := min(i+tc.batch, n)
				size, root, err := l.AppendAt(uint64(i), all[i:end]...)
				if err != nil {
					t.Fatal(err)
				}
				if size != uint64(end) || !bytes.Equal(root, mth(all[:end])) {
					t.Fatalf("AppendAt -> size %d root %x, want %d %x", size, root, end, mth(all[:end]))
				}
			}
			for size := 0; size <= n; size++ {
				got, err := l.RootAt(uint64(size))
				if err != nil {
					t.Fatal(err)
				}
				if want := mth(all[:size]); !bytes.Equal(got, want) {
					t.Errorf("RootAt(%d) = %x, want %x", size, got, want)
				}
			}
			for i := range n {
				h, err := l.LeafHash(uint64(i))
				if err != nil || !bytes.Equal(h, leafHash(all[i])) {
					t.Errorf("LeafHash(%d) = %x, %v", i, h, err)
				}
			}
			if _, err := l.RootAt(n + 1); !errors.Is(err, audit.ErrOutOfRange) {
				t.Errorf("RootAt(beyond) = %v, want ErrOutOfRange", err)
			}
		})
	}
}

func TestProofsVerify(t *testing.T) {
	const n = 40
	all := leaves(0, n)
	l := openLog(t, t.TempDir())
	if _, _, err := l.AppendAt(0, all...); err != nil {
		t.Fatal(err)
	}
	h := rfc6962.DefaultHasher
	t.Run("inclusion", func(t *testing.T) {
		for size := uint64(1); size <= n; size++ {
			root := mth(all[:size])
			for i := range size {
				p, err := l.InclusionProof(i, size)
				if err != nil {
					t.Fatalf("InclusionProof(%d, %d): %v", i, size, err)
				}
				if err := proof.VerifyInclusion(h, i, size, leafHash(all[i]), p, root); err != nil {
					t.Fatalf("VerifyInclusion(%d, %d): %v", i, size, err)
				}
				if i == 0 && size > 1 {
					if err := proof.VerifyInclusion(h, 1, size, leafHash(all[0]), p, root); err == nil {
						t.Fatalf("proof of leaf 0 verified as leaf 1 in size %d", size)
					}
				}
			}
		}
	})
	t.Run("consistency", func(t *testing.T) {
		for size2 := uint64(0); size2 <= n; size2++ {
			for size1 := range size2 + 1 {
				p, err := l.ConsistencyProof(size1, size2)
				if err != nil {
					t.Fatalf("ConsistencyProof(%d, %d): %v", size1, size2, err)
				}
				if err := proof.VerifyConsistency(h, size1, size2, p, mth(all[:size1]), mth(all[:size2])); err != nil {
					t.Fatalf("VerifyConsistency(%d, %d): %v", size1, size2, err)
				}
			}
		}
	})
	t.Run("out of range", func(t *testing.T) {
		for _, c := range []struct {
			name string
			err  error
		}{
			{"inclusion index == size", func() error { _, err := l.InclusionProof(5, 5); return err }()},
			{"inclusion size beyond log", func() error { _, err := l.InclusionProof(0, n+1); return err }()},
			{"consistency size1 > size2", func() error { _, err := l.ConsistencyProof(6, 5); return err }()},
			{"consistency size2 beyond log", func() error { _, err := l.ConsistencyProof(1, n+1); return err }()},
		} {
			if !errors.Is(c.err, audit.ErrOutOfRange) {
				t.Errorf("%s: %v, want ErrOutOfRange", c.name, c.err)
			}
		}
	})
}

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	if _, _, err := l.AppendAt(0, leaves(0, 13)...); err != nil {
		t.Fatal(err)
	}
	cp1, err := l.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	root1, pub1 := l.Root(), l.PublicKey()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	l2 := openLog(t, dir)
	if got := l2.Size(); got != 13 {
		t.Fatalf("Size after reopen = %d, want 13", got)
	}
	if !bytes.Equal(l2.Root(), root1) || !bytes.Equal(l2.Root(), mth(leaves(0, 13))) {
		t.Fatalf("root after reopen = %x, want %x", l2.Root(), root1)
	}
	if !l2.PublicKey().Equal(pub1) {
		t.Fatal("the key changed across a reopen")
	}
	cp2, err := l2.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if cp2.Size != cp1.Size || !bytes.Equal(cp2.Sig, cp1.Sig) {
		t.Fatalf("checkpoint after reopen = %+v, want %+v", cp2, cp1)
	}
	got, err := l2.All()
	if err != nil {
		t.Fatal(err)
	}
	if want := leaves(0, 13); !equalLeaves(got, want) {
		t.Fatalf("All after reopen = %q, want %q", got, want)
	}
	if _, _, err := l2.AppendAt(13, leaf(13)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l2.Root(), mth(leaves(0, 14))) {
		t.Fatal("append after reopen gives the wrong root")
	}
}

func equalLeaves(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestAppendAt(t *testing.T) {
	for _, tc := range []struct {
		name      string
		first     uint64
		leaves    [][]byte
		wantSize  uint64
		wantErr   error
		wantIndex uint64 // for a *TamperError
		newCkpt   bool   // a checkpoint line is written
	}{
		{name: "append at the end", first: 5, leaves: leaves(5, 7), wantSize: 7, newCkpt: true},
		{name: "replay of identical leaves is a no-op", first: 0, leaves: leaves(0, 5), wantSize: 5},
		{name: "replay of a middle part is a no-op", first: 2, leaves: leaves(2, 4), wantSize: 5},
		{name: "replay overlapping the end appends the rest", first: 3, leaves: leaves(3, 8), wantSize: 8, newCkpt: true},
		{name: "replay of a different leaf", first: 1, leaves: [][]byte{leaf(1), []byte(`{"seq":2,"forged":true}`)}, wantErr: audit.ErrDiverged, wantIndex: 2},
		{name: "different leaf in an overlap", first: 4, leaves: [][]byte{[]byte("x"), leaf(5)}, wantErr: audit.ErrDiverged, wantIndex: 4},
		{name: "gap", first: 6, leaves: leaves(6, 7), wantErr: audit.ErrGap},
		{name: "empty leaf", first: 5, leaves: [][]byte{{}}, wantErr: audit.ErrInvalidLeaf},
		{name: "leaf with a newline", first: 5, leaves: [][]byte{[]byte("a\nb")}, wantErr: audit.ErrInvalidLeaf},
		{name: "leaf too long", first: 5, leaves: [][]byte{bytes.Repeat([]byte("a"), audit.MaxLeafSize+1)}, wantErr: audit.ErrInvalidLeaf},
		{name: "largest leaf", first: 5, leaves: [][]byte{bytes.Repeat([]byte("a"), audit.MaxLeafSize)}, wantSize: 6, newCkpt: true},
		{name: "no leaves", first: 5, wantSize: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir)
			if _, _, err := l.AppendAt(0, leaves(0, 5)...); err != nil {
				t.Fatal(err)
			}
			ckpts := len(readLines(t, checkpointsPath(dir)))
			entries, _ := os.ReadFile(entriesPath(dir))
			size, root, err := l.AppendAt(tc.first, tc.leaves...)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("AppendAt = %v, want %v", err, tc.wantErr)
				}
				var te *audit.TamperError
				if errors.As(err, &te) && te.Index != tc.wantIndex {
					t.Fatalf("index %d, want %d (%v)", te.Index, tc.wantIndex, err)
				}
				if errors.Is(tc.wantErr, audit.ErrDiverged) {
					if !strings.Contains(err.Error(), fmt.Sprintf("entry %d ", tc.wantIndex)) {
						t.Fatalf("error %q does not name entry %d", err, tc.wantIndex)
					}
					if !errors.Is(err, audit.ErrTampered) {
						t.Fatalf("a divergence does not match ErrTampered: %v", err)
					}
				}
				if after, _ := os.ReadFile(entriesPath(dir)); !bytes.Equal(after, entries) || l.Size() != 5 {
					t.Fatal("a refused AppendAt changed the log")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if size != tc.wantSize || l.Size() != tc.wantSize || !bytes.Equal(root, l.Root()) {
				t.Fatalf("AppendAt = %d %x, Size %d; want %d", size, root, l.Size(), tc.wantSize)
			}
			got := len(readLines(t, checkpointsPath(dir)))
			if want := ckpts + map[bool]int{true: 1}[tc.newCkpt]; got != want {
				t.Fatalf("%d checkpoint lines after AppendAt, want %d", got, want)
			}
			cp, err := l.Checkpoint()
			if err != nil || cp.Size != tc.wantSize || !bytes.Equal(cp.Root, root) {
				t.Fatalf("Checkpoint = %+v, %v", cp, err)
			}
			if err := cp.Verify(l.PublicKey()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReplaySignsEntriesACrashLeftUnsigned(t *testing.T) {
	dir := t.TempDir()
	buildLog(t, dir, 4)
	// A crash between writing the entries and the checkpoint: drop the last
	// checkpoint line.
	lines := readLines(t, checkpointsPath(dir))
	writeLines(t, checkpointsPath(dir), lines[:len(lines)-1])

	l := openLog(t, dir)
	if w := strings.Join(l.Warnings(), "; "); !strings.Contains(w, "entries 3 to 3 are after the last checkpoint") {
		t.Fatalf("warnings %q do not mention the unchecked entry", w)
	}
	if cp, _ := l.Checkpoint(); cp.Size != 3 {
		t.Fatalf("latest checkpoint at size %d, want 3", cp.Size)
	}
	if _, _, err := l.AppendAt(2, leaves(2, 4)...); err != nil {
		t.Fatal(err)
	}
	if cp, _ := l.Checkpoint(); cp.Size != 4 {
		t.Fatalf("after the replay the latest checkpoint is at size %d, want 4", cp.Size)
	}
}

func TestTornLastLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		tail string
	}{
		{"entry cut mid-write", audit.EntriesFile, `{"seq":5,"ki`},
		{"entry cut after the line, before its newline", audit.EntriesFile, string(leaf(5))},
		{"checkpoint cut mid-write", audit.CheckpointsFile, `{"origin":"cohort-audit/test-cluster","si`},
		{"tail longer than any leaf", audit.EntriesFile, strings.Repeat("x", audit.MaxLeafSize+10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			buildLog(t, dir, 5)
			path := filepath.Join(dir, tc.file)
			before, _ := os.ReadFile(path)
			if err := os.WriteFile(path, append(append([]byte(nil), before...), tc.tail...), 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err := audit.VerifyDir(dir, nil)
			if err != nil || len(rep.Warnings) == 0 {
				t.Fatalf("VerifyDir = %+v, %v; want success with a warning", rep, err)
			}
			if after, _ := os.ReadFile(path); len(after) != len(before)+len(tc.tail) {
				t.Fatal("VerifyDir changed the file")
			}
			l := openLog(t, dir)
			if l.Size() != 5 || !bytes.Equal(l.Root(), mth(leaves(0, 5))) {
				t.Fatalf("after a torn line: size %d root %x", l.Size(), l.Root())
			}
			if w := strings.Join(l.Warnings(), "; "); !strings.Contains(w, "truncated the last") {
				t.Fatalf("warnings %q do not report the truncation", w)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Fatalf("file not truncated back to its last newline")
			}
			if _, _, err := l.AppendAt(5, leaf(5)); err != nil {
				t.Fatal(err)
			}
			l.Close()
			l2 := openLog(t, dir)
			if l2.Size() != 6 || len(l2.Warnings()) != 0 {
				t.Fatalf("reopen: size %d, warnings %q", l2.Size(), l2.Warnings())
			}
		})
	}
}

func TestKeyFile(t *testing.T) {
	t.Run("created 0600", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "audit")
		openLog(t, dir)
		fi, err := os.Stat(filepath.Join(dir, audit.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 || fi.Size() != ed25519.SeedSize {
			t.Fatalf("node.key: mode %v size %d", fi.Mode(), fi.Size())
		}
		if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
			t.Fatalf("dir mode %v, want 0700", di.Mode())
		}
	})
	for _, tc := range []struct {
		name    string
		mode    os.FileMode
		wantErr bool
	}{
		{"0644 refused", 0o644, true},
		{"0640 refused", 0o640, true},
		{"0604 refused", 0o604, true},
		{"0400 accepted", 0o400, false},
		{"0600 accepted", 0o600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			buildLog(t, dir, 2)
			key := filepath.Join(dir, audit.KeyFile)
			if err := os.Chmod(key, tc.mode); err != nil {
				t.Fatal(err)
			}
			l, err := audit.Open(dir, testOrigin)
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				l.Close()
				return
			}
			if err == nil {
				l.Close()
				t.Fatal("Open accepted a key file others can read")
			}
			if !errors.Is(err, audit.ErrBadKey) || !strings.Contains(err.Error(), fmt.Sprintf("mode %#o", tc.mode)) || !strings.Contains(err.Error(), "chmod 600") {
				t.Fatalf("Open = %v; want ErrBadKey naming the mode and the fix", err)
			}
		})
	}
	t.Run("missing key with checkpoints refused", func(t *testing.T) {
		dir := t.TempDir()
		buildLog(t, dir, 2)
		os.Remove(filepath.Join(dir, audit.KeyFile))
		if _, err := audit.Open(dir, testOrigin); !errors.Is(err, audit.ErrBadKey) {
			t.Fatalf("Open = %v, want ErrBadKey", err)
		}
		if _, err := os.Stat(filepath.Join(dir, audit.KeyFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("Open created a new key over a log signed with a lost one")
		}
	})
	t.Run("truncated key refused", func(t *testing.T) {
		dir := t.TempDir()
		buildLog(t, dir, 1)
		if err := os.WriteFile(filepath.Join(dir, audit.KeyFile), []byte("short"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := audit.Open(dir, testOrigin); !errors.Is(err, audit.ErrBadKey) {
			t.Fatalf("Open = %v, want ErrBadKey", err)
		}
	})
}

func TestOpenRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, dir, origin string }{
		{"empty dir", "", testOrigin},
		{"empty origin", dir, ""},
		{"origin with newline", dir, "a\nb"},
		{"origin not UTF-8", dir, "a\xff"},
		{"origin too long", dir, strings.Repeat("o", audit.MaxOriginSize+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if l, err := audit.Open(tc.dir, tc.origin); err == nil {
				l.Close()
				t.Fatal("Open accepted it")
			}
		})
	}
	t.Run("another origin", func(t *testing.T) {
		buildLog(t, dir, 2)
		if _, err := audit.Open(dir, "cohort-audit/other"); !errors.Is(err, audit.ErrOrigin) {
			t.Fatalf("Open = %v, want ErrOrigin", err)
		}
	})
}

func TestCheckpoint(t *testing.T) {
	t.Run("empty log signs size 0", func(t *testing.T) {
		dir := t.TempDir()
		l := openLog(t, dir)
		cp, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != 0 || !bytes.Equal(cp.Root, mth(nil)) || cp.Origin != testOrigin {
			t.Fatalf("checkpoint %+v", cp)
		}
		if err := cp.Verify(l.PublicKey()); err != nil {
			t.Fatal(err)
		}
		if got := len(readLines(t, checkpointsPath(dir))); got != 1 {
			t.Fatalf("%d checkpoint lines, want 1", got)
		}
		again, _ := l.Checkpoint()
		if !bytes.Equal(again.Sig, cp.Sig) {
			t.Fatal("a second Checkpoint signed again")
		}
	})
	t.Run("body and key id", func(t *testing.T) {
		pub, priv, _ := ed25519.GenerateKey(nil)
		root := mth(leaves(0, 3))
		cp := audit.Checkpoint{Origin: "o/1", Size: 3, Root: root, Time: newFakeClock().Now()}
		want := "cohort-audit-checkpoint/v1\no/1\n3\n" + base64.StdEncoding.EncodeToString(root) + "\n2025-03-01T12:00:01.000000001Z\n"
		if got := string(cp.Body()); got != want {
			t.Fatalf("Body() = %q, want %q", got, want)
		}
		if id := audit.KeyID(pub); len(id) != 16 {
			t.Fatalf("KeyID = %q, want 16 hex digits", id)
		}
		cp.KeyID = audit.KeyID(pub)
		cp.Sig = ed25519.Sign(priv, cp.Body())
		if err := cp.Verify(pub); err != nil {
			t.Fatal(err)
		}
		other, _, _ := ed25519.GenerateKey(nil)
		for name, c := range map[string]audit.Checkpoint{
			"size changed":   func() audit.Checkpoint { c := cp; c.Size++; return c }(),
			"origin changed": func() audit.Checkpoint { c := cp; c.Origin = "o/2"; return c }(),
			"root changed":   func() audit.Checkpoint { c := cp; c.Root = mth(nil); return c }(),
			"time changed":   func() audit.Checkpoint { c := cp; c.Time = c.Time.Add(1); return c }(),
			"root truncated": func() audit.Checkpoint { c := cp; c.Root = c.Root[:31]; return c }(),
			"no signature":   func() audit.Checkpoint { c := cp; c.Sig = nil; return c }(),
		} {
			if err := c.Verify(pub); !errors.Is(err, audit.ErrBadCheckpoint) {
				t.Errorf("%s: Verify = %v, want ErrBadCheckpoint", name, err)
			}
		}
		if err := cp.Verify(other); !errors.Is(err, audit.ErrBadCheckpoint) {
			t.Errorf("Verify with another key = %v", err)
		}
	})
}

func TestEntries(t *testing.T) {
	l := openLog(t, t.TempDir())
	all := leaves(0, 10)
	if _, _, err := l.AppendAt(0, all...); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		start        uint64
		limit        int
		wantFrom, to int
		wantErr      error
	}{
		{name: "all", start: 0, limit: 0, wantFrom: 0, to: 10},
		{name: "page", start: 3, limit: 4, wantFrom: 3, to: 7},
		{name: "limit past the end", start: 8, limit: 100, wantFrom: 8, to: 10},
		{name: "at the end", start: 10, limit: 5, wantFrom: 10, to: 10},
		{name: "beyond the end", start: 11, limit: 1, wantErr: audit.ErrOutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.Entries(tc.start, tc.limit)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Entries = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equalLeaves(got, all[tc.wantFrom:tc.to]) {
				t.Fatalf("Entries = %q", got)
			}
			hs, err := l.LeafHashes(tc.start, tc.limit)
			if err != nil || len(hs) != len(got) {
				t.Fatalf("LeafHashes = %d hashes, %v", len(hs), err)
			}
		})
	}
	t.Run("appending to a returned entry does not clobber the next", func(t *testing.T) {
		got, _ := l.Entries(0, 2)
		_ = append(got[0], 'X')
		if !bytes.Equal(got[1], all[1]) {
			t.Fatal("entries share capacity")
		}
	})
}

func TestTamperWhileOpenShowsInEntries(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	all := leaves(0, 8)
	if _, _, err := l.AppendAt(0, all...); err != nil {
		t.Fatal(err)
	}
	cp, _ := l.Checkpoint()
	hashes, _ := l.LeafHashes(0, 0)

	lines := readLines(t, entriesPath(dir))
	lines[5] = bytes.Replace(lines[5], []byte(`"seq":5`), []byte(`"seq":9`), 1)
	writeLines(t, entriesPath(dir), lines)

	served, err := l.Entries(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = audit.VerifyEntries(served, hashes, cp, l.PublicKey())
	var te *audit.TamperError
	if !errors.As(err, &te) || te.Index != 5 || !strings.Contains(err.Error(), "entry 5 (line 6)") {
		t.Fatalf("VerifyEntries = %v, want entry 5 named", err)
	}

	writeLines(t, entriesPath(dir), lines[:6])
	_, err = l.Entries(0, 0)
	if !errors.As(err, &te) || te.Index != 6 || !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("Entries of a truncated file = %v, want entry 6 reported", err)
	}
}

func TestReset(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	if _, _, err := l.AppendAt(0, leaves(0, 5)...); err != nil {
		t.Fatal(err)
	}
	snap := leaves(100, 120)
	if err := l.Reset(snap); err != nil {
		t.Fatal(err)
	}
	check := func(l *audit.Log) {
		t.Helper()
		if l.Size() != 20 || !bytes.Equal(l.Root(), mth(snap)) {
			t.Fatalf("after Reset: size %d root %x", l.Size(), l.Root())
		}
		got, err := l.All()
		if err != nil || !equalLeaves(got, snap) {
			t.Fatalf("All after Reset = %d leaves, %v", len(got), err)
		}
		cp, err := l.Checkpoint()
		if err != nil || cp.Size != 20 || cp.Verify(l.PublicKey()) != nil {
			t.Fatalf("Checkpoint after Reset = %+v, %v", cp, err)
		}
	}
	check(l)
	if n := len(readLines(t, checkpointsPath(dir))); n != 1 {
		t.Fatalf("%d checkpoint lines after Reset, want 1", n)
	}
	if _, _, err := l.AppendAt(20, leaf(120)); err != nil {
		t.Fatal(err)
	}
	if err := l.Reset(snap); err != nil {
		t.Fatal(err)
	}
	l.Close()
	check(openLog(t, dir))

	t.Run("invalid leaf leaves the log alone", func(t *testing.T) {
		l := openLog(t, t.TempDir())
		l.AppendAt(0, leaf(0))
		if err := l.Reset([][]byte{leaf(1), {}}); !errors.Is(err, audit.ErrInvalidLeaf) {
			t.Fatalf("Reset = %v", err)
		}
		if l.Size() != 1 {
			t.Fatal("a refused Reset changed the log")
		}
	})
}

// TestResetInterrupted builds the on-disk states a crash inside Reset can
// leave and checks that Open ends with the old or the new log, whole.
func TestResetInterrupted(t *testing.T) {
	old, snap := leaves(0, 5), leaves(50, 53)
	var newEntries, newCkpts []byte // what Reset(snap) writes, with the dir's key
	for _, tc := range []struct {
		name    string
		prepare func(dir string) // dir holds the old log and the new key
		want    [][]byte
	}{
		{"checkpoints tmp cut", func(dir string) {
			os.WriteFile(checkpointsPath(dir)+".tmp", newCkpts[:10], 0o600)
		}, old},
		{"both tmps written", func(dir string) {
			os.WriteFile(checkpointsPath(dir)+".tmp", newCkpts, 0o600)
			os.WriteFile(entriesPath(dir)+".tmp", newEntries, 0o600)
		}, old},
		{"checkpoints renamed, entries not", func(dir string) {
			os.WriteFile(checkpointsPath(dir), newCkpts, 0o600)
			os.WriteFile(entriesPath(dir)+".tmp", newEntries, 0o600)
		}, snap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			buildLog(t, dir, 5)
			// The new files, signed with this dir's key: run Reset(snap) in
			// another dir holding the same key.
			key, _ := os.ReadFile(filepath.Join(dir, audit.KeyFile))
			tmp := t.TempDir()
			os.WriteFile(filepath.Join(tmp, audit.KeyFile), key, 0o600)
			lt := openLog(t, tmp)
			if err := lt.Reset(snap); err != nil {
				t.Fatal(err)
			}
			lt.Close()
			newEntries, _ = os.ReadFile(entriesPath(tmp))
			newCkpts, _ = os.ReadFile(checkpointsPath(tmp))
			tc.prepare(dir)

			if _, err := audit.VerifyDir(dir, nil); err != nil {
				t.Fatalf("VerifyDir: %v", err)
			}
			l := openLog(t, dir)
			got, err := l.All()
			if err != nil || !equalLeaves(got, tc.want) {
				t.Fatalf("after recovery: %d leaves (%v), want %d", len(got), err, len(tc.want))
			}
			for _, f := range []string{entriesPath(dir) + ".tmp", checkpointsPath(dir) + ".tmp"} {
				if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind", f)
				}
			}
		})
	}
}

func TestConcurrentReaders(t *testing.T) {
	l := openLog(t, t.TempDir())
	const n = 200
	all := leaves(0, n)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errC := make(chan error, 4)
	for r := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				size := l.Size()
				if size == 0 {
					continue
				}
				var err error
				switch r {
				case 0:
					var got [][]byte
					got, err = l.Entries(0, 0)
					if err == nil && !equalLeaves(got[:size], all[:size]) {
						err = errors.New("entries differ")
					}
				case 1:
					var p [][]byte
					if p, err = l.InclusionProof(size-1, size); err == nil {
						root, _ := l.RootAt(size)
						err = proof.VerifyInclusion(rfc6962.DefaultHasher, size-1, size, leafHash(all[size-1]), p, root)
					}
				case 2:
					var cp audit.Checkpoint
					if cp, err = l.Checkpoint(); err == nil {
						err = cp.Verify(l.PublicKey())
					}
				case 3:
					_, err = l.ConsistencyProof(size/2, size)
					_ = l.Root()
				}
				if err != nil {
					errC <- fmt.Errorf("reader %d at size %d: %w", r, size, err)
					return
				}
			}
		})
	}
	for i := range n {
		if _, _, err := l.AppendAt(uint64(i), all[i]); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errC)
	for err := range errC {
		t.Error(err)
	}
}
