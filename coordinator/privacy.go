package coordinator

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/protocol/dp"
)

// Central differential privacy for a job: DP-FedAvg (McMahan, Ramage,
// Talwar, Zhang, "Learning Differentially Private Recurrent Language
// Models", ICLR 2018). The leader clips every site's update to ClipNorm,
// averages them unweighted (each site counts once, whatever its sample
// count), and adds Gaussian noise of standard deviation
// NoiseMultiplier·ClipNorm to the sum before dividing by the number of
// contributors. The unit of privacy is a site's participation in a round.
// A Rényi-DP accountant (protocol/dp) for the subsampled Gaussian, with
// sample rate = sites asked / sites enrolled, composes the rounds; its
// state and the spent ε are replicated with each committed round. The
// leader refuses to open a round that would take the job past its ε
// budget at its δ: the job then ends, done, saying so.

// PrivacySpec is a job's differential-privacy configuration.
type PrivacySpec struct {
	// ClipNorm bounds each site's update (L2), > 0.
	ClipNorm float64 `json:"clip_norm"`
	// NoiseMultiplier z: the noise on the sum has standard deviation
	// z·ClipNorm, > 0. Zero plans it: the smallest z with which all the
	// job's rounds fit the budget (see Plan).
	NoiseMultiplier float64 `json:"noise_multiplier,omitempty"`
	// Epsilon is the job's privacy budget, > 0.
	Epsilon float64 `json:"epsilon"`
	// Delta is the δ of (ε, δ)-DP; default 1e-5.
	Delta float64 `json:"delta,omitempty"`
	// AdaptiveClipping, when set, moves the clip norm after every round
	// toward a quantile of the sites' update norms (Andrew et al. 2021);
	// ClipNorm is then the first round's clip.
	AdaptiveClipping *AdaptiveClipSpec `json:"adaptive_clipping,omitempty"`
}

// AdaptiveClipSpec configures adaptive clipping (Andrew, Thakkar, McMahan,
// Ramaswamy, "Differentially Private Learning with Adaptive Clipping",
// NeurIPS 2021). After each round the leader releases, with Gaussian noise
// of standard deviation CountStddev, how many sites' updates were within
// the clip, and moves the clip by a factor exp(−LearningRate·(b̄ − γ)),
// b̄ the estimated unclipped fraction and γ the TargetQuantile. The noise
// on the updates grows so that the round still costs what the job's noise
// multiplier z states (z_Δ = (z^−2 − (2σ_b)^−2)^−1/2), so the accountant
// and the budget are unchanged.
type AdaptiveClipSpec struct {
	// TargetQuantile γ of the update norms the clip tracks, in (0, 1);
	// default 0.5 (the median).
	TargetQuantile float64 `json:"target_quantile,omitempty"`
	// LearningRate η_C > 0; default 0.2.
	LearningRate float64 `json:"learning_rate,omitempty"`
	// CountStddev σ_b, the noise on the count of unclipped updates; it
	// must exceed half the noise multiplier. Default: the larger of
	// ExpectedSites/20 (Andrew et al.) and the noise multiplier.
	CountStddev float64 `json:"count_stddev,omitempty"`
	// ExpectedSites m, the expected number of sites per round (a public
	// constant of the job); default min_sites.
	ExpectedSites float64 `json:"expected_sites,omitempty"`
}

// adaptiveConfig is the protocol/dp configuration of the spec's adaptive
// clipping, defaults filled.
func (p *PrivacySpec) adaptiveConfig(minSites int) dp.AdaptiveClipConfig {
	a := p.AdaptiveClipping
	m := a.ExpectedSites
	if m == 0 {
		m = float64(minSites)
	}
	cfg := dp.DefaultAdaptiveClipConfig(m)
	cfg.InitialClip = p.ClipNorm
	if a.TargetQuantile != 0 {
		cfg.TargetQuantile = a.TargetQuantile
	}
	if a.LearningRate != 0 {
		cfg.LearningRate = a.LearningRate
	}
	cfg.CountStddev = max(cfg.CountStddev, p.NoiseMultiplier)
	if a.CountStddev != 0 {
		cfg.CountStddev = a.CountStddev
	}
	return cfg
}

// clipper returns the job's adaptive clipper as of its privacy state
// (a new one before the first round); nil without adaptive clipping.
func (p *PrivacySpec) clipper(st *PrivacyState, minSites int) (*dp.AdaptiveClipper, error) {
	if p.AdaptiveClipping == nil {
		return nil, nil
	}
	if st != nil && len(st.Clipper) > 0 {
		c := new(dp.AdaptiveClipper)
		if err := json.Unmarshal(st.Clipper, c); err != nil {
			return nil, fmt.Errorf("adaptive clipper: %w", err)
		}
		return c, nil
	}
	return dp.NewAdaptiveClipper(p.adaptiveConfig(minSites))
}

// roundClip is the clip norm and the noise multiplier on the update sum
// for the job's next round: ClipNorm and z, or under adaptive clipping the
// clipper's current clip and z_Δ.
func (p *PrivacySpec) roundClip(st *PrivacyState, minSites int) (clip, z float64, c *dp.AdaptiveClipper, err error) {
	if c, err = p.clipper(st, minSites); err != nil || c == nil {
		return p.ClipNorm, p.NoiseMultiplier, nil, err
	}
	z, err = c.NoiseMultiplier(p.NoiseMultiplier)
	return c.Clip(), z, c, err
}

// DefaultDelta is a job's δ when its spec names none.
const DefaultDelta = 1e-5

func (p *PrivacySpec) delta() float64 {
	if p.Delta == 0 {
		return DefaultDelta
	}
	return p.Delta
}

// Plan fills a zero NoiseMultiplier with the smallest one with which the
// job's rounds, each asking sampleRate of the sites, spend at most the
// budget. Called when a job is created (the leader replicates the result)
// and by tools that want to show it beforehand.
func (p *PrivacySpec) Plan(rounds int, sampleRate float64) error {
	if p.NoiseMultiplier != 0 {
		return nil
	}
	if !(p.Epsilon > 0) || p.Delta < 0 || p.Delta >= 1 {
		return fmt.Errorf("%w: privacy: epsilon must be positive and delta in (0, 1) to plan the noise", ErrInvalidJob)
	}
	z, err := dp.NoiseMultiplierFor(p.Epsilon, p.delta(), sampleRate, rounds)
	if err != nil {
		return fmt.Errorf("%w: privacy: no noise fits %d rounds in ε=%g at δ=%g: %w", ErrInvalidJob, rounds, p.Epsilon, p.delta(), err)
	}
	p.NoiseMultiplier = z
	return nil
}

// PlanPrivacy fills a private job's noise multiplier from its budget (see
// PrivacySpec.Plan), for rounds asking the sampled fraction of enrolled
// sites (1 when it samples by count: the safe bound).
func (s *JobSpec) PlanPrivacy() error {
	if s.Privacy == nil || s.Privacy.NoiseMultiplier != 0 {
		return nil
	}
	q := 1.0
	if f := s.Sampling.Fraction; f > 0 && s.Sampling.Count == 0 {
		q = f
	}
	p := *s.Privacy
	if err := p.Plan(s.Rounds, q); err != nil {
		return err
	}
	s.Privacy = &p
	return nil
}

// validate checks the spec against the job's rule: only the plain mean
// (fedavg, fedprox) is analysed; a server optimizer or a robust rule would
// need its own analysis.
func (p *PrivacySpec) validate(rule string, minSites int) error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case rule != "fedavg" && rule != "fedprox":
		return fmt.Errorf("%w: privacy: only fedavg and fedprox jobs can be differentially private, not %s", ErrInvalidJob, rule)
	case !(p.ClipNorm > 0) || !finite(p.ClipNorm):
		return fmt.Errorf("%w: privacy.clip_norm must be a positive number", ErrInvalidJob)
	case !(p.NoiseMultiplier > 0) || !finite(p.NoiseMultiplier):
		return fmt.Errorf("%w: privacy.noise_multiplier must be a positive number", ErrInvalidJob)
	case !(p.Epsilon > 0) || !finite(p.Epsilon):
		return fmt.Errorf("%w: privacy.epsilon (the budget) must be a positive number", ErrInvalidJob)
	case p.Delta < 0 || p.Delta >= 1 || !finite(p.Delta):
		return fmt.Errorf("%w: privacy.delta must be in (0, 1) (default %g)", ErrInvalidJob, DefaultDelta)
	}
	if a := p.AdaptiveClipping; a != nil {
		if a.TargetQuantile < 0 || a.LearningRate < 0 || a.CountStddev < 0 || a.ExpectedSites < 0 {
			return fmt.Errorf("%w: privacy.adaptive_clipping: values must be positive (or 0 for the defaults)", ErrInvalidJob)
		}
		cfg := p.adaptiveConfig(max(minSites, 1))
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%w: privacy.adaptive_clipping: %w", ErrInvalidJob, err)
		}
		if _, err := dp.AdjustedNoiseMultiplier(p.NoiseMultiplier, cfg.CountStddev); err != nil {
			return fmt.Errorf("%w: privacy.adaptive_clipping: count_stddev %g with noise_multiplier %g: %w", ErrInvalidJob, cfg.CountStddev, p.NoiseMultiplier, err)
		}
	}
	// Even one round with every site must fit the budget.
	var acc dp.Accountant
	over, eps, err := acc.WouldExceed(p.Epsilon, p.delta(), p.NoiseMultiplier, 1, 1)
	if err != nil {
		return fmt.Errorf("%w: privacy: %w", ErrInvalidJob, err)
	}
	if over {
		return fmt.Errorf("%w: privacy: one round with noise_multiplier %g already spends ε=%.3g, over the budget %g: raise the noise or the budget",
			ErrInvalidJob, p.NoiseMultiplier, eps, p.Epsilon)
	}
	return nil
}

// PrivacyState is what a job has spent, replicated with each committed
// round.
type PrivacyState struct {
	// Accountant is the protocol/dp accountant's state after the last
	// committed round.
	Accountant json.RawMessage `json:"accountant"`
	// Epsilon is the ε spent so far at the job's δ.
	Epsilon float64 `json:"epsilon"`
	// Rounds counts the rounds accounted for.
	Rounds int `json:"rounds"`
	// Clipper is the adaptive clipper's state after the last round, and
	// Clip the clip norm the next round uses (adaptive clipping only).
	Clipper json.RawMessage `json:"clipper,omitempty"`
	Clip    float64         `json:"clip,omitempty"`
}

// PrivacyStatus is a job's privacy as the admin API shows it.
type PrivacyStatus struct {
	EpsilonSpent    float64 `json:"epsilon_spent"`
	EpsilonBudget   float64 `json:"epsilon_budget"`
	Delta           float64 `json:"delta"`
	NoiseMultiplier float64 `json:"noise_multiplier"`
	ClipNorm        float64 `json:"clip_norm"`
	Rounds          int     `json:"rounds"`
	// CurrentClip is the clip norm of the next round under adaptive
	// clipping.
	CurrentClip float64 `json:"current_clip,omitempty"`
}

func privacyStatus(spec *PrivacySpec, st *PrivacyState) *PrivacyStatus {
	if spec == nil {
		return nil
	}
	s := &PrivacyStatus{EpsilonBudget: spec.Epsilon, Delta: spec.delta(), NoiseMultiplier: spec.NoiseMultiplier, ClipNorm: spec.ClipNorm}
	if st != nil {
		s.EpsilonSpent, s.Rounds, s.CurrentClip = st.Epsilon, st.Rounds, st.Clip
	}
	if spec.AdaptiveClipping != nil && s.CurrentClip == 0 {
		s.CurrentClip = spec.ClipNorm
	}
	return s
}

// PrivacyStatus is the job's spent and planned privacy; nil for a job
// without privacy.
func (j *Job) PrivacyStatus() *PrivacyStatus { return privacyStatus(j.Spec.Privacy, j.Privacy) }

// accountant decodes a job's accountant (a fresh one before its first
// private round).
func (st *PrivacyState) accountant() (*dp.Accountant, error) {
	acc := new(dp.Accountant)
	if st == nil || len(st.Accountant) == 0 {
		return acc, nil
	}
	if err := json.Unmarshal(st.Accountant, acc); err != nil {
		return nil, fmt.Errorf("privacy accountant: %w", err)
	}
	return acc, nil
}

// sampleRate is the fraction of enrolled sites a round asks.
func sampleRate(selected, enrolled int) float64 {
	if selected == 0 || enrolled == 0 || selected >= enrolled {
		return 1
	}
	return float64(selected) / float64(enrolled)
}

// budgetLeft reports whether the next round, asking `selected` of
// `enrolled` sites (0: all), fits the job's budget, and what ε it would
// bring the job to.
func budgetLeft(spec *PrivacySpec, st *PrivacyState, selected, enrolled int) (ok bool, projected float64, err error) {
	acc, err := st.accountant()
	if err != nil {
		return false, 0, err
	}
	over, eps, err := acc.WouldExceed(spec.Epsilon, spec.delta(), spec.NoiseMultiplier, sampleRate(selected, enrolled), 1)
	return !over && err == nil, eps, err
}

// privateRule wraps a job's rule for DP: updates clipped to the round's
// clip norm.
func privateRule(rule aggregator.Strategy, clip float64) aggregator.Strategy {
	return aggregator.NormBound{Rule: rule, Bound: clip}
}

// addPrivacyNoise adds the Gaussian mechanism's noise to the new global
// weights global + Σ clipped/n: N(0, (z·C/n)²) per weight, which is
// N(0, (z·C)²) on the sum.
func addPrivacyNoise(weights []float32, z, clip float64, contributors int, g *dp.Gaussian) error {
	std, err := dp.CentralStddev(z, clip)
	if err != nil {
		return err
	}
	if g == nil {
		g = dp.NewGaussian(nil) // a cryptographically secure source
	}
	return g.AddNoise(weights, std/float64(contributors))
}

// endPrivateRound accounts for the round (stepAccountant) and, under
// adaptive clipping, moves the clip with the round's noised count of
// unclipped updates and keeps the clipper in the state.
func endPrivateRound(spec *PrivacySpec, st *PrivacyState, c *dp.AdaptiveClipper, noisyCount float64, selected, enrolled int) (*PrivacyState, error) {
	next, err := stepAccountant(spec, st, selected, enrolled)
	if err != nil || c == nil {
		return next, err
	}
	if next.Clip, err = c.Update(noisyCount); err != nil {
		return nil, fmt.Errorf("adaptive clipping: %w", err)
	}
	if next.Clipper, err = json.Marshal(c); err != nil {
		return nil, err
	}
	return next, nil
}

// stepAccountant accounts for one more round of the job's Gaussian
// mechanism (asking selected of enrolled sites) and returns the state
// after it.
func stepAccountant(spec *PrivacySpec, st *PrivacyState, selected, enrolled int) (*PrivacyState, error) {
	acc, err := st.accountant()
	if err != nil {
		return nil, err
	}
	if err := acc.Step(spec.NoiseMultiplier, sampleRate(selected, enrolled), 1); err != nil {
		return nil, err
	}
	eps, _, err := acc.Epsilon(spec.delta())
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(acc)
	if err != nil {
		return nil, err
	}
	rounds := 1
	if st != nil {
		rounds = st.Rounds + 1
	}
	return &PrivacyState{Accountant: b, Epsilon: eps, Rounds: rounds}, nil
}
