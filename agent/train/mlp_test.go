package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
)

func newMLP(t testing.TB, d int, cfg MLPConfig) *MLP {
	t.Helper()
	m, err := NewMLP(d, cfg)
	if err != nil {
		t.Fatalf("NewMLP(%d, %+v): %v", d, cfg, err)
	}
	return m
}

func TestMLPNumParams(t *testing.T) {
	tests := []struct {
		d      int
		hidden []int
		want   int
	}{
		{3, []int{2}, 3*2 + 2 + 2*1 + 1},
		{1, []int{1}, 1 + 1 + 1 + 1},
		{10, []int{16, 8}, 10*16 + 16 + 16*8 + 8 + 8 + 1},
		{36, []int{64, 32, 16}, 36*64 + 64 + 64*32 + 32 + 32*16 + 16 + 16 + 1},
		{5, []int{1, 1, 1, 1, 1, 1, 1, 1}, 5 + 1 + 7*2 + 2},
	}
	for _, tt := range tests {
		m := newMLP(t, tt.d, MLPConfig{Hidden: tt.hidden})
		if got := m.NumParams(); got != tt.want {
			t.Errorf("NumParams(%d, %v) = %d, want %d", tt.d, tt.hidden, got, tt.want)
		}
		if got := len(m.Weights()); got != tt.want {
			t.Errorf("len(Weights()) = %d, want %d", got, tt.want)
		}
		if n, err := mlpspec.NumParams(tt.d, tt.hidden); n != tt.want || err != nil {
			t.Errorf("mlpspec.NumParams = %d, %v; want %d", n, err, tt.want)
		}
	}
}

// TestMLPLayoutAndPredict sets known weights through the documented flat
// layout and checks Predict against a forward pass written out by hand.
func TestMLPLayoutAndPredict(t *testing.T) {
	// 2 features → 3 hidden → 2 hidden → 1 output.
	// Layer 0: W0 is 2×3 row-major, then b0 (3).
	// Layer 1: W1 is 3×2 row-major, then b1 (2).
	// Layer 2: W2 is 2×1, then b2 (1).
	w := []float32{
		0.5, -1, 0.25, // W0[0][*]: from feature 0 to hidden units 0, 1, 2
		2, 0.75, -0.5, // W0[1][*]: from feature 1
		0.1, 0.2, -0.3, // b0
		1, -2, // W1[0][*]: from hidden-1 unit 0 to hidden-2 units 0, 1
		0.5, 0.5, // W1[1][*]
		-1, 3, // W1[2][*]
		0.05, -0.1, // b1
		1.5, -0.8, // W2
		0.2, // b2
	}
	X := []float32{1, 2, -0.5, 0.3, 0, 0, -2, -1}
	relu := func(v float64) float64 { return max(v, 0) }
	for _, act := range []struct {
		name string
		f    func(float64) float64
	}{
		{ActivationReLU, relu},
		{ActivationTanh, math.Tanh},
		{ActivationSigmoid, func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }},
	} {
		t.Run(act.name, func(t *testing.T) {
			// Dropout is set: Predict must ignore it.
			m := newMLP(t, 2, MLPConfig{Hidden: []int{3, 2}, Activation: act.name, Dropout: 0.5})
			if m.NumParams() != len(w) {
				t.Fatalf("NumParams %d, want %d", m.NumParams(), len(w))
			}
			if err := m.SetWeights(w); err != nil {
				t.Fatal(err)
			}
			p, err := m.Predict(X, 4)
			if err != nil {
				t.Fatal(err)
			}
			f := act.f
			for r := range 4 {
				x0, x1 := float64(X[2*r]), float64(X[2*r+1])
				h0 := f(0.5*x0 + 2*x1 + 0.1)
				h1 := f(-1*x0 + 0.75*x1 + 0.2)
				h2 := f(0.25*x0 - 0.5*x1 - 0.3)
				g0 := f(1*h0 + 0.5*h1 - 1*h2 + 0.05)
				g1 := f(-2*h0 + 0.5*h1 + 3*h2 - 0.1)
				z := 1.5*g0 - 0.8*g1 + 0.2
				want := 1 / (1 + math.Exp(-z))
				if math.Abs(float64(p[r])-want) > 1e-6 {
					t.Errorf("row %d: Predict %v, hand forward pass %v", r, p[r], want)
				}
			}
			// Predict is deterministic (no dropout).
			if p2, _ := m.Predict(X, 4); !equalBits(p, p2) {
				t.Errorf("Predict changed between calls: %v, %v", p, p2)
			}
		})
	}
}

// checkGradient compares a graph's objective and gradient with the plain-Go
// objective and its central finite differences.
func checkGradient(t *testing.T, layers []mlpspec.Layer, act string, g batchGraph, masks func() [][]float64,
	X, y []float32, rows int, opts Options, params, start []float64, obj *objective) {
	t.Helper()
	idx := make([]int, rows)
	for i := range idx {
		idx[i] = i
	}
	g.load(X, y, idx, obj)
	ms := masks()
	grad := make([]float64, len(params))
	cost, err := g.run(params, grad, obj)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	f := func(p []float64) float64 { return refObjective(layers, act, p, X, y, rows, opts, start, ms) }
	if want := f(params); math.Abs(cost-want) > 1e-12*max(1, math.Abs(want)) {
		t.Errorf("graph objective %.15g, plain Go %.15g", cost, want)
	}
	p := slices.Clone(params)
	var worst float64
	for i := range p {
		const h = 1e-6
		p[i] = params[i] + h
		up := f(p)
		p[i] = params[i] - h
		down := f(p)
		p[i] = params[i]
		fd := (up - down) / (2 * h)
		e := math.Abs(grad[i]-fd) / max(1e-3, math.Abs(fd))
		worst = max(worst, e)
		if e > 1e-5 {
			t.Errorf("∂/∂θ[%d]: graph %.10g, finite difference %.10g", i, grad[i], fd)
		}
	}
	t.Logf("objective %.6f, worst relative gradient error %.2g over %d parameters", cost, worst, len(p))
}

// TestMLPGradientMatchesFiniteDifferences checks the gorgonia graph's
// forward and backward passes on a tiny MLP against the plain-Go objective,
// for every activation and with each optional term.
func TestMLPGradientMatchesFiniteDifferences(t *testing.T) {
	const rows = 6
	X, _ := synth(3, rows, []float64{1, -1, 0.5}, 0)
	y := []float32{1, 0, 1, 0.3, 0, 1}
	hidden := []int{4, 3}
	layers, err := mlpspec.Layers(3, hidden)
	if err != nil {
		t.Fatal(err)
	}
	opts := []struct {
		name    string
		opts    Options
		dropout float64
	}{
		{"plain", Options{}, 0},
		{"L2", Options{L2: 0.3}, 0},
		{"pos weight", Options{PosWeight: 4}, 0},
		{"prox", Options{ProxMu: 2}, 0},
		{"dropout", Options{Seed: 5}, 0.4},
		{"all", Options{L2: 0.1, PosWeight: 0.25, ProxMu: 0.7, Seed: 9}, 0.3},
	}
	for _, act := range []string{ActivationReLU, ActivationTanh, ActivationSigmoid} {
		for _, tc := range opts {
			t.Run(act+"/"+tc.name, func(t *testing.T) {
				w0, err := MLPInitialWeights(3, MLPConfig{Hidden: hidden, Activation: act}, 11)
				if err != nil {
					t.Fatal(err)
				}
				params := toFloat64(w0)
				for i := range params { // non-zero biases, and away from the start
					params[i] += 0.05 * float64(i%7-3)
				}
				start := toFloat64(w0)
				obj := newObjective(tc.opts, start, tc.dropout)
				g, err := newMLPGraph(layers, act, tc.dropout, mlpKey{rows: rows, weighted: obj.weighted(), prox: obj.prox()})
				if err != nil {
					t.Fatal(err)
				}
				masks := func() [][]float64 {
					if g.masks == nil {
						return nil
					}
					var ms [][]float64
					for _, m := range g.masks {
						ms = append(ms, slices.Clone(m))
					}
					return ms
				}
				checkGradient(t, layers, act, g, masks, X, y, rows, tc.opts, params, start, obj)
				if tc.dropout > 0 && !slices.ContainsFunc(g.masks[0], func(v float64) bool { return v == 0 }) {
					t.Error("no unit was dropped")
				}
			})
		}
	}
}

// TestLogRegGradientMatchesFiniteDifferences does the same for LogReg's
// graph with the new terms.
func TestLogRegGradientMatchesFiniteDifferences(t *testing.T) {
	const rows, d = 7, 3
	X, y := synth(4, rows, []float64{1, -1, 0.5}, 0.2)
	y[2] = 0.6
	layers := logRegLayers(d)
	for _, o := range []Options{{}, {L2: 0.2}, {PosWeight: 3}, {ProxMu: 1.5}, {L2: 0.05, PosWeight: 0.5, ProxMu: 4}} {
		t.Run(fmt.Sprintf("L2=%v,PosWeight=%v,ProxMu=%v", o.L2, o.PosWeight, o.ProxMu), func(t *testing.T) {
			params := []float64{0.4, -0.3, 0.2, 0.1}
			start := []float64{0.1, 0.1, -0.2, 0}
			obj := newObjective(o, start, 0)
			g, err := newLRGraph(d, lrKey{rows: rows, weighted: obj.weighted(), prox: obj.prox()})
			if err != nil {
				t.Fatal(err)
			}
			checkGradient(t, layers, "", g, func() [][]float64 { return nil }, X, y, rows, o, params, start, obj)
		})
	}
}

func TestMLPLearnsXORLogRegCannot(t *testing.T) {
	const d = 4 // two informative features and two of noise
	const rows = 500
	Xtr, ytr := xorData(1, rows, 2)
	Xte, yte := xorData(2, 1000, 2)
	opts := Options{Epochs: 120, LearningRate: 0.05, BatchSize: 0, Seed: 1, Optimizer: OptimizerAdam}

	auc := func(t *testing.T, m Trainer) float64 {
		t.Helper()
		if _, err := m.Train(context.Background(), Xtr, ytr, rows, opts); err != nil {
			t.Fatalf("Train: %v", err)
		}
		p, err := m.Predict(Xte, 1000)
		if err != nil {
			t.Fatal(err)
		}
		a, err := AUROC(p, yte)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	lr := auc(t, newModel(t, d))
	if math.Abs(lr-0.5) > 0.06 {
		t.Errorf("logistic regression AUROC %.3f on XOR, want about 0.5", lr)
	}
	for _, act := range []string{ActivationReLU, ActivationTanh} {
		m := newMLP(t, d, MLPConfig{Hidden: []int{16, 8}, Activation: act})
		if a := auc(t, m); a < 0.95 {
			t.Errorf("MLP (%s) AUROC %.3f on XOR, want at least 0.95", act, a)
		} else {
			t.Logf("XOR test AUROC: MLP (%s) %.3f, logistic regression %.3f", act, a, lr)
		}
	}
	t.Run("mini-batch SGD with dropout", func(t *testing.T) {
		if testing.Short() {
			t.Skip("short mode")
		}
		m := newMLP(t, d, MLPConfig{Hidden: []int{32}, Dropout: 0.1})
		o := Options{Epochs: 50, LearningRate: 0.3, BatchSize: 32, Seed: 3}
		if _, err := m.Train(context.Background(), Xtr, ytr, rows, o); err != nil {
			t.Fatal(err)
		}
		p, _ := m.Predict(Xte, 1000)
		if a, _ := AUROC(p, yte); a < 0.9 {
			t.Errorf("AUROC %.3f, want at least 0.9", a)
		}
	})
}

func TestMLPDeterministic(t *testing.T) {
	X, y := xorData(5, 203, 1)
	run := func(seed uint64, dropout float64) ([]float32, float64) {
		m := newMLP(t, 3, MLPConfig{Hidden: []int{6, 4}, Activation: ActivationTanh, Dropout: dropout})
		loss, err := m.Train(context.Background(), X, y, 203, Options{Epochs: 3, LearningRate: 0.2, BatchSize: 20, Seed: seed})
		if err != nil {
			t.Fatalf("Train: %v", err)
		}
		return m.Weights(), loss
	}
	w1, l1 := run(7, 0.3)
	w2, l2 := run(7, 0.3)
	if !equalBits(w1, w2) || math.Float64bits(l1) != math.Float64bits(l2) {
		t.Fatal("the same seed gave different results with dropout")
	}
	if w3, _ := run(8, 0.3); equalBits(w1, w3) {
		t.Error("seeds 7 and 8 gave identical weights")
	}
	if w4, _ := run(7, 0); equalBits(w1, w4) {
		t.Error("dropout 0.3 and 0 gave identical weights")
	}

	t.Run("cached graphs give the same result", func(t *testing.T) {
		m := newMLP(t, 3, MLPConfig{Hidden: []int{6, 4}, Activation: ActivationTanh, Dropout: 0.3})
		w0 := m.Weights()
		for i := range 3 {
			if err := m.SetWeights(w0); err != nil {
				t.Fatal(err)
			}
			// A call with other terms in between uses another graph.
			if _, err := m.Train(context.Background(), X, y, 203, Options{Epochs: 1, LearningRate: 0.1, ProxMu: 1, PosWeight: 2}); err != nil {
				t.Fatal(err)
			}
			if err := m.SetWeights(w0); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Train(context.Background(), X, y, 203, Options{Epochs: 3, LearningRate: 0.2, BatchSize: 20, Seed: 7}); err != nil {
				t.Fatalf("Train %d: %v", i, err)
			}
			if got := m.Weights(); !equalBits(got, w1) {
				t.Fatalf("call %d on a reused model differs from a fresh model", i)
			}
		}
	})
}

func TestFillMasks(t *testing.T) {
	obj := newObjective(Options{Seed: 3}, nil, 0.25)
	masks := [][]float64{make([]float64, 4000), make([]float64, 6000)}
	fillMasks(masks, obj)
	var zeros int
	for _, m := range masks {
		for _, v := range m {
			switch v {
			case 0:
				zeros++
			case 1 / 0.75:
			default:
				t.Fatalf("mask value %v, want 0 or 1/(1−0.25)", v)
			}
		}
	}
	if f := float64(zeros) / 10000; math.Abs(f-0.25) > 0.02 {
		t.Errorf("dropped fraction %.3f, want about 0.25", f)
	}
}

func TestNewMLPValidation(t *testing.T) {
	tests := []struct {
		name string
		d    int
		cfg  MLPConfig
		want error
		msg  string
	}{
		{"no features", 0, MLPConfig{Hidden: []int{4}}, ErrShape, "0 features"},
		{"too many features", maxFeatures + 1, MLPConfig{Hidden: []int{4}}, ErrShape, "features"},
		{"no hidden layer", 3, MLPConfig{}, ErrConfig, "0 hidden layers, want 1..8"},
		{"nine hidden layers", 3, MLPConfig{Hidden: []int{2, 2, 2, 2, 2, 2, 2, 2, 2}}, ErrConfig, "9 hidden layers"},
		{"zero width", 3, MLPConfig{Hidden: []int{4, 0}}, ErrConfig, "hidden layer 1 has width 0"},
		{"negative width", 3, MLPConfig{Hidden: []int{-4}}, ErrConfig, "width -4"},
		{"too wide", 3, MLPConfig{Hidden: []int{mlpspec.MaxWidth + 1}}, ErrConfig, "want 1..65536"},
		{"unknown activation", 3, MLPConfig{Hidden: []int{4}, Activation: "gelu"}, ErrConfig, `activation "gelu"`},
		{"dropout 1", 3, MLPConfig{Hidden: []int{4}, Dropout: 1}, ErrConfig, "dropout 1"},
		{"negative dropout", 3, MLPConfig{Hidden: []int{4}, Dropout: -0.1}, ErrConfig, "dropout"},
		{"NaN dropout", 3, MLPConfig{Hidden: []int{4}, Dropout: math.NaN()}, ErrConfig, "dropout NaN"},
		{"too many parameters", 1 << 20, MLPConfig{Hidden: []int{1 << 10}}, ErrConfig, "parameters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMLP(tt.d, tt.cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.msg)
			}
		})
	}

	t.Run("copies the config", func(t *testing.T) {
		hidden := []int{4, 3}
		m := newMLP(t, 2, MLPConfig{Hidden: hidden})
		hidden[0] = 100
		if c := m.Config(); c.Hidden[0] != 4 || c.Activation != ActivationReLU {
			t.Errorf("Config() = %+v, want hidden [4 3] and relu", c)
		}
		m.Config().Hidden[1] = 100
		if m.Config().Hidden[1] != 3 {
			t.Error("Config aliases the model's hidden widths")
		}
	})
	t.Run("starts from seed 0", func(t *testing.T) {
		cfg := MLPConfig{Hidden: []int{5}, Activation: ActivationTanh}
		m := newMLP(t, 3, cfg)
		w0, _ := MLPInitialWeights(3, cfg, 0)
		if !equalBits(m.Weights(), w0) {
			t.Error("a new MLP does not start from MLPInitialWeights(…, 0)")
		}
		m.InitWeights(42)
		w42, _ := MLPInitialWeights(3, cfg, 42)
		if !equalBits(m.Weights(), w42) || equalBits(w0, w42) {
			t.Error("InitWeights(42) does not give MLPInitialWeights(…, 42)")
		}
	})
}

func TestMLPBadInput(t *testing.T) {
	good := Options{Epochs: 1, LearningRate: 0.1}
	X := []float32{1, 2, 3, 4, 5, 6} // 3 rows × 2 features
	y := []float32{0, 1, 0}
	nan := float32(math.NaN())
	tests := []struct {
		name string
		ctx  context.Context
		X, y []float32
		rows int
		opts Options
		want error
	}{
		{"zero rows", context.Background(), nil, nil, 0, good, ErrNoRows},
		{"X too short", context.Background(), X[:5], y, 3, good, ErrShape},
		{"y too short", context.Background(), X, y[:2], 3, good, ErrShape},
		{"NaN feature", context.Background(), []float32{1, 2, nan, 4, 5, 6}, y, 3, good, ErrNotFinite},
		{"label 2", context.Background(), X, []float32{0, 2, 1}, 3, good, ErrLabel},
		{"bad options", context.Background(), X, y, 3, Options{Epochs: 1, LearningRate: 0.1, Optimizer: "rmsprop"}, ErrOptions},
		{"nil context", nil, X, y, 3, good, ErrOptions},
		{"diverges", context.Background(), []float32{1e3, 1e3, -1e3, -1e3, 1e3, -1e3}, y, 3,
			Options{Epochs: 3, LearningRate: 1e38}, ErrNotFinite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMLP(t, 2, MLPConfig{Hidden: []int{3}})
			w0 := m.Weights()
			_, err := m.Train(tt.ctx, tt.X, tt.y, tt.rows, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Train err = %v, want %v", err, tt.want)
			}
			if got := m.Weights(); !equalBits(got, w0) {
				t.Errorf("weights changed after a failed Train")
			}
		})
	}
	t.Run("SetWeights", func(t *testing.T) {
		m := newMLP(t, 2, MLPConfig{Hidden: []int{3}})
		w0 := m.Weights()
		for _, w := range [][]float32{nil, make([]float32, 12), make([]float32, 14)} {
			if err := m.SetWeights(w); !errors.Is(err, ErrShape) {
				t.Errorf("SetWeights(len %d) err = %v, want ErrShape", len(w), err)
			}
		}
		bad := make([]float32, 13)
		bad[7] = nan
		if err := m.SetWeights(bad); !errors.Is(err, ErrNotFinite) {
			t.Errorf("SetWeights(NaN) err = %v, want ErrNotFinite", err)
		}
		if !equalBits(m.Weights(), w0) {
			t.Error("weights changed after rejected SetWeights")
		}
		m.Weights()[0] = 100
		if m.Weights()[0] == 100 {
			t.Error("Weights aliases the model's weights")
		}
	})
	t.Run("Predict", func(t *testing.T) {
		m := newMLP(t, 2, MLPConfig{Hidden: []int{3}})
		if _, err := m.Predict(X, 0); !errors.Is(err, ErrNoRows) {
			t.Errorf("err = %v, want ErrNoRows", err)
		}
		if _, err := m.Predict(X, 2); !errors.Is(err, ErrShape) {
			t.Errorf("err = %v, want ErrShape", err)
		}
	})
	t.Run("cancelled between batches", func(t *testing.T) {
		Xc, yc := xorData(9, 200, 0)
		ctx := &cancelAfter{Context: context.Background(), n: 13}
		m := newMLP(t, 2, MLPConfig{Hidden: []int{3}, Dropout: 0.2})
		w0 := m.Weights()
		if _, err := m.Train(ctx, Xc, yc, 200, Options{Epochs: 5, LearningRate: 0.1, BatchSize: 10}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if got := ctx.calls.Load(); got != 14 {
			t.Errorf("ctx checked %d times, want 14", got)
		}
		if !equalBits(m.Weights(), w0) {
			t.Error("weights changed after a cancelled Train")
		}
	})
}

// TestMLPOddShapes covers width-1 layers and one-row batches.
func TestMLPOddShapes(t *testing.T) {
	X, y := xorData(4, 7, 0)
	for _, hidden := range [][]int{{1}, {1, 1}, {3, 1, 2}} {
		m := newMLP(t, 2, MLPConfig{Hidden: hidden, Dropout: 0.5})
		w0 := m.Weights()
		// 7 rows in batches of 3: the last batch has one row.
		if _, err := m.Train(context.Background(), X, y, 7, Options{Epochs: 2, LearningRate: 0.1, BatchSize: 3, ProxMu: 0.1, PosWeight: 2}); err != nil {
			t.Fatalf("hidden %v: %v", hidden, err)
		}
		if equalBits(m.Weights(), w0) {
			t.Errorf("hidden %v: weights did not move", hidden)
		}
		if _, err := m.Train(context.Background(), X[:2], y[:1], 1, Options{Epochs: 1, LearningRate: 0.1}); err != nil {
			t.Fatalf("hidden %v, one row: %v", hidden, err)
		}
	}
}

func TestMLPConcurrentUse(t *testing.T) {
	X, y := xorData(6, 64, 0)
	m := newMLP(t, 2, MLPConfig{Hidden: []int{4}})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 3 {
				switch i {
				case 0:
					if _, err := m.Train(context.Background(), X, y, 64, Options{Epochs: 1, LearningRate: 0.1, BatchSize: 16}); err != nil {
						t.Error(err)
					}
				case 1:
					if _, err := m.Predict(X, 64); err != nil {
						t.Error(err)
					}
				case 2:
					if err := m.SetWeights(m.Weights()); err != nil {
						t.Error(err)
					}
				case 3:
					m.InitWeights(uint64(i))
				}
			}
		})
	}
	wg.Wait()
}

// Separate models may be trained at once, as the agents of one process
// do: building their graphs touches a global of gorgonia's (buildMu).
func TestMLPsTrainConcurrently(t *testing.T) {
	X, y := xorData(6, 64, 0)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for batch := range 3 {
				m, err := NewMLP(2, MLPConfig{Hidden: []int{4, 3}})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := m.Train(context.Background(), X, y, 64, Options{Epochs: 1, LearningRate: 0.1, BatchSize: 8 << batch}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}
