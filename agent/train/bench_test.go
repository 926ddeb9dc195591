package train

import (
	"context"
	"testing"
)

// BenchmarkLogRegTrain is one epoch over 1,000 rows × 10 features, with
// the default mini-batches of 32 and full-batch.
func BenchmarkLogRegTrain(b *testing.B) {
	const rows, d = 1000, 10
	X, y := synth(1, rows, []float64{1, -1, 0.5, 0, 2, -0.5, 0.25, 0, -1, 0.7}, -0.2)
	for _, bc := range []struct {
		name  string
		batch int
	}{{"batch=32", 32}, {"full", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			m := newModel(b, d)
			opts := DefaultOptions()
			opts.Epochs = 1
			opts.BatchSize = bc.batch
			b.ReportAllocs()
			for b.Loop() {
				if err := m.SetWeights(make([]float32, d+1)); err != nil {
					b.Fatal(err)
				}
				if _, err := m.Train(context.Background(), X, y, rows, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
