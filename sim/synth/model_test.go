package synth

import (
	"math"
	"slices"
	"testing"

	"github.com/cohort-fl/cohort/protocol/pb"
)

// design turns records into the standardized feature matrix of spec (as the
// agent's feature code would: last observed value, fill when missing) and the
// label vector.
func design(t *testing.T, spec *pb.FeatureSpec, recs []Record) ([][]float64, []float64) {
	t.Helper()
	byLOINC := map[string]vital{}
	for k, v := range vitals {
		byLOINC[v.loinc] = vital(k)
	}
	x := make([][]float64, len(recs))
	y := make([]float64, len(recs))
	for i := range recs {
		val, have := recs[i].lastObserved()
		row := make([]float64, len(spec.Features))
		for j, f := range spec.Features {
			var raw float64
			switch f.Kind {
			case pb.FeatureKind_FEATURE_KIND_AGE:
				raw = recs[i].Profile.Age
			case pb.FeatureKind_FEATURE_KIND_SEX_FEMALE:
				if recs[i].Profile.Female {
					raw = 1
				}
			case pb.FeatureKind_FEATURE_KIND_OBS_LAST:
				k, ok := byLOINC[f.Loinc]
				if !ok {
					t.Fatalf("feature %s: unknown LOINC %s", f.Name, f.Loinc)
				}
				raw = f.Fill
				if have[k] {
					raw = val[k]
				}
			default:
				t.Fatalf("feature %s: unexpected kind %v", f.Name, f.Kind)
			}
			row[j] = (raw - f.Center) / f.Scale
		}
		x[i] = row
		if recs[i].Septic {
			y[i] = 1
		}
	}
	return x, y
}

// fitLogReg trains logistic regression by full-batch gradient descent from
// zero weights; the last weight is the intercept.
func fitLogReg(x [][]float64, y []float64, steps int, lr float64) []float64 {
	d := len(x[0])
	w := make([]float64, d+1)
	g := make([]float64, d+1)
	for range steps {
		clear(g)
		for i, row := range x {
			err := sigmoid(score(w, row)) - y[i]
			for j, v := range row {
				g[j] += err * v
			}
			g[d] += err
		}
		for j := range w {
			w[j] -= lr * g[j] / float64(len(x))
		}
	}
	return w
}

func score(w, row []float64) float64 {
	s := w[len(w)-1]
	for j, v := range row {
		s += w[j] * v
	}
	return s
}

func predict(w []float64, x [][]float64) []float64 {
	out := make([]float64, len(x))
	for i, row := range x {
		out[i] = score(w, row)
	}
	return out
}

// auroc is the Mann-Whitney estimate of the area under the ROC curve, with
// ties counted as one half.
func auroc(scores, y []float64) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmpFloat(scores[a], scores[b]) })
	var rankSum, pos float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		mid := float64(i+j+1) / 2 // average 1-based rank of the tie group
		for k := i; k < j; k++ {
			if y[idx[k]] == 1 {
				rankSum += mid
				pos++
			}
		}
		i = j
	}
	neg := float64(len(scores)) - pos
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestAUROCHelper(t *testing.T) {
	tests := []struct {
		name   string
		scores []float64
		y      []float64
		want   float64
	}{
		{"perfect", []float64{0.1, 0.2, 0.8, 0.9}, []float64{0, 0, 1, 1}, 1},
		{"inverted", []float64{0.9, 0.8, 0.2, 0.1}, []float64{0, 0, 1, 1}, 0},
		{"all tied", []float64{0.5, 0.5, 0.5, 0.5}, []float64{0, 1, 0, 1}, 0.5},
		{"one swap", []float64{0.1, 0.3, 0.2, 0.4}, []float64{0, 0, 1, 1}, 0.75},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := auroc(tc.scores, tc.y); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("auroc = %v, want %v", got, tc.want)
			}
		})
	}
}
