package physionet

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func TestToRecords(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi int) time.Time { return time.Date(y, mo, d, h, mi, 0, 0, time.UTC) }
	admit := time.Date(2020, 3, 1, 6, 30, 0, 0, time.FixedZone("UTC+2", 2*3600)) // 04:30Z
	obs := func(id, code, unit string, v float64, at time.Time) fhir.Observation {
		return fhir.Observation{ID: id, PatientID: "physionet-42", Code: code, Unit: unit, Value: v, Time: at}
	}
	tests := []struct {
		name     string
		stay     *Stay
		admit    time.Time
		want     []any
		unmapped map[string]int
	}{
		{
			name: "death, every kind of row",
			stay: &Stay{
				RecordID: 42, Age: 60, Gender: 1, Height: 170.2, Weight: 80, ICUType: 4,
				Outcome: Outcome{SAPS: 10, SOFA: 5, LengthOfStay: 7, Survival: 3, InHospitalDeath: true},
				Rows: []Row{
					{0, "Weight", 81}, {7, "HR", 73}, {7, "MechVent", 1}, {7, "Urine", 100}, {7, "Urine", 50},
					{37, "SysABP", 120}, {37, "pH", 7.4}, {40, "SpO2", 97},
				},
			},
			admit: admit,
			want: []any{
				fhir.Patient{ID: "physionet-42", BirthDate: utc(1960, 3, 1, 0, 0), Gender: "male", Deceased: true},
				fhir.Encounter{ID: "physionet-42-icu", PatientID: "physionet-42", Class: "ICU",
					Start: utc(2020, 3, 1, 4, 30), End: utc(2020, 3, 8, 4, 30), Discharge: "exp"},
				obs("physionet-42-0-Height", "8302-2", "cm", 170.2, utc(2020, 3, 1, 4, 30)),
				obs("physionet-42-0-Weight", "29463-7", "kg", 80, utc(2020, 3, 1, 4, 30)),
				obs("physionet-42-0-Weight-2", "29463-7", "kg", 81, utc(2020, 3, 1, 4, 30)),
				obs("physionet-42-7-HR", "8867-4", "/min", 73, utc(2020, 3, 1, 4, 37)),
				obs("physionet-42-7-Urine", "9187-6", "mL", 100, utc(2020, 3, 1, 4, 37)),
				obs("physionet-42-7-Urine-2", "9187-6", "mL", 50, utc(2020, 3, 1, 4, 37)),
				obs("physionet-42-37-SysABP", "76215-3", "mm[Hg]", 120, utc(2020, 3, 1, 5, 7)),
				obs("physionet-42-37-pH", "2744-1", "[pH]", 7.4, utc(2020, 3, 1, 5, 7)),
			},
			unmapped: map[string]int{"MechVent": 1, "SpO2": 1},
		},
		{
			name: "survivor, everything missing",
			stay: &Stay{RecordID: 42, Age: -1, Gender: -1, Height: -1, Weight: -1, ICUType: -1,
				Outcome: Outcome{SAPS: -1, SOFA: -1, LengthOfStay: -1, Survival: -1}},
			admit: DefaultAdmit(42),
			want: []any{
				fhir.Patient{ID: "physionet-42", Gender: "unknown"},
				fhir.Encounter{ID: "physionet-42-icu", PatientID: "physionet-42", Class: "ICU", Start: utc(2012, 1, 1, 0, 0)},
			},
			unmapped: map[string]int{},
		},
		{
			name:  "female, fractional age, length of stay 0",
			stay:  &Stay{RecordID: 42, Age: 40.5, Gender: 0, Height: -1, Weight: -1, ICUType: 3, Outcome: Outcome{LengthOfStay: 0}},
			admit: DefaultAdmit(42),
			want: []any{
				fhir.Patient{ID: "physionet-42", Gender: "female", BirthDate: utc(1971, 7, 2, 0, 0)},
				fhir.Encounter{ID: "physionet-42-icu", PatientID: "physionet-42", Class: "ICU", Start: utc(2012, 1, 1, 0, 0), End: utc(2012, 1, 1, 0, 0)},
			},
			unmapped: map[string]int{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recSink{}
			if err := ToRecords(tc.stay, tc.admit, sink); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sink.records, tc.want) {
				t.Errorf("records:\n%+v\nwant:\n%+v", sink.records, tc.want)
			}
			st := NewStats()
			if err := toRecords(tc.stay, tc.admit, &recSink{}, st); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(st.Unmapped, tc.unmapped) {
				t.Errorf("unmapped = %v, want %v", st.Unmapped, tc.unmapped)
			}
			if st.Patients != 1 || st.Encounters != 1 || st.Observations != len(tc.want)-2 {
				t.Errorf("counts = %d/%d/%d", st.Patients, st.Encounters, st.Observations)
			}
		})
	}
}

func TestToRecordsErrors(t *testing.T) {
	boom := errors.New("boom")
	ok := func() *Stay {
		return &Stay{RecordID: 1, Age: 50, Gender: 0, Height: -1, Weight: 70, ICUType: 1, Rows: []Row{{5, "HR", 80}}}
	}
	tests := []struct {
		name string
		stay *Stay
		sink fhir.Sink
		want error
	}{
		{"nil stay", nil, &recSink{}, ErrNilStay},
		{"nil sink", ok(), nil, ErrNilSink},
		{"record id zero", &Stay{}, &recSink{}, ErrBadStay},
		{"negative minute", &Stay{RecordID: 1, Rows: []Row{{-5, "HR", 80}}}, &recSink{}, ErrBadStay},
		{"minute too late", &Stay{RecordID: 1, Rows: []Row{{MaxMinute + 1, "HR", 80}}}, &recSink{}, ErrBadStay},
		{"NaN value", &Stay{RecordID: 1, Rows: []Row{{5, "HR", math.NaN()}}}, &recSink{}, ErrBadStay},
		{"Inf value", &Stay{RecordID: 1, Rows: []Row{{5, "HR", math.Inf(-1)}}}, &recSink{}, ErrBadStay},
		{"patient sink error", ok(), &recSink{failOn: "patient", err: boom}, boom},
		{"encounter sink error", ok(), &recSink{failOn: "encounter", err: boom}, boom},
		{"observation sink error", ok(), &recSink{failOn: "observation", err: boom}, boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := ToRecords(tc.stay, DefaultAdmit(1), tc.sink); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestObservationID(t *testing.T) {
	tests := []struct {
		id, minute int
		param      string
		n          int
		want       string
	}{
		{132539, 7, "HR", 1, "physionet-132539-7-HR"},
		{132539, 2880, "NISysABP", 1, "physionet-132539-2880-NISysABP"},
		{132539, 7, "Urine", 2, "physionet-132539-7-Urine-2"},
		{1, 0, "a b/c_d", 1, "physionet-1-0-a-b-c-d"},
		{1, 0, "pH.x-y", 0, "physionet-1-0-pH.x-y"},
		{1, 0, "ünï", 1, "physionet-1-0--n-"},
		{123456789, 599999, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnop", 3, "physionet-123456789-599999-abcdefghijklmnopqrstuvwxyzabcdefghijk"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			got := ObservationID(tc.id, tc.minute, tc.param, tc.n)
			if got != tc.want {
				t.Fatalf("ObservationID = %q, want %q", got, tc.want)
			}
			if len(got) > 64 {
				t.Fatalf("id longer than 64")
			}
		})
	}
}

func TestBirthDate(t *testing.T) {
	admit := time.Date(2012, 1, 1, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		age  float64
		want time.Time
	}{
		{54, time.Date(1958, 1, 1, 0, 0, 0, 0, time.UTC)},
		{0, time.Date(2012, 1, 1, 0, 0, 0, 0, time.UTC)},
		{90, time.Date(1922, 1, 1, 0, 0, 0, 0, time.UTC)},
		{0.25, time.Date(2011, 10, 2, 0, 0, 0, 0, time.UTC)},
		{-1, time.Time{}},
		{-3, time.Time{}},
		{151, time.Time{}},
		{math.NaN(), time.Time{}},
		{math.Inf(1), time.Time{}},
	}
	for _, tc := range tests {
		if got := birthDate(admit, tc.age); !got.Equal(tc.want) {
			t.Errorf("birthDate(%v) = %v, want %v", tc.age, got, tc.want)
		}
	}
}
