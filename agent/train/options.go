package train

import (
	"errors"
	"fmt"
	"math"
)

// Errors returned by this package. Test for them with errors.Is.
var (
	// ErrOptions means Options failed validation.
	ErrOptions = errors.New("invalid training options")
	// ErrShape means a matrix, vector or weight slice has the wrong length.
	ErrShape = errors.New("shape mismatch")
	// ErrNoRows means a call was given no rows (rows <= 0).
	ErrNoRows = errors.New("no rows")
	// ErrNotFinite means an input value is NaN or infinite.
	ErrNotFinite = errors.New("value is not finite")
	// ErrLabel means a label lies outside [0, 1] (for metrics: is not 0 or 1).
	ErrLabel = errors.New("label out of range")
	// ErrOneClass means a metric needs both classes and only one is present.
	ErrOneClass = errors.New("only one class present")
	// ErrInternal means the training engine failed (including a recovered
	// panic inside gorgonia). The model is left unchanged.
	ErrInternal = errors.New("training engine failure")
)

// Options controls one call to Trainer.Train.
type Options struct {
	// Epochs is the number of passes over the data; at least 1.
	Epochs int
	// LearningRate is the gradient-descent step size; positive and finite.
	LearningRate float64
	// BatchSize is the number of rows per gradient step. 0, or any value
	// at least the number of rows, means full-batch gradient descent.
	BatchSize int
	// Seed fixes the order in which mini-batches are drawn: the same seed,
	// data and starting weights give bit-for-bit the same result.
	Seed uint64
	// L2 is the ridge penalty λ: the objective gains λ/2·‖w‖² over the
	// coefficients (never the bias). 0 disables it; must be finite and
	// non-negative.
	L2 float64
}

// DefaultOptions returns options that suit small tabular clinical models:
// 5 epochs of mini-batch SGD (batch 32, learning rate 0.1), no penalty.
func DefaultOptions() Options {
	return Options{Epochs: 5, LearningRate: 0.1, BatchSize: 32, Seed: 1}
}

// maxEpochs bounds Epochs to catch unit mix-ups (such as passing steps).
const maxEpochs = 1_000_000

// Validate reports the first problem with o, wrapping ErrOptions.
func (o Options) Validate() error {
	switch {
	case o.Epochs < 1:
		return fmt.Errorf("%w: epochs %d, want at least 1", ErrOptions, o.Epochs)
	case o.Epochs > maxEpochs:
		return fmt.Errorf("%w: epochs %d, want at most %d", ErrOptions, o.Epochs, maxEpochs)
	case !(o.LearningRate > 0) || math.IsInf(o.LearningRate, 0):
		return fmt.Errorf("%w: learning rate %v, want positive and finite", ErrOptions, o.LearningRate)
	case o.BatchSize < 0:
		return fmt.Errorf("%w: batch size %d, want 0 (full batch) or positive", ErrOptions, o.BatchSize)
	case !(o.L2 >= 0) || math.IsInf(o.L2, 0):
		return fmt.Errorf("%w: L2 %v, want non-negative and finite", ErrOptions, o.L2)
	}
	return nil
}
