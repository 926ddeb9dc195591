package store

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestLockPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/d/store.db", "/d/store.lock"},
		{"/d/site", "/d/site.lock"},
		{"/d/x.db.restore-1", "/d/x.db.restore-1.lock"},
	}
	for _, tc := range tests {
		if got := lockPath(tc.in); got != tc.want {
			t.Errorf("lockPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, "store.lock")
	m, p := testKeys(2)
	cfg := Config{Path: filepath.Join(dir, "store.db"), MasterKey: m, PseudonymKey: p}

	s, err := Open(cfg)
	must(t, err)
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("no lock file while open: %v", err)
	}
	_, err = Open(cfg)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: err = %v, want ErrLocked", err)
	}
	if _, err := Restore(nil, cfg); !errors.Is(err, ErrLocked) {
		t.Fatalf("Restore over an open store: err = %v, want ErrLocked", err)
	}
	// Other stores, in other directories, open meanwhile.
	other := fileStore(t, t.TempDir(), 2)
	must(t, other.Close())

	must(t, s.Close())
	if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file left after Close: %v", err)
	}
	s, err = Open(cfg)
	must(t, err)
	must(t, s.Close())

	if runtime.GOOS == "linux" || runtime.GOOS == "darwin" {
		// A lock file left by a crashed process (no process holds its
		// flock) does not keep the store shut.
		must(t, os.WriteFile(lock, []byte("999999\n"), 0o600))
		s, err = Open(cfg)
		must(t, err)
		must(t, s.Close())
	}

	// An Open that fails releases the lock.
	_, err = Open(Config{Path: cfg.Path, MasterKey: p[:32], PseudonymKey: p})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("err = %v, want ErrWrongKey", err)
	}
	s, err = Open(cfg)
	must(t, err)
	must(t, s.Close())
}

func TestMustExist(t *testing.T) {
	m, p := testKeys(2)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	must(t, os.WriteFile(empty, nil, 0o600))
	tests := []struct {
		name string
		path string
	}{
		{"missing file", filepath.Join(dir, "missing.db")},
		{"file without a store", empty},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(Config{Path: tc.path, MasterKey: m, PseudonymKey: p, MustExist: true}); !errors.Is(err, ErrNoStore) {
				t.Fatalf("err = %v, want ErrNoStore", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("MustExist created a file")
	}
}

func TestRecordsWithoutDataKeyRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	must(t, os.WriteFile(path, []byte("*3\r\n$3\r\nset\r\n$4\r\npt:x\r\n$1\r\nv\r\n"), 0o600))
	m, p := testKeys(2)
	if _, err := Open(Config{Path: path, MasterKey: m, PseudonymKey: p}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}
