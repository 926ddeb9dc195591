package synth

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cohort-fl/cohort/agent/device"
)

// Errors returned by this package.
var (
	// ErrInvalidSite reports a Site whose fields are out of range.
	ErrInvalidSite = errors.New("synth: invalid site")
	// ErrWrite reports a failure writing a site's files.
	ErrWrite = errors.New("synth: write site")
	// ErrTelemetry reports a telemetry file that ReadTelemetry or Replay
	// cannot read.
	ErrTelemetry = errors.New("synth: bad telemetry file")
)

const (
	// MaxPatients is the largest population one Site may have; identifiers
	// are drawn from bijections on ranges of this size, which is what makes
	// them unique.
	MaxPatients = 70 * 70 * 70
	// MaxSiteIndex is the largest Site.Index.
	MaxSiteIndex = syllables*syllables - 1
	// MaxNoise is the largest Site.Noise.
	MaxNoise = 5
	// MaxTelemetryMinutes is the largest Site.TelemetryMinutes (one day).
	MaxTelemetryMinutes = 24 * 60
)

// Site describes one synthetic hospital. The zero value of every optional
// knob means "none": a site that leaves Calibration, Noise, LabelNoise and
// TelemetryMinutes unset gives the same files, byte for byte, as before
// those knobs existed.
//
// The JSON names (snake_case) are those of the simulator's scenario files,
// read with sigs.k8s.io/yaml; Validate's errors name fields by them.
type Site struct {
	// Name is a short label, e.g. "community"; it goes into the Manifest.
	// With TelemetryMinutes set it is also the site id in the device
	// topics, and must then be 1 to 128 characters from [A-Za-z0-9._:-].
	Name string `json:"name,omitempty"`
	// Index is the site's number, 0..MaxSiteIndex. It is part of every
	// identifier the site issues (the MRN system OID urn:oid:
	// 2.16.840.1.113883.19.5.<Index>, MRNs, names, phone area codes,
	// monitor ids), so sites with different indexes never share an
	// identifier.
	Index int `json:"index,omitempty"`
	// Patients is the number of patients, 0..MaxPatients.
	Patients int `json:"patients,omitempty"`
	// AgeMean and AgeSD give the normal distribution of age in years,
	// truncated to 18..100.
	AgeMean float64 `json:"age_mean,omitempty"`
	AgeSD   float64 `json:"age_sd,omitempty"`
	// FemaleFrac is the probability that a patient is female.
	FemaleFrac float64 `json:"female_frac,omitempty"`
	// PrevalenceShift is added to the true logit's intercept at this site.
	PrevalenceShift float64 `json:"prevalence_shift,omitempty"`
	// Missing is the probability that a vital is missing at a measurement
	// time (a charted visit or a device reading), in [0, 1).
	Missing float64 `json:"missing,omitempty"`
	// Calibration is the site's device calibration error: an offset in
	// the vital's raw unit (beats/min, %, Cel, ...) added to every
	// measured value of that vital at the site, charted or streamed, as a
	// miscalibrated monitor would, before clamping and rounding. Keys are
	// the feature names of DefaultFeatureSpec: heart_rate, resp_rate,
	// sbp, dbp, temp, spo2, bmi. An offset may not exceed the vital's
	// physiological range (see VitalNames). The truth reads the patient's
	// true state, so an offset biases what a model sees, not the outcome.
	Calibration map[string]float64 `json:"calibration,omitempty"`
	// Noise is extra measurement noise, 0..MaxNoise: every measured value
	// gets Gaussian noise with a standard deviation of Noise times the
	// vital's scale (the Scale of its feature in DefaultFeatureSpec, e.g.
	// 15 beats/min for heart rate), on top of the ordinary measurement
	// error, before clamping and rounding.
	Noise float64 `json:"noise,omitempty"`
	// LabelNoise is the probability, in [0, 0.5), that the recorded
	// outcome is flipped: a septic patient gets no sepsis Condition, or a
	// patient without sepsis gets one. Record.TrueSeptic keeps the truth.
	LabelNoise float64 `json:"label_noise,omitempty"`
	// TelemetryMinutes, when positive (at most MaxTelemetryMinutes), makes
	// WriteSite also write bedside-monitor telemetry (DeviceDir/
	// TelemetryFile) with one round of readings every TelemetryMinutes
	// minutes per monitored patient. Zero writes no telemetry.
	TelemetryMinutes int `json:"telemetry_minutes,omitempty"`
	// Seed seeds every random choice made for this site.
	Seed uint64 `json:"seed,omitempty"`
	// Mix, when not empty, makes this site a mixture: each patient is drawn
	// from one of these sites, chosen with probability proportional to its
	// Patients, using that site's age, sex, prevalence, missingness,
	// calibration, noise and label noise. This site's own age, sex,
	// prevalence and missingness fields are then ignored, and its
	// Calibration, Noise and LabelNoise must be unset; its Name, Index,
	// Patients, Seed and TelemetryMinutes still apply (a component's are
	// ignored).
	Mix []Site `json:"mix,omitempty"`
}

// VitalNames returns the names Site.Calibration accepts, in a fixed order,
// and for each the largest absolute offset allowed (the width of the
// vital's physiological range in its raw unit).
func VitalNames() (names []string, maxOffset []float64) {
	for _, v := range vitals {
		names = append(names, v.name)
		maxOffset = append(maxOffset, v.max-v.min)
	}
	return names, maxOffset
}

// invalid returns an ErrInvalidSite error about the named field of the
// site called site ("" when unnamed).
func invalid(site, field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if site == "" {
		return fmt.Errorf("%w: %s: %s", ErrInvalidSite, field, msg)
	}
	return fmt.Errorf("%w %q: %s: %s", ErrInvalidSite, site, field, msg)
}

// Validate reports whether the site can be generated. Its errors wrap
// ErrInvalidSite and name the site and the field by its JSON name
// (mix[2].age_mean for a mixture component's).
func (s Site) Validate() error {
	if s.Name == "" {
		return invalid("", "name", "empty")
	}
	if s.Index < 0 || s.Index > MaxSiteIndex {
		return invalid(s.Name, "index", "%d not in [0, %d]", s.Index, MaxSiteIndex)
	}
	if s.Patients < 0 || s.Patients > MaxPatients {
		return invalid(s.Name, "patients", "%d not in [0, %d]", s.Patients, MaxPatients)
	}
	if s.TelemetryMinutes < 0 || s.TelemetryMinutes > MaxTelemetryMinutes {
		return invalid(s.Name, "telemetry_minutes", "%d not in [0, %d]", s.TelemetryMinutes, MaxTelemetryMinutes)
	}
	if s.TelemetryMinutes > 0 && !device.ValidID(s.Name) {
		return invalid(s.Name, "name", "with telemetry_minutes set, must be 1 to %d characters from [A-Za-z0-9._:-] (it is the site id in device topics)", device.MaxIDLen)
	}
	if len(s.Mix) == 0 {
		return s.validateDist(s.Name, "")
	}
	switch {
	case len(s.Calibration) > 0:
		return invalid(s.Name, "calibration", "set on the mix components, not on a mixture")
	case s.Noise != 0:
		return invalid(s.Name, "noise", "set on the mix components, not on a mixture")
	case s.LabelNoise != 0:
		return invalid(s.Name, "label_noise", "set on the mix components, not on a mixture")
	}
	for i, m := range s.Mix {
		path := fmt.Sprintf("mix[%d].", i)
		if err := m.validateDist(s.Name, path); err != nil {
			return err
		}
		if m.Patients <= 0 {
			return invalid(s.Name, path+"patients", "%d, want at least 1 in a mix component", m.Patients)
		}
	}
	return nil
}

// validateDist checks the distribution fields of a site; errors name the
// site called site and the field prefixed with path.
func (s Site) validateDist(site, path string) error {
	switch {
	case !finite(s.AgeMean) || s.AgeMean < 18 || s.AgeMean > 100:
		return invalid(site, path+"age_mean", "%v not in [18, 100]", s.AgeMean)
	case !finite(s.AgeSD) || s.AgeSD <= 0 || s.AgeSD > 50:
		return invalid(site, path+"age_sd", "%v not in (0, 50]", s.AgeSD)
	case !(s.FemaleFrac >= 0 && s.FemaleFrac <= 1):
		return invalid(site, path+"female_frac", "%v not in [0, 1]", s.FemaleFrac)
	case !finite(s.PrevalenceShift) || math.Abs(s.PrevalenceShift) > 10:
		return invalid(site, path+"prevalence_shift", "%v not in [-10, 10]", s.PrevalenceShift)
	case !(s.Missing >= 0 && s.Missing < 1):
		return invalid(site, path+"missing", "%v not in [0, 1)", s.Missing)
	case !(s.Noise >= 0 && s.Noise <= MaxNoise):
		return invalid(site, path+"noise", "%v not in [0, %d]", s.Noise, MaxNoise)
	case !(s.LabelNoise >= 0 && s.LabelNoise < 0.5):
		return invalid(site, path+"label_noise", "%v not in [0, 0.5)", s.LabelNoise)
	}
	// Sorted, so that the error about several bad keys is always the same.
	keys := make([]string, 0, len(s.Calibration))
	for k := range s.Calibration {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field := fmt.Sprintf("%scalibration[%q]", path, k)
		v, ok := vitalByName(k)
		if !ok {
			names, _ := VitalNames()
			return invalid(site, field, "unknown vital, want one of %s", strings.Join(names, ", "))
		}
		limit := vitals[v].max - vitals[v].min
		if off := s.Calibration[k]; !finite(off) || math.Abs(off) > limit {
			return invalid(site, field, "%v not in [-%v, %v] %s", off, limit, limit, vitals[v].unit)
		}
	}
	return nil
}

// measurement is how a site measures vitals: its calibration offsets (by
// vital), extra noise (in scales) and missingness.
type measurement struct {
	offset  [numVitals]float64
	noise   float64
	missing float64
}

// measurement returns the measurement settings of a validated site.
func (s Site) measurement() measurement {
	m := measurement{noise: s.Noise, missing: s.Missing}
	for k, off := range s.Calibration {
		if v, ok := vitalByName(k); ok {
			m.offset[v] = off
		}
	}
	return m
}

// measure returns the value a device at the site reports for vital v whose
// value, with the ordinary measurement error, is x; z is a standard normal
// draw for the extra noise. With no offset and no noise it is
// roundVital(v, x) exactly.
func (m *measurement) measure(v vital, x, z float64) float64 {
	return roundVital(v, x+m.offset[v]+m.noise*vitals[v].scale*z)
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
// from seed and differs from the seeds DefaultSites derives. Each patient is
// measured and labelled as at the site it is drawn from (its calibration,
// noise and label noise); for a clean test set, pass sites without them.
// TelemetryMinutes is left unset.
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
