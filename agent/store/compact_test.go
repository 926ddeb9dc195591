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

// TestStoreFileOwnerOnly: the store file is owner-only when created, when
// reopened after someone loosened it, and after a compaction (buntdb
// creates and rewrites it with the umask's mode).
func TestStoreFileOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	s := fileStore(t, dir, 8)
	fill(t, s, 3)
	mode := func(when string) {
		t.Helper()
		fi, err := os.Stat(s.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: store file mode %v, want 0600", when, fi.Mode().Perm())
		}
	}
	mode("created")
	must(t, os.Chmod(s.path, 0o644))
	must(t, s.Compact())
	mode("compacted")
	must(t, s.Close())
	must(t, os.Chmod(s.path, 0o644))
	s = fileStore(t, dir, 8)
	mode("reopened")
}
