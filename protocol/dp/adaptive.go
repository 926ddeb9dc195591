package dp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
)

// Adaptive clipping after Andrew, Thakkar, McMahan and Ramaswamy,
// "Differentially Private Learning with Adaptive Clipping" (NeurIPS 2021;
// arXiv:1905.03871), with geometric updates, as in TF Privacy's
// QuantileEstimatorQuery / QuantileAdaptiveClipSumQuery:
//
//   - in round t every participating site clips its update to C_t and
//     reports the bit b_i = 1[‖Δ_i‖ ≤ C_t], centred as b_i − ½ (CountBit) so
//     that one site changes the count by at most ½;
//   - the coordinator obtains the sum of the centred bits plus
//     N(0, σ_b²) (central noise, NoisyCount, or each site's share of it,
//     NoisyCountBit), and estimates the unclipped fraction
//     b̄ = sum/m + ½, clamped to [0, 1], with m the expected number of
//     contributors;
//   - C_{t+1} = C_t · exp(−η_C (b̄ − γ)).
//
// Releasing the count costs privacy. Its noise multiplier is 2σ_b (noise
// σ_b over sensitivity ½), and the Gaussian mechanisms on the update sum
// and on the count compose like one Gaussian mechanism whose multiplier z
// satisfies z^−2 = z_Δ^−2 + (2σ_b)^−2. So to keep the round's cost that of
// the stated multiplier z, the update sum is noised with
//
//	z_Δ = (z^−2 − (2σ_b)^−2)^−1/2   (AdjustedNoiseMultiplier)
//
// and the accountant records a step with z itself.

// AdaptiveClipConfig configures adaptive clipping. The zero value is not
// valid; start from DefaultAdaptiveClipConfig.
type AdaptiveClipConfig struct {
	// InitialClip is C_0, the clip norm of the first round (> 0). Andrew
	// et al. recommend 0.1; the geometric update makes the choice matter
	// little.
	InitialClip float64 `json:"initial_clip"`
	// TargetQuantile is γ, the fraction of updates that should end up
	// unclipped, in (0, 1). Andrew et al. recommend 0.5 (the median).
	TargetQuantile float64 `json:"target_quantile"`
	// LearningRate is η_C (> 0): C changes by at most a factor exp(η_C)
	// per round. Andrew et al. recommend 0.2.
	LearningRate float64 `json:"learning_rate"`
	// CountStddev is σ_b (> 0), the standard deviation of the noise on the
	// sum of centred bits. Andrew et al. recommend ExpectedContributors/20.
	// It must exceed half the job's noise multiplier (see
	// AdjustedNoiseMultiplier), so small federations pay for adaptivity
	// with more noise on the updates.
	CountStddev float64 `json:"count_stddev"`
	// ExpectedContributors is m (> 0), the expected number of sites per
	// round (sample rate × sites). It is a public constant of the job, not
	// the realized count, which would itself depend on who took part.
	ExpectedContributors float64 `json:"expected_contributors"`
}

// DefaultAdaptiveClipConfig returns Andrew et al.'s recommended settings
// for a job that expects expectedContributors sites per round: C_0 = 0.1,
// γ = 0.5, η_C = 0.2, σ_b = m/20.
func DefaultAdaptiveClipConfig(expectedContributors float64) AdaptiveClipConfig {
	return AdaptiveClipConfig{
		InitialClip:          0.1,
		TargetQuantile:       0.5,
		LearningRate:         0.2,
		CountStddev:          expectedContributors / 20,
		ExpectedContributors: expectedContributors,
	}
}

// Validate reports the first out-of-range field.
func (c AdaptiveClipConfig) Validate() error {
	if !finite(c.InitialClip) || c.InitialClip <= 0 {
		return invalidf("initial clip %v must be a finite number > 0", c.InitialClip)
	}
	if !finite(c.TargetQuantile) || c.TargetQuantile <= 0 || c.TargetQuantile >= 1 {
		return invalidf("target quantile %v must be in (0, 1)", c.TargetQuantile)
	}
	if !finite(c.LearningRate) || c.LearningRate <= 0 {
		return invalidf("clip learning rate %v must be a finite number > 0", c.LearningRate)
	}
	if !finite(c.CountStddev) || c.CountStddev <= 0 {
		return invalidf("count noise stddev %v must be a finite number > 0", c.CountStddev)
	}
	if !finite(c.ExpectedContributors) || c.ExpectedContributors <= 0 {
		return invalidf("expected contributors %v must be a finite number > 0", c.ExpectedContributors)
	}
	return nil
}

// AdjustedNoiseMultiplier returns z_Δ = (z^−2 − (2σ_b)^−2)^−1/2, the noise
// multiplier to apply to the update sum when the clipped count is released
// with noise σ_b, so that the round costs exactly what a Gaussian mechanism
// with multiplier z costs (Andrew et al., Section 3). It needs 2σ_b > z.
func AdjustedNoiseMultiplier(noiseMultiplier, countStddev float64) (float64, error) {
	if err := checkNoiseMultiplier(noiseMultiplier); err != nil {
		return 0, err
	}
	if !finite(countStddev) || countStddev <= 0 {
		return 0, invalidf("count noise stddev %v must be a finite number > 0", countStddev)
	}
	inv := 1/(noiseMultiplier*noiseMultiplier) - 1/(4*countStddev*countStddev)
	if inv <= 0 {
		return 0, invalidf("count noise stddev %v leaves no budget for the updates at noise multiplier %v; it must exceed %v",
			countStddev, noiseMultiplier, noiseMultiplier/2)
	}
	zd := 1 / math.Sqrt(inv)
	if !finite(zd) {
		return 0, invalidf("count noise stddev %v too close to half the noise multiplier %v", countStddev, noiseMultiplier)
	}
	return zd, nil
}

// CountBit is a site's centred contribution to the clipped count: +½ when
// its update's norm was within the round's clip (ClipL2 returned
// clipped == false), −½ when it had to be clipped.
func CountBit(clipped bool) float64 {
	if clipped {
		return -0.5
	}
	return 0.5
}

// NoisyCountBit is CountBit plus the site's share of the count noise,
// N(0, σ_b²/minContributors), for rounds under secure aggregation; the
// survivor assumption of DistributedStddev applies. A nil g draws from a
// cryptographically secure source.
func NoisyCountBit(clipped bool, countStddev float64, minContributors int, g *Gaussian) (float64, error) {
	if !finite(countStddev) || countStddev <= 0 {
		return 0, invalidf("count noise stddev %v must be a finite number > 0", countStddev)
	}
	std, err := SplitStddev(countStddev, minContributors)
	if err != nil {
		return 0, err
	}
	return CountBit(clipped) + std*orCrypto(g).Normal(), nil
}

// AdaptiveClipper holds the clip norm of a job with adaptive clipping. It
// is JSON-serializable so the coordinator can keep it in Raft. It is not
// safe for concurrent use.
type AdaptiveClipper struct {
	cfg  AdaptiveClipConfig
	clip float64
}

// NewAdaptiveClipper returns a clipper at cfg.InitialClip.
func NewAdaptiveClipper(cfg AdaptiveClipConfig) (*AdaptiveClipper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &AdaptiveClipper{cfg: cfg, clip: cfg.InitialClip}, nil
}

// Config returns the configuration.
func (a *AdaptiveClipper) Config() AdaptiveClipConfig { return a.cfg }

// Clip returns the clip norm C_t for the current round.
func (a *AdaptiveClipper) Clip() float64 { return a.clip }

// NoiseMultiplier returns the multiplier z_Δ to noise the current round's
// update sum with (standard deviation z_Δ·C_t) so that the round costs what
// noiseMultiplier states; see AdjustedNoiseMultiplier.
func (a *AdaptiveClipper) NoiseMultiplier(noiseMultiplier float64) (float64, error) {
	return AdjustedNoiseMultiplier(noiseMultiplier, a.cfg.CountStddev)
}

// NoisyCount adds the central count noise N(0, σ_b²) to sum, the sum of
// the participating sites' CountBit values, for rounds without secure
// aggregation. A nil g draws from a cryptographically secure source.
func (a *AdaptiveClipper) NoisyCount(sum float64, g *Gaussian) (float64, error) {
	if !finite(sum) {
		return 0, invalidf("count sum %v must be finite", sum)
	}
	return sum + a.cfg.CountStddev*orCrypto(g).Normal(), nil
}

// Update ends a round: given the noised sum of centred bits (NoisyCount,
// or the unmasked sum of NoisyCountBit values) it estimates the unclipped
// fraction b̄ = noisySum/m + ½, clamped to [0, 1], moves the clip to
// C·exp(−η_C(b̄ − γ)) and returns the new clip. On error the clip is
// unchanged.
func (a *AdaptiveClipper) Update(noisySum float64) (float64, error) {
	if !finite(noisySum) {
		return 0, invalidf("noised count %v must be finite", noisySum)
	}
	frac := min(1, max(0, noisySum/a.cfg.ExpectedContributors+0.5))
	next := a.clip * math.Exp(-a.cfg.LearningRate*(frac-a.cfg.TargetQuantile))
	if !finite(next) || next <= 0 {
		return 0, invalidf("clip norm left the float64 range (%v)", next)
	}
	a.clip = next
	return next, nil
}

type adaptiveClipperJSON struct {
	Config AdaptiveClipConfig `json:"config"`
	Clip   float64            `json:"clip"`
}

// MarshalJSON encodes the configuration and the current clip. Like
// Accountant's, it has a value receiver.
func (a AdaptiveClipper) MarshalJSON() ([]byte, error) {
	return json.Marshal(adaptiveClipperJSON{Config: a.cfg, Clip: a.clip})
}

// UnmarshalJSON decodes and validates state written by MarshalJSON.
func (a *AdaptiveClipper) UnmarshalJSON(b []byte) error {
	var s adaptiveClipperJSON
	if err := decodeStrict(b, &s); err != nil {
		return err
	}
	if err := s.Config.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	if err := checkClip(s.Clip); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	a.cfg, a.clip = s.Config, s.Clip
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the JSON value", ErrInvalidState)
	}
	return nil
}
