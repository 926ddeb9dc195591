package aggregator

import "errors"

// Errors returned by strategies and rounds. Test for them with errors.Is.
var (
	// ErrShape means an update or model does not have the expected length.
	ErrShape = errors.New("shape mismatch")
	// ErrNoSamples means an update claims to have been trained on zero samples.
	ErrNoSamples = errors.New("update has no samples")
	// ErrNotFinite means a value is NaN or infinite.
	ErrNotFinite = errors.New("value is not finite")
	// ErrEmpty means Finish was called before any update was added.
	ErrEmpty = errors.New("round has no updates")
	// ErrFinished means an update was added to a round that has finished.
	ErrFinished = errors.New("round already finished")
)

// Strategy turns one round's updates into the next global model.
//
// A Strategy value describes an aggregation rule and its hyper-parameters;
// per-round state lives in the Round it returns.
type Strategy interface {
	// Name is a short stable identifier of the rule, such as "fedavg".
	Name() string
	// Begin starts a round from the current global weights. The Round keeps
	// its own copy of global; the caller may reuse the slice.
	Begin(global []float32) (Round, error)
}

// Round collects one round's updates.
//
// Implementations are safe for concurrent use by multiple goroutines. An
// update that is rejected with an error leaves the round unchanged.
type Round interface {
	// AddPacked folds in one site's weight delta (packed little-endian
	// float32, as produced by protocol.EncodeF32) with its sample count.
	AddPacked(delta []byte, samples uint64) error
	// Add folds in one site's weight delta with its sample count. The
	// Round does not retain delta.
	Add(delta []float32, samples uint64) error
	// Count is the number of updates folded in so far.
	Count() int
	// Finish returns the new global weights. After a successful Finish the
	// round accepts no more updates (ErrFinished); calling Finish again
	// returns the same weights.
	Finish() ([]float32, error)
}
