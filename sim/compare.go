package sim

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/coordinator"
)

// Comparison is several aggregation rules run on the same data with the
// same seeds, next to the centralized and local-only baselines.
type Comparison struct {
	// Title heads the Markdown table ("Aggregation rules compared" when
	// empty).
	Title   string   `json:"title,omitempty"`
	Dataset string   `json:"dataset"`
	Sites   int      `json:"sites"`
	Rounds  int      `json:"rounds"`
	Seeds   []uint64 `json:"seeds"`
	// Centralized and LocalOnly are AUROC per seed; SiteAlone per site and
	// seed.
	Centralized []float64            `json:"centralized"`
	LocalOnly   []float64            `json:"local_only_mean"`
	SiteAlone   map[string][]float64 `json:"site_alone"`
	Rules       []RuleResult         `json:"rules"`
}

// RuleResult is one rule's federated AUROC per seed.
type RuleResult struct {
	Spec aggregator.Spec `json:"spec"`
	// Privacy is the job's differential privacy (nil: none), its noise
	// multiplier as planned.
	Privacy *coordinator.PrivacySpec `json:"privacy,omitempty"`
	AUROC   []float64                `json:"auroc"`
	// Epsilon is the ε each seed's run spent.
	Epsilon []float64 `json:"epsilon,omitempty"`
}

// Compare runs base once per rule and seed (the seed decides the data
// split, the validation split and training) and collects the AUROCs.
// Progress goes to out.
func Compare(ctx context.Context, base Config, rules []aggregator.Spec, seeds []uint64, out io.Writer) (*Comparison, error) {
	if len(rules) == 0 || len(seeds) == 0 {
		return nil, fmt.Errorf("sim: compare needs at least one rule and one seed")
	}
	for _, r := range rules {
		if _, err := aggregator.New(r); err != nil {
			return nil, fmt.Errorf("sim: compare: %w", err)
		}
	}
	var variants []RuleResult
	for _, r := range rules {
		variants = append(variants, RuleResult{Spec: r})
	}
	return compare(ctx, base, variants, seeds, out)
}

// ComparePrivacy runs base's rule once per ε budget (0: without
// differential privacy) and seed; each private job's noise is planned so
// that its rounds spend the budget (base.Privacy, if set, gives the clip
// norm and δ).
func ComparePrivacy(ctx context.Context, base Config, budgets []float64, seeds []uint64, out io.Writer) (*Comparison, error) {
	if len(budgets) == 0 || len(seeds) == 0 {
		return nil, fmt.Errorf("sim: compare needs at least one budget and one seed")
	}
	var variants []RuleResult
	for _, eps := range budgets {
		v := RuleResult{Spec: base.Strategy}
		if eps > 0 {
			p := coordinator.PrivacySpec{ClipNorm: 0.5, Epsilon: eps}
			if base.Privacy != nil {
				p.ClipNorm, p.Delta = base.Privacy.ClipNorm, base.Privacy.Delta
			}
			v.Privacy = &p
		}
		variants = append(variants, v)
	}
	c, err := compare(ctx, base, variants, seeds, out)
	if c != nil {
		c.Title = "Differential privacy budgets compared"
	}
	return c, err
}

func compare(ctx context.Context, base Config, variants []RuleResult, seeds []uint64, out io.Writer) (*Comparison, error) {
	if out == nil {
		out = io.Discard
	}
	c := &Comparison{Rounds: base.Rounds, Seeds: seeds, SiteAlone: map[string][]float64{}}
	for i, res := range variants {
		r := res.Spec
		for _, seed := range seeds {
			cfg := base
			cfg.Seed, cfg.Strategy, cfg.Out, cfg.Privacy = seed, r, nil, res.Privacy
			fmt.Fprintf(out, "compare: %s, seed %d ...", describeVariant(res), seed)
			rep, err := Run(ctx, cfg)
			if err != nil {
				fmt.Fprintln(out)
				return c, fmt.Errorf("sim: %s, seed %d: %w", r.Name, seed, err)
			}
			fmt.Fprintf(out, " auroc %.4f (centralized %.4f) in %.0fs\n", rep.Federated.AUROC, rep.Centralized.AUROC, rep.WallSeconds)
			res.AUROC = append(res.AUROC, rep.Federated.AUROC)
			if p := rep.Privacy; p != nil {
				res.Epsilon = append(res.Epsilon, p.EpsilonSpent)
				if res.Privacy != nil {
					planned := *res.Privacy
					planned.NoiseMultiplier, planned.Delta = p.NoiseMultiplier, p.Delta
					res.Privacy = &planned
				}
			}
			if i == 0 {
				c.Dataset, c.Sites = rep.Dataset, rep.Sites
				c.Centralized = append(c.Centralized, rep.Centralized.AUROC)
				c.LocalOnly = append(c.LocalOnly, rep.LocalOnly.MeanAUROC)
				for s, a := range rep.LocalOnly.Sites {
					c.SiteAlone[s] = append(c.SiteAlone[s], a)
				}
			}
		}
		c.Rules = append(c.Rules, res)
	}
	return c, nil
}

// describeVariant names a rule and, for a private run, its budget.
func describeVariant(v RuleResult) string {
	s := describeRule(v.Spec)
	if p := v.Privacy; p != nil {
		s += fmt.Sprintf(", DP ε=%g", p.Epsilon)
		if p.NoiseMultiplier > 0 {
			s += fmt.Sprintf(" (noise multiplier %.3g, clip %g, δ=%g)", p.NoiseMultiplier, p.ClipNorm, p.Delta)
		}
	}
	return s
}

func describeRule(r aggregator.Spec) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.Params)) {
		parts = append(parts, fmt.Sprintf("%s=%g", k, r.Params[k]))
	}
	if r.NormBound > 0 {
		parts = append(parts, fmt.Sprintf("norm_bound=%g", r.NormBound))
	}
	if len(parts) == 0 {
		return r.Name
	}
	return r.Name + " (" + strings.Join(parts, ", ") + ")"
}

func meanMinMax(v []float64) (mean, lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range v {
		mean += x
		lo, hi = min(lo, x), max(hi, x)
	}
	return mean / float64(len(v)), lo, hi
}

// Markdown renders the comparison as a table: mean AUROC over the seeds,
// with the range, and the difference from centralized training.
func (c *Comparison) Markdown(command string) string {
	var b strings.Builder
	central, _, _ := meanMinMax(c.Centralized)
	title := c.Title
	if title == "" {
		title = "Aggregation rules compared"
	}
	fmt.Fprintf(&b, "# %s: %s\n\n", title, c.Dataset)
	fmt.Fprintf(&b, "Dataset: %s, %d sites, %d rounds, seeds %s. AUROC on the held-out test set, mean over the seeds (min–max).\n\n",
		c.Dataset, c.Sites, c.Rounds, joinSeeds(c.Seeds))
	fmt.Fprintf(&b, "Produced by:\n\n```sh\n%s\n```\n\n", command)
	b.WriteString("| model | AUROC | min–max | vs centralized |\n|---|---|---|---|\n")
	row := func(name string, v []float64) {
		m, lo, hi := meanMinMax(v)
		fmt.Fprintf(&b, "| %s | %.4f | %.4f–%.4f | %+.4f |\n", name, m, lo, hi, m-central)
	}
	row("centralized (pooled data)", c.Centralized)
	row("each site alone, mean", c.LocalOnly)
	for _, s := range slices.Sorted(maps.Keys(c.SiteAlone)) {
		row("site "+s+" alone", c.SiteAlone[s])
	}
	best, bestName := math.Inf(-1), ""
	for _, r := range c.Rules {
		row("federated, "+describeVariant(r), r.AUROC)
		if m, _, _ := meanMinMax(r.AUROC); m > best {
			best, bestName = m, describeVariant(r)
		}
	}
	fmt.Fprintf(&b, "\nBest federated rule: %s, %.4f, %+.4f from centralized.\n", bestName, best, best-central)
	return b.String()
}

func joinSeeds(s []uint64) string {
	var p []string
	for _, x := range s {
		p = append(p, fmt.Sprint(x))
	}
	return strings.Join(p, ", ")
}
