package dp

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

// tfPrivacyOrders is the order list of TF Privacy's compute_dp_sgd_privacy
// (tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_lib.py):
// [1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5] + list(range(5, 64)) +
// [128, 256, 512].
func tfPrivacyOrders() []float64 {
	o := []float64{1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5}
	for a := 5; a < 64; a++ {
		o = append(o, float64(a))
	}
	return append(o, 128, 256, 512)
}

// TestAccountantMatchesPublishedValues is issue 8's acceptance test: the
// accountant reproduces published RDP-accountant figures for the same
// noise multiplier, sample rate, steps and delta within 1%.
//
// Every figure is the sampled Gaussian mechanism under Poisson sampling,
// add/remove-one adjacency, L2 sensitivity 1. Figures published before
// 2020 used the classic RDP→DP conversion (Mironov 2017, Prop. 3); later
// ones the improved one (Balle et al. 2020, Thm. 21); each case says which
// and uses it. The moments-accountant figures of Abadi et al. (2016) are
// not used: that accountant is a different (looser, integer-order)
// computation whose numbers the RDP accountant is not expected to match.
func TestAccountantMatchesPublishedValues(t *testing.T) {
	mnistQ := 256.0 / 60000
	mnistSteps := func(epochs int) int { return epochs * (60000 / 256) } // 234 steps per epoch
	tests := []struct {
		name      string
		source    string
		z, q      float64
		steps     int
		delta     float64
		orders    []float64 // nil: DefaultOrders
		conv      Conversion
		want      float64
		wantOrder float64 // 0: not published
	}{
		// TensorFlow Privacy, tutorials/README.md, "Select Parameters"
		// table (MNIST, batch 256 of 60,000, δ = 1e-5): noise multiplier
		// 1.12 for 60 epochs → ε = 2.92; 0.6 for 30 epochs → 9.74; 1.2 for
		// 10 epochs → 1.20. "Expected Output" of the same README (the
		// default 1.12): ε = 1.00 after 1 epoch and 1.04 after 2 epochs.
		// mnist_dpsgd_tutorial.py trains 60000 // 256 = 234 steps per
		// epoch and calls compute_rdp with orders
		// [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
		// (DefaultOrders) and the 2019 get_privacy_spent (classic).
		{"tf-readme-1.12-60ep", "TF Privacy tutorials/README.md table row 1",
			1.12, mnistQ, mnistSteps(60), 1e-5, nil, ConversionClassic, 2.92, 0},
		{"tf-readme-0.6-30ep", "TF Privacy tutorials/README.md table row 2",
			0.6, mnistQ, mnistSteps(30), 1e-5, nil, ConversionClassic, 9.74, 0},
		{"tf-readme-1.2-10ep", "TF Privacy tutorials/README.md table row 3",
			1.2, mnistQ, mnistSteps(10), 1e-5, nil, ConversionClassic, 1.20, 0},
		{"tf-readme-1.12-1ep", "TF Privacy tutorials/README.md Expected Output, epoch 1",
			1.12, mnistQ, mnistSteps(1), 1e-5, nil, ConversionClassic, 1.00, 0},
		{"tf-readme-1.12-2ep", "TF Privacy tutorials/README.md Expected Output, epoch 2",
			1.12, mnistQ, mnistSteps(2), 1e-5, nil, ConversionClassic, 1.04, 0},

		// Opacus API docs, "Compute DP-SGD Privacy"
		// (https://opacus.ai/api/compute_dp_sgd_privacy.html), earlier
		// version: "--dataset-size=60000 --batch-size=256
		// --noise_multiplier=1.12 --epochs=60 --delta=1e-5 --a 10 20 100 ...
		// satisfies (epsilon,delta)-DP of (2.95, 1e-5)". That Opacus ran
		// ceil(60 · 60000/256) = 14063 steps and used the classic
		// conversion.
		{"opacus-docs-1.12-60ep", "opacus.ai/api/compute_dp_sgd_privacy.html (Opacus < 1.0)",
			1.12, mnistQ, 14063, 1e-5, []float64{10, 20, 100}, ConversionClassic, 2.95, 0},

		// Same page, current version: "--epochs=3 --delta=1e-5
		// --sample-rate 0.01 --noise-multiplier 1.0 --alphas 2 5 10 20 100 ...
		// iterated over 300 steps satisfies differential privacy with
		// epsilon = 2.39, delta = 1e-05. The optimal alpha is 5.0."
		// (Opacus ≥ 1.0: improved conversion.)
		{"opacus-docs-1.0-300steps", "opacus.ai/api/compute_dp_sgd_privacy.html (Opacus ≥ 1.0)",
			1.0, 0.01, 300, 1e-5, []float64{2, 5, 10, 20, 100}, ConversionImproved, 2.39, 5},

		// TF Privacy, tensorflow_privacy/privacy/analysis/
		// compute_dp_sgd_privacy_test.py, test_compute_dp_sgd_privacy:
		// (n, batch_size, noise_multiplier, epochs, delta) → (ε, order)
		//   (60000, 150, 1.3, 15, 1e-5)        → 0.7242234026109595, 19
		//   (100000, 100, 1.0, 30, 1e-7)       → 1.4154988495444842, 13
		//   (100000000, 1024, 0.1, 10, 1e-7)   → 5907982.3113978775, 1.25
		// with q = batch/n, steps = ceil(epochs·n/batch), the orders of
		// tfPrivacyOrders and dp_accounting's (improved) conversion.
		{"tf-test0", "TF Privacy compute_dp_sgd_privacy_test.py Test0",
			1.3, 150.0 / 60000, 6000, 1e-5, tfPrivacyOrders(), ConversionImproved, 0.7242234026109595, 19},
		{"tf-test1", "TF Privacy compute_dp_sgd_privacy_test.py Test1",
			1.0, 100.0 / 100000, 30000, 1e-7, tfPrivacyOrders(), ConversionImproved, 1.4154988495444842, 13},
		{"tf-test2", "TF Privacy compute_dp_sgd_privacy_test.py Test2",
			0.1, 1024.0 / 100000000, int(math.Ceil(10 * 100000000 / 1024.0)), 1e-7, tfPrivacyOrders(), ConversionImproved, 5907982.3113978775, 1.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAccountant(tt.orders)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Step(tt.z, tt.q, tt.steps); err != nil {
				t.Fatal(err)
			}
			got, order, err := a.EpsilonWith(tt.delta, tt.conv)
			if err != nil {
				t.Fatal(err)
			}
			dev := math.Abs(got-tt.want) / tt.want
			t.Logf("%s: z=%v q=%.6g steps=%d delta=%v (%v): epsilon %.6g at order %v, published %v (deviation %.3g%%)",
				tt.source, tt.z, tt.q, tt.steps, tt.delta, tt.conv, got, order, tt.want, 100*dev)
			if dev > 0.01 {
				t.Errorf("epsilon %.6g deviates %.3f%% from the published %v", got, 100*dev, tt.want)
			}
			if tt.wantOrder != 0 && order != tt.wantOrder {
				t.Errorf("best order %v, published %v", order, tt.wantOrder)
			}
		})
	}
}

func TestAccountantZeroValue(t *testing.T) {
	var a Accountant
	eps, order, err := a.Epsilon(1e-5)
	if err != nil || eps != 0 || order != 0 {
		t.Fatalf("empty accountant: (%v, %v, %v), want (0, 0, nil)", eps, order, err)
	}
	if err := a.Step(1, 0.1, 0); err != nil {
		t.Fatal(err)
	}
	if len(a.Ledger()) != 0 {
		t.Fatal("zero steps were recorded")
	}
	if !slices.Equal(a.Orders(), DefaultOrders()) {
		t.Fatal("zero value does not use DefaultOrders")
	}
}

func TestAccountantHeterogeneousComposition(t *testing.T) {
	orders := DefaultOrders()
	var a Accountant
	steps := []struct {
		z, q float64
		n    int
	}{{1.1, 0.01, 100}, {2, 0.1, 10}, {1.1, 0.01, 50}, {0.9, 1, 3}}
	for _, s := range steps {
		if err := a.Step(s.z, s.q, s.n); err != nil {
			t.Fatal(err)
		}
	}
	wantLedger := []LedgerEntry{{1.1, 0.01, 150}, {2, 0.1, 10}, {0.9, 1, 3}}
	if !slices.Equal(a.Ledger(), wantLedger) {
		t.Fatalf("ledger %v, want %v", a.Ledger(), wantLedger)
	}
	// Composition adds RDP order by order.
	want := make([]float64, len(orders))
	for _, s := range steps {
		r, err := RDP(s.z, s.q, s.n, orders)
		if err != nil {
			t.Fatal(err)
		}
		for i := range r {
			want[i] += r[i]
		}
	}
	got := a.RDP()
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-12*want[i] {
			t.Fatalf("order %v: RDP %v, want %v", orders[i], got[i], want[i])
		}
	}
	eps, _, err := a.Epsilon(1e-5)
	if err != nil {
		t.Fatal(err)
	}
	wantEps, _, _ := EpsilonFromRDP(orders, want, 1e-5, ConversionImproved)
	if math.Abs(eps-wantEps) > 1e-12*wantEps {
		t.Fatalf("epsilon %v, want %v", eps, wantEps)
	}
	// More steps never lower epsilon.
	prev := eps
	for range 5 {
		if err := a.Step(3, 0.05, 20); err != nil {
			t.Fatal(err)
		}
		eps, _, _ := a.Epsilon(1e-5)
		if eps < prev {
			t.Fatalf("epsilon went down from %v to %v", prev, eps)
		}
		prev = eps
	}
}

func TestAccountantStepValidation(t *testing.T) {
	tests := []struct {
		name  string
		z, q  float64
		steps int
	}{
		{"zero noise", 0, 0.1, 1},
		{"negative noise", -1, 0.1, 1},
		{"nan noise", math.NaN(), 0.1, 1},
		{"inf noise", math.Inf(1), 0.1, 1},
		{"zero rate", 1, 0, 1},
		{"rate above one", 1, 1.0001, 1},
		{"nan rate", 1, math.NaN(), 1},
		{"negative steps", 1, 0.1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a Accountant
			if err := a.Step(tt.z, tt.q, tt.steps); !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("Step: err = %v, want ErrInvalidParameter", err)
			}
			if len(a.Ledger()) != 0 {
				t.Fatal("invalid step was recorded")
			}
			if _, _, err := a.ProjectedEpsilon(1e-5, tt.z, tt.q, tt.steps); !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("ProjectedEpsilon: err = %v, want ErrInvalidParameter", err)
			}
			if _, _, err := a.WouldExceed(1, 1e-5, tt.z, tt.q, tt.steps); !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("WouldExceed: err = %v, want ErrInvalidParameter", err)
			}
		})
	}
	var a Accountant
	for _, delta := range []float64{0, 1, -1e-5, 2, math.NaN()} {
		if _, _, err := a.Epsilon(delta); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("Epsilon(%v): err = %v, want ErrInvalidParameter", delta, err)
		}
	}
	if _, _, err := a.EpsilonWith(1e-5, Conversion(-1)); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("unknown conversion: err = %v", err)
	}
	for _, budget := range []float64{0, -1, math.Inf(1), math.NaN()} {
		if _, _, err := a.WouldExceed(budget, 1e-5, 1, 0.1, 1); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("WouldExceed budget %v: err = %v", budget, err)
		}
	}
	if _, err := NewAccountant([]float64{3, 2}); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("NewAccountant with decreasing orders: err = %v", err)
	}
}

// TestPlanAndEnforceBudget plays the coordinator: plan a noise multiplier
// for a budget, run the rounds one at a time with WouldExceed before each,
// and check the budget is met exactly at the end of the plan and refused
// one round later.
func TestPlanAndEnforceBudget(t *testing.T) {
	const (
		budget = 3.0
		delta  = 1e-5
		q      = 10.0 / 40 // 10 of 40 sites per round
		rounds = 60
	)
	z, err := NoiseMultiplierFor(budget, delta, q, rounds)
	if err != nil {
		t.Fatal(err)
	}
	// Minimal: 1e-5 less noise breaks the budget.
	var probe Accountant
	if eps, _, _ := probe.ProjectedEpsilon(delta, z*(1-1e-5), q, rounds); eps <= budget {
		t.Fatalf("z = %v is not minimal: %v·(1−1e-5) gives epsilon %v <= %v", z, z, eps, budget)
	}
	var a Accountant
	for r := range rounds {
		exceeds, projected, err := a.WouldExceed(budget, delta, z, q, 1)
		if err != nil {
			t.Fatal(err)
		}
		if exceeds {
			t.Fatalf("round %d refused (projected epsilon %v) within the plan", r, projected)
		}
		if err := a.Step(z, q, 1); err != nil {
			t.Fatal(err)
		}
	}
	eps, _, _ := a.Epsilon(delta)
	if eps > budget || eps < budget*(1-1e-4) {
		t.Fatalf("spent %v after the planned rounds, budget %v", eps, budget)
	}
	exceeds, projected, err := a.WouldExceed(budget, delta, z, q, 1)
	if err != nil || !exceeds || projected <= budget {
		t.Fatalf("round after the plan: exceeds=%v projected=%v err=%v", exceeds, projected, err)
	}
	// With half the budget spent, the rest of the job needs more noise.
	var half Accountant
	if err := half.Step(z, q, rounds/2); err != nil {
		t.Fatal(err)
	}
	z2, err := half.NoiseMultiplierFor(budget, delta, q, rounds)
	if err != nil {
		t.Fatal(err)
	}
	if z2 <= z {
		t.Fatalf("remaining %d rounds after spending need z %v <= %v", rounds, z2, z)
	}
}

func TestNoiseMultiplierForMatchesPublished(t *testing.T) {
	// Inverse of the Opacus docs figure above (q = 0.01, 300 steps,
	// δ = 1e-5, orders {2,5,10,20,100}): z = 1.0 gives ε = 2.393…; asking
	// for that ε must give back z ≈ 1.0.
	a, err := NewAccountant([]float64{2, 5, 10, 20, 100})
	if err != nil {
		t.Fatal(err)
	}
	eps, _, err := a.ProjectedEpsilon(1e-5, 1.0, 0.01, 300)
	if err != nil {
		t.Fatal(err)
	}
	z, err := a.NoiseMultiplierFor(eps, 1e-5, 0.01, 300)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(z-1) > 1e-5 {
		t.Fatalf("NoiseMultiplierFor(%v) = %v, want 1.0", eps, z)
	}
}

// gaussianDelta is the exact δ(ε) of the Gaussian mechanism with
// sensitivity 1 and noise multiplier sigma (Balle and Wang, "Improving the
// Gaussian Mechanism for Differential Privacy", ICML 2018, Theorem 8; the
// formula TF Privacy's test_get_privacy_spent_gaussian compares against):
//
//	δ = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ).
func gaussianDelta(eps, sigma float64) float64 {
	phi := func(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
	return phi(0.5/sigma-eps*sigma) - math.Exp(eps)*phi(-0.5/sigma-eps*sigma)
}

// TestPlannedNoiseIsSoundWithoutSampling checks NoiseMultiplierFor at q = 1
// against the exact privacy curve of the Gaussian mechanism: T steps with
// multiplier z are one Gaussian mechanism with multiplier z/√T, so the
// planned z must give δ(ε) ≤ δ exactly (soundness), and should not be much
// above the exact optimum (RDP's conversion loses a little).
//
// It also shows the order floor: ε = 0.1 at δ = 1e-5 is below what order
// 63 can certify whatever the noise, so it needs larger orders.
func TestPlannedNoiseIsSoundWithoutSampling(t *testing.T) {
	large := DefaultOrders()
	for a := 64.0; a <= 1024; a *= 1.25 {
		large = append(large, math.Round(a))
	}
	if _, err := NoiseMultiplierFor(0.1, 1e-5, 1, 1000); !errors.Is(err, ErrBudgetTooSmall) {
		t.Fatalf("ε = 0.1 with default orders: err = %v, want ErrBudgetTooSmall", err)
	}
	cases := []struct {
		eps, delta float64
		steps      int
		orders     []float64
	}{
		{0.1, 1e-5, 1000, large},
		{1, 1e-5, 100, nil},
		{3, 1e-6, 50, nil},
		{8, 1e-5, 200, nil},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("eps=%v/T=%d", c.eps, c.steps), func(t *testing.T) {
			a, err := NewAccountant(c.orders)
			if err != nil {
				t.Fatal(err)
			}
			z, err := a.NoiseMultiplierFor(c.eps, c.delta, 1, c.steps)
			if err != nil {
				t.Fatal(err)
			}
			root := math.Sqrt(float64(c.steps))
			if d := gaussianDelta(c.eps, z/root); d > c.delta {
				t.Fatalf("planned z = %v gives exact δ %v > %v", z, d, c.delta)
			}
			// Exact optimum by bisection on the analytic curve.
			lo, hi := 1e-6, 1e6
			for hi-lo > 1e-9*hi {
				mid := (lo + hi) / 2
				if gaussianDelta(c.eps, mid/root) <= c.delta {
					hi = mid
				} else {
					lo = mid
				}
			}
			t.Logf("planned z %.6g, exact optimum %.6g (ratio %.3f)", z, hi, z/hi)
			if z > 1.3*hi {
				t.Fatalf("planned z = %v is more than 30%% above the exact %v", z, hi)
			}
		})
	}
}

func TestNoiseMultiplierForErrors(t *testing.T) {
	var spent Accountant
	if err := spent.Step(0.5, 1, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := spent.NoiseMultiplierFor(1, 1e-5, 0.1, 10); !errors.Is(err, ErrBudgetTooSmall) {
		t.Errorf("spent budget: err = %v, want ErrBudgetTooSmall", err)
	}
	tests := []struct {
		name            string
		eps, delta, q   float64
		steps           int
		wantErrContains error
	}{
		{"zero eps", 0, 1e-5, 0.1, 10, ErrInvalidParameter},
		{"bad delta", 1, 0, 0.1, 10, ErrInvalidParameter},
		{"bad rate", 1, 1e-5, 0, 10, ErrInvalidParameter},
		{"zero steps", 1, 1e-5, 0.1, 0, ErrInvalidParameter},
		{"negative steps", 1, 1e-5, 0.1, -3, ErrInvalidParameter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NoiseMultiplierFor(tt.eps, tt.delta, tt.q, tt.steps); !errors.Is(err, tt.wantErrContains) {
				t.Fatalf("err = %v, want %v", err, tt.wantErrContains)
			}
		})
	}
}

func TestAccountantJSONRoundTrip(t *testing.T) {
	custom, err := NewAccountant([]float64{1.5, 2, 8, 32})
	if err != nil {
		t.Fatal(err)
	}
	var def Accountant
	for _, a := range []*Accountant{custom, &def} {
		for _, s := range []LedgerEntry{{1.1, 0.01, 100}, {0.7, 0.25, 3}} {
			if err := a.Step(s.NoiseMultiplier, s.SampleRate, int(s.Steps)); err != nil {
				t.Fatal(err)
			}
		}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var back Accountant
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !slices.Equal(back.Ledger(), a.Ledger()) || !slices.Equal(back.Orders(), a.Orders()) {
			t.Fatalf("round trip changed the state: %s", b)
		}
		e1, o1, _ := a.Epsilon(1e-5)
		e2, o2, _ := back.Epsilon(1e-5)
		if e1 != e2 || o1 != o2 {
			t.Fatalf("epsilon after round trip (%v, %v), before (%v, %v)", e2, o2, e1, o1)
		}
	}
	// Default orders are not written out.
	b, _ := json.Marshal(&def)
	want := `{"version":1,"ledger":[{"noise_multiplier":1.1,"sample_rate":0.01,"steps":100},{"noise_multiplier":0.7,"sample_rate":0.25,"steps":3}]}`
	if string(b) != want {
		t.Fatalf("encoding\n%s\nwant\n%s", b, want)
	}
	// An Accountant held by value in a non-addressable struct still
	// encodes its state.
	type job struct{ Budget Accountant }
	b, _ = json.Marshal(job{Budget: def})
	if string(b) != `{"Budget":`+want+`}` {
		t.Fatalf("by-value encoding %s", b)
	}
	// The zero value encodes an empty ledger.
	b, _ = json.Marshal(&Accountant{})
	if string(b) != `{"version":1,"ledger":[]}` {
		t.Fatalf("zero value encoding %s", b)
	}
}

func TestAccountantJSONRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"not json", `{`},
		{"array", `[]`},
		{"wrong version", `{"version":2,"ledger":[]}`},
		{"missing version", `{"ledger":[]}`},
		{"unknown field", `{"version":1,"ledger":[],"epsilon":3}`},
		{"trailing data", `{"version":1,"ledger":[]} {}`},
		{"zero noise", `{"version":1,"ledger":[{"noise_multiplier":0,"sample_rate":0.1,"steps":1}]}`},
		{"rate above one", `{"version":1,"ledger":[{"noise_multiplier":1,"sample_rate":1.5,"steps":1}]}`},
		{"zero steps", `{"version":1,"ledger":[{"noise_multiplier":1,"sample_rate":0.1,"steps":0}]}`},
		{"fractional steps", `{"version":1,"ledger":[{"noise_multiplier":1,"sample_rate":0.1,"steps":1.5}]}`},
		{"too many steps", `{"version":1,"ledger":[{"noise_multiplier":1,"sample_rate":0.1,"steps":9007199254740993}]}`},
		{"duplicate entry", `{"version":1,"ledger":[{"noise_multiplier":1,"sample_rate":0.1,"steps":1},{"noise_multiplier":1,"sample_rate":0.1,"steps":2}]}`},
		{"orders decreasing", `{"version":1,"orders":[3,2],"ledger":[]}`},
		{"order at one", `{"version":1,"orders":[1,2],"ledger":[]}`},
		{"empty orders", `{"version":1,"orders":[],"ledger":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := NewAccountant([]float64{2, 3})
			if err := a.Step(1, 0.5, 7); err != nil {
				t.Fatal(err)
			}
			err := a.UnmarshalJSON([]byte(tt.in))
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("err = %v, want ErrInvalidState", err)
			}
			if !slices.Equal(a.Ledger(), []LedgerEntry{{1, 0.5, 7}}) || !slices.Equal(a.Orders(), []float64{2, 3}) {
				t.Fatal("failed decode changed the accountant")
			}
		})
	}
}
