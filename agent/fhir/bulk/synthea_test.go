package bulk_test

import (
	"bufio"
	"compress/gzip"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir/bulk"
	"github.com/cohort-fl/cohort/agent/fhir/bulktest"
)

// syntheaDir is the shared real-data folder: ../shared/data relative to
// the repository root, which is four levels up from this package.
const syntheaDir = "../../../../shared/data/synthea-r4/ndjson"

func needSynthea(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short (the race run): this package starts no goroutines, and the real-data runs are slow under the race detector; they run in the full suite")
	}
	if _, err := os.Stat(syntheaDir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but the real data is missing at %s: %v", syntheaDir, err)
		}
		t.Skipf("real data not found at %s (see shared/data/README.md): %v", syntheaDir, err)
	}
	return syntheaDir
}

// census is an independent count of the files, with plain encoding/json.
type census struct {
	byType  map[string]int            // resources by resourceType
	byOwner map[string]map[string]int // type -> patient id -> resources in that patient's compartment
	ids     []string                  // patient ids, sorted
}

func takeCensus(t *testing.T, dir string) *census {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.ndjson.gz"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ndjson.gz files in %s: %v", dir, err)
	}
	c := &census{byType: map[string]int{}, byOwner: map[string]map[string]int{}}
	type ref struct{ typ, owner string }
	var refs []ref
	patients := map[string]bool{}
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
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("census: %v", err)
			}
			typ, _ := m["resourceType"].(string)
			c.byType[typ]++
			if typ == "Patient" {
				id, _ := m["id"].(string)
				patients[id] = true
				refs = append(refs, ref{typ, id})
				continue
			}
			for _, field := range []string{"subject", "patient", "beneficiary"} {
				r, _ := m[field].(map[string]any)
				s, _ := r["reference"].(string)
				if s == "" {
					continue
				}
				s = strings.TrimPrefix(s, "urn:uuid:")
				if i := strings.LastIndex(s, "Patient/"); i >= 0 {
					s = s[i+len("Patient/"):]
				}
				refs = append(refs, ref{typ, s})
				break
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		fh.Close()
	}
	for _, r := range refs {
		if !patients[r.owner] {
			continue
		}
		if c.byOwner[r.typ] == nil {
			c.byOwner[r.typ] = map[string]int{}
		}
		c.byOwner[r.typ][r.owner]++
	}
	for id := range patients {
		c.ids = append(c.ids, id)
	}
	sort.Strings(c.ids)
	return c
}

// compartment returns the resources by type in the compartments of ids.
func (c *census) compartment(ids []string) map[string]int {
	out := map[string]int{}
	for typ, owners := range c.byOwner {
		for _, id := range ids {
			if n := owners[id]; n > 0 {
				out[typ] += n
			}
		}
	}
	return out
}

func TestSyntheaExport(t *testing.T) {
	t.Parallel()
	dir := needSynthea(t)
	cen := takeCensus(t, dir)
	// The figures published in shared/data/README.md.
	for typ, n := range map[string]int{"Patient": 100, "Observation": 16315, "Condition": 639, "Encounter": 3697} {
		if cen.byType[typ] != n {
			t.Fatalf("independent count of %s = %d, README says %d", typ, cen.byType[typ], n)
		}
	}
	wantStats, wantRecords := oracle(t, dir)

	// The whole set once (ES384, gzip, several files per type); RS384 and
	// one file per type are covered by TestSyntheaLevelsAndTypes.
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		srv  func(*bulktest.Config)
	}{
		{"ES384 gzip 5000 per file", ecKey(), func(c *bulktest.Config) { c.Gzip = true; c.ResourcesPerFile = 5000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, dir, tc.key, tc.srv)
			res, col, err := export(t, f.client(t, nil))
			if err != nil {
				t.Fatalf("export: %v", err)
			}
			checkCounts(t, "manifest Counts", res.Counts, cen.byType)
			checkCounts(t, "Received", res.Received, cen.byType)
			checkStats(t, res.Stats, wantStats)
			if res.Stats.Resources["Patient"] != 100 || res.Stats.Resources["Condition"] != 639 {
				t.Errorf("ingested %d patients, %d conditions; want 100 and 639",
					res.Stats.Resources["Patient"], res.Stats.Resources["Condition"])
			}
			ps := col.Patients()
			if len(ps) != 100 {
				t.Errorf("collected %d patients, want 100", len(ps))
			}
			if len(ps) != len(wantRecords) {
				t.Fatalf("collected %d patient groups, reading the files gives %d", len(ps), len(wantRecords))
			}
			for i := range ps {
				if ps[i].Patient.ID != wantRecords[i].Patient.ID || len(ps[i].Observations) != len(wantRecords[i].Observations) ||
					len(ps[i].Conditions) != len(wantRecords[i].Conditions) {
					t.Fatalf("patient %d: records differ from reading the files directly", i)
				}
			}
			cn := f.srv.Counters()
			if cn.TokensIssued != 1 || cn.Downloads != res.Files || cn.Polls != 3 {
				t.Errorf("counters %+v, files %d", cn, res.Files)
			}
			t.Logf("%d files; ingested %v; skipped %v; rejected %v", res.Files,
				res.Stats.Resources, res.Stats.Skipped, res.Stats.Rejected)
		})
	}
}

func TestSyntheaLevelsAndTypes(t *testing.T) {
	t.Parallel()
	dir := needSynthea(t)
	cen := takeCensus(t, dir)
	group := cen.ids[:10]
	f := newFixture(t, dir, rsaKey(), func(c *bulktest.Config) {
		c.GroupID = "ward-7"
		c.GroupMembers = group
		c.PollsBeforeReady = 0
	})
	for _, tc := range []struct {
		name string
		cli  func(*bulk.Config)
		want map[string]int
	}{
		{"_type Patient,Condition,Encounter", func(c *bulk.Config) { c.Types = []string{"Patient", "Condition", "Encounter"} },
			map[string]int{"Patient": 100, "Condition": 639, "Encounter": 3697}},
		{"patient level", func(c *bulk.Config) { c.Level = bulk.LevelPatient }, cen.compartment(cen.ids)},
		{"group level", func(c *bulk.Config) { c.Level = bulk.LevelGroup; c.GroupID = "ward-7" }, cen.compartment(group)},
		{"group level _type Observation", func(c *bulk.Config) {
			c.Level = bulk.LevelGroup
			c.GroupID = "ward-7"
			c.Types = []string{"Observation"}
		}, map[string]int{"Observation": cen.compartment(group)["Observation"]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _, err := export(t, f.client(t, tc.cli))
			if err != nil {
				t.Fatalf("export: %v", err)
			}
			checkCounts(t, "Counts", res.Counts, tc.want)
			checkCounts(t, "Received", res.Received, tc.want)
		})
	}
	if pl := cen.compartment(cen.ids); pl["Organization"] != 0 || pl["Observation"] != 16315 {
		t.Errorf("census compartment %v", pl)
	}
}

func TestSyntheaIncremental(t *testing.T) {
	t.Parallel()
	dir := needSynthea(t)
	f := newFixture(t, dir, ecKey(), nil)
	first, _, err := export(t, f.client(t, func(c *bulk.Config) { c.Types = []string{"Patient", "Observation"} }))
	if err != nil {
		t.Fatalf("first export: %v", err)
	}
	if first.Counts["Observation"] != 16315 {
		t.Fatalf("first export: %v", first.Counts)
	}
	f.clock.Advance(24 * time.Hour)
	if n, err := f.srv.Touch("Observation", 500); err != nil || n != 500 {
		t.Fatalf("touch: %d %v", n, err)
	}
	second, _, err := export(t, f.client(t, func(c *bulk.Config) {
		c.Types = []string{"Patient", "Observation"}
		c.Since = first.TransactionTime
	}))
	if err != nil {
		t.Fatalf("incremental export: %v", err)
	}
	checkCounts(t, "incremental Counts", second.Counts, map[string]int{"Observation": 500})
	checkCounts(t, "incremental Received", second.Received, map[string]int{"Observation": 500})
}
