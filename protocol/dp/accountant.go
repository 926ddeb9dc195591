package dp

import (
	"encoding/json"
	"fmt"
	"slices"
)

const (
	// MaxLedgerEntries bounds the distinct (noise multiplier, sample rate)
	// pairs an accountant records.
	MaxLedgerEntries = 1 << 14
	// MaxNoiseMultiplier is the largest multiplier NoiseMultiplierFor
	// tries before giving up with ErrBudgetTooSmall (Opacus's MAX_SIGMA).
	MaxNoiseMultiplier = 1e6
	// stateVersion is the version of the JSON state.
	stateVersion = 1
)

// LedgerEntry is steps applications of the Poisson-subsampled Gaussian
// mechanism with one noise multiplier and sample rate.
type LedgerEntry struct {
	// NoiseMultiplier is z: noise stddev over the L2 sensitivity (the clip).
	NoiseMultiplier float64 `json:"noise_multiplier"`
	// SampleRate is q: the probability that a given site takes part in a
	// step (sites sampled / sites).
	SampleRate float64 `json:"sample_rate"`
	// Steps is how many times the mechanism ran (≥ 1).
	Steps int64 `json:"steps"`
}

// Accountant is a Rényi DP accountant for the Poisson-subsampled Gaussian
// mechanism. It keeps a ledger of (noise multiplier, sample rate, steps),
// composes it by adding RDP at each order, and converts to (ε, δ).
//
// The zero value is ready to use with DefaultOrders. An Accountant is
// JSON-serializable (the coordinator stores it in Raft) and not safe for
// concurrent use. Each distinct (noise multiplier, sample rate) pair costs
// about a millisecond to evaluate over the default orders, when first
// recorded and when decoded; a job that keeps its multiplier and sample
// rate fixed has a one-entry ledger. Epsilon and the other queries are computed from the
// ledger in ledger order, so two replicas holding the same ledger compute
// the same floating-point result on the same platform.
type Accountant struct {
	orders []float64 // nil until first use; DefaultOrders unless custom
	custom bool      // orders were given explicitly (and are serialized)
	ledger []LedgerEntry
	unit   [][]float64 // unit[i]: one-step RDP of ledger[i] at each order
}

// NewAccountant returns an accountant over the given Rényi orders (finite,
// in (1, MaxOrder], strictly increasing); nil means DefaultOrders.
func NewAccountant(orders []float64) (*Accountant, error) {
	if orders == nil {
		return &Accountant{}, nil
	}
	if err := validateOrders(orders); err != nil {
		return nil, err
	}
	return &Accountant{orders: slices.Clone(orders), custom: true}, nil
}

func (a *Accountant) ords() []float64 {
	if a.orders == nil {
		a.orders = DefaultOrders()
	}
	return a.orders
}

// Orders returns a copy of the orders the accountant optimizes over.
func (a *Accountant) Orders() []float64 { return slices.Clone(a.ords()) }

// Ledger returns a copy of the recorded steps, in the order first seen.
func (a *Accountant) Ledger() []LedgerEntry { return slices.Clone(a.ledger) }

// Step records steps applications of the Gaussian mechanism with the given
// noise multiplier at the given sample rate. Steps with different
// parameters compose (heterogeneous steps); repeated parameters merge into
// one ledger entry. steps == 0 records nothing. On error nothing is
// recorded.
func (a *Accountant) Step(noiseMultiplier, sampleRate float64, steps int) error {
	if err := checkMechanism(noiseMultiplier, sampleRate, steps); err != nil {
		return err
	}
	if steps == 0 {
		return nil
	}
	for i := range a.ledger {
		e := &a.ledger[i]
		if e.NoiseMultiplier == noiseMultiplier && e.SampleRate == sampleRate {
			if MaxSteps-e.Steps < int64(steps) {
				return invalidf("ledger entry (z=%v, q=%v) would exceed %d steps", noiseMultiplier, sampleRate, MaxSteps)
			}
			e.Steps += int64(steps)
			return nil
		}
	}
	if len(a.ledger) >= MaxLedgerEntries {
		return invalidf("ledger holds the maximum of %d distinct (noise multiplier, sample rate) pairs", MaxLedgerEntries)
	}
	a.ledger = append(a.ledger, LedgerEntry{NoiseMultiplier: noiseMultiplier, SampleRate: sampleRate, Steps: int64(steps)})
	a.unit = append(a.unit, unitRDP(noiseMultiplier, sampleRate, a.ords()))
	return nil
}

func checkMechanism(noiseMultiplier, sampleRate float64, steps int) error {
	if err := checkNoiseMultiplier(noiseMultiplier); err != nil {
		return err
	}
	if err := checkSampleRate(sampleRate); err != nil {
		return err
	}
	return checkSteps(steps)
}

// RDP returns the composed RDP of the ledger at each of Orders.
func (a *Accountant) RDP() []float64 { return a.total(0, 0, 0) }

// total sums the ledger's RDP in ledger order. If extraSteps > 0 it first
// records extraSteps steps at (z, q) on a scratch copy of the step counts,
// exactly as Step would (merged into a matching entry, else appended), so
// that a projection and the ledger after the projected steps are computed
// with the same arithmetic and agree bit for bit.
func (a *Accountant) total(z, q float64, extraSteps int) []float64 {
	tot := make([]float64, len(a.ords()))
	merged := false
	for i, e := range a.ledger {
		steps := e.Steps
		if extraSteps > 0 && e.NoiseMultiplier == z && e.SampleRate == q {
			steps += int64(extraSteps)
			merged = true
		}
		for k, r := range a.unit[i] {
			tot[k] += float64(steps) * r
		}
	}
	if extraSteps > 0 && !merged {
		for k, r := range unitRDP(z, q, a.ords()) {
			tot[k] += float64(extraSteps) * r
		}
	}
	return tot
}

// Epsilon returns the ε spent so far at delta and the Rényi order that
// achieves it, using ConversionImproved (Balle et al. 2020), the conversion
// Opacus and TF Privacy report. With nothing recorded it returns (0, 0).
// ε is +Inf when no order gives a finite bound.
func (a *Accountant) Epsilon(delta float64) (eps, bestOrder float64, err error) {
	return a.EpsilonWith(delta, ConversionImproved)
}

// EpsilonWith is Epsilon with an explicit RDP-to-DP conversion.
func (a *Accountant) EpsilonWith(delta float64, conv Conversion) (eps, bestOrder float64, err error) {
	if err := checkDelta(delta); err != nil {
		return 0, 0, err
	}
	if conv != ConversionImproved && conv != ConversionClassic {
		return 0, 0, invalidf("unknown conversion %v", conv)
	}
	if len(a.ledger) == 0 {
		return 0, 0, nil
	}
	eps, bestOrder = epsilonFromRDP(a.ords(), a.total(0, 0, 0), delta, conv)
	return eps, bestOrder, nil
}

// ProjectedEpsilon returns the ε at delta (ConversionImproved) that the
// ledger would reach after steps more steps with the given noise
// multiplier and sample rate, without recording them.
func (a *Accountant) ProjectedEpsilon(delta, noiseMultiplier, sampleRate float64, steps int) (eps, bestOrder float64, err error) {
	if err := checkDelta(delta); err != nil {
		return 0, 0, err
	}
	if err := checkMechanism(noiseMultiplier, sampleRate, steps); err != nil {
		return 0, 0, err
	}
	eps, bestOrder = a.projected(delta, noiseMultiplier, sampleRate, steps)
	return eps, bestOrder, nil
}

func (a *Accountant) projected(delta, noiseMultiplier, sampleRate float64, steps int) (float64, float64) {
	if len(a.ledger) == 0 && steps == 0 {
		return 0, 0
	}
	return epsilonFromRDP(a.ords(), a.total(noiseMultiplier, sampleRate, steps), delta, ConversionImproved)
}

// WouldExceed reports whether steps more steps with the given noise
// multiplier and sample rate would take the ε at delta above budgetEps, and
// the projected ε. The coordinator calls it before opening a round and
// refuses the round when it returns true. Reaching the budget exactly is
// not exceeding it.
func (a *Accountant) WouldExceed(budgetEps, delta, noiseMultiplier, sampleRate float64, steps int) (exceeds bool, projected float64, err error) {
	if err := checkEpsilon(budgetEps); err != nil {
		return false, 0, err
	}
	eps, _, err := a.ProjectedEpsilon(delta, noiseMultiplier, sampleRate, steps)
	if err != nil {
		return false, 0, err
	}
	return eps > budgetEps, eps, nil
}

// NoiseMultiplierFor returns the smallest noise multiplier z (to a relative
// precision of 1e-6, rounded up) such that steps more steps at sampleRate
// keep the ε at delta, including what the ledger has already spent, within
// targetEps. The coordinator uses it to plan the rest of a job under its
// budget. It fails with ErrBudgetTooSmall when even MaxNoiseMultiplier
// does not suffice: when the budget is already spent, or when targetEps is
// below what the accountant's largest order can certify (see
// DefaultOrders).
func (a *Accountant) NoiseMultiplierFor(targetEps, delta, sampleRate float64, steps int) (float64, error) {
	if err := checkEpsilon(targetEps); err != nil {
		return 0, err
	}
	if err := checkDelta(delta); err != nil {
		return 0, err
	}
	if err := checkSampleRate(sampleRate); err != nil {
		return 0, err
	}
	if err := checkSteps(steps); err != nil {
		return 0, err
	}
	if steps < 1 {
		return 0, invalidf("planning needs steps >= 1, got %d", steps)
	}
	ok := func(z float64) bool {
		eps, _ := a.projected(delta, z, sampleRate, steps)
		return eps <= targetEps
	}
	lo, hi := 0.0, 1.0
	for !ok(hi) {
		lo, hi = hi, 2*hi
		if hi > MaxNoiseMultiplier {
			spent, _, _ := a.Epsilon(delta)
			return 0, fmt.Errorf("%w: epsilon %v at delta %v over %d steps at sample rate %v needs a noise multiplier above %v (already spent: %v)",
				ErrBudgetTooSmall, targetEps, delta, steps, sampleRate, MaxNoiseMultiplier, spent)
		}
	}
	// Invariant: ok(hi), and lo == 0 or !ok(lo).
	for hi-lo > 1e-6*hi {
		mid := lo + (hi-lo)/2
		if ok(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}

// NoiseMultiplierFor returns the smallest noise multiplier such that steps
// steps of the Poisson-subsampled Gaussian mechanism at sampleRate satisfy
// (targetEps, delta)-DP (ConversionImproved, DefaultOrders). See
// Accountant.NoiseMultiplierFor.
func NoiseMultiplierFor(targetEps, delta, sampleRate float64, steps int) (float64, error) {
	var a Accountant
	return a.NoiseMultiplierFor(targetEps, delta, sampleRate, steps)
}

// accountantJSON is the serialized state. Orders are omitted when they are
// the defaults.
type accountantJSON struct {
	Version int           `json:"version"`
	Orders  []float64     `json:"orders,omitempty"`
	Ledger  []LedgerEntry `json:"ledger"`
}

// MarshalJSON encodes the accountant's orders (when not the defaults) and
// ledger.
//
// It has a value receiver so that an Accountant held by value in a struct
// encodes correctly even when that struct is not addressable.
func (a Accountant) MarshalJSON() ([]byte, error) {
	s := accountantJSON{Version: stateVersion, Ledger: a.ledger}
	if a.custom {
		s.Orders = a.orders
	}
	if s.Ledger == nil {
		s.Ledger = []LedgerEntry{}
	}
	return json.Marshal(s)
}

// UnmarshalJSON decodes state written by MarshalJSON. Every field is
// validated: an unknown version or field, invalid orders, an entry with an
// invalid noise multiplier, sample rate or step count (< 1), a repeated
// (noise multiplier, sample rate) pair or more than MaxLedgerEntries
// entries is refused with ErrInvalidState, leaving a unchanged.
func (a *Accountant) UnmarshalJSON(b []byte) error {
	var s accountantJSON
	if err := decodeStrict(b, &s); err != nil {
		return err
	}
	if s.Version != stateVersion {
		return fmt.Errorf("%w: unknown version %d", ErrInvalidState, s.Version)
	}
	n := Accountant{}
	if s.Orders != nil {
		if err := validateOrders(s.Orders); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidState, err)
		}
		n.orders, n.custom = s.Orders, true
	}
	if len(s.Ledger) > MaxLedgerEntries {
		return fmt.Errorf("%w: %d ledger entries, at most %d", ErrInvalidState, len(s.Ledger), MaxLedgerEntries)
	}
	type key struct{ z, q float64 }
	seen := make(map[key]bool, len(s.Ledger))
	for i, e := range s.Ledger {
		if err := checkNoiseMultiplier(e.NoiseMultiplier); err != nil {
			return fmt.Errorf("%w: ledger entry %d: %w", ErrInvalidState, i, err)
		}
		if err := checkSampleRate(e.SampleRate); err != nil {
			return fmt.Errorf("%w: ledger entry %d: %w", ErrInvalidState, i, err)
		}
		if e.Steps < 1 || e.Steps > MaxSteps {
			return fmt.Errorf("%w: ledger entry %d: steps %d must be in [1, %d]", ErrInvalidState, i, e.Steps, MaxSteps)
		}
		k := key{e.NoiseMultiplier, e.SampleRate}
		if seen[k] {
			return fmt.Errorf("%w: ledger entry %d repeats noise multiplier %v and sample rate %v", ErrInvalidState, i, k.z, k.q)
		}
		seen[k] = true
	}
	if len(s.Ledger) > 0 {
		n.ledger = s.Ledger
		n.unit = make([][]float64, len(s.Ledger))
		for i, e := range s.Ledger {
			n.unit[i] = unitRDP(e.NoiseMultiplier, e.SampleRate, n.ords())
		}
	}
	*a = n
	return nil
}

// compile-time checks.
var (
	_ json.Marshaler   = Accountant{}
	_ json.Unmarshaler = (*Accountant)(nil)
	_ json.Marshaler   = AdaptiveClipper{}
	_ json.Unmarshaler = (*AdaptiveClipper)(nil)
)
