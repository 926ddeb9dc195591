package fhir

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	tPatient = `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["Jane"]}],"identifier":[{"value":"MRN-4711"}],"gender":"female","birthDate":"1970-05-17"}`
	tObs     = `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-01-02T03:04:05-05:00","valueQuantity":{"value":72,"unit":"/min","code":"/min"}}`
	tBP      = `{"resourceType":"Observation","id":"bp1","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"urn:uuid:p1"},"effectivePeriod":{"start":"2020-01-02T03:04:05Z"},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80,"unit":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":135.5,"code":"mm[Hg]"}}]}`
	tCond    = `{"resourceType":"Condition","id":"c1","code":{"coding":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","code":"E11.9"},{"system":"http://snomed.info/sct","code":"44054006"}]},"subject":{"reference":"Patient/p1"},"onsetDateTime":"2015-06-01"}`
)

func TestParseResource(t *testing.T) {
	ts := time.Date(2020, 1, 2, 8, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want any
		err  error
	}{
		{name: "patient", in: tPatient, want: Patient{ID: "p1", Gender: "female", BirthDate: time.Date(1970, 5, 17, 0, 0, 0, 0, time.UTC)}},
		{name: "patient partial birth date and odd gender", in: `{"resourceType":"Patient","id":"p2","birthDate":"1970-05","gender":"F"}`,
			want: Patient{ID: "p2", Gender: "unknown", BirthDate: time.Date(1970, 5, 1, 0, 0, 0, 0, time.UTC)}},
		{name: "patient without birth date", in: `{"resourceType":"Patient","id":"p3"}`, want: Patient{ID: "p3"}},
		{name: "observation", in: tObs, want: []Observation{{ID: "o1", PatientID: "p1", Code: "8867-4", Unit: "/min", Value: 72, Time: ts}}},
		{name: "blood pressure components", in: tBP, want: []Observation{
			{ID: "bp1#8462-4", PatientID: "p1", Code: "8462-4", Unit: "mm[Hg]", Value: 80, Time: ts.Add(-5 * time.Hour)},
			{ID: "bp1#8480-6", PatientID: "p1", Code: "8480-6", Unit: "mm[Hg]", Value: 135.5, Time: ts.Add(-5 * time.Hour)},
		}},
		{name: "observation time from issued", in: `{"resourceType":"Observation","id":"o2","code":{"coding":[{"system":"http://loinc.org/","code":"2947-0"}]},"subject":{"reference":"https://ehr.example/fhir/Patient/p1/_history/3"},"issued":"2021-03-04T05:06:07.123Z","valueQuantity":{"value":-1.5e2}}`,
			want: []Observation{{ID: "o2", PatientID: "p1", Code: "2947-0", Value: -150, Time: time.Date(2021, 3, 4, 5, 6, 7, 123e6, time.UTC)}}},
		{name: "condition prefers snomed", in: tCond, want: Condition{ID: "c1", PatientID: "p1", System: SystemSNOMED, Code: "44054006", Onset: time.Date(2015, 6, 1, 0, 0, 0, 0, time.UTC)}},
		{name: "condition icd-10 before other", in: `{"resourceType":"Condition","id":"c2","code":{"coding":[{"system":"urn:local","code":"X"},{"system":"http://hl7.org/fhir/sid/icd-10","code":"I10"}]},"subject":{"reference":"Patient/p1"},"recordedDate":"2016"}`,
			want: Condition{ID: "c2", PatientID: "p1", System: SystemICD10, Code: "I10", Onset: time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{name: "condition first coding, no onset", in: `{"resourceType":"Condition","id":"c3","code":{"coding":[{"system":"urn:local","code":"X"}]},"subject":{"reference":"Patient/p1"}}`,
			want: Condition{ID: "c3", PatientID: "p1", System: "urn:local", Code: "X"}},

		{name: "another type's field with a foreign shape is ignored", in: `{"resourceType":"Patient","id":"p4","code":"x","period":7,"component":{}}`, want: Patient{ID: "p4"}},
		{name: "foreign shapes in an unsupported type", in: `{"resourceType":"Procedure","id":"e1","class":[1],"subject":"x"}`, err: ErrUnsupportedType},
		{name: "foreign shape and a bad own field", in: `{"resourceType":"Patient","id":"p4","code":"x","gender":7}`, err: ErrBadStructure},
		{name: "not json", in: `{"resourceType":"Patient",`, err: ErrMalformed},
		{name: "json array", in: `[1,2]`, err: ErrMalformed},
		{name: "empty", in: ``, err: ErrMalformed},
		{name: "missing type", in: `{"id":"x"}`, err: ErrMissingType},
		{name: "unsupported type", in: `{"resourceType":"Procedure","id":"e1"}`, err: ErrUnsupportedType},
		{name: "type not a string", in: `{"resourceType":7}`, err: ErrBadStructure},
		{name: "missing id", in: `{"resourceType":"Patient","gender":"male"}`, err: ErrMissingID},
		{name: "bad id", in: `{"resourceType":"Patient","id":"has space"}`, err: ErrBadID},
		{name: "id too long", in: `{"resourceType":"Patient","id":"` + strings.Repeat("a", 65) + `"}`, err: ErrBadID},
		{name: "id not a string", in: `{"resourceType":"Patient","id":12}`, err: ErrBadStructure},
		{name: "bad birth date", in: `{"resourceType":"Patient","id":"p1","birthDate":"1970-13-45"}`, err: ErrBadTime},
		{name: "missing subject", in: strings.Replace(tObs, `"subject":{"reference":"Patient/p1"},`, "", 1), err: ErrMissingSubject},
		{name: "empty subject", in: strings.Replace(tObs, `"Patient/p1"`, `""`, 1), err: ErrMissingSubject},
		{name: "group subject", in: strings.Replace(tObs, `"Patient/p1"`, `"Group/g1"`, 1), err: ErrNonPatientSubject},
		{name: "string value", in: strings.Replace(tObs, `"value":72`, `"value":"72"`, 1), err: ErrBadValue},
		{name: "huge value", in: strings.Replace(tObs, `"value":72`, `"value":1e999`, 1), err: ErrBadValue},
		{name: "bad component value", in: strings.Replace(tBP, `"value":80`, `"value":true`, 1), err: ErrBadValue},
		{name: "bad effective time", in: strings.Replace(tObs, `2020-01-02T03:04:05-05:00`, `yesterday`, 1), err: ErrBadTime},
		{name: "missing time", in: strings.Replace(tObs, `"effectiveDateTime":"2020-01-02T03:04:05-05:00",`, "", 1), err: ErrMissingTime},
		{name: "coded value", in: `{"resourceType":"Observation","id":"o3","code":{"coding":[{"system":"http://loinc.org","code":"72166-2"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020","valueCodeableConcept":{"coding":[{"code":"266919005"}]}}`, err: ErrNoNumericValue},
		{name: "no loinc", in: strings.Replace(tObs, `http://loinc.org`, `urn:local`, 1), err: ErrNoLOINC},
		{name: "entered in error", in: strings.Replace(tObs, `"final"`, `"entered-in-error"`, 1), err: ErrEnteredInError},
		{name: "condition without code", in: `{"resourceType":"Condition","id":"c4","subject":{"reference":"Patient/p1"}}`, err: ErrMissingCode},
		{name: "condition bad onset", in: strings.Replace(tCond, `2015-06-01`, `2015-06-01T25:00:00Z`, 1), err: ErrBadTime},
		{name: "subject is an object array", in: strings.Replace(tCond, `{"reference":"Patient/p1"}`, `[{}]`, 1), err: ErrBadStructure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseResource([]byte(tc.in))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				if r, _ := Reason(err); r == "" {
					t.Errorf("no reason for %v", err)
				}
				assertNoPHI(t, err.Error())
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !equalRecords(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// assertNoPHI checks an error message for values from the test resources.
func assertNoPHI(t *testing.T, msg string) {
	t.Helper()
	for _, v := range []string{"p1", "o1", "bp1", "c1", "Doe", "Jane", "MRN-4711", "1970", "yesterday", "Group/g1", "has space", "72"} {
		if strings.Contains(msg, v) {
			t.Errorf("message %q contains input value %q", msg, v)
		}
	}
}

func equalRecords(a, b any) bool {
	switch a := a.(type) {
	case Patient:
		b, ok := b.(Patient)
		return ok && a.ID == b.ID && a.Gender == b.Gender && a.BirthDate.Equal(b.BirthDate)
	case Condition:
		b, ok := b.(Condition)
		return ok && a.ID == b.ID && a.PatientID == b.PatientID && a.System == b.System && a.Code == b.Code && a.Onset.Equal(b.Onset)
	case []Observation:
		b, ok := b.([]Observation)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			x, y := a[i], b[i]
			if x.ID != y.ID || x.PatientID != y.PatientID || x.Code != y.Code || x.Unit != y.Unit || x.Value != y.Value || !x.Time.Equal(y.Time) {
				return false
			}
		}
		return true
	}
	return false
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2020", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"2020-02", time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC), true},
		{"2020-02-29", time.Date(2020, 2, 29, 0, 0, 0, 0, time.UTC), true},
		{"2020-02-29T10:00:00+02:00", time.Date(2020, 2, 29, 8, 0, 0, 0, time.UTC), true},
		{"2020-02-29T10:00:00.5Z", time.Date(2020, 2, 29, 10, 0, 0, 5e8, time.UTC), true},
		{"2020-02-29T10:00:00", time.Date(2020, 2, 29, 10, 0, 0, 0, time.UTC), true},
		{"2021-02-29", time.Time{}, false},
		{"20", time.Time{}, false},
		{"2020-02-29 10:00:00", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseTime(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if !got.Equal(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	v, err := ParseResource([]byte(`{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2026-01-02T03:04:05Z"}}`))
	if err != nil {
		t.Fatal(err)
	}
	p := v.(Patient)
	if p.Version.ID != "3" || !p.Version.Updated.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("version = %+v", p.Version)
	}
	if _, err := ParseResource([]byte(`{"resourceType":"Patient","id":"p1","meta":{"lastUpdated":"yesterday"}}`)); !errors.Is(err, ErrBadTime) {
		t.Fatalf("bad lastUpdated: err = %v", err)
	}
}

func TestVersionNewer(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		v, old Version
		newer  bool
	}{
		{"later lastUpdated", Version{Updated: t1.Add(time.Hour)}, Version{Updated: t1}, true},
		{"earlier lastUpdated", Version{Updated: t1}, Version{Updated: t1.Add(time.Hour)}, false},
		{"higher versionId", Version{ID: "10"}, Version{ID: "9"}, true},
		{"lower versionId", Version{ID: "2"}, Version{ID: "3"}, false},
		{"same version", Version{ID: "2", Updated: t1}, Version{ID: "2", Updated: t1}, false},
		{"no meta: last write wins", Version{}, Version{}, true},
		{"opaque ids differ", Version{ID: "b"}, Version{ID: "a"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.v.Newer(c.old); got != c.newer {
				t.Fatalf("Newer = %v, want %v", got, c.newer)
			}
		})
	}
}
