package sim

import (
	"context"
	"strings"
	"testing"
)

// TestComparePrivacy runs the default federation without DP and at two
// budgets: each private run spends its budget, and its table row names
// the planned noise.
func TestComparePrivacy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 3 simulations")
	}
	cfg := DefaultConfig()
	cfg.Rounds = 4
	c, err := ComparePrivacy(context.Background(), cfg, []float64{0, 8, 1}, []uint64{1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rules) != 3 || c.Rules[0].Privacy != nil || len(c.Rules[0].Epsilon) != 0 {
		t.Fatalf("rows %+v", c.Rules)
	}
	for i, eps := range []float64{8, 1} {
		r := c.Rules[i+1]
		if r.Privacy == nil || r.Privacy.Epsilon != eps || r.Privacy.NoiseMultiplier <= 0 || len(r.Epsilon) != 1 ||
			r.Epsilon[0] > eps*(1+1e-9) || r.Epsilon[0] < 0.9*eps {
			t.Fatalf("ε=%g: %+v (privacy %+v)", eps, r, r.Privacy)
		}
	}
	if c.Rules[2].Privacy.NoiseMultiplier <= c.Rules[1].Privacy.NoiseMultiplier {
		t.Errorf("ε=1 planned less noise (%v) than ε=8 (%v)", c.Rules[2].Privacy.NoiseMultiplier, c.Rules[1].Privacy.NoiseMultiplier)
	}
	md := c.Markdown("cohort sim --compare-epsilon 0,8,1")
	for _, want := range []string{"Differential privacy budgets compared", "DP ε=8 (noise multiplier", "DP ε=1 (noise multiplier"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
}
