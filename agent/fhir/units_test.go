package fhir

import (
	"errors"
	"math"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name     string
		code     string
		value    float64
		unit     string
		want     float64
		wantUnit string
		err      error
	}{
		// Temperature -> Cel.
		{name: "Cel unchanged", code: "8310-5", value: 37.2, unit: "Cel", want: 37.2, wantUnit: "Cel"},
		{name: "degF", code: "8310-5", value: 98.6, unit: "[degF]", want: 37, wantUnit: "Cel"},
		{name: "degF freezing", code: "8310-5", value: 32, unit: "[degF]", want: 0, wantUnit: "Cel"},
		{name: "degF -40", code: "8331-1", value: -40, unit: "[degF]", want: -40, wantUnit: "Cel"},
		{name: "degF 120", code: "8310-5", value: 120, unit: "[degF]", want: 48.888888889, wantUnit: "Cel"},
		{name: "K", code: "8310-5", value: 310.15, unit: "K", want: 37, wantUnit: "Cel"},
		{name: "K zero", code: "8310-5", value: 273.15, unit: "K", want: 0, wantUnit: "Cel"},
		// Weight -> kg.
		{name: "kg unchanged", code: "29463-7", value: 70.5, unit: "kg", want: 70.5, wantUnit: "kg"},
		{name: "lb", code: "29463-7", value: 150, unit: "[lb_av]", want: 68.0388555, wantUnit: "kg"},
		{name: "lb heavy", code: "3141-9", value: 1600, unit: "[lb_av]", want: 725.747792, wantUnit: "kg"},
		{name: "g", code: "29463-7", value: 3500, unit: "g", want: 3.5, wantUnit: "kg"},
		{name: "oz", code: "29463-7", value: 120, unit: "[oz_av]", want: 3.401942775, wantUnit: "kg"},
		// Height -> cm.
		{name: "cm unchanged", code: "8302-2", value: 172.4, unit: "cm", want: 172.4, wantUnit: "cm"},
		{name: "in", code: "8302-2", value: 70, unit: "[in_i]", want: 177.8, wantUnit: "cm"},
		{name: "m", code: "8302-2", value: 1.75, unit: "m", want: 175, wantUnit: "cm"},
		{name: "ft", code: "8306-3", value: 6, unit: "[ft_i]", want: 182.88, wantUnit: "cm"},
		{name: "ft 10", code: "8302-2", value: 10, unit: "[ft_i]", want: 304.8, wantUnit: "cm"},
		{name: "mm", code: "9843-4", value: 500, unit: "mm", want: 50, wantUnit: "cm"},
		// Rates -> /min.
		{name: "heart rate /min", code: "8867-4", value: 72, unit: "/min", want: 72, wantUnit: "/min"},
		{name: "heart rate beats", code: "8867-4", value: 72, unit: "{beats}/min", want: 72, wantUnit: "/min"},
		{name: "heart rate 1/min", code: "8867-4", value: 61, unit: "1/min", want: 61, wantUnit: "/min"},
		{name: "respiratory rate breaths", code: "9279-1", value: 16, unit: "{breaths}/min", want: 16, wantUnit: "/min"},
		{name: "respiratory rate /min", code: "9279-1", value: 14, unit: "/min", want: 14, wantUnit: "/min"},
		// Blood pressure -> mm[Hg].
		{name: "systolic mm[Hg]", code: "8480-6", value: 120, unit: "mm[Hg]", want: 120, wantUnit: "mm[Hg]"},
		{name: "systolic kPa", code: "8480-6", value: 16, unit: "kPa", want: 120.009852135, wantUnit: "mm[Hg]"},
		{name: "diastolic kPa to 100", code: "8462-4", value: 13.3322387415, unit: "kPa", want: 100, wantUnit: "mm[Hg]"},
		{name: "mean kPa zero", code: "8478-0", value: 0, unit: "kPa", want: 0, wantUnit: "mm[Hg]"},
		// SpO2, BMI.
		{name: "SpO2 %", code: "59408-5", value: 97, unit: "%", want: 97, wantUnit: "%"},
		{name: "SpO2 arterial %", code: "2708-6", value: 99.5, unit: "%", want: 99.5, wantUnit: "%"},
		{name: "BMI", code: "39156-5", value: 24.5, unit: "kg/m2", want: 24.5, wantUnit: "kg/m2"},
		// Glucose -> mg/dL.
		{name: "glucose mg/dL", code: "2339-0", value: 101, unit: "mg/dL", want: 101, wantUnit: "mg/dL"},
		{name: "glucose mmol/L", code: "2345-7", value: 5.5, unit: "mmol/L", want: 99.088, wantUnit: "mg/dL"},
		{name: "glucose capillary mmol/L", code: "41653-7", value: 10, unit: "mmol/L", want: 180.16, wantUnit: "mg/dL"},
		// Codes outside the table keep their unit.
		{name: "sodium untouched", code: "2947-0", value: 140, unit: "mmol/L", want: 140, wantUnit: "mmol/L"},
		{name: "untouched empty unit", code: "72514-3", value: 3, unit: "", want: 3, wantUnit: ""},
		// Failures.
		{name: "unknown unit", code: "8867-4", value: 72, unit: "[degF]", err: ErrUnknownUnit},
		{name: "empty unit", code: "29463-7", value: 70, unit: "", err: ErrUnknownUnit},
		{name: "wrong case is not UCUM", code: "8310-5", value: 37, unit: "cel", err: ErrUnknownUnit},
		{name: "SpO2 as fraction", code: "59408-5", value: 0.97, unit: "1", err: ErrUnknownUnit},
		{name: "overflow", code: "8480-6", value: math.MaxFloat64, unit: "kPa", err: ErrImpossibleValue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, unit, err := Normalize(tc.code, tc.value, tc.unit)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || unit != tc.wantUnit {
				t.Fatalf("Normalize(%s, %v, %q) = %v %q, want %v %q", tc.code, tc.value, tc.unit, got, unit, tc.want, tc.wantUnit)
			}
			if math.Signbit(got) && got == 0 {
				t.Fatal("negative zero")
			}
		})
	}
}

func TestCanonicalUnit(t *testing.T) {
	for code, want := range map[string]string{
		"8310-5": "Cel", "29463-7": "kg", "8302-2": "cm", "8867-4": "/min", "9279-1": "/min",
		"8480-6": "mm[Hg]", "8462-4": "mm[Hg]", "59408-5": "%", "39156-5": "kg/m2", "2339-0": "mg/dL",
	} {
		if got, ok := CanonicalUnit(code); !ok || got != want {
			t.Errorf("CanonicalUnit(%s) = %q, %v; want %q", code, got, ok, want)
		}
	}
	if _, ok := CanonicalUnit("2947-0"); ok {
		t.Error("sodium has a canonical unit")
	}
	// Every accepted unit of every row converts, and every text synonym
	// names an accepted unit.
	for code, row := range unitTable {
		for u := range row.dim.from {
			if _, got, err := Normalize(code, 1, u); err != nil || got != row.dim.canonical {
				t.Errorf("Normalize(%s, 1, %q) = %q, %v", code, u, got, err)
			}
		}
		for txt, u := range row.dim.text {
			if _, ok := row.dim.from[u]; !ok {
				t.Errorf("%s: synonym %q maps to unknown unit %q", code, txt, u)
			}
		}
	}
}

func TestCheckPlausible(t *testing.T) {
	tests := []struct {
		code  string
		value float64
		ok    bool
	}{
		{"8867-4", 0, true}, {"8867-4", 350, true}, {"8867-4", -1, false}, {"8867-4", 350.5, false},
		{"9279-1", 120, true}, {"9279-1", 121, false},
		{"8310-5", 20, true}, {"8310-5", 46, true}, {"8310-5", 19.9, false}, {"8310-5", 46.1, false},
		{"59408-5", 100, true}, {"59408-5", 100.1, false}, {"2708-6", -0.1, false},
		{"8480-6", 350, true}, {"8480-6", 351, false},
		{"8462-4", 250, true}, {"8462-4", 251, false},
		{"29463-7", 700, true}, {"29463-7", 700.1, false}, {"29463-7", -3, false},
		{"8302-2", 300, true}, {"8302-2", 304.8, false},
		{"39156-5", 5, true}, {"39156-5", 200, true}, {"39156-5", 4.9, false}, {"39156-5", 201, false},
		{"8867-4", math.NaN(), false},
		{"2339-0", 5000, true}, // glucose: no range
		{"2947-0", -5, true},   // not in the table
	}
	for _, tc := range tests {
		err := CheckPlausible(tc.code, tc.value)
		if (err == nil) != tc.ok {
			t.Errorf("CheckPlausible(%s, %v) = %v, want ok=%v", tc.code, tc.value, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrImpossibleValue) {
			t.Errorf("err = %v, want ErrImpossibleValue", err)
		}
	}
}

// TestUnitSource checks which of a Quantity's fields decides its unit.
func TestUnitSource(t *testing.T) {
	tests := []struct {
		name     string
		code     string
		q        rawQuantity
		want     float64
		wantUnit string
		err      error
	}{
		{name: "UCUM code wins over text", code: "29463-7", q: rawQuantity{Unit: "kg", System: SystemUCUM, Code: "[lb_av]"}, want: 45.359237, wantUnit: "kg"},
		{name: "UCUM system with trailing slash", code: "29463-7", q: rawQuantity{System: SystemUCUM + "/", Code: "g"}, want: 0.1, wantUnit: "kg"},
		{name: "unknown UCUM code is authoritative", code: "29463-7", q: rawQuantity{Unit: "kg", System: SystemUCUM, Code: "mg"}, err: ErrUnknownUnit},
		{name: "text when no UCUM system", code: "29463-7", q: rawQuantity{Unit: "lbs", System: "urn:local", Code: "LB"}, want: 45.359237, wantUnit: "kg"},
		{name: "text degrees F", code: "8310-5", q: rawQuantity{Unit: "°F"}, want: 37.777777778, wantUnit: "Cel"},
		{name: "text bpm", code: "8867-4", q: rawQuantity{Unit: "BPM"}, want: 100, wantUnit: "/min"},
		{name: "text mmHg", code: "8480-6", q: rawQuantity{Unit: "mm Hg"}, want: 100, wantUnit: "mm[Hg]"},
		{name: "text UCUM spelling", code: "8302-2", q: rawQuantity{Unit: "[in_i]"}, want: 254, wantUnit: "cm"},
		{name: "code without system", code: "8302-2", q: rawQuantity{Unit: "inch-ish", Code: "[in_i]"}, want: 254, wantUnit: "cm"},
		{name: "nothing recognized", code: "8302-2", q: rawQuantity{Unit: "cubits"}, err: ErrUnknownUnit},
		{name: "untouched code keeps text", code: "2947-0", q: rawQuantity{Unit: "mmol/l", System: SystemUCUM, Code: "mmol/L"}, want: 100, wantUnit: "mmol/l"},
		{name: "untouched code falls back to code", code: "2947-0", q: rawQuantity{System: SystemUCUM, Code: "mmol/L"}, want: 100, wantUnit: "mmol/L"},
		{name: "implausible after conversion", code: "8310-5", q: rawQuantity{System: SystemUCUM, Code: "K"}, err: ErrImpossibleValue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := 100.0
			got, unit, err := normalizeQuantity(tc.code, in, &tc.q, true)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || unit != tc.wantUnit {
				t.Fatalf("got %v %q, want %v %q", got, unit, tc.want, tc.wantUnit)
			}
		})
	}
}
