package store

import (
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/tidwall/buntdb"
)

type buntdbTx = buntdb.Tx

func TestVersionAwareUpsert(t *testing.T) {
	t1, t2 := t0, t0.Add(time.Hour)
	type write struct {
		ver   fhir.Version
		value float64
	}
	tests := []struct {
		name   string
		writes []write
		batch  bool
		want   float64
		stats  Stats
	}{
		{"newer lastUpdated replaces", []write{{fhir.Version{Updated: t1}, 1}, {fhir.Version{Updated: t2}, 2}}, false, 2, Stats{Written: 2}},
		{"older lastUpdated arriving later is ignored", []write{{fhir.Version{Updated: t2}, 2}, {fhir.Version{Updated: t1}, 1}}, false, 2, Stats{Written: 1, Stale: 1}},
		{"older versionId arriving later is ignored", []write{{fhir.Version{ID: "10"}, 10}, {fhir.Version{ID: "9"}, 9}}, false, 10, Stats{Written: 1, Stale: 1}},
		{"newer versionId replaces", []write{{fhir.Version{ID: "9"}, 9}, {fhir.Version{ID: "10"}, 10}}, false, 10, Stats{Written: 2}},
		{"same version is a duplicate", []write{{fhir.Version{ID: "3", Updated: t1}, 3}, {fhir.Version{ID: "3", Updated: t1}, 4}}, false, 3, Stats{Written: 1, Duplicate: 1}},
		{"no meta: the last write wins", []write{{fhir.Version{}, 1}, {fhir.Version{}, 2}}, false, 2, Stats{Written: 2}},
		{"no meta, the same record again: a duplicate", []write{{fhir.Version{}, 1}, {fhir.Version{}, 1}}, false, 1, Stats{Written: 1, Duplicate: 1}},
		{"no meta, the same record again in one batch: a duplicate", []write{{fhir.Version{}, 1}, {fhir.Version{}, 1}}, true, 1, Stats{Written: 1, Duplicate: 1}},
		{"no meta after a versioned record: written", []write{{fhir.Version{ID: "3"}, 1}, {fhir.Version{}, 1}}, false, 1, Stats{Written: 2}},
		{"in one batch, the older is ignored", []write{{fhir.Version{Updated: t2}, 2}, {fhir.Version{Updated: t1}, 1}}, true, 2, Stats{Written: 1, Stale: 1}},
		{"in one batch, the newer replaces", []write{{fhir.Version{Updated: t1}, 1}, {fhir.Version{Updated: t2}, 2}}, true, 2, Stats{Written: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openMem(t)
			var sink fhir.Sink = s
			b := s.NewBatch(100)
			if tc.batch {
				sink = b
			}
			for _, w := range tc.writes {
				must(t, sink.Observation(fhir.Observation{ID: "o1", PatientID: "p1", Code: "8867-4", Value: w.value, Time: t0, Version: w.ver}))
			}
			must(t, b.Flush())
			pds := snapshot(t, s)
			if len(pds) != 1 || len(pds[0].Observations) != 1 {
				t.Fatalf("got %+v", pds)
			}
			if got := pds[0].Observations[0].Value; got != tc.want {
				t.Errorf("value = %v, want %v", got, tc.want)
			}
			if got := s.Stats(); got != tc.stats {
				t.Errorf("Stats = %+v, want %+v", got, tc.stats)
			}
		})
	}
}

func TestVersionAwareUpsertAllKinds(t *testing.T) {
	newer, older := fhir.Version{ID: "2", Updated: t0.Add(time.Hour)}, fhir.Version{ID: "1", Updated: t0}
	tests := []struct {
		name  string
		write func(s *Store, v fhir.Version, marker string) error
		read  func(pd fhir.PatientData) (string, fhir.Version)
	}{
		{"patient",
			func(s *Store, v fhir.Version, m string) error {
				return s.Patient(fhir.Patient{ID: "p1", Gender: m, Version: v})
			},
			func(pd fhir.PatientData) (string, fhir.Version) { return pd.Patient.Gender, pd.Patient.Version }},
		{"condition",
			func(s *Store, v fhir.Version, m string) error {
				return s.Condition(fhir.Condition{ID: "c1", PatientID: "p1", Code: m, Version: v})
			},
			func(pd fhir.PatientData) (string, fhir.Version) {
				return pd.Conditions[0].Code, pd.Conditions[0].Version
			}},
		{"encounter",
			func(s *Store, v fhir.Version, m string) error {
				return s.Encounter(fhir.Encounter{ID: "e1", PatientID: "p1", Class: m, Start: t0, Version: v})
			},
			func(pd fhir.PatientData) (string, fhir.Version) {
				return pd.Encounters[0].Class, pd.Encounters[0].Version
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openMem(t)
			must(t, tc.write(s, newer, "new"))
			must(t, tc.write(s, older, "old"))
			got, v := tc.read(snapshot(t, s)[0])
			if got != "new" || !sameVersion(v, newer) {
				t.Fatalf("kept %q version %+v, want the newer one", got, v)
			}
			if st := s.Stats(); st.Stale != 1 || st.Written != 1 {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

func TestVersionSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := fileStore(t, dir, 3)
	must(t, s.Observation(fhir.Observation{ID: "o1", PatientID: "p1", Code: "x", Value: 2, Version: fhir.Version{ID: "2"}}))
	must(t, s.Close())
	s = fileStore(t, dir, 3)
	must(t, s.Observation(fhir.Observation{ID: "o1", PatientID: "p1", Code: "x", Value: 1, Version: fhir.Version{ID: "1"}}))
	if got := snapshot(t, s)[0].Observations[0]; got.Value != 2 || got.Version.ID != "2" {
		t.Fatalf("after reopen the older version replaced the newer: %+v", got)
	}
	if st := s.Stats(); st != (Stats{Stale: 1}) {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestWriteRepairsCorruptValue(t *testing.T) {
	s := openMem(t)
	o := fhir.Observation{ID: "o1", PatientID: "p1", Code: "x", Value: 1, Time: t0, Version: fhir.Version{ID: "5"}}
	must(t, s.Observation(o))
	key := firstKey(t, s, prefixObs)
	must(t, s.db.Update(func(tx *buntdbTx) error { _, _, err := tx.Set(key, "garbage", nil); return err }))
	o.Version.ID, o.Value = "1", 2 // older than the lost version: nothing left to compare with
	must(t, s.Observation(o))
	if got := snapshot(t, s)[0].Observations[0].Value; got != 2 {
		t.Fatalf("value = %v, want the repaired 2", got)
	}
	verifyOK(t, s)
}
