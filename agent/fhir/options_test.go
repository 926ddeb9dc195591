package fhir

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tNow is the fixed clock of these tests.
var tNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// vitalObs returns an Observation line of one LOINC-coded quantity.
func vitalObs(id, code, value, ucum, when string) string {
	return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"status":"final","code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":%q,"valueQuantity":{"value":%s,"unit":%q,"system":"http://unitsofmeasure.org","code":%q}}`,
		id, code, when, value, ucum, ucum)
}

// bpObs returns a blood pressure panel with the given component values.
func bpObs(id, sys, dia, ucum string) string {
	comp := func(code, v string) string {
		return fmt.Sprintf(`{"code":{"coding":[{"system":"http://loinc.org","code":%q}]},"valueQuantity":{"value":%s,"system":"http://unitsofmeasure.org","code":%q}}`, code, v, ucum)
	}
	return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2025-01-01T00:00:00Z","component":[%s,%s]}`,
		id, comp("8480-6", sys), comp("8462-4", dia))
}

// quarantined records the Quarantine callback's calls.
type quarantined struct {
	reasons []string
	raws    [][]byte
}

func (q *quarantined) add(reason string, raw []byte) {
	q.reasons = append(q.reasons, reason)
	q.raws = append(q.raws, bytes.Clone(raw))
}

func testOptions(q *quarantined) Options {
	o := DefaultOptions()
	o.Now = func() time.Time { return tNow }
	o.Quarantine = q.add
	return o
}

const past = "2025-06-01T10:00:00Z"

func TestReadRejections(t *testing.T) {
	type row struct {
		name     string
		line     string
		opts     func(*Options)
		rejected string // reason, "" when the resource is stored
		value    float64
		unit     string
	}
	tests := []row{
		{name: "heart rate stored", line: vitalObs("o", "8867-4", "72", "/min", past), value: 72, unit: "/min"},
		{name: "heart rate beats stored", line: vitalObs("o", "8867-4", "72", "{beats}/min", past), value: 72, unit: "/min"},
		{name: "temperature degF converted", line: vitalObs("o", "8310-5", "98.6", "[degF]", past), value: 37, unit: "Cel"},
		{name: "weight lb converted", line: vitalObs("o", "29463-7", "150", "[lb_av]", past), value: 68.0388555, unit: "kg"},
		{name: "glucose mmol/L converted", line: vitalObs("o", "2339-0", "5.5", "mmol/L", past), value: 99.088, unit: "mg/dL"},
		{name: "heart rate 0 is plausible", line: vitalObs("o", "8867-4", "0", "/min", past), value: 0, unit: "/min"},
		{name: "heart rate 350 is plausible", line: vitalObs("o", "8867-4", "350", "/min", past), value: 350, unit: "/min"},
		{name: "BMI 5 is plausible", line: vitalObs("o", "39156-5", "5", "kg/m2", past), value: 5, unit: "kg/m2"},

		{name: "unknown unit for heart rate", line: vitalObs("o", "8867-4", "72", "[degF]", past), rejected: "unknown-unit"},
		{name: "unknown unit for weight", line: vitalObs("o", "29463-7", "70", "mg", past), rejected: "unknown-unit"},
		{name: "no unit for glucose", line: strings.Replace(vitalObs("o", "2339-0", "90", "", past), `"system":"http://unitsofmeasure.org",`, "", 1), rejected: "unknown-unit"},
		{name: "unknown unit even without plausibility", line: vitalObs("o", "8867-4", "72", "kg", past), opts: func(o *Options) { o.Plausibility = false }, rejected: "unknown-unit"},
		{name: "heart rate 351", line: vitalObs("o", "8867-4", "351", "/min", past), rejected: "impossible-value"},
		{name: "heart rate negative", line: vitalObs("o", "8867-4", "-1", "/min", past), rejected: "impossible-value"},
		{name: "respiratory rate 121", line: vitalObs("o", "9279-1", "121", "/min", past), rejected: "impossible-value"},
		{name: "temperature 120 degF", line: vitalObs("o", "8310-5", "120", "[degF]", past), rejected: "impossible-value"},
		{name: "temperature 19.9 Cel", line: vitalObs("o", "8310-5", "19.9", "Cel", past), rejected: "impossible-value"},
		{name: "temperature in K below range", line: vitalObs("o", "8310-5", "290", "K", past), rejected: "impossible-value"},
		{name: "SpO2 101", line: vitalObs("o", "59408-5", "101", "%", past), rejected: "impossible-value"},
		{name: "weight 1600 lb", line: vitalObs("o", "29463-7", "1600", "[lb_av]", past), rejected: "impossible-value"},
		{name: "height 10 ft", line: vitalObs("o", "8302-2", "10", "[ft_i]", past), rejected: "impossible-value"},
		{name: "BMI 201", line: vitalObs("o", "39156-5", "201", "kg/m2", past), rejected: "impossible-value"},
		{name: "BMI 4.9", line: vitalObs("o", "39156-5", "4.9", "kg/m2", past), rejected: "impossible-value"},
		{name: "systolic 351 rejects the panel", line: bpObs("bp", "351", "80", "mm[Hg]"), rejected: "impossible-value"},
		{name: "diastolic 251", line: bpObs("bp", "120", "251", "mm[Hg]"), rejected: "impossible-value"},
		{name: "blood pressure kPa overflow", line: bpObs("bp", "1e308", "10", "kPa"), opts: func(o *Options) { o.Plausibility = false }, rejected: "impossible-value"},
		{name: "plausibility off stores heart rate 400", line: vitalObs("o", "8867-4", "400", "/min", past), opts: func(o *Options) { o.Plausibility = false }, value: 400, unit: "/min"},

		{name: "effective time 4m ahead", line: vitalObs("o", "8867-4", "72", "/min", "2026-03-01T12:04:00Z"), value: 72, unit: "/min"},
		{name: "effective time 6m ahead", line: vitalObs("o", "8867-4", "72", "/min", "2026-03-01T12:06:00Z"), rejected: "future-time"},
		{name: "effective time in another zone", line: vitalObs("o", "8867-4", "72", "/min", "2026-03-01T13:04:00+01:00"), value: 72, unit: "/min"},
		{name: "larger skew", line: vitalObs("o", "8867-4", "72", "/min", "2026-03-01T12:06:00Z"), opts: func(o *Options) { o.MaxFutureSkew = time.Hour }, value: 72, unit: "/min"},
		{name: "no clock, no check", line: vitalObs("o", "8867-4", "72", "/min", "2099-01-01T00:00:00Z"), opts: func(o *Options) { o.Now = nil }, value: 72, unit: "/min"},
		{name: "tomorrow's date may be today somewhere", line: vitalObs("o", "8867-4", "72", "/min", "2026-03-02"), value: 72, unit: "/min"},
		{name: "date two days ahead", line: vitalObs("o", "8867-4", "72", "/min", "2026-03-03"), rejected: "future-time"},
		{name: "issued in the future", line: strings.Replace(strings.Replace(tObs, `"effectiveDateTime"`, `"issued"`, 1), "2020-01-02", "2027-01-02", 1), rejected: "future-time"},
		{name: "period start in the future", line: strings.Replace(tObs, `"effectiveDateTime":"2020-01-02T03:04:05-05:00"`, `"effectivePeriod":{"start":"2026-04-01T00:00:00Z"}`, 1), rejected: "future-time"},
		{name: "condition onset in the future", line: strings.Replace(tCond, "2015-06-01", "2026-06-01", 1), rejected: "future-time"},
		{name: "condition recorded in the future", line: strings.Replace(strings.Replace(tCond, "onsetDateTime", "recordedDate", 1), "2015-06-01", "2027", 1), rejected: "future-time"},
		{name: "encounter start in the future", line: `{"resourceType":"Encounter","id":"e1","status":"planned","subject":{"reference":"Patient/p1"},"period":{"start":"2026-03-01T13:00:00Z"}}`, rejected: "future-time"},
		{name: "encounter started, ends later", line: `{"resourceType":"Encounter","id":"e1","status":"in-progress","subject":{"reference":"Patient/p1"},"period":{"start":"2026-03-01T11:00:00Z","end":"2026-03-02T11:00:00Z"}}`},
		{name: "condition in the past", line: tCond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var q quarantined
			var c Collector
			opts := testOptions(&q)
			if tc.opts != nil {
				tc.opts(&opts)
			}
			st := NewStats()
			if err := ReadNDJSONWith(context.Background(), strings.NewReader(tc.line+"\n"), &c, st, opts); err != nil {
				t.Fatal(err)
			}
			if tc.rejected != "" {
				checkCounts(t, "Rejected", st.Rejected, map[string]int{tc.rejected: 1})
				checkCounts(t, "Resources", st.Resources, nil)
				if !slices.Equal(q.reasons, []string{tc.rejected}) || len(q.raws) != 1 || string(q.raws[0]) != tc.line {
					t.Fatalf("quarantined %v %q, want %s with the line", q.reasons, q.raws, tc.rejected)
				}
				if ps := c.Patients(); len(ps) != 0 {
					t.Fatalf("rejected resource stored: %+v", ps)
				}
				return
			}
			checkCounts(t, "Rejected", st.Rejected, nil)
			if len(q.reasons) != 0 {
				t.Fatalf("quarantined %v", q.reasons)
			}
			ps := c.Patients()
			if len(ps) != 1 {
				t.Fatalf("stored %d patients", len(ps))
			}
			if tc.unit == "" {
				return
			}
			obs := ps[0].Observations
			if len(obs) != 1 || obs[0].Value != tc.value || obs[0].Unit != tc.unit {
				t.Fatalf("stored %+v, want %v %s", obs, tc.value, tc.unit)
			}
		})
	}
}

func TestReadDuplicates(t *testing.T) {
	meta := func(line, ver string) string {
		return strings.Replace(line, `"resourceType":"Observation",`, `"resourceType":"Observation","meta":{"versionId":"`+ver+`"},`, 1)
	}
	obsA := vitalObs("a", "8867-4", "70", "/min", past)
	obsB := vitalObs("b", "8867-4", "71", "/min", past)
	obsC := vitalObs("c", "8867-4", "72", "/min", past)
	tests := []struct {
		name      string
		in        string
		window    int
		delivered []string
		dups      int
	}{
		{name: "same line twice", in: lines(obsA, obsA), delivered: []string{"a"}, dups: 1},
		{name: "same version, other bytes", in: lines(meta(obsA, "1"), strings.Replace(meta(obsA, "1"), `"70"`, `"75"`, 1)), delivered: []string{"a"}, dups: 1},
		{name: "new version", in: lines(meta(obsA, "1"), meta(obsA, "2")), delivered: []string{"a", "a"}},
		{name: "no meta, changed content", in: lines(obsA, strings.Replace(obsA, `"value":70`, `"value":75`, 1)), delivered: []string{"a", "a"}},
		{name: "same id, other type", in: lines(strings.Replace(tPatient, `"p1"`, `"a"`, 1), obsA), delivered: []string{"a", "a"}},
		{name: "blood pressure panel", in: lines(tBP, tBP), delivered: []string{"bp1#8462-4", "bp1#8480-6"}, dups: 1},
		{name: "disabled", in: lines(obsA, obsA), window: -1, delivered: []string{"a", "a"}},
		{name: "bounded window forgets the oldest", in: lines(obsA, obsB, obsC, obsA, obsC), window: 2, delivered: []string{"a", "b", "c", "a"}, dups: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var q quarantined
			opts := testOptions(&q)
			opts.DedupWindow = tc.window
			var sink recSink
			st := NewStats()
			if err := ReadNDJSONWith(context.Background(), strings.NewReader(tc.in), &sink, st, opts); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range sink.order {
				_, id, _ := strings.Cut(o, "/")
				got = append(got, id)
			}
			if !slices.Equal(got, tc.delivered) {
				t.Errorf("delivered %v, want %v", got, tc.delivered)
			}
			var want map[string]int
			if tc.dups > 0 {
				want = map[string]int{"duplicate": tc.dups}
			}
			checkCounts(t, "Skipped", st.Skipped, want)
			if len(q.reasons) != 0 {
				t.Errorf("duplicates quarantined: %v", q.reasons)
			}
		})
	}
	t.Run("across the files of a dir", func(t *testing.T) {
		dir := t.TempDir()
		for _, name := range []string{"a.ndjson", "b.ndjson"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(lines(obsA)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var c Collector
		st, err := ReadDirWith(context.Background(), dir, &c, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		checkCounts(t, "Skipped", st.Skipped, map[string]int{"duplicate": 1})
		checkCounts(t, "Resources", st.Resources, map[string]int{"Observation": 1})
	})
	t.Run("bundle entries", func(t *testing.T) {
		in := `{"resourceType":"Bundle","entry":[{"resource":` + tPatient + `},{"resource":` + tPatient + `}]}`
		st := NewStats()
		if err := ReadBundleWith(context.Background(), strings.NewReader(in), &Collector{}, st, DefaultOptions()); err != nil {
			t.Fatal(err)
		}
		checkCounts(t, "Skipped", st.Skipped, map[string]int{"duplicate": 1})
	})
}

func TestQuarantineCallback(t *testing.T) {
	t.Run("ndjson", func(t *testing.T) {
		var q quarantined
		long := `{"resourceType":"Patient","id":"big","x":"` + strings.Repeat("a", 600) + `"}`
		in := lines(tPatient, `not json`, long, strings.Replace(tObs, `"value":72`, `"value":"72"`, 1), `{"resourceType":"Procedure","id":"x"}`, strings.Replace(tObs, `"final"`, `"entered-in-error"`, 1))
		rd, err := newReader(&Collector{}, nil, testOptions(&q))
		if err != nil {
			t.Fatal(err)
		}
		if err := rd.readNDJSON(context.Background(), strings.NewReader(in), 512); err != nil {
			t.Fatal(err)
		}
		if want := []string{"malformed-json", "oversized", "bad-value"}; !slices.Equal(q.reasons, want) {
			t.Fatalf("reasons %v, want %v", q.reasons, want)
		}
		if string(q.raws[0]) != "not json" || q.raws[1] != nil || !strings.Contains(string(q.raws[2]), `"value":"72"`) {
			t.Fatalf("raws %q", q.raws)
		}
		checkCounts(t, "Rejected", rd.st.Rejected, map[string]int{"malformed-json": 1, "oversized": 1, "bad-value": 1})
	})
	t.Run("bundle", func(t *testing.T) {
		tests := []struct {
			name    string
			in      string
			reasons []string
			raw     string
		}{
			{name: "not json", in: ` {"resourceType":"Bundle", `, reasons: []string{"malformed-json"}, raw: `{"resourceType":"Bundle",`},
			{name: "bad entry", in: `{"resourceType":"Bundle","entry":[7,{"resource":` + tPatient + `}]}`, reasons: []string{"bad-structure"}, raw: `7`},
			{name: "bad resource", in: `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}`, reasons: []string{"missing-id"}, raw: `{"resourceType":"Patient"}`},
			{name: "entry not an array", in: `{"resourceType":"Bundle","entry":{}}`, reasons: []string{"bad-structure"}, raw: `{"resourceType":"Bundle","entry":{}}`},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				var q quarantined
				if err := ReadBundleWith(context.Background(), strings.NewReader(tc.in), &Collector{}, nil, testOptions(&q)); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(q.reasons, tc.reasons) || string(q.raws[0]) != tc.raw {
					t.Fatalf("quarantined %v %q, want %v %q", q.reasons, q.raws, tc.reasons, tc.raw)
				}
			})
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	bad := DefaultOptions()
	bad.MaxFutureSkew = -time.Second
	if err := bad.Validate(); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Validate = %v", err)
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Options{}).Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, err := range map[string]error{
		"ndjson": ReadNDJSONWith(ctx, strings.NewReader(""), &Collector{}, nil, bad),
		"bundle": ReadBundleWith(ctx, strings.NewReader(""), &Collector{}, nil, bad),
		"file":   ReadFileWith(ctx, "x.ndjson", &Collector{}, nil, bad),
	} {
		if !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := ReadDirWith(ctx, t.TempDir(), &Collector{}, bad); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("dir: err = %v", err)
	}
	if err := ReadFileWith(ctx, "x.ndjson", nil, nil, DefaultOptions()); !errors.Is(err, ErrNilSink) {
		t.Errorf("nil sink: err = %v", err)
	}
}

func gzipBytes(t testing.TB, b []byte) []byte {
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

func TestReadFileWith(t *testing.T) {
	dir := t.TempDir()
	good := gzipBytes(t, []byte(lines(tPatient, tObs)))
	errBoom := errors.New("boom")
	tests := []struct {
		name      string
		file      string
		data      []byte
		sink      Sink
		want      []error
		delivered int
	}{
		{name: "gzip", file: "Jane_Doe.ndjson.gz", data: good, delivered: 2},
		{name: "upper-case extension", file: "Jane_Doe.NDJSON", data: []byte(lines(tPatient)), delivered: 1},
		{name: "bundle", file: "Jane_Doe.json", data: []byte(tCond), delivered: 1},
		{name: "not gzip", file: "Jane_Doe.ndjson.gz", data: []byte(lines(tPatient)), want: []error{ErrRead}},
		{name: "truncated gzip", file: "Jane_Doe.ndjson.gz", data: good[:len(good)-4], want: []error{ErrRead}, delivered: 2},
		{name: "corrupt gzip body", file: "Jane_Doe.ndjson.gz", data: append(append([]byte{}, good[:10]...), bytes.Repeat([]byte{0xff}, 40)...), want: []error{ErrRead}},
		{name: "missing", file: "Jane_Doe_missing.ndjson", want: []error{ErrRead, fs.ErrNotExist}},
		{name: "unknown kind", file: "Jane_Doe.txt", data: []byte("x"), want: []error{ErrFileKind}},
		{name: "sink error", file: "Jane_Doe.ndjson", data: []byte(lines(tPatient)), sink: &recSink{fail: errBoom}, want: []error{ErrSink, errBoom}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name, tc.file)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.data != nil {
				if err := os.WriteFile(path, tc.data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			sink := tc.sink
			if sink == nil {
				sink = &recSink{}
			}
			err := ReadFileWith(context.Background(), path, sink, nil, DefaultOptions())
			if len(tc.want) == 0 && err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Fatalf("err = %v, want %v", err, w)
				}
			}
			if err != nil && (strings.Contains(err.Error(), "Jane") || strings.Contains(err.Error(), dir)) {
				t.Errorf("error %q names the file", err)
			}
			if rs, ok := sink.(*recSink); ok && len(rs.order) != tc.delivered {
				t.Errorf("delivered %v, want %d records", rs.order, tc.delivered)
			}
		})
	}
}
