package sim

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/fhir/fhirtest"
	"github.com/cohort-fl/cohort/protocol/featurespec"
)

func syntheaDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "data", "synthea-r4")
	if _, err := os.Stat(filepath.Join(dir, "ndjson")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs the Synthea data: %v", err)
		}
		t.Skipf("Synthea data not present: %v", err)
	}
	return dir
}

// gunzip returns the decompressed content of a .gz file.
func gunzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lineCount counts the resources of one type in a Synthea-shaped folder.
func lineCount(t *testing.T, dir, typ string) int {
	t.Helper()
	return bytes.Count(gunzip(t, filepath.Join(dir, typ+".ndjson.gz")), []byte("\n"))
}

// The spec only names what the sample has, and the label is common
// enough: the documented 26 of 100 patients, all in the adult cohort.
func TestSyntheaSpec(t *testing.T) {
	src, err := syntheaSource(syntheaDir(t))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := featurespec.Parse(syntheaSpec)
	if err != nil {
		t.Fatal(err)
	}
	var c fhir.Collector
	if _, err := fhir.ReadDir(context.Background(), src, &c); err != nil {
		t.Fatal(err)
	}
	patients := c.Patients()
	for _, f := range spec.GetFeatures() {
		if f.GetLoinc() == "" {
			continue
		}
		n := 0
		for _, p := range patients {
			if slices.ContainsFunc(p.Observations, func(o fhir.Observation) bool { return o.Code == f.GetLoinc() }) {
				n++
			}
		}
		if n < 90 {
			t.Errorf("feature %s (%s): only %d patients have it", f.GetName(), f.GetLoinc(), n)
		}
		if f.GetLoinc() == "4548-4" || f.GetLoinc() == "2339-0" {
			t.Errorf("feature %s reads the measurement that defines the label", f.GetName())
		}
	}
	units, err := syntheaUnits(context.Background(), src, spec)
	if err != nil {
		t.Fatal(err)
	}
	pos, eligible, eligiblePos := 0, 0, 0
	for _, u := range units {
		if u.positive {
			pos++
		}
		if u.eligible {
			eligible++
			if u.positive {
				eligiblePos++
			}
		}
	}
	if len(units) != 100 || pos != 26 || eligible != 82 || eligiblePos != 26 {
		t.Errorf("%d patients, %d with prediabetes, %d in the cohort (%d with prediabetes); the spec documents 100, 26, 82 and 26",
			len(units), pos, eligible, eligiblePos)
	}
}

// prepareSynthea puts every patient, with all its Patient, Condition and
// Observation resources, in exactly one site or the test population;
// both have positives; the same seed writes the same bytes; a skewed split
// gives the documented counts; and too many sites are refused.
func TestSyntheaSplit(t *testing.T) {
	if testing.Short() {
		t.Skip("splits the Synthea sample four times (no concurrency: the race run gains nothing)")
	}
	dir := syntheaDir(t)
	src, err := syntheaSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := featurespec.Parse(syntheaSpec)
	if err != nil {
		t.Fatal(err)
	}
	units, err := syntheaUnits(context.Background(), src, spec)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]syntheaUnit{}
	for _, u := range units {
		byID[u.id] = u
	}
	least := syntheaMin(DefaultConfig().ValidationFraction)
	if least.site != 28 {
		t.Errorf("a site needs %d patients in the cohort; the comments say 28", least.site)
	}
	for _, split := range []string{SplitRandom, SplitSkewed} {
		t.Run(split, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Dataset, cfg.SyntheaDir, cfg.Split, cfg.Sites, cfg.Seed = DatasetSynthea, dir, split, 2, 11
			prep := func() (*prepared, string) {
				out := t.TempDir()
				var log bytes.Buffer
				p, err := prepareSynthea(context.Background(), out, cfg, &log)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s%s", log.Bytes(), p.describe())
				return p, out
			}
			p, out := prep()
			_, out2 := prep()
			dirs := append(p.siteIDs(), "test")
			where := map[string]string{}
			total := map[string]int{}
			// In the cohort, by directory: patients and positives.
			var size, pos []int
			for i, d := range dirs {
				for _, typ := range syntheaTypes {
					path := filepath.Join(out, "data", d, typ+".ndjson.gz")
					b, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					if b2, err := os.ReadFile(filepath.Join(out2, "data", d, typ+".ndjson.gz")); err != nil || !bytes.Equal(b, b2) {
						t.Errorf("%s/%s differs between two runs with seed %d (%v)", d, typ, cfg.Seed, err)
					}
					if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
						t.Errorf("%s/%s: mode %v (%v), want 0600", d, typ, fi.Mode(), err)
					}
					total[typ] += lineCount(t, filepath.Join(out, "data", d), typ)
				}
				var c fhir.Collector
				if _, err := fhir.ReadDir(context.Background(), filepath.Join(out, "data", d), &c); err != nil {
					t.Fatal(err)
				}
				all, n, np := 0, 0, 0
				for _, pd := range c.Patients() {
					id := pd.Patient.ID
					if prev, dup := where[id]; dup {
						t.Fatalf("a patient is in %s and %s", prev, d)
					}
					where[id] = d
					all++
					if u := byID[id]; u.eligible {
						n++
						if u.positive {
							np++
						}
					}
				}
				if i < len(p.sites) && all != p.sites[i].patients {
					t.Errorf("%s: %d patients read, %d reported", d, all, p.sites[i].patients)
				}
				size, pos = append(size, n), append(pos, np)
			}
			if len(where) != len(units) {
				t.Errorf("%d patients placed of %d", len(where), len(units))
			}
			for _, typ := range syntheaTypes {
				if want := lineCount(t, src, typ); total[typ] != want {
					t.Errorf("%d %s resources written, the sample has %d", total[typ], typ, want)
				}
			}
			k := len(p.sites)
			held := 0
			for _, d := range where {
				if d == "test" {
					held++
				}
			}
			if held != 20 || size[k] != 16 || pos[k] != 5 {
				t.Errorf("test population: %d patients, %d in the cohort, %d positive; want 20, 16 and 5", held, size[k], pos[k])
			}
			for i := range k {
				if size[i] < least.site || pos[i] < least.pos || size[i]-pos[i] < least.neg {
					t.Errorf("%s: %d patients in the cohort, %d positive", dirs[i], size[i], pos[i])
				}
			}
			switch split {
			case SplitRandom:
				if slices.Max(size[:k])-slices.Min(size[:k]) > 1 || slices.Max(pos[:k])-slices.Min(pos[:k]) > 1 {
					t.Errorf("random sites differ: sizes %v, positives %v", size[:k], pos[:k])
				}
			case SplitSkewed:
				share, risk := skewedShares(cfg.Seed, k)
				want, err := allocate(66, share, least.site, nil)
				if err != nil {
					t.Fatal(err)
				}
				posW, caps := make([]float64, k), make([]int, k)
				for i := range k {
					posW[i], caps[i] = share[i]*risk[i], want[i]-least.neg
				}
				wantPos, err := allocate(21, posW, least.pos, caps)
				if err != nil {
					t.Fatal(err)
				}
				for i := range k {
					if size[i] != want[i] || pos[i] != wantPos[i] {
						t.Errorf("%s: %d in the cohort, %d positive; want %d and %d", dirs[i], size[i], pos[i], want[i], wantPos[i])
					}
				}
				// The sizes cannot differ much above the minimum, but the
				// outcome rates do.
				r0, r1 := float64(pos[0])/float64(size[0]), float64(pos[1])/float64(size[1])
				if max(r0, r1) < 1.5*min(r0, r1) {
					t.Errorf("skewed outcome rates %.2f and %.2f are too alike for seed %d", r0, r1, cfg.Seed)
				}
			}
		})
	}
	cfg := DefaultConfig()
	cfg.Dataset, cfg.SyntheaDir, cfg.Sites = DatasetSynthea, dir, 3
	if _, err := prepareSynthea(context.Background(), t.TempDir(), cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "fewer sites") {
		t.Errorf("3 sites of a 100-patient sample: %v", err)
	}
}

// Split values are checked per dataset.
func TestSyntheaPhysioNetValidateSplit(t *testing.T) {
	for _, tt := range []struct {
		dataset, split string
		ok             bool
	}{
		{DatasetPhysioNet, "", true}, {DatasetPhysioNet, SplitICU, true}, {DatasetPhysioNet, SplitRandom, true},
		{DatasetPhysioNet, SplitSkewed, true}, {DatasetPhysioNet, "hospital", false},
		{DatasetSynthea, "", true}, {DatasetSynthea, SplitRandom, true}, {DatasetSynthea, SplitSkewed, true},
		{DatasetSynthea, SplitICU, false},
		{DatasetSynthetic, "", true}, {DatasetSynthetic, SplitRandom, false}, {"", SplitSkewed, false},
	} {
		t.Run(tt.dataset+"/"+tt.split, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Dataset, cfg.Split = tt.dataset, tt.split
			err := cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "split") {
				t.Errorf("error %q does not name the split", err)
			}
		})
	}
}

// A federation on the Synthea sample (2 sites) runs to the end and reports
// an AUROC, and no patient name, identifier, contact detail, address,
// birth date or resource id of the sample is in any byte an agent sent or
// in any log line.
func TestSyntheaRunKeepsPHIHome(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole federation")
	}
	dir := syntheaDir(t)
	canaries, skipped := fhirtest.Canaries(t, filepath.Join(dir, "ndjson"))
	if len(canaries) < 1000 {
		t.Fatalf("only %d canaries (%d too short)", len(canaries), skipped)
	}
	cfg := DefaultConfig()
	cfg.Dataset, cfg.SyntheaDir = DatasetSynthea, dir
	cfg.Sites, cfg.Rounds, cfg.Coordinators = 2, 3, 1
	cfg.RoundTimeout = 20 * time.Second
	cfg.Dir = t.TempDir()
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sent := map[string]*lockedBuffer{}
	for i := range cfg.Sites {
		sent[siteName(i)] = new(lockedBuffer)
	}
	cfg.EgressTap = func(site string, b []byte) { sent[site].Write(b) }
	var out lockedBuffer
	cfg.Out = &out
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		l := logs.Bytes()
		t.Fatalf("sim: %v\n%s\nlast log lines:\n%s", err, out.Bytes(), l[max(0, len(l)-8000):])
	}
	t.Logf("\n%s", out.Bytes())
	if rep.Dataset != DatasetSynthea || rep.Sites != cfg.Sites || rep.RoundsCompleted != cfg.Rounds {
		t.Fatalf("report = %+v", rep)
	}
	for name, v := range map[string]float64{"federated": rep.Federated.AUROC, "centralized": rep.Centralized.AUROC} {
		if math.IsNaN(v) || v <= 0 || v > 1 {
			t.Errorf("%s AUROC = %v", name, v)
		}
	}
	for site, buf := range sent {
		b := buf.Bytes()
		if len(b) == 0 {
			t.Errorf("site %s sent nothing", site)
		}
		if found := fhirtest.Find(b, canaries); len(found) > 0 {
			t.Errorf("site %s sent %d identifying values, e.g. a %s", site, len(found), found[0])
		}
	}
	if found := fhirtest.Find(logs.Bytes(), canaries); len(found) > 0 {
		t.Errorf("the logs hold %d identifying values, e.g. a %s", len(found), found[0])
	}
	// The canaries are real: each site's input holds its patients' ones.
	for site := range sent {
		raw := gunzip(t, filepath.Join(cfg.Dir, "data", site, "Patient.ndjson.gz"))
		if n := len(fhirtest.Find(raw, canaries)); n < 50 {
			t.Errorf("only %d canaries in %s's Patient input", n, site)
		}
	}
}
