package dp

import (
	crand "crypto/rand"
	"math"
	"math/rand/v2"
)

// Source supplies uniformly distributed 64-bit values. *rand.ChaCha8 and
// *rand.PCG from math/rand/v2 satisfy it; tests pass a seeded one for
// reproducible noise. Production noise must come from NewCryptoSource (what
// a nil Source or a nil *Gaussian means everywhere in this package).
type Source interface {
	Uint64() uint64
}

// NewCryptoSource returns a cryptographically secure Source: a ChaCha8
// generator (math/rand/v2's CSPRNG) keyed with 32 bytes from crypto/rand.
// It is what NewGaussian(nil) uses.
func NewCryptoSource() Source {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (Go ≥ 1.24 crashes instead)
	return rand.NewChaCha8(seed)
}

// Gaussian draws normally distributed values from a Source with the
// Marsaglia polar method, using 52 random bits per coordinate. It is not
// safe for concurrent use.
type Gaussian struct {
	src      Source
	spare    float64
	hasSpare bool
}

// NewGaussian returns a sampler drawing from src; nil means
// NewCryptoSource().
func NewGaussian(src Source) *Gaussian {
	if src == nil {
		src = NewCryptoSource()
	}
	return &Gaussian{src: src}
}

// uniform returns a value uniform on a symmetric grid in (−1, 1), never 0:
// (2k+1)/2^52 − 1 for k uniform in [0, 2^52).
func (g *Gaussian) uniform() float64 {
	k := g.src.Uint64() >> 12
	return float64(2*k+1)/(1<<52) - 1
}

// Normal returns a draw from N(0, 1).
func (g *Gaussian) Normal() float64 {
	if g.hasSpare {
		g.hasSpare = false
		return g.spare
	}
	for {
		u, v := g.uniform(), g.uniform()
		s := u*u + v*v
		if s >= 1 {
			continue
		}
		f := math.Sqrt(-2 * math.Log(s) / s)
		g.spare, g.hasSpare = v*f, true
		return u * f
	}
}

// AddNoise adds independent N(0, stddev²) noise to every coordinate of v.
func (g *Gaussian) AddNoise(v []float32, stddev float64) error {
	if !finite(stddev) || stddev < 0 {
		return invalidf("noise standard deviation %v must be a finite number >= 0", stddev)
	}
	for i, x := range v {
		v[i] = float32(float64(x) + stddev*g.Normal())
	}
	return nil
}

func orCrypto(g *Gaussian) *Gaussian {
	if g == nil {
		return NewGaussian(nil)
	}
	return g
}

// CentralStddev is the standard deviation of the Gaussian mechanism's noise
// on a sum of updates each clipped to clip: noiseMultiplier · clip.
func CentralStddev(noiseMultiplier, clip float64) (float64, error) {
	if err := checkNoiseMultiplier(noiseMultiplier); err != nil {
		return 0, err
	}
	if err := checkClip(clip); err != nil {
		return 0, err
	}
	return noiseMultiplier * clip, nil
}

// AddCentralNoise adds N(0, (noiseMultiplier·clip)²) to every coordinate of
// sum, the sum of updates each clipped to clip (ClipL2). This is the
// central Gaussian mechanism: the coordinator noises the aggregate when
// secure aggregation is off (and so sees the individual clipped updates).
// A nil g draws from a cryptographically secure source.
func AddCentralNoise(sum []float32, noiseMultiplier, clip float64, g *Gaussian) error {
	std, err := CentralStddev(noiseMultiplier, clip)
	if err != nil {
		return err
	}
	return orCrypto(g).AddNoise(sum, std)
}

// SplitStddev is the share of a total noise standard deviation each of at
// least minContributors parties adds so that the sum of their independent
// shares has standard deviation at least total: total / √minContributors.
func SplitStddev(total float64, minContributors int) (float64, error) {
	if !finite(total) || total < 0 {
		return 0, invalidf("noise standard deviation %v must be a finite number >= 0", total)
	}
	if err := checkMinContributors(minContributors); err != nil {
		return 0, err
	}
	return total / math.Sqrt(float64(minContributors)), nil
}

// DistributedStddev is the standard deviation each site adds to its clipped
// update when secure aggregation is on: noiseMultiplier·clip/√minContributors.
// The sum of k ≥ minContributors such shares carries noise of variance
// k/minContributors · (noiseMultiplier·clip)², at least the central
// mechanism's.
//
// The guarantee assumes that at least minContributors sites' noised updates
// enter the unmasked sum. If fewer survive dropouts, the sum carries less
// noise than the accountant records, so the coordinator must refuse to
// unmask a round with fewer than minContributors survivors (and the secure
// aggregation threshold t must be at least minContributors). The noise of
// sites that dropped after masking is lost with them; sites are assumed
// honest about adding their share (a site that skips it only weakens the
// protection of the others by its share).
func DistributedStddev(noiseMultiplier, clip float64, minContributors int) (float64, error) {
	std, err := CentralStddev(noiseMultiplier, clip)
	if err != nil {
		return 0, err
	}
	return SplitStddev(std, minContributors)
}

// AddDistributedNoise adds a site's share of the noise,
// N(0, (noiseMultiplier·clip)²/minContributors), to its clipped update
// before masking; see DistributedStddev for the assumption on survivors. A
// nil g draws from a cryptographically secure source.
func AddDistributedNoise(update []float32, noiseMultiplier, clip float64, minContributors int, g *Gaussian) error {
	std, err := DistributedStddev(noiseMultiplier, clip, minContributors)
	if err != nil {
		return err
	}
	return orCrypto(g).AddNoise(update, std)
}
