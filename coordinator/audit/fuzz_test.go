package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"

	"github.com/cohort-fl/cohort/coordinator/audit"
)

// fuzzSeed is the node key every fuzzed directory uses, so that seeds
// built from a real log carry valid signatures.
var fuzzSeed = bytes.Repeat([]byte{7}, ed25519.SeedSize)

// FuzzOpen feeds arbitrary entries.jsonl and checkpoints.jsonl to VerifyDir
// and Open. Neither may panic; Open must accept exactly what VerifyDir
// accepts (for this origin), and a log Open accepted must serve entries that
// hash to its root and reopen to the same state.
//
// Run it with a short minimization time: the default (60s) spends a short
// run minimizing the first interesting input, byte by byte:
//
//	go test ./coordinator/audit -run XXX -fuzz FuzzOpen -fuzztime 20s -fuzzminimizetime 2s
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, audit.KeyFile), fuzzSeed, 0o600); err != nil {
		f.Fatal(err)
	}
	l, err := audit.Open(dir, testOrigin)
	if err != nil {
		f.Fatal(err)
	}
	// Small on purpose: the fuzzer minimizes inputs by running them many
	// times, and every signature costs a verification.
	l.AppendAt(0, []byte("a"), []byte(`{"b":1}`))
	l.AppendAt(2, []byte("c"))
	l.Close()
	entries, _ := os.ReadFile(entriesPath(dir))
	ckpts, _ := os.ReadFile(checkpointsPath(dir))
	f.Add(entries, ckpts)
	f.Add(append(append([]byte(nil), entries...), `{"d":`...), ckpts)                     // torn entry
	f.Add(entries, ckpts[:len(ckpts)-9])                                                  // torn checkpoint
	f.Add(bytes.Replace(entries, []byte("b"), []byte("x"), 1), ckpts)                     // altered entry
	f.Add(entries[bytes.IndexByte(entries, '\n')+1:], ckpts)                              // deleted first entry
	f.Add(append(append([]byte(nil), entries...), []byte("{\"extra\":1}\n\n")...), ckpts) // extra and empty lines
	f.Add([]byte{}, []byte{})
	f.Add([]byte("\n\n\n"), []byte("{}\n{\"size\":18446744073709551615}\n"))
	f.Add([]byte("a\nb\nc"), []byte("{\"origin\":\"x\",\"size\":1,\"root\":\"AAAA\",\"time\":\"2025-01-01T00:00:00Z\",\"key_id\":\"\",\"sig\":\"\"}\n"))

	pub := ed25519.NewKeyFromSeed(fuzzSeed).Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, entries, ckpts []byte) {
		dir := t.TempDir()
		for name, data := range map[string][]byte{audit.KeyFile: fuzzSeed, audit.EntriesFile: entries, audit.CheckpointsFile: ckpts} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		rep, verr := audit.VerifyDir(dir, pub)
		l, oerr := audit.Open(dir, testOrigin)
		if oerr != nil {
			if verr == nil && (rep.Origin == "" || rep.Origin == testOrigin) {
				t.Fatalf("VerifyDir accepted the log but Open refused it: %v", oerr)
			}
			return
		}
		defer l.Close()
		if verr != nil {
			t.Fatalf("Open accepted the log but VerifyDir refused it: %v", verr)
		}
		all, err := l.All()
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(all)) != l.Size() || !bytes.Equal(mth(all), l.Root()) {
			t.Fatalf("served %d entries that do not hash to the root of size %d", len(all), l.Size())
		}
		size, root := l.Size(), l.Root()
		l.Close()
		l2, err := audit.Open(dir, testOrigin)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer l2.Close()
		if l2.Size() != size || !bytes.Equal(l2.Root(), root) || len(l2.Warnings()) > 1 {
			t.Fatalf("reopen: size %d (was %d), warnings %q", l2.Size(), size, l2.Warnings())
		}
	})
}
