package train

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestAUROC(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		want   float64
	}{
		{"perfect", []float32{0.1, 0.2, 0.8, 0.9}, []float32{0, 0, 1, 1}, 1},
		{"inverted", []float32{0.9, 0.8, 0.2, 0.1}, []float32{0, 0, 1, 1}, 0},
		{"textbook", []float32{0.1, 0.4, 0.35, 0.8}, []float32{0, 0, 1, 1}, 0.75},
		{"all scores tied", []float32{0.5, 0.5, 0.5, 0.5, 0.5}, []float32{0, 1, 1, 0, 1}, 0.5},
		// pos 0.5 vs neg {0.2, 0.5}: 1 + 0.5; pos 0.9: 2 → 3.5/4
		{"tie across classes", []float32{0.2, 0.5, 0.5, 0.9}, []float32{0, 0, 1, 1}, 0.875},
		// pos {1, 2, 3} vs neg {1, 2}: 0.5 + (1 + 0.5) + 2 = 4 → 4/6
		{"several tie groups", []float32{1, 1, 2, 2, 3}, []float32{0, 1, 0, 1, 1}, 4.0 / 6},
		{"infinite scores rank", []float32{float32(math.Inf(-1)), 0, float32(math.Inf(1))}, []float32{0, 1, 1}, 1},
		{"one of each", []float32{3, 3}, []float32{1, 0}, 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AUROC(tt.scores, tt.labels)
			if err != nil {
				t.Fatalf("AUROC: %v", err)
			}
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("AUROC = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAUROCMatchesPairCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for trial := range 50 {
		n := 2 + rng.IntN(60)
		s := make([]float32, n)
		l := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.IntN(6)) // heavy ties
			l[i] = float32(rng.IntN(2))
		}
		l[0], l[1] = 0, 1
		var num, den float64
		for i := range n {
			for j := range n {
				if l[i] == 1 && l[j] == 0 {
					den++
					switch {
					case s[i] > s[j]:
						num++
					case s[i] == s[j]:
						num += 0.5
					}
				}
			}
		}
		got, err := AUROC(s, l)
		if err != nil {
			t.Fatal(err)
		}
		if want := num / den; math.Abs(got-want) > 1e-12 {
			t.Fatalf("trial %d: AUROC = %v, pair count %v", trial, got, want)
		}
	}
}

func TestAUROCErrors(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		want   error
	}{
		{"only positives", []float32{0.1, 0.9}, []float32{1, 1}, ErrOneClass},
		{"only negatives", []float32{0.1, 0.9, 0.3}, []float32{0, 0, 0}, ErrOneClass},
		{"length mismatch", []float32{0.1, 0.9}, []float32{1}, ErrShape},
		{"empty", nil, nil, ErrNoRows},
		{"soft label", []float32{0.1, 0.9}, []float32{0, 0.5}, ErrLabel},
		{"NaN score", []float32{0.1, float32(math.NaN())}, []float32{0, 1}, ErrNotFinite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := AUROC(tt.scores, tt.labels); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAccuracy(t *testing.T) {
	tests := []struct {
		name      string
		scores    []float32
		labels    []float32
		threshold float32
		want      float64
	}{
		{"all right", []float32{0.1, 0.9}, []float32{0, 1}, 0.5, 1},
		{"half", []float32{0.1, 0.9, 0.6, 0.4}, []float32{0, 1, 0, 1}, 0.5, 0.5},
		{"score at threshold is positive", []float32{0.5, 0.5}, []float32{1, 0}, 0.5, 0.5},
		{"other threshold", []float32{0.2, 0.3, 0.8}, []float32{0, 1, 1}, 0.25, 1},
		{"length mismatch", []float32{0.2}, []float32{0, 1}, 0.5, math.NaN()},
		{"empty", nil, nil, 0.5, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Accuracy(tt.scores, tt.labels, tt.threshold)
			if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && got != tt.want) {
				t.Errorf("Accuracy = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLogLoss(t *testing.T) {
	clampLoss := -math.Log(logLossEps)
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		want   float64
	}{
		{"coin flip", []float32{0.5, 0.5}, []float32{1, 0}, math.Ln2},
		{"hand case", []float32{0.8, 0.3}, []float32{1, 0}, -(math.Log(float64(float32(0.8))) + math.Log(1-float64(float32(0.3)))) / 2},
		{"confident and wrong is clamped", []float32{1, 0}, []float32{0, 1}, clampLoss},
		{"soft label", []float32{0.5}, []float32{0.25}, math.Ln2},
		{"length mismatch", []float32{0.5}, []float32{1, 0}, math.NaN()},
		{"empty", nil, nil, math.NaN()},
		{"NaN score", []float32{float32(math.NaN())}, []float32{1}, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := LogLoss(tt.scores, tt.labels)
			if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tt.want) > 1e-6) {
				t.Errorf("LogLoss = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAUPRC(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		want   float64
	}{
		{"perfect", []float32{0.1, 0.2, 0.8, 0.9}, []float32{0, 0, 1, 1}, 1},
		// Ranked 0.8+, 0.4-, 0.35+, 0.1-: recall ½ at precision 1, then
		// recall 1 at precision ⅔ → ½ + ½·⅔.
		{"textbook", []float32{0.1, 0.4, 0.35, 0.8}, []float32{0, 0, 1, 1}, 5.0 / 6},
		// Positives at ranks 3 and 4: ½·⅓ + ½·2/4.
		{"inverted", []float32{0.9, 0.8, 0.2, 0.1}, []float32{0, 0, 1, 1}, 5.0 / 12},
		// One threshold: recall 1 at the prevalence.
		{"all scores tied", []float32{0.5, 0.5, 0.5, 0.5, 0.5}, []float32{0, 1, 1, 0, 1}, 0.6},
		// 0.9+ alone: ½·1; then the tied pair {0.5-, 0.5+}: ½·⅔.
		{"tie across classes", []float32{0.2, 0.5, 0.5, 0.9}, []float32{0, 0, 1, 1}, 5.0 / 6},
		// 3+: ⅓·1; {2-, 2+}: ⅓·⅔; {1-, 1+}: ⅓·⅗.
		{"several tie groups", []float32{1, 1, 2, 2, 3}, []float32{0, 1, 0, 1, 1}, 1.0/3 + 2.0/9 + 1.0/5},
		{"no positives", []float32{0.1, 0.9, 0.3}, []float32{0, 0, 0}, 0},
		{"only positives", []float32{0.3, 0.7}, []float32{1, 1}, 1},
		{"infinite scores rank", []float32{float32(math.Inf(-1)), 0, float32(math.Inf(1))}, []float32{1, 0, 1}, 0.5 + 0.5*2.0/3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AUPRC(tt.scores, tt.labels)
			if err != nil {
				t.Fatalf("AUPRC: %v", err)
			}
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("AUPRC = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestAUPRCMatchesDefinition: average precision is the mean, over the
// positives, of the precision among the rows scoring at least as high as
// that positive (ties share a threshold).
func TestAUPRCMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for trial := range 50 {
		n := 1 + rng.IntN(60)
		s := make([]float32, n)
		l := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.IntN(6)) // heavy ties
			l[i] = float32(rng.IntN(2))
		}
		var sum float64
		var nPos int
		for i := range n {
			if l[i] != 1 {
				continue
			}
			nPos++
			var above, posAbove int
			for j := range n {
				if s[j] >= s[i] {
					above++
					if l[j] == 1 {
						posAbove++
					}
				}
			}
			sum += float64(posAbove) / float64(above)
		}
		want := 0.0
		if nPos > 0 {
			want = sum / float64(nPos)
		}
		got, err := AUPRC(s, l)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-want) > 1e-12 {
			t.Fatalf("trial %d: AUPRC = %v, definition %v", trial, got, want)
		}
	}
}

func TestAUPRCErrors(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		want   error
	}{
		{"length mismatch", []float32{0.1, 0.9}, []float32{1}, ErrShape},
		{"empty", nil, nil, ErrNoRows},
		{"soft label", []float32{0.1, 0.9}, []float32{0, 0.5}, ErrLabel},
		{"NaN score", []float32{0.1, float32(math.NaN())}, []float32{0, 1}, ErrNotFinite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := AUPRC(tt.scores, tt.labels); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBrier(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		want   float64
	}{
		// (0.01 + 0.16 + 0.4225 + 0.04) / 4
		{"textbook", []float32{0.1, 0.4, 0.35, 0.8}, []float32{0, 0, 1, 1}, 0.158125},
		{"perfect", []float32{0, 1, 1}, []float32{0, 1, 1}, 0},
		{"confident and wrong", []float32{1, 0}, []float32{0, 1}, 1},
		{"coin flip", []float32{0.5, 0.5, 0.5}, []float32{1, 0, 1}, 0.25},
		{"length mismatch", []float32{0.5}, []float32{1, 0}, math.NaN()},
		{"empty", nil, nil, math.NaN()},
		{"NaN score", []float32{float32(math.NaN()), 0.5}, []float32{1, 0}, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Brier(tt.scores, tt.labels)
			if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tt.want) > 1e-7) {
				t.Errorf("Brier = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCalibration(t *testing.T) {
	f := func(x float32) float64 { return float64(x) } // sums are of the float32 scores
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		bins   int
		want   []CalibrationBin
	}{
		{"quarters, edges open their bin, 1 in the last",
			[]float32{0, 0.1, 0.25, 0.5, 0.74, 0.75, 1}, []float32{0, 0, 1, 0, 1, 1, 1}, 4,
			[]CalibrationBin{{2, 0, f(0.1)}, {1, 1, 0.25}, {2, 1, 0.5 + f(0.74)}, {2, 2, 1.75}}},
		// float32(0.3) is a little above 0.3, float32(0.7) a little below.
		{"float32 scores near edges", []float32{0.3, 0.7}, []float32{1, 0}, 10,
			[]CalibrationBin{3: {1, 1, f(0.3)}, 6: {1, 0, f(0.7)}, 9: {}}},
		{"one bin", []float32{0.2, 0.9, 1}, []float32{0, 1, 1}, 1, []CalibrationBin{{3, 2, f(0.2) + f(0.9) + 1}}},
		{"no rows", nil, nil, 3, []CalibrationBin{{}, {}, {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Calibration(tt.scores, tt.labels, tt.bins)
			if err != nil {
				t.Fatalf("Calibration: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d bins, want %d", len(got), len(tt.want))
			}
			for i, b := range got {
				w := tt.want[i]
				if b.Count != w.Count || b.Positives != w.Positives || math.Abs(b.SumScores-w.SumScores) > 1e-12 {
					t.Errorf("bin %d = %+v, want %+v", i, b, w)
				}
				if b.SumScores > float64(b.Count) {
					t.Errorf("bin %d: sum of scores %v above its count %d", i, b.SumScores, b.Count)
				}
			}
		})
	}
}

func TestCalibrationErrors(t *testing.T) {
	tests := []struct {
		name   string
		scores []float32
		labels []float32
		bins   int
		want   error
	}{
		{"no bins", []float32{0.5}, []float32{1}, 0, ErrShape},
		{"length mismatch", []float32{0.5}, []float32{1, 0}, 2, ErrShape},
		{"score above 1", []float32{0.5, 1.5}, []float32{1, 0}, 2, ErrScore},
		{"negative score", []float32{-0.1}, []float32{0}, 2, ErrScore},
		{"NaN score", []float32{float32(math.NaN())}, []float32{0}, 2, ErrScore},
		{"soft label", []float32{0.5}, []float32{0.5}, 2, ErrLabel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Calibration(tt.scores, tt.labels, tt.bins); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}
