package aggregator

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
)

// ruleCase is a strategy with the properties the tests expect of it.
type ruleCase struct {
	s Strategy
	// exact: the result is bit-for-bit independent of arrival order
	// (otherwise within float tolerance).
	exact bool
	// identity: n copies of one delta give global + that delta.
	identity bool
}

func allRules() []ruleCase {
	return []ruleCase{
		{FedAvg{}, false, true},
		{FedProx{Mu: 0.1}, false, true},
		{FedAvgM{ServerLR: 0.5, Momentum: 0.9}, false, false},
		{FedAdam{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}, false, false},
		{FedYogi{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}, false, false},
		{FedAdagrad{ServerLR: 0.1, Beta1: 0.9, Tau: 1e-3}, false, false},
		{Median{}, true, true},
		{TrimmedMean{Beta: 0.2}, true, true},
		{Krum{F: 1}, true, true},
		{MultiKrum{F: 1}, true, true},
		{MultiKrum{F: 2, M: 3}, true, true},
		{NormBound{Rule: FedAvg{}, Bound: 1e9}, false, true},
		{NormBound{Rule: Median{}, Bound: 0.5}, true, false},
		{NormBound{Rule: FedAdam{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}, Bound: 2}, false, false},
	}
}

func randUpdates(rng *rand.Rand, n, dim int) []update {
	ups := make([]update, n)
	for i := range ups {
		ups[i] = update{randVec(rng, dim), 1 + rng.Uint64N(10000)}
	}
	return ups
}

// twoRounds runs a round from (global, no state), then a second from its
// result, adding the updates in order; it returns the second result.
func twoRounds(t *testing.T, s Strategy, global []float32, first, second []update, order []int) Result {
	t.Helper()
	r := beginWith(t, s, global, nil)
	for _, u := range first {
		if err := r.Add(u.delta, u.samples); err != nil {
			t.Fatal(err)
		}
	}
	res := finishResult(t, r)
	r = beginWith(t, s, res.Weights, res.State)
	for k, i := range order {
		if err := addUpdate(r, second[i], k%2 == 1); err != nil {
			t.Fatal(err)
		}
	}
	return finishResult(t, r)
}

func sameResult(t *testing.T, got, want Result, exact bool) bool {
	t.Helper()
	tol := 0.0
	if !exact {
		tol = 1e-5
	}
	if !closeRel(got.Weights, want.Weights, tol) {
		return false
	}
	if (got.State == nil) != (want.State == nil) {
		return false
	}
	if got.State == nil {
		return true
	}
	if exact {
		return bytes.Equal(got.State, want.State)
	}
	a, err1 := DecodeState(got.State)
	b, err2 := DecodeState(want.State)
	if err1 != nil || err2 != nil || len(a.Vectors) != len(b.Vectors) {
		t.Fatalf("states: %v, %v", err1, err2)
	}
	for j := range a.Vectors {
		if !closeRel(a.Vectors[j], b.Vectors[j], tol) {
			return false
		}
	}
	return true
}

func closeRel(got, want []float32, tol float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > tol*(1+math.Abs(float64(want[i]))) {
			return false
		}
	}
	return true
}

func TestPermutationInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	const n, dim = 7, 37
	global := randVec(rng, dim)
	first := randUpdates(rng, n, dim)
	second := randUpdates(rng, n, dim)
	for _, rc := range allRules() {
		t.Run(rc.s.Name(), func(t *testing.T) {
			base := twoRounds(t, rc.s, global, first, second, rng.Perm(n))
			for range 6 {
				order := rng.Perm(n)
				if got := twoRounds(t, rc.s, global, first, second, order); !sameResult(t, got, base, rc.exact) {
					t.Fatalf("order %v: %v, want %v", order, got.Weights[:4], base.Weights[:4])
				}
			}
		})
	}
}

func TestIdenticalUpdatesGiveThatUpdate(t *testing.T) {
	rng := rand.New(rand.NewPCG(53, 54))
	for _, rc := range allRules() {
		if !rc.identity {
			continue
		}
		for _, dim := range []int{1, 9, 300} {
			for _, sites := range []int{5, 12} {
				global, delta := randVec(rng, dim), randVec(rng, dim)
				r := beginWith(t, rc.s, global, nil)
				for range max(sites, MinUpdates(rc.s)) {
					if err := r.Add(delta, 1+rng.Uint64N(5000)); err != nil {
						t.Fatal(err)
					}
				}
				got := finish(t, r)
				for i := range got {
					if want := float32(float64(global[i]) + float64(delta[i])); got[i] != want {
						t.Fatalf("%s dim %d sites %d: weight %d = %v, want %v", rc.s.Name(), dim, sites, i, got[i], want)
					}
				}
			}
		}
	}
}

func TestConcurrentAddsAllRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(55, 56))
	const n, dim = 16, 129
	global := randVec(rng, dim)
	ups := randUpdates(rng, n, dim)
	for _, rc := range allRules() {
		seq := beginWith(t, rc.s, global, nil)
		for _, u := range ups {
			if err := seq.Add(u.delta, u.samples); err != nil {
				t.Fatal(err)
			}
		}
		want := finishResult(t, seq)

		r := beginWith(t, rc.s, global, nil)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, u := range ups {
			wg.Go(func() {
				errs[i] = addUpdate(r, u, i%2 == 1)
				_ = r.Count()
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: update %d: %v", rc.s.Name(), i, err)
			}
		}
		var got [2]Result
		for k := range got {
			wg.Go(func() { got[k], errs[k] = r.Finish() })
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("%s: Finish: %v, %v", rc.s.Name(), errs[0], errs[1])
		}
		if !sameResult(t, got[0], want, rc.exact) || !sameResult(t, got[1], got[0], true) {
			t.Errorf("%s: concurrent result differs from sequential", rc.s.Name())
		}
	}
}

// TestRejectedUpdatesLeaveRoundUnchanged interleaves bad updates with good
// ones; the result must be bit-identical to the good ones alone.
func TestRejectedUpdatesLeaveRoundUnchanged(t *testing.T) {
	rng := rand.New(rand.NewPCG(57, 58))
	const n, dim = 9, 200 // one good update per bad one; large enough to split
	global := randVec(rng, dim)
	good := randUpdates(rng, n, dim)
	nanAt := func(i int) []float32 {
		d := randVec(rng, dim)
		d[i] = float32(math.NaN())
		return d
	}
	infAt := func(i int) []float32 {
		d := randVec(rng, dim)
		d[i] = float32(math.Inf(-1))
		return d
	}
	type bad struct {
		delta   []float32
		packed  []byte
		samples uint64
		want    error
	}
	bads := []bad{
		{delta: nanAt(0), samples: 1, want: ErrNotFinite},
		{delta: infAt(dim - 1), samples: 1, want: ErrNotFinite},
		{packed: protocol.EncodeF32(nanAt(17)), samples: 1, want: ErrNotFinite},
		{packed: protocol.EncodeF32(infAt(150)), samples: 1, want: ErrNotFinite},
		{delta: nanAt(130), samples: 1, want: ErrNotFinite},
		{delta: randVec(rng, dim), samples: 0, want: ErrNoSamples},
		{packed: protocol.EncodeF32(randVec(rng, dim)), samples: 0, want: ErrNoSamples},
		{delta: randVec(rng, dim+1), samples: 1, want: ErrShape},
		{packed: protocol.EncodeF32(randVec(rng, dim))[1:], samples: 1, want: ErrShape},
	}
	kernelPaths(t, func(t *testing.T) {
		for _, rc := range allRules() {
			clean := beginWith(t, rc.s, global, nil)
			dirty := beginWith(t, rc.s, global, nil)
			for i, u := range good {
				if err := clean.Add(u.delta, u.samples); err != nil {
					t.Fatal(err)
				}
				b := bads[i%len(bads)]
				var err error
				if b.packed != nil {
					err = dirty.AddPacked(b.packed, b.samples)
				} else {
					err = dirty.Add(b.delta, b.samples)
				}
				if !errors.Is(err, b.want) {
					t.Fatalf("%s: bad update %d: err = %v, want %v", rc.s.Name(), i, err, b.want)
				}
				if err := dirty.AddPacked(protocol.EncodeF32(u.delta), u.samples); err != nil {
					t.Fatal(err)
				}
			}
			if clean.Count() != n || dirty.Count() != n {
				t.Fatalf("%s: counts %d and %d, want %d", rc.s.Name(), clean.Count(), dirty.Count(), n)
			}
			if a, b := finishResult(t, clean), finishResult(t, dirty); !sameResult(t, b, a, true) {
				t.Errorf("%s: rejected updates changed the result", rc.s.Name())
			}
		}
	})
}

func TestLifecycleAllRules(t *testing.T) {
	for _, rc := range allRules() {
		s := rc.s
		if _, err := s.Begin(nil, nil); !errors.Is(err, ErrShape) {
			t.Errorf("%s: Begin(empty) = %v, want ErrShape", s.Name(), err)
		}
		if _, err := s.Begin([]float32{1, float32(math.NaN())}, nil); !errors.Is(err, ErrNotFinite) {
			t.Errorf("%s: Begin(NaN) = %v, want ErrNotFinite", s.Name(), err)
		}
		g := []float32{1, 2, 3}
		r := beginWith(t, s, g, nil)
		g[0] = 1000 // Begin copied global
		if _, err := r.Finish(); !errors.Is(err, ErrEmpty) {
			t.Errorf("%s: empty Finish = %v, want ErrEmpty", s.Name(), err)
		}
		for i := range MinUpdates(s) {
			if err := r.Add([]float32{float32(i), 0, 1}, 1); err != nil {
				t.Fatal(err)
			}
		}
		first := finishResult(t, r)
		if math.Abs(float64(first.Weights[0])) > 100 {
			t.Errorf("%s: weights %v; Begin did not copy global", s.Name(), first.Weights)
		}
		keep := first.clone()
		first.Weights[0] = 99
		if err := r.Add([]float32{1, 1, 1}, 1); !errors.Is(err, ErrFinished) {
			t.Errorf("%s: Add after Finish = %v, want ErrFinished", s.Name(), err)
		}
		if err := r.AddPacked(protocol.EncodeF32([]float32{1, 1, 1}), 1); !errors.Is(err, ErrFinished) {
			t.Errorf("%s: AddPacked after Finish = %v, want ErrFinished", s.Name(), err)
		}
		if r.Count() != MinUpdates(s) {
			t.Errorf("%s: Count after Finish = %d", s.Name(), r.Count())
		}
		if again := finishResult(t, r); !sameResult(t, again, keep, true) {
			t.Errorf("%s: second Finish %v, want %v", s.Name(), again, keep)
		}
	}
}

// TestFedAvgOneStepIsCentralizedGD checks the classic identity: when every
// site takes one full-batch gradient step from the global model, the
// sample-weighted FedAvg of their deltas is one step of gradient descent on
// the pooled data (for a mean loss).
func TestFedAvgOneStepIsCentralizedGD(t *testing.T) {
	rng := rand.New(rand.NewPCG(59, 60))
	const features, lr = 5, 0.3
	w := randVec(rng, features+1) // weights and bias of a logistic regression
	type example struct {
		x []float64
		y float64
	}
	var sites [][]example
	for _, n := range []int{3, 17, 40} {
		var ex []example
		for range n {
			x := make([]float64, features)
			for i := range x {
				x[i] = rng.NormFloat64() + float64(len(sites))
			}
			ex = append(ex, example{x, float64(rng.IntN(2))})
		}
		sites = append(sites, ex)
	}
	// grad is the gradient of the mean log-loss over ex at w.
	grad := func(ex []example) []float64 {
		g := make([]float64, features+1)
		for _, e := range ex {
			z := float64(w[features])
			for i, x := range e.x {
				z += float64(w[i]) * x
			}
			r := 1/(1+math.Exp(-z)) - e.y
			for i, x := range e.x {
				g[i] += r * x / float64(len(ex))
			}
			g[features] += r / float64(len(ex))
		}
		return g
	}
	r := begin(t, w)
	var pooled []example
	for _, ex := range sites {
		g := grad(ex)
		delta := make([]float32, len(g))
		for i := range g {
			delta[i] = float32(-lr * g[i])
		}
		if err := r.Add(delta, uint64(len(ex))); err != nil {
			t.Fatal(err)
		}
		pooled = append(pooled, ex...)
	}
	got := finish(t, r)
	g := grad(pooled)
	for i := range got {
		want := float64(w[i]) - lr*g[i]
		if math.Abs(float64(got[i])-want) > 1e-6 {
			t.Errorf("weight %d: FedAvg %v, centralized GD %v", i, got[i], want)
		}
	}
}
