package fhir

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// syntheaObservations returns the Synthea Observation.ndjson.gz export,
// decompressed, and its number of non-empty lines. It skips the benchmark
// when the real data is absent, and fails it when CI is set.
func syntheaObservations(b *testing.B) ([]byte, int) {
	b.Helper()
	path := filepath.Join(syntheaDir, "ndjson", "Observation.ndjson.gz")
	f, err := os.Open(path)
	if err != nil {
		if os.Getenv("CI") != "" {
			b.Fatalf("real data missing in CI: %v", err)
		}
		b.Skipf("real data not found (see shared/data/README.md): %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for line := range bytes.Lines(data) {
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
	}
	return data, n
}

// discardSink accepts every record.
type discardSink struct{ n int }

func (s *discardSink) Patient(Patient) error         { s.n++; return nil }
func (s *discardSink) Observation(Observation) error { s.n++; return nil }
func (s *discardSink) Condition(Condition) error     { s.n++; return nil }
func (s *discardSink) Encounter(Encounter) error     { s.n++; return nil }

// BenchmarkIngestNDJSON measures the reader (parse, unit normalization,
// plausibility, duplicate detection) over the Synthea Observation export
// held in memory, without a store. Compare its resources/s with
// BenchmarkDecodeJSONBaseline's.
func BenchmarkIngestNDJSON(b *testing.B) {
	data, n := syntheaObservations(b)
	opts := DefaultOptions()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	iters := 0
	for b.Loop() {
		st := NewStats()
		if err := ReadNDJSONWith(context.Background(), bytes.NewReader(data), &discardSink{}, st, opts); err != nil {
			b.Fatal(err)
		}
		if got := st.Resources["Observation"] + st.Skipped["no-numeric-value"]; got != n {
			b.Fatalf("read %d resources, want %d", got, n)
		}
		iters++
	}
	b.ReportMetric(float64(n*iters)/b.Elapsed().Seconds(), "resources/s")
}

// BenchmarkDecodeJSONBaseline is the floor to compare the reader with: each
// line of the same bytes decoded with json.Unmarshal into a map[string]any.
func BenchmarkDecodeJSONBaseline(b *testing.B) {
	data, n := syntheaObservations(b)
	var lines [][]byte
	for line := range bytes.Lines(data) {
		if line = bytes.TrimSpace(line); len(line) > 0 {
			lines = append(lines, line)
		}
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	iters := 0
	for b.Loop() {
		for _, line := range lines {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				b.Fatal(err)
			}
		}
		iters++
	}
	b.ReportMetric(float64(n*iters)/b.Elapsed().Seconds(), "resources/s")
}
