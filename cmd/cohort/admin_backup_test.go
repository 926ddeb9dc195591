package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminClusterBackupRestore: `cohort admin cluster backup` writes a
// whole backup (mode 0600); `cluster restore` refuses without --yes and a
// file that is not a whole backup, then makes another cluster take the
// state, after which the first cluster's token works there and the second
// cluster's own bootstrap token does not.
func TestAdminClusterBackupRestore(t *testing.T) {
	src := startAdminCluster(t, 1)
	src.ok(t, 0, src.tokenFile, "sites", "create", "st-a")
	file := filepath.Join(t.TempDir(), "backup.tar")
	contains(t, "cluster backup", src.ok(t, 0, src.tokenFile, "cluster", "backup", "-o", file), "backed up", "audit leaves", "from c1")
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	if _, _, err := src.cli(0, src.tokenFile, "cluster", "backup", "-o", file); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("backup over an existing file: %v", err)
	}

	dst := startAdminCluster(t, 1)
	if _, _, err := dst.cli(0, dst.tokenFile, "cluster", "restore", file); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("restore without --yes: %v", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.tar")
	if err := os.WriteFile(cut, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dst.cli(0, dst.tokenFile, "cluster", "restore", "--yes", cut); err == nil || !strings.Contains(err.Error(), "cut.tar: ") {
		t.Fatalf("restore of half a backup: %v", err)
	}
	contains(t, "cluster restore", dst.ok(t, 0, dst.tokenFile, "cluster", "restore", "--yes", file), "restored Raft index", "from c1")
	contains(t, "sites after the restore", dst.ok(t, 0, src.tokenFile, "sites"), "st-a")
	if _, _, err := dst.cli(0, dst.tokenFile, "--timeout", "2s", "whoami"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("the restored cluster's old bootstrap token: %v", err)
	}
}
