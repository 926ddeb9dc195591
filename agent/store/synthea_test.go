package store

import (
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/fhir/fhirtest"
)

// syntheaDir is the shared real-data folder, relative to this package.
const syntheaDir = "../../../shared/data/synthea-r4"

func TestSyntheaNoPHIAtRest(t *testing.T) {
	if testing.Short() {
		t.Skip("ingests the Synthea sample; the race run gains nothing (the store starts no goroutines; the agent's tests race it)")
	}
	if _, err := os.Stat(syntheaDir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs the real data at %s (see shared/data/README.md): %v", syntheaDir, err)
		}
		t.Skipf("real data not found at %s (see shared/data/README.md): %v", syntheaDir, err)
	}
	ndjson := filepath.Join(syntheaDir, "ndjson")
	path := filepath.Join(t.TempDir(), "site.db")
	m, p := testKeys(5)
	s, err := Open(Config{Path: path, MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch(0)
	st, err := fhir.ReadDir(context.Background(), ndjson, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	// Ingesting again through the direct (per-record) Sink changes nothing.
	f, err := os.Open(filepath.Join(ndjson, "Patient.ndjson.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := fhir.ReadNDJSON(context.Background(), zr, s, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var c fhir.Collector
	if _, err := fhir.ReadDir(context.Background(), ndjson, &c); err != nil {
		t.Fatal(err)
	}
	wantObs := 0
	for _, pd := range c.Patients() {
		wantObs += len(pd.Observations)
	}
	pc, oc, cc, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if pc != 100 || pc != st.Resources["Patient"] || oc != wantObs || cc != st.Resources["Condition"] {
		t.Errorf("Counts = %d, %d, %d; want 100, %d, %d", pc, oc, cc, wantObs, st.Resources["Condition"])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	canaries, skipped := fhirtest.Canaries(t, ndjson)
	t.Logf("store file %d bytes; %d canaries searched (%d shorter than %d bytes not searched)", len(raw), len(canaries), skipped, fhirtest.MinCanary)
	if len(canaries) < 100*4+16000 {
		t.Fatalf("only %d canaries collected", len(canaries))
	}
	for _, kind := range fhirtest.Find(raw, canaries) {
		t.Errorf("a %s from the input appears in the store file", kind) // the value itself is PHI: not printed
	}

	// The data is all there after reopening, grouped under pseudonyms.
	s, err = Open(Config{Path: path, MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, nObs := 0, 0
	err = s.ForEachPatient(func(pd fhir.PatientData) error {
		n++
		nObs += len(pd.Observations)
		if _, ok := canaries[pd.Patient.ID]; ok {
			t.Error("ForEachPatient returned a raw patient id")
		}
		return nil
	})
	if err != nil || n != 100 || nObs != wantObs {
		t.Errorf("ForEachPatient: %d patients, %d observations, err %v; want 100, %d", n, nObs, err, wantObs)
	}
}
