package store

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/tidwall/buntdb"
)

func testKeys(seed byte) (master, pseudo []byte) {
	return bytes.Repeat([]byte{seed}, 32), bytes.Repeat([]byte{seed + 1}, 40)
}

func openMem(t *testing.T) *Store {
	t.Helper()
	m, p := testKeys(1)
	s, err := Open(Config{Path: MemoryPath, MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var (
	t0   = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	pA   = fhir.Patient{ID: "pat-a", BirthDate: time.Date(1970, 5, 17, 0, 0, 0, 0, time.UTC), Gender: "female"}
	obsA = []fhir.Observation{
		{ID: "o2", PatientID: "pat-a", Code: "8867-4", Unit: "/min", Value: 80, Time: t0.Add(time.Hour)},
		{ID: "o1", PatientID: "pat-a", Code: "8867-4", Unit: "/min", Value: 72.5, Time: t0},
		{ID: "bp#8480-6", PatientID: "pat-a", Code: "8480-6", Unit: "mm[Hg]", Value: 120, Time: t0},
	}
	condA = fhir.Condition{ID: "c1", PatientID: "pat-a", System: fhir.SystemSNOMED, Code: "44054006", Onset: t0}
	obsB  = fhir.Observation{ID: "o9", PatientID: "pat-b", Code: "2339-0", Value: 5.5, Time: t0}
)

func ingest(t *testing.T, sink fhir.Sink) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(sink.Patient(pA))
	for _, o := range obsA {
		must(sink.Observation(o))
	}
	must(sink.Condition(condA))
	must(sink.Observation(obsB))
}

func collect(t *testing.T, s *Store) []fhir.PatientData {
	t.Helper()
	var out []fhir.PatientData
	if err := s.ForEachPatient(func(pd fhir.PatientData) error { out = append(out, pd); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func checkContents(t *testing.T, s *Store) {
	t.Helper()
	got := collect(t, s)
	if len(got) != 2 {
		t.Fatalf("got %d patients, want 2", len(got))
	}
	ps := map[string]fhir.PatientData{}
	for _, pd := range got {
		ps[pd.Patient.ID] = pd
	}
	a, ok := ps[s.Pseudonym("pat-a")]
	if !ok {
		t.Fatalf("patient a not found under its pseudonym")
	}
	if !a.Patient.BirthDate.Equal(pA.BirthDate) || a.Patient.Gender != "female" {
		t.Errorf("patient = %+v", a.Patient)
	}
	var vals []float64
	for _, o := range a.Observations {
		vals = append(vals, o.Value)
		if o.PatientID != a.Patient.ID || strings.Contains(o.ID, "o1") || strings.Contains(o.ID, "bp") {
			t.Errorf("observation carries a raw id: %+v", o)
		}
	}
	if want := []float64{120, 72.5, 80}; !slices.Equal(vals, want) { // by time, then code
		t.Errorf("observation values %v, want %v", vals, want)
	}
	if len(a.Conditions) != 1 || a.Conditions[0].Code != "44054006" || a.Conditions[0].PatientID != a.Patient.ID || !a.Conditions[0].Onset.Equal(t0) {
		t.Errorf("conditions = %+v", a.Conditions)
	}
	b := ps[s.Pseudonym("pat-b")]
	if len(b.Observations) != 1 || b.Patient.Gender != "" {
		t.Errorf("patient b = %+v", b)
	}
	p, o, c, err := s.Counts()
	if err != nil || p != 1 || o != 4 || c != 1 {
		t.Errorf("Counts = %d, %d, %d, %v; want 1, 4, 1", p, o, c, err)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		sink func(*Store) (fhir.Sink, func() error)
	}{
		{"direct", func(s *Store) (fhir.Sink, func() error) { return s, func() error { return nil } }},
		{"batch", func(s *Store) (fhir.Sink, func() error) { b := s.NewBatch(2); return b, b.Flush }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openMem(t)
			sink, flush := tc.sink(s)
			ingest(t, sink)
			ingest(t, sink) // upsert: the same records again leave one copy
			if err := flush(); err != nil {
				t.Fatal(err)
			}
			checkContents(t, s)
		})
	}
}

func TestPseudonym(t *testing.T) {
	s := openMem(t)
	p := s.Pseudonym("pat-a")
	if len(p) != 32 || strings.Trim(p, "0123456789abcdef") != "" {
		t.Fatalf("pseudonym %q is not 32 hex digits", p)
	}
	if p == s.Pseudonym("pat-b") || p != s.Pseudonym("pat-a") {
		t.Error("pseudonyms not deterministic and distinct")
	}
	m, k := testKeys(7)
	other, err := Open(Config{Path: MemoryPath, MasterKey: m, PseudonymKey: k})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.Pseudonym("pat-a") == p {
		t.Error("pseudonym does not depend on the site secret")
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "site.db")
	m, p := testKeys(3)
	s, err := Open(Config{Path: path, MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	ingest(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Patient(pA); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: err = %v, want ErrClosed", err)
	}

	s, err = Open(Config{Path: path, MasterKey: m, PseudonymKey: p})
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, s)
	if _, err := Open(Config{Path: path, MasterKey: m, PseudonymKey: p}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open of an open store: err = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	wrongMaster, wrongPseudo := testKeys(9)
	tests := []struct {
		name   string
		master []byte
		pseudo []byte
		want   error
	}{
		{"wrong master key", wrongMaster, p, ErrWrongKey},
		{"changed pseudonym key", m, wrongPseudo, ErrPseudonymKeyChanged},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(Config{Path: path, MasterKey: tc.master, PseudonymKey: tc.pseudo})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMovedValueFailsToOpen(t *testing.T) {
	s := openMem(t)
	ingest(t, s)
	// Copy patient a's first observation value onto patient b's key.
	var aKey, aVal, bKey string
	err := s.db.View(func(tx *buntdb.Tx) error {
		if err := scanPrefix(tx, prefixObs+s.Pseudonym("pat-a"), func(k, v string) bool { aKey, aVal = k, v; return false }); err != nil {
			return err
		}
		return scanPrefix(tx, prefixObs+s.Pseudonym("pat-b"), func(k, _ string) bool { bKey = k; return false })
	})
	if err != nil || aKey == "" || bKey == "" {
		t.Fatalf("keys not found: %v", err)
	}
	if err := s.db.Update(func(tx *buntdb.Tx) error { _, _, err := tx.Set(bKey, aVal, nil); return err }); err != nil {
		t.Fatal(err)
	}
	err = s.ForEachPatient(func(fhir.PatientData) error { return nil })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if strings.Contains(err.Error(), s.Pseudonym("pat-b")) || strings.Contains(err.Error(), "pat-") {
		t.Errorf("error %q names the record", err)
	}
}

func TestInvalid(t *testing.T) {
	m, p := testKeys(1)
	cfgs := []struct {
		name string
		cfg  Config
	}{
		{"no path", Config{MasterKey: m, PseudonymKey: p}},
		{"short master key", Config{Path: MemoryPath, MasterKey: m[:16], PseudonymKey: p}},
		{"short pseudonym key", Config{Path: MemoryPath, MasterKey: m, PseudonymKey: p[:31]}},
	}
	for _, tc := range cfgs {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(tc.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
	s := openMem(t)
	recs := []struct {
		name  string
		write func() error
	}{
		{"patient without id", func() error { return s.Patient(fhir.Patient{}) }},
		{"observation without patient", func() error { return s.Observation(fhir.Observation{ID: "x"}) }},
		{"observation NaN", func() error {
			return s.Observation(fhir.Observation{ID: "x", PatientID: "y", Value: math.NaN()})
		}},
		{"condition without id", func() error { return s.Condition(fhir.Condition{PatientID: "y"}) }},
		{"batch observation Inf", func() error {
			return s.NewBatch(1).Observation(fhir.Observation{ID: "x", PatientID: "y", Value: math.Inf(1)})
		}},
	}
	for _, tc := range recs {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.write(); !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("err = %v, want ErrInvalidRecord", err)
			}
		})
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	k1, err := LoadOrCreateKey(path, 32)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || len(k1) != 32 {
		t.Fatalf("created key: mode %v, len %d, err %v", fi.Mode(), len(k1), err)
	}
	k2, err := LoadOrCreateKey(path, 32)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reload: equal=%v err=%v", bytes.Equal(k1, k2), err)
	}

	loose := filepath.Join(dir, "loose.key")
	if err := os.WriteFile(loose, k1, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o640); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		n    int
		want error
	}{
		{"group readable", loose, 32, ErrKeyFilePermissions},
		{"wrong size", path, 16, ErrKeyFileSize},
		{"zero size", filepath.Join(dir, "zero.key"), 0, ErrKeyFileSize},
		{"directory", dir, 32, ErrKeyFileNotRegular},
		{"missing parent", filepath.Join(dir, "nope", "k"), 32, os.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LoadOrCreateKey(tc.path, tc.n); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	s := openMem(t)
	const writers, each = 4, 50
	errc := make(chan error, writers+1)
	for w := 0; w < writers; w++ {
		go func() {
			b := s.NewBatch(7)
			for i := 0; i < each; i++ {
				o := fhir.Observation{ID: fmt.Sprintf("o%d-%d", w, i), PatientID: fmt.Sprintf("p%d", i%5), Code: "8867-4", Value: float64(i), Time: t0}
				var err error
				if i%2 == 0 {
					err = s.Observation(o)
				} else {
					err = b.Observation(o)
				}
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- b.Flush()
		}()
	}
	go func() {
		errc <- s.ForEachPatient(func(fhir.PatientData) error { return nil })
	}()
	for i := 0; i < writers+1; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if _, o, _, err := s.Counts(); err != nil || o != writers*each {
		t.Fatalf("%d observations, err %v; want %d", o, err, writers*each)
	}
}
