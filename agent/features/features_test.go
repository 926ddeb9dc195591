package features

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/protocol/pb"
)

const (
	loincHR  = "8867-4"
	loincSys = "8480-6"
	loincDia = "8462-4"
	snomedDM = "44054006"
)

func feat(name string, kind pb.FeatureKind, loinc string, center, scale, fill float64) *pb.Feature {
	return &pb.Feature{Name: name, Kind: kind, Loinc: loinc, Center: center, Scale: scale, Fill: fill}
}

func specOf(label *pb.Label, fs ...*pb.Feature) *pb.FeatureSpec {
	return &pb.FeatureSpec{Features: fs, Label: label}
}

var dmLabel = &pb.Label{ConditionSystem: fhir.SystemSNOMED, ConditionCode: snomedDM}

func TestValidateSpec(t *testing.T) {
	age := feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 50, 10, 50)
	tests := []struct {
		name string
		spec *pb.FeatureSpec
		ok   bool
	}{
		{"valid", specOf(dmLabel, age, feat("hr", pb.FeatureKind_FEATURE_KIND_OBS_LAST, loincHR, 70, 10, 70)), true},
		{"label without system", specOf(&pb.Label{ConditionCode: "I10"}, age), true},
		{"nil spec", nil, false},
		{"no features", specOf(dmLabel), false},
		{"nil feature", specOf(dmLabel, nil), false},
		{"unspecified kind", specOf(dmLabel, feat("x", pb.FeatureKind_FEATURE_KIND_UNSPECIFIED, "", 0, 1, 0)), false},
		{"unknown kind", specOf(dmLabel, feat("x", pb.FeatureKind(99), "", 0, 1, 0)), false},
		{"obs without loinc", specOf(dmLabel, feat("hr", pb.FeatureKind_FEATURE_KIND_OBS_MEAN, "", 0, 1, 0)), false},
		{"zero scale", specOf(dmLabel, feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 0, 0, 0)), false},
		{"NaN scale", specOf(dmLabel, feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 0, math.NaN(), 0)), false},
		{"Inf scale", specOf(dmLabel, feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 0, math.Inf(1), 0)), false},
		{"Inf fill", specOf(dmLabel, feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 0, 1, math.Inf(-1))), false},
		{"NaN center", specOf(dmLabel, feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", math.NaN(), 1, 0)), false},
		{"duplicate names", specOf(dmLabel, age, feat("age", pb.FeatureKind_FEATURE_KIND_SEX_FEMALE, "", 0, 1, 0)), false},
		{"empty name", specOf(dmLabel, feat("", pb.FeatureKind_FEATURE_KIND_AGE, "", 0, 1, 0)), false},
		{"no label", specOf(nil, age), false},
		{"label without code", specOf(&pb.Label{ConditionSystem: fhir.SystemSNOMED}, age), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateSpec(tc.spec)
			if tc.ok && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("err = %v, want ErrInvalidSpec", err)
			}
			if _, berr := Build(tc.spec, nil); (berr == nil) != tc.ok {
				t.Errorf("Build err = %v, ValidateSpec err = %v", berr, err)
			}
		})
	}
}

var day0 = time.Date(2020, 1, 1, 12, 0, 0, 0, time.UTC)

func obs(pid, id, code string, v float64, at time.Time) fhir.Observation {
	return fhir.Observation{ID: id, PatientID: pid, Code: code, Value: v, Time: at}
}

func TestBuild(t *testing.T) {
	spec := specOf(dmLabel,
		feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 0, 1, -1),
		feat("female", pb.FeatureKind_FEATURE_KIND_SEX_FEMALE, "", 0, 1, 0),
		feat("hr_last", pb.FeatureKind_FEATURE_KIND_OBS_LAST, loincHR, 70, 10, 70),
		feat("hr_mean", pb.FeatureKind_FEATURE_KIND_OBS_MEAN, loincHR, 0, 1, -1),
		feat("sbp_last", pb.FeatureKind_FEATURE_KIND_OBS_LAST, loincSys, 120, 20, 100),
		feat("dbp_mean", pb.FeatureKind_FEATURE_KIND_OBS_MEAN, loincDia, 0, 2, 0),
	)
	patients := []fhir.PatientData{
		{ // "b": full record, BP panel components, label via SNOMED.
			Patient: fhir.Patient{ID: "b", Gender: "female", BirthDate: day0.AddDate(-40, 0, 0)},
			Observations: []fhir.Observation{
				obs("b", "o3", loincHR, 90, day0.AddDate(0, 0, -10)),
				obs("b", "o1", loincHR, 60, day0.AddDate(0, 0, -20)),
				obs("b", "bp#8480-6", loincSys, 140, day0),
				obs("b", "bp#8462-4", loincDia, 90, day0),
				obs("b", "bp2#8462-4", loincDia, 70, day0.AddDate(0, 0, -30)),
			},
			Conditions: []fhir.Condition{{ID: "c1", PatientID: "b", System: fhir.SystemSNOMED, Code: snomedDM}},
		},
		{ // "a": no birth date, no heart rate, male; ICD code with the same value does not match the SNOMED label.
			Patient:      fhir.Patient{ID: "a", Gender: "male"},
			Observations: []fhir.Observation{obs("a", "x", loincSys, 120, day0)},
			Conditions:   []fhir.Condition{{ID: "c2", PatientID: "a", System: fhir.SystemICD10CM, Code: snomedDM}},
		},
		{ // "c": no observations: no row.
			Patient:    fhir.Patient{ID: "c", Gender: "female", BirthDate: day0.AddDate(-30, 0, 0)},
			Conditions: []fhir.Condition{{ID: "c3", PatientID: "c", System: fhir.SystemSNOMED, Code: snomedDM}},
		},
		{ // "d": keyed by its observations' PatientID; birth date after index time -> fill.
			Patient:      fhir.Patient{BirthDate: day0.AddDate(1, 0, 0)},
			Observations: []fhir.Observation{obs("d", "y", loincHR, 80, day0)},
		},
	}
	ds, err := Build(spec, patients)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Validate(); err != nil {
		t.Fatal(err)
	}
	if ds.Rows != 3 || ds.Cols != 6 || !slices.Equal(ds.Keys, []string{"a", "b", "d"}) {
		t.Fatalf("rows %d cols %d keys %v", ds.Rows, ds.Cols, ds.Keys)
	}
	ageB := day0.Sub(day0.AddDate(-40, 0, 0)).Hours() / 24 / 365.2425 // 14610 days
	want := [][]float32{
		{-1, 0, 0, -1, 0, 0}, // a
		{float32(ageB), 1, 2, 75, 1, float32((90.0 + 70) / 2 / 2)}, // b
		{-1, 0, 1, 80, -1, 0}, // d
	}
	for i, w := range want {
		t.Run(fmt.Sprintf("row %s", ds.Keys[i]), func(t *testing.T) {
			got := ds.Row(i)
			for j := range w {
				if math.Abs(float64(got[j]-w[j])) > 1e-5 {
					t.Errorf("column %s = %v, want %v", spec.Features[j].Name, got[j], w[j])
				}
			}
		})
	}
	if !slices.Equal(ds.Y, []float32{0, 1, 0}) || ds.Positives() != 1 {
		t.Errorf("labels %v", ds.Y)
	}
}

func TestBuildIndexTime(t *testing.T) {
	// A heart rate recorded after the last observation cannot exist, but
	// the last observation defines the index time: both values count.
	spec := specOf(&pb.Label{ConditionCode: "I10"},
		feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 0, 1, 0),
		feat("hr", pb.FeatureKind_FEATURE_KIND_OBS_LAST, loincHR, 0, 1, 0),
	)
	birth := time.Date(2000, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		obs     []fhir.Observation
		wantAge float64
		wantHR  float32
	}{
		{"age at last observation", []fhir.Observation{
			obs("p", "1", loincHR, 60, time.Date(2010, 3, 1, 0, 0, 0, 0, time.UTC)),
			obs("p", "2", "other", 1, time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC)),
		}, 20.0, 60},
		{"half year", []fhir.Observation{
			obs("p", "1", loincHR, 61, birth.Add(time.Duration(365.2425*12*3600)*time.Second)),
		}, 0.5, 61},
		{"tie at same time picks greatest id", []fhir.Observation{
			obs("p", "b", loincHR, 70, birth.AddDate(1, 0, 0)),
			obs("p", "a", loincHR, 50, birth.AddDate(1, 0, 0)),
		}, 1.0, 70},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, err := Build(spec, []fhir.PatientData{{Patient: fhir.Patient{ID: "p", BirthDate: birth}, Observations: tc.obs}})
			if err != nil {
				t.Fatal(err)
			}
			if got := ds.Row(0); math.Abs(float64(got[0])-tc.wantAge) > 0.01 || got[1] != tc.wantHR {
				t.Errorf("row = %v, want age %.2f hr %v", got, tc.wantAge, tc.wantHR)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	spec := specOf(dmLabel, feat("hr", pb.FeatureKind_FEATURE_KIND_OBS_LAST, loincHR, 0, 1e-300, 0))
	one := func(id, pid string, v float64) fhir.PatientData {
		return fhir.PatientData{Patient: fhir.Patient{ID: id}, Observations: []fhir.Observation{obs(pid, "o", loincHR, v, day0)}}
	}
	tests := []struct {
		name     string
		patients []fhir.PatientData
		want     error
	}{
		{"overflows float32", []fhir.PatientData{one("p", "p", 1)}, ErrNonFinite},
		{"no key", []fhir.PatientData{one("", "", 0)}, ErrMissingKey},
		{"duplicate key", []fhir.PatientData{one("p", "p", 0), one("p", "p", 0)}, ErrDuplicateKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Build(spec, tc.patients); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func bigDataset(n int) *Dataset {
	ds := &Dataset{Cols: 2}
	for i := 0; i < n; i++ {
		ds.X = append(ds.X, float32(i), float32(-i))
		ds.Y = append(ds.Y, float32(i%2))
		ds.Keys = append(ds.Keys, fmt.Sprintf("%032x", i*7919))
		ds.Rows++
	}
	return ds
}

func TestSplit(t *testing.T) {
	ds := bigDataset(5000)
	train, val := Split(ds, 0.2, "job-1")
	if train.Rows+val.Rows != ds.Rows {
		t.Fatalf("%d + %d rows, want %d", train.Rows, val.Rows, ds.Rows)
	}
	for _, d := range []*Dataset{train, val} {
		if err := d.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if frac := float64(val.Rows) / float64(ds.Rows); math.Abs(frac-0.2) > 0.03 {
		t.Errorf("validation fraction %.3f, want about 0.2", frac)
	}
	// Rows travel with their keys.
	for i, k := range val.Keys {
		var j int
		if _, err := fmt.Sscanf(k, "%x", &j); err != nil {
			t.Fatal(err)
		}
		if r := val.Row(i); r[0] != float32(j/7919) || val.Y[i] != float32((j/7919)%2) {
			t.Fatalf("row %d does not match its key", i)
		}
	}

	t.Run("deterministic", func(t *testing.T) {
		_, val2 := Split(ds, 0.2, "job-1")
		if !slices.Equal(val.Keys, val2.Keys) {
			t.Error("same salt, different split")
		}
		_, val3 := Split(ds, 0.2, "job-2")
		if slices.Equal(val.Keys, val3.Keys) {
			t.Error("different salt, same split")
		}
	})
	t.Run("independent of other rows", func(t *testing.T) {
		sub := &Dataset{Cols: 2, Rows: 1000, X: ds.X[:2000], Y: ds.Y[:1000], Keys: ds.Keys[:1000]}
		_, subVal := Split(sub, 0.2, "job-1")
		inVal := map[string]bool{}
		for _, k := range val.Keys {
			inVal[k] = true
		}
		for _, k := range sub.Keys {
			if inVal[k] != slices.Contains(subVal.Keys, k) {
				t.Fatal("a patient changed split when the dataset changed")
			}
		}
	})
	t.Run("edges", func(t *testing.T) {
		cases := []struct {
			frac      float64
			wantTrain int
		}{{0, 5000}, {-1, 5000}, {math.NaN(), 5000}, {1, 0}, {2, 0}}
		for _, c := range cases {
			tr, va := Split(ds, c.frac, "s")
			if tr.Rows != c.wantTrain || va.Rows != ds.Rows-c.wantTrain {
				t.Errorf("fraction %v: %d/%d rows", c.frac, tr.Rows, va.Rows)
			}
		}
		tr, va := Split(nil, 0.5, "s")
		if tr.Rows != 0 || va.Rows != 0 {
			t.Error("nil dataset")
		}
		bad := &Dataset{Rows: 3, Cols: 2, X: []float32{1}}
		tr, va = Split(bad, 0.5, "s")
		if tr.Rows != 0 || va.Rows != 0 || bad.Row(2) != nil {
			t.Error("inconsistent dataset")
		}
	})
}
