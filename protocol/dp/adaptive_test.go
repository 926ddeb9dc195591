package dp

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestAdjustedNoiseMultiplier(t *testing.T) {
	tests := []struct{ z, sigmaB, want float64 }{
		// z=1, σ_b=5: (1 − 1/100)^−1/2.
		{1, 5, 1 / math.Sqrt(0.99)},
		// Andrew et al.'s recommendation σ_b = m/20 at m = 100 sites and
		// z = 1.1: σ_b = 5.
		{1.1, 5, 1 / math.Sqrt(1/1.21-0.01)},
		{0.5, 0.3, 1 / math.Sqrt(4-1/0.36)},
	}
	for _, tt := range tests {
		got, err := AdjustedNoiseMultiplier(tt.z, tt.sigmaB)
		if err != nil {
			t.Fatalf("(%v, %v): %v", tt.z, tt.sigmaB, err)
		}
		if math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("(%v, %v) = %v, want %v", tt.z, tt.sigmaB, got, tt.want)
		}
		// The update mechanism (z_Δ) and the count mechanism (2σ_b)
		// compose to exactly the stated multiplier.
		if comp := 1 / math.Sqrt(1/(got*got)+1/(4*tt.sigmaB*tt.sigmaB)); math.Abs(comp-tt.z) > 1e-12 {
			t.Errorf("(%v, %v): composed multiplier %v", tt.z, tt.sigmaB, comp)
		}
		if got <= tt.z {
			t.Errorf("(%v, %v): adjusted %v not above %v", tt.z, tt.sigmaB, got, tt.z)
		}
	}
	for _, bad := range []struct{ z, sigmaB float64 }{
		{1, 0.5}, // 2σ_b == z: no budget left for the updates
		{1, 0.4},
		{0, 1},
		{1, 0},
		{1, math.NaN()},
	} {
		if _, err := AdjustedNoiseMultiplier(bad.z, bad.sigmaB); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("(%v, %v): err = %v, want ErrInvalidParameter", bad.z, bad.sigmaB, err)
		}
	}
}

func TestAdaptiveClipConfigValidate(t *testing.T) {
	if err := DefaultAdaptiveClipConfig(100).Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	d := DefaultAdaptiveClipConfig(100)
	if d.InitialClip != 0.1 || d.TargetQuantile != 0.5 || d.LearningRate != 0.2 || d.CountStddev != 5 {
		t.Fatalf("defaults %+v", d)
	}
	tests := []struct {
		name string
		mod  func(*AdaptiveClipConfig)
	}{
		{"zero initial clip", func(c *AdaptiveClipConfig) { c.InitialClip = 0 }},
		{"inf initial clip", func(c *AdaptiveClipConfig) { c.InitialClip = math.Inf(1) }},
		{"quantile zero", func(c *AdaptiveClipConfig) { c.TargetQuantile = 0 }},
		{"quantile one", func(c *AdaptiveClipConfig) { c.TargetQuantile = 1 }},
		{"quantile nan", func(c *AdaptiveClipConfig) { c.TargetQuantile = math.NaN() }},
		{"zero learning rate", func(c *AdaptiveClipConfig) { c.LearningRate = 0 }},
		{"negative count stddev", func(c *AdaptiveClipConfig) { c.CountStddev = -1 }},
		{"zero expected contributors", func(c *AdaptiveClipConfig) { c.ExpectedContributors = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultAdaptiveClipConfig(100)
			tt.mod(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("err = %v, want ErrInvalidParameter", err)
			}
			if _, err := NewAdaptiveClipper(c); !errors.Is(err, ErrInvalidParameter) {
				t.Fatalf("NewAdaptiveClipper: err = %v, want ErrInvalidParameter", err)
			}
		})
	}
}

func TestAdaptiveClipperUpdate(t *testing.T) {
	cfg := AdaptiveClipConfig{InitialClip: 1, TargetQuantile: 0.5, LearningRate: 0.2, CountStddev: 0.5, ExpectedContributors: 10}
	tests := []struct {
		name     string
		noisySum float64
		want     float64
	}{
		// All ten under the clip: b̄ = 1, C·exp(−0.2·0.5).
		{"all unclipped", 5, math.Exp(-0.1)},
		// All clipped: b̄ = 0, C·exp(0.1).
		{"all clipped", -5, math.Exp(0.1)},
		// Half: at the target, no change.
		{"at target", 0, 1},
		// 8 of 10 unclipped: b̄ = 0.8.
		{"eight of ten", 3, math.Exp(-0.2 * 0.3)},
		// Noise pushing the estimate out of [0, 1] is clamped.
		{"clamped high", 50, math.Exp(-0.1)},
		{"clamped low", -50, math.Exp(0.1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAdaptiveClipper(cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Update(tt.noisySum)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got-tt.want) > 1e-15 || a.Clip() != got {
				t.Fatalf("clip %v (Clip() %v), want %v", got, a.Clip(), tt.want)
			}
		})
	}
	a, _ := NewAdaptiveClipper(cfg)
	for _, bad := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := a.Update(bad); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("Update(%v): err = %v", bad, err)
		}
	}
	if a.Clip() != 1 {
		t.Fatalf("rejected update changed the clip to %v", a.Clip())
	}
}

// TestAdaptiveClippingConverges runs the full protocol on synthetic update
// norms (log-normal, so the γ-quantile is exp(Φ^−1(γ))) with 1000 sites
// per round and the recommended noise σ_b = m/20, starting from C_0 = 0.1:
// the clip settles near the target quantile of the norms.
func TestAdaptiveClippingConverges(t *testing.T) {
	for _, tc := range []struct{ gamma, quantile float64 }{
		{0.5, 1},                  // median of lognormal(0, 1)
		{0.8, math.Exp(0.841621)}, // Φ^−1(0.8) = 0.841621
	} {
		t.Run(fmt.Sprintf("gamma=%v", tc.gamma), func(t *testing.T) {
			const m = 1000
			cfg := DefaultAdaptiveClipConfig(m)
			cfg.TargetQuantile = tc.gamma
			a, err := NewAdaptiveClipper(cfg)
			if err != nil {
				t.Fatal(err)
			}
			data := rand.New(rand.NewChaCha8([32]byte{42}))
			noise := seeded(43)
			var tail float64
			const rounds, last = 300, 100
			for r := range rounds {
				var sum float64
				for range m {
					norm := math.Exp(data.NormFloat64())
					sum += CountBit(norm > a.Clip())
				}
				noisy, err := a.NoisyCount(sum, noise)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := a.Update(noisy); err != nil {
					t.Fatal(err)
				}
				if r >= rounds-last {
					tail += math.Log(a.Clip()) / last
				}
			}
			if got := math.Exp(tail); math.Abs(got-tc.quantile)/tc.quantile > 0.1 {
				t.Fatalf("clip settled at %v, target quantile %v", got, tc.quantile)
			}
		})
	}
}

func TestCountBits(t *testing.T) {
	if CountBit(false) != 0.5 || CountBit(true) != -0.5 {
		t.Fatal("CountBit is not the centred indicator of ‖Δ‖ ≤ C")
	}
	// Distributed: n_min shares of N(0, σ_b²/n_min) sum to σ_b.
	const sigmaB, minC, trials = 2.0, 4, 40_000
	g := seeded(5)
	var sum2 float64
	for range trials {
		var s float64
		for range minC {
			b, err := NoisyCountBit(false, sigmaB, minC, g)
			if err != nil {
				t.Fatal(err)
			}
			s += b - 0.5
		}
		sum2 += s * s
	}
	if std := math.Sqrt(sum2 / trials); math.Abs(std-sigmaB)/sigmaB > 0.02 {
		t.Fatalf("summed count noise stddev %v, want %v", std, sigmaB)
	}
	if _, err := NoisyCountBit(true, 0, 3, nil); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("zero count stddev: %v", err)
	}
	if _, err := NoisyCountBit(true, 1, 0, nil); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("zero contributors: %v", err)
	}
}

func TestAdaptiveClipperJSON(t *testing.T) {
	a, err := NewAdaptiveClipper(DefaultAdaptiveClipConfig(40))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(7); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back AdaptiveClipper
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	if back.Clip() != a.Clip() || back.Config() != a.Config() {
		t.Fatalf("round trip: %+v %v, want %+v %v", back.Config(), back.Clip(), a.Config(), a.Clip())
	}
	for _, bad := range []string{
		`{"config":{"initial_clip":0.1,"target_quantile":0.5,"learning_rate":0.2,"count_stddev":2,"expected_contributors":40},"clip":0}`,
		`{"config":{"initial_clip":0.1,"target_quantile":1.5,"learning_rate":0.2,"count_stddev":2,"expected_contributors":40},"clip":1}`,
		`{"config":{},"clip":1}`,
		`{"clip":1,"extra":true}`,
		`[]`,
	} {
		if err := back.UnmarshalJSON([]byte(bad)); !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: err = %v, want ErrInvalidState", bad, err)
		}
	}
	if back.Clip() != a.Clip() {
		t.Fatal("failed decode changed the clipper")
	}
}

func TestAdaptiveClipperNoiseMultiplier(t *testing.T) {
	a, _ := NewAdaptiveClipper(DefaultAdaptiveClipConfig(100)) // σ_b = 5
	zd, err := a.NoiseMultiplier(1)
	if err != nil || math.Abs(zd-1/math.Sqrt(0.99)) > 1e-12 {
		t.Fatalf("NoiseMultiplier(1) = %v, %v", zd, err)
	}
	// Five sites per round: σ_b = 0.25 cannot pay for z = 1.
	small, _ := NewAdaptiveClipper(DefaultAdaptiveClipConfig(5))
	if _, err := small.NoiseMultiplier(1); !errors.Is(err, ErrInvalidParameter) {
		t.Fatalf("σ_b = 0.25 at z = 1: err = %v", err)
	}
}
