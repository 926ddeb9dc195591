package fhir

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// recSink records what a reader delivered, in order.
type recSink struct {
	Collector
	order []string
	fail  error
}

func (s *recSink) Patient(p Patient) error {
	if s.fail != nil {
		return s.fail
	}
	s.order = append(s.order, "Patient/"+p.ID)
	return s.Collector.Patient(p)
}

func (s *recSink) Observation(o Observation) error {
	if s.fail != nil {
		return s.fail
	}
	s.order = append(s.order, "Observation/"+o.ID)
	return s.Collector.Observation(o)
}

func (s *recSink) Condition(c Condition) error {
	if s.fail != nil {
		return s.fail
	}
	s.order = append(s.order, "Condition/"+c.ID)
	return s.Collector.Condition(c)
}

func (s *recSink) Encounter(e Encounter) error {
	if s.fail != nil {
		return s.fail
	}
	s.order = append(s.order, "Encounter/"+e.ID)
	return s.Collector.Encounter(e)
}

func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func TestReadNDJSON(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		order    []string
		resource map[string]int
		skipped  map[string]int
		rejected map[string]int
	}{
		{
			name:     "valid lines around bad ones are kept",
			in:       lines(tPatient, `{"resourceType":"Patient",`, tObs, strings.Replace(tObs, `"value":72`, `"value":"high"`, 1), tBP, strings.Replace(tCond, `"subject":{"reference":"Patient/p1"},`, "", 1), tCond, strings.Replace(tCond, "2015-06-01", "June 2015", 1), `{"resourceType":"Procedure","id":"e1"}`),
			order:    []string{"Patient/p1", "Observation/o1", "Observation/bp1#8462-4", "Observation/bp1#8480-6", "Condition/c1"},
			resource: map[string]int{"Patient": 1, "Observation": 2, "Condition": 1},
			skipped:  map[string]int{"Procedure": 1},
			rejected: map[string]int{"malformed-json": 1, "bad-value": 1, "missing-subject": 1, "bad-time": 1},
		},
		{
			name:     "blank lines, CRLF, BOM and no final newline",
			in:       "\xef\xbb\xbf" + tPatient + "\r\n\r\n   \n" + tObs,
			order:    []string{"Patient/p1", "Observation/o1"},
			resource: map[string]int{"Patient": 1, "Observation": 1},
		},
		{
			name:     "skips by reason",
			in:       lines(strings.Replace(tObs, `"final"`, `"entered-in-error"`, 1), strings.Replace(tObs, `"Patient/p1"`, `"Device/d1"`, 1), `{"resourceType":"Observation","id":"o9","code":{"coding":[{"system":"http://loinc.org","code":"1-1"}]},"subject":{"reference":"Patient/p1"},"valueString":"positive"}`),
			skipped:  map[string]int{"entered-in-error": 1, "non-patient-subject": 1, "no-numeric-value": 1},
			resource: map[string]int{},
		},
		{
			name:     "garbage types never become keys",
			in:       lines(`{"resourceType":"Jane Doe 1970-05-17"}`, `{"resourceType":"lower"}`),
			skipped:  map[string]int{"unsupported-type": 2},
			resource: map[string]int{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sink recSink
			st := NewStats()
			if err := ReadNDJSON(context.Background(), strings.NewReader(tc.in), &sink, st); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sink.order, tc.order) {
				t.Errorf("delivered %v, want %v", sink.order, tc.order)
			}
			checkCounts(t, "Resources", st.Resources, tc.resource)
			checkCounts(t, "Skipped", st.Skipped, tc.skipped)
			checkCounts(t, "Rejected", st.Rejected, tc.rejected)
		})
	}
}

func checkCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	if want == nil {
		want = map[string]int{}
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestReadNDJSONOversized(t *testing.T) {
	tests := []struct {
		name string
		max  int
		long int
	}{
		{name: "small limit spanning reader buffers", max: 100 << 10, long: 300 << 10},
		{name: "just over the limit", max: 1000, long: 1001},
		{name: "real limit", max: MaxLineSize, long: MaxLineSize + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A long but otherwise valid Patient line: padded with spaces.
			long := `{"resourceType":"Patient","id":"big"` + strings.Repeat(" ", tc.long-len(`{"resourceType":"Patient","id":"big"}`)) + `}`
			if len(long) != tc.long {
				t.Fatalf("bad fixture length %d", len(long))
			}
			fits := `{"resourceType":"Patient","id":"fits"` + strings.Repeat(" ", tc.max-len(`{"resourceType":"Patient","id":"fits"}`)) + `}`
			in := lines(tPatient, long, fits, tObs)
			var sink recSink
			st := NewStats()
			if err := testReadNDJSON(context.Background(), strings.NewReader(in), &sink, st, tc.max); err != nil {
				t.Fatal(err)
			}
			checkCounts(t, "Rejected", st.Rejected, map[string]int{"oversized": 1})
			want := []string{"Patient/p1", "Patient/fits", "Observation/o1"}
			if !slices.Equal(sink.order, want) {
				t.Errorf("delivered %v, want %v", sink.order, want)
			}
		})
	}
}

func TestReadNDJSONErrors(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		r    io.Reader
		sink *recSink
		ctx  func() context.Context
		want error
	}{
		{name: "sink error stops", r: strings.NewReader(lines(tPatient, tObs)), sink: &recSink{fail: errBoom}, want: errBoom},
		{name: "io error", r: io.MultiReader(strings.NewReader(tPatient+"\n"), iotest.ErrReader(errBoom)), sink: &recSink{}, want: errBoom},
		{name: "cancelled", r: strings.NewReader(lines(tPatient)), sink: &recSink{}, want: context.Canceled,
			ctx: func() context.Context { ctx, cancel := context.WithCancel(context.Background()); cancel(); return ctx }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			err := ReadNDJSON(ctx, tc.r, tc.sink, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if err := ReadNDJSON(context.Background(), strings.NewReader(""), nil, nil); !errors.Is(err, ErrNilSink) {
		t.Errorf("nil sink: err = %v", err)
	}
}

func TestReadBundle(t *testing.T) {
	noID := func(s, id string) string { return strings.Replace(s, `"id":"`+id+`",`, "", 1) }
	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[` +
		`{"fullUrl":"urn:uuid:p1","resource":` + noID(tPatient, "p1") + `,"request":{"method":"POST","url":"Patient"}},` +
		`{"fullUrl":"urn:uuid:o1","resource":` + tObs + `},` +
		`{"fullUrl":"https://x/Observation/o5","resource":` + noID(tObs, "o1") + `},` +
		`{"request":{"method":"DELETE","url":"Patient/p9"}},` +
		`{"resource":{"resourceType":"Claim","id":"cl1"}},` +
		`{"resource":{"resourceType":"Bundle","id":"inner","entry":[{"resource":` + tCond + `}]}},` +
		`{"resource":"not an object"},` +
		`{"fullUrl":"urn:uuid:c1","resource":` + tCond + `}]}`
	tests := []struct {
		name     string
		in       string
		order    []string
		resource map[string]int
		skipped  map[string]int
		rejected map[string]int
	}{
		{
			name:     "transaction bundle",
			in:       bundle,
			order:    []string{"Patient/p1", "Observation/o1", "Condition/c1"},
			resource: map[string]int{"Patient": 1, "Observation": 1, "Condition": 1},
			skipped:  map[string]int{"entry-without-resource": 1, "Claim": 1, "Bundle": 1},
			rejected: map[string]int{"missing-id": 1, "malformed-json": 1},
		},
		{
			name:     "searchset",
			in:       `{"resourceType":"Bundle","type":"searchset","total":1,"entry":[{"resource":` + tBP + `,"search":{"mode":"match"}}]}`,
			order:    []string{"Observation/bp1#8462-4", "Observation/bp1#8480-6"},
			resource: map[string]int{"Observation": 1},
		},
		{
			name:     "single resource",
			in:       "\n" + tCond + "\n",
			order:    []string{"Condition/c1"},
			resource: map[string]int{"Condition": 1},
		},
		{name: "not json", in: `{"resourceType":"Bundle","entry":[`, rejected: map[string]int{"malformed-json": 1}},
		{name: "empty document", in: ``, rejected: map[string]int{"malformed-json": 1}},
		{name: "entry not an array", in: `{"resourceType":"Bundle","entry":{}}`, rejected: map[string]int{"bad-structure": 1}},
		{name: "empty bundle", in: `{"resourceType":"Bundle","type":"collection"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sink recSink
			st := NewStats()
			if err := ReadBundle(context.Background(), strings.NewReader(tc.in), &sink, st); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sink.order, tc.order) {
				t.Errorf("delivered %v, want %v", sink.order, tc.order)
			}
			checkCounts(t, "Resources", st.Resources, tc.resource)
			checkCounts(t, "Skipped", st.Skipped, tc.skipped)
			checkCounts(t, "Rejected", st.Rejected, tc.rejected)
		})
	}
	t.Run("oversized", func(t *testing.T) {
		var sink recSink
		st := NewStats()
		if err := testReadBundle(context.Background(), strings.NewReader(bundle), &sink, st, 100); err != nil {
			t.Fatal(err)
		}
		checkCounts(t, "Rejected", st.Rejected, map[string]int{"oversized": 1})
		if len(sink.order) != 0 {
			t.Errorf("delivered %v", sink.order)
		}
	})
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write([]byte(lines(tObs, `garbage`))); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	write("b_Observation.ndjson.gz", gz.Bytes())
	write("a_Patient.ndjson", []byte(lines(tPatient)))
	write("c_Jane_Doe_bundle.json", []byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":`+tCond+`}]}`))
	write("d_notes.txt", []byte("ignored"))
	if err := os.Mkdir(filepath.Join(dir, "e_sub.json"), 0o700); err != nil {
		t.Fatal(err)
	}

	var sink recSink
	st, err := ReadDir(context.Background(), dir, &sink)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Patient/p1", "Observation/o1", "Condition/c1"}
	if !slices.Equal(sink.order, want) {
		t.Errorf("delivered %v, want %v", sink.order, want)
	}
	checkCounts(t, "Resources", st.Resources, map[string]int{"Patient": 1, "Observation": 1, "Condition": 1})
	checkCounts(t, "Rejected", st.Rejected, map[string]int{"malformed-json": 1})

	t.Run("corrupt gzip names no file", func(t *testing.T) {
		write("f_Jane_Doe_1970.ndjson.gz", []byte("not gzip at all"))
		_, err := ReadDir(context.Background(), dir, &recSink{})
		if err == nil {
			t.Fatal("want error")
		}
		if strings.Contains(err.Error(), "Jane") || strings.Contains(err.Error(), dir) {
			t.Errorf("error %q names the file", err)
		}
		if !strings.Contains(err.Error(), "file 4 of 4") {
			t.Errorf("error %q does not say which file", err)
		}
	})
	t.Run("missing dir", func(t *testing.T) {
		if _, err := ReadDir(context.Background(), filepath.Join(dir, "nope"), &recSink{}); err == nil {
			t.Fatal("want error")
		}
	})
}

func TestStatsAdd(t *testing.T) {
	a := NewStats()
	a.Resources["Patient"] = 2
	a.Rejected["bad-time"] = 1
	b := &Stats{Skipped: map[string]int{"Encounter": 3}, Rejected: map[string]int{"bad-time": 2}}
	var z Stats
	z.Add(a)
	z.Add(b)
	z.Add(nil)
	checkCounts(t, "Resources", z.Resources, map[string]int{"Patient": 2})
	checkCounts(t, "Skipped", z.Skipped, map[string]int{"Encounter": 3})
	checkCounts(t, "Rejected", z.Rejected, map[string]int{"bad-time": 3})
	if z.TotalRejected() != 3 {
		t.Errorf("TotalRejected = %d", z.TotalRejected())
	}
}

func TestCollectorUpsertAndOrder(t *testing.T) {
	var c Collector
	in := lines(tObs, tBP, tPatient, tObs, tCond, strings.Replace(strings.Replace(tObs, `"o1"`, `"o0"`, 1), "2020-01-02", "2019-01-01", 1),
		strings.Replace(strings.Replace(tPatient, `"p1"`, `"p0"`, 1), "female", "male", 1))
	if err := ReadNDJSON(context.Background(), strings.NewReader(in), &c, nil); err != nil {
		t.Fatal(err)
	}
	ps := c.Patients()
	if len(ps) != 2 || ps[0].Patient.ID != "p0" || ps[1].Patient.ID != "p1" {
		t.Fatalf("patients = %+v", ps)
	}
	var ids []string
	for _, o := range ps[1].Observations {
		ids = append(ids, o.ID)
	}
	want := []string{"o0", "bp1#8462-4", "bp1#8480-6", "o1"}
	if !slices.Equal(ids, want) {
		t.Errorf("observation order %v, want %v", ids, want)
	}
	if len(ps[1].Conditions) != 1 || ps[1].Patient.Gender != "female" {
		t.Errorf("patient data = %+v", ps[1])
	}
	for _, bad := range []error{c.Patient(Patient{}), c.Observation(Observation{ID: "x"}), c.Condition(Condition{PatientID: "x"})} {
		if !errors.Is(bad, ErrInvalidRecord) {
			t.Errorf("err = %v, want ErrInvalidRecord", bad)
		}
	}
}

// testReadNDJSON is ReadNDJSON with a custom line limit.
func testReadNDJSON(ctx context.Context, r io.Reader, sink Sink, st *Stats, maxLine int) error {
	rd, err := newReader(sink, st, DefaultOptions())
	if err != nil {
		return err
	}
	return rd.readNDJSON(ctx, r, maxLine)
}

// testReadBundle is ReadBundle with a custom size limit.
func testReadBundle(ctx context.Context, r io.Reader, sink Sink, st *Stats, max int64) error {
	rd, err := newReader(sink, st, DefaultOptions())
	if err != nil {
		return err
	}
	return rd.readBundle(ctx, r, max)
}
