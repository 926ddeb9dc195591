package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the fake clock's start.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// stepClock lets a test run the Watcher one poll at a time: each Sleep
// hands the test a channel and waits until the test closes it.
type stepClock struct {
	mu     sync.Mutex
	now    time.Time
	sleepC chan chan struct{}
}

func newStepClock() *stepClock { return &stepClock{now: t0, sleepC: make(chan chan struct{})} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	wake := make(chan struct{})
	select {
	case c.sleepC <- wake:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-wake:
		c.mu.Lock()
		c.now = c.now.Add(d)
		c.mu.Unlock()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// memSink records what it stores, in order, and can be made to fail.
type memSink struct {
	mu   sync.Mutex
	ids  []string
	fail error
}

func (s *memSink) add(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.ids = append(s.ids, id)
	return nil
}

func (s *memSink) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *memSink) stored() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

func (s *memSink) Patient(p fhir.Patient) error         { return s.add("Patient/" + p.ID) }
func (s *memSink) Observation(o fhir.Observation) error { return s.add("Observation/" + o.ID) }
func (s *memSink) Condition(c fhir.Condition) error     { return s.add("Condition/" + c.ID) }
func (s *memSink) Encounter(e fhir.Encounter) error     { return s.add("Encounter/" + e.ID) }

// harness runs one Watcher over a directory, a poll at a time.
type harness struct {
	t    *testing.T
	dir  string
	w    *Watcher
	clk  *stepClock
	sink *memSink
	logs *bytes.Buffer
	wake chan struct{}
	errC chan error
}

func start(t *testing.T, dir string, sink *memSink) *harness {
	t.Helper()
	h := &harness{t: t, dir: dir, clk: newStepClock(), sink: sink, logs: &bytes.Buffer{}, errC: make(chan error, 1)}
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.PollInterval = time.Second
	cfg.Clock = h.clk
	cfg.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: h.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := New(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	go func() { h.errC <- w.Run(context.Background()) }()
	h.wake = h.await() // the first poll is done
	t.Cleanup(h.stop)
	return h
}

func (h *harness) await() chan struct{} {
	h.t.Helper()
	select {
	case wake := <-h.clk.sleepC:
		return wake
	case err := <-h.errC:
		h.t.Fatalf("Run returned early: %v", err)
	case <-time.After(10 * time.Second):
		h.t.Fatal("watcher did not finish a poll")
	}
	return nil
}

// poll lets the Watcher make one more poll and waits until it is done.
func (h *harness) poll() {
	h.t.Helper()
	close(h.wake)
	h.wake = h.await()
}

func (h *harness) stop() {
	if h.w == nil {
		return
	}
	if err := h.w.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
	if err := <-h.errC; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	if err := h.w.Close(); err != nil { // idempotent
		h.t.Errorf("second Close: %v", err)
	}
	h.w = nil
	for _, secret := range []string{"Jane", "Doe", "p1", "MRN"} {
		if strings.Contains(h.logs.String(), secret) {
			h.t.Errorf("log names input value %q:\n%s", secret, h.logs.String())
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

const (
	tPatient = `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["Jane"]}],"identifier":[{"value":"MRN-4711"}],"gender":"female","birthDate":"1970-05-17"}`
	tObs     = `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-01-02T03:04:05Z","valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`
)

func obs(id, code, value, unit, when string) string {
	return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"status":"final","code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":%q,"valueQuantity":{"value":%s,"system":"http://unitsofmeasure.org","code":%q}}`, id, code, when, value, unit)
}

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// drop writes a file the way integration engines should: a hidden temp
// name, then a rename.
func drop(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func gz(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestDroppedFilesIngestedOnce(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	h := start(t, dir, sink)
	for _, sub := range []string{DoneDir, QuarantineDir, filepath.Join(QuarantineDir, RecordsDir)} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v", sub, fi.Mode(), err)
		}
	}

	// Dropped in reverse name order, complete at the same poll.
	drop(t, dir, "b_Jane_Doe.ndjson.gz", gz(t, lines(tObs)))
	drop(t, dir, "a_Jane_Doe.json", []byte(tPatient))
	h.poll() // first sight: not yet known to be complete
	if got := sink.stored(); len(got) != 0 {
		t.Fatalf("read before two polls: %v", got)
	}
	h.poll()
	if got, want := sink.stored(), []string{"Patient/p1", "Observation/o1"}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v (name order)", got, want)
	}
	if got := listDir(t, filepath.Join(dir, DoneDir)); !slices.Equal(got, []string{"a_Jane_Doe.json", "b_Jane_Doe.ndjson.gz"}) {
		t.Fatalf("done/ = %v", got)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{DoneDir, QuarantineDir}) {
		t.Fatalf("drop dir = %v", got)
	}
	h.poll()
	h.poll()
	if got := sink.stored(); len(got) != 2 {
		t.Fatalf("read again: %v", got)
	}

	// A ready marker makes a file complete at its first poll.
	if err := os.WriteFile(filepath.Join(dir, "c.ndjson"), []byte(lines(strings.Replace(tObs, `"o1"`, `"o2"`, 1))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "c.ndjson"+ReadySuffix), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.poll()
	if got := sink.stored(); len(got) != 3 || got[2] != "Observation/o2" {
		t.Fatalf("marked file not read at once: %v", got)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{DoneDir, QuarantineDir}) {
		t.Fatalf("marker left behind: %v", got)
	}

	// Same name again: done/ keeps both.
	drop(t, dir, "a_Jane_Doe.json", []byte(strings.Replace(tPatient, `"p1"`, `"p2"`, 1)))
	h.poll()
	h.poll()
	if got := listDir(t, filepath.Join(dir, DoneDir)); !slices.Equal(got, []string{"a_Jane_Doe.1.json", "a_Jane_Doe.json", "b_Jane_Doe.ndjson.gz", "c.ndjson"}) {
		t.Fatalf("done/ = %v", got)
	}
	// Ignored: other extensions, hidden files, directories.
	drop(t, dir, "notes.txt", []byte("x"))
	if err := os.Mkdir(filepath.Join(dir, "sub.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	h.poll()
	h.poll()
	st := h.w.Stats()
	if st.FilesDone != 4 || st.FilesQuarantined != 0 || st.Read.Resources["Patient"] != 2 || st.Read.Resources["Observation"] != 2 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestHalfWrittenFileWaits(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	h := start(t, dir, sink)
	content := lines(tPatient, tObs, strings.Replace(tObs, `"o1"`, `"o2"`, 1))
	path := filepath.Join(dir, "Jane_Doe.ndjson")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Written in three pieces, the first ending mid-line; a poll sees each.
	cuts := []int{len(tPatient) + 40, len(content) - 30, len(content)}
	at := 0
	for _, cut := range cuts {
		if _, err := f.WriteString(content[at:cut]); err != nil {
			t.Fatal(err)
		}
		at = cut
		h.poll()
		if got := sink.stored(); len(got) != 0 {
			t.Fatalf("read while being written: %v", got)
		}
	}
	h.poll() // unchanged since the last poll: complete
	if got := sink.stored(); len(got) != 3 {
		t.Fatalf("stored %v", got)
	}
	st := h.w.Stats()
	if st.Read.TotalRejected() != 0 || st.FilesDone != 1 {
		t.Fatalf("stats = %+v", st)
	}

	// An empty file is not complete without a marker.
	drop(t, dir, "empty.ndjson", nil)
	h.poll()
	h.poll()
	h.poll()
	if got := listDir(t, dir); !slices.Contains(got, "empty.ndjson") {
		t.Fatalf("empty file taken: %v", got)
	}
}

func TestUnreadableFileQuarantined(t *testing.T) {
	good := gz(t, lines(tPatient, tObs))
	tests := []struct {
		name   string
		data   []byte
		reason string
		stored int
	}{
		{name: "Jane_Doe.ndjson.gz", data: []byte(lines(tPatient)), reason: "not-gzip"},
		{name: "Jane_Doe_truncated.ndjson.gz", data: good[:len(good)-4], reason: "corrupt-gzip", stored: 2},
		{name: "Jane_Doe_bad.ndjson.gz", data: append(append([]byte{}, good[:10]...), bytes.Repeat([]byte{0xff}, 30)...), reason: "corrupt-gzip"},
	}
	for _, tc := range tests {
		t.Run(tc.reason+"/"+tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sink := &memSink{}
			h := start(t, dir, sink)
			drop(t, dir, tc.name, tc.data)
			h.poll()
			h.poll()
			q := filepath.Join(dir, QuarantineDir)
			if got := listDir(t, q); !slices.Equal(got, []string{tc.name, tc.name + ReasonSuffix, RecordsDir}) {
				t.Fatalf("quarantine/ = %v", got)
			}
			fi, err := os.Stat(filepath.Join(q, tc.name))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("quarantined file mode %v, %v", fi.Mode(), err)
			}
			moved, err := os.ReadFile(filepath.Join(q, tc.name))
			if err != nil || !bytes.Equal(moved, tc.data) {
				t.Fatalf("quarantined file changed: %v", err)
			}
			reason, err := os.ReadFile(filepath.Join(q, tc.name+ReasonSuffix))
			if err != nil || !strings.HasPrefix(string(reason), "reason: "+tc.reason+"\n") {
				t.Fatalf("reason file %q, %v", reason, err)
			}
			if strings.Contains(string(reason), "Jane") || strings.Contains(string(reason), dir) {
				t.Errorf("reason names the file: %q", reason)
			}
			if got := listDir(t, filepath.Join(dir, DoneDir)); len(got) != 0 {
				t.Fatalf("done/ = %v", got)
			}
			if got := sink.stored(); len(got) != tc.stored {
				t.Fatalf("stored %v, want %d records", got, tc.stored)
			}
			if st := h.w.Stats(); st.FilesQuarantined != 1 || st.FilesDone != 0 {
				t.Fatalf("stats = %+v", st)
			}
			h.poll()
			if got := sink.stored(); len(got) != tc.stored {
				t.Fatalf("read again: %v", got)
			}
		})
	}
}

func TestBadRecordsQuarantined(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	h := start(t, dir, sink)
	bad := map[string]string{
		"malformed-json":   `{"resourceType":"Patient","id":"p9",`,
		"impossible-value": obs("o3", "8867-4", "400", "/min", "2020-01-01T00:00:00Z"),
		"unknown-unit":     obs("o4", "8310-5", "37", "mg", "2020-01-01T00:00:00Z"),
		"future-time":      obs("o5", "8867-4", "80", "/min", t0.Add(time.Hour).Format(time.RFC3339)),
		"missing-subject":  strings.Replace(tObs, `"subject":{"reference":"Patient/p1"},`, "", 1),
	}
	in := lines(tPatient, bad["malformed-json"], tObs, bad["impossible-value"], bad["unknown-unit"],
		obs("o6", "8310-5", "98.6", "[degF]", "2020-01-01T00:00:00Z"), bad["future-time"], bad["missing-subject"], tObs)
	drop(t, dir, "Jane_Doe.ndjson", []byte(in))
	h.poll()
	h.poll()

	if got, want := sink.stored(), []string{"Patient/p1", "Observation/o1", "Observation/o6"}; !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	if got := listDir(t, filepath.Join(dir, DoneDir)); !slices.Equal(got, []string{"Jane_Doe.ndjson"}) {
		t.Fatalf("done/ = %v", got)
	}
	recDir := filepath.Join(dir, QuarantineDir, RecordsDir)
	files := listDir(t, recDir)
	if len(files) != len(bad) {
		t.Fatalf("quarantine/records = %v", files)
	}
	found := map[string]bool{}
	for _, name := range files {
		if !strings.HasPrefix(name, t0.Format("20060102T1504")) || !strings.HasSuffix(name, ".json") {
			t.Errorf("record name %q", name)
		}
		fi, err := os.Stat(filepath.Join(recDir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("record mode %v, %v", fi.Mode(), err)
		}
		raw, err := os.ReadFile(filepath.Join(recDir, name))
		if err != nil {
			t.Fatal(err)
		}
		for reason, line := range bad {
			if strings.HasSuffix(name, "-"+reason+".json") {
				found[reason] = true
				if string(raw) != line {
					t.Errorf("%s holds %q, want %q", name, raw, line)
				}
			}
		}
	}
	if len(found) != len(bad) {
		t.Errorf("reasons found %v", found)
	}
	st := h.w.Stats()
	want := map[string]int{"malformed-json": 1, "impossible-value": 1, "unknown-unit": 1, "future-time": 1, "missing-subject": 1}
	if !mapsEqual(st.Read.Rejected, want) || st.Read.Skipped["duplicate"] != 1 || st.RecordsQuarantined != 5 || st.FilesDone != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRestartDoesNotReingest(t *testing.T) {
	dir := t.TempDir()
	sink1 := &memSink{}
	h1 := start(t, dir, sink1)
	drop(t, dir, "Jane_Doe.ndjson", []byte(lines(tPatient, tObs)))
	h1.poll()
	h1.poll()
	if len(sink1.stored()) != 2 {
		t.Fatalf("first run stored %v", sink1.stored())
	}
	h1.stop()

	sink2 := &memSink{}
	h2 := start(t, dir, sink2)
	h2.poll()
	h2.poll()
	if got := sink2.stored(); len(got) != 0 {
		t.Fatalf("restart re-ingested %v", got)
	}
	if got := listDir(t, filepath.Join(dir, DoneDir)); !slices.Equal(got, []string{"Jane_Doe.ndjson"}) {
		t.Fatalf("done/ = %v", got)
	}
	// A file left in the drop directory by a crash before its move is read
	// again: the same records, upserted again.
	drop(t, dir, "Jane_Doe.ndjson", []byte(lines(tPatient, tObs)))
	h2.poll()
	h2.poll()
	if got := sink2.stored(); len(got) != 2 {
		t.Fatalf("second run stored %v", got)
	}
	if got := listDir(t, filepath.Join(dir, DoneDir)); !slices.Equal(got, []string{"Jane_Doe.1.ndjson", "Jane_Doe.ndjson"}) {
		t.Fatalf("done/ = %v", got)
	}
}

func TestSinkFailureRetries(t *testing.T) {
	dir := t.TempDir()
	sink := &memSink{}
	sink.setFail(errors.New("store closed"))
	h := start(t, dir, sink)
	drop(t, dir, "Jane_Doe.ndjson", []byte(lines(tPatient, tObs)))
	h.poll()
	h.poll()
	if got := listDir(t, dir); !slices.Contains(got, "Jane_Doe.ndjson") {
		t.Fatalf("file moved although the store refused it: %v", got)
	}
	h.poll()
	if st := h.w.Stats(); st.FilesRetried != 2 || st.FilesDone != 0 || len(st.Read.Resources) != 0 {
		t.Fatalf("stats = %+v", st)
	}
	sink.setFail(nil)
	h.poll()
	if got := sink.stored(); len(got) != 2 {
		t.Fatalf("stored %v", got)
	}
	if got := listDir(t, filepath.Join(dir, DoneDir)); !slices.Equal(got, []string{"Jane_Doe.ndjson"}) {
		t.Fatalf("done/ = %v", got)
	}
	if st := h.w.Stats(); st.FilesDone != 1 || st.Read.Resources["Patient"] != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestLifecycle(t *testing.T) {
	sink := &memSink{}
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	tests := []struct {
		name string
		cfg  func(*Config)
		sink fhir.Sink
		err  error
	}{
		{name: "no dir", cfg: func(c *Config) { c.Dir = "" }, sink: sink, err: ErrInvalidConfig},
		{name: "negative poll interval", cfg: func(c *Config) { c.PollInterval = -time.Second }, sink: sink, err: ErrInvalidConfig},
		{name: "bad read options", cfg: func(c *Config) { c.ReadOptions.MaxFutureSkew = -1 }, sink: sink, err: ErrInvalidConfig},
		{name: "nil sink", err: ErrNilSink},
		{name: "defaults", cfg: func(c *Config) { c.PollInterval = 0; c.Clock = nil; c.Logger = nil }, sink: sink},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			w, err := New(c, tc.sink)
			if !errors.Is(err, tc.err) {
				t.Fatalf("New: %v, want %v", err, tc.err)
			}
			if err == nil && (w.cfg.PollInterval != DefaultPollInterval || w.clock == nil || w.opts.Now == nil) {
				t.Fatalf("defaults not applied: %+v", w.cfg)
			}
		})
	}

	t.Run("close before run", func(t *testing.T) {
		w, err := New(cfg, sink)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.Run(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Run after Close: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("run twice, stop by context", func(t *testing.T) {
		clk := newStepClock()
		c := cfg
		c.Clock = clk
		w, err := New(c, sink)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errC := make(chan error, 1)
		go func() { errC <- w.Run(ctx) }()
		<-clk.sleepC // the first poll is done: Run is running
		if err := w.Run(ctx); !errors.Is(err, ErrRunning) {
			t.Fatalf("second Run: %v", err)
		}
		cancel()
		if err := <-errC; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unusable dir", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "Jane_Doe_file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Dir = file
		w, err := New(c, sink)
		if err != nil {
			t.Fatal(err)
		}
		err = w.Run(context.Background())
		if err == nil || strings.Contains(err.Error(), "Jane") {
			t.Fatalf("Run over a file: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestMoveNoClobber(t *testing.T) {
	tests := []struct {
		name     string
		existing []string
		want     string
	}{
		{name: "a.ndjson.gz", want: "a.ndjson.gz"},
		{name: "a.ndjson.gz", existing: []string{"a.ndjson.gz"}, want: "a.1.ndjson.gz"},
		{name: "a.ndjson.gz", existing: []string{"a.ndjson.gz", "a.1.ndjson.gz"}, want: "a.2.ndjson.gz"},
		{name: "B.JSON", existing: []string{"B.JSON"}, want: "B.1.JSON"},
		{name: "c.ndjson", existing: []string{"c.ndjson" + ReasonSuffix}, want: "c.1.ndjson"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			src, dst := t.TempDir(), t.TempDir()
			for _, e := range tc.existing {
				if err := os.WriteFile(filepath.Join(dst, e), []byte("old"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(src, tc.name), []byte("new"), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := moveNoClobber(filepath.Join(src, tc.name), dst, tc.name)
			if err != nil || got != tc.want {
				t.Fatalf("moved to %q, %v; want %q", got, err, tc.want)
			}
			if b, err := os.ReadFile(filepath.Join(dst, got)); err != nil || string(b) != "new" {
				t.Fatalf("target holds %q, %v", b, err)
			}
		})
	}
}
