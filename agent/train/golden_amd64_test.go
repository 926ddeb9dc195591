//go:build amd64 && !amd64.v3

package train

import (
	"context"
	"math"
	"testing"
)

// TestLogRegGolden pins LogReg's results to the bits the original
// implementation (gorgonia's VanillaSolver, before Adam, PosWeight and
// ProxMu existed) produced on amd64, so that the options' zero values are
// shown to change nothing: not even the last bit. (Other architectures, and
// amd64.v3 where the compiler may fuse multiply-adds, may round
// differently; the hand-computed gradient tests cover them.)
func TestLogRegGolden(t *testing.T) {
	X, y := synth(11, 157, []float64{1.2, -0.7, 0.4, 0, -1.5}, 0.2)
	tests := []struct {
		opts Options
		w    []uint32
		loss uint64
	}{
		{Options{Epochs: 3, LearningRate: 0.3, BatchSize: 16, Seed: 5, L2: 0.01},
			[]uint32{0x3f3c28ff, 0xbf3718e8, 0x3e4b57b7, 0xbd517ae3, 0xbf1fda08, 0x3e4de9ef}, 0x3fdf893d4018ff5d},
		{Options{Epochs: 4, LearningRate: 0.7, BatchSize: 0, Seed: 9},
			[]uint32{0x3eedb8f9, 0xbf02ab3b, 0x3e818264, 0xbd3265ee, 0xbea683da, 0x3dd98fda}, 0x3fe0fda395b5087b},
	}
	for _, tt := range tests {
		// Explicit zero values and their spelled-out equivalents.
		for _, o := range []Options{tt.opts, withOpts(tt.opts, func(o *Options) {
			o.Optimizer, o.PosWeight, o.ProxMu = OptimizerSGD, 1, 0
			o.AdamBeta1, o.AdamBeta2, o.AdamEps = 0.5, 0.5, 0.5 // ignored by SGD
		})} {
			m := newModel(t, 5)
			if err := m.SetWeights([]float32{0.1, -0.2, 0.3, -0.05, 0.02, 0.01}); err != nil {
				t.Fatal(err)
			}
			loss, err := m.Train(context.Background(), X, y, 157, o)
			if err != nil {
				t.Fatal(err)
			}
			got := m.Weights()
			for i, w := range got {
				if math.Float32bits(w) != tt.w[i] {
					t.Errorf("%+v: weight %d = %#08x (%v), want %#08x (%v)", o, i,
						math.Float32bits(w), w, tt.w[i], math.Float32frombits(tt.w[i]))
				}
			}
			if math.Float64bits(loss) != tt.loss {
				t.Errorf("%+v: loss %v, want %v", o, loss, math.Float64frombits(tt.loss))
			}
		}
	}
}
