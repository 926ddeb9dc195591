package dp

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

// logAQuad computes log(A_α) straight from its definition,
//
//	A_α = ∫ μ0(x) · ((1−q) + q·μ1(x)/μ0(x))^α dx,  μ0 = N(0,σ²), μ1 = N(1,σ²)
//
// (Mironov, Talwar, Zhang 2019, Section 3.3), by the trapezoid rule in log
// space on a fine uniform grid. It shares nothing with the series in
// rdp.go (no binomial expansion, no erfc) and serves as the independent
// reference for it, like the mpmath quadrature in TF Privacy's
// rdp_accountant_test.py.
//
// The integrand is a mixture of bumps of width σ around 0 and around α,
// joined by a transition of width ~σ² where q·μ1/μ0 ≈ 1−q; the grid spans
// [−40σ, α+40σ] with a step of min(σ, σ²)/40, where the trapezoid rule on
// this smooth, rapidly decaying integrand is accurate far beyond 1e−9.
func logAQuad(q, sigma, alpha float64) float64 {
	h := math.Min(sigma, sigma*sigma) / 40
	lo, hi := -40*sigma, alpha+40*sigma
	n := int(math.Ceil((hi - lo) / h))
	h = (hi - lo) / float64(n)
	logQ, log1mQ := math.Log(q), math.Log1p(-q)
	logNorm := -math.Log(sigma * math.Sqrt(2*math.Pi))
	logF := func(x float64) float64 {
		ratio := logAdd(log1mQ, logQ+(2*x-1)/(2*sigma*sigma))
		return logNorm - x*x/(2*sigma*sigma) + alpha*ratio
	}
	// Two passes: find the maximum, then sum exp(logF − max).
	m := math.Inf(-1)
	for i := 0; i <= n; i++ {
		m = math.Max(m, logF(lo+float64(i)*h))
	}
	var s float64
	for i := 0; i <= n; i++ {
		w := 1.0
		if i == 0 || i == n {
			w = 0.5
		}
		s += w * math.Exp(logF(lo+float64(i)*h)-m)
	}
	return m + math.Log(s*h)
}

func TestLogAMatchesQuadrature(t *testing.T) {
	for _, sigma := range []float64{0.7, 1, 1.5, 3, 10} {
		for _, q := range []float64{1e-3, 0.01, 0.1, 0.5, 0.9} {
			for _, alpha := range []float64{1.1, 1.5, 2, 2.5, 3, 4.7, 8, 13.3, 32, 63, 100.5} {
				name := fmt.Sprintf("sigma=%v/q=%v/alpha=%v", sigma, q, alpha)
				var got float64
				if alpha == math.Trunc(alpha) {
					got = logAInt(q, sigma, int(alpha))
				} else {
					got = logAFrac(q, sigma, alpha)
				}
				want := logAQuad(q, sigma, alpha)
				// log A_α can be tiny (≈ α(α−1)q²/(2σ²)); the quadrature
				// of A_α ≈ 1 then has an absolute error near 1e−15.
				if d := math.Abs(got - want); d > 1e-6*math.Abs(want)+1e-13 {
					t.Errorf("%s: series log A = %.12g, quadrature %.12g (diff %.3g)", name, got, want, d)
				}
			}
		}
	}
}

// The extreme parameters of TF Privacy's test_compute_log_a_equals_mp
// (tensorflow_privacy/privacy/analysis/rdp_accountant_test.py), which
// compares the series against mpmath quadrature with rtol 1e−4.
func TestLogAExtremeParameters(t *testing.T) {
	params := []struct{ q, sigma, alpha float64 }{
		{1e-7, .1, 1.01},
		{1e-6, .1, 256},
		{1e-5, .1, 256.1},
		{1e-6, 1, 27},
		{1e-4, 1., 1.5},
		{1e-3, 1., 2},
		{.01, 10, 20},
		{.1, 100, 20.5},
		{.99, .1, 256},
		{.999, 100, 256.1},
	}
	for _, p := range params {
		var got float64
		if p.alpha == math.Trunc(p.alpha) {
			got = logAInt(p.q, p.sigma, int(p.alpha))
		} else {
			got = logAFrac(p.q, p.sigma, p.alpha)
		}
		want := logAQuad(p.q, p.sigma, p.alpha)
		if d := math.Abs(got - want); d > 1e-4*math.Abs(want)+1e-13 {
			t.Errorf("q=%v sigma=%v alpha=%v: series log A = %.10g, quadrature %.10g", p.q, p.sigma, p.alpha, got, want)
		}
	}
}

// TF Privacy's own RDP values, tensorflow_privacy/privacy/analysis/
// rdp_accountant_test.py (test_compute_rdp_scalar, test_compute_rdp_sequence,
// test_compute_rdp_no_sampling), checked there to 5 decimal places.
func TestRDPMatchesTFPrivacyTests(t *testing.T) {
	tests := []struct {
		name   string
		q, z   float64
		steps  int
		orders []float64
		want   []float64
	}{
		{"scalar", 0.1, 2, 10, []float64{5}, []float64{0.07737}},
		{"sequence", 0.01, 2.5, 50, []float64{1.5, 2.5, 5, 50, 100},
			[]float64{0.00065, 0.001085, 0.00218075, 0.023846, 167.416307}},
		{"no sampling", 1, 10, 1, []float64{20}, []float64{0.1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RDP(tt.z, tt.q, tt.steps, tt.orders)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if math.Abs(got[i]-tt.want[i]) > 1e-5 {
					t.Errorf("order %v: RDP %.8g, TF Privacy %.8g", tt.orders[i], got[i], tt.want[i])
				}
			}
		})
	}
}

// TestEpsilonMatchesQuadratureReference checks the accountant's ε against
// ε computed from quadrature RDP (logAQuad) at the same orders, over a grid
// of noise multipliers, sample rates, step counts and deltas, within 1%.
func TestEpsilonMatchesQuadratureReference(t *testing.T) {
	if testing.Short() {
		t.Skip("quadrature over 150 orders per case")
	}
	cases := []struct {
		z, q  float64
		steps int
		delta float64
	}{
		{0.8, 0.01, 1000, 1e-5},
		{1.1, 0.01, 100, 1e-5},
		{1.1, 256.0 / 60000, 14040, 1e-5},
		{2, 0.1, 50, 1e-6},
		{4, 0.5, 20, 1e-3},
		{1, 0.05, 500, 1e-7},
		{1.5, 0.2, 200, 1e-5},
		{3, 1.0 / 3, 30, 1e-4},
	}
	orders := DefaultOrders()
	for _, c := range cases {
		t.Run(fmt.Sprintf("z=%v/q=%.4g/T=%d/delta=%v", c.z, c.q, c.steps, c.delta), func(t *testing.T) {
			var a Accountant
			if err := a.Step(c.z, c.q, c.steps); err != nil {
				t.Fatal(err)
			}
			ref := make([]float64, len(orders))
			for i, al := range orders {
				ref[i] = float64(c.steps) * logAQuad(c.q, c.z, al) / (al - 1)
			}
			for _, conv := range []Conversion{ConversionImproved, ConversionClassic} {
				got, _, err := a.EpsilonWith(c.delta, conv)
				if err != nil {
					t.Fatal(err)
				}
				want, _, err := EpsilonFromRDP(orders, ref, c.delta, conv)
				if err != nil {
					t.Fatal(err)
				}
				if dev := math.Abs(got-want) / want; dev > 0.01 {
					t.Errorf("%v: epsilon %.6g, quadrature reference %.6g (deviation %.3g%%)", conv, got, want, 100*dev)
				} else {
					t.Logf("%v: epsilon %.6g, quadrature reference %.6g (deviation %.2g%%)", conv, got, want, 100*dev)
				}
			}
		})
	}
}

func TestRDPSpecialCases(t *testing.T) {
	// No subsampling: the Gaussian mechanism, α/(2σ²) per step.
	got, err := RDP(2, 1, 3, []float64{1.5, 4, 32})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range []float64{1.5, 4, 32} {
		if want := 3 * a / 8; math.Abs(got[i]-want) > 1e-15 {
			t.Errorf("order %v: %v, want %v", a, got[i], want)
		}
	}
	// Zero steps cost nothing.
	got, err = RDP(1, 0.5, 0, DefaultOrders())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		if r != 0 {
			t.Fatalf("zero steps: RDP %v", r)
		}
	}
	// RDP is non-decreasing in the order and non-increasing in the noise.
	prev, err := RDP(1, 0.01, 1, DefaultOrders())
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(prev); i++ {
		if prev[i] < prev[i-1]*(1-1e-12) {
			t.Errorf("RDP decreases from order %v to the next: %v > %v", DefaultOrders()[i-1], prev[i-1], prev[i])
		}
	}
	more, err := RDP(1.2, 0.01, 1, DefaultOrders())
	if err != nil {
		t.Fatal(err)
	}
	for i := range more {
		if more[i] > prev[i] {
			t.Errorf("order %v: more noise gives more RDP (%v > %v)", DefaultOrders()[i], more[i], prev[i])
		}
	}
}

func TestLogErfc(t *testing.T) {
	for _, x := range []float64{-3, 0, 1, 5, 19.9, 20, 20.1, 26} {
		// Where erfc does not underflow, both branches must agree with it.
		want := math.Log(math.Erfc(x))
		if d := math.Abs(logErfc(x) - want); d > 1e-12*math.Abs(want)+1e-15 {
			t.Errorf("logErfc(%v) = %.15g, want %.15g", x, logErfc(x), want)
		}
	}
	// Far in the tail erfc underflows; log erfc(x) = −x² − log(x√π) +
	// log(1 − 1/(2x²) + 3/(4x⁴) − …), the next term 15/(8x⁶) ≈ 2e−12.
	x := 100.0
	want := -x*x - math.Log(x*math.Sqrt(math.Pi)) + math.Log1p(-0.5/(x*x)+0.75/(x*x*x*x))
	if d := math.Abs(logErfc(x) - want); d > 1e-11 {
		t.Errorf("logErfc(%v) = %v, want ≈ %v", x, logErfc(x), want)
	}
}

func TestDefaultOrders(t *testing.T) {
	o := DefaultOrders()
	if len(o) != 99+52 || o[0] != 1.1 || o[98] != 10.9 || o[99] != 12 || o[len(o)-1] != 63 {
		t.Fatalf("DefaultOrders = %v", o)
	}
	if err := validateOrders(o); err != nil {
		t.Fatal(err)
	}
	o[0] = 99 // a copy: does not affect later calls
	if DefaultOrders()[0] != 1.1 {
		t.Fatal("DefaultOrders returned shared storage")
	}
}

func TestEpsilonFromRDPValidation(t *testing.T) {
	orders := []float64{2, 4}
	tests := []struct {
		name   string
		orders []float64
		rdp    []float64
		delta  float64
		conv   Conversion
	}{
		{"length mismatch", orders, []float64{1}, 1e-5, ConversionImproved},
		{"negative rdp", orders, []float64{-1, 1}, 1e-5, ConversionImproved},
		{"nan rdp", orders, []float64{math.NaN(), 1}, 1e-5, ConversionImproved},
		{"delta zero", orders, []float64{1, 1}, 0, ConversionImproved},
		{"delta one", orders, []float64{1, 1}, 1, ConversionImproved},
		{"order one", []float64{1, 2}, []float64{1, 1}, 1e-5, ConversionImproved},
		{"orders not increasing", []float64{4, 2}, []float64{1, 1}, 1e-5, ConversionImproved},
		{"order too large", []float64{2, MaxOrder + 1}, []float64{1, 1}, 1e-5, ConversionImproved},
		{"no orders", nil, nil, 1e-5, ConversionImproved},
		{"unknown conversion", orders, []float64{1, 1}, 1e-5, Conversion(7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := EpsilonFromRDP(tt.orders, tt.rdp, tt.delta, tt.conv); !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("err = %v, want ErrInvalidParameter", err)
			}
		})
	}
	// All orders infinite: no finite guarantee.
	eps, order, err := EpsilonFromRDP(orders, []float64{math.Inf(1), math.Inf(1)}, 1e-5, ConversionImproved)
	if err != nil || !math.IsInf(eps, 1) || order != 0 {
		t.Fatalf("got (%v, %v, %v), want (+Inf, 0, nil)", eps, order, err)
	}
	// Constant RDP is pure DP; the classic conversion picks the largest
	// order: ε = 1.1 + log(1e5)/31 (TF Privacy's
	// test_get_privacy_spent_check_target_delta uses the same case).
	rdp := make([]float64, 31)
	ords := make([]float64, 31)
	for i := range rdp {
		rdp[i], ords[i] = 1.1, float64(i+2)
	}
	eps, order, err = EpsilonFromRDP(ords, rdp, 1e-5, ConversionClassic)
	if err != nil || order != 32 || math.Abs(eps-(1.1+math.Log(1e5)/31)) > 1e-12 {
		t.Fatalf("got (%v, %v, %v)", eps, order, err)
	}
}

func TestImprovedNeverWorseThanClassic(t *testing.T) {
	for _, z := range []float64{0.5, 1, 2, 8} {
		for _, q := range []float64{0.001, 0.05, 1} {
			for _, delta := range []float64{1e-9, 1e-5, 0.1} {
				var a Accountant
				if err := a.Step(z, q, 100); err != nil {
					t.Fatal(err)
				}
				imp, _, _ := a.EpsilonWith(delta, ConversionImproved)
				cls, _, _ := a.EpsilonWith(delta, ConversionClassic)
				if imp > cls {
					t.Errorf("z=%v q=%v delta=%v: improved %v > classic %v", z, q, delta, imp, cls)
				}
			}
		}
	}
}
