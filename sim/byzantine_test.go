package sim

import (
	"context"
	"testing"

	"github.com/cohort-fl/cohort/aggregator"
)

// TestByzantineSites: one site of five attacks (sign-flipped ×10, scaled
// ×10, or Gaussian noise) in every round. FedAvg degrades under the
// sign flip; coordinate-wise median, trimmed mean and Krum stay within
// 0.02 AUROC of the clean FedAvg run under every attack.
func TestByzantineSites(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 13 simulations")
	}
	run := func(strategy aggregator.Spec, b Byzantine) float64 {
		t.Helper()
		cfg := DefaultConfig()
		cfg.Sites, cfg.Rounds, cfg.TestPatients = 5, 8, 1000
		cfg.Strategy, cfg.Byzantine = strategy, b
		rep, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s under %+v: %v", strategy.Name, b, err)
		}
		return rep.Federated.AUROC
	}
	clean := run(aggregator.Spec{Name: "fedavg"}, Byzantine{})
	t.Logf("clean FedAvg: AUROC %.4f", clean)
	robust := []aggregator.Spec{
		{Name: "median"},
		{Name: "trimmedmean", Params: map[string]float64{"beta": 0.2}},
		{Name: "krum", Params: map[string]float64{"f": 1}},
	}
	for _, attack := range Attacks {
		b := Byzantine{Sites: 1, Attack: attack}
		fedavg := run(aggregator.Spec{Name: "fedavg"}, b)
		t.Logf("%-9s FedAvg: AUROC %.4f", attack, fedavg)
		if attack == "signflip" && fedavg > clean-0.1 {
			t.Errorf("FedAvg under a sign-flip attack: AUROC %.4f, clean %.4f; the attack should hurt it", fedavg, clean)
		}
		for _, r := range robust {
			got := run(r, b)
			t.Logf("%-9s %s: AUROC %.4f", attack, r.Name, got)
			if got < clean-0.02 {
				t.Errorf("%s under %s: AUROC %.4f, more than 0.02 below the clean run's %.4f", r.Name, attack, got, clean)
			}
		}
	}
}
