package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator/audit"
)

const testOrigin = "cohort-audit/test-cluster"

// fakeClock advances one second per reading.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second + time.Nanosecond)
	return c.t
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

// leaf returns a JSON-like leaf of about 40 bytes.
func leaf(i int) []byte {
	return fmt.Appendf(nil, `{"seq":%d,"kind":"round-event","site":"h%02d"}`, i, i%7)
}

func leaves(from, to int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		out = append(out, leaf(i))
	}
	return out
}

// openLog opens (or creates) the log in dir with a fake clock.
func openLog(t testing.TB, dir string) *audit.Log {
	t.Helper()
	l, err := audit.OpenConfig(audit.Config{Dir: dir, Origin: testOrigin, Clock: newFakeClock()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// buildLog writes n leaves in dir, one AppendAt per leaf (so one checkpoint
// per size), and closes the log.
func buildLog(t testing.TB, dir string, n int) {
	t.Helper()
	l := openLog(t, dir)
	for i := range n {
		if _, _, err := l.AppendAt(uint64(i), leaf(i)); err != nil {
			t.Fatalf("AppendAt(%d): %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// mth is the Merkle Tree Hash of RFC 6962 section 2.1, written from the RFC
// without the package's code.
func mth(d [][]byte) []byte {
	n := len(d)
	switch n {
	case 0:
		s := sha256.Sum256(nil)
		return s[:]
	case 1:
		s := sha256.Sum256(append([]byte{0}, d[0]...))
		return s[:]
	}
	k := 1
	for k*2 < n {
		k *= 2
	}
	s := sha256.Sum256(append(append([]byte{1}, mth(d[:k])...), mth(d[k:])...))
	return s[:]
}

func leafHash(d []byte) []byte {
	s := sha256.Sum256(append([]byte{0}, d...))
	return s[:]
}

func readLines(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func writeLines(t testing.TB, path string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func entriesPath(dir string) string     { return filepath.Join(dir, audit.EntriesFile) }
func checkpointsPath(dir string) string { return filepath.Join(dir, audit.CheckpointsFile) }
