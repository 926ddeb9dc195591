package aggregator

import (
	"errors"
	"fmt"
	"strings"
)

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
	// ErrState means optimizer state passed to Begin is malformed, or
	// belongs to another rule, encoding version or model size.
	ErrState = errors.New("invalid optimizer state")
	// ErrParams means a strategy's name or parameters are invalid.
	ErrParams = errors.New("invalid strategy parameters")
	// ErrTooFew means a robust rule was asked to finish a round with fewer
	// updates than its assumptions need (Krum: n > 2f+2). The round stays
	// open.
	ErrTooFew = errors.New("too few updates for the rule")
)

// Strategy turns one round's updates into the next global model.
//
// A Strategy value describes an aggregation rule and its hyper-parameters.
// It holds no mutable state and is safe to share: whatever a rule carries
// from one round to the next (server momentum, Adam moments) travels as the
// opaque bytes of Result.State, which the caller stores and hands back to
// the next Begin. See DecodeState for the encoding.
type Strategy interface {
	// Name is a short stable identifier of the rule, such as "fedavg".
	Name() string
	// Begin starts a round from the current global weights and the state
	// the previous round's Finish returned (nil for the first round, and
	// always nil for stateless rules). The Round keeps its own copy of
	// global and of the decoded state; the caller may reuse both slices.
	//
	// Begin fails with ErrParams when the strategy's parameters are
	// invalid, ErrShape or ErrNotFinite when global is empty or not finite,
	// and ErrState when state is malformed or was produced by another rule,
	// encoding version or model size.
	Begin(global []float32, state []byte) (Round, error)
}

// Round collects one round's updates.
//
// Implementations are safe for concurrent use by multiple goroutines. An
// update that is rejected with an error leaves the round unchanged.
type Round interface {
	// AddPacked folds in one site's weight delta (packed little-endian
	// float32, as produced by protocol.EncodeF32) with its sample count.
	// The Round does not retain delta.
	AddPacked(delta []byte, samples uint64) error
	// Add folds in one site's weight delta with its sample count. The
	// Round does not retain delta.
	Add(delta []float32, samples uint64) error
	// Count is the number of updates accepted so far.
	Count() int
	// Finish returns the new global weights and the state to pass to the
	// next round's Begin. After a successful Finish the round accepts no
	// more updates (ErrFinished); calling Finish again returns an equal
	// Result. When Finish fails (ErrEmpty, ErrTooFew, ErrNotFinite) the
	// round stays open.
	Finish() (Result, error)
}

// BatchAdder is implemented by the rounds of the streaming rules (FedAvg,
// FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad), which fold several
// updates into their running sum in one pass over it: the sum's memory
// traffic is then paid once per batch rather than once per update, which
// is what limits aggregation of large models. The robust rules and
// NormBound do not implement it; call AddPacked for each update instead.
type BatchAdder interface {
	// AddPackedBatch adds every deltas[i] with samples[i], as AddPacked
	// would one after another, or none of them. When any update is
	// rejected it returns a *BatchError naming each rejected update by its
	// position in the batch and leaves the round bit-for-bit unchanged, so
	// that the caller can add the others again. It fails with ErrShape,
	// not a BatchError, when the two slices differ in length, and with
	// ErrFinished after Finish. The Round retains none of the deltas.
	//
	// Added one after another, batches give the same result, bit for bit,
	// as AddPacked of their updates in the same order. Memory does not grow
	// with the batch, but the caller holds all its deltas at once: bound
	// the batch (a handful of updates is enough to amortize the sum's
	// traffic). Streaming rounds keep a second running sum while they are
	// fed batches (16 bytes per parameter instead of 8 above 640K
	// parameters).
	AddPackedBatch(deltas [][]byte, samples []uint64) error
}

// BatchError is the error of an AddPackedBatch that rejected some updates
// of its batch (and so added none).
type BatchError struct {
	// Errs has one entry per update of the batch: nil for an update that
	// could be added, the reason for one that was rejected (wrapping
	// ErrShape, ErrNoSamples or ErrNotFinite).
	Errs []error
}

// Error lists the rejected updates with their positions in the batch.
func (e *BatchError) Error() string {
	var b strings.Builder
	b.WriteString("batch rejected:")
	sep := " "
	for i, err := range e.Errs {
		if err != nil {
			fmt.Fprintf(&b, "%supdate %d: %v", sep, i, err)
			sep = "; "
		}
	}
	return b.String()
}

// Unwrap returns the rejected updates' errors, so that errors.Is finds
// their sentinels.
func (e *BatchError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Result is the outcome of a round.
type Result struct {
	// Weights is the new global model. The caller owns it.
	Weights []float32
	// State is the rule's encoded optimizer state, to be passed to the
	// next round's Begin; nil for stateless rules. The caller owns it.
	State []byte
}

// clone returns a deep copy of r, so callers can own what Finish returns.
func (r Result) clone() Result {
	out := Result{Weights: append([]float32(nil), r.Weights...)}
	if r.State != nil {
		out.State = append([]byte(nil), r.State...)
	}
	return out
}
