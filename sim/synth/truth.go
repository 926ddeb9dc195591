package synth

import "math"

// Profile is a patient's true state at the index encounter, before
// measurement noise: what the ground-truth model reads.
type Profile struct {
	// Age in years at the start of the encounter.
	Age float64
	// Female is true when administrative gender is female.
	Female bool
	// HeartRate in beats per minute.
	HeartRate float64
	// RespRate, respiratory rate in breaths per minute.
	RespRate float64
	// Systolic blood pressure in mm Hg.
	Systolic float64
	// Diastolic blood pressure in mm Hg (not read by DefaultTruth).
	Diastolic float64
	// Temperature, body temperature in degrees Celsius.
	Temperature float64
	// SpO2, oxygen saturation in percent.
	SpO2 float64
	// BMI, body mass index in kg/m2.
	BMI float64
}

// state returns the patient's true value of each vital.
func (p *Profile) state() [numVitals]float64 {
	return [numVitals]float64{p.HeartRate, p.RespRate, p.Systolic, p.Diastolic, p.Temperature, p.SpO2, p.BMI}
}

// Truth is the ground-truth logistic risk model of sepsis. Coefficients
// apply to standardized values, (raw - center) / scale, with the centers and
// scales of DefaultFeatureSpec; female sex is coded as +1 and male as -1,
// matching that spec's SEX_FEMALE standardization.
type Truth struct {
	// Intercept of the logit; a Site's PrevalenceShift is added to it.
	Intercept float64
	// Age is the coefficient of standardized age.
	Age float64
	// AgeKnee is the age in years above which risk rises faster.
	AgeKnee float64
	// AgeKneeSlope is the extra logit per decade of age above AgeKnee.
	AgeKneeSlope float64
	// Female is the coefficient of standardized female sex.
	Female float64
	// HeartRate is the coefficient of standardized heart rate.
	HeartRate float64
	// RespRate is the coefficient of standardized respiratory rate.
	RespRate float64
	// Systolic is the coefficient of standardized systolic pressure.
	Systolic float64
	// Temperature is the coefficient of standardized temperature.
	Temperature float64
	// TempCurve is the coefficient of squared standardized temperature:
	// both fever and hypothermia raise the risk.
	TempCurve float64
	// SpO2 is the coefficient of standardized oxygen saturation.
	SpO2 float64
	// BMI is the coefficient of standardized body mass index.
	BMI float64
	// VitalAgeDecay makes vital signs less telling in older patients: the
	// heart rate, respiratory rate, systolic pressure, temperature and SpO2
	// terms are multiplied by exp(-VitalAgeDecay * standardized age).
	VitalAgeDecay float64
}

// DefaultTruth returns the ground truth used by the simulator: risk rises
// with age (steeply past 65), heart rate, respiratory rate, fever or
// hypothermia and obesity, and falls with blood pressure and oxygen
// saturation; vital signs tell less in older patients. It is mostly linear
// in the standardized features, so logistic regression on them ranks
// patients nearly as well as the truth (AUROC about 0.83 against a Bayes
// AUROC of about 0.87 on the default sites' mixture).
func DefaultTruth() Truth {
	return Truth{
		Intercept:     -2.9,
		Age:           0.05,
		AgeKnee:       65,
		AgeKneeSlope:  1.0,
		Female:        -0.12,
		HeartRate:     0.55,
		RespRate:      0.55,
		Systolic:      -0.40,
		Temperature:   0.30,
		TempCurve:     0.15,
		SpO2:          -0.50,
		BMI:           0.15,
		VitalAgeDecay: 0.3,
	}
}

// Logit returns the log-odds of sepsis for a patient in the given state,
// without any site's prevalence shift.
func (t Truth) Logit(p Profile) float64 {
	z := func(v vital, x float64) float64 { return (x - vitals[v].center) / vitals[v].scale }
	sex := -1.0
	if p.Female {
		sex = 1
	}
	temp := z(vTemperature, p.Temperature)
	age := (p.Age - ageCenter) / ageScale
	signs := t.HeartRate*z(vHeartRate, p.HeartRate) +
		t.RespRate*z(vRespRate, p.RespRate) +
		t.Systolic*z(vSystolic, p.Systolic) +
		t.Temperature*temp +
		t.TempCurve*temp*temp +
		t.SpO2*z(vSpO2, p.SpO2)
	return t.Intercept +
		t.Age*age +
		t.AgeKneeSlope*math.Max(0, p.Age-t.AgeKnee)/10 +
		t.Female*sex +
		t.BMI*z(vBMI, p.BMI) +
		signs*math.Exp(-t.VitalAgeDecay*age)
}

// Risk returns the probability of sepsis for a patient in the given state at
// a site with the given prevalence shift.
func (t Truth) Risk(p Profile, shift float64) float64 {
	return sigmoid(t.Logit(p) + shift)
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
