package secretfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	const canary = "CANARY-s3cr3t-7f1e"
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	if err := os.WriteFile(p, []byte(canary+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(p, "mqtt.password_file"); err != nil || got != canary {
		t.Fatalf("owner-only: %q %v", got, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o666} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Read(p, "mqtt.password_file")
		if !errors.Is(err, ErrTooOpen) || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), canary) {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(empty, "x"); err == nil {
		t.Fatal("an empty secret file was accepted")
	}
	if _, err := Read(filepath.Join(dir, "missing"), "x"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}
