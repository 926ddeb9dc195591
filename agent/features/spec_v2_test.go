package features

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/protocol/featurespec"
	"github.com/cohort-fl/cohort/protocol/pb"
)

var t0 = time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)

func hobs(code string, hours float64, v float64) fhir.Observation {
	at := t0.Add(time.Duration(hours * float64(time.Hour)))
	return fhir.Observation{ID: code + at.Format(time.RFC3339), Code: code, Time: at, Value: v}
}

// icuPatient was admitted at t0 to the ICU; hr values at 1h, 10h, 30h and
// 60h after admission.
func icuPatient(id string, deceased bool) fhir.PatientData {
	return fhir.PatientData{
		Patient:    fhir.Patient{ID: id, Gender: "female", BirthDate: t0.AddDate(-70, 0, 0), Deceased: deceased},
		Encounters: []fhir.Encounter{{ID: id + "-e", Class: "ICU", Start: t0}},
		Observations: []fhir.Observation{
			hobs("8867-4", 1, 100), hobs("8867-4", 10, 90), hobs("8867-4", 30, 80), hobs("8867-4", 60, 200),
		},
		Conditions: []fhir.Condition{{ID: id + "-c", Code: "44054006", Onset: t0.AddDate(-1, 0, 0)}},
	}
}

func mustSpec(t *testing.T, src string) *pb.FeatureSpec {
	t.Helper()
	s, err := featurespec.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWindowedAggregatesAtEncounterIndex(t *testing.T) {
	// Index = admission + 48h; window 24h = (24h, 48h]: only the 30h value.
	spec := mustSpec(t, `
index: {at: encounter_start, offset: 48h, encounter_class: ICU}
label: {kind: deceased}
features:
  - {name: hr_last_all, kind: last, loinc: 8867-4, scale: 1}
  - {name: hr_mean_48, kind: mean, loinc: 8867-4, window: 48h, scale: 1}
  - {name: hr_min_48, kind: min, loinc: 8867-4, window: 48h, scale: 1}
  - {name: hr_max_48, kind: max, loinc: 8867-4, window: 48h, scale: 1}
  - {name: hr_n_24, kind: count, loinc: 8867-4, window: 24h, scale: 1}
  - {name: hr_slope_48, kind: slope, loinc: 8867-4, window: 48h, scale: 1}
  - {name: age, kind: age, scale: 1}
  - {name: diabetes, kind: condition, codes: ["44054006"], scale: 1}
`)
	ds, err := Build(spec, []fhir.PatientData{icuPatient("a", true), icuPatient("b", false)})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Rows != 2 || ds.Y[0] != 1 || ds.Y[1] != 0 {
		t.Fatalf("rows %d labels %v", ds.Rows, ds.Y)
	}
	// Slope of (1,100), (10,90), (30,80) per hour, by least squares.
	ts, vs := []float64{1, 10, 30}, []float64{100, 90, 80}
	var n, st, sv, stt, stv float64
	for i := range ts {
		t, v := ts[i]-48, vs[i]
		n, st, sv, stt, stv = n+1, st+t, sv+v, stt+t*t, stv+t*v
	}
	slope := (n*stv - st*sv) / (n*stt - st*st)
	age := t0.Add(48*time.Hour).Sub(t0.AddDate(-70, 0, 0)).Hours() / 24 / 365.2425
	want := []float64{80, 90, 80, 100, 1, slope, age, 1}
	for c, w := range want {
		if got := float64(ds.Row(0)[c]); math.Abs(got-w) > 0.02 {
			t.Errorf("%s = %v, want %v", spec.GetFeatures()[c].GetName(), got, w)
		}
	}
}

func TestCohortAndMissingPolicies(t *testing.T) {
	young := icuPatient("young", false)
	young.Patient.BirthDate = t0.AddDate(-10, 0, 0)
	outpatient := icuPatient("outpatient", false)
	outpatient.Encounters[0].Class = "AMB"
	noHR := icuPatient("nohr", false)
	noHR.Observations = []fhir.Observation{hobs("9279-1", 2, 18)}
	patients := []fhir.PatientData{icuPatient("adult", false), young, outpatient, noHR}

	base := `
index: {at: encounter_start, offset: 48h}
cohort: {min_age: 16, encounter_class: ICU}
label: {kind: deceased}
features:
  - {name: hr, kind: mean, loinc: 8867-4, window: 48h, center: 85, scale: 5, fill: 70, missing: %s}
`
	cases := []struct {
		missing string
		keys    []string
		nohrVal float32
	}{
		{"fill", []string{"adult", "nohr"}, (70 - 85) / 5.0},
		{"mean", []string{"adult", "nohr"}, 0},
		{"drop", []string{"adult"}, 0},
	}
	for _, c := range cases {
		t.Run(c.missing, func(t *testing.T) {
			ds, err := Build(mustSpec(t, sprintf(base, c.missing)), patients)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds.Keys) != len(c.keys) {
				t.Fatalf("keys = %v, want %v", ds.Keys, c.keys)
			}
			for i, k := range c.keys {
				if ds.Keys[i] != k {
					t.Fatalf("keys = %v, want %v", ds.Keys, c.keys)
				}
			}
			if len(c.keys) == 2 && ds.Row(1)[0] != c.nohrVal {
				t.Errorf("missing hr -> %v, want %v", ds.Row(1)[0], c.nohrVal)
			}
		})
	}
}

func TestLabels(t *testing.T) {
	p := icuPatient("p", false)
	p.Conditions = append(p.Conditions,
		fhir.Condition{ID: "sepsis", Code: "91302008", Onset: t0.Add(50 * time.Hour)})
	p.Observations = append(p.Observations, fhir.Observation{ID: "lbl", Code: "cohort-label", Time: t0, Value: 1})
	died := icuPatient("d", false)
	died.Encounters[0].Discharge = "exp"
	cases := []struct {
		label string
		p     fhir.PatientData
		want  float32
	}{
		{`{code: "91302008"}`, p, 1},
		{`{code: "91302008", horizon: 24h}`, p, 1}, // onset 2h after the 48h index
		{`{code: "91302008", horizon: 1h}`, p, 0},  // outside the horizon
		{`{code: "91302008", system: "x"}`, p, 0},  // system must match when set
		{`{kind: observation, observation_code: cohort-label, threshold: 0.5}`, p, 1},
		{`{kind: observation, observation_code: cohort-label, threshold: 2}`, p, 0},
		{`{kind: deceased}`, p, 0},
		{`{kind: deceased}`, died, 1}, // discharged as expired
	}
	for _, c := range cases {
		t.Run(c.label, func(t *testing.T) {
			spec := mustSpec(t, "index: {at: encounter_start, offset: 48h}\nfeatures: [{name: a, kind: age, scale: 1}]\nlabel: "+c.label)
			ds, err := Build(spec, []fhir.PatientData{c.p})
			if err != nil {
				t.Fatal(err)
			}
			if ds.Y[0] != c.want {
				t.Fatalf("label = %v, want %v", ds.Y[0], c.want)
			}
		})
	}
}

func TestStatsForFederatedNormalization(t *testing.T) {
	spec := mustSpec(t, `
index: {at: encounter_start, offset: 48h}
normalization: federated
label: {kind: deceased}
features:
  - {name: hr, kind: mean, loinc: 8867-4, window: 48h, missing: mean}
  - {name: rr, kind: last, loinc: 9279-1, missing: mean}
`)
	noHR := icuPatient("nohr", false)
	noHR.Observations = []fhir.Observation{hobs("9279-1", 2, 18)}
	n, st, err := Stats(spec, []fhir.PatientData{icuPatient("a", false), icuPatient("b", false), noHR})
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("cohort = %d", n)
	}
	if !slices.EqualFunc(st[:2], []FeatureStats{{Count: 2, Sum: 180, SumSq: 2 * 90 * 90}, {Count: 1, Sum: 18, SumSq: 324}},
		func(a, b FeatureStats) bool {
			return a.Count == b.Count && a.Sum == b.Sum && a.SumSq == b.SumSq && a.Bins == nil
		}) {
		t.Fatalf("stats = %+v", st)
	}
	// Before the centers and scales are filled in, Build refuses.
	if _, err := Build(spec, nil); err == nil {
		t.Fatal("Build accepted a federated spec without scales")
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
