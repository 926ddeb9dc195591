package sim

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/featurespec"
	"github.com/cohort-fl/cohort/protocol/pb"
)

// syntheaSpec is the Synthea job's feature spec: prediabetes in adults
// from age, sex and vital signs.
//
// The Synthea sample is a small demonstration set: 100 synthetic patients,
// 26 of them with prediabetes. A run shows that real-shaped EHR exports
// (Bulk Data NDJSON with names, identifiers and addresses) go through the
// whole pipeline, from ingestion to a federated model, and that none of
// the identifying values leave a site. It cannot show how well the model
// does, nor compare aggregation rules: 66 training patients in the cohort,
// which the job's minimum of 20 training records per site limits to two
// sites, and a test population of 16 (5 positive) give AUROCs that move
// by 0.1 or more from one seed to the next; and the label is a prevalent
// condition rather than a future one (see the spec file).
//
//go:embed specs/synthea-prediabetes.yaml
var syntheaSpec []byte

// syntheaTestFraction of the patients in the spec's cohort (adults) with
// the outcome, the same fraction of those without, and of those outside
// the cohort, are held out as the test population (a seeded stratified
// draw): 20 patients of 100, 16 in the cohort, 5 of them with prediabetes.
// That leaves 66 patients in the cohort (21 positive) for the sites: with
// the job's minimum of 20 training records per site (see syntheaMin), two
// sites, each with positives to train on; the test population has
// positives to score, though few (the AUROC moves a lot between seeds).
const syntheaTestFraction = 0.2

// syntheaMin is what every Synthea site must get, among the patients in
// the cohort: enough that, after the local validation split (the
// fraction validation), at least the job's minimum number of training
// records (coordinator.TrainParams.MinRecords) remain, with a margin of 3
// for the split's hashing; and a few patients with the outcome and
// without. At the defaults (20 records, 20% validation): 28, so 2 sites.
func syntheaMin(validation float64) splitMin {
	minRecords := coordinator.DefaultJobSpec().Train.MinRecords
	site := 3
	if validation < 1 {
		site += int(math.Ceil(float64(minRecords) / (1 - validation)))
	}
	return splitMin{site: site, pos: 2, neg: 5}
}

// syntheaTypes are the resource types a Synthea site's files keep: what
// the spec's features and label read. Encounters, procedures, medications,
// organizations and practitioners are left out.
var syntheaTypes = []string{"Patient", "Condition", "Observation"}

// prepareSynthea splits the Synthea R4 sample in cfg.SyntheaDir (its
// ndjson/ folder, or the folder itself) by patient: a held-out test
// population (syntheaTestFraction, stratified by the outcome and the
// cohort) and
// cfg.Sites sites "site-1".. dealt by cfg.Split (random, the default, or
// skewed; see splitSites). Each site's directory under dir/data gets the
// original resources of its patients, line for line (PHI included, as a
// hospital's export would hold them), as Patient, Condition and
// Observation .ndjson.gz files for its agent to ingest.
func prepareSynthea(ctx context.Context, dir string, cfg Config, out io.Writer) (*prepared, error) {
	src, err := syntheaSource(cfg.SyntheaDir)
	if err != nil {
		return nil, err
	}
	spec, err := featurespec.Parse(syntheaSpec)
	if err != nil {
		return nil, fmt.Errorf("sim: synthea spec: %w", err)
	}
	split := cfg.Split
	if split == "" {
		split = SplitRandom
	}
	units, err := syntheaUnits(ctx, src, spec)
	if err != nil {
		return nil, err
	}
	test, train, err := syntheaHoldOut(cfg.Seed, units)
	if err != nil {
		return nil, err
	}
	// The patients in the cohort are dealt by the split; those outside it
	// (children), whom no site trains on, evenly.
	var cohort, others []splitUnit
	for _, u := range train {
		if u.eligible {
			cohort = append(cohort, u.splitUnit)
		} else {
			others = append(others, u.splitUnit)
		}
	}
	site, err := splitSites(split, cfg.Sites, cfg.Seed, cohort, syntheaMin(cfg.ValidationFraction))
	if err != nil {
		return nil, fmt.Errorf("sim: synthea, patients in the cohort (a site needs %d for the job's minimum training records): %w", syntheaMin(cfg.ValidationFraction).site, err)
	}
	rest, err := splitSites(SplitRandom, cfg.Sites, cfg.Seed, others, splitMin{})
	if err != nil {
		return nil, fmt.Errorf("sim: synthea: %w", err)
	}
	maps.Copy(site, rest)
	p := &prepared{name: DatasetSynthea, jobID: "synthea-prediabetes", spec: spec, testDir: filepath.Join(dir, "data", "test")}
	// dest maps a patient id to its output directory's index: sites first,
	// then the test population.
	dirs := make([]string, cfg.Sites+1)
	for i := range cfg.Sites {
		dirs[i] = filepath.Join(dir, "data", siteName(i))
	}
	dirs[cfg.Sites] = p.testDir
	dest := make(map[string]int, len(units))
	for id, k := range site {
		dest[id] = k
	}
	for _, u := range test {
		dest[u.id] = cfg.Sites
	}
	patients, err := writeSyntheaSplit(ctx, src, dirs, dest)
	if err != nil {
		return nil, err
	}
	for i := range cfg.Sites {
		p.sites = append(p.sites, siteData{name: siteName(i), patients: patients[i]})
	}
	count := func(us []syntheaUnit) (eligible, positive int) {
		for _, u := range us {
			if u.eligible {
				eligible++
				if u.positive {
					positive++
				}
			}
		}
		return eligible, positive
	}
	n, np := count(units)
	tn, tp := count(test)
	fmt.Fprintf(out, "preparing the Synthea R4 sample: %d patients, %d in the cohort, %d of them with the outcome; %d sites (%s split); %d patients held out for testing (%d in the cohort, %d with the outcome)\n",
		len(units), n, np, cfg.Sites, split, len(test), tn, tp)
	return p, nil
}

// syntheaSource returns the folder of Synthea NDJSON files under dir.
func syntheaSource(dir string) (string, error) {
	for _, d := range []string{filepath.Join(dir, "ndjson"), dir} {
		if _, err := os.Stat(filepath.Join(d, "Patient.ndjson.gz")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("sim: synthea dataset: no Patient.ndjson.gz in %s or its ndjson folder (set --synthea-dir to the Synthea R4 sample)", dir)
}

// syntheaResource is the part of a resource the split reads.
type syntheaResource struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Subject      *struct {
		Reference string `json:"reference"`
	} `json:"subject"`
}

// patient returns the id of the Patient the resource belongs to, or "".
func (r *syntheaResource) patient() string {
	if r.ResourceType == "Patient" {
		return r.ID
	}
	if r.Subject == nil {
		return ""
	}
	ref := strings.TrimSpace(r.Subject.Reference)
	if id, ok := strings.CutPrefix(ref, "urn:uuid:"); ok {
		return id
	}
	ref, _, _ = strings.Cut(ref, "/_history/")
	if i := strings.LastIndex(ref, "Patient/"); i >= 0 {
		return ref[i+len("Patient/"):]
	}
	return ""
}

// eachSyntheaLine calls fn with every non-empty line of src's <typ>.ndjson.gz
// and the resource decoded from it.
func eachSyntheaLine(ctx context.Context, src, typ string, fn func(line []byte, r *syntheaResource) error) error {
	path := filepath.Join(src, typ+".ndjson.gz")
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sim: synthea dataset: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("sim: synthea %s: %w", typ, err)
	}
	br := bufio.NewReaderSize(zr, 1<<16)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			var r syntheaResource
			if jerr := json.Unmarshal(line, &r); jerr != nil {
				// The message names the file and line, never the content.
				return fmt.Errorf("sim: synthea %s line %d: not a JSON resource", typ, n)
			}
			if ferr := fn(bytes.TrimRight(line, "\r\n"), &r); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sim: synthea %s: %w", typ, err)
		}
	}
}

// syntheaUnit is a patient to deal: positive when it has the label's
// condition, eligible when it is in the spec's cohort.
type syntheaUnit struct {
	splitUnit
	eligible bool
}

// syntheaUnits reads the sample's syntheaTypes as an agent would (the FHIR
// reader with its default checks, the cohort by features.Eligible) and
// returns every Patient, sorted by id. The label must be a condition (at
// any time: the spec sets no horizon).
func syntheaUnits(ctx context.Context, src string, spec *pb.FeatureSpec) ([]syntheaUnit, error) {
	label := spec.GetLabel()
	if label.GetKind() != pb.LabelKind_LABEL_KIND_CONDITION || label.GetConditionCode() == "" || label.GetHorizonSeconds() != 0 {
		return nil, errors.New("sim: synthea spec: the label must be a coded condition without a horizon")
	}
	var c fhir.Collector
	for _, typ := range syntheaTypes {
		if err := fhir.ReadFileWith(ctx, filepath.Join(src, typ+".ndjson.gz"), &c, nil, fhir.DefaultOptions()); err != nil {
			return nil, fmt.Errorf("sim: synthea %s: %w", typ, err)
		}
	}
	var units []syntheaUnit
	for _, pd := range c.Patients() {
		if pd.Patient.ID == "" || pd.Patient.BirthDate.IsZero() && pd.Patient.Gender == "" {
			continue // known only from references
		}
		u := syntheaUnit{splitUnit: splitUnit{id: pd.Patient.ID}}
		_, u.eligible = features.Eligible(spec, &pd)
		u.positive = slices.ContainsFunc(pd.Conditions, func(c fhir.Condition) bool {
			return c.Code == label.GetConditionCode() && (label.GetConditionSystem() == "" || c.System == label.GetConditionSystem())
		})
		units = append(units, u)
	}
	slices.SortFunc(units, func(a, b syntheaUnit) int { return cmp.Compare(a.id, b.id) })
	return units, nil
}

// syntheaHoldOut draws the test population: within each class (in the
// cohort with the outcome, in the cohort without, outside the cohort) the
// round(syntheaTestFraction * n) units first by unitPoint(seed,
// "synthea-test", id); for the two cohort classes at least one and never
// all.
func syntheaHoldOut(seed uint64, units []syntheaUnit) (test, train []syntheaUnit, err error) {
	for _, class := range []struct {
		eligible, positive bool
		what               string
	}{{true, true, "in the cohort with the outcome"}, {true, false, "in the cohort without the outcome"}, {false, false, "outside the cohort"}} {
		var us []syntheaUnit
		for _, u := range units {
			if u.eligible == class.eligible && (u.positive == class.positive || !u.eligible) {
				us = append(us, u)
			}
		}
		n := int(math.Round(syntheaTestFraction * float64(len(us))))
		if class.eligible {
			if len(us) < 2 {
				return nil, nil, fmt.Errorf("sim: synthea: %d patients %s; need at least 2 to hold one out", len(us), class.what)
			}
			n = min(max(n, 1), len(us)-1)
		}
		slices.SortFunc(us, func(a, b syntheaUnit) int {
			return cmp.Or(cmp.Compare(unitPoint(seed, "synthea-test", a.id), unitPoint(seed, "synthea-test", b.id)), cmp.Compare(a.id, b.id))
		})
		test = append(test, us[:n]...)
		train = append(train, us[n:]...)
	}
	return test, train, nil
}

// writeSyntheaSplit copies every resource of syntheaTypes whose patient
// dest names to <dirs[dest]>/<type>.ndjson.gz (directories 0700, files
// 0600: they hold PHI) and returns the number of Patients written to each
// directory. Resources of patients dest does not name are dropped.
func writeSyntheaSplit(ctx context.Context, src string, dirs []string, dest map[string]int) (patients []int, err error) {
	patients = make([]int, len(dirs))
	var created []string
	defer func() {
		if err != nil {
			for _, f := range created {
				_ = os.Remove(f)
			}
		}
	}()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("sim: synthea: %w", err)
		}
	}
	for _, typ := range syntheaTypes {
		files := make([]*os.File, len(dirs))
		bufs := make([]*bufio.Writer, len(dirs))
		zws := make([]*gzip.Writer, len(dirs))
		closeAll := func() {
			for _, f := range files {
				if f != nil {
					_ = f.Close()
				}
			}
		}
		for i, d := range dirs {
			path := filepath.Join(d, typ+".ndjson.gz")
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("sim: synthea: %w", err)
			}
			created = append(created, path)
			files[i] = f
			bufs[i] = bufio.NewWriterSize(f, 1<<16)
			zws[i] = gzip.NewWriter(bufs[i])
		}
		err := eachSyntheaLine(ctx, src, typ, func(line []byte, r *syntheaResource) error {
			k, ok := dest[r.patient()]
			if !ok {
				return nil
			}
			if typ == "Patient" {
				patients[k]++
			}
			if _, err := zws[k].Write(append(line, '\n')); err != nil {
				return fmt.Errorf("sim: synthea %s: %w", typ, err)
			}
			return nil
		})
		for i := range dirs {
			if err != nil {
				break
			}
			if err = zws[i].Close(); err == nil {
				err = bufs[i].Flush()
			}
			if err == nil {
				err = files[i].Close()
				files[i] = nil
			}
			if err != nil {
				err = fmt.Errorf("sim: synthea %s: %w", typ, err)
			}
		}
		closeAll()
		if err != nil {
			return nil, err
		}
	}
	return patients, nil
}
