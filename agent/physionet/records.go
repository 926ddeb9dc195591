package physionet

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// File names of training set A inside a data directory.
const (
	// SetAArchive is the stay archive of set A.
	SetAArchive = "set-a.tar.gz"
	// SetAOutcomes is the outcomes file of set A.
	SetAOutcomes = "Outcomes-a.txt"
)

// Encounter coding.
const (
	// EncounterClass is the class of every stay's Encounter.
	EncounterClass = "ICU"
	// EncounterClassSystem is the code system written with EncounterClass
	// in FHIR JSON. ICU is not a concept of v3-ActCode (it is a v3-RoleCode
	// location type), so strict terminology validation flags it; see the
	// package documentation.
	EncounterClassSystem = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
	// DischargeExpired is the discharge disposition of a stay that ended
	// in death.
	DischargeExpired = "exp"
)

// DefaultAdmit admits every stay at 2012-01-01T00:00:00Z (the challenge's
// year; PhysioNet gives no dates). It is what a nil admit function means.
func DefaultAdmit(recordID int) time.Time { return time.Date(2012, 1, 1, 0, 0, 0, 0, time.UTC) }

// PatientID returns the Patient id of a record: "physionet-<RecordID>".
func PatientID(recordID int) string { return "physionet-" + strconv.Itoa(recordID) }

// EncounterID returns the Encounter id of a record:
// "physionet-<RecordID>-icu".
func EncounterID(recordID int) string { return PatientID(recordID) + "-icu" }

// ObservationID returns the Observation id of the n-th (from 1) row of a
// parameter at a minute: "physionet-<RecordID>-<minute>-<param>", with
// "-<n>" appended for n > 1, every character outside [A-Za-z0-9.-]
// replaced by '-', cut to FHIR's 64 characters.
func ObservationID(recordID, minute int, param string, n int) string {
	var b strings.Builder
	b.WriteString(PatientID(recordID))
	b.WriteByte('-')
	b.WriteString(strconv.Itoa(minute))
	b.WriteByte('-')
	for _, c := range param {
		if c == '-' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	if n > 1 {
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(n))
	}
	id := b.String()
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

// ToRecords sends one stay to sink as normalized FHIR records, in this
// order:
//
//   - Patient "physionet-<RecordID>": gender female (0), male (1) or
//     unknown; BirthDate is admit minus Age years, at UTC midnight
//     (PhysioNet gives the age only, so the date is a stand-in that gives
//     the right age at admission), zero when Age is missing; Deceased is
//     Outcome.InHospitalDeath, DeceasedTime zero (unknown).
//   - Encounter "physionet-<RecordID>-icu": class ICU, Start admit, End
//     admit + LengthOfStay days when the length of stay is known (zero
//     otherwise), Discharge "exp" when the patient died in hospital.
//   - one Observation per mapped value: the admission Height and Weight at
//     minute 0 when not -1, then every row whose parameter has a LOINC
//     mapping, at admit + Minute, with the table's LOINC code and UCUM
//     unit. Ids come from ObservationID; rows of one parameter at the same
//     minute are numbered in row order (the admission value first).
//
// Rows of an unmapped parameter (MechVent) are skipped. An error from sink
// is returned wrapped.
func ToRecords(s *Stay, admit time.Time, sink fhir.Sink) error {
	return toRecords(s, admit, sink, nil)
}

// toRecords is ToRecords counting into st when it is not nil.
func toRecords(s *Stay, admit time.Time, sink fhir.Sink, st *Stats) error {
	if s == nil {
		return ErrNilStay
	}
	if sink == nil {
		return ErrNilSink
	}
	if s.RecordID <= 0 {
		return fmt.Errorf("%w: record id not positive", ErrBadStay)
	}
	for i, r := range s.Rows {
		if r.Minute < 0 || r.Minute > MaxMinute {
			return fmt.Errorf("%w: record %d: row %d: minute out of range", ErrBadStay, s.RecordID, i)
		}
		if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
			return fmt.Errorf("%w: record %d: row %d: value not finite", ErrBadStay, s.RecordID, i)
		}
	}
	admit = admit.UTC()
	pid := PatientID(s.RecordID)

	p := fhir.Patient{ID: pid, BirthDate: birthDate(admit, s.Age), Deceased: s.Outcome.InHospitalDeath}
	switch s.Gender {
	case 0:
		p.Gender = "female"
	case 1:
		p.Gender = "male"
	default:
		p.Gender = "unknown"
	}
	if err := sink.Patient(p); err != nil {
		return fmt.Errorf("record %d: patient: %w", s.RecordID, err)
	}

	e := fhir.Encounter{ID: EncounterID(s.RecordID), PatientID: pid, Class: EncounterClass, Start: admit}
	if los := s.Outcome.LengthOfStay; los >= 0 {
		e.End = admit.AddDate(0, 0, los)
	}
	if s.Outcome.InHospitalDeath {
		e.Discharge = DischargeExpired
	}
	if err := sink.Encounter(e); err != nil {
		return fmt.Errorf("record %d: encounter: %w", s.RecordID, err)
	}
	if st != nil {
		st.Patients++
		st.Encounters++
	}

	seen := map[[2]int]int{} // (minute, table index) -> rows so far
	emit := func(minute int, name string, v float64) error {
		p, known := Lookup(name)
		if !known || !p.Mapped() {
			if st != nil {
				st.Unmapped[name]++
			}
			return nil
		}
		key := [2]int{minute, paramIndex(name)}
		seen[key]++
		o := fhir.Observation{
			ID:        ObservationID(s.RecordID, minute, name, seen[key]),
			PatientID: pid,
			Code:      p.LOINC,
			Unit:      p.Unit,
			Value:     v,
			Time:      admit.Add(time.Duration(minute) * time.Minute),
		}
		if err := sink.Observation(o); err != nil {
			return fmt.Errorf("record %d: observation: %w", s.RecordID, err)
		}
		if st != nil {
			st.Observations++
		}
		return nil
	}
	if s.Height != -1 && !math.IsNaN(s.Height) && !math.IsInf(s.Height, 0) {
		if err := emit(0, DescHeight, s.Height); err != nil {
			return err
		}
	}
	if s.Weight != -1 && !math.IsNaN(s.Weight) && !math.IsInf(s.Weight, 0) {
		if err := emit(0, DescWeight, s.Weight); err != nil {
			return err
		}
	}
	for _, r := range s.Rows {
		if err := emit(r.Minute, r.Param, r.Value); err != nil {
			return err
		}
	}
	return nil
}

// paramIndex returns the index of a known parameter in the table.
func paramIndex(name string) int {
	for i, p := range params {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// birthDate returns admit minus age years at UTC midnight, or zero for a
// missing or implausible age.
func birthDate(admit time.Time, age float64) time.Time {
	if math.IsNaN(age) || age < 0 || age > 150 {
		return time.Time{}
	}
	years := math.Floor(age)
	b := admit.AddDate(-int(years), 0, 0)
	if frac := age - years; frac > 0 {
		b = b.Add(-time.Duration(frac * 365.2425 * 24 * float64(time.Hour)))
	}
	return time.Date(b.Year(), b.Month(), b.Day(), 0, 0, 0, 0, time.UTC)
}

// Import reads set A from dataDir (SetAArchive and SetAOutcomes) and sends
// the records of every stay that filter accepts (nil: all) to sink, in
// RecordID order, each stay admitted at admit(RecordID) (nil:
// DefaultAdmit). The returned Stats describe the stays imported: a stay
// the filter drops is counted in Filtered only.
func Import(ctx context.Context, dataDir string, admit func(recordID int) time.Time, filter func(*Stay) bool, sink fhir.Sink) (*Stats, error) {
	st := NewStats()
	if sink == nil {
		return st, ErrNilSink
	}
	if admit == nil {
		admit = DefaultAdmit
	}
	err := readStays(ctx, filepath.Join(dataDir, SetAArchive), filepath.Join(dataDir, SetAOutcomes), st, func(s *Stay) (bool, error) {
		if filter != nil && !filter(s) {
			return false, nil
		}
		return true, toRecords(s, admit(s.RecordID), sink, st)
	})
	return st, err
}
