package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator/audit"
)

// TestTamperedFiles changes the files of a 10-entry log (one checkpoint per
// size) and checks that Open and VerifyDir both refuse it and name the place.
func TestTamperedFiles(t *testing.T) {
	const n = 10
	// foreign signs a checkpoint for the real tree with another key.
	foreign := func(size uint64) []byte {
		_, priv, _ := ed25519.GenerateKey(nil)
		cp := audit.Checkpoint{Origin: testOrigin, Size: size, Root: mth(leaves(0, int(size))), Time: time.Now().UTC()}
		cp.KeyID = audit.KeyID(priv.Public().(ed25519.PublicKey))
		cp.Sig = ed25519.Sign(priv, cp.Body())
		b, _ := json.Marshal(cp)
		return append(b, '\n')
	}
	type files struct{ entries, ckpts [][]byte }
	for _, tc := range []struct {
		name      string
		batches   []int // AppendAt batch sizes (default: n batches of 1)
		tamper    func(f *files)
		wantFile  string
		wantIndex uint64
		wantMsg   string
	}{
		{
			name:      "edit one entry's bytes",
			tamper:    func(f *files) { f.entries[4] = bytes.Replace(f.entries[4], []byte("h04"), []byte("h05"), 1) },
			wantFile:  audit.EntriesFile,
			wantIndex: 4,
			wantMsg:   "entry 4 (line 5) does not match the checkpoint signed at size 5: it was altered",
		},
		{
			name:      "edit the first entry",
			tamper:    func(f *files) { f.entries[0] = []byte("{}\n") },
			wantFile:  audit.EntriesFile,
			wantIndex: 0,
			wantMsg:   "entry 0 (line 1) does not match the checkpoint signed at size 1",
		},
		{
			name:      "delete one line",
			tamper:    func(f *files) { f.entries = append(f.entries[:3:3], f.entries[4:]...) },
			wantFile:  audit.EntriesFile,
			wantIndex: 3,
			wantMsg:   "entry 3 (line 4) does not match the checkpoint signed at size 4: it was altered or deleted",
		},
		{
			name:      "swap two lines",
			tamper:    func(f *files) { f.entries[2], f.entries[6] = f.entries[6], f.entries[2] },
			wantFile:  audit.EntriesFile,
			wantIndex: 2,
			wantMsg:   "entry 2 (line 3) does not match the checkpoint signed at size 3: the entry signed at index 2 is now entry 6 (line 7)",
		},
		{
			name: "insert a line",
			tamper: func(f *files) {
				f.entries = append(f.entries[:5:5], append([][]byte{[]byte("{\"forged\":1}\n")}, f.entries[5:]...)...)
			},
			wantFile:  audit.EntriesFile,
			wantIndex: 5,
			wantMsg:   "entry 5 (line 6) does not match the checkpoint signed at size 6: the entry signed at index 5 is now entry 6 (line 7)",
		},
		{
			name: "insert an empty line",
			tamper: func(f *files) {
				f.entries = append(f.entries[:2:2], append([][]byte{[]byte("\n")}, f.entries[2:]...)...)
			},
			wantFile:  audit.EntriesFile,
			wantIndex: 2,
			wantMsg:   "entry 2 (line 3) is empty",
		},
		{
			name:      "delete the last line",
			tamper:    func(f *files) { f.entries = f.entries[:n-1] },
			wantFile:  audit.EntriesFile,
			wantIndex: n - 1,
			wantMsg:   "entry 9 (line 10) is missing: the log has 9 entries but checkpoint 9 (line 10 of checkpoints.jsonl) was signed at size 10",
		},
		{
			name:      "delete the last three lines",
			tamper:    func(f *files) { f.entries = f.entries[:n-3] },
			wantFile:  audit.EntriesFile,
			wantIndex: n - 3,
			wantMsg:   "entries 7 to 9 (lines 8 to 10) are missing",
		},
		{
			name:      "empty the entries file",
			tamper:    func(f *files) { f.entries = nil },
			wantFile:  audit.EntriesFile,
			wantIndex: 0,
			wantMsg:   "entries 0 to 9 (lines 1 to 10) are missing",
		},
		{
			name: "edit a checkpoint's root",
			tamper: func(f *files) {
				var cp audit.Checkpoint
				json.Unmarshal(f.ckpts[4], &cp)
				cp.Root = mth(leaves(0, 4))
				b, _ := json.Marshal(cp)
				f.ckpts[4] = append(b, '\n')
			},
			wantFile:  audit.CheckpointsFile,
			wantIndex: 4,
			wantMsg:   "checkpoint 4 (line 5 of checkpoints.jsonl) (size 5) was altered",
		},
		{
			name:      "replace a checkpoint with one from another key",
			tamper:    func(f *files) { f.ckpts[6] = foreign(7) },
			wantFile:  audit.CheckpointsFile,
			wantIndex: 6,
			wantMsg:   "checkpoint 6 (line 7 of checkpoints.jsonl) (size 7) is signed by key",
		},
		{
			name:      "add a checkpoint from another key",
			tamper:    func(f *files) { f.ckpts = append(f.ckpts, foreign(n)) },
			wantFile:  audit.CheckpointsFile,
			wantIndex: n,
			wantMsg:   "checkpoint 10 (line 11 of checkpoints.jsonl) (size 10) is signed by key",
		},
		{
			name:      "garbage checkpoint line",
			tamper:    func(f *files) { f.ckpts[1] = []byte("not json\n") },
			wantFile:  audit.CheckpointsFile,
			wantIndex: 1,
			wantMsg:   "checkpoint 1 (line 2 of checkpoints.jsonl) does not parse",
		},
		{
			name:      "entry edited inside a batch",
			batches:   []int{5, 5},
			tamper:    func(f *files) { f.entries[7] = []byte("{\"forged\":7}\n") },
			wantFile:  audit.EntriesFile,
			wantIndex: 5,
			wantMsg:   "an entry among entries 5 to 9 (lines 6 to 10) does not match the checkpoint signed at size 10",
		},
		{
			name:      "line longer than any leaf",
			tamper:    func(f *files) { f.entries[8] = append(bytes.Repeat([]byte("a"), audit.MaxLeafSize+1), '\n') },
			wantFile:  audit.EntriesFile,
			wantIndex: 8,
			wantMsg:   "entry 8 (line 9) is 65537 bytes long",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir)
			batches := tc.batches
			if batches == nil {
				for range n {
					batches = append(batches, 1)
				}
			}
			next := 0
			for _, b := range batches {
				if _, _, err := l.AppendAt(uint64(next), leaves(next, next+b)...); err != nil {
					t.Fatal(err)
				}
				next += b
			}
			l.Close()

			f := files{readLines(t, entriesPath(dir)), readLines(t, checkpointsPath(dir))}
			tc.tamper(&f)
			writeLines(t, entriesPath(dir), f.entries)
			writeLines(t, checkpointsPath(dir), f.ckpts)
			entriesBefore, _ := os.ReadFile(entriesPath(dir))

			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, audit.ErrTampered) {
					t.Fatalf("%s = %v, want ErrTampered", what, err)
				}
				var te *audit.TamperError
				if !errors.As(err, &te) {
					t.Fatalf("%s = %v, not a *TamperError", what, err)
				}
				if te.Index != tc.wantIndex || te.File != tc.wantFile || te.Line != int(tc.wantIndex)+1 {
					t.Errorf("%s: index %d file %q line %d, want %d %q %d", what, te.Index, te.File, te.Line, tc.wantIndex, tc.wantFile, tc.wantIndex+1)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("%s = %q\nwant it to contain %q", what, err, tc.wantMsg)
				}
			}
			lg, err := audit.Open(dir, testOrigin)
			if err == nil {
				lg.Close()
			}
			check("Open", err)
			rep, err := audit.VerifyDir(dir, nil)
			check("VerifyDir", err)
			if rep.Problem == nil || rep.Problem.Index != tc.wantIndex {
				t.Errorf("VerifyDir report problem = %+v", rep.Problem)
			}
			if after, _ := os.ReadFile(entriesPath(dir)); !bytes.Equal(after, entriesBefore) {
				t.Error("a refused Open changed entries.jsonl")
			}
		})
	}
}

func TestVerifyDir(t *testing.T) {
	dir := t.TempDir()
	buildLog(t, dir, 6)
	l := openLog(t, dir)
	pub := l.PublicKey()
	l.Close()

	t.Run("clean, with the key in the dir", func(t *testing.T) {
		rep, err := audit.VerifyDir(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Entries != 6 || rep.Checkpoints != 6 || rep.Matched != 6 || rep.Unchecked != 0 ||
			rep.Origin != testOrigin || rep.Latest == nil || rep.Latest.Size != 6 || !bytes.Equal(rep.Root, mth(leaves(0, 6))) ||
			rep.KeyID != audit.KeyID(pub) || len(rep.Warnings) != 0 {
			t.Fatalf("report %+v", rep)
		}
	})
	t.Run("explicit public key", func(t *testing.T) {
		if _, err := audit.VerifyDir(dir, pub); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another public key", func(t *testing.T) {
		other, _, _ := ed25519.GenerateKey(nil)
		_, err := audit.VerifyDir(dir, other)
		var te *audit.TamperError
		if !errors.As(err, &te) || te.File != audit.CheckpointsFile || te.Index != 0 {
			t.Fatalf("VerifyDir with another key = %v", err)
		}
	})
	t.Run("entries after the last checkpoint", func(t *testing.T) {
		d := t.TempDir()
		buildLog(t, d, 3)
		f, _ := os.OpenFile(entriesPath(d), os.O_APPEND|os.O_WRONLY, 0)
		f.Write([]byte("{\"extra\":1}\n{\"extra\":2}\n"))
		f.Close()
		rep, err := audit.VerifyDir(d, nil)
		if err != nil || rep.Unchecked != 2 || len(rep.Warnings) != 1 {
			t.Fatalf("VerifyDir = %+v, %v", rep, err)
		}
		// The replicated log does not have them: the replay finds out.
		l := openLog(t, d)
		if _, _, err := l.AppendAt(3, leaf(3)); !errors.Is(err, audit.ErrDiverged) {
			t.Fatalf("AppendAt over unsigned extra entries = %v, want ErrDiverged", err)
		}
	})
	t.Run("loose key file is a warning", func(t *testing.T) {
		d := t.TempDir()
		buildLog(t, d, 1)
		os.Chmod(d+"/"+audit.KeyFile, 0o644)
		rep, err := audit.VerifyDir(d, nil)
		if err != nil || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "0644") {
			t.Fatalf("VerifyDir = %+v, %v", rep, err)
		}
	})
	t.Run("missing dir", func(t *testing.T) {
		if _, err := audit.VerifyDir(dir+"/nope", pub); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestVerifyEntries(t *testing.T) {
	const n = 12
	l := openLog(t, t.TempDir())
	all := leaves(0, n)
	if _, _, err := l.AppendAt(0, all...); err != nil {
		t.Fatal(err)
	}
	cp, _ := l.Checkpoint()
	hashes, _ := l.LeafHashes(0, 0)
	pub := l.PublicKey()
	other, _, _ := ed25519.GenerateKey(nil)

	edit := func(f func([][]byte) [][]byte) [][]byte {
		c := make([][]byte, len(all))
		copy(c, all)
		return f(c)
	}
	for _, tc := range []struct {
		name      string
		entries   [][]byte
		hashes    [][]byte
		cp        audit.Checkpoint
		keys      []ed25519.PublicKey
		wantErr   error
		wantIndex int    // -1: no *TamperError expected
		wantMsg   string // substring
	}{
		{name: "intact", entries: all, hashes: hashes, wantIndex: -1},
		{name: "intact without hashes", entries: all, wantIndex: -1},
		{name: "intact, more entries than the checkpoint", entries: append(edit(func(c [][]byte) [][]byte { return c }), []byte("later")), wantIndex: -1},
		{name: "intact, key among several", entries: all, keys: []ed25519.PublicKey{other, pub}, wantIndex: -1},
		{
			name:    "altered entry",
			entries: edit(func(c [][]byte) [][]byte { c[7] = []byte(`{"seq":7,"forged":true}`); return c }),
			hashes:  hashes, wantErr: audit.ErrTampered, wantIndex: 7,
			wantMsg: "entry 7 (line 8) does not match the signed leaf: it was altered",
		},
		{
			name:    "reordered entries",
			entries: edit(func(c [][]byte) [][]byte { c[3], c[9] = c[9], c[3]; return c }),
			hashes:  hashes, wantErr: audit.ErrTampered, wantIndex: 3,
			wantMsg: "entry 3 (line 4) does not match the signed leaf: it holds the signed entry 9",
		},
		{
			name:    "deleted entry",
			entries: edit(func(c [][]byte) [][]byte { return append(c[:5:5], c[6:]...) }),
			hashes:  hashes, wantErr: audit.ErrTampered, wantIndex: 5,
			wantMsg: "the signed entry 5 was deleted",
		},
		{
			name:    "inserted entry",
			entries: edit(func(c [][]byte) [][]byte { return append(c[:2:2], append([][]byte{[]byte("new")}, c[2:]...)...) }),
			hashes:  hashes, wantErr: audit.ErrTampered, wantIndex: 2,
			wantMsg: "it was inserted",
		},
		{
			name:    "missing tail",
			entries: all[:9],
			hashes:  hashes, wantErr: audit.ErrTampered, wantIndex: 9,
			wantMsg: "only 9 entries for a checkpoint signed at size 12",
		},
		{
			name:    "altered entry without hashes",
			entries: edit(func(c [][]byte) [][]byte { c[7] = []byte("x"); return c }),
			wantErr: audit.ErrTampered, wantIndex: -1,
			wantMsg: "the entries do not match the checkpoint signed at size 12",
		},
		{
			name:    "altered entry, hashes altered to match",
			entries: edit(func(c [][]byte) [][]byte { c[7] = []byte("x"); return c }),
			hashes: func() [][]byte {
				h := append([][]byte(nil), hashes...)
				h[7] = leafHash([]byte("x"))
				return h
			}(),
			wantErr: audit.ErrTampered, wantIndex: -1,
			wantMsg: "the leaf hashes given are not the signed tree",
		},
		{
			name:    "checkpoint altered",
			entries: all,
			cp:      func() audit.Checkpoint { c := cp; c.Size--; c.Root = mth(all[:n-1]); return c }(),
			wantErr: audit.ErrBadCheckpoint, wantIndex: -1,
		},
		{
			name:    "checkpoint by an unknown key",
			entries: all, keys: []ed25519.PublicKey{other},
			wantErr: audit.ErrBadCheckpoint, wantIndex: -1,
			wantMsg: "which is none of",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cp
			if tc.cp.Sig != nil {
				c = tc.cp
			}
			keys := tc.keys
			if keys == nil {
				keys = []ed25519.PublicKey{pub}
			}
			err := audit.VerifyEntries(tc.entries, tc.hashes, c, keys...)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("VerifyEntries = %v, want %v", err, tc.wantErr)
			}
			var te *audit.TamperError
			switch isTamper := errors.As(err, &te); {
			case tc.wantIndex < 0 && isTamper:
				t.Fatalf("VerifyEntries = %v, a located error; want none", err)
			case tc.wantIndex >= 0 && (!isTamper || te.Index != uint64(tc.wantIndex)):
				t.Fatalf("VerifyEntries = %v, want entry %d located", err, tc.wantIndex)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("VerifyEntries = %q\nwant it to contain %q", err, tc.wantMsg)
			}
		})
	}
}
