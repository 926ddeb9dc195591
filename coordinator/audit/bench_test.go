package audit_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkAppendAt appends one ~300-byte leaf per call (what the FSM does
// per audited event) and, as a baseline, writes the same line to a
// bufio.Writer.
func BenchmarkAppendAt(b *testing.B) {
	leaf := append([]byte(`{"kind":"admin","method":"POST","path":"/v1/jobs","actor":"ops@example.org","body_sha256":"`),
		bytes.Repeat([]byte("ab"), 100)...)
	leaf = append(leaf, `"}`...)
	b.Run("audit", func(b *testing.B) {
		l := openLog(b, b.TempDir())
		b.SetBytes(int64(len(leaf) + 1))
		var i uint64
		for b.Loop() {
			if _, _, err := l.AppendAt(i, leaf); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("bufio baseline", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "lines"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		w := bufio.NewWriter(f)
		b.SetBytes(int64(len(leaf) + 1))
		for b.Loop() {
			w.Write(leaf)
			w.WriteByte('\n')
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkOpen reopens a log of 2,000 entries with one checkpoint each:
// every entry re-hashed, every signature verified.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	buildLog(b, dir, 2000)
	for b.Loop() {
		l := openLog(b, dir)
		l.Close()
	}
}
