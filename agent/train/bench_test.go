package train

import (
	"context"
	"testing"
)

// benchTrain times one epoch over rows rows per iteration, from the same
// starting weights each time, and reports training throughput in rows/s.
func benchTrain(b *testing.B, m Trainer, X, y []float32, rows int, opts Options) {
	w0 := m.Weights()
	b.ReportAllocs()
	for b.Loop() {
		if err := m.SetWeights(w0); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Train(context.Background(), X, y, rows, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(opts.Epochs)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

var benchCases = []struct {
	name string
	opts Options
}{
	{"batch=32", Options{Epochs: 1, LearningRate: 0.1, BatchSize: 32, Seed: 1}},
	{"full", Options{Epochs: 1, LearningRate: 0.1, BatchSize: 0, Seed: 1}},
	{"batch=32/adam", Options{Epochs: 1, LearningRate: 0.01, BatchSize: 32, Seed: 1, Optimizer: OptimizerAdam}},
	{"batch=32/posweight+prox", Options{Epochs: 1, LearningRate: 0.1, BatchSize: 32, Seed: 1, PosWeight: 3, ProxMu: 0.01}},
}

// BenchmarkLogRegTrain is one epoch over 1,000 rows × 10 features.
func BenchmarkLogRegTrain(b *testing.B) {
	const rows, d = 1000, 10
	X, y := synth(1, rows, []float64{1, -1, 0.5, 0, 2, -0.5, 0.25, 0, -1, 0.7}, -0.2)
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			benchTrain(b, newModel(b, d), X, y, rows, bc.opts)
		})
	}
}

// BenchmarkMLPTrain is one epoch over the same 1,000 rows × 10 features
// with an MLP of hidden widths 32 and 16 (ReLU; 897 parameters), without
// and with dropout.
func BenchmarkMLPTrain(b *testing.B) {
	const rows, d = 1000, 10
	X, y := synth(1, rows, []float64{1, -1, 0.5, 0, 2, -0.5, 0.25, 0, -1, 0.7}, -0.2)
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			benchTrain(b, newMLP(b, d, MLPConfig{Hidden: []int{32, 16}}), X, y, rows, bc.opts)
		})
	}
	b.Run("batch=32/dropout=0.2", func(b *testing.B) {
		benchTrain(b, newMLP(b, d, MLPConfig{Hidden: []int{32, 16}, Dropout: 0.2}), X, y, rows, benchCases[0].opts)
	})
}

// BenchmarkMLPPredict is the plain-Go forward pass over 1,000 rows.
func BenchmarkMLPPredict(b *testing.B) {
	const rows, d = 1000, 10
	X, _ := synth(1, rows, []float64{1, -1, 0.5, 0, 2, -0.5, 0.25, 0, -1, 0.7}, -0.2)
	m := newMLP(b, d, MLPConfig{Hidden: []int{32, 16}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Predict(X, rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
