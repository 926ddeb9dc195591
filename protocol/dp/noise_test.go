package dp

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func seeded(seed byte) *Gaussian { return NewGaussian(rand.NewChaCha8([32]byte{seed})) }

func draws(g *Gaussian, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = g.Normal()
	}
	return x
}

type moments struct{ mean, variance, skew, exKurt float64 }

func sampleMoments(x []float64) moments {
	n := float64(len(x))
	var m float64
	for _, v := range x {
		m += v
	}
	m /= n
	var m2, m3, m4 float64
	for _, v := range x {
		d := v - m
		m2 += d * d
		m3 += d * d * d
		m4 += d * d * d * d
	}
	m2, m3, m4 = m2/n, m3/n, m4/n
	return moments{m, m2, m3 / math.Pow(m2, 1.5), m4/(m2*m2) - 3}
}

// checkStandardMoments fails if any sample moment is more than k standard
// errors from N(0,1)'s (mean 0, variance 1, skewness 0, excess kurtosis 0).
func checkStandardMoments(t *testing.T, x []float64, k float64) {
	t.Helper()
	n := float64(len(x))
	m := sampleMoments(x)
	checks := []struct {
		name      string
		got, want float64
		se        float64
	}{
		{"mean", m.mean, 0, 1 / math.Sqrt(n)},
		{"variance", m.variance, 1, math.Sqrt(2 / n)},
		{"skewness", m.skew, 0, math.Sqrt(6 / n)},
		{"excess kurtosis", m.exKurt, 0, math.Sqrt(24 / n)},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > k*c.se {
			t.Errorf("%s %.5f, want %v ± %.5f", c.name, c.got, c.want, k*c.se)
		}
	}
}

func TestGaussianMoments(t *testing.T) {
	for _, seed := range []byte{1, 2, 3} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			checkStandardMoments(t, draws(seeded(seed), 200_000), 4.5)
		})
	}
}

// ksStatistic is the Kolmogorov–Smirnov distance between the empirical
// distribution of x and the standard normal CDF Φ(x) = erfc(−x/√2)/2.
func ksStatistic(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	n := float64(len(s))
	var d float64
	for i, v := range s {
		f := 0.5 * math.Erfc(-v/math.Sqrt2)
		d = math.Max(d, math.Max(float64(i+1)/n-f, f-float64(i)/n))
	}
	return d
}

func TestGaussianKolmogorovSmirnov(t *testing.T) {
	const n = 50_000
	// Critical value of the one-sample KS test at significance 0.001:
	// 1.9495/√n (asymptotic Kolmogorov distribution).
	crit := 1.9495 / math.Sqrt(n)
	for _, seed := range []byte{1, 2, 3, 4} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			if d := ksStatistic(draws(seeded(seed), n)); d > crit {
				t.Errorf("KS distance %.5f > critical %.5f", d, crit)
			}
		})
	}
	// The test has power: 5% too much spread, or a shift by 0.03σ, is
	// detected at this sample size.
	for name, f := range map[string]func(float64) float64{
		"scaled":  func(x float64) float64 { return 1.05 * x },
		"shifted": func(x float64) float64 { return x + 0.03 },
	} {
		x := draws(seeded(9), n)
		for i := range x {
			x[i] = f(x[i])
		}
		if d := ksStatistic(x); d <= crit {
			t.Errorf("%s normal passes the KS test (%.5f <= %.5f)", name, d, crit)
		}
	}
}

func TestGaussianCryptoSource(t *testing.T) {
	// Not reproducible by design; 6 standard errors make a false failure
	// a one-in-10^8 event.
	checkStandardMoments(t, draws(NewGaussian(nil), 100_000), 6)
	a, b := draws(NewGaussian(nil), 4), draws(NewGaussian(nil), 4)
	if slices.Equal(a, b) {
		t.Fatal("two crypto-seeded samplers produced the same draws")
	}
}

func TestGaussianDeterministicPerSeed(t *testing.T) {
	if !slices.Equal(draws(seeded(7), 100), draws(seeded(7), 100)) {
		t.Fatal("same seed, different draws")
	}
	if slices.Equal(draws(seeded(7), 100), draws(seeded(8), 100)) {
		t.Fatal("different seeds, same draws")
	}
}

func sampleStd(v []float32) float64 {
	x := make([]float64, len(v))
	for i, f := range v {
		x[i] = float64(f)
	}
	return math.Sqrt(sampleMoments(x).variance)
}

func TestAddCentralNoise(t *testing.T) {
	sum := make([]float32, 100_000)
	if err := AddCentralNoise(sum, 1.1, 0.5, seeded(1)); err != nil {
		t.Fatal(err)
	}
	if s := sampleStd(sum); math.Abs(s-0.55)/0.55 > 0.01 {
		t.Fatalf("noise stddev %v, want 0.55", s)
	}
	// nil sampler: crypto default.
	clear(sum)
	if err := AddCentralNoise(sum, 2, 1, nil); err != nil {
		t.Fatal(err)
	}
	if s := sampleStd(sum); math.Abs(s-2)/2 > 0.02 {
		t.Fatalf("noise stddev %v, want 2", s)
	}
}

// TestDistributedNoiseSumsToCentral checks the distributed mechanism: the
// sum of n sites' shares carries noise of stddev z·C·√(n/n_min), at least
// the central z·C when n ≥ n_min, and less when fewer survive.
func TestDistributedNoiseSumsToCentral(t *testing.T) {
	const (
		z, clip = 1.2, 0.8
		minC    = 5
		dim     = 40_000
	)
	g := seeded(3)
	for _, sites := range []int{minC, 8, 3} {
		t.Run(fmt.Sprintf("sites=%d", sites), func(t *testing.T) {
			sum := make([]float32, dim)
			for range sites {
				update := make([]float32, dim)
				if err := AddDistributedNoise(update, z, clip, minC, g); err != nil {
					t.Fatal(err)
				}
				for i := range sum {
					sum[i] += update[i]
				}
			}
			want := z * clip * math.Sqrt(float64(sites)/minC)
			if s := sampleStd(sum); math.Abs(s-want)/want > 0.015 {
				t.Fatalf("noise stddev of the sum %v, want %v", s, want)
			}
		})
	}
	std, err := DistributedStddev(z, clip, minC)
	if err != nil || math.Abs(std-z*clip/math.Sqrt(minC)) > 1e-15 {
		t.Fatalf("DistributedStddev = %v, %v", std, err)
	}
}

func TestNoiseValidation(t *testing.T) {
	v := []float32{1, 2}
	tests := []struct {
		name string
		err  error
	}{
		{"central zero noise", AddCentralNoise(v, 0, 1, nil)},
		{"central nan noise", AddCentralNoise(v, math.NaN(), 1, nil)},
		{"central zero clip", AddCentralNoise(v, 1, 0, nil)},
		{"central inf clip", AddCentralNoise(v, 1, math.Inf(1), nil)},
		{"distributed zero contributors", AddDistributedNoise(v, 1, 1, 0, nil)},
		{"distributed negative noise", AddDistributedNoise(v, -1, 1, 3, nil)},
		{"negative stddev", seeded(1).AddNoise(v, -1)},
		{"nan stddev", seeded(1).AddNoise(v, math.NaN())},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrInvalidParameter) {
			t.Errorf("%s: err = %v, want ErrInvalidParameter", tt.name, tt.err)
		}
	}
	if v[0] != 1 || v[1] != 2 {
		t.Fatalf("rejected calls modified the vector: %v", v)
	}
	if _, err := SplitStddev(-1, 3); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("SplitStddev(-1, 3): %v", err)
	}
}
