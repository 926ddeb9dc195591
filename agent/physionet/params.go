package physionet

import "sort"

// Observation categories (http://terminology.hl7.org/CodeSystem/observation-category).
const (
	CategoryVitalSigns = "vital-signs"
	CategoryLaboratory = "laboratory"
	CategorySurvey     = "survey"
	CategoryExam       = "exam"
	CategoryTherapy    = "therapy"
)

// Param describes one PhysioNet 2012 time-series parameter and its mapping
// to LOINC. A Param with an empty LOINC is known to the reader (its rows are
// kept in Stay.Rows) but has no mapping: ToRecords, Import and Replay skip
// it.
type Param struct {
	// Name is the PhysioNet parameter name, e.g. "HR".
	Name string
	// LOINC is the LOINC code, e.g. "8867-4"; "" when unmapped.
	LOINC string
	// Display is the LOINC long common name.
	Display string
	// Unit is the UCUM code of the values as PhysioNet records them.
	Unit string
	// Category is the FHIR observation category code.
	Category string
	// Note says why a mapping is uncertain or missing; "" when it is
	// plain.
	Note string
}

// Mapped reports whether the parameter has a LOINC mapping.
func (p Param) Mapped() bool { return p.LOINC != "" }

// params is the mapping table, sorted by Name (byte order). It is a
// constant: nothing writes to it, and Params returns a copy.
//
// Codes were checked against the LOINC mod-10 check digit and, where noted,
// against the units the data actually uses. See the package documentation
// for the codes that are uncertain.
var params = []Param{
	{"ALP", "6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma", "U/L", CategoryLaboratory, ""},
	{"ALT", "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", CategoryLaboratory, ""},
	{"AST", "1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", CategoryLaboratory, ""},
	{"Albumin", "1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL", CategoryLaboratory, ""},
	{"BUN", "3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", CategoryLaboratory, ""},
	{"Bilirubin", "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", CategoryLaboratory, ""},
	{"Cholesterol", "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", CategoryLaboratory, ""},
	{"Creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", CategoryLaboratory, ""},
	{"DiasABP", "76213-8", "Invasive Diastolic blood pressure", "mm[Hg]", CategoryVitalSigns, "invasive (arterial line); code fixed by its check digit"},
	{"FiO2", "3150-0", "Inhaled oxygen concentration", "1", CategoryTherapy, "PhysioNet records a fraction (0.21-1), hence UCUM unity, not %"},
	{"GCS", "9269-2", "Glasgow coma score total", "{score}", CategorySurvey, ""},
	{"Glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", CategoryLaboratory, ""},
	{"HCO3", "1963-8", "Bicarbonate [Moles/volume] in Serum or Plasma", "mmol/L", CategoryLaboratory, ""},
	{"HCT", "4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", CategoryLaboratory, ""},
	{"HR", "8867-4", "Heart rate", "/min", CategoryVitalSigns, ""},
	{"Height", "8302-2", "Body height", "cm", CategoryVitalSigns, ""},
	{"K", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", CategoryLaboratory, ""},
	{"Lactate", "2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L", CategoryLaboratory, "specimen not stated by PhysioNet; arterial blood would be 2518-9"},
	{"MAP", "76214-6", "Invasive Mean blood pressure", "mm[Hg]", CategoryVitalSigns, "invasive (arterial line); code fixed by its check digit"},
	{"MechVent", "", "", "", CategoryTherapy, "no LOINC code for 'on mechanical ventilation'; 19994-3 is the ventilator's oxygen setting and would read MechVent=1 as 100 % oxygen"},
	{"Mg", "19123-9", "Magnesium [Mass/volume] in Serum or Plasma", "mg/dL", CategoryLaboratory, "PhysioNet documents mmol/L (2601-3) but the values (median 2.0) are mg/dL"},
	{"NIDiasABP", "8462-4", "Diastolic blood pressure", "mm[Hg]", CategoryVitalSigns, "non-invasive; the generic vital-sign code (76535-4 would name the method)"},
	{"NIMAP", "8478-0", "Mean blood pressure", "mm[Hg]", CategoryVitalSigns, "non-invasive; the generic vital-sign code (76536-2 would name the method)"},
	{"NISysABP", "8480-6", "Systolic blood pressure", "mm[Hg]", CategoryVitalSigns, "non-invasive; the generic vital-sign code (76534-7 would name the method)"},
	{"Na", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", CategoryLaboratory, ""},
	{"PaCO2", "2019-8", "Carbon dioxide [Partial pressure] in Arterial blood", "mm[Hg]", CategoryLaboratory, ""},
	{"PaO2", "2703-7", "Oxygen [Partial pressure] in Arterial blood", "mm[Hg]", CategoryLaboratory, ""},
	{"Platelets", "777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", CategoryLaboratory, ""},
	{"RespRate", "9279-1", "Respiratory rate", "/min", CategoryVitalSigns, ""},
	{"SaO2", "2708-6", "Oxygen saturation in Arterial blood", "%", CategoryLaboratory, "arterial (blood gas) saturation, not pulse oximetry (59408-5)"},
	{"SysABP", "76215-3", "Invasive Systolic blood pressure", "mm[Hg]", CategoryVitalSigns, "invasive (arterial line); code fixed by its check digit"},
	{"Temp", "8310-5", "Body temperature", "Cel", CategoryVitalSigns, ""},
	{"TroponinI", "10839-9", "Troponin I.cardiac [Mass/volume] in Serum or Plasma", "ug/L", CategoryLaboratory, ""},
	{"TroponinT", "6598-7", "Troponin T.cardiac [Mass/volume] in Serum or Plasma", "ug/L", CategoryLaboratory, ""},
	{"Urine", "9187-6", "Urine output", "mL", CategoryExam, "volume since the previous charting; LOINC has no interval for it"},
	{"WBC", "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", CategoryLaboratory, ""},
	{"Weight", "29463-7", "Body weight", "kg", CategoryVitalSigns, ""},
	{"pH", "2744-1", "pH of Arterial blood", "[pH]", CategoryLaboratory, ""},
}

// Params returns the whole table (mapped and unmapped parameters), sorted
// by Name. The slice is a copy.
func Params() []Param {
	return append([]Param(nil), params...)
}

// Lookup returns the table entry for a PhysioNet parameter name. ok is
// false for a name the table does not know; an unmapped parameter
// (MechVent) is returned with ok true and an empty LOINC.
func Lookup(name string) (p Param, ok bool) {
	i := sort.Search(len(params), func(i int) bool { return params[i].Name >= name })
	if i < len(params) && params[i].Name == name {
		return params[i], true
	}
	return Param{}, false
}

// lookupLOINC returns the mapped parameter with the given LOINC code.
func lookupLOINC(code string) (Param, bool) {
	for _, p := range params {
		if p.LOINC != "" && p.LOINC == code {
			return p, true
		}
	}
	return Param{}, false
}

// DefaultVitalParams returns the parameters Replay publishes as device
// vitals by default: heart rate, respiratory rate, temperature, the
// non-invasive and invasive blood pressures and SaO2.
func DefaultVitalParams() []string {
	return []string{"HR", "RespRate", "Temp", "NISysABP", "NIDiasABP", "NIMAP", "SysABP", "DiasABP", "MAP", "SaO2"}
}

// Descriptor names: the general descriptors PhysioNet records once per stay
// at 00:00. Height and Weight are descriptors at 00:00 (their first
// occurrence) and time series afterwards.
const (
	DescRecordID = "RecordID"
	DescAge      = "Age"
	DescGender   = "Gender"
	DescHeight   = "Height"
	DescICUType  = "ICUType"
	DescWeight   = "Weight"
)
