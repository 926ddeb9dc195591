package aggregator

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// FedAvg is federated averaging (McMahan et al., 2017): the new global model
// is global + Σ nᵢ·Δᵢ / Σ nᵢ, where Δᵢ is site i's weight delta and nᵢ its
// sample count.
//
// Its rounds stream: they keep a running float64 weighted sum of the
// model's length (two, double-buffered, for models up to 640K parameters
// and for rounds fed batches), so memory does not grow with the number of
// updates. FedAvg is stateless.
type FedAvg struct{}

var (
	_ Strategy   = FedAvg{}
	_ BatchAdder = (*meanRound)(nil)
)

// Name returns "fedavg".
func (FedAvg) Name() string { return "fedavg" }

// Begin starts a FedAvg round from global, which must be non-empty and
// finite. state must be empty.
func (s FedAvg) Begin(global []float32, state []byte) (Round, error) {
	return beginMean(s.Name(), global, state, nil)
}

// FedProx (Li et al., 2020) adds the proximal term (Mu/2)·‖w − w_global‖²
// to each site's local loss; the sites apply it while training. On the
// server it aggregates exactly like FedAvg. Use ProximalMu to find the Mu
// a job's sites must train with.
type FedProx struct {
	// Mu is the proximal coefficient, >= 0 (0 is plain FedAvg).
	Mu float64
}

var _ Strategy = FedProx{}

// Name returns "fedprox".
func (FedProx) Name() string { return "fedprox" }

// ProximalMu returns Mu.
func (s FedProx) ProximalMu() float64 { return s.Mu }

func (s FedProx) validate() error {
	return checkParam("fedprox", "mu", s.Mu, 0, math.Inf(1), true, false)
}

// Begin starts a round; it aggregates like FedAvg.
func (s FedProx) Begin(global []float32, state []byte) (Round, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	return beginMean(s.Name(), global, state, nil)
}

// stepper computes a rule's result from the round's global weights and its
// weighted mean delta Δ = sum/total. It must not modify its arguments, nor
// its own state, so that a failed Finish leaves the round as it was.
type stepper interface {
	step(global []float32, sum []float64, total float64) (Result, error)
}

// beginMean validates global and starts a streaming round that aggregates
// the sample-weighted mean delta; st turns it into the result (nil: plain
// FedAvg, global + mean).
func beginMean(rule string, global []float32, state []byte, st stepper) (Round, error) {
	if err := checkGlobal(rule, global); err != nil {
		return nil, err
	}
	if st == nil && len(state) > 0 {
		return nil, fmt.Errorf("%s: begin: %w: the rule keeps no state, got %d bytes", rule, ErrState, len(state))
	}
	g := make([]float32, len(global))
	copy(g, global)
	r := &meanRound{rule: rule, global: g, step: st, maxShards: max(1, runtime.GOMAXPROCS(0))}
	r.idle = sync.NewCond(&r.mu)
	return r, nil
}

// checkGlobal checks that global is non-empty and finite.
func checkGlobal(rule string, global []float32) error {
	if len(global) == 0 {
		return fmt.Errorf("%s: begin: %w: empty global model", rule, ErrShape)
	}
	if i := firstNonFinite(global); i >= 0 {
		return fmt.Errorf("%s: begin: %w: global weight %d", rule, ErrNotFinite, i)
	}
	return nil
}

// meanRound is a streaming round over the weighted mean delta.
//
// Updates added concurrently fold into separate accumulators (shards), up
// to GOMAXPROCS of them, so that several cores aggregate at once; Finish
// merges the shards in creation order. Memory is one accumulator per shard,
// whatever the number of updates. Updates added one after another all go
// to the one shard they create, so the result is then the same bits
// whatever the machine; concurrent adds may change the last bits with the
// interleaving.
type meanRound struct {
	rule      string
	global    []float32 // immutable after Begin
	step      stepper   // nil for FedAvg and FedProx
	maxShards int

	mu     sync.Mutex // guards the fields below
	idle   *sync.Cond // signalled when a shard is returned
	shards []*meanAcc // every shard, in creation order
	free   []*meanAcc // shards not in use, most recently returned last
	busy   int        // shards in use
	count  int        // updates accepted
	result *Result    // set by a successful Finish
}

// take returns a shard for one add, waiting for one to be free when all
// GOMAXPROCS are in use; it fails once the round has finished.
func (r *meanRound) take() (*meanAcc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.result != nil {
			return nil, fmt.Errorf("%s: add: %w", r.rule, ErrFinished)
		}
		if n := len(r.free); n > 0 {
			a := r.free[n-1]
			r.free = r.free[:n-1]
			r.busy++
			return a, nil
		}
		if len(r.shards) < r.maxShards {
			a := newMeanAcc(len(r.global))
			r.shards = append(r.shards, &a)
			r.busy++
			return &a, nil
		}
		r.idle.Wait()
	}
}

// give returns a shard after an add, counting the update if it was
// accepted.
func (r *meanRound) give(a *meanAcc, accepted bool) { r.giveN(a, 1, accepted) }

// giveN returns a shard after adding n updates, counting them if they were
// accepted.
func (r *meanRound) giveN(a *meanAcc, n int, accepted bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.free = append(r.free, a)
	r.busy--
	if accepted {
		r.count += n
	}
	r.idle.Broadcast()
}

// AddPacked implements Round. Validation and folding are one pass (see
// meanAcc); a rejected update leaves the sum bit-for-bit unchanged.
func (r *meanRound) AddPacked(delta []byte, samples uint64) error {
	if len(delta) != 4*len(r.global) {
		return fmt.Errorf("%s: add: %w: got %d bytes, want %d (%d float32)", r.rule, ErrShape, len(delta), 4*len(r.global), len(r.global))
	}
	if samples == 0 {
		return fmt.Errorf("%s: add: %w", r.rule, ErrNoSamples)
	}
	a, err := r.take()
	if err != nil {
		return err
	}
	ok := a.addPacked(delta, float64(samples))
	r.give(a, ok)
	if !ok {
		return fmt.Errorf("%s: add: %w: delta element %d", r.rule, ErrNotFinite, firstNonFinitePacked(delta))
	}
	return nil
}

// AddPackedBatch implements BatchAdder: the batch is folded in one pass
// over the sum (see meanAcc.addPackedBatch), with the same result, bit for bit,
// as AddPacked of each update in turn into the same shard.
func (r *meanRound) AddPackedBatch(deltas [][]byte, samples []uint64) error {
	if len(deltas) != len(samples) {
		return fmt.Errorf("%s: add batch: %w: %d deltas, %d sample counts", r.rule, ErrShape, len(deltas), len(samples))
	}
	if len(deltas) == 0 {
		return nil
	}
	var errs []error
	reject := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(deltas))
		}
		errs[i] = err
	}
	for i, d := range deltas {
		switch {
		case len(d) != 4*len(r.global):
			reject(i, fmt.Errorf("%s: add: %w: got %d bytes, want %d (%d float32)", r.rule, ErrShape, len(d), 4*len(r.global), len(r.global)))
		case samples[i] == 0:
			reject(i, fmt.Errorf("%s: add: %w", r.rule, ErrNoSamples))
		}
	}
	// notFinite names every other rejected update, once the batch is
	// known to be refused.
	notFinite := func() {
		for i, d := range deltas {
			if errs == nil || errs[i] == nil {
				if k := firstNonFinitePacked(d); k >= 0 {
					reject(i, fmt.Errorf("%s: add: %w: delta element %d", r.rule, ErrNotFinite, k))
				}
			}
		}
	}
	if errs != nil {
		notFinite()
		return &BatchError{Errs: errs}
	}
	a, err := r.take()
	if err != nil {
		return err
	}
	ok := a.addPackedBatch(deltas, samples)
	r.giveN(a, len(deltas), ok)
	if ok {
		return nil
	}
	notFinite()
	if errs == nil { // cannot happen: the fold fails only on a non-finite value
		return fmt.Errorf("%s: add batch: %w", r.rule, ErrNotFinite)
	}
	return &BatchError{Errs: errs}
}

// Add implements Round.
func (r *meanRound) Add(delta []float32, samples uint64) error {
	if len(delta) != len(r.global) {
		return fmt.Errorf("%s: add: %w: got %d values, want %d", r.rule, ErrShape, len(delta), len(r.global))
	}
	if samples == 0 {
		return fmt.Errorf("%s: add: %w", r.rule, ErrNoSamples)
	}
	a, err := r.take()
	if err != nil {
		return err
	}
	ok := a.add(delta, float64(samples))
	r.give(a, ok)
	if !ok {
		return fmt.Errorf("%s: add: %w: delta element %d", r.rule, ErrNotFinite, firstNonFinite(delta))
	}
	return nil
}

// Count implements Round.
func (r *meanRound) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// merged waits until no add is in flight and returns the shards' summed
// sums and totals (the first shard's own slice when there is one shard).
// r.mu is held.
func (r *meanRound) merged() ([]float64, float64) {
	for r.busy > 0 {
		r.idle.Wait()
	}
	sum, total := r.shards[0].sum, r.shards[0].total
	if len(r.shards) > 1 {
		sum = append([]float64(nil), sum...)
		for _, a := range r.shards[1:] {
			for i, v := range a.sum {
				sum[i] += v
			}
			total += a.total
		}
	}
	return sum, total
}

// Finish implements Round. It fails with ErrEmpty when no update was added
// and with ErrNotFinite when a new weight (or state value) overflows
// float32; in both cases the round stays open.
func (r *meanRound) Finish() (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.result == nil && r.busy > 0 {
		r.idle.Wait()
	}
	if r.result == nil {
		if r.count == 0 {
			return Result{}, fmt.Errorf("%s: finish: %w", r.rule, ErrEmpty)
		}
		sum, total := r.merged()
		var res Result
		if r.step == nil {
			out := make([]float32, len(r.global))
			for i, s := range sum {
				out[i] = float32(float64(r.global[i]) + s/total)
			}
			if i := firstNonFinite(out); i >= 0 {
				return Result{}, fmt.Errorf("%s: finish: %w: new weight %d overflows float32", r.rule, ErrNotFinite, i)
			}
			res.Weights = out
		} else {
			var err error
			res, err = r.step.step(r.global, sum, total)
			if err != nil {
				return Result{}, fmt.Errorf("%s: finish: %w", r.rule, err)
			}
		}
		r.result = &res
		// The sums are no longer needed; let them go before the caller
		// drops the round.
		r.shards, r.free = nil, nil
		r.idle.Broadcast()
	}
	return r.result.clone(), nil
}
