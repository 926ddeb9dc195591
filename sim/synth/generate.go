package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// baseTime is the start of the year, 2025, in which all generated encounters
// take place.
func baseTime() time.Time { return time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC) }

// Record is one generated patient.
type Record struct {
	// ID is the Patient resource id.
	ID string
	// Profile is the patient's true state, read by the Truth.
	Profile Profile
	// Logit is the true log-odds of sepsis, including the site's
	// prevalence shift.
	Logit float64
	// Septic is true when the patient has a sepsis Condition: the
	// recorded label, which label noise (Site.LabelNoise) may have
	// flipped.
	Septic bool
	// TrueSeptic is the patient's true outcome, drawn with probability
	// sigmoid(Logit). It differs from Septic exactly when label noise
	// flipped the recorded label.
	TrueSeptic bool

	num        int         // the patient's number at the site
	start      time.Time   // start of the encounter
	meas       measurement // how the patient's vitals are measured
	ident      identity
	birthDate  string
	visits     []visit
	conditions []condition
}

// visit is one measurement time: the vitals taken then.
type visit struct {
	at    time.Time
	value [numVitals]float64
	have  [numVitals]bool
	ids   [numVitals]string // Observation ids; the BP panel uses vSystolic
}

// condition is one diagnosis.
type condition struct {
	id      string
	code    string
	display string
	onset   time.Time
}

// comorbidity is a diagnosis unrelated to the outcome.
type comorbidity struct {
	code, display string
	prob          float64
}

// comorbidities are drawn independently of everything else, so they carry
// no information about sepsis.
var comorbidities = [...]comorbidity{
	{"38341003", "Hypertensive disorder, systemic arterial (disorder)", 0.25},
	{"44054006", "Diabetes mellitus type 2 (disorder)", 0.12},
	{"55822004", "Hyperlipidemia (disorder)", 0.15},
	{"195967001", "Asthma (disorder)", 0.08},
	{"13645005", "Chronic obstructive lung disease (disorder)", 0.06},
}

const (
	sepsisDisplay = "Sepsis (disorder)"
	maxVisits     = 3
	// birthDateTries bounds the search for a birth date not yet used at
	// the site (within about a month of the drawn one); beyond it a date
	// may repeat.
	birthDateTries = 61
)

// lastObserved returns the last observed value of each vital and whether it
// was observed at all.
func (r *Record) lastObserved() (val [numVitals]float64, have [numVitals]bool) {
	for _, v := range r.visits {
		for k := range numVitals {
			if v.have[k] {
				val[k], have[k] = v.value[k], true
			}
		}
	}
	return val, have
}

// Generate draws the site's patients, in the order WriteSite writes them
// (the last BundlePatients go into the Bundle). The same site and truth give
// the same records. It returns ErrInvalidSite when the site does not
// validate.
func Generate(site Site, truth Truth) ([]Record, error) {
	if err := site.Validate(); err != nil {
		return nil, err
	}
	var weights []float64
	meas := []measurement{site.measurement()}
	if len(site.Mix) > 0 {
		total := 0
		for _, m := range site.Mix {
			total += m.Patients
		}
		acc := 0.0
		meas = meas[:0]
		for _, m := range site.Mix {
			acc += float64(m.Patients) / float64(total)
			weights = append(weights, acc)
			meas = append(meas, m.measurement())
		}
	}
	c := newCodes(site)
	births := make(map[int64]bool, site.Patients)
	recs := make([]Record, site.Patients)
	for i := range recs {
		r := rand.New(rand.NewPCG(mix64(site.Seed^mix64(uint64(i))), mix64(uint64(i)+site.Seed))) // #nosec G404 -- seeded synthetic data, reproducible from the site's seed
		dist, k := site, 0
		if len(weights) > 0 {
			u := r.Float64()
			for k < len(weights)-1 && u >= weights[k] {
				k++
			}
			dist = site.Mix[k]
		}
		recs[i] = generatePatient(i, dist, &meas[k], truth, c, births, r, stream(site.Seed, i, saltMeasure))
	}
	return recs, nil
}

// Salts of the per-patient random streams other than the main one. Draws
// for the knobs added after the first version (extra noise, label noise,
// telemetry) come from these streams, never from the main one, so with the
// knobs at zero the main stream, and hence every file, is as before.
const (
	saltMeasure   = 0x6d65_6173_7572_6521 // extra noise, label flips
	saltTelemetry = 0x7465_6c65_6d65_7472 // device readings
)

// stream returns patient i's random stream with the given salt.
func stream(seed uint64, i int, salt uint64) *rand.Rand {
	return rand.New(rand.NewPCG(mix64(seed^salt^mix64(uint64(i))), mix64(uint64(i)+seed)^salt)) // #nosec G404 -- seeded synthetic data, reproducible from the site's seed
}

// generatePatient draws patient number i from dist's distribution, measured
// as meas says. r is the patient's main random stream; aux, its stream for
// extra noise and label noise.
func generatePatient(i int, dist Site, meas *measurement, truth Truth, c codes, births map[int64]bool, r, aux *rand.Rand) Record {
	var rec Record
	rec.num, rec.meas = i, *meas
	rec.ID = newUUID(r)
	p := &rec.Profile
	p.Female = r.Float64() < dist.FemaleFrac
	age := truncNormal(r, dist.AgeMean, dist.AgeSD, 18, 100)

	// The encounter, and a birth date not yet used at this site.
	start := baseTime().Add(time.Duration(r.IntN(365*24*60)) * time.Minute)
	rec.start = start
	birth := start.Add(-time.Duration(age * 365.25 * 24 * float64(time.Hour))).Truncate(24 * time.Hour)
	for k := 0; k < birthDateTries; k++ {
		// Alternate earlier and later: 0, -1, +1, -2, +2, ... days.
		d := (k + 1) / 2
		if k%2 == 1 {
			d = -d
		}
		b := birth.AddDate(0, 0, d)
		if !births[b.Unix()] && !b.After(start) {
			birth = b
			break
		}
	}
	births[birth.Unix()] = true
	rec.birthDate = birth.Format(time.DateOnly)
	p.Age = start.Sub(birth).Hours() / 24 / 365.25

	// True physiology: a latent acuity drives the vitals together; age and
	// sex shift blood pressure, saturation and heart rate.
	a := (p.Age - ageCenter) / ageScale
	f := -1.0
	if p.Female {
		f = 1
	}
	s := 0.2*a + r.NormFloat64()
	p.HeartRate = clampVital(vHeartRate, 80+10*s+1.5*f+7*r.NormFloat64())
	p.RespRate = clampVital(vRespRate, 16.5+2.6*s+0.3*a+2*r.NormFloat64())
	p.Systolic = clampVital(vSystolic, 126+8*a-3*f-9*s+13*r.NormFloat64())
	p.Diastolic = clampVital(vDiastolic, 76+0.3*(p.Systolic-126)-2*a+7*r.NormFloat64())
	p.Temperature = clampVital(vTemperature, 36.95+0.4*s+0.4*r.NormFloat64())
	p.SpO2 = clampVital(vSpO2, 96.8-1.1*s-0.6*a+1.3*r.NormFloat64())
	p.BMI = clampVital(vBMI, 27.5-0.6*a+5*r.NormFloat64())

	rec.Logit = truth.Logit(*p) + dist.PrevalenceShift
	rec.TrueSeptic = r.Float64() < sigmoid(rec.Logit)

	// Measurements: one to three times within the encounter, each vital
	// missing with probability dist.Missing; BMI is taken once. Each value
	// has the ordinary measurement error, then the site's calibration
	// offset and extra noise.
	state := p.state()
	n := 1 + r.IntN(maxVisits)
	at := start.Add(time.Duration(5+r.IntN(25)) * time.Minute)
	rec.visits = make([]visit, n)
	for j := range rec.visits {
		v := &rec.visits[j]
		v.at = at
		for k := range numVitals {
			if vital(k) == vDiastolic {
				// Part of the BP panel with systolic.
				v.have[k] = v.have[vSystolic]
			} else {
				v.have[k] = r.Float64() >= dist.Missing && (vital(k) != vBMI || j == 0)
			}
			v.value[k] = meas.measure(vital(k), state[k]+vitals[k].sd*r.NormFloat64(), aux.NormFloat64())
			if v.have[k] && vital(k) != vDiastolic {
				v.ids[k] = newUUID(r)
			}
		}
		at = at.Add(time.Duration(30+r.IntN(210)) * time.Minute)
	}
	last := rec.visits[n-1].at

	// Chronic comorbidities, onset years before the encounter.
	for _, cm := range comorbidities {
		if r.Float64() < cm.prob {
			onset := start.AddDate(-1-r.IntN(15), 0, -r.IntN(365)).Truncate(24 * time.Hour)
			if onset.Before(birth) {
				onset = birth.AddDate(1, 0, 0)
			}
			rec.conditions = append(rec.conditions, condition{newUUID(r), cm.code, cm.display, onset})
		}
	}
	// The recorded outcome: the truth, flipped with probability
	// dist.LabelNoise. A true case's diagnosis is drawn from r whether or
	// not it is recorded, a false positive's from aux, so that a flip
	// changes nothing but the Condition's presence.
	rec.Septic = rec.TrueSeptic != (aux.Float64() < dist.LabelNoise)
	sepsis := func(r *rand.Rand) condition {
		onset := last.Add(time.Duration(60+r.IntN(11*60)) * time.Minute)
		return condition{newUUID(r), CodeSepsis, sepsisDisplay, onset}
	}
	switch {
	case rec.TrueSeptic:
		if diag := sepsis(r); rec.Septic {
			rec.conditions = append(rec.conditions, diag)
		}
	case rec.Septic:
		rec.conditions = append(rec.conditions, sepsis(aux))
	}
	rec.ident = c.makeIdentity(i, p.Female, r)
	return rec
}

// truncNormal draws from a normal distribution restricted to [lo, hi].
func truncNormal(r *rand.Rand, mean, sd, lo, hi float64) float64 {
	for range 64 {
		if x := mean + sd*r.NormFloat64(); x >= lo && x <= hi {
			return x
		}
	}
	return math.Min(hi, math.Max(lo, mean))
}

func clampVital(v vital, x float64) float64 {
	return math.Min(vitals[v].max, math.Max(vitals[v].min, x))
}

// roundVital clamps x to the physiological range and rounds it the way a
// device reports it.
func roundVital(v vital, x float64) float64 {
	p := math.Pow10(vitals[v].decimals)
	return math.Round(clampVital(v, x)*p) / p
}

// newUUID draws a version-4 UUID string.
func newUUID(r *rand.Rand) string {
	hi, lo := r.Uint64(), r.Uint64()
	hi = hi&^0xf000 | 0x4000                 // version 4
	lo = lo&^(0xc000_0000_0000_0000) | 1<<63 // variant 10
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x",
		hi>>32, (hi>>16)&0xffff, hi&0xffff, lo>>48, lo&0xffff_ffff_ffff)
}
