package fhir

import (
	"math"
	"strings"
)

// SystemUCUM is the UCUM code system URI used in Quantity.system.
const SystemUCUM = "http://unitsofmeasure.org"

// Canonical UCUM units of the quantities the agent normalizes.
const (
	UnitCelsius  = "Cel"
	UnitKilogram = "kg"
	UnitCm       = "cm"
	UnitPerMin   = "/min"
	UnitMmHg     = "mm[Hg]"
	UnitPercent  = "%"
	UnitBMI      = "kg/m2"
	UnitMgPerDL  = "mg/dL"
)

// mmHgPerKPa is the number of mm[Hg] in one kPa: 1 mm[Hg] = 133.322387415 Pa.
const mmHgPerKPa = 1000 / 133.322387415

// dimension is one kind of quantity: its canonical UCUM unit and how each
// accepted UCUM code converts to it.
type dimension struct {
	canonical string
	// from maps an accepted UCUM code to its conversion into canonical.
	from map[string]func(float64) float64
	// text maps lower-case human-readable unit strings (Quantity.unit,
	// used only when there is no UCUM code) to a UCUM code in from.
	text map[string]string
}

func same(v float64) float64 { return v }

func scale(f float64) func(float64) float64 { return func(v float64) float64 { return v * f } }

var (
	dimTemperature = &dimension{
		canonical: UnitCelsius,
		from: map[string]func(float64) float64{
			"Cel":    same,
			"[degF]": func(v float64) float64 { return (v - 32) * 5 / 9 },
			"K":      func(v float64) float64 { return v - 273.15 },
		},
		text: map[string]string{
			"cel": "Cel", "c": "Cel", "°c": "Cel", "degc": "Cel", "deg c": "Cel", "celsius": "Cel",
			"[degf]": "[degF]", "f": "[degF]", "°f": "[degF]", "degf": "[degF]", "deg f": "[degF]", "fahrenheit": "[degF]",
			"k": "K", "kelvin": "K",
		},
	}
	dimMass = &dimension{
		canonical: UnitKilogram,
		from: map[string]func(float64) float64{
			"kg":      same,
			"g":       scale(0.001),
			"[lb_av]": scale(0.45359237),
			"[oz_av]": scale(0.028349523125),
		},
		text: map[string]string{
			"kg": "kg", "kilogram": "kg", "kilograms": "kg", "kgs": "kg",
			"g": "g", "gram": "g", "grams": "g",
			"[lb_av]": "[lb_av]", "lb": "[lb_av]", "lbs": "[lb_av]", "pound": "[lb_av]", "pounds": "[lb_av]",
			"[oz_av]": "[oz_av]", "oz": "[oz_av]", "ounce": "[oz_av]", "ounces": "[oz_av]",
		},
	}
	dimLength = &dimension{
		canonical: UnitCm,
		from: map[string]func(float64) float64{
			"cm":     same,
			"m":      scale(100),
			"mm":     scale(0.1),
			"[in_i]": scale(2.54),
			"[ft_i]": scale(30.48),
		},
		text: map[string]string{
			"cm": "cm", "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
			"m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
			"mm":     "mm",
			"[in_i]": "[in_i]", "in": "[in_i]", "inch": "[in_i]", "inches": "[in_i]",
			"[ft_i]": "[ft_i]", "ft": "[ft_i]", "foot": "[ft_i]", "feet": "[ft_i]",
		},
	}
	dimRate = &dimension{
		canonical: UnitPerMin,
		from: map[string]func(float64) float64{
			"/min": same, "1/min": same,
			"{beats}/min": same, "{beat}/min": same,
			"{breaths}/min": same, "{breath}/min": same,
		},
		text: map[string]string{
			"/min": "/min", "1/min": "/min", "per min": "/min", "per minute": "/min", "/minute": "/min",
			"bpm": "/min", "beats/min": "/min", "beats/minute": "/min", "beats per minute": "/min",
			"{beats}/min": "/min", "{beat}/min": "/min",
			"breaths/min": "/min", "breaths/minute": "/min", "breaths per minute": "/min",
			"{breaths}/min": "/min", "{breath}/min": "/min",
		},
	}
	dimPressure = &dimension{
		canonical: UnitMmHg,
		from: map[string]func(float64) float64{
			"mm[Hg]": same,
			"kPa":    scale(mmHgPerKPa),
		},
		text: map[string]string{
			"mm[hg]": "mm[Hg]", "mmhg": "mm[Hg]", "mm hg": "mm[Hg]",
			"kpa": "kPa",
		},
	}
	dimPercent = &dimension{
		canonical: UnitPercent,
		from:      map[string]func(float64) float64{"%": same},
		text:      map[string]string{"%": "%", "percent": "%"},
	}
	dimBMI = &dimension{
		canonical: UnitBMI,
		from:      map[string]func(float64) float64{"kg/m2": same},
		text:      map[string]string{"kg/m2": "kg/m2", "kg/m^2": "kg/m2", "kg/m²": "kg/m2"},
	}
	dimGlucose = &dimension{
		canonical: UnitMgPerDL,
		from: map[string]func(float64) float64{
			"mg/dL":  same,
			"mmol/L": scale(18.016),
		},
		text: map[string]string{"mg/dl": "mg/dL", "mmol/l": "mmol/L"},
	}
)

// loincUnit is one row of the unit table: a LOINC code's dimension and,
// for vital signs, its physiologically plausible range in the canonical
// unit (inclusive).
type loincUnit struct {
	dim      *dimension
	lo, hi   float64
	hasRange bool
}

func vital(d *dimension, lo, hi float64) loincUnit {
	return loincUnit{dim: d, lo: lo, hi: hi, hasRange: true}
}

// unitTable maps LOINC codes to their canonical unit and plausible range.
// Codes not in it keep the unit the input gives.
var unitTable = map[string]loincUnit{
	"8310-5":  vital(dimTemperature, 20, 46), // Body temperature
	"8331-1":  vital(dimTemperature, 20, 46), // Oral temperature
	"29463-7": vital(dimMass, 0, 700),        // Body weight
	"3141-9":  vital(dimMass, 0, 700),        // Body weight Measured
	"8302-2":  vital(dimLength, 0, 300),      // Body height
	"8306-3":  vital(dimLength, 0, 300),      // Body height --lying
	"9843-4":  {dim: dimLength},              // Head occipital-frontal circumference
	"8867-4":  vital(dimRate, 0, 350),        // Heart rate
	"9279-1":  vital(dimRate, 0, 120),        // Respiratory rate
	"8480-6":  vital(dimPressure, 0, 350),    // Systolic blood pressure
	"8462-4":  vital(dimPressure, 0, 250),    // Diastolic blood pressure
	"8478-0":  vital(dimPressure, 0, 300),    // Mean blood pressure
	"2708-6":  vital(dimPercent, 0, 100),     // Oxygen saturation in Arterial blood
	"59408-5": vital(dimPercent, 0, 100),     // Oxygen saturation in Arterial blood by Pulse oximetry
	"39156-5": vital(dimBMI, 5, 200),         // Body mass index
	"2339-0":  {dim: dimGlucose},             // Glucose [Mass/volume] in Blood
	"2345-7":  {dim: dimGlucose},             // Glucose [Mass/volume] in Serum or Plasma
	"41653-7": {dim: dimGlucose},             // Glucose [Mass/volume] in Capillary blood by Glucometer
}

// CanonicalUnit returns the canonical UCUM unit of a LOINC code, and false
// for codes whose units are not normalized.
func CanonicalUnit(loincCode string) (string, bool) {
	u, ok := unitTable[loincCode]
	if !ok {
		return "", false
	}
	return u.dim.canonical, true
}

// Normalize converts value, measured in the UCUM unit ucum, to the
// canonical unit of loincCode and returns the converted value and that
// unit. For a code without a canonical unit it returns value and ucum
// unchanged. It fails with ErrUnknownUnit when the unit cannot be
// converted (an empty unit included) and with ErrImpossibleValue when the
// result is not finite. Converted values are rounded to 1e-9 of the
// canonical unit, far below any instrument's resolution, so that a
// conversion always yields the same number (98.6 [degF] is exactly 37 Cel).
// Normalize does not check plausibility; see CheckPlausible.
func Normalize(loincCode string, value float64, ucum string) (float64, string, error) {
	u, ok := unitTable[loincCode]
	if !ok {
		return value, ucum, nil
	}
	conv, ok := u.dim.from[ucum]
	if !ok {
		return 0, "", ErrUnknownUnit
	}
	return convert(conv, value, u.dim.canonical)
}

func convert(conv func(float64) float64, value float64, canonical string) (float64, string, error) {
	v := conv(value)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, "", ErrImpossibleValue
	}
	if math.Abs(v) < 1e6 {
		v = math.Round(v*1e9) / 1e9
	}
	if v == 0 {
		v = 0 // no negative zero
	}
	return v, canonical, nil
}

// CheckPlausible returns ErrImpossibleValue when value, in the canonical
// unit of a vital-sign LOINC code, lies outside the physiologically
// plausible range of that code (heart rate 0..350 /min, respiratory rate
// 0..120 /min, temperature 20..46 Cel, SpO2 0..100 %, systolic 0..350 and
// diastolic 0..250 mm[Hg], weight 0..700 kg, height 0..300 cm, BMI 5..200
// kg/m2; bounds included). Other codes are not checked.
func CheckPlausible(loincCode string, value float64) error {
	u, ok := unitTable[loincCode]
	if !ok || !u.hasRange {
		return nil
	}
	if value < u.lo || value > u.hi || math.IsNaN(value) {
		return ErrImpossibleValue
	}
	return nil
}

// normalizeQuantity applies the unit table to one parsed quantity. The
// UCUM code is used when the quantity's system is UCUM; otherwise the
// human-readable unit is matched (case-insensitively, with common
// spellings such as "lbs", "°F", "bpm", "mmHg"), and a code without a
// system is tried last. For codes not in the table it returns the unit as
// the input gives it (unit, else code).
func normalizeQuantity(loincCode string, value float64, q *rawQuantity, plausibility bool) (float64, string, error) {
	u, ok := unitTable[loincCode]
	if !ok {
		unit := strings.TrimSpace(q.Unit)
		if unit == "" {
			unit = strings.TrimSpace(q.Code)
		}
		return value, unit, nil
	}
	ucum := ucumCode(u.dim, q)
	conv, ok := u.dim.from[ucum]
	if !ok {
		return 0, "", ErrUnknownUnit
	}
	v, unit, err := convert(conv, value, u.dim.canonical)
	if err != nil {
		return 0, "", err
	}
	if plausibility {
		if err := CheckPlausible(loincCode, v); err != nil {
			return 0, "", err
		}
	}
	return v, unit, nil
}

// ucumCode picks the UCUM code of q for dimension d, or "" when none is
// recognized.
func ucumCode(d *dimension, q *rawQuantity) string {
	code := strings.TrimSpace(q.Code)
	if code != "" && normSystem(q.System) == SystemUCUM {
		return code // authoritative, even when unknown
	}
	if unit := strings.TrimSpace(q.Unit); unit != "" {
		if _, ok := d.from[unit]; ok {
			return unit
		}
		if c, ok := d.text[strings.ToLower(unit)]; ok {
			return c
		}
	}
	if code != "" && strings.TrimSpace(q.System) == "" {
		if _, ok := d.from[code]; ok {
			return code
		}
	}
	return ""
}
