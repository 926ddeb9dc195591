package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataOnly: DataOnly writes the sites' and the test population's files
// and nothing else; a second run keeps them (the compose testbed's init
// service runs on every start). Without a directory it is refused.
func TestDataOnly(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Sites, cfg.TestPatients, cfg.Dir, cfg.DataOnly = 2, 50, dir, true
	sums := func() map[string][32]byte {
		t.Helper()
		m := map[string][32]byte{}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			m[p] = sha256.Sum256(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var first map[string][32]byte
	for i := range 2 {
		var out bytes.Buffer
		cfg.Out = &out
		rep, err := Run(context.Background(), cfg)
		if err != nil || rep.RoundsCompleted != 0 || (i == 1) != strings.Contains(out.String(), "kept") {
			t.Fatalf("run %d: %+v, %v\n%s", i+1, rep, err, out.Bytes())
		}
		if i == 0 {
			first = sums()
		}
	}
	if got := sums(); len(first) < 4 || !maps.Equal(got, first) {
		t.Fatalf("the second run changed the data: %d files, then %d", len(first), len(got))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "data" {
		t.Fatalf("DataOnly wrote %v, want only data/", entries)
	}
	// An empty data directory (a run stopped before its data) is
	// filled; a file in its place is refused and kept.
	cfg.Dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(cfg.Dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("over an empty data directory: %v", err)
	}
	if e, _ := os.ReadDir(filepath.Join(cfg.Dir, "data")); len(e) != 3 {
		t.Fatalf("over an empty data directory: wrote %d entries, want 2 sites and test", len(e))
	}
	cfg.Dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg.Dir, "data"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("over a file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.Dir, "data")); string(b) != "mine" {
		t.Fatal("the file in the way was changed")
	}
	cfg.Dir = ""
	if _, err := Run(context.Background(), cfg); err == nil {
		t.Fatal("DataOnly without a directory was accepted")
	}
}
