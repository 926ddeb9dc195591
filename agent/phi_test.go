package agent

import (
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/cohort-fl/cohort/agent/fhir/fhirtest"
)

// After ingesting the whole Synthea export (files, and both Bundles), a raw
// scan of every file the agent wrote finds none of the patients' names,
// identifiers, contact details, addresses, birth dates or resource ids.
func TestAgentFilesHoldNoPHI(t *testing.T) {
	data := syntheaNDJSON(t)
	canaries, skipped := fhirtest.Canaries(t, data)
	if len(canaries) < 1000 {
		t.Fatalf("only %d canaries (%d too short)", len(canaries), skipped)
	}
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Coordinators = []string{"127.0.0.1:1"}
	cfg.TLS = siteFiles(t, "st-mary")
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := a.Ingest(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ingest(ctx, filepath.Join(data, "..", "bundles")); err != nil {
		t.Fatal(err)
	}
	if st.Resources["Patient"] != 100 {
		t.Fatalf("ingested %v", st.Resources)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	files := 0
	err = filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if found := fhirtest.Find(raw, canaries); len(found) > 0 {
			t.Errorf("%s holds %d identifying values, e.g. a %s", filepath.Base(path), len(found), found[0])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("scanned only %d files", files)
	}
	// The search works: it finds the canaries in the raw input.
	f, err := os.Open(filepath.Join(data, "Patient.ndjson.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(fhirtest.Find(raw, canaries)); n < 500 {
		t.Fatalf("found only %d canaries in the raw Patient file", n)
	}
}
