package synth

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pb"
)

// smallSite is a quick site for file-level tests.
func smallSite(seed uint64) Site {
	s := DefaultSites(4, seed)[1]
	s.Patients = 60
	return s
}

var siteFiles = []string{PatientFile, ObservationFile, ConditionFile, BundleFile}

func TestWriteSiteDeterministic(t *testing.T) {
	t.Parallel()
	truth := DefaultTruth()
	write := func(site Site) map[string][]byte {
		t.Helper()
		dir := t.TempDir()
		if _, err := WriteSite(dir, site, truth); err != nil {
			t.Fatalf("WriteSite: %v", err)
		}
		out := map[string][]byte{}
		for _, name := range siteFiles {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			out[name] = b
		}
		return out
	}
	a, b := write(smallSite(7)), write(smallSite(7))
	other := write(smallSite(8))
	for _, name := range siteFiles {
		t.Run(name, func(t *testing.T) {
			if len(a[name]) == 0 {
				t.Fatal("empty file")
			}
			if !bytes.Equal(a[name], b[name]) {
				t.Error("same seed gave different bytes")
			}
			if bytes.Equal(a[name], other[name]) {
				t.Error("different seed gave the same bytes")
			}
		})
	}
}

// resource is a FHIR resource read back from a site's files; bundle resources
// refer to their patient by urn:uuid, the others by Patient/<id>.
type resource struct {
	raw    map[string]any
	bundle bool
}

// readNDJSON reads one JSON object per line, checking each has a
// resourceType.
func readNDJSON(t *testing.T, r io.Reader, name string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<22)
	for n := 1; sc.Scan(); n++ {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s line %d: %v", name, n, err)
		}
		if rt, _ := m["resourceType"].(string); rt == "" {
			t.Fatalf("%s line %d: no resourceType", name, n)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

// readSite reads every resource WriteSite wrote to dir, by resourceType.
func readSite(t *testing.T, dir string) map[string][]resource {
	t.Helper()
	byType := map[string][]resource{}
	add := func(file string, ms []map[string]any) {
		for _, m := range ms {
			rt := m["resourceType"].(string)
			if want := strings.SplitN(file, ".", 2)[0]; rt != want {
				t.Errorf("%s holds a %s", file, rt)
			}
			byType[rt] = append(byType[rt], resource{raw: m})
		}
	}
	for _, name := range []string{PatientFile, ConditionFile} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		add(name, readNDJSON(t, f, name))
		f.Close()
	}
	f, err := os.Open(filepath.Join(dir, ObservationFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", ObservationFile, err)
	}
	add(ObservationFile, readNDJSON(t, zr, ObservationFile))

	raw, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		ResourceType string
		Type         string
		Entry        []struct {
			FullURL  string         `json:"fullUrl"`
			Resource map[string]any `json:"resource"`
			Request  struct{ Method, URL string }
		}
	}
	if err := json.Unmarshal(raw, &bundle); err != nil {
		t.Fatalf("%s: %v", BundleFile, err)
	}
	if bundle.ResourceType != "Bundle" || bundle.Type != "transaction" {
		t.Fatalf("%s: resourceType %q type %q", BundleFile, bundle.ResourceType, bundle.Type)
	}
	for i, e := range bundle.Entry {
		rt, _ := e.Resource["resourceType"].(string)
		id, _ := e.Resource["id"].(string)
		if rt == "" || e.FullURL != "urn:uuid:"+id || e.Request.Method != "POST" || e.Request.URL != rt {
			t.Errorf("bundle entry %d: resourceType %q fullUrl %q id %q request %+v", i, rt, e.FullURL, id, e.Request)
		}
		byType[rt] = append(byType[rt], resource{raw: e.Resource, bundle: true})
	}
	return byType
}

// str digs a string out of nested JSON by keys and array indexes.
func str(v any, path ...any) string {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return ""
			}
			v = a[k]
		}
	}
	s, _ := v.(string)
	return s
}

// quantityValue reads a valueQuantity, checking its UCUM coding.
func quantityValue(t *testing.T, q any, wantUnit string) float64 {
	t.Helper()
	m, _ := q.(map[string]any)
	v, ok := m["value"].(float64)
	if !ok || m["system"] != SystemUCUM || m["code"] != wantUnit || m["unit"] != wantUnit {
		t.Fatalf("bad valueQuantity %v, want unit %s", q, wantUnit)
	}
	return v
}

// TestFilesMatchRecords reads every file back the way a FHIR reader would and
// checks it against the manifest and the generated records.
func TestFilesMatchRecords(t *testing.T) {
	t.Parallel()
	truth := DefaultTruth()
	sites := DefaultSites(4, 3)
	tests := []Site{sites[0], sites[2], TestSite(sites, 150, 3), smallSite(4)}
	tiny := smallSite(5)
	tiny.Patients = 3
	tests = append(tests, tiny)
	for _, site := range tests {
		t.Run(site.Name, func(t *testing.T) {
			dir := t.TempDir()
			m, err := WriteSite(dir, site, truth)
			if err != nil {
				t.Fatalf("WriteSite: %v", err)
			}
			recs, err := Generate(site, truth)
			if err != nil {
				t.Fatal(err)
			}
			checkFiles(t, dir, site, m, recs)
		})
	}
}

func checkFiles(t *testing.T, dir string, site Site, m *Manifest, recs []Record) {
	byType := readSite(t, dir)
	nbundle := min(BundlePatients, site.Patients)
	if m.Site != site.Name {
		t.Errorf("manifest site %q, want %q", m.Site, site.Name)
	}
	counts := []struct {
		name      string
		got, want int
	}{
		{"patients", len(byType["Patient"]), m.Patients},
		{"site patients", m.Patients, site.Patients},
		{"observations", len(byType["Observation"]), m.Observations},
		{"conditions", len(byType["Condition"]), m.Conditions},
		{"resource types", len(byType), min(3, len(byType))},
	}
	for _, c := range counts {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	for _, list := range [][]string{m.Names, m.MRNs, m.Phones, m.Emails, m.Addresses, m.BirthDates} {
		if len(list) != m.Patients {
			t.Errorf("manifest list has %d values, want %d", len(list), m.Patients)
		}
	}

	// Patients: identity as in the manifest, references resolvable.
	recByID := map[string]*Record{}
	for i := range recs {
		recByID[recs[i].ID] = &recs[i]
	}
	inBundle := 0
	for i, p := range byType["Patient"] {
		id := str(p.raw, "id")
		rec, ok := recByID[id]
		if !ok {
			t.Fatalf("patient %s not generated", id)
		}
		if p.bundle {
			inBundle++
		}
		if i >= len(m.Names) {
			continue
		}
		name := str(p.raw, "name", 0, "given", 0) + " " + str(p.raw, "name", 0, "family")
		wantGender := map[bool]string{true: "female", false: "male"}[rec.Profile.Female]
		got := []string{name, str(p.raw, "identifier", 0, "value"), str(p.raw, "telecom", 0, "value"),
			str(p.raw, "telecom", 1, "value"), str(p.raw, "address", 0, "line", 0), str(p.raw, "birthDate"), str(p.raw, "gender")}
		want := []string{m.Names[i], m.MRNs[i], m.Phones[i], m.Emails[i], m.Addresses[i], m.BirthDates[i], wantGender}
		if !slices.Equal(got, want) {
			t.Errorf("patient %d: got %q, want %q", i, got, want)
		}
		if sys := str(p.raw, "identifier", 0, "system"); sys != mrnSystemPrefix+itoaTest(site.Index) {
			t.Errorf("patient %d: MRN system %q", i, sys)
		}
		if code := str(p.raw, "identifier", 0, "type", "coding", 0, "code"); code != "MR" {
			t.Errorf("patient %d: identifier type %q", i, code)
		}
	}
	if inBundle != nbundle {
		t.Errorf("%d patients in the bundle, want %d", inBundle, nbundle)
	}
	subject := func(r resource) *Record {
		t.Helper()
		ref := str(r.raw, "subject", "reference")
		prefix := "Patient/"
		if r.bundle {
			prefix = "urn:uuid:"
		}
		id, ok := strings.CutPrefix(ref, prefix)
		rec := recByID[id]
		if !ok || rec == nil {
			t.Fatalf("%s %s: bad subject %q", str(r.raw, "resourceType"), str(r.raw, "id"), ref)
		}
		return rec
	}

	// Observations: the last value of each vital, as a reader computes it.
	type obsVal struct {
		at  time.Time
		val float64
	}
	last := map[*Record]map[string]obsVal{}
	lastTime := map[*Record]time.Time{}
	byLOINC := map[string]vital{}
	for k, v := range vitals {
		byLOINC[v.loinc] = vital(k)
	}
	for _, o := range byType["Observation"] {
		rec := subject(o)
		at, err := time.Parse(time.RFC3339, str(o.raw, "effectiveDateTime"))
		if err != nil {
			t.Fatalf("observation %s: %v", str(o.raw, "id"), err)
		}
		if str(o.raw, "code", "coding", 0, "system") != SystemLOINC {
			t.Fatalf("observation %s: code system %q", str(o.raw, "id"), str(o.raw, "code", "coding", 0, "system"))
		}
		vals := map[string]float64{}
		switch code := str(o.raw, "code", "coding", 0, "code"); code {
		case loincBPPanel:
			comps, _ := o.raw["component"].([]any)
			if len(comps) != 2 {
				t.Fatalf("BP panel %s: %d components", str(o.raw, "id"), len(comps))
			}
			for _, c := range comps {
				cc := str(c, "code", "coding", 0, "code")
				k, ok := byLOINC[cc]
				if !ok || str(c, "code", "coding", 0, "system") != SystemLOINC {
					t.Fatalf("BP panel %s: component %q", str(o.raw, "id"), cc)
				}
				vals[cc] = quantityValue(t, c.(map[string]any)["valueQuantity"], vitals[k].unit)
			}
		default:
			k, ok := byLOINC[code]
			if !ok {
				t.Fatalf("observation %s: unknown code %q", str(o.raw, "id"), code)
			}
			vals[code] = quantityValue(t, o.raw["valueQuantity"], vitals[k].unit)
		}
		if last[rec] == nil {
			last[rec] = map[string]obsVal{}
		}
		for code, v := range vals {
			if prev, ok := last[rec][code]; !ok || !at.Before(prev.at) {
				last[rec][code] = obsVal{at, v}
			}
		}
		if at.After(lastTime[rec]) {
			lastTime[rec] = at
		}
	}
	for i := range recs {
		val, have := recs[i].lastObserved()
		for k, def := range vitals {
			got, ok := last[&recs[i]][def.loinc]
			if ok != have[k] || (ok && got.val != val[k]) {
				t.Errorf("patient %d %s: read %v (present %v), generated %v (present %v)", i, def.name, got.val, ok, val[k], have[k])
			}
		}
	}

	// Conditions: SNOMED coded; sepsis exactly for the septic patients,
	// diagnosed after their vitals.
	septic := map[*Record]bool{}
	for _, c := range byType["Condition"] {
		rec := subject(c)
		if sys := str(c.raw, "code", "coding", 0, "system"); sys != SystemSNOMED {
			t.Errorf("condition %s: system %q", str(c.raw, "id"), sys)
		}
		onset, err := time.Parse(time.RFC3339, str(c.raw, "onsetDateTime"))
		if err != nil {
			t.Fatalf("condition %s: %v", str(c.raw, "id"), err)
		}
		if str(c.raw, "code", "coding", 0, "code") != CodeSepsis {
			continue
		}
		if septic[rec] {
			t.Errorf("patient %s: two sepsis conditions", rec.ID)
		}
		septic[rec] = true
		if !onset.After(lastTime[rec]) {
			t.Errorf("patient %s: sepsis onset %v not after last vitals %v", rec.ID, onset, lastTime[rec])
		}
	}
	positives := 0
	for i := range recs {
		if recs[i].Septic {
			positives++
		}
		if septic[&recs[i]] != recs[i].Septic {
			t.Errorf("patient %d: sepsis condition %v, septic %v", i, septic[&recs[i]], recs[i].Septic)
		}
	}
	if positives != m.Positives {
		t.Errorf("manifest positives %d, want %d", m.Positives, positives)
	}
}

func itoaTest(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestIdentifiersUnique(t *testing.T) {
	if testing.Short() {
		t.Skip("generates whole sites; the race run gains nothing (the generator starts no goroutines)")
	}
	t.Parallel()
	truth := DefaultTruth()
	sites := DefaultSites(4, 11)
	all := append(slices.Clone(sites), TestSite(sites, 1000, 11))
	seen := map[string]map[string]string{} // kind -> value -> site
	for _, site := range all {
		m, err := WriteSite(t.TempDir(), site, truth)
		if err != nil {
			t.Fatalf("WriteSite %s: %v", site.Name, err)
		}
		lists := []struct {
			kind   string
			values []string
			global bool
		}{
			{"name", m.Names, true},
			{"family", families(m.Names), true},
			{"mrn", m.MRNs, true},
			{"phone", m.Phones, true},
			{"email", m.Emails, true},
			{"address", m.Addresses, true},
			{"birth date", m.BirthDates, false},
		}
		for _, l := range lists {
			if len(l.values) != site.Patients {
				t.Errorf("%s: %d %ss, want %d", site.Name, len(l.values), l.kind, site.Patients)
			}
			key := l.kind
			if !l.global {
				key += "@" + site.Name
			}
			if seen[key] == nil {
				seen[key] = map[string]string{}
			}
			for _, v := range l.values {
				if v == "" {
					t.Errorf("%s: empty %s", site.Name, l.kind)
				}
				if prev, dup := seen[key][v]; dup {
					t.Errorf("%s %q at %s repeats one at %s", l.kind, v, site.Name, prev)
				}
				seen[key][v] = site.Name
			}
		}
	}
}

func families(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		_, out[i], _ = strings.Cut(n, " ")
	}
	return out
}

func TestBayesAUROCAndPrevalence(t *testing.T) {
	t.Parallel()
	truth := DefaultTruth()
	recs, err := Generate(TestSite(DefaultSites(4, 21), 20_000, 21), truth)
	if err != nil {
		t.Fatal(err)
	}
	scores := make([]float64, len(recs))
	y := make([]float64, len(recs))
	for i, r := range recs {
		scores[i] = r.Logit
		if r.Septic {
			y[i] = 1
		}
	}
	bayes := auroc(scores, y)
	prev := mean(y)
	t.Logf("Bayes AUROC %.3f, prevalence %.3f", bayes, prev)
	if bayes < 0.80 || bayes > 0.88 {
		t.Errorf("Bayes AUROC %.3f not in [0.80, 0.88]", bayes)
	}
	if prev < 0.10 || prev > 0.20 {
		t.Errorf("prevalence %.3f not in [0.10, 0.20]", prev)
	}
}

func TestDefaultSitePrevalence(t *testing.T) {
	t.Parallel()
	truth := DefaultTruth()
	tests := []struct {
		name   string
		lo, hi float64 // expected prevalence
	}{
		{"community", 0.02, 0.09},
		{"academic", 0.08, 0.18},
		{"geriatric", 0.18, 0.35},
		{"regional", 0.02, 0.08},
	}
	sites := DefaultSites(len(tests), 5)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site := sites[i]
			if site.Name != tc.name {
				t.Fatalf("site %d is %q", i, site.Name)
			}
			// Expected prevalence on a large sample of the same population.
			big := site
			big.Patients = 5_000
			recs, err := Generate(big, truth)
			if err != nil {
				t.Fatal(err)
			}
			risk := make([]float64, len(recs))
			for j, r := range recs {
				risk[j] = sigmoid(r.Logit)
			}
			p := mean(risk)
			t.Logf("%s: expected prevalence %.3f", tc.name, p)
			if p < tc.lo || p > tc.hi {
				t.Errorf("expected prevalence %.3f not in [%.2f, %.2f]", p, tc.lo, tc.hi)
			}
		})
	}
}

func mean(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// TestPooledBeatsLocal checks the federation is non-IID enough to matter:
// logistic regression trained on all default sites pooled ranks a held-out
// mixture population clearly better than the average single-site model.
func TestPooledBeatsLocal(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("trains many models")
	}
	truth := DefaultTruth()
	spec := DefaultFeatureSpec()
	for _, seed := range []uint64{1, 2, 3, 4, 5} {
		t.Run(itoaTest(int(seed)), func(t *testing.T) {
			sites := DefaultSites(4, seed)
			test, err := Generate(TestSite(sites, 5_000, seed), truth)
			if err != nil {
				t.Fatal(err)
			}
			tx, ty := design(t, spec, test)
			var px [][]float64
			var py, local []float64
			for _, s := range sites {
				recs, err := Generate(s, truth)
				if err != nil {
					t.Fatal(err)
				}
				x, y := design(t, spec, recs)
				px, py = append(px, x...), append(py, y...)
				local = append(local, auroc(predict(fitLogReg(x, y, lrSteps, lrRate), tx), ty))
			}
			pooled := auroc(predict(fitLogReg(px, py, lrSteps, lrRate), tx), ty)
			scores := make([]float64, len(test))
			for i, r := range test {
				scores[i] = r.Logit
			}
			t.Logf("Bayes %.3f, pooled %.3f, local %.3f (mean %.3f)", auroc(scores, ty), pooled, local, mean(local))
			if margin := pooled - mean(local); margin < 0.02 {
				t.Errorf("pooled AUROC %.3f beats mean local %.3f by %.3f, want >= 0.02", pooled, mean(local), margin)
			}
		})
	}
}

// Full-batch gradient descent settings for the logistic regressions above.
const (
	lrSteps = 500
	lrRate  = 1.0
)

func TestValidate(t *testing.T) {
	good := DefaultSites(1, 1)[0]
	tests := []struct {
		name   string
		modify func(*Site)
	}{
		{"no name", func(s *Site) { s.Name = "" }},
		{"negative index", func(s *Site) { s.Index = -1 }},
		{"index too large", func(s *Site) { s.Index = MaxSiteIndex + 1 }},
		{"negative patients", func(s *Site) { s.Patients = -1 }},
		{"too many patients", func(s *Site) { s.Patients = MaxPatients + 1 }},
		{"child age", func(s *Site) { s.AgeMean = 5 }},
		{"zero age sd", func(s *Site) { s.AgeSD = 0 }},
		{"female fraction", func(s *Site) { s.FemaleFrac = 1.5 }},
		{"NaN shift", func(s *Site) { s.PrevalenceShift = nan() }},
		{"all missing", func(s *Site) { s.Missing = 1 }},
		{"bad mix component", func(s *Site) { s.Mix = []Site{{Patients: 10, AgeMean: 50}} }},
		{"empty mix component", func(s *Site) { c := *s; c.Patients = 0; s.Mix = []Site{c} }},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("default site: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.modify(&s)
			if err := s.Validate(); !errors.Is(err, ErrInvalidSite) {
				t.Errorf("Validate = %v, want ErrInvalidSite", err)
			}
			if _, err := Generate(s, DefaultTruth()); !errors.Is(err, ErrInvalidSite) {
				t.Errorf("Generate = %v, want ErrInvalidSite", err)
			}
			if _, err := WriteSite(t.TempDir(), s, DefaultTruth()); !errors.Is(err, ErrInvalidSite) {
				t.Errorf("WriteSite = %v, want ErrInvalidSite", err)
			}
		})
	}
}

func nan() float64 {
	var zero float64
	return zero / zero
}

func TestWriteSiteError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, dir string }{
		{"dir is a file", file},
		{"parent is a file", filepath.Join(file, "site")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := WriteSite(tc.dir, smallSite(1), DefaultTruth()); !errors.Is(err, ErrWrite) {
				t.Errorf("WriteSite = %v, want ErrWrite", err)
			}
		})
	}
}

func TestDefaultSites(t *testing.T) {
	tests := []struct {
		n     int
		names []string
	}{
		{0, nil},
		{-1, nil},
		{1, []string{"community"}},
		{4, []string{"community", "academic", "geriatric", "regional"}},
		{6, []string{"community", "academic", "geriatric", "regional", "community-2", "academic-2"}},
	}
	for _, tc := range tests {
		t.Run(itoaTest(tc.n), func(t *testing.T) {
			sites := DefaultSites(tc.n, 9)
			var names []string
			seeds := map[uint64]bool{}
			for i, s := range sites {
				names = append(names, s.Name)
				if s.Index != i+1 {
					t.Errorf("site %d index %d", i, s.Index)
				}
				if err := s.Validate(); err != nil {
					t.Errorf("site %d: %v", i, err)
				}
				seeds[s.Seed] = true
			}
			if !slices.Equal(names, tc.names) {
				t.Errorf("names %q, want %q", names, tc.names)
			}
			if len(seeds) != len(sites) {
				t.Errorf("%d distinct seeds for %d sites", len(seeds), len(sites))
			}
			if len(sites) > 0 {
				ts := TestSite(sites, 100, 9)
				if err := ts.Validate(); err != nil {
					t.Errorf("TestSite: %v", err)
				}
				if ts.Index != len(sites)+1 || seeds[ts.Seed] {
					t.Errorf("TestSite index %d seed %d collide with the sites", ts.Index, ts.Seed)
				}
			}
		})
	}
	if a, b := DefaultSites(4, 1), DefaultSites(4, 2); a[0].Seed == b[0].Seed {
		t.Error("seed does not change the site seeds")
	}
}

func TestDefaultFeatureSpec(t *testing.T) {
	spec := DefaultFeatureSpec()
	want := []struct {
		kind  pb.FeatureKind
		loinc string
	}{
		{pb.FeatureKind_FEATURE_KIND_AGE, ""},
		{pb.FeatureKind_FEATURE_KIND_SEX_FEMALE, ""},
		{pb.FeatureKind_FEATURE_KIND_OBS_LAST, "8867-4"},
		{pb.FeatureKind_FEATURE_KIND_OBS_LAST, "9279-1"},
		{pb.FeatureKind_FEATURE_KIND_OBS_LAST, "8480-6"},
		{pb.FeatureKind_FEATURE_KIND_OBS_LAST, "8462-4"},
		{pb.FeatureKind_FEATURE_KIND_OBS_LAST, "8310-5"},
		{pb.FeatureKind_FEATURE_KIND_OBS_LAST, "59408-5"},
		{pb.FeatureKind_FEATURE_KIND_OBS_LAST, "39156-5"},
	}
	if len(spec.Features) != len(want) {
		t.Fatalf("%d features, want %d", len(spec.Features), len(want))
	}
	names := map[string]bool{}
	for i, f := range spec.Features {
		if f.Kind != want[i].kind || f.Loinc != want[i].loinc {
			t.Errorf("feature %d: kind %v loinc %q, want %v %q", i, f.Kind, f.Loinc, want[i].kind, want[i].loinc)
		}
		if f.Scale <= 0 || f.Name == "" || names[f.Name] {
			t.Errorf("feature %d: name %q scale %v", i, f.Name, f.Scale)
		}
		names[f.Name] = true
		if z := (f.Fill - f.Center) / f.Scale; z < -1 || z > 1 {
			t.Errorf("feature %s: fill %v is %.1f scales from the center", f.Name, f.Fill, z)
		}
	}
	if spec.Label.GetConditionSystem() != SystemSNOMED || spec.Label.GetConditionCode() != "91302008" {
		t.Errorf("label %v", spec.Label)
	}
	if DefaultFeatureSpec() == spec {
		t.Error("DefaultFeatureSpec returns a shared message")
	}
}

func TestTruthLogit(t *testing.T) {
	truth := DefaultTruth()
	base := Profile{Age: 60, HeartRate: 80, RespRate: 16, Systolic: 125, Diastolic: 75, Temperature: 37, SpO2: 97, BMI: 26}
	tests := []struct {
		name   string
		modify func(*Profile)
		higher bool
	}{
		{"older", func(p *Profile) { p.Age = 80 }, true},
		{"younger", func(p *Profile) { p.Age = 30 }, false},
		{"tachycardia", func(p *Profile) { p.HeartRate = 120 }, true},
		{"tachypnoea", func(p *Profile) { p.RespRate = 28 }, true},
		{"hypotension", func(p *Profile) { p.Systolic = 85 }, true},
		{"fever", func(p *Profile) { p.Temperature = 39.5 }, true},
		{"hypothermia", func(p *Profile) { p.Temperature = 35.0 }, true},
		{"hypoxia", func(p *Profile) { p.SpO2 = 88 }, true},
		{"obesity", func(p *Profile) { p.BMI = 38 }, true},
		{"female", func(p *Profile) { p.Female = true }, false},
	}
	l0 := truth.Logit(base)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			tc.modify(&p)
			l := truth.Logit(p)
			if (l > l0) != tc.higher {
				t.Errorf("logit %.3f vs baseline %.3f, want higher=%v", l, l0, tc.higher)
			}
			if r := truth.Risk(p, 0); r <= 0 || r >= 1 {
				t.Errorf("risk %v", r)
			}
		})
	}
	if truth.Risk(base, 1) <= truth.Risk(base, 0) {
		t.Error("prevalence shift does not raise risk")
	}
}
