package synth

import "github.com/cohort-fl/cohort/protocol/pb"

// Code systems and codes written into the generated FHIR resources.
const (
	// SystemLOINC is the FHIR system URI of LOINC.
	SystemLOINC = "http://loinc.org"
	// SystemSNOMED is the FHIR system URI of SNOMED CT.
	SystemSNOMED = "http://snomed.info/sct"
	// SystemUCUM is the FHIR system URI of UCUM units.
	SystemUCUM = "http://unitsofmeasure.org"
	// CodeSepsis is the SNOMED CT code of the outcome, sepsis (disorder).
	CodeSepsis = "91302008"
)

const (
	loincBPPanel = "85354-9"
	// Age and sex standardization, shared by Truth and DefaultFeatureSpec.
	ageCenter = 60.0
	ageScale  = 18.0
)

// vital indexes into vitals.
type vital int

const (
	vHeartRate vital = iota
	vRespRate
	vSystolic
	vDiastolic
	vTemperature
	vSpO2
	vBMI
	numVitals
)

// vitalDef describes one vital sign: how it is coded, its unit, how it is
// standardized (shared by Truth and DefaultFeatureSpec) and how measured
// values are rounded.
type vitalDef struct {
	name     string // feature name
	loinc    string
	display  string
	unit     string // UCUM code, also used as the human-readable unit
	center   float64
	scale    float64
	fill     float64 // a normal value, used when the vital is missing
	decimals int
	min, max float64 // physiological clamp
	sd       float64 // standard deviation of one measurement's error
}

// vitals is indexed by vital.
var vitals = [numVitals]vitalDef{
	vHeartRate:   {"heart_rate", "8867-4", "Heart rate", "/min", 85, 15, 78, 0, 35, 200, 4},
	vRespRate:    {"resp_rate", "9279-1", "Respiratory rate", "/min", 18, 4, 16, 0, 8, 50, 1.2},
	vSystolic:    {"sbp", "8480-6", "Systolic blood pressure", "mm[Hg]", 125, 20, 120, 0, 60, 230, 6},
	vDiastolic:   {"dbp", "8462-4", "Diastolic blood pressure", "mm[Hg]", 75, 12, 75, 0, 30, 140, 4},
	vTemperature: {"temp", "8310-5", "Body temperature", "Cel", 37.0, 0.7, 36.9, 1, 33.5, 42, 0.15},
	vSpO2:        {"spo2", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 96, 3, 97, 0, 70, 100, 0.8},
	vBMI:         {"bmi", "39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 27.5, 5.5, 26, 1, 15, 65, 0.2},
}

// vitalByName returns the vital whose feature name is name.
func vitalByName(name string) (vital, bool) {
	for k, v := range vitals {
		if v.name == name {
			return vital(k), true
		}
	}
	return 0, false
}

// DefaultFeatureSpec returns the feature spec of a sepsis job on data from
// this package: age, female sex and the last observed value of each vital
// (systolic and diastolic pressure are the components of the blood-pressure
// panel), standardized with centers and scales that fit the default sites,
// and labelled by a sepsis Condition. Fill values are normal values in raw
// units. Each call returns a new message.
func DefaultFeatureSpec() *pb.FeatureSpec {
	fs := []*pb.Feature{
		{Name: "age", Kind: pb.FeatureKind_FEATURE_KIND_AGE, Center: ageCenter, Scale: ageScale, Fill: ageCenter},
		{Name: "sex_female", Kind: pb.FeatureKind_FEATURE_KIND_SEX_FEMALE, Center: 0.5, Scale: 0.5, Fill: 0.5},
	}
	for _, v := range vitals {
		fs = append(fs, &pb.Feature{
			Name:   v.name,
			Kind:   pb.FeatureKind_FEATURE_KIND_OBS_LAST,
			Loinc:  v.loinc,
			Center: v.center,
			Scale:  v.scale,
			Fill:   v.fill,
		})
	}
	return &pb.FeatureSpec{
		Features: fs,
		Label:    &pb.Label{ConditionSystem: SystemSNOMED, ConditionCode: CodeSepsis},
	}
}
