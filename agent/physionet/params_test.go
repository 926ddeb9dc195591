package physionet

import (
	"slices"
	"testing"
)

func TestLOINCCheckDigit(t *testing.T) {
	tests := []struct {
		code string
		ok   bool
	}{
		{"8867-4", true},
		{"29463-7", true},
		{"777-3", true},
		{"10839-9", true},
		{"76215-3", true},
		{"76213-8", true},
		{"76214-6", true},
		{"19123-9", true},
		{"2601-3", true},
		{"76215-4", false}, // the wrong invasive systolic code
		{"76213-9", false},
		{"76214-7", false},
		{"8867-5", false},
		{"8867", false},
		{"88a7-4", false},
		{"-4", false},
		{"12345678-0", false},
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			if got := loincCheckDigitOK(tc.code); got != tc.ok {
				t.Fatalf("loincCheckDigitOK(%q) = %v, want %v", tc.code, got, tc.ok)
			}
		})
	}
}

func TestParamsTable(t *testing.T) {
	ps := Params()
	if len(ps) != 38 {
		t.Errorf("table has %d parameters, want 38 (37 time series + Height)", len(ps))
	}
	names := map[string]bool{}
	codes := map[string]string{}
	for i, p := range ps {
		if i > 0 && ps[i-1].Name >= p.Name {
			t.Errorf("table not sorted by name at %q", p.Name)
		}
		if names[p.Name] {
			t.Errorf("duplicate name %q", p.Name)
		}
		names[p.Name] = true
		got, ok := Lookup(p.Name)
		if !ok || got != p {
			t.Errorf("Lookup(%q) = %+v, %v", p.Name, got, ok)
		}
		switch p.Category {
		case CategoryVitalSigns, CategoryLaboratory, CategorySurvey, CategoryExam, CategoryTherapy:
		default:
			t.Errorf("%s: bad category %q", p.Name, p.Category)
		}
		if !p.Mapped() {
			if p.Note == "" {
				t.Errorf("%s: unmapped without a note saying why", p.Name)
			}
			continue
		}
		if !loincCheckDigitOK(p.LOINC) {
			t.Errorf("%s: LOINC %q fails the check digit", p.Name, p.LOINC)
		}
		if prev, dup := codes[p.LOINC]; dup {
			t.Errorf("%s and %s share LOINC %s", prev, p.Name, p.LOINC)
		}
		codes[p.LOINC] = p.Name
		if p.Unit == "" || p.Display == "" {
			t.Errorf("%s: empty unit or display", p.Name)
		}
		if back, ok := lookupLOINC(p.LOINC); !ok || back.Name != p.Name {
			t.Errorf("lookupLOINC(%s) = %q", p.LOINC, back.Name)
		}
	}
	var unmapped []string
	for _, p := range ps {
		if !p.Mapped() {
			unmapped = append(unmapped, p.Name)
		}
	}
	if !slices.Equal(unmapped, []string{"MechVent"}) {
		t.Errorf("unmapped parameters = %v, want [MechVent]", unmapped)
	}
	for _, name := range []string{"", "hr", "RecordID", "Age", "Gender", "ICUType", "SpO2"} {
		if _, ok := Lookup(name); ok {
			t.Errorf("Lookup(%q) found a parameter", name)
		}
	}
	for _, name := range DefaultVitalParams() {
		if p, ok := Lookup(name); !ok || !p.Mapped() {
			t.Errorf("default vital %q is not a mapped parameter", name)
		}
	}
	// Params returns a copy.
	ps[0].LOINC = "changed"
	if Params()[0].LOINC == "changed" {
		t.Error("Params returned the table itself")
	}
}

// TestParamsExpectedCodes pins the codes of the table, so that a change is
// deliberate.
func TestParamsExpectedCodes(t *testing.T) {
	want := map[string][2]string{
		"HR": {"8867-4", "/min"}, "RespRate": {"9279-1", "/min"}, "Temp": {"8310-5", "Cel"},
		"NISysABP": {"8480-6", "mm[Hg]"}, "NIDiasABP": {"8462-4", "mm[Hg]"}, "NIMAP": {"8478-0", "mm[Hg]"},
		"SysABP": {"76215-3", "mm[Hg]"}, "DiasABP": {"76213-8", "mm[Hg]"}, "MAP": {"76214-6", "mm[Hg]"},
		"SaO2": {"2708-6", "%"}, "GCS": {"9269-2", "{score}"}, "Glucose": {"2345-7", "mg/dL"},
		"Lactate": {"2524-7", "mmol/L"}, "pH": {"2744-1", "[pH]"}, "PaCO2": {"2019-8", "mm[Hg]"},
		"PaO2": {"2703-7", "mm[Hg]"}, "FiO2": {"3150-0", "1"}, "HCO3": {"1963-8", "mmol/L"},
		"HCT": {"4544-3", "%"}, "WBC": {"6690-2", "10*3/uL"}, "Platelets": {"777-3", "10*3/uL"},
		"BUN": {"3094-0", "mg/dL"}, "Creatinine": {"2160-0", "mg/dL"}, "Na": {"2951-2", "mmol/L"},
		"K": {"2823-3", "mmol/L"}, "Mg": {"19123-9", "mg/dL"}, "Albumin": {"1751-7", "g/dL"},
		"ALP": {"6768-6", "U/L"}, "ALT": {"1742-6", "U/L"}, "AST": {"1920-8", "U/L"},
		"Bilirubin": {"1975-2", "mg/dL"}, "Cholesterol": {"2093-3", "mg/dL"},
		"TroponinI": {"10839-9", "ug/L"}, "TroponinT": {"6598-7", "ug/L"}, "Urine": {"9187-6", "mL"},
		"Weight": {"29463-7", "kg"}, "Height": {"8302-2", "cm"}, "MechVent": {"", ""},
	}
	for name, w := range want {
		p, ok := Lookup(name)
		if !ok || p.LOINC != w[0] || p.Unit != w[1] {
			t.Errorf("%s = %q %q (found %v), want %q %q", name, p.LOINC, p.Unit, ok, w[0], w[1])
		}
	}
	if len(want) != len(Params()) {
		t.Errorf("pinned %d codes, table has %d", len(want), len(Params()))
	}
}
