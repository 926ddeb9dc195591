package train

import (
	"context"
	"math"
	"testing"
)

// TestFedAvgOneStepEqualsCentralizedGD is the aggregation issue's
// property: with one local step of full-batch gradient descent, FedAvg
// (the sample-weighted mean of the sites' updates) equals one step of
// gradient descent on the pooled data. The objective is a mean over rows,
// so the pooled gradient is the row-count-weighted mean of the shards'
// gradients; the penalties' gradients are the same on every shard (and the
// proximal one is zero at the start). With Adam, several steps or
// mini-batches the property does not hold and is not tested.
func TestFedAvgOneStepEqualsCentralizedGD(t *testing.T) {
	X, y := synth(61, 300, []float64{1, -0.5, 0.8, -1.2}, 0.1)
	const d = 4
	shards := []int{47, 121, 132} // sizes; the shards are consecutive rows

	models := map[string]func() Trainer{
		"logreg": func() Trainer { return newModel(t, d) },
		"mlp":    func() Trainer { return newMLP(t, d, MLPConfig{Hidden: []int{5, 3}, Activation: ActivationTanh}) },
	}
	for name, newTrainer := range models {
		for _, tc := range []struct {
			name string
			opts Options
		}{
			{"plain", Options{Epochs: 1, LearningRate: 0.5, BatchSize: 0}},
			{"all terms", Options{Epochs: 1, LearningRate: 0.5, BatchSize: 0, L2: 0.05, PosWeight: 2.5, ProxMu: 0.3}},
		} {
			opts := tc.opts
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				start := newTrainer()
				if name == "logreg" {
					if err := start.SetWeights([]float32{0.3, -0.2, 0.1, 0.05, -0.1}); err != nil {
						t.Fatal(err)
					}
				}
				w0 := start.Weights()

				avg := make([]float64, len(w0))
				lo := 0
				for _, n := range shards {
					m := newTrainer()
					if err := m.SetWeights(w0); err != nil {
						t.Fatal(err)
					}
					if _, err := m.Train(context.Background(), X[lo*d:(lo+n)*d], y[lo:lo+n], n, opts); err != nil {
						t.Fatal(err)
					}
					for j, w := range m.Weights() {
						avg[j] += float64(n) / 300 * (float64(w) - float64(w0[j]))
					}
					lo += n
				}

				pooled := newTrainer()
				if err := pooled.SetWeights(w0); err != nil {
					t.Fatal(err)
				}
				if _, err := pooled.Train(context.Background(), X, y, 300, opts); err != nil {
					t.Fatal(err)
				}
				var worst float64
				for j, w := range pooled.Weights() {
					delta := float64(w) - float64(w0[j])
					// The weights (|w| < 2 here) are stored as float32, whose
					// spacing near 2 is 2.4e-7: allow a couple of those.
					worst = max(worst, math.Abs(avg[j]-delta))
					if math.Abs(avg[j]-delta) > 5e-7 {
						t.Errorf("parameter %d: FedAvg delta %.9f, centralized delta %.9f", j, avg[j], delta)
					}
				}
				t.Logf("largest difference %.2g over %d parameters", worst, len(w0))
			})
		}
	}
}
