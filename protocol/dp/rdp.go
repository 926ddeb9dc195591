package dp

import (
	"fmt"
	"math"
)

// Rényi DP of the Poisson-subsampled Gaussian mechanism (SGM), after
// Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled
// Gaussian Mechanism" (2019), Section 3.3. The computation is the one in
// TensorFlow Privacy's rdp_accountant.compute_rdp and Opacus's
// accountants/analysis/rdp.py: for an integer order α the exact binomial
// expansion of A_α in log space, for a fractional order the two-sided series
// with erfc terms, and RDP(α) = log(A_α)/(α−1).

const (
	// MaxOrder is the largest Rényi order accepted. The integer series
	// costs α+1 terms per evaluation.
	MaxOrder = 1024
	// MaxOrders is the largest number of orders an accountant tracks.
	MaxOrders = 256
	// MaxSteps bounds the step count of one call and of one ledger entry
	// (2^53, so that step counts stay exact as float64).
	MaxSteps = int64(1) << 53
	// fracSeriesMaxTerms bounds the fractional-order series. If it has not
	// converged by then the order's RDP is reported as +Inf, which only
	// removes that order from the minimum (conservative).
	fracSeriesMaxTerms = 1 << 16
)

// DefaultOrders returns the Rényi orders the accountant optimizes over when
// none are given: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63. This is Opacus's
// RDPAccountant.DEFAULT_ALPHAS,
//
//	[1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
//
// which is also the list TensorFlow Privacy's MNIST tutorials used.
//
// The largest order bounds the smallest ε any amount of noise can certify:
// at order 63 the conversion alone costs about (log(1/δ) − log 63)/62, so
// ε below roughly 0.12 at δ = 1e-5 needs an Accountant with larger orders.
func DefaultOrders() []float64 {
	orders := make([]float64, 0, 99+52)
	for x := 1; x < 100; x++ {
		orders = append(orders, 1+float64(x)/10.0)
	}
	for a := 12; a < 64; a++ {
		orders = append(orders, float64(a))
	}
	return orders
}

// validateOrders checks that orders are finite, in (1, MaxOrder] and
// strictly increasing.
func validateOrders(orders []float64) error {
	if len(orders) == 0 || len(orders) > MaxOrders {
		return invalidf("%d orders; need 1 to %d", len(orders), MaxOrders)
	}
	for i, a := range orders {
		if !finite(a) || a <= 1 || a > MaxOrder {
			return invalidf("order %v must be in (1, %d]", a, MaxOrder)
		}
		if i > 0 && a <= orders[i-1] {
			return invalidf("orders must be strictly increasing (%v after %v)", a, orders[i-1])
		}
	}
	return nil
}

// RDP returns, for each order, the Rényi DP ε_α of the Poisson-subsampled
// Gaussian mechanism with the given noise multiplier (noise standard
// deviation / L2 sensitivity) and sample rate, composed over steps. Values
// can be +Inf. steps == 0 gives all zeros.
func RDP(noiseMultiplier, sampleRate float64, steps int, orders []float64) ([]float64, error) {
	if err := checkNoiseMultiplier(noiseMultiplier); err != nil {
		return nil, err
	}
	if err := checkSampleRate(sampleRate); err != nil {
		return nil, err
	}
	if err := checkSteps(steps); err != nil {
		return nil, err
	}
	if err := validateOrders(orders); err != nil {
		return nil, err
	}
	if steps == 0 {
		return make([]float64, len(orders)), nil
	}
	out := unitRDP(noiseMultiplier, sampleRate, orders)
	for i := range out {
		out[i] *= float64(steps)
	}
	return out, nil
}

// unitRDP is the RDP of one step at each order. Parameters are valid.
func unitRDP(sigma, q float64, orders []float64) []float64 {
	out := make([]float64, len(orders))
	for i, a := range orders {
		out[i] = sgmRDP(q, sigma, a)
	}
	return out
}

// sgmRDP is the RDP of one step of the SGM at order alpha > 1.
func sgmRDP(q, sigma, alpha float64) float64 {
	if q == 1 {
		// No subsampling: the Gaussian mechanism, α/(2σ²).
		return alpha / (2 * sigma * sigma)
	}
	var logA float64
	if alpha == math.Trunc(alpha) {
		logA = logAInt(q, sigma, int(alpha))
	} else {
		logA = logAFrac(q, sigma, alpha)
	}
	if math.IsNaN(logA) {
		return math.Inf(1)
	}
	r := logA / (alpha - 1)
	if r < 0 {
		// A_α >= 1 in exact arithmetic; a rounding error below zero is
		// reported as zero.
		r = 0
	}
	return r
}

// logAInt is log(A_α) for integer α ≥ 2 (Mironov et al. 2019, Section 3.3):
//
//	A_α = Σ_{i=0..α} C(α,i) (1−q)^{α−i} q^i exp((i²−i)/(2σ²)).
func logAInt(q, sigma float64, alpha int) float64 {
	logQ, log1mQ := math.Log(q), math.Log1p(-q)
	a := float64(alpha)
	lgA1, _ := math.Lgamma(a + 1)
	logA := math.Inf(-1)
	for i := 0; i <= alpha; i++ {
		fi := float64(i)
		lgI, _ := math.Lgamma(fi + 1)
		lgAI, _ := math.Lgamma(a - fi + 1)
		logCoef := lgA1 - lgI - lgAI + fi*logQ + (a-fi)*log1mQ
		s := logCoef + (fi*fi-fi)/(2*sigma*sigma)
		logA = logAdd(logA, s)
	}
	return logA
}

// logAFrac is log(A_α) for fractional α > 1: A_α splits into integrals
// over (−∞, z0] and [z0, ∞), z0 = σ² log(1/q − 1) + 1/2, each expanded as a
// binomial series with generalized coefficients C(α, i) whose terms carry
// erfc factors. The series stops when both terms fall below e^−30.
func logAFrac(q, sigma, alpha float64) float64 {
	logQ, log1mQ := math.Log(q), math.Log1p(-q)
	z0 := sigma*sigma*(log1mQ-logQ) + 0.5
	lgA1, _ := math.Lgamma(alpha + 1)
	logHalf := math.Log(0.5)
	sqrt2Sigma := math.Sqrt2 * sigma
	logA0, logA1 := math.Inf(-1), math.Inf(-1)
	for i := 0; i < fracSeriesMaxTerms; i++ {
		fi := float64(i)
		lgI, _ := math.Lgamma(fi + 1)
		lgAI, sign := math.Lgamma(alpha - fi + 1)
		logCoef := lgA1 - lgI - lgAI // log |C(α, i)|
		j := alpha - fi

		logT0 := logCoef + fi*logQ + j*log1mQ
		logT1 := logCoef + j*logQ + fi*log1mQ
		logE0 := logHalf + logErfc((fi-z0)/sqrt2Sigma)
		logE1 := logHalf + logErfc((z0-j)/sqrt2Sigma)
		logS0 := logT0 + (fi*fi-fi)/(2*sigma*sigma) + logE0
		logS1 := logT1 + (j*j-j)/(2*sigma*sigma) + logE1

		if sign > 0 {
			logA0 = logAdd(logA0, logS0)
			logA1 = logAdd(logA1, logS1)
		} else {
			logA0 = logSub(logA0, logS0)
			logA1 = logSub(logA1, logS1)
		}
		if math.IsNaN(logA0) || math.IsNaN(logA1) {
			return math.NaN()
		}
		if math.IsInf(logA0, 1) || math.IsInf(logA1, 1) {
			return math.Inf(1) // the series cannot come back from +Inf
		}
		if math.Max(logS0, logS1) < -30 {
			return logAdd(logA0, logA1)
		}
	}
	return math.NaN()
}

// logAdd returns log(e^x + e^y).
func logAdd(x, y float64) float64 {
	a, b := math.Min(x, y), math.Max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub returns log(e^x − e^y), NaN when the difference is negative.
func logSub(x, y float64) float64 {
	switch {
	case x < y:
		return math.NaN()
	case math.IsInf(y, -1):
		return x
	case x == y:
		return math.Inf(-1)
	}
	// log(e^x − e^y) = x + log(1 − e^{y−x}); −expm1 keeps it accurate
	// when y is close to x and cannot overflow when y ≪ x.
	return x + math.Log(-math.Expm1(y-x))
}

// logErfc returns log(erfc(x)), accurate where erfc(x) underflows.
func logErfc(x float64) float64 {
	if x < 20 {
		return math.Log(math.Erfc(x))
	}
	// Asymptotic expansion erfc(x) = e^{−x²}/(x√π) · (1 − 1/(2x²) +
	// 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …); at x ≥ 20 the next term is
	// below 1e−12.
	x2 := 1 / (x * x)
	series := x2 * (-0.5 + x2*(0.75+x2*(-1.875+x2*6.5625)))
	return -x*x - math.Log(x) - 0.5*math.Log(math.Pi) + math.Log1p(series)
}

// Conversion selects how RDP is converted to (ε, δ)-DP.
type Conversion int

const (
	// ConversionImproved is the conversion of Balle, Barthe, Gaboardi, Hsu
	// and Sato, "Hypothesis Testing Interpretations and Rényi Differential
	// Privacy" (AISTATS 2020, Theorem 21; also Canonne, Kamath and Steinke
	// 2020, Proposition 12):
	//
	//	ε = min_α  RDP(α) + log((α−1)/α) − (log δ + log α)/(α−1)
	//
	// It is what Opacus (since 1.0) and TF Privacy / dp_accounting (since
	// 2020) report, and what Accountant.Epsilon reports. As dp_accounting
	// does, orders ≤ 1.01 are skipped (numerically unstable) and an order
	// whose RDP r satisfies δ² ≥ 1 − e^{−r} yields ε = 0 (the KL bound).
	ConversionImproved Conversion = iota
	// ConversionClassic is Mironov, "Rényi Differential Privacy" (2017),
	// Proposition 3: ε = min_α RDP(α) + log(1/δ)/(α−1). It is never
	// smaller than ConversionImproved; it is what TF Privacy and Opacus
	// reported before 2020, and the figures published then use it.
	ConversionClassic
)

func (c Conversion) String() string {
	switch c {
	case ConversionImproved:
		return "improved"
	case ConversionClassic:
		return "classic"
	}
	return fmt.Sprintf("Conversion(%d)", int(c))
}

// EpsilonFromRDP converts RDP values at the given orders to an ε at delta,
// minimizing over the orders, and returns ε and the order achieving it. If
// no order gives a finite bound, ε is +Inf and the order 0.
func EpsilonFromRDP(orders, rdp []float64, delta float64, conv Conversion) (eps, bestOrder float64, err error) {
	if err := validateOrders(orders); err != nil {
		return 0, 0, err
	}
	if len(rdp) != len(orders) {
		return 0, 0, invalidf("%d RDP values for %d orders", len(rdp), len(orders))
	}
	for _, r := range rdp {
		if math.IsNaN(r) || r < 0 {
			return 0, 0, invalidf("RDP value %v must be >= 0", r)
		}
	}
	if err := checkDelta(delta); err != nil {
		return 0, 0, err
	}
	if conv != ConversionImproved && conv != ConversionClassic {
		return 0, 0, invalidf("unknown conversion %v", conv)
	}
	eps, bestOrder = epsilonFromRDP(orders, rdp, delta, conv)
	return eps, bestOrder, nil
}

// epsilonFromRDP is EpsilonFromRDP on validated input.
func epsilonFromRDP(orders, rdp []float64, delta float64, conv Conversion) (float64, float64) {
	best, bestOrder := math.Inf(1), 0.0
	logDelta := math.Log(delta)
	for i, a := range orders {
		r := rdp[i]
		var e float64
		switch {
		case math.IsInf(r, 1):
			continue
		case conv == ConversionClassic:
			e = r - logDelta/(a-1)
		case delta*delta+math.Expm1(-r) >= 0:
			e = 0
		case a > 1.01:
			e = r + math.Log1p(-1/a) - (logDelta+math.Log(a))/(a-1)
		default:
			continue
		}
		if e < best {
			best, bestOrder = e, a
		}
	}
	if math.IsInf(best, 1) {
		return best, 0
	}
	return math.Max(0, best), bestOrder
}
