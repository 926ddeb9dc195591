package aggregator

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// round is one round of a multi-round hand computation: the updates, and
// the weights and state vectors expected after it.
type round struct {
	updates []update
	want    []float32
	state   [][]float32
}

// runRounds chains rounds of s through Begin/Finish, feeding each round's
// state to the next, from global; tol is the absolute tolerance on weights
// and state (0: bit-exact).
func runRounds(t *testing.T, s Strategy, global []float32, rounds []round, tol float64) {
	t.Helper()
	var state []byte
	for k, rd := range rounds {
		r := beginWith(t, s, global, state)
		for _, u := range rd.updates {
			if err := r.Add(u.delta, u.samples); err != nil {
				t.Fatalf("round %d: Add: %v", k+1, err)
			}
		}
		res := finishResult(t, r)
		if !closeTo(res.Weights, rd.want, tol) {
			t.Errorf("round %d: weights %v, want %v", k+1, res.Weights, rd.want)
		}
		st, err := DecodeState(res.State)
		if err != nil {
			t.Fatalf("round %d: state: %v", k+1, err)
		}
		if st.Rule != s.Name() || len(st.Vectors) != len(rd.state) {
			t.Fatalf("round %d: state of rule %q with %d vectors", k+1, st.Rule, len(st.Vectors))
		}
		for j := range rd.state {
			if !closeTo(st.Vectors[j], rd.state[j], tol) {
				t.Errorf("round %d: state vector %d = %v, want %v", k+1, j, st.Vectors[j], rd.state[j])
			}
		}
		global, state = res.Weights, res.State
	}
}

func closeTo(got, want []float32, tol float64) bool {
	if tol == 0 {
		return equalBits(got, want)
	}
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if math.Abs(float64(got[i])-float64(want[i])) > tol {
			return false
		}
	}
	return true
}

func TestFedAvgMHandComputed(t *testing.T) {
	// η = 2, β = 0.5.
	// Round 1: Δ = ([1,0]·1 + [3,4]·3)/4 = [2.5, 3]; m = [2.5, 3];
	//          x = [1,2] + 2·m = [6, 8].
	// Round 2: Δ = [-1, 1]; m = 0.5·[2.5, 3] + Δ = [0.25, 2.5];
	//          x = [6,8] + 2·m = [6.5, 13].
	runRounds(t, FedAvgM{ServerLR: 2, Momentum: 0.5}, []float32{1, 2}, []round{
		{[]update{{[]float32{1, 0}, 1}, {[]float32{3, 4}, 3}}, []float32{6, 8}, [][]float32{{2.5, 3}}},
		{[]update{{[]float32{-1, 1}, 5}}, []float32{6.5, 13}, [][]float32{{0.25, 2.5}}},
	}, 0)
}

// TestFedAdamTwoRoundsByHand checks that two rounds chained through the
// encoded state equal one continuous run of Algorithm 2, worked out by
// hand with numbers that keep every step exact in binary.
func TestFedAdamTwoRoundsByHand(t *testing.T) {
	// η = 3, β₁ = 0.5, β₂ = 0.5, τ = 1: m₀ = 0, v₀ = τ² = 1, x₀ = [0, 1].
	// Round 1: Δ = ([2,-7]·1 + [0.5,-7]·2)/3 = [1, -7]
	//   m = 0.5·0 + 0.5·Δ          = [0.5, -3.5]
	//   v = 0.5·1 + 0.5·Δ²         = [1, 25]
	//   x = x₀ + 3·m/(√v + 1)      = [0 + 1.5/2, 1 - 10.5/6] = [0.75, -0.75]
	// Round 2: Δ = ([10,5]·1 + [6,5]·3)/4 = [7, 5]
	//   m = 0.5·[0.5,-3.5] + 0.5·[7,5] = [3.75, 0.75]
	//   v = 0.5·[1,25] + 0.5·[49,25]   = [25, 25]
	//   x = [0.75,-0.75] + 3·m/(5+1)   = [2.625, -0.375]
	runRounds(t, FedAdam{ServerLR: 3, Beta1: 0.5, Beta2: 0.5, Tau: 1}, []float32{0, 1}, []round{
		{[]update{{[]float32{2, -7}, 1}, {[]float32{0.5, -7}, 2}}, []float32{0.75, -0.75}, [][]float32{{0.5, -3.5}, {1, 25}}},
		{[]update{{[]float32{10, 5}, 1}, {[]float32{6, 5}, 3}}, []float32{2.625, -0.375}, [][]float32{{3.75, 0.75}, {25, 25}}},
	}, 0)
}

func TestFedYogiHandComputed(t *testing.T) {
	// η = 1, β₁ = 0.5, β₂ = 0.5, τ = 1: v₀ = 1, x₀ = [0, 0].
	// Round 1: Δ = [4, 1]. m = [2, 0.5].
	//   v: 1 < 16 → 1 + 0.5·16 = 9;  1 = 1 → sign 0 → 1.   v = [9, 1]
	//   x = m/(√v + 1) = [2/4, 0.5/2] = [0.5, 0.25]
	// Round 2: Δ = [12, 4]. m = 0.5·[2,0.5] + 0.5·[12,4] = [7, 2.25]
	//   v: 9 < 144 → 9 + 72 = 81;  1 < 16 → 1 + 8 = 9.     v = [81, 9]
	//   x = [0.5, 0.25] + [7/10, 2.25/4] = [1.2, 0.8125]
	// Round 3: Δ = [2, 0]. m = 0.5·[7,2.25] + 0.5·[2,0] = [4.5, 1.125]
	//   v: 81 > 4 → 81 - 0.5·4 = 79;  9 > 0 → 9 - 0 = 9.   v = [79, 9]
	//   x = [1.2 + 4.5/(√79+1), 0.8125 + 1.125/4]
	x3 := float32(1.2 + 4.5/(math.Sqrt(79)+1))
	runRounds(t, FedYogi{ServerLR: 1, Beta1: 0.5, Beta2: 0.5, Tau: 1}, []float32{0, 0}, []round{
		{[]update{{[]float32{4, 1}, 7}}, []float32{0.5, 0.25}, [][]float32{{2, 0.5}, {9, 1}}},
		{[]update{{[]float32{12, 4}, 7}}, []float32{1.2, 0.8125}, [][]float32{{7, 2.25}, {81, 9}}},
		{[]update{{[]float32{2, 0}, 7}}, []float32{x3, 1.09375}, [][]float32{{4.5, 1.125}, {79, 9}}},
	}, 1e-6)
}

func TestFedAdagradHandComputed(t *testing.T) {
	// η = 2, β₁ = 0.5, τ = 3: v₀ = 9, x₀ = [1, 1].
	// Round 1: Δ = [4, 0]. m = [2, 0]. v = 9 + Δ² = [25, 9].
	//   x = [1 + 2·2/(5+3), 1] = [1.5, 1]
	// Round 2: Δ = [12, 4]. m = [7, 2]. v = [25+144, 9+16] = [169, 25].
	//   x = [1.5 + 2·7/16, 1 + 2·2/8] = [2.375, 1.5]
	runRounds(t, FedAdagrad{ServerLR: 2, Beta1: 0.5, Tau: 3}, []float32{1, 1}, []round{
		{[]update{{[]float32{4, 0}, 2}}, []float32{1.5, 1}, [][]float32{{2, 0}, {25, 9}}},
		{[]update{{[]float32{12, 4}, 2}}, []float32{2.375, 1.5}, [][]float32{{7, 2}, {169, 25}}},
	}, 0)
}

// statefulRules are the rules that return state, with valid parameters.
func statefulRules() []Strategy {
	return []Strategy{
		FedAvgM{ServerLR: 0.5, Momentum: 0.9},
		FedAdam{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		FedYogi{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		FedAdagrad{ServerLR: 0.1, Beta1: 0.9, Tau: 1e-3},
	}
}

func TestStatefulRulesRejectBadState(t *testing.T) {
	global := []float32{1, 2, 3}
	for _, s := range statefulRules() {
		t.Run(s.Name(), func(t *testing.T) {
			r := beginWith(t, s, global, nil)
			if err := r.Add([]float32{1, -1, 0.5}, 3); err != nil {
				t.Fatal(err)
			}
			good := finishResult(t, r).State
			if _, err := s.Begin(global, good); err != nil {
				t.Fatalf("own state rejected: %v", err)
			}
			k := 2
			if s.Name() == "fedavgm" {
				k = 1
			}
			vecs := func(k, dim int, v float32) [][]float32 {
				out := make([][]float32, k)
				for j := range out {
					out[j] = make([]float32, dim)
					for i := range out[j] {
						out[j][i] = v
					}
				}
				return out
			}
			enc := func(st State) []byte {
				b, err := st.Encode()
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			otherRule := "fedadam"
			if s.Name() == "fedadam" {
				otherRule = "fedyogi"
			}
			bad := map[string][]byte{
				"other rule":      enc(State{Rule: otherRule, Vectors: vecs(k, 3, 1)}),
				"other dimension": enc(State{Rule: s.Name(), Vectors: vecs(k, 4, 1)}),
				"vector count":    enc(State{Rule: s.Name(), Vectors: vecs(k+1, 3, 1)}),
				"truncated":       good[:len(good)-1],
				"corrupt":         append(bytes.Clone(good[:20]), append([]byte{good[20] ^ 0x40}, good[21:]...)...),
				"version":         append(append(bytes.Clone(good[:4]), 9), good[5:]...),
				"garbage":         []byte("not a state at all, just some bytes"),
			}
			if k == 2 {
				bad["negative v"] = enc(State{Rule: s.Name(), Vectors: [][]float32{{0, 0, 0}, {1, -1, 1}}})
			}
			for name, b := range bad {
				_, err := s.Begin(global, b)
				if !errors.Is(err, ErrState) {
					t.Errorf("%s: err = %v, want ErrState", name, err)
				} else if !strings.Contains(err.Error(), s.Name()) {
					t.Errorf("%s: error %q does not name the rule", name, err)
				}
			}
		})
	}
}

func TestStatelessRulesRejectState(t *testing.T) {
	st, err := State{Rule: "fedadam", Vectors: [][]float32{{0, 0}, {1, 1}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Strategy{FedAvg{}, FedProx{Mu: 0.1}, Median{}, TrimmedMean{Beta: 0.1}, Krum{F: 1}, MultiKrum{F: 1}} {
		if _, err := s.Begin([]float32{1, 2}, st); !errors.Is(err, ErrState) {
			t.Errorf("%s: err = %v, want ErrState", s.Name(), err)
		}
	}
}

// TestStatefulFinishIsRepeatableAndPure checks that Finish can be called
// again with the same result, that Begin does not keep or modify the
// caller's state bytes, and that a failing Finish leaves the round open.
func TestStatefulFinishIsRepeatableAndPure(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, s := range statefulRules() {
		global := randVec(rng, 33)
		r := beginWith(t, s, global, nil)
		if err := r.Add(randVec(rng, 33), 5); err != nil {
			t.Fatal(err)
		}
		first := finishResult(t, r)
		state := bytes.Clone(first.State)
		r2 := beginWith(t, s, first.Weights, state)
		if !bytes.Equal(state, first.State) {
			t.Fatalf("%s: Begin modified the state bytes", s.Name())
		}
		for i := range state {
			state[i] = 0 // the round must hold its own copy
		}
		d := randVec(rng, 33)
		if err := r2.Add(d, 2); err != nil {
			t.Fatal(err)
		}
		a := finishResult(t, r2)
		a.Weights[0]++
		a.State[0]++
		b := finishResult(t, r2)
		r3 := beginWith(t, s, first.Weights, first.State)
		if err := r3.Add(d, 2); err != nil {
			t.Fatal(err)
		}
		c := finishResult(t, r3)
		if !equalBits(b.Weights, c.Weights) || !bytes.Equal(b.State, c.State) {
			t.Errorf("%s: second Finish or a fresh round from the same state differs", s.Name())
		}
	}
	t.Run("overflow leaves round open", func(t *testing.T) {
		s := FedAvgM{ServerLR: 1, Momentum: 0.5}
		r := beginWith(t, s, []float32{math.MaxFloat32}, nil)
		if err := r.Add([]float32{math.MaxFloat32}, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Finish(); !errors.Is(err, ErrNotFinite) {
			t.Fatalf("err = %v, want ErrNotFinite", err)
		}
		if err := r.Add([]float32{-math.MaxFloat32}, 1); err != nil {
			t.Fatalf("Add after failed Finish: %v", err)
		}
		if got := finish(t, r); got[0] != math.MaxFloat32 {
			t.Errorf("Finish = %v", got)
		}
	})
}

func TestFedOptParamsValidatedAtBegin(t *testing.T) {
	bad := []Strategy{
		FedAvgM{ServerLR: 0, Momentum: 0.9},
		FedAvgM{ServerLR: 1, Momentum: 1},
		FedAvgM{ServerLR: math.NaN(), Momentum: 0},
		FedAdam{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 0},
		FedAdam{ServerLR: 0.1, Beta1: -0.1, Beta2: 0.99, Tau: 1e-3},
		FedYogi{ServerLR: 0.1, Beta1: 0.9, Beta2: 1, Tau: 1e-3},
		FedAdagrad{ServerLR: math.Inf(1), Beta1: 0.9, Tau: 1e-3},
		FedProx{Mu: -1},
	}
	for _, s := range bad {
		if _, err := s.Begin([]float32{1}, nil); !errors.Is(err, ErrParams) {
			t.Errorf("%#v: err = %v, want ErrParams", s, err)
		}
	}
}
