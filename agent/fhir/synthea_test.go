package fhir

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syntheaDir is the shared real-data folder, relative to this package.
const syntheaDir = "../../../shared/data/synthea-r4"

func needSynthea(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short (the race run): this package starts no goroutines, and the real-data runs are slow under the race detector; they run in the full suite")
	}
	if _, err := os.Stat(syntheaDir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("real data missing in CI (see shared/data/README.md): %v", err)
		}
		t.Skipf("real data not found at %s (see shared/data/README.md): %v", syntheaDir, err)
	}
	return syntheaDir
}

// expectation is an independent count of what the readers should produce,
// computed with plain encoding/json over generic maps.
type expectation struct {
	byType    map[string]int // every resource by resourceType
	resources map[string]int // expected Stats.Resources
	skipped   map[string]int // expected Stats.Skipped
	records   int            // expected Observation records (components expanded)
}

func newExpectation() *expectation {
	return &expectation{byType: map[string]int{}, resources: map[string]int{}, skipped: map[string]int{}}
}

func (e *expectation) add(t *testing.T, raw []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("independent counter: %v", err)
	}
	typ, _ := m["resourceType"].(string)
	e.byType[typ]++
	switch typ {
	case "Patient", "Condition", "Encounter":
		e.resources[typ]++
	case "Observation":
		n := 0
		if hasLOINC(m["code"]) && hasNumber(m["valueQuantity"]) {
			n++
		}
		comps, _ := m["component"].([]any)
		for _, c := range comps {
			cm, _ := c.(map[string]any)
			if hasLOINC(cm["code"]) && hasNumber(cm["valueQuantity"]) {
				n++
			}
		}
		if n == 0 {
			e.skipped["no-numeric-value"]++
			return
		}
		e.resources[typ]++
		e.records += n
	default:
		e.skipped[typ]++
	}
}

func hasLOINC(code any) bool {
	cm, _ := code.(map[string]any)
	codings, _ := cm["coding"].([]any)
	for _, c := range codings {
		if m, _ := c.(map[string]any); m["system"] == "http://loinc.org" {
			return true
		}
	}
	return false
}

func hasNumber(q any) bool {
	m, _ := q.(map[string]any)
	_, ok := m["value"].(float64)
	return ok
}

func countRecords(ps []PatientData) (patients, obs, conds int) {
	for _, p := range ps {
		if p.Patient.BirthDate.IsZero() && p.Patient.Gender == "" {
			continue // known only from references
		}
		patients++
	}
	for _, p := range ps {
		obs += len(p.Observations)
		conds += len(p.Conditions)
	}
	return patients, obs, conds
}

func TestSyntheaNDJSON(t *testing.T) {
	dir := filepath.Join(needSynthea(t), "ndjson")
	files, err := filepath.Glob(filepath.Join(dir, "*.ndjson.gz"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ndjson files: %v", err)
	}
	want := newExpectation()
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(fh)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) != "" {
				want.add(t, sc.Bytes())
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		fh.Close()
	}
	// The figures published in shared/data/README.md.
	for typ, n := range map[string]int{"Patient": 100, "Observation": 16315, "Condition": 639, "Encounter": 3697} {
		if want.byType[typ] != n {
			t.Fatalf("independent count of %s = %d, README says %d", typ, want.byType[typ], n)
		}
	}

	var c Collector
	st, err := ReadDir(context.Background(), dir, &c)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, "Resources", st.Resources, want.resources)
	checkCounts(t, "Skipped", st.Skipped, want.skipped)
	checkCounts(t, "Rejected", st.Rejected, nil)
	if got := st.Resources["Observation"] + st.Skipped["no-numeric-value"]; got != 16315 {
		t.Errorf("ingested+skipped observations = %d, want 16315", got)
	}

	ps := c.Patients()
	patients, obs, conds := countRecords(ps)
	if patients != 100 || len(ps) != 100 || obs != want.records || conds != 639 {
		t.Errorf("collected %d patients (%d groups), %d observations, %d conditions; want 100, %d, 639", patients, len(ps), obs, conds, want.records)
	}
	bp := map[string]int{}
	for _, p := range ps {
		for _, o := range p.Observations {
			if strings.Contains(o.ID, "#") {
				bp[o.Code]++
			}
			if o.Time.IsZero() || o.Code == "" {
				t.Fatalf("observation without time or code: %+v", o)
			}
		}
	}
	if bp["8480-6"] != 983 || bp["8462-4"] != 983 {
		t.Errorf("blood pressure components = %v, want 983 each", bp)
	}
}

func TestSyntheaBundles(t *testing.T) {
	dir := filepath.Join(needSynthea(t), "bundles")
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) != 2 {
		t.Fatalf("want 2 bundles, got %d: %v", len(files), err)
	}
	want := newExpectation()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var b struct {
			Entry []struct {
				Resource json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(data, &b); err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Entry {
			want.add(t, e.Resource)
		}
	}
	if want.byType["Patient"] != 2 {
		t.Fatalf("independent count: %d patients, want 2", want.byType["Patient"])
	}

	var c Collector
	st, err := ReadDir(context.Background(), dir, &c)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, "Resources", st.Resources, want.resources)
	checkCounts(t, "Skipped", st.Skipped, want.skipped)
	checkCounts(t, "Rejected", st.Rejected, nil)
	ps := c.Patients()
	if len(ps) != 2 {
		t.Fatalf("got %d patients, want 2", len(ps))
	}
	_, obs, conds := countRecords(ps)
	if obs != want.records || conds != want.resources["Condition"] {
		t.Errorf("collected %d observations, %d conditions; want %d, %d", obs, conds, want.records, want.resources["Condition"])
	}
	for _, p := range ps {
		if p.Patient.BirthDate.IsZero() || p.Patient.Gender == "" || len(p.Observations) == 0 {
			t.Errorf("bundle patient incomplete: %d observations, gender %q", len(p.Observations), p.Patient.Gender)
		}
	}
}

// TestSyntheaWithOptions reads the real export with every check on: a
// clock, plausibility, duplicates and a quarantine. Nothing in it is
// broken, so nothing may be rejected, and every observation of a code in
// the unit table must carry its canonical unit.
func TestSyntheaWithOptions(t *testing.T) {
	root := needSynthea(t)
	for _, sub := range []string{"ndjson", "bundles"} {
		t.Run(sub, func(t *testing.T) {
			var q quarantined
			opts := DefaultOptions()
			opts.Now = func() time.Time { return time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC) }
			opts.Quarantine = q.add
			var c Collector
			st, err := ReadDirWith(context.Background(), filepath.Join(root, sub), &c, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkCounts(t, "Rejected", st.Rejected, nil)
			if len(q.reasons) != 0 || st.Skipped["duplicate"] != 0 {
				t.Fatalf("quarantined %v, %d duplicates", q.reasons, st.Skipped["duplicate"])
			}
			normalized := 0
			for _, p := range c.Patients() {
				for _, o := range p.Observations {
					if want, ok := CanonicalUnit(o.Code); ok {
						normalized++
						if o.Unit != want {
							t.Fatalf("observation %s has unit %q, want %q", o.Code, o.Unit, want)
						}
					}
				}
			}
			if normalized == 0 {
				t.Fatal("no observation of a code in the unit table")
			}
		})
	}
}
