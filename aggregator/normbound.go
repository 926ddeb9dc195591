package aggregator

import (
	"fmt"
	"math"
	"sync"
)

// NormBound adds server-side norm bounding to any rule (Sun et al., 2019,
// "Can you really backdoor federated learning?"): each delta whose L2 norm
// exceeds Bound is scaled down to norm Bound (clipped, keeping its
// direction and its sample count) before Rule sees it; smaller deltas pass
// unchanged. A delta is never rejected for its norm, only for the reasons
// Rule rejects it.
//
// The scale factor is Bound/‖Δ‖ shrunk by a relative 2⁻²², so that the
// clipped delta's norm is at most Bound despite rounding to float32.
// Name and state are Rule's.
type NormBound struct {
	// Rule is the wrapped rule.
	Rule Strategy
	// Bound is the largest L2 norm a delta keeps, > 0.
	Bound float64
}

var _ Strategy = NormBound{}

// Name returns Rule's name.
func (s NormBound) Name() string {
	if s.Rule == nil {
		return ""
	}
	return s.Rule.Name()
}

func (s NormBound) validate() error {
	if s.Rule == nil {
		return fmt.Errorf("norm bound: %w: no rule to wrap", ErrParams)
	}
	if !(s.Bound > 0) || math.IsInf(s.Bound, 0) {
		return fmt.Errorf("%s: %w: norm_bound = %v, want 0 < norm_bound < +Inf", s.Rule.Name(), ErrParams, s.Bound)
	}
	return nil
}

// Begin starts a round of Rule whose updates are clipped.
func (s NormBound) Begin(global []float32, state []byte) (Round, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	inner, err := s.Rule.Begin(global, state)
	if err != nil {
		return nil, err
	}
	return &clipRound{inner: inner, rule: s.Rule.Name(), bound: s.Bound, dim: len(global)}, nil
}

// clipRound clips each update and passes it on; the inner round does the
// locking.
type clipRound struct {
	inner Round
	rule  string
	bound float64
	dim   int
	pool  sync.Pool // *[]float32 of length dim, for clipped copies
}

// AddPacked implements Round.
func (r *clipRound) AddPacked(delta []byte, samples uint64) error {
	if len(delta) != 4*r.dim {
		return fmt.Errorf("%s: add: %w: got %d bytes, want %d (%d float32)", r.rule, ErrShape, len(delta), 4*r.dim, r.dim)
	}
	x, ok := f32view(delta)
	if !ok {
		x = decodeF32(make([]float32, r.dim), delta)
	}
	scale, err := r.scale(x)
	if err != nil {
		return err
	}
	if scale == 1 {
		return r.inner.AddPacked(delta, samples)
	}
	return r.addScaled(x, scale, samples)
}

// Add implements Round.
func (r *clipRound) Add(delta []float32, samples uint64) error {
	if len(delta) != r.dim {
		return fmt.Errorf("%s: add: %w: got %d values, want %d", r.rule, ErrShape, len(delta), r.dim)
	}
	scale, err := r.scale(delta)
	if err != nil {
		return err
	}
	if scale == 1 {
		return r.inner.Add(delta, samples)
	}
	return r.addScaled(delta, scale, samples)
}

// scale returns the factor x must be multiplied by: 1 when its norm is
// within the bound.
func (r *clipRound) scale(x []float32) (float64, error) {
	norm := math.Sqrt(sumSquares(x))
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return 0, fmt.Errorf("%s: add: %w: delta element %d", r.rule, ErrNotFinite, firstNonFinite(x))
	}
	if norm <= r.bound {
		return 1, nil
	}
	return r.bound / norm * (1 - 0x1p-22), nil
}

func (r *clipRound) addScaled(x []float32, scale float64, samples uint64) error {
	p, _ := r.pool.Get().(*[]float32)
	if p == nil {
		b := make([]float32, r.dim)
		p = &b
	}
	y := *p
	for i, v := range x {
		y[i] = float32(float64(v) * scale)
	}
	err := r.inner.Add(y, samples)
	r.pool.Put(p)
	return err
}

// Count implements Round.
func (r *clipRound) Count() int { return r.inner.Count() }

// Finish implements Round.
func (r *clipRound) Finish() (Result, error) { return r.inner.Finish() }

// sumSquares is Σ x², in float64 (no float32 squared overflows it); NaN or
// +Inf when x holds a non-finite value.
func sumSquares(x []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i <= len(x)-4; i += 4 {
		p := x[i : i+4 : i+4]
		a, b, c, d := float64(p[0]), float64(p[1]), float64(p[2]), float64(p[3])
		s0 += float64(a * a)
		s1 += float64(b * b)
		s2 += float64(c * c)
		s3 += float64(d * d)
	}
	for ; i < len(x); i++ {
		a := float64(x[i])
		s0 += float64(a * a)
	}
	return (s0 + s1) + (s2 + s3)
}

// unwrap returns the rule inside any NormBound wrappers.
func unwrap(s Strategy) Strategy {
	for {
		switch nb := s.(type) {
		case NormBound:
			s = nb.Rule
		case *NormBound:
			if nb == nil {
				return nil
			}
			s = nb.Rule
		default:
			return s
		}
	}
}
