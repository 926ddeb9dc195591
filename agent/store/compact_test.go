package store

import (
	"os"
	"strconv"
	"testing"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func TestAutoCompaction(t *testing.T) {
	dir := t.TempDir()
	s := fileStore(t, dir, 8)
	s.compactMin = 16 << 10
	fill(t, s, 20)
	want := snapshot(t, s)
	live := fileSize(t, s.path)
	// Rewrite the same records with newer versions until the file would
	// be several times its live size.
	var peak int64
	for v := 2; v < 12; v++ {
		b := s.NewBatch(0)
		for _, pd := range want {
			for _, o := range pd.Observations {
				must(t, b.Observation(fhir.Observation{ID: o.ID, PatientID: "p", Code: "x", Value: float64(v), Version: fhir.Version{ID: strconv.Itoa(v)}}))
			}
		}
		must(t, b.Flush())
		peak = max(peak, fileSize(t, s.path))
	}
	if got := fileSize(t, s.path); got > 4*live || peak > 4*live+(16<<10) {
		t.Fatalf("file %d bytes (peak %d), live data about %d: not compacted", got, peak, live)
	}
	verifyOK(t, s)
}

func TestCompactInMemory(t *testing.T) {
	must(t, openMem(t).Compact())
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	must(t, err)
	return fi.Size()
}
