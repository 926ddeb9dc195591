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
