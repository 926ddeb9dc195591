package physionet

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// dataDir returns the PhysioNet 2012 directory next to the repository
// (../shared/data/physionet2012 from the repository root). It skips the
// test when the data is absent, and fails it when env CI is set.
func dataDir(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := wd
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			t.Fatal("repository root (go.mod) not found")
		}
		root = parent
	}
	dir := filepath.Join(root, "..", "shared", "data", "physionet2012")
	for _, name := range []string{SetAArchive, SetAOutcomes} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("CI is set but the PhysioNet 2012 data is missing: %v", err)
			}
			t.Skipf("PhysioNet 2012 data not found (%v); put set-a.tar.gz and Outcomes-a.txt in ../shared/data/physionet2012 to run this test", err)
		}
	}
	return dir
}

// loincCheckDigitOK reports whether code is digits, a dash and the correct
// LOINC mod-10 check digit.
func loincCheckDigitOK(code string) bool {
	num, check, ok := strings.Cut(code, "-")
	if !ok || len(num) == 0 || len(num) > 7 || len(check) != 1 {
		return false
	}
	for _, c := range num + check {
		if c < '0' || c > '9' {
			return false
		}
	}
	// Digits in odd positions from the right are doubled (as one number),
	// then all digits are summed (Luhn).
	sum := 0
	for i := 0; i < len(num); i++ {
		d := int(num[len(num)-1-i] - '0')
		if i%2 == 0 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	want := (10 - sum%10) % 10
	return int(check[0]-'0') == want
}

// archiveFile is one entry of a test archive.
type archiveFile struct {
	name string
	body string
	dir  bool
}

// writeArchive writes a tar.gz of files to a temp dir and returns its path.
func writeArchive(t *testing.T, files []archiveFile) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg}
		if f.dir {
			h = &tar.Header{Name: f.name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if !f.dir {
			if _, err := tw.Write([]byte(f.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "set.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gzipBytes gzips b.
func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeFile writes body to a temp file and returns its path.
func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// stayFile renders a stay file with the usual descriptors and extra rows.
func stayFile(id, icuType int, extra ...string) string {
	lines := []string{
		"Time,Parameter,Value",
		"00:00,RecordID," + strconv.Itoa(id),
		"00:00,Age,54",
		"00:00,Gender,0",
		"00:00,Height,-1",
		"00:00,ICUType," + strconv.Itoa(icuType),
		"00:00,Weight,-1",
	}
	return strings.Join(append(lines, extra...), "\n") + "\n"
}

// recSink records every record in order.
type recSink struct {
	mu      sync.Mutex
	records []any
	failOn  string // "patient", "encounter", "observation": fail there
	err     error
}

func (s *recSink) add(kind string, r any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failOn == kind {
		return s.err
	}
	s.records = append(s.records, r)
	return nil
}

func (s *recSink) Patient(p fhir.Patient) error         { return s.add("patient", p) }
func (s *recSink) Encounter(e fhir.Encounter) error     { return s.add("encounter", e) }
func (s *recSink) Observation(o fhir.Observation) error { return s.add("observation", o) }
func (s *recSink) Condition(c fhir.Condition) error     { return s.add("condition", c) }

// countSink counts records.
type countSink struct {
	patients, encounters, observations int
	byCode                             map[string]int
}

func (s *countSink) Patient(fhir.Patient) error     { s.patients++; return nil }
func (s *countSink) Encounter(fhir.Encounter) error { s.encounters++; return nil }
func (s *countSink) Observation(o fhir.Observation) error {
	s.observations++
	if s.byCode == nil {
		s.byCode = map[string]int{}
	}
	s.byCode[o.Code]++
	return nil
}
func (s *countSink) Condition(fhir.Condition) error { return nil }

// fakeClock is a Clock whose Sleep records the wait and advances Now by it
// at once. hook, if set, runs inside Sleep with the number of the call
// (from 1).
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
	hook  func(n int)
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	n, hook := len(c.waits), c.hook
	c.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return ctx.Err()
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}
