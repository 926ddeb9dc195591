// Package fhir turns HL7 FHIR R4 JSON (Bulk Data NDJSON files, Bundles of
// any type, single resources) into the few normalized records the site
// agent needs: Patient, Observation, Condition and Encounter.
//
// The decoder reads only the fields those records carry. Names, addresses,
// identifiers, telecom and every other element a hospital export contains
// are never decoded; they stay in the input bytes and go no further. Error
// messages and Stats keys name a reason and a line or entry number only,
// never a value taken from the input.
//
// Bad input never stops a stream: each resource that cannot be used is
// counted in Stats (Rejected when it is broken, Skipped when it is valid but
// of no use to the agent) and reading goes on with the next one.
//
// Observations of the LOINC codes in the unit table (vital signs and blood
// glucose) are normalized to one canonical UCUM unit per code (Normalize):
// a unit that cannot be converted is rejected as "unknown-unit", and a vital
// sign outside its physiological range as "impossible-value"
// (CheckPlausible). The ...With readers take Options: a clock for rejecting
// times in the future ("future-time"), a bound on the per-read set that
// skips repeated resource versions ("duplicate"), and a Quarantine callback
// that receives every rejected resource's raw bytes so that a caller can
// keep them, on the gateway's own disk only, for a person to inspect.
package fhir

import (
	"strconv"
	"time"
)

// Code systems recognized by the decoder.
const (
	// SystemLOINC is the LOINC code system URI.
	SystemLOINC = "http://loinc.org"
	// SystemSNOMED is the SNOMED CT code system URI.
	SystemSNOMED = "http://snomed.info/sct"
	// SystemICD10 is the WHO ICD-10 code system URI.
	SystemICD10 = "http://hl7.org/fhir/sid/icd-10"
	// SystemICD10CM is the ICD-10-CM code system URI.
	SystemICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
)

// Version identifies one version of a resource: meta.versionId and
// meta.lastUpdated, both optional. A store upserts by resource id and keeps
// the newest version (see Newer).
type Version struct {
	// ID is meta.versionId; "" if absent.
	ID string
	// Updated is meta.lastUpdated (UTC); zero if absent.
	Updated time.Time
}

// Newer reports whether v is a later version than old. Versions compare by
// lastUpdated when both have it, else by versionId when both are integers;
// a version that cannot be ordered against old counts as newer (the last
// write wins, as for resources without meta).
func (v Version) Newer(old Version) bool {
	if !v.Updated.IsZero() && !old.Updated.IsZero() && !v.Updated.Equal(old.Updated) {
		return v.Updated.After(old.Updated)
	}
	a, aerr := strconv.ParseUint(v.ID, 10, 64)
	b, berr := strconv.ParseUint(old.ID, 10, 64)
	if aerr == nil && berr == nil {
		return a > b
	}
	return v != old || (v.ID == "" && v.Updated.IsZero())
}

// Patient is the part of a FHIR Patient the agent keeps. It deliberately
// has no name, address, identifier or telecom fields.
type Patient struct {
	// ID is the resource id.
	ID string
	// Version is the resource's meta version.
	Version Version
	// BirthDate is the birth date (UTC midnight; a partial date is the
	// start of its year or month); zero if absent.
	BirthDate time.Time
	// Gender is the administrative gender: "male", "female", "other",
	// "unknown", or "" if absent. Values outside the FHIR value set become
	// "unknown".
	Gender string
	// Deceased is true when deceasedBoolean is true or deceasedDateTime is
	// set.
	Deceased bool
	// DeceasedTime is deceasedDateTime (UTC); zero if absent.
	DeceasedTime time.Time
}

// Encounter is a stay or visit: the window that index times and labels
// such as in-hospital death are defined over.
type Encounter struct {
	// ID is the resource id.
	ID string
	// Version is the resource's meta version.
	Version Version
	// PatientID is the id of the Patient the encounter is about.
	PatientID string
	// Class is the encounter class code (e.g. "IMP" inpatient, "EMER",
	// "AMB", "ICU"); "" if absent.
	Class string
	// Start and End are period.start and period.end (UTC); End is zero
	// while the encounter is ongoing.
	Start, End time.Time
	// Discharge is the hospitalization.dischargeDisposition code (e.g.
	// "exp" for expired); "" if absent.
	Discharge string
}

// Observation is one numeric measurement. A FHIR Observation with
// components (a blood pressure panel) yields one Observation per numeric
// LOINC-coded component.
type Observation struct {
	// ID is the resource id, or "<id>#<component code>" for a component.
	ID string
	// Version is the resource's meta version.
	Version Version
	// PatientID is the id of the Patient the observation is about.
	PatientID string
	// Code is the LOINC code.
	Code string
	// Unit is the canonical UCUM unit for a LOINC code in the unit table
	// (see CanonicalUnit; Value is converted to it), else the quantity's
	// unit as given (its human-readable unit, else its code).
	Unit string
	// Value is the numeric value; always finite.
	Value float64
	// Time is effectiveDateTime, else effectivePeriod.start, else issued (UTC).
	Time time.Time
}

// Condition is a coded diagnosis.
type Condition struct {
	// ID is the resource id.
	ID string
	// Version is the resource's meta version.
	Version Version
	// PatientID is the id of the Patient the condition belongs to.
	PatientID string
	// System is the code system of Code (SNOMED CT preferred, then ICD-10).
	System string
	// Code is the condition code.
	Code string
	// Onset is onsetDateTime, else recordedDate (UTC); zero if neither.
	Onset time.Time
}

// PatientData is one patient's records grouped together.
type PatientData struct {
	// Patient is the patient record (just its ID when only references to
	// the patient were seen).
	Patient Patient
	// Observations are the patient's observations, sorted by time.
	Observations []Observation
	// Conditions are the patient's conditions, sorted by onset.
	Conditions []Condition
	// Encounters are the patient's encounters, sorted by start.
	Encounters []Encounter
}

// Sink receives normalized records. Readers call it from the calling
// goroutine, one record at a time; an error from the Sink stops the reader
// and is returned wrapped.
type Sink interface {
	// Patient receives one Patient.
	Patient(Patient) error
	// Observation receives one numeric Observation.
	Observation(Observation) error
	// Condition receives one Condition.
	Condition(Condition) error
	// Encounter receives one Encounter.
	Encounter(Encounter) error
}
