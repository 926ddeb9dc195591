package store

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// syntheaDir is the shared real-data folder, relative to this package.
const syntheaDir = "../../../shared/data/synthea-r4"

// minCanary is the shortest canary searched for: shorter strings could
// turn up by chance in megabytes of ciphertext.
const minCanary = 6

// phiCanaries collects, from the raw NDJSON with plain encoding/json, the
// identifying values a store must never hold in the clear: resource ids,
// names, identifier values (MRN, SSN, licence, passport), telecom, address
// lines and birth dates.
func phiCanaries(t *testing.T, dir string) (canaries map[string]string, skipped int) {
	t.Helper()
	canaries = map[string]string{}
	add := func(kind, v string) {
		if len(v) < minCanary {
			skipped++
			return
		}
		canaries[v] = kind
	}
	for _, name := range []string{"Patient", "Observation", "Condition"} {
		f, err := os.Open(filepath.Join(dir, name+".ndjson.gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var r struct {
				ID         string `json:"id"`
				BirthDate  string `json:"birthDate"`
				Identifier []struct {
					Value string `json:"value"`
				} `json:"identifier"`
				Name []struct {
					Family string   `json:"family"`
					Given  []string `json:"given"`
				} `json:"name"`
				Telecom []struct {
					Value string `json:"value"`
				} `json:"telecom"`
				Address []struct {
					Line []string `json:"line"`
				} `json:"address"`
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			add(name+" id", r.ID)
			if name != "Patient" {
				continue
			}
			add("birth date", r.BirthDate)
			for _, id := range r.Identifier {
				add("identifier", id.Value)
			}
			for _, n := range r.Name {
				add("family name", n.Family)
				for _, g := range n.Given {
					add("given name", g)
				}
			}
			for _, tc := range r.Telecom {
				add("telecom", tc.Value)
			}
			for _, a := range r.Address {
				for _, l := range a.Line {
					add("address", l)
				}
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return canaries, skipped
}

// findCanaries returns the kind of every canary found in raw. It slides one
// window per distinct canary length over raw, which is much faster than a
// bytes.Contains per canary.
func findCanaries(raw []byte, canaries map[string]string) []string {
	byLen := map[int]map[string]string{}
	for v, kind := range canaries {
		if byLen[len(v)] == nil {
			byLen[len(v)] = map[string]string{}
		}
		byLen[len(v)][v] = kind
	}
	var found []string
	for n, set := range byLen {
		for i := 0; i+n <= len(raw); i++ {
			if kind, ok := set[string(raw[i:i+n])]; ok {
				found = append(found, kind)
			}
		}
	}
	return found
}

func TestFindCanaries(t *testing.T) {
	raw := []byte("xx\x00Lemke53\x01999-18-8203yy")
	got := findCanaries(raw, map[string]string{"Lemke53": "name", "999-18-8203": "ssn", "absent": "x"})
	slices.Sort(got)
	if !slices.Equal(got, []string{"name", "ssn"}) {
		t.Fatalf("found %v", got)
	}
}

func TestSyntheaNoPHIAtRest(t *testing.T) {
	if _, err := os.Stat(syntheaDir); err != nil {
		t.Skipf("real data not found at %s (see shared/data/README.md): %v", syntheaDir, err)
	}
	ndjson := filepath.Join(syntheaDir, "ndjson")
	path := filepath.Join(t.TempDir(), "site.db")
	m, p := testKeys(5)
	s, err := Open(Config{Path: path, MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch(0)
	st, err := fhir.ReadDir(context.Background(), ndjson, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	// Ingesting again through the direct (per-record) Sink changes nothing.
	f, err := os.Open(filepath.Join(ndjson, "Patient.ndjson.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := fhir.ReadNDJSON(context.Background(), zr, s, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var c fhir.Collector
	if _, err := fhir.ReadDir(context.Background(), ndjson, &c); err != nil {
		t.Fatal(err)
	}
	wantObs := 0
	for _, pd := range c.Patients() {
		wantObs += len(pd.Observations)
	}
	pc, oc, cc, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if pc != 100 || pc != st.Resources["Patient"] || oc != wantObs || cc != st.Resources["Condition"] {
		t.Errorf("Counts = %d, %d, %d; want 100, %d, %d", pc, oc, cc, wantObs, st.Resources["Condition"])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	canaries, skipped := phiCanaries(t, ndjson)
	t.Logf("store file %d bytes; %d canaries searched (%d shorter than %d bytes not searched)", len(raw), len(canaries), skipped, minCanary)
	if len(canaries) < 100*4+16000 {
		t.Fatalf("only %d canaries collected", len(canaries))
	}
	for _, kind := range findCanaries(raw, canaries) {
		t.Errorf("a %s from the input appears in the store file", kind) // the value itself is PHI: not printed
	}

	// The data is all there after reopening, grouped under pseudonyms.
	s, err = Open(Config{Path: path, MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, nObs := 0, 0
	err = s.ForEachPatient(func(pd fhir.PatientData) error {
		n++
		nObs += len(pd.Observations)
		if _, ok := canaries[pd.Patient.ID]; ok {
			t.Error("ForEachPatient returned a raw patient id")
		}
		return nil
	})
	if err != nil || n != 100 || nObs != wantObs {
		t.Errorf("ForEachPatient: %d patients, %d observations, err %v; want 100, %d", n, nObs, err, wantObs)
	}
}
