package device

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQuarantineWrite(t *testing.T) {
	tests := []struct {
		name, reason, topic string
		payload             []byte
		maxPayload          int
		wantPayload         []byte
	}{
		{"json", "bad-loinc", testTopic, []byte(`{"loinc":"8867-5"}`), 1 << 10, []byte(`{"loinc":"8867-5"}`)},
		{"binary with blank lines", "malformed-json", testTopic, []byte("\x00\xff\n\nx"), 1 << 10, []byte("\x00\xff\n\nx")},
		{"odd topic", "bad-topic", "cohort/a/devices/x\ny/observations", []byte(`{}`), 1 << 10, []byte(`{}`)},
		{"oversized is cut", "oversized", testTopic, bytes.Repeat([]byte("a"), 100), 10, bytes.Repeat([]byte("a"), 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "quarantine")
			q, err := openQuarantine(dir, 10, tt.maxPayload)
			if err != nil {
				t.Fatal(err)
			}
			path, err := q.write(tt.reason, tt.topic, tt.payload, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(filepath.Base(path), "20250301T120000.000000000Z-") || !strings.HasSuffix(path, QuarantineExt) {
				t.Errorf("file name %q", filepath.Base(path))
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("file mode %04o, want 0600", fi.Mode().Perm())
			}
			di, _ := os.Stat(dir)
			if di.Mode().Perm() != 0o700 {
				t.Errorf("dir mode %04o, want 0700", di.Mode().Perm())
			}
			got, err := ReadQuarantined(path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Reason != tt.reason || got.Topic != tt.topic || !got.Received.Equal(testNow) ||
				got.Size != len(tt.payload) || !bytes.Equal(got.Payload, tt.wantPayload) {
				t.Errorf("read back %+v", got)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("%d files in quarantine, want 1 (no temp files left)", len(ents))
			}
		})
	}
}

func TestQuarantineLimitAndPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	q, err := openQuarantine(dir, 2, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := q.write("bad-unit", testTopic, []byte{byte(i)}, testNow); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.write("bad-unit", testTopic, []byte("3"), testNow); !errors.Is(err, ErrQuarantineFull) {
		t.Fatalf("third write: %v, want ErrQuarantineFull", err)
	}
	// Reopening counts the files already there.
	q2, err := openQuarantine(dir, 2, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q2.write("bad-unit", testTopic, []byte("4"), testNow.Add(time.Second)); !errors.Is(err, ErrQuarantineFull) {
		t.Fatalf("after reopen: %v, want ErrQuarantineFull", err)
	}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := openQuarantine(open, 2, 1<<10); !errors.Is(err, ErrInsecureDir) {
		t.Fatalf("group-readable dir: %v, want ErrInsecureDir", err)
	}
}
