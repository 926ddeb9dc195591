package train

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// synth draws rows of standard-normal features and Bernoulli labels from a
// true logistic model with coefficients w and bias b.
func synth(seed uint64, rows int, w []float64, b float64) (X, y []float32) {
	rng := rand.New(rand.NewPCG(seed, 99))
	d := len(w)
	X = make([]float32, rows*d)
	y = make([]float32, rows)
	for i := range rows {
		z := b
		for j := range d {
			x := float32(rng.NormFloat64())
			X[i*d+j] = x
			z += w[j] * float64(x)
		}
		if rng.Float64() < sigmoid(z) {
			y[i] = 1
		}
	}
	return X, y
}

func newModel(t testing.TB, d int) *LogReg {
	t.Helper()
	m, err := NewLogReg(d)
	if err != nil {
		t.Fatalf("NewLogReg(%d): %v", d, err)
	}
	return m
}

func TestLogRegLearnsSyntheticProblem(t *testing.T) {
	trueW := []float64{1.5, -2, 0.5, 0, 1, -0.75, 0.25, 0, -1.25, 0.8}
	const trueB = -0.4
	d := len(trueW)
	Xtr, ytr := synth(1, 2000, trueW, trueB)
	Xte, yte := synth(2, 2000, trueW, trueB)

	tests := []struct {
		name string
		opts Options
	}{
		{"mini-batch", Options{Epochs: 10, LearningRate: 0.2, BatchSize: 32, Seed: 7}},
		{"full batch", Options{Epochs: 300, LearningRate: 1, BatchSize: 0, Seed: 7}},
		{"mini-batch with L2", Options{Epochs: 10, LearningRate: 0.2, BatchSize: 50, Seed: 3, L2: 1e-3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, d)
			loss, err := m.Train(context.Background(), Xtr, ytr, 2000, tt.opts)
			if err != nil {
				t.Fatalf("Train: %v", err)
			}
			if !(loss < math.Ln2-0.1) {
				t.Errorf("training loss %v, want well below ln 2 = %v", loss, math.Ln2)
			}
			p, err := m.Predict(Xte, 2000)
			if err != nil {
				t.Fatalf("Predict: %v", err)
			}
			got, err := AUROC(p, yte)
			if err != nil {
				t.Fatal(err)
			}

			// The AUROC of the true model on the same test set.
			truth := make([]float32, 2000)
			for i := range truth {
				z := trueB
				for j := range d {
					z += trueW[j] * float64(Xte[i*d+j])
				}
				truth[i] = float32(sigmoid(z))
			}
			want, err := AUROC(truth, yte)
			if err != nil {
				t.Fatal(err)
			}
			if got < want-0.01 {
				t.Errorf("learned AUROC %.4f, true model %.4f", got, want)
			}
			if ll, llTrue := LogLoss(p, yte), LogLoss(truth, yte); ll > llTrue+0.02 {
				t.Errorf("learned test log loss %.4f, true model %.4f", ll, llTrue)
			}
			w := m.Weights()
			for j, tw := range trueW {
				if math.Abs(float64(w[j])-tw) > 0.35 {
					t.Errorf("coefficient %d = %.3f, true %.3f", j, w[j], tw)
				}
			}
			t.Logf("AUROC learned %.4f true %.4f; loss %.4f; weights %v", got, want, loss, w)
		})
	}
}

// handStep is one full-batch gradient-descent step in plain Go, float64:
// the reference the gorgonia path must match.
func handStep(w []float32, X, y []float32, rows int, lr, l2 float64) (next []float64, loss float64) {
	d := len(w) - 1
	grad := make([]float64, d+1)
	for i := range rows {
		z := float64(w[d])
		for j := range d {
			z += float64(w[j]) * float64(X[i*d+j])
		}
		p := sigmoid(z)
		yi := float64(y[i])
		// -[y ln p + (1-y) ln(1-p)], computed directly.
		loss -= yi*math.Log(p) + (1-yi)*math.Log(1-p)
		r := p - yi
		for j := range d {
			grad[j] += r * float64(X[i*d+j])
		}
		grad[d] += r
	}
	loss /= float64(rows)
	var sq float64
	for j := range grad {
		grad[j] /= float64(rows)
		if j < d {
			grad[j] += l2 * float64(w[j])
			sq += float64(w[j]) * float64(w[j])
		}
	}
	loss += l2 / 2 * sq
	next = make([]float64, d+1)
	for j := range next {
		next[j] = float64(w[j]) - lr*grad[j]
	}
	return next, loss
}

func TestLogRegOneStepMatchesHandGradient(t *testing.T) {
	X := []float32{
		0.5, -1.2, 2.0,
		1.5, 0.3, -0.7,
		-0.2, 0.8, 0.1,
		2.2, -0.4, 1.1,
		-1.0, -1.0, 0.5,
		0.0, 1.7, -2.3,
		0.9, 0.2, 0.4,
	}
	y := []float32{1, 0, 1, 1, 0, 0, 0.25} // a soft label too
	const rows = 7
	w0 := []float32{0.3, -0.6, 0.2, 0.1}

	tests := []struct {
		name  string
		lr    float64
		l2    float64
		batch int
	}{
		{"full batch", 0.5, 0, 0},
		{"full batch with L2", 0.5, 0.3, 0},
		{"batch equal to rows", 0.1, 0, rows},
		{"batch larger than rows", 2, 0.01, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, 3)
			if err := m.SetWeights(w0); err != nil {
				t.Fatal(err)
			}
			loss, err := m.Train(context.Background(), X, y, rows,
				Options{Epochs: 1, LearningRate: tt.lr, BatchSize: tt.batch, L2: tt.l2, Seed: 1})
			if err != nil {
				t.Fatalf("Train: %v", err)
			}
			want, wantLoss := handStep(w0, X, y, rows, tt.lr, tt.l2)
			got := m.Weights()
			for j := range want {
				if d := math.Abs(float64(got[j]) - want[j]); d > 1e-5 {
					t.Errorf("weight %d = %.8f, hand-computed %.8f (diff %g)", j, got[j], want[j], d)
				}
			}
			if d := math.Abs(loss - wantLoss); d > 1e-9 {
				t.Errorf("loss = %.12f, hand-computed %.12f", loss, wantLoss)
			}
		})
	}
}

func TestLogRegDeterministic(t *testing.T) {
	X, y := synth(5, 333, []float64{1, -1, 0.5, 2}, 0.3)
	opts := Options{Epochs: 3, LearningRate: 0.3, BatchSize: 25, Seed: 42, L2: 0.01}
	run := func(seed uint64) ([]float32, float64) {
		m := newModel(t, 4)
		o := opts
		o.Seed = seed
		loss, err := m.Train(context.Background(), X, y, 333, o)
		if err != nil {
			t.Fatalf("Train: %v", err)
		}
		return m.Weights(), loss
	}
	w1, l1 := run(42)
	w2, l2 := run(42)
	if !equalBits(w1, w2) || math.Float64bits(l1) != math.Float64bits(l2) {
		t.Fatalf("same seed gave different results: %v (%v) vs %v (%v)", w1, l1, w2, l2)
	}
	if w3, _ := run(43); equalBits(w1, w3) {
		t.Errorf("seeds 42 and 43 gave identical weights %v; the seed should change the batch order", w1)
	}

	t.Run("cached graphs give the same result", func(t *testing.T) {
		m := newModel(t, 4)
		for i := range 3 {
			if err := m.SetWeights(make([]float32, 5)); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Train(context.Background(), X, y, 333, opts); err != nil {
				t.Fatalf("Train %d: %v", i, err)
			}
			if got := m.Weights(); !equalBits(got, w1) {
				t.Fatalf("call %d on a reused model: %v, want %v", i, got, w1)
			}
		}
	})
}

func TestLogRegBadInput(t *testing.T) {
	good := Options{Epochs: 1, LearningRate: 0.1}
	X := []float32{1, 2, 3, 4, 5, 6} // 3 rows × 2 features
	y := []float32{0, 1, 0}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	with := func(v []float32, i int, x float32) []float32 {
		c := append([]float32(nil), v...)
		c[i] = x
		return c
	}
	tests := []struct {
		name string
		ctx  context.Context
		X, y []float32
		rows int
		opts Options
		want error
	}{
		{"zero rows", context.Background(), nil, nil, 0, good, ErrNoRows},
		{"negative rows", context.Background(), X, y, -3, good, ErrNoRows},
		{"X too short", context.Background(), X[:5], y, 3, good, ErrShape},
		{"X too long for rows", context.Background(), X, y[:2], 2, good, ErrShape},
		{"y too short", context.Background(), X, y[:2], 3, good, ErrShape},
		{"NaN feature", context.Background(), with(X, 4, nan), y, 3, good, ErrNotFinite},
		{"Inf feature", context.Background(), with(X, 0, -inf), y, 3, good, ErrNotFinite},
		{"label 2", context.Background(), X, with(y, 1, 2), 3, good, ErrLabel},
		{"negative label", context.Background(), X, with(y, 0, -0.1), 3, good, ErrLabel},
		{"NaN label", context.Background(), X, with(y, 2, nan), 3, good, ErrLabel},
		{"zero epochs", context.Background(), X, y, 3, Options{LearningRate: 0.1}, ErrOptions},
		{"zero learning rate", context.Background(), X, y, 3, Options{Epochs: 1}, ErrOptions},
		{"NaN learning rate", context.Background(), X, y, 3, Options{Epochs: 1, LearningRate: math.NaN()}, ErrOptions},
		{"negative batch", context.Background(), X, y, 3, Options{Epochs: 1, LearningRate: 0.1, BatchSize: -1}, ErrOptions},
		{"negative L2", context.Background(), X, y, 3, Options{Epochs: 1, LearningRate: 0.1, L2: -1}, ErrOptions},
		{"nil context", nil, X, y, 3, good, ErrOptions},
		{"diverges", context.Background(), []float32{1e3, 1e3, -1e3, -1e3, 1e3, -1e3}, y, 3,
			Options{Epochs: 3, LearningRate: 1e38}, ErrNotFinite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, 2)
			w0 := []float32{0.1, 0.2, 0.3}
			if err := m.SetWeights(w0); err != nil {
				t.Fatal(err)
			}
			_, err := m.Train(tt.ctx, tt.X, tt.y, tt.rows, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Train err = %v, want %v", err, tt.want)
			}
			if got := m.Weights(); !equalBits(got, w0) {
				t.Errorf("weights changed to %v after a failed Train", got)
			}
		})
	}

	t.Run("NewLogReg", func(t *testing.T) {
		for _, d := range []int{0, -1, maxFeatures + 1} {
			if _, err := NewLogReg(d); !errors.Is(err, ErrShape) {
				t.Errorf("NewLogReg(%d) err = %v, want ErrShape", d, err)
			}
		}
	})
	t.Run("SetWeights", func(t *testing.T) {
		m := newModel(t, 2)
		for _, w := range [][]float32{nil, {1, 2}, {1, 2, 3, 4}} {
			if err := m.SetWeights(w); !errors.Is(err, ErrShape) {
				t.Errorf("SetWeights(%v) err = %v, want ErrShape", w, err)
			}
		}
		if err := m.SetWeights([]float32{1, nan, 0}); !errors.Is(err, ErrNotFinite) {
			t.Errorf("SetWeights(NaN) err = %v, want ErrNotFinite", err)
		}
		if got := m.Weights(); !equalBits(got, []float32{0, 0, 0}) {
			t.Errorf("weights %v after rejected SetWeights", got)
		}
	})
	t.Run("Predict", func(t *testing.T) {
		m := newModel(t, 2)
		for _, tc := range []struct {
			X    []float32
			rows int
			want error
		}{
			{X, 0, ErrNoRows},
			{X, 2, ErrShape},
			{with(X, 3, inf), 3, ErrNotFinite},
		} {
			if _, err := m.Predict(tc.X, tc.rows); !errors.Is(err, tc.want) {
				t.Errorf("Predict(rows=%d) err = %v, want %v", tc.rows, err, tc.want)
			}
		}
	})
}

// cancelAfter is a context whose Err turns to context.Canceled after n
// calls, so cancellation lands deterministically between batches.
type cancelAfter struct {
	context.Context
	n     int64
	calls atomic.Int64
}

func (c *cancelAfter) Err() error {
	if c.calls.Add(1) > c.n {
		return context.Canceled
	}
	return nil
}

func TestLogRegCancel(t *testing.T) {
	X, y := synth(9, 200, []float64{1, -1}, 0)
	opts := Options{Epochs: 5, LearningRate: 0.1, BatchSize: 10, Seed: 1}
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		m := newModel(t, 2)
		if _, err := m.Train(ctx, X, y, 200, opts); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if got := m.Weights(); !equalBits(got, []float32{0, 0, 0}) {
			t.Errorf("weights %v after cancelled Train", got)
		}
	})
	t.Run("cancelled between batches", func(t *testing.T) {
		ctx := &cancelAfter{Context: context.Background(), n: 37}
		m := newModel(t, 2)
		if _, err := m.Train(ctx, X, y, 200, opts); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if got := ctx.calls.Load(); got != 38 {
			t.Errorf("ctx checked %d times, want 38 (once per batch until cancelled)", got)
		}
		if got := m.Weights(); !equalBits(got, []float32{0, 0, 0}) {
			t.Errorf("weights %v after cancelled Train", got)
		}
		// The model still trains afterwards.
		if _, err := m.Train(context.Background(), X, y, 200, opts); err != nil {
			t.Fatalf("Train after cancel: %v", err)
		}
	})
}

func TestLogRegPredict(t *testing.T) {
	m := newModel(t, 2)
	X := []float32{0, 0, 1, 2, -3, 0.5}
	p, err := m.Predict(X, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range p {
		if v != 0.5 {
			t.Errorf("zero model p[%d] = %v, want 0.5", i, v)
		}
	}
	w := []float32{0.5, -1, 0.25}
	if err := m.SetWeights(w); err != nil {
		t.Fatal(err)
	}
	if p, err = m.Predict(X, 3); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		z := 0.25 + 0.5*float64(X[2*i]) - float64(X[2*i+1])
		want := 1 / (1 + math.Exp(-z))
		if math.Abs(float64(p[i])-want) > 1e-7 {
			t.Errorf("p[%d] = %v, want %v", i, p[i], want)
		}
	}
	if m.NumParams() != 3 || m.NumFeatures() != 2 {
		t.Errorf("NumParams %d NumFeatures %d, want 3 and 2", m.NumParams(), m.NumFeatures())
	}
	// Weights returns a copy.
	m.Weights()[0] = 100
	if m.Weights()[0] != 0.5 {
		t.Error("Weights aliases the model's weights")
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"defaults", DefaultOptions(), true},
		{"full batch", Options{Epochs: 1, LearningRate: 1}, true},
		{"zero epochs", Options{LearningRate: 1}, false},
		{"too many epochs", Options{Epochs: maxEpochs + 1, LearningRate: 1}, false},
		{"negative learning rate", Options{Epochs: 1, LearningRate: -1}, false},
		{"infinite learning rate", Options{Epochs: 1, LearningRate: math.Inf(1)}, false},
		{"negative batch", Options{Epochs: 1, LearningRate: 1, BatchSize: -5}, false},
		{"NaN L2", Options{Epochs: 1, LearningRate: 1, L2: math.NaN()}, false},
		{"infinite L2", Options{Epochs: 1, LearningRate: 1, L2: math.Inf(1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.ok && err != nil {
				t.Errorf("Validate: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrOptions) {
				t.Errorf("Validate err = %v, want ErrOptions", err)
			}
		})
	}
}

func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
