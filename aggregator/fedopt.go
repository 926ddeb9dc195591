package aggregator

import (
	"fmt"
	"math"
)

// Server-side optimizers. Each treats the round's sample-weighted mean
// delta Δ (what FedAvg would add to the model) as a pseudo-gradient and
// takes an optimizer step with it. What they carry between rounds is
// returned in Result.State, encoded as described in DecodeState: one or two
// float32 vectors of the model's length. Within a round the arithmetic is
// float64; the state is rounded to float32 when it is encoded, so the
// rounds after it depend only on the bytes.

// FedAvgM is FedAvg with server momentum (Hsu et al., 2019,
// "Measuring the effects of non-identical data distribution"):
//
//	m ← Momentum·m + Δ
//	x ← x + ServerLR·m
//
// State: one vector, m (zero before the first round).
type FedAvgM struct {
	// ServerLR is the server learning rate η, > 0.
	ServerLR float64
	// Momentum is β, 0 <= β < 1.
	Momentum float64
}

var _ Strategy = FedAvgM{}

// Name returns "fedavgm".
func (FedAvgM) Name() string { return "fedavgm" }

func (s FedAvgM) validate() error {
	return joinErrs(
		checkParam("fedavgm", "server_lr", s.ServerLR, 0, math.Inf(1), false, false),
		checkParam("fedavgm", "momentum", s.Momentum, 0, 1, true, false),
	)
}

// Begin starts a round; state is the previous round's Result.State or nil.
func (s FedAvgM) Begin(global []float32, state []byte) (Round, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if err := checkGlobal(s.Name(), global); err != nil {
		return nil, err
	}
	vs, err := decodeStateFor(s.Name(), state, 1, len(global))
	if err != nil {
		return nil, err
	}
	st := &momentumStep{rule: s.Name(), lr: s.ServerLR, beta: s.Momentum}
	if vs != nil {
		st.m = vs[0]
	}
	return beginMean(s.Name(), global, nil, st)
}

type momentumStep struct {
	rule     string
	lr, beta float64
	m        []float32 // nil: zeros
}

func (st *momentumStep) step(global []float32, sum []float64, total float64) (Result, error) {
	w := make([]float32, len(global))
	m := make([]float32, len(global))
	for i, g := range global {
		mi := sum[i] / total
		if st.m != nil {
			mi += float64(st.beta * float64(st.m[i]))
		}
		w[i] = float32(float64(g) + float64(st.lr*mi))
		m[i] = float32(mi)
	}
	return encodeResult(st.rule, w, m)
}

// encodeResult checks the new weights and encodes the state vectors.
func encodeResult(rule string, w []float32, vecs ...[]float32) (Result, error) {
	if i := firstNonFinite(w); i >= 0 {
		return Result{}, fmt.Errorf("%w: new weight %d overflows float32", ErrNotFinite, i)
	}
	state, err := State{Rule: rule, Vectors: vecs}.Encode()
	if err != nil {
		return Result{}, fmt.Errorf("optimizer state overflows float32: %w", err)
	}
	return Result{Weights: w, State: state}, nil
}

// The adaptive rules of Reddi et al., "Adaptive Federated Optimization"
// (ICLR 2021), Algorithm 2, with Δ the sample-weighted mean delta:
//
//	m ← β₁·m + (1−β₁)·Δ
//	v ← v + Δ²                          FedAdagrad
//	v ← β₂·v + (1−β₂)·Δ²                FedAdam
//	v ← v − (1−β₂)·Δ²·sign(v − Δ²)      FedYogi
//	x ← x + η·m / (√v + τ)
//
// all per coordinate, starting from m = 0 and v = τ² as in the paper's
// experiments. As in the paper there is no bias correction. State: two
// vectors, m then v.
//
// Defaults (New): η = 0.01, β₁ = 0.9, β₂ = 0.99, τ = 0.001. The paper fixes
// β₁ = 0.9 and β₂ = 0.99, finds τ = 10⁻³ a good default, and tunes η per
// task on a grid; 10⁻² is a middle of that grid, so tune ServerLR for a
// new task.

// FedAdam is the server-side Adam rule of Reddi et al. (see above).
type FedAdam struct {
	// ServerLR is η, > 0.
	ServerLR float64
	// Beta1 is the momentum decay β₁, 0 <= β₁ < 1.
	Beta1 float64
	// Beta2 is the second-moment decay β₂, 0 <= β₂ < 1.
	Beta2 float64
	// Tau is the adaptivity τ, > 0: it bounds the step where v is small
	// and sets the initial v = τ².
	Tau float64
}

// FedYogi is the server-side Yogi rule of Reddi et al. (see FedAdam); its
// fields have the same meaning and bounds.
type FedYogi struct {
	ServerLR, Beta1, Beta2, Tau float64
}

// FedAdagrad is the server-side Adagrad rule of Reddi et al. (see FedAdam);
// it has no β₂.
type FedAdagrad struct {
	ServerLR, Beta1, Tau float64
}

var (
	_ Strategy = FedAdam{}
	_ Strategy = FedYogi{}
	_ Strategy = FedAdagrad{}
)

type adaptiveKind int

const (
	kindAdagrad adaptiveKind = iota
	kindAdam
	kindYogi
)

// Name returns "fedadam".
func (FedAdam) Name() string { return "fedadam" }

// Name returns "fedyogi".
func (FedYogi) Name() string { return "fedyogi" }

// Name returns "fedadagrad".
func (FedAdagrad) Name() string { return "fedadagrad" }

func (s FedAdam) step() *adaptiveStep {
	return &adaptiveStep{rule: s.Name(), kind: kindAdam, lr: s.ServerLR, b1: s.Beta1, b2: s.Beta2, tau: s.Tau}
}

func (s FedYogi) step() *adaptiveStep {
	return &adaptiveStep{rule: s.Name(), kind: kindYogi, lr: s.ServerLR, b1: s.Beta1, b2: s.Beta2, tau: s.Tau}
}

func (s FedAdagrad) step() *adaptiveStep {
	return &adaptiveStep{rule: s.Name(), kind: kindAdagrad, lr: s.ServerLR, b1: s.Beta1, tau: s.Tau}
}

func (s FedAdam) validate() error    { return s.step().validate() }
func (s FedYogi) validate() error    { return s.step().validate() }
func (s FedAdagrad) validate() error { return s.step().validate() }

// Begin starts a round; state is the previous round's Result.State or nil.
func (s FedAdam) Begin(global []float32, state []byte) (Round, error) {
	return s.step().begin(global, state)
}

// Begin starts a round; state is the previous round's Result.State or nil.
func (s FedYogi) Begin(global []float32, state []byte) (Round, error) {
	return s.step().begin(global, state)
}

// Begin starts a round; state is the previous round's Result.State or nil.
func (s FedAdagrad) Begin(global []float32, state []byte) (Round, error) {
	return s.step().begin(global, state)
}

type adaptiveStep struct {
	rule            string
	kind            adaptiveKind
	lr, b1, b2, tau float64
	m, v            []float32 // nil before the first round
}

func (st *adaptiveStep) validate() error {
	errs := []error{
		checkParam(st.rule, "server_lr", st.lr, 0, math.Inf(1), false, false),
		checkParam(st.rule, "beta1", st.b1, 0, 1, true, false),
		checkParam(st.rule, "tau", st.tau, 0, math.Inf(1), false, false),
	}
	if st.kind != kindAdagrad {
		errs = append(errs, checkParam(st.rule, "beta2", st.b2, 0, 1, true, false))
	}
	return joinErrs(errs...)
}

func (st *adaptiveStep) begin(global []float32, state []byte) (Round, error) {
	if err := st.validate(); err != nil {
		return nil, err
	}
	if err := checkGlobal(st.rule, global); err != nil {
		return nil, err
	}
	vs, err := decodeStateFor(st.rule, state, 2, len(global))
	if err != nil {
		return nil, err
	}
	if vs != nil {
		for i, v := range vs[1] {
			if v < 0 {
				return nil, fmt.Errorf("%s: begin: %w: second moment v[%d] = %v is negative", st.rule, ErrState, i, v)
			}
		}
		st.m, st.v = vs[0], vs[1]
	}
	return beginMean(st.rule, global, nil, st)
}

func (st *adaptiveStep) step(global []float32, sum []float64, total float64) (Result, error) {
	n := len(global)
	w := make([]float32, n)
	m := make([]float32, n)
	v := make([]float32, n)
	v0 := st.tau * st.tau
	for i, g := range global {
		d := sum[i] / total
		var mPrev, vPrev float64
		if st.m != nil {
			mPrev, vPrev = float64(st.m[i]), float64(st.v[i])
		} else {
			vPrev = v0
		}
		mi := float64(st.b1*mPrev) + float64((1-st.b1)*d)
		d2 := float64(d * d)
		var vi float64
		switch st.kind {
		case kindAdagrad:
			vi = vPrev + d2
		case kindAdam:
			vi = float64(st.b2*vPrev) + float64((1-st.b2)*d2)
		case kindYogi:
			switch {
			case vPrev > d2:
				vi = vPrev - float64((1-st.b2)*d2)
			case vPrev < d2:
				vi = vPrev + float64((1-st.b2)*d2)
			default:
				vi = vPrev
			}
		}
		w[i] = float32(float64(g) + st.lr*mi/(math.Sqrt(vi)+st.tau))
		m[i] = float32(mi)
		v[i] = float32(vi)
	}
	return encodeResult(st.rule, w, m, v)
}
