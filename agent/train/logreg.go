package train

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
)

// maxFeatures bounds the feature count of a model, far above any tabular
// clinical model, so that sizes computed from it cannot overflow.
const maxFeatures = mlpspec.MaxFeatures

// shuffleStream is the second PCG seed word; Options.Seed is the first.
const shuffleStream = 0x636f686f7274 // "cohort"

// maxCachedGraphs bounds how many compiled graphs (one per batch row count
// and set of objective terms) a model keeps between calls.
const maxCachedGraphs = 4

// LogReg is binary logistic regression, p(y=1|x) = σ(w·x + b), trained by
// minimizing the mean binary cross-entropy (optionally class-weighted, plus
// L2/2·‖w‖² and the FedProx term; see Options) with gradients from
// gorgonia, by SGD or Adam.
//
// Flat weight layout, of length NumFeatures()+1: w[0..d-1] are the
// coefficients of features 0..d-1 and w[d] is the bias. New models start
// at zero.
//
// A LogReg is safe for concurrent use; calls are serialized. It keeps the
// compiled gorgonia graph of each batch size it has seen (at most a few), so
// repeated Train calls on same-sized data do not rebuild graphs.
type LogReg struct {
	d int

	mu     sync.Mutex         // guards the fields below
	w      []float32          // d+1 weights
	graphs map[lrKey]*lrGraph // compiled graphs by batch row count and terms
}

var _ Trainer = (*LogReg)(nil)

// NewLogReg returns a zero-initialized logistic regression over nFeatures
// features.
func NewLogReg(nFeatures int) (*LogReg, error) {
	if nFeatures < 1 || nFeatures > maxFeatures {
		return nil, fmt.Errorf("logreg: %w: %d features, want 1..%d", ErrShape, nFeatures, maxFeatures)
	}
	return &LogReg{d: nFeatures, w: make([]float32, nFeatures+1)}, nil
}

// NumFeatures is the number of input features (columns of X).
func (m *LogReg) NumFeatures() int { return m.d }

// NumParams is NumFeatures()+1: the coefficients and the bias.
func (m *LogReg) NumParams() int { return m.d + 1 }

// Weights returns a copy of the weights in the flat layout described on
// LogReg.
func (m *LogReg) Weights() []float32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]float32(nil), m.w...)
}

// SetWeights replaces the weights with a copy of w.
func (m *LogReg) SetWeights(w []float32) error {
	if len(w) != m.d+1 {
		return fmt.Errorf("logreg: set weights: %w: got %d values, want %d", ErrShape, len(w), m.d+1)
	}
	if i := firstNonFinite(w); i >= 0 {
		return fmt.Errorf("logreg: set weights: %w: weight %d", ErrNotFinite, i)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.w, w)
	return nil
}

// Predict returns σ(w·x + b) for each row of X. It is computed in plain Go
// (float64 accumulation), matching the training graph's forward pass.
func (m *LogReg) Predict(X []float32, rows int) ([]float32, error) {
	if err := m.checkX(X, rows); err != nil {
		return nil, fmt.Errorf("logreg: predict: %w", err)
	}
	m.mu.Lock()
	w := append([]float32(nil), m.w...)
	m.mu.Unlock()

	d := m.d
	out := make([]float32, rows)
	for i := range out {
		row := X[i*d : i*d+d]
		z := float64(w[d])
		for j, x := range row {
			z += float64(w[j]) * float64(x)
		}
		out[i] = float32(sigmoid(z))
	}
	return out, nil
}

// Train runs opts.Epochs epochs of (mini-batch) gradient descent from the
// current weights. Each epoch visits the rows in a fresh order drawn from
// opts.Seed, in batches of opts.BatchSize (the last one may be smaller);
// each batch takes one optimizer step (SGD or Adam, see Options) along the
// gradient of its objective (see Options), computed by gorgonia in float64.
//
// The returned loss is the row-weighted mean objective (cross-entropy plus
// penalties) over the last epoch's batches, each measured before its step.
// ctx is checked before every batch. On any error the weights are
// unchanged.
func (m *LogReg) Train(ctx context.Context, X []float32, y []float32, rows int, opts Options) (loss float64, err error) {
	if ctx == nil {
		return 0, fmt.Errorf("logreg: train: %w: nil context", ErrOptions)
	}
	if err := opts.Validate(); err != nil {
		return 0, fmt.Errorf("logreg: train: %w", err)
	}
	if err := m.checkX(X, rows); err != nil {
		return 0, fmt.Errorf("logreg: train: %w", err)
	}
	if err := checkLabels(y, rows); err != nil {
		return 0, fmt.Errorf("logreg: train: %w", err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	defer func() {
		// gorgonia reports some failures by panicking. Drop the graphs,
		// whose state is unknown, and report an error instead. (A panic
		// inside the goroutine that gorgonia's tape machine runs ops on
		// cannot be recovered here; the checks above and the fixed graph
		// shapes keep bad input from reaching it.)
		if r := recover(); r != nil {
			m.graphs = nil
			loss, err = 0, fmt.Errorf("logreg: train: %w: panic: %v", ErrInternal, r)
		}
	}()

	params := toFloat64(m.w)
	obj := newObjective(opts, toFloat64(m.w), 0)
	key := lrKey{weighted: obj.weighted(), prox: obj.prox()}
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
		return 0, fmt.Errorf("logreg: train: %w", err)
	}
	if err := toFloat32(m.w, params); err != nil {
		return 0, fmt.Errorf("logreg: train: %w", err)
	}
	return loss, nil
}

// graph returns the compiled graph for key, building it on first use.
// Callers hold m.mu.
func (m *LogReg) graph(key lrKey) (*lrGraph, error) {
	if g, ok := m.graphs[key]; ok {
		return g, nil
	}
	g, err := newLRGraph(m.d, key)
	if err != nil {
		return nil, err
	}
	if m.graphs == nil || len(m.graphs) >= maxCachedGraphs {
		m.graphs = make(map[lrKey]*lrGraph, maxCachedGraphs)
	}
	m.graphs[key] = g
	return g, nil
}

// checkX validates a row-major feature matrix of the model's width.
func (m *LogReg) checkX(X []float32, rows int) error { return checkMatrix(X, rows, m.d) }

// checkMatrix validates a row-major feature matrix of rows × d finite
// values.
func checkMatrix(X []float32, rows, d int) error {
	if rows <= 0 {
		return fmt.Errorf("%w: rows = %d", ErrNoRows, rows)
	}
	if rows > math.MaxInt/d || len(X) != rows*d {
		return fmt.Errorf("%w: X has %d values, want %d rows × %d features", ErrShape, len(X), rows, d)
	}
	if i := firstNonFinite(X); i >= 0 {
		return fmt.Errorf("%w: X[%d] (row %d, feature %d)", ErrNotFinite, i, i/d, i%d)
	}
	return nil
}

// checkLabels validates training labels: one per row, each in [0, 1].
func checkLabels(y []float32, rows int) error {
	if len(y) != rows {
		return fmt.Errorf("%w: y has %d labels, want %d", ErrShape, len(y), rows)
	}
	for i, v := range y {
		if !(v >= 0 && v <= 1) { // also catches NaN
			return fmt.Errorf("%w: y[%d] = %v, want a value in [0, 1]", ErrLabel, i, v)
		}
	}
	return nil
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

func firstNonFinite(v []float32) int {
	for i, x := range v {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}
