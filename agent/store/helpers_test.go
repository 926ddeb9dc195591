package store

import (
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// fileStore opens a store in dir/store.db with the test keys of seed.
func fileStore(t testing.TB, dir string, seed byte) *Store {
	t.Helper()
	m, p := testKeys(seed)
	s, err := Open(Config{Path: filepath.Join(dir, "store.db"), MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fill writes n patients, each with a patient record, three observations,
// a condition and an encounter, through one Batch.
func fill(t testing.TB, s *Store, n int) {
	t.Helper()
	b := s.NewBatch(50)
	for i := range n {
		pid := fmt.Sprintf("patient-%03d", i)
		at := t0.Add(time.Duration(i) * time.Hour)
		must(t, b.Patient(fhir.Patient{ID: pid, Gender: "female", BirthDate: time.Date(1950+i%40, 1, 1, 0, 0, 0, 0, time.UTC)}))
		for j := range 3 {
			must(t, b.Observation(fhir.Observation{ID: fmt.Sprintf("obs-%d-%d", i, j), PatientID: pid, Code: "8867-4", Unit: "/min",
				Value: float64(60 + i + j), Time: at.Add(time.Duration(j) * time.Minute), Version: fhir.Version{ID: "1"}}))
		}
		must(t, b.Condition(fhir.Condition{ID: fmt.Sprintf("cond-%d", i), PatientID: pid, System: fhir.SystemSNOMED, Code: "44054006", Onset: at}))
		must(t, b.Encounter(fhir.Encounter{ID: fmt.Sprintf("enc-%d", i), PatientID: pid, Class: "IMP", Start: at, End: at.Add(48 * time.Hour)}))
	}
	must(t, b.Flush())
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot reads every patient's records.
func snapshot(t testing.TB, s *Store) []fhir.PatientData {
	t.Helper()
	var out []fhir.PatientData
	must(t, s.ForEachPatient(func(pd fhir.PatientData) error { out = append(out, pd); return nil }))
	return out
}

// sameContents fails the test unless s holds exactly want.
func sameContents(t testing.TB, s *Store, want []fhir.PatientData) {
	t.Helper()
	got := snapshot(t, s)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("store contents changed: %d patients, want %d", len(got), len(want))
	}
}

// verifyOK fails the test unless Verify finds every record sound.
func verifyOK(t testing.TB, s *Store) *VerifyReport {
	t.Helper()
	rep, err := s.Verify()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("Verify: %d corrupt records: %v", rep.Corrupt, rep.CorruptKeys)
	}
	return rep
}

// rawValue returns the sealed value stored under key.
func rawValue(t testing.TB, s *Store, key string) string {
	t.Helper()
	var v string
	must(t, s.db.View(func(tx *buntdbTx) error {
		var err error
		v, err = tx.Get(key)
		return err
	}))
	return v
}

// firstKey returns the first key with the prefix.
func firstKey(t testing.TB, s *Store, prefix string) string {
	t.Helper()
	var key string
	must(t, s.db.View(func(tx *buntdbTx) error {
		return scanPrefix(tx, prefix, func(k, _ string) bool { key = k; return false })
	}))
	if key == "" {
		t.Fatalf("no key with prefix %q", prefix)
	}
	return key
}
