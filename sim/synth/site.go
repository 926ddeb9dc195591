package synth

import (
	"errors"
	"fmt"
	"math"
)

// Errors returned by this package.
var (
	// ErrInvalidSite reports a Site whose fields are out of range.
	ErrInvalidSite = errors.New("synth: invalid site")
	// ErrWrite reports a failure writing a site's files.
	ErrWrite = errors.New("synth: write site")
)

const (
	// MaxPatients is the largest population one Site may have; identifiers
	// are drawn from bijections on ranges of this size, which is what makes
	// them unique.
	MaxPatients = 70 * 70 * 70
	// MaxSiteIndex is the largest Site.Index.
	MaxSiteIndex = syllables - 1
)

// Site describes one synthetic hospital. The zero value of every optional
// knob means "none", so knobs added later (device calibration offsets,
// measurement noise, label noise) keep existing sites unchanged.
type Site struct {
	// Name is a short label, e.g. "community"; it goes into the Manifest.
	Name string
	// Index is the site's number, 0..MaxSiteIndex. It is part of every
	// identifier the site issues (the MRN system OID urn:oid:
	// 2.16.840.1.113883.19.5.<Index>, MRNs, names, phone area codes), so
	// sites with different indexes never share an identifier.
	Index int
	// Patients is the number of patients, 0..MaxPatients.
	Patients int
	// AgeMean and AgeSD give the normal distribution of age in years,
	// truncated to 18..100.
	AgeMean, AgeSD float64
	// FemaleFrac is the probability that a patient is female.
	FemaleFrac float64
	// PrevalenceShift is added to the true logit's intercept at this site.
	PrevalenceShift float64
	// Missing is the probability that a vital is missing at a measurement
	// time, in [0, 1).
	Missing float64
	// Seed seeds every random choice made for this site.
	Seed uint64
	// Mix, when not empty, makes this site a mixture: each patient is drawn
	// from one of these sites, chosen with probability proportional to its
	// Patients, using that site's age, sex, prevalence and missingness.
	// This site's own distribution fields are then ignored; its Name,
	// Index, Patients and Seed still apply.
	Mix []Site
}

// Validate reports whether the site can be generated.
func (s Site) Validate() error {
	if s.Name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidSite)
	}
	if s.Index < 0 || s.Index > MaxSiteIndex {
		return fmt.Errorf("%w: index %d not in 0..%d", ErrInvalidSite, s.Index, MaxSiteIndex)
	}
	if s.Patients < 0 || s.Patients > MaxPatients {
		return fmt.Errorf("%w: %d patients not in 0..%d", ErrInvalidSite, s.Patients, MaxPatients)
	}
	if len(s.Mix) == 0 {
		return s.validateDist()
	}
	total := 0
	for i, m := range s.Mix {
		if err := m.validateDist(); err != nil {
			return fmt.Errorf("mix component %d: %w", i, err)
		}
		if m.Patients <= 0 {
			return fmt.Errorf("%w: mix component %d has no patients", ErrInvalidSite, i)
		}
		total += m.Patients
	}
	if total <= 0 {
		return fmt.Errorf("%w: empty mix", ErrInvalidSite)
	}
	return nil
}

// validateDist checks the distribution fields of a site.
func (s Site) validateDist() error {
	switch {
	case !finite(s.AgeMean) || s.AgeMean < 18 || s.AgeMean > 100:
		return fmt.Errorf("%w: age mean %v not in 18..100", ErrInvalidSite, s.AgeMean)
	case !finite(s.AgeSD) || s.AgeSD <= 0 || s.AgeSD > 50:
		return fmt.Errorf("%w: age sd %v not in (0, 50]", ErrInvalidSite, s.AgeSD)
	case !(s.FemaleFrac >= 0 && s.FemaleFrac <= 1):
		return fmt.Errorf("%w: female fraction %v not in [0, 1]", ErrInvalidSite, s.FemaleFrac)
	case !finite(s.PrevalenceShift) || math.Abs(s.PrevalenceShift) > 10:
		return fmt.Errorf("%w: prevalence shift %v not in [-10, 10]", ErrInvalidSite, s.PrevalenceShift)
	case !(s.Missing >= 0 && s.Missing < 1):
		return fmt.Errorf("%w: missing probability %v not in [0, 1)", ErrInvalidSite, s.Missing)
	}
	return nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// siteTemplate is one kind of hospital in DefaultSites.
type siteTemplate struct {
	name       string
	patients   int
	ageMean    float64
	ageSD      float64
	femaleFrac float64
	shift      float64
	missing    float64
}

// siteTemplates are the kinds of hospital DefaultSites cycles through.
var siteTemplates = [...]siteTemplate{
	// A small community hospital: young patients, few positives, more gaps
	// in the charting.
	{"community", 200, 38, 11, 0.55, -0.3, 0.2},
	// A large academic centre with a broad case mix.
	{"academic", 900, 58, 17, 0.50, 0.2, 0.04},
	// A geriatric-heavy site: old patients, higher prevalence.
	{"geriatric", 500, 80, 6, 0.60, 0.2, 0.08},
	// A mid-size regional site with a lower prevalence.
	{"regional", 400, 52, 11, 0.47, -1.0, 0.06},
}

// DefaultSites returns n non-IID hospitals, indexed 1..n, seeded from seed.
// The first four are a small community hospital (200 patients, young, about
// 5% prevalence), a large academic centre (900, broad age mix, 12%), a
// geriatric-heavy site (500, old, 26%) and a mid-size regional site (400,
// 3%); further sites repeat these kinds. With DefaultTruth the overall
// prevalence is about 13%, and a logistic regression trained on one site
// alone ranks a TestSite population clearly worse than one trained on all
// sites pooled: small sites see few positives, and each site sees only part
// of the age range, over which the truth is not linear. n <= 0 gives nil; n is capped at MaxSiteIndex-1 so the
// TestSite of the result still has a valid index.
func DefaultSites(n int, seed uint64) []Site {
	n = min(n, MaxSiteIndex-1)
	if n <= 0 {
		return nil
	}
	sites := make([]Site, n)
	for i := range sites {
		t := siteTemplates[i%len(siteTemplates)]
		name := t.name
		if round := i / len(siteTemplates); round > 0 {
			name = fmt.Sprintf("%s-%d", t.name, round+1)
		}
		sites[i] = Site{
			Name:            name,
			Index:           i + 1,
			Patients:        t.patients,
			AgeMean:         t.ageMean,
			AgeSD:           t.ageSD,
			FemaleFrac:      t.femaleFrac,
			PrevalenceShift: t.shift,
			Missing:         t.missing,
			Seed:            mix64(seed ^ mix64(uint64(i+1))),
		}
	}
	return sites
}

// TestSite returns a held-out population of the given size drawn from the
// mixture of sites (weighted by their sizes), for a global test set. Its
// Index is one more than the largest index in sites (capped at
// MaxSiteIndex), so its identifiers differ from theirs; its seed is derived
// from seed and differs from the seeds DefaultSites derives.
func TestSite(sites []Site, patients int, seed uint64) Site {
	idx := 0
	for _, s := range sites {
		idx = max(idx, s.Index+1)
	}
	mixture := make([]Site, len(sites))
	copy(mixture, sites)
	return Site{
		Name:     "test",
		Index:    min(idx, MaxSiteIndex),
		Patients: patients,
		Seed:     mix64(seed ^ 0x7e57_7e57_7e57_7e57),
		Mix:      mixture,
	}
}

// mix64 is the SplitMix64 finalizer: a bijective scrambling of 64 bits.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
