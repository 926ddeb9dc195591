package fhir

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"time"
)

var fuzzSeeds = []string{
	tPatient, tObs, tBP, tCond,
	`{"resourceType":"Observation","id":"o","code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},"subject":{"reference":"Patient/p"},"effectiveDateTime":"2030-01-01","valueQuantity":{"value":99,"unit":"°F"}}`,
	`{"resourceType":"Encounter","id":"e","subject":{"reference":"Patient/p"},"period":{"start":"2020-01-01","end":"2019"},"class":{"code":"IMP"}}`,
	`{"resourceType":"Patient","id":"p","birthDate":"2000"}`,
	`{"resourceType":"Observation","id":"o","code":{"coding":[{"system":"http://loinc.org","code":"1"}]},"subject":{"reference":"urn:uuid:x"},"issued":"2020-01-01T00:00:00Z","valueQuantity":{"value":1e308}}`,
	`{"resourceType":"Condition","id":"c","code":{"coding":[{}]},"subject":{"reference":"Patient/"}}`,
	`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"p"}}]}`,
	`{"resourceType":"Observation","value":"x"}`,
	`[]`, `null`, `{`, ``,
}

// checkRecords asserts the invariants every successful parse must hold.
func checkRecords(t *testing.T, v any) {
	t.Helper()
	switch v := v.(type) {
	case Patient:
		if !validID(v.ID) {
			t.Fatalf("patient with invalid id %q", v.ID)
		}
		switch v.Gender {
		case "", "male", "female", "other", "unknown":
		default:
			t.Fatalf("gender %q", v.Gender)
		}
	case []Observation:
		if len(v) == 0 {
			t.Fatal("empty observation slice without error")
		}
		for _, o := range v {
			base, _, _ := strings.Cut(o.ID, "#")
			if !validID(base) || !validID(o.PatientID) || o.Code == "" || o.Time.IsZero() {
				t.Fatalf("incomplete observation %+v", o)
			}
			if math.IsNaN(o.Value) || math.IsInf(o.Value, 0) {
				t.Fatalf("non-finite value %v", o.Value)
			}
		}
	case Condition:
		if !validID(v.ID) || !validID(v.PatientID) || v.Code == "" {
			t.Fatalf("incomplete condition %+v", v)
		}
	case Encounter:
		if !validID(v.ID) || !validID(v.PatientID) || v.Start.IsZero() || (!v.End.IsZero() && v.End.Before(v.Start)) {
			t.Fatalf("incomplete encounter %+v", v)
		}
	default:
		t.Fatalf("unexpected result type %T", v)
	}
}

func FuzzParseResource(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseResource(b)
		if err != nil {
			if r, _ := Reason(err); r == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			if v != nil {
				t.Fatalf("value %v returned with error", v)
			}
			return
		}
		checkRecords(t, v)
	})
}

// countSink checks every record it receives.
type countSink struct {
	t *testing.T
	n int
}

func (s *countSink) Patient(p Patient) error { s.n++; checkRecords(s.t, p); return nil }
func (s *countSink) Observation(o Observation) error {
	s.n++
	checkRecords(s.t, []Observation{o})
	return nil
}
func (s *countSink) Condition(c Condition) error { s.n++; checkRecords(s.t, c); return nil }
func (s *countSink) Encounter(e Encounter) error { s.n++; checkRecords(s.t, e); return nil }

// reasonKey reports whether reason is a known Stats key and whether it is
// a skip.
func reasonKey(reason string) (known, skip bool) {
	for _, r := range reasons {
		if r.reason == reason {
			return true, r.skip
		}
	}
	return false, false
}

func FuzzReadNDJSON(f *testing.F) {
	f.Add([]byte(strings.Join(fuzzSeeds, "\n")))
	f.Add([]byte(tPatient + "\r\n" + tObs))
	f.Add([]byte("\n\n\xef\xbb\xbf{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sink := &countSink{t: t}
		st := NewStats()
		quarantined := 0
		opts := DefaultOptions()
		opts.Now = func() time.Time { return tNow }
		opts.Quarantine = func(reason string, raw []byte) {
			if r, skip := reasonKey(reason); !r || skip {
				t.Fatalf("quarantined with reason %q", reason)
			}
			quarantined++
		}
		rd, err := newReader(sink, st, opts)
		if err != nil {
			t.Fatal(err)
		}
		// A small line limit exercises the oversized path too.
		if err := rd.readNDJSON(context.Background(), bytes.NewReader(b), 512); err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		if quarantined != st.TotalRejected() {
			t.Fatalf("%d quarantined, %d rejected", quarantined, st.TotalRejected())
		}
		total := 0
		for _, m := range []map[string]int{st.Resources, st.Skipped, st.Rejected} {
			for k, v := range m {
				if k == "" || v <= 0 {
					t.Fatalf("bad stats entry %q=%d", k, v)
				}
				total += v
			}
		}
		if lines := bytes.Count(b, []byte("\n")) + 1; total > lines {
			t.Fatalf("%d outcomes for %d lines", total, lines)
		}
		if st.Resources["Observation"] > sink.n {
			t.Fatalf("%d observations counted, %d records delivered", st.Resources["Observation"], sink.n)
		}
	})
}
