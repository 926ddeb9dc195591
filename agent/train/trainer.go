package train

import "context"

// Trainer is a model that the agent trains locally and exchanges with the
// coordinator as a flat float32 weight vector.
//
// X is row-major, rows × the model's feature count; y has one label in
// [0, 1] per row. Implementations are safe for concurrent use; calls are
// serialized.
type Trainer interface {
	// NumParams is the length of the flat weight vector.
	NumParams() int
	// Weights returns a copy of the current weights.
	Weights() []float32
	// SetWeights replaces the weights with a copy of w, which must have
	// NumParams finite values.
	SetWeights(w []float32) error
	// Train runs opts.Epochs epochs of gradient descent from the current
	// weights and returns the mean training loss of the last epoch. On
	// error, including cancellation of ctx, the weights are unchanged.
	Train(ctx context.Context, X []float32, y []float32, rows int, opts Options) (loss float64, err error)
	// Predict returns one probability per row.
	Predict(X []float32, rows int) ([]float32, error)
}
