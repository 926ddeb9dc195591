package synth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.sha256")

const goldenFile = "testdata/golden.sha256"

// TestGolden pins the files of the default sites: knobs added to Site must
// leave them byte-identical. The hashes were taken before Calibration,
// Noise, LabelNoise and TelemetryMinutes existed. Floating-point results
// may differ on platforms that fuse multiply-adds, so other platforms skip.
func TestGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("generates whole sites; the race run gains nothing (the generator starts no goroutines)")
	}
	t.Parallel()
	if runtime.GOARCH != "amd64" {
		t.Skip("golden hashes are for amd64")
	}
	sites := DefaultSites(5, 42)
	all := append(slices.Clone(sites), TestSite(sites, 700, 43))
	var got []string
	for _, s := range all {
		dir := t.TempDir()
		if _, err := WriteSite(dir, s, DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		for _, name := range siteFiles {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(b)
			got = append(got, s.Name+" "+name+" "+hex.EncodeToString(h[:]))
		}
		if _, err := os.Stat(filepath.Join(dir, DeviceDir)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s written without TelemetryMinutes (stat: %v)", s.Name, DeviceDir, err)
		}
	}
	slices.Sort(got)
	raw, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	header, _, _ := bytes.Cut(raw, []byte("\n"))
	if *update {
		out := string(header) + "\n" + strings.Join(got, "\n") + "\n"
		if err := os.WriteFile(goldenFile, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	var want []string
	for line := range strings.Lines(string(raw)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			want = append(want, line)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("files changed:\ngot  %q\nwant %q", got, want)
	}
}

// knobSite is a quick site with every new knob set.
func knobSite(seed uint64) Site {
	s := smallSite(seed)
	s.Calibration = map[string]float64{"heart_rate": 8, "spo2": -2, "temp": 0.4}
	s.Noise = 0.3
	s.LabelNoise = 0.15
	s.TelemetryMinutes = 20
	return s
}

// readFiles reads the files WriteSite wrote to dir, by path relative to dir.
func readFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestKnobsDeterministic(t *testing.T) {
	t.Parallel()
	write := func(site Site) map[string][]byte {
		t.Helper()
		dir := t.TempDir()
		m, err := WriteSite(dir, site, DefaultTruth())
		if err != nil {
			t.Fatalf("WriteSite: %v", err)
		}
		recs, err := Generate(site, DefaultTruth())
		if err != nil {
			t.Fatal(err)
		}
		checkFiles(t, dir, site, m, recs)
		return readFiles(t, dir)
	}
	a, b, other := write(knobSite(7)), write(knobSite(7)), write(knobSite(8))
	if len(a) != len(siteFiles)+1 {
		t.Fatalf("wrote %d files, want %d", len(a), len(siteFiles)+1)
	}
	for name := range a {
		if len(a[name]) == 0 {
			t.Errorf("%s: empty", name)
		}
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("%s: same seed gave different bytes", name)
		}
		if bytes.Equal(a[name], other[name]) {
			t.Errorf("%s: different seed gave the same bytes", name)
		}
	}

	// Zero-valued knobs, spelled out, change nothing; telemetry adds its
	// file and leaves the FHIR files alone.
	plain := write(smallSite(7))
	zero := smallSite(7)
	zero.Calibration = map[string]float64{}
	zero.Noise, zero.LabelNoise, zero.TelemetryMinutes = 0, 0, 0
	telemetry := smallSite(7)
	telemetry.TelemetryMinutes = 5
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		extra int
	}{{"zero knobs", write(zero), 0}, {"telemetry only", write(telemetry), 1}} {
		if len(tc.files) != len(plain)+tc.extra {
			t.Errorf("%s: %d files, want %d", tc.name, len(tc.files), len(plain)+tc.extra)
		}
		for name := range plain {
			if !bytes.Equal(plain[name], tc.files[name]) {
				t.Errorf("%s: %s differs from the plain site's", tc.name, name)
			}
		}
	}
}

// pair generates the same site without and with a knob.
func pair(t *testing.T, base Site, knob func(*Site)) (plain, knobbed []Record) {
	t.Helper()
	s := base
	knob(&s)
	var err error
	if plain, err = Generate(base, DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	if knobbed, err = Generate(s, DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	return plain, knobbed
}

// bigSite is a large site with no missing values, for statistics.
func bigSite() Site {
	s := DefaultSites(2, 17)[1]
	s.Patients = 4000
	s.Missing = 0
	return s
}

// sameTruth checks that a knob changed nothing about the patients' true
// state, outcome or identity.
func sameTruth(t *testing.T, plain, knobbed []Record) {
	t.Helper()
	for i := range plain {
		p, k := &plain[i], &knobbed[i]
		if p.ID != k.ID || p.Profile != k.Profile || p.Logit != k.Logit || p.TrueSeptic != k.TrueSeptic ||
			p.ident != k.ident || p.birthDate != k.birthDate || len(p.visits) != len(k.visits) {
			t.Fatalf("patient %d: the knob changed the truth or identity", i)
		}
	}
}

// measured returns every measured value of vital v and the patient's true
// value beside it.
func measured(recs []Record, v vital) (val, truth []float64) {
	for i := range recs {
		state := recs[i].Profile.state()
		for _, vis := range recs[i].visits {
			if vis.have[v] {
				val = append(val, vis.value[v])
				truth = append(truth, state[v])
			}
		}
	}
	return val, truth
}

func TestCalibrationShiftsMeasuredValues(t *testing.T) {
	t.Parallel()
	offsets := map[string]float64{"heart_rate": 10, "temp": 0.5, "sbp": -15, "bmi": 2}
	plain, cal := pair(t, bigSite(), func(s *Site) { s.Calibration = offsets })
	sameTruth(t, plain, cal)
	for name, off := range offsets {
		t.Run(name, func(t *testing.T) {
			v, _ := vitalByName(name)
			a, _ := measured(plain, v)
			b, _ := measured(cal, v)
			if len(a) != len(b) || len(a) < 1000 {
				t.Fatalf("%d and %d values", len(a), len(b))
			}
			shift := mean(b) - mean(a)
			t.Logf("%s: offset %v, mean shift %.3f", name, off, shift)
			// Clamping at the physiological range and rounding lose a
			// little of the offset, never much.
			if math.Abs(shift-off) > 0.05*math.Abs(off)+0.02 {
				t.Errorf("mean shifted by %.3f, want about %v", shift, off)
			}
		})
	}
	// Vitals without an offset are measured exactly as before.
	for _, name := range []string{"resp_rate", "dbp", "spo2"} {
		v, _ := vitalByName(name)
		a, _ := measured(plain, v)
		b, _ := measured(cal, v)
		if !slices.Equal(a, b) {
			t.Errorf("%s changed without an offset", name)
		}
	}
}

func TestNoiseRaisesVariance(t *testing.T) {
	t.Parallel()
	const noise = 0.5
	plain, noisy := pair(t, bigSite(), func(s *Site) { s.Noise = noise })
	sameTruth(t, plain, noisy)
	for _, v := range []vital{vHeartRate, vRespRate, vSystolic, vTemperature} {
		t.Run(vitals[v].name, func(t *testing.T) {
			errSD := func(recs []Record) float64 {
				val, truth := measured(recs, v)
				d := make([]float64, len(val))
				for i := range val {
					d[i] = val[i] - truth[i]
				}
				m := mean(d)
				for i := range d {
					d[i] = (d[i] - m) * (d[i] - m)
				}
				return math.Sqrt(mean(d))
			}
			def := vitals[v]
			base, got := errSD(plain), errSD(noisy)
			want := math.Hypot(def.sd, noise*def.scale)
			t.Logf("measurement error SD %.3f without noise, %.3f with (expected %.3f)", base, got, want)
			if math.Abs(got-want) > 0.1*want || got < 1.5*base {
				t.Errorf("measurement error SD %.3f, want about %.3f (%.3f without noise)", got, want, base)
			}
		})
	}
}

func TestLabelNoiseFlipsLabels(t *testing.T) {
	t.Parallel()
	const rate = 0.2
	site := bigSite()
	site.Patients = 10_000
	plain, noisy := pair(t, site, func(s *Site) { s.LabelNoise = rate })
	sameTruth(t, plain, noisy)
	flips := 0
	for i := range plain {
		if plain[i].Septic != plain[i].TrueSeptic {
			t.Fatalf("patient %d: flipped without label noise", i)
		}
		if noisy[i].Septic != noisy[i].TrueSeptic {
			flips++
		}
		if !slices.EqualFunc(plain[i].visits, noisy[i].visits, func(a, b visit) bool { return a == b }) {
			t.Fatalf("patient %d: label noise changed the vitals", i)
		}
	}
	got := float64(flips) / float64(len(noisy))
	// Binomial SD is 0.004; allow 5 SDs.
	t.Logf("flipped %d of %d labels (%.3f)", flips, len(noisy), got)
	if math.Abs(got-rate) > 0.02 {
		t.Errorf("flipped fraction %.3f, want about %v", got, rate)
	}

	// The manifest counts the flips, and the files record the flipped
	// labels (checkFiles compares sepsis Conditions with Septic).
	small := smallSite(3)
	small.LabelNoise = 0.3
	dir := t.TempDir()
	m, err := WriteSite(dir, small, DefaultTruth())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := Generate(small, DefaultTruth())
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, small, m, recs)
	want := 0
	for _, r := range recs {
		if r.Septic != r.TrueSeptic {
			want++
		}
	}
	if m.LabelFlips != want || want == 0 {
		t.Errorf("manifest label flips %d, want %d (> 0)", m.LabelFlips, want)
	}
}

func TestMixtureUsesComponentKnobs(t *testing.T) {
	t.Parallel()
	sites := DefaultSites(2, 9)
	sites[0].Calibration = map[string]float64{"heart_rate": 20}
	sites[1].LabelNoise = 0.3
	test := TestSite(sites, 3000, 9)
	recs, err := Generate(test, DefaultTruth())
	if err != nil {
		t.Fatal(err)
	}
	// Patients from the community site (young) read high; patients from
	// the academic one have their labels flipped. Without knowing each
	// patient's component, check both effects appear in the mixture.
	var calibrated, flipped int
	for i := range recs {
		if recs[i].meas.offset[vHeartRate] == 20 {
			calibrated++
		}
		if recs[i].Septic != recs[i].TrueSeptic {
			flipped++
			if recs[i].meas.offset[vHeartRate] != 0 {
				t.Fatalf("patient %d: flipped, but drawn from the site without label noise", i)
			}
		}
	}
	// The community site has 200 of 1,100 patients.
	if frac := float64(calibrated) / float64(len(recs)); frac < 0.14 || frac > 0.23 {
		t.Errorf("%.3f of patients measured with the community site's calibration, want about 0.18", frac)
	}
	if frac := float64(flipped) / float64(len(recs)-calibrated); math.Abs(frac-0.3) > 0.04 {
		t.Errorf("%.3f of the academic site's patients flipped, want about 0.3", frac)
	}
}

func TestValidateNamesField(t *testing.T) {
	good := DefaultSites(1, 1)[0]
	tests := []struct {
		name   string
		modify func(*Site)
		field  string // the message names this field
	}{
		{"no name", func(s *Site) { s.Name = "" }, "name"},
		{"index", func(s *Site) { s.Index = -1 }, "index"},
		{"patients", func(s *Site) { s.Patients = MaxPatients + 1 }, "patients"},
		{"age mean", func(s *Site) { s.AgeMean = 5 }, "age_mean"},
		{"age sd", func(s *Site) { s.AgeSD = nan() }, "age_sd"},
		{"female fraction", func(s *Site) { s.FemaleFrac = -0.1 }, "female_frac"},
		{"shift", func(s *Site) { s.PrevalenceShift = 11 }, "prevalence_shift"},
		{"missing", func(s *Site) { s.Missing = 1 }, "missing"},
		{"unknown vital", func(s *Site) { s.Calibration = map[string]float64{"heart_rate": 1, "age": 3} }, `calibration["age"]`},
		{"NaN offset", func(s *Site) { s.Calibration = map[string]float64{"spo2": nan()} }, `calibration["spo2"]`},
		{"infinite offset", func(s *Site) { s.Calibration = map[string]float64{"sbp": math.Inf(1)} }, `calibration["sbp"]`},
		{"offset too large", func(s *Site) { s.Calibration = map[string]float64{"heart_rate": -166} }, `calibration["heart_rate"]`},
		{"negative noise", func(s *Site) { s.Noise = -0.1 }, "noise"},
		{"noise too large", func(s *Site) { s.Noise = MaxNoise + 1 }, "noise"},
		{"NaN noise", func(s *Site) { s.Noise = nan() }, "noise"},
		{"label noise one half", func(s *Site) { s.LabelNoise = 0.5 }, "label_noise"},
		{"negative label noise", func(s *Site) { s.LabelNoise = -0.01 }, "label_noise"},
		{"negative telemetry", func(s *Site) { s.TelemetryMinutes = -5 }, "telemetry_minutes"},
		{"telemetry too sparse", func(s *Site) { s.TelemetryMinutes = MaxTelemetryMinutes + 1 }, "telemetry_minutes"},
		{"telemetry with a bad site id", func(s *Site) { s.Name = "north wing"; s.TelemetryMinutes = 5 }, "name"},
		{"mix component", func(s *Site) { c := *s; c.Noise = -1; s.Mix = []Site{*s, c} }, "mix[1].noise"},
		{"mix component calibration", func(s *Site) { c := *s; c.Calibration = map[string]float64{"x": 1}; s.Mix = []Site{c} }, `mix[0].calibration["x"]`},
		{"empty mix component", func(s *Site) { c := *s; c.Patients = 0; s.Mix = []Site{c} }, "mix[0].patients"},
		{"mixture calibration", func(s *Site) { s.Mix = []Site{*s}; s.Calibration = map[string]float64{"bmi": 1} }, "calibration"},
		{"mixture noise", func(s *Site) { s.Mix = []Site{*s}; s.Noise = 1 }, "noise"},
		{"mixture label noise", func(s *Site) { s.Mix = []Site{*s}; s.LabelNoise = 0.1 }, "label_noise"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.modify(&s)
			err := s.Validate()
			if !errors.Is(err, ErrInvalidSite) {
				t.Fatalf("Validate = %v, want ErrInvalidSite", err)
			}
			// The message is for people editing a scenario file: it must
			// name the field as the file spells it.
			if !strings.Contains(err.Error(), " "+tc.field+": ") && !strings.Contains(err.Error(), ": "+tc.field+": ") {
				t.Errorf("Validate = %q, want it to name %s", err, tc.field)
			}
			if _, err := WriteSite(t.TempDir(), s, DefaultTruth()); !errors.Is(err, ErrInvalidSite) {
				t.Errorf("WriteSite = %v, want ErrInvalidSite", err)
			}
		})
	}

	ok := good
	ok.Calibration = map[string]float64{}
	names, limits := VitalNames()
	for i, n := range names {
		ok.Calibration[n] = -limits[i]
	}
	ok.Noise, ok.LabelNoise, ok.TelemetryMinutes = MaxNoise, 0.49, MaxTelemetryMinutes
	if err := ok.Validate(); err != nil {
		t.Errorf("site with every knob at its limit: %v", err)
	}
	if spec := DefaultFeatureSpec(); !slices.Equal(names, featureNames(spec.Features[2:])) {
		t.Errorf("VitalNames %q are not the spec's vital features", names)
	}
}

func featureNames[F interface{ GetName() string }](fs []F) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.GetName()
	}
	return out
}

// TestSiteJSONTags checks every Site field has a snake_case, omitempty JSON
// name, as scenario files use.
func TestSiteJSONTags(t *testing.T) {
	typ := reflect.TypeFor[Site]()
	seen := map[string]bool{}
	for f := range typ.Fields() {
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" || opts != "omitempty" || name != strings.ToLower(name) || strings.ContainsAny(name, "- ") || seen[name] {
			t.Errorf("field %s: json tag %q, want a unique snake_case name with omitempty", f.Name, tag)
		}
		seen[name] = true
	}
}

func TestSiteFromYAML(t *testing.T) {
	doc := `
name: icu-north
index: 7
patients: 120
age_mean: 64
age_sd: 14.5
female_frac: 0.45
prevalence_shift: 0.4
missing: 0.05
calibration:
  heart_rate: 6
  spo2: -2.5
noise: 0.25
label_noise: 0.1
telemetry_minutes: 15
seed: 18446744073709551557
`
	want := Site{
		Name: "icu-north", Index: 7, Patients: 120, AgeMean: 64, AgeSD: 14.5, FemaleFrac: 0.45,
		PrevalenceShift: 0.4, Missing: 0.05, Calibration: map[string]float64{"heart_rate": 6, "spo2": -2.5},
		Noise: 0.25, LabelNoise: 0.1, TelemetryMinutes: 15, Seed: 18446744073709551557,
	}
	var got Site
	if err := yaml.UnmarshalStrict([]byte(doc), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	// The default sites and their test mixture survive a round trip, and
	// unset knobs are not written.
	sites := DefaultSites(3, 5)
	all := append(slices.Clone(sites), TestSite(sites, 100, 5))
	for _, s := range all {
		b, err := yaml.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, knob := range []string{"calibration", "noise", "label_noise", "telemetry_minutes"} {
			if bytes.Contains(b, []byte(knob+":")) {
				t.Errorf("%s: unset %s written:\n%s", s.Name, knob, b)
			}
		}
		var back Site
		if err := yaml.UnmarshalStrict(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, s) {
			t.Errorf("%s: round trip gave %+v, want %+v", s.Name, back, s)
		}
	}
	if err := yaml.UnmarshalStrict([]byte("name: x\nlabel_nosie: 0.1\n"), new(Site)); err == nil {
		t.Error("misspelt field accepted")
	}
}

func ExampleSite_Validate() {
	s := DefaultSites(1, 1)[0]
	s.Calibration = map[string]float64{"pulse": 5}
	fmt.Println(s.Validate())
	// Output: synth: invalid site "community": calibration["pulse"]: unknown vital, want one of heart_rate, resp_rate, sbp, dbp, temp, spo2, bmi
}
