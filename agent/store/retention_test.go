package store

import (
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func TestDeleteOlderThan(t *testing.T) {
	cutoff := t0
	old, recent := cutoff.Add(-24*time.Hour), cutoff.Add(24*time.Hour)
	type recs struct {
		obs  []time.Time // observation times (zero: undated)
		cond []time.Time // condition onsets
		enc  [][2]time.Time
	}
	tests := []struct {
		name        string
		patient     bool // has a Patient record
		in          recs
		want        recs // what survives
		wantPatient bool
	}{
		{"old and recent observations", true,
			recs{obs: []time.Time{old, recent}}, recs{obs: []time.Time{recent}}, true},
		{"everything old: patient removed too", true,
			recs{obs: []time.Time{old, old}, cond: []time.Time{old}, enc: [][2]time.Time{{old, old}}}, recs{}, false},
		{"undated records are kept", true,
			recs{obs: []time.Time{{}, old}, cond: []time.Time{{}}}, recs{obs: []time.Time{{}}, cond: []time.Time{{}}}, true},
		{"condition by onset", true,
			recs{cond: []time.Time{old, recent}}, recs{cond: []time.Time{recent}}, true},
		{"encounter by end, not start", true,
			recs{enc: [][2]time.Time{{old, recent}, {old.Add(-time.Hour), old}}}, recs{enc: [][2]time.Time{{old, recent}}}, true},
		{"ongoing encounter by start", true,
			recs{enc: [][2]time.Time{{old, {}}, {recent, {}}}}, recs{enc: [][2]time.Time{{recent, {}}}}, true},
		{"record at the cutoff is kept", true,
			recs{obs: []time.Time{cutoff}}, recs{obs: []time.Time{cutoff}}, true},
		{"patient without records is kept", true, recs{}, recs{}, true},
		{"records without a patient record", false,
			recs{obs: []time.Time{old}, cond: []time.Time{recent}}, recs{cond: []time.Time{recent}}, false},
	}
	s := fileStore(t, t.TempDir(), 4)
	s.batch = 2 // several transactions
	wantDeleted := 0
	for i, tc := range tests {
		pid := tc.name
		if tc.patient {
			must(t, s.Patient(fhir.Patient{ID: pid, Gender: "male"}))
		}
		for j, at := range tc.in.obs {
			must(t, s.Observation(fhir.Observation{ID: pid + string(rune('a'+j)), PatientID: pid, Code: "x", Value: float64(i), Time: at}))
		}
		for j, at := range tc.in.cond {
			must(t, s.Condition(fhir.Condition{ID: pid + string(rune('a'+j)), PatientID: pid, Code: "c", Onset: at}))
		}
		for j, se := range tc.in.enc {
			must(t, s.Encounter(fhir.Encounter{ID: pid + string(rune('a'+j)), PatientID: pid, Start: se[0], End: se[1]}))
		}
		wantDeleted += len(tc.in.obs) + len(tc.in.cond) + len(tc.in.enc) - len(tc.want.obs) - len(tc.want.cond) - len(tc.want.enc)
		if tc.patient && !tc.wantPatient {
			wantDeleted++
		}
	}

	n, err := s.DeleteOlderThan(cutoff)
	must(t, err)
	if n != wantDeleted {
		t.Errorf("deleted %d, want %d", n, wantDeleted)
	}
	got := map[string]fhir.PatientData{}
	for _, pd := range snapshot(t, s) {
		got[pd.Patient.ID] = pd
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pd, ok := got[s.Pseudonym(tc.name)]
			var have recs
			for _, o := range pd.Observations {
				have.obs = append(have.obs, o.Time)
			}
			for _, c := range pd.Conditions {
				have.cond = append(have.cond, c.Onset)
			}
			for _, e := range pd.Encounters {
				have.enc = append(have.enc, [2]time.Time{e.Start, e.End})
			}
			if !sameTimes(have.obs, tc.want.obs) || !sameTimes(have.cond, tc.want.cond) || len(have.enc) != len(tc.want.enc) {
				t.Fatalf("kept %+v, want %+v", have, tc.want)
			}
			for i := range have.enc {
				if !have.enc[i][0].Equal(tc.want.enc[i][0]) || !have.enc[i][1].Equal(tc.want.enc[i][1]) {
					t.Fatalf("kept encounters %v, want %v", have.enc, tc.want.enc)
				}
			}
			hasPatient := ok && pd.Patient.Gender == "male"
			if hasPatient != tc.wantPatient {
				t.Fatalf("patient record kept = %v, want %v", hasPatient, tc.wantPatient)
			}
		})
	}
	verifyOK(t, s)
	if n, err := s.DeleteOlderThan(cutoff); err != nil || n != 0 {
		t.Fatalf("second run deleted %d, err %v; want 0", n, err)
	}
}

func sameTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestDeleteOlderThanLeavesNoValueInFile(t *testing.T) {
	dir := t.TempDir()
	s := fileStore(t, dir, 4)
	must(t, s.Observation(fhir.Observation{ID: "gone", PatientID: "p", Code: "x", Value: 1, Time: t0.Add(-time.Hour)}))
	must(t, s.Observation(fhir.Observation{ID: "kept", PatientID: "p", Code: "x", Value: 2, Time: t0.Add(time.Hour)}))
	gone := rawValue(t, s, prefixObs+s.Pseudonym("p")+":"+s.resourceHash("observation", "gone"))
	if n, err := s.DeleteOlderThan(t0); err != nil || n != 1 {
		t.Fatalf("deleted %d, err %v; want 1", n, err)
	}
	raw := readFile(t, s.path)
	if containsString(raw, gone) {
		t.Fatal("the deleted value is still in the store file")
	}
}
