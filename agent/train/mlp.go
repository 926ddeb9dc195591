package train

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
)

// MLPConfig is an MLP's architecture: hidden widths, activation and
// dropout rate. It is defined in package mlpspec (which the coordinator can
// import without linking gorgonia); see mlpspec.Config for its fields and
// limits.
type MLPConfig = mlpspec.Config

// Hidden-layer activations for MLPConfig.Activation.
const (
	ActivationReLU    = mlpspec.ReLU
	ActivationTanh    = mlpspec.Tanh
	ActivationSigmoid = mlpspec.Sigmoid
)

// MLPInitialWeights returns the initial flat weights of an MLP over
// features inputs: He-uniform (ReLU) or Glorot-uniform weights from a PCG
// seeded with seed, zero biases; a pure function of its arguments. It is
// mlpspec.InitialWeights, which documents the exact algorithm; the
// coordinator should call that one to avoid linking gorgonia.
func MLPInitialWeights(features int, cfg MLPConfig, seed uint64) ([]float32, error) {
	return mlpspec.InitialWeights(features, cfg, seed)
}

// MLP is a multilayer perceptron for a binary outcome: dense hidden layers
// with a ReLU, tanh or sigmoid activation and optional dropout, then one
// sigmoid output unit, p(y=1|x) = σ(z). It is trained like LogReg: the mean
// binary cross-entropy (optionally class-weighted, plus L2/2·‖W‖² over the
// weight matrices and the FedProx term; see Options), gradients from
// gorgonia in float64, SGD or Adam.
//
// Flat weight layout (see package mlpspec for the offsets): layer by layer
// from the input, each layer's in×out weight matrix in row-major order
// (the weight from input i to unit o at i·out + o) followed by its out
// biases. With F features and hidden widths h1..hk that is
//
//	[W_0 (F×h1), b_0 (h1), W_1 (h1×h2), b_1 (h2), …, W_k (hk×1), b_k (1)]
//
// of length F·h1+h1 + h1·h2+h2 + … + hk·1+1 = NumParams().
//
// Dropout (MLPConfig.Dropout) applies during Train only: each hidden unit
// of each row of each batch is zeroed with probability rate and the
// survivors scaled by 1/(1−rate), with masks drawn from Options.Seed, so
// training stays bit-for-bit reproducible. Predict uses every unit.
//
// An MLP is safe for concurrent use; calls are serialized. It keeps the
// compiled graph of each batch size it has seen (at most a few).
type MLP struct {
	d      int
	cfg    MLPConfig
	layers []mlpspec.Layer
	n      int // NumParams

	mu     sync.Mutex           // guards the fields below
	w      []float32            // the flat weights
	graphs map[mlpKey]*mlpGraph // compiled graphs by batch row count and terms
}

var _ Trainer = (*MLP)(nil)

// NewMLP returns an MLP over features inputs with architecture cfg. Its
// weights start as MLPInitialWeights(features, cfg, 0); use InitWeights or
// SetWeights for others. It fails with ErrShape for a feature count
// outside 1..mlpspec.MaxFeatures and with ErrConfig for an invalid cfg
// (no hidden layer or more than mlpspec.MaxHidden, a width outside
// 1..mlpspec.MaxWidth, an unknown activation, a dropout rate outside
// [0, 1), more than mlpspec.MaxParams weights).
func NewMLP(features int, cfg MLPConfig) (*MLP, error) {
	if features < 1 || features > maxFeatures {
		return nil, fmt.Errorf("mlp: %w: %d features, want 1..%d", ErrShape, features, maxFeatures)
	}
	cfg.Hidden = slices.Clone(cfg.Hidden)
	if cfg.Activation == "" {
		cfg.Activation = ActivationReLU
	}
	w, err := mlpspec.InitialWeights(features, cfg, 0)
	if err != nil {
		return nil, fmt.Errorf("mlp: %w", err)
	}
	layers, err := mlpspec.Layers(features, cfg.Hidden)
	if err != nil {
		return nil, fmt.Errorf("mlp: %w", err)
	}
	return &MLP{d: features, cfg: cfg, layers: layers, n: len(w), w: w}, nil
}

// NumFeatures is the number of input features (columns of X).
func (m *MLP) NumFeatures() int { return m.d }

// NumParams is the length of the flat weight vector:
// Σ over layers of in·out + out.
func (m *MLP) NumParams() int { return m.n }

// Config returns the model's architecture (Activation filled in).
func (m *MLP) Config() MLPConfig {
	c := m.cfg
	c.Hidden = slices.Clone(c.Hidden)
	return c
}

// Weights returns a copy of the weights in the flat layout described on
// MLP.
func (m *MLP) Weights() []float32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.w)
}

// SetWeights replaces the weights with a copy of w.
func (m *MLP) SetWeights(w []float32) error {
	if len(w) != m.n {
		return fmt.Errorf("mlp: set weights: %w: got %d values, want %d", ErrShape, len(w), m.n)
	}
	if i := firstNonFinite(w); i >= 0 {
		return fmt.Errorf("mlp: set weights: %w: weight %d", ErrNotFinite, i)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.w, w)
	return nil
}

// InitWeights replaces the weights with MLPInitialWeights(NumFeatures(),
// Config(), seed).
func (m *MLP) InitWeights(seed uint64) {
	w, err := mlpspec.InitialWeights(m.d, m.cfg, seed)
	if err != nil {
		panic(fmt.Sprintf("mlp: a validated configuration failed: %v", err)) // unreachable
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.w, w)
}

// Predict returns σ(z) for each row of X, the forward pass computed in
// plain Go (float64 accumulation) with every hidden unit (no dropout).
func (m *MLP) Predict(X []float32, rows int) ([]float32, error) {
	if err := checkMatrix(X, rows, m.d); err != nil {
		return nil, fmt.Errorf("mlp: predict: %w", err)
	}
	m.mu.Lock()
	w := slices.Clone(m.w)
	m.mu.Unlock()

	widest := 0
	for _, l := range m.layers {
		widest = max(widest, l.In, l.Out)
	}
	a, z := make([]float64, widest), make([]float64, widest)
	out := make([]float32, rows)
	for r := range out {
		for j, v := range X[r*m.d : r*m.d+m.d] {
			a[j] = float64(v)
		}
		for li, l := range m.layers {
			zl := z[:l.Out]
			for o := range zl {
				zl[o] = float64(w[l.Biases+o])
			}
			for i, ai := range a[:l.In] {
				row := w[l.Weights+i*l.Out : l.Weights+(i+1)*l.Out]
				for o, wio := range row {
					zl[o] += ai * float64(wio)
				}
			}
			if li == len(m.layers)-1 {
				out[r] = float32(sigmoid(zl[0]))
				break
			}
			for o, v := range zl {
				a[o] = activate(m.cfg.Activation, v)
			}
		}
	}
	return out, nil
}

// activate applies a hidden-layer activation.
func activate(act string, z float64) float64 {
	switch act {
	case ActivationTanh:
		return math.Tanh(z)
	case ActivationSigmoid:
		return sigmoid(z)
	default:
		return max(z, 0)
	}
}

// Train runs opts.Epochs epochs of (mini-batch) gradient descent from the
// current weights, exactly as LogReg.Train does (batch order, optimizer,
// objective, returned loss, cancellation), with the MLP's dropout during
// training. On any error the weights are unchanged.
func (m *MLP) Train(ctx context.Context, X []float32, y []float32, rows int, opts Options) (loss float64, err error) {
	if ctx == nil {
		return 0, fmt.Errorf("mlp: train: %w: nil context", ErrOptions)
	}
	if err := opts.Validate(); err != nil {
		return 0, fmt.Errorf("mlp: train: %w", err)
	}
	if err := checkMatrix(X, rows, m.d); err != nil {
		return 0, fmt.Errorf("mlp: train: %w", err)
	}
	if err := checkLabels(y, rows); err != nil {
		return 0, fmt.Errorf("mlp: train: %w", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	defer func() {
		// As in LogReg.Train: gorgonia reports some failures by panicking.
		if r := recover(); r != nil {
			m.graphs = nil
			loss, err = 0, fmt.Errorf("mlp: train: %w: panic: %v", ErrInternal, r)
		}
	}()

	params := toFloat64(m.w)
	obj := newObjective(opts, toFloat64(m.w), m.cfg.Dropout)
	key := mlpKey{weighted: obj.weighted(), prox: obj.prox()}
	graph := func(rows int) (batchGraph, error) {
		k := key
		k.rows = rows
		return m.graph(k)
	}
	drop := func(rows int) {
		k := key
		k.rows = rows
		delete(m.graphs, k)
	}
	loss, err = fit(ctx, X, y, rows, opts, params, obj, graph, drop)
	if err != nil {
		return 0, fmt.Errorf("mlp: train: %w", err)
	}
	if err := toFloat32(m.w, params); err != nil {
		return 0, fmt.Errorf("mlp: train: %w", err)
	}
	return loss, nil
}

// graph returns the compiled graph for key, building it on first use.
// Callers hold m.mu.
func (m *MLP) graph(key mlpKey) (*mlpGraph, error) {
	if g, ok := m.graphs[key]; ok {
		return g, nil
	}
	g, err := newMLPGraph(m.layers, m.cfg.Activation, m.cfg.Dropout, key)
	if err != nil {
		return nil, err
	}
	if m.graphs == nil || len(m.graphs) >= maxCachedGraphs {
		m.graphs = make(map[mlpKey]*mlpGraph, maxCachedGraphs)
	}
	m.graphs[key] = g
	return g, nil
}
