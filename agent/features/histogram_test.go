package features

import (
	"slices"
	"testing"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func TestBinOf(t *testing.T) {
	edges := []float64{0, 2, 4, 6}
	for _, c := range []struct {
		v    float64
		want int
	}{
		{-0.1, -1}, {0, 0}, {1.9, 0}, {2, 1}, {3.5, 1}, {4, 2}, {6, 2}, {6.1, -1},
	} {
		if got := binOf(edges, c.v); got != c.want {
			t.Errorf("binOf(%v) = %d, want %d", c.v, got, c.want)
		}
	}
	if got := binOf(nil, 1); got != -1 {
		t.Errorf("binOf without edges = %d, want -1", got)
	}
}

// Histograms counts values into bins; with clip, values outside the edges
// are moved to the nearest edge for every aggregate.
func TestHistogramsClip(t *testing.T) {
	spec := mustSpec(t, `
index: {at: encounter_start, offset: 48h}
normalization: federated
label: {kind: deceased}
features:
  - {name: hr, kind: last, loinc: 8867-4}
`)
	// Last hr before the 48h index: 80 for each patient; one has 250.
	high := icuPatient("c", false)
	high.Observations = []fhir.Observation{hobs("8867-4", 2, 250)}
	patients := []fhir.PatientData{icuPatient("a", false), icuPatient("b", false), high}
	edges := [][]float64{{50, 100, 150}}
	_, st, err := Histograms(spec, patients, edges, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := st[0]; got.Count != 3 || got.Sum != 410 || !slices.Equal(got.Bins, []uint64{2, 0}) {
		t.Fatalf("no clip: %+v", got)
	}
	_, st, err = Histograms(spec, patients, edges, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := st[0]; got.Count != 3 || got.Sum != 310 || got.SumSq != 2*80*80+150*150 || !slices.Equal(got.Bins, []uint64{2, 1}) {
		t.Fatalf("clip: %+v", got)
	}
}
