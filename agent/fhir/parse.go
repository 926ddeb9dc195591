package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Each maps to one Stats reason (see Reason).
var (
	// ErrMalformed: the input is not valid JSON or not a JSON object.
	ErrMalformed = errors.New("malformed json")
	// ErrBadStructure: a field has the wrong JSON type for FHIR (an object
	// where a string belongs, and so on).
	ErrBadStructure = errors.New("field has the wrong json type")
	// ErrMissingType: the resource has no resourceType.
	ErrMissingType = errors.New("missing resourceType")
	// ErrUnsupportedType: the resource type is not Patient, Observation,
	// Condition or Encounter. Readers count it as skipped, by type.
	ErrUnsupportedType = errors.New("unsupported resource type")
	// ErrMissingID: the resource has no id.
	ErrMissingID = errors.New("missing id")
	// ErrBadID: the id is not a valid FHIR id ([A-Za-z0-9-.]{1,64}).
	ErrBadID = errors.New("invalid id")
	// ErrMissingSubject: an Observation or Condition has no subject reference.
	ErrMissingSubject = errors.New("missing subject")
	// ErrNonPatientSubject: the subject is not a Patient (a Group, a
	// Device, a contained resource). Readers count it as skipped.
	ErrNonPatientSubject = errors.New("subject is not a patient")
	// ErrMissingCode: a Condition has no coding.
	ErrMissingCode = errors.New("missing code")
	// ErrNoLOINC: an Observation has a numeric value but no LOINC code.
	// Readers count it as skipped.
	ErrNoLOINC = errors.New("no loinc code")
	// ErrNoNumericValue: an Observation has no numeric value (a coded or
	// text answer). Readers count it as skipped.
	ErrNoNumericValue = errors.New("no numeric value")
	// ErrBadValue: a value is not a finite JSON number, or a code is not
	// a string from the expected value set.
	ErrBadValue = errors.New("bad value")
	// ErrBadTime: a date or dateTime does not parse.
	ErrBadTime = errors.New("bad date or time")
	// ErrMissingTime: an Observation has no effective or issued time.
	ErrMissingTime = errors.New("missing time")
	// ErrEnteredInError: the record was marked entered-in-error. Readers
	// count it as skipped.
	ErrEnteredInError = errors.New("entered in error")
	// ErrOversized: a line or document exceeds the size limit.
	ErrOversized = errors.New("oversized")
	// ErrNilSink: a reader was called without a Sink.
	ErrNilSink = errors.New("nil sink")
	// ErrInvalidRecord: a record handed to a Sink lacks a required field.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrUnknownUnit: an Observation of a LOINC code with a canonical unit
	// has a unit that cannot be converted to it (or no unit).
	ErrUnknownUnit = errors.New("unknown unit")
	// ErrImpossibleValue: a vital sign lies outside its physiologically
	// plausible range, or a unit conversion overflowed.
	ErrImpossibleValue = errors.New("impossible value")
	// ErrFutureTime: an effective time, onset or period start lies beyond
	// the reader's clock plus the allowed skew.
	ErrFutureTime = errors.New("time in the future")
	// ErrDuplicate: a resource version already seen in the same read.
	// Readers count it as skipped.
	ErrDuplicate = errors.New("duplicate resource version")
	// ErrInvalidOptions: reader Options fail validation.
	ErrInvalidOptions = errors.New("invalid options")
	// ErrSink: the Sink returned an error; the reader stopped. The Sink's
	// error is wrapped too.
	ErrSink = errors.New("sink")
	// ErrRead: the input could not be read (an I/O error, a file that is
	// not gzip or whose compressed stream is corrupt). The cause is
	// wrapped too.
	ErrRead = errors.New("read")
	// ErrFileKind: a file name has none of the extensions the readers
	// know (.ndjson, .ndjson.gz, .json).
	ErrFileKind = errors.New("unknown file kind")
)

// reasons maps each parse sentinel to its Stats key and whether it is a
// skip (valid but unused) rather than a rejection.
var reasons = []struct {
	err    error
	reason string
	skip   bool
}{
	{ErrMalformed, "malformed-json", false},
	{ErrBadStructure, "bad-structure", false},
	{ErrMissingType, "missing-resource-type", false},
	{ErrUnsupportedType, "unsupported-type", true},
	{ErrMissingID, "missing-id", false},
	{ErrBadID, "bad-id", false},
	{ErrMissingSubject, "missing-subject", false},
	{ErrNonPatientSubject, "non-patient-subject", true},
	{ErrMissingCode, "missing-code", false},
	{ErrNoLOINC, "no-loinc-code", true},
	{ErrNoNumericValue, "no-numeric-value", true},
	{ErrBadValue, "bad-value", false},
	{ErrBadTime, "bad-time", false},
	{ErrMissingTime, "missing-time", false},
	{ErrEnteredInError, "entered-in-error", true},
	{ErrOversized, "oversized", false},
	{ErrUnknownUnit, "unknown-unit", false},
	{ErrImpossibleValue, "impossible-value", false},
	{ErrFutureTime, "future-time", false},
	{ErrDuplicate, "duplicate", true},
}

// Reason returns the Stats key for an error from ParseResource (for
// example "bad-time" for ErrBadTime) and whether readers count it as
// skipped rather than rejected. It returns ("", false) for other errors.
func Reason(err error) (reason string, skipped bool) {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason, r.skip
		}
	}
	return "", false
}

// Maximum sizes.
const (
	// MaxLineSize is the largest NDJSON line (one resource) accepted.
	MaxLineSize = 8 << 20
	// MaxBundleSize is the largest Bundle or single-resource document
	// ReadBundle accepts; it is read into memory whole.
	MaxBundleSize = 256 << 20
	// maxIDLen is FHIR's limit on resource ids.
	maxIDLen = 64
)

// ParseResource decodes one FHIR R4 resource. It returns a Patient, a
// []Observation (one per numeric value: the resource's own value and its
// LOINC-coded components, with units normalized as by Normalize), a
// Condition or an Encounter. Other resource types and unusable resources
// give an error wrapping one of the package's sentinel errors; Reason maps
// it to a Stats key. It applies the checks of DefaultOptions: units and
// plausibility, but no future-time check (there is no clock).
func ParseResource(b []byte) (any, error) {
	_, v, err := parse(b, "", &checker{plausibility: true})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// JSON shapes. Only the fields the agent uses are declared, so nothing else
// (names, addresses, identifiers, telecom, narrative) is ever decoded.
type (
	rawHead struct {
		ResourceType string `json:"resourceType"`
	}
	rawPatient struct {
		Meta             *rawMeta `json:"meta"`
		ID               string   `json:"id"`
		BirthDate        *string  `json:"birthDate"`
		Gender           *string  `json:"gender"`
		DeceasedBoolean  *bool    `json:"deceasedBoolean"`
		DeceasedDateTime *string  `json:"deceasedDateTime"`
	}
	rawEncounter struct {
		Meta            *rawMeta            `json:"meta"`
		ID              string              `json:"id"`
		Status          string              `json:"status"`
		Subject         *rawReference       `json:"subject"`
		Class           *rawCoding          `json:"class"`
		Period          *rawPeriod          `json:"period"`
		Hospitalization *rawHospitalization `json:"hospitalization"`
	}
	rawObservation struct {
		Meta              *rawMeta        `json:"meta"`
		ID                string          `json:"id"`
		Status            string          `json:"status"`
		Subject           *rawReference   `json:"subject"`
		Code              *rawConcept     `json:"code"`
		EffectiveDateTime *string         `json:"effectiveDateTime"`
		EffectivePeriod   *rawStartPeriod `json:"effectivePeriod"`
		Issued            *string         `json:"issued"`
		ValueQuantity     *rawQuantity    `json:"valueQuantity"`
		Component         []rawComponent  `json:"component"`
	}
	rawCondition struct {
		Meta               *rawMeta      `json:"meta"`
		ID                 string        `json:"id"`
		Subject            *rawReference `json:"subject"`
		Code               *rawConcept   `json:"code"`
		VerificationStatus *rawConcept   `json:"verificationStatus"`
		OnsetDateTime      *string       `json:"onsetDateTime"`
		RecordedDate       *string       `json:"recordedDate"`
	}
	// rawResource is the union of the four shapes, decoded in one pass.
	// When it fails with a type error (a field of one resource type that
	// has another JSON type in the resource at hand), decode reads the
	// resource again with its own type's shape, so that only the fields
	// of that type can make it fail. Decoding once instead of twice (type,
	// then shape) is what keeps the reader faster than a generic decode.
	rawResource struct {
		ResourceType       string              `json:"resourceType"`
		Meta               *rawMeta            `json:"meta"`
		ID                 string              `json:"id"`
		Status             string              `json:"status"`
		Subject            *rawReference       `json:"subject"`
		Code               *rawConcept         `json:"code"`
		BirthDate          *string             `json:"birthDate"`
		Gender             *string             `json:"gender"`
		DeceasedBoolean    *bool               `json:"deceasedBoolean"`
		DeceasedDateTime   *string             `json:"deceasedDateTime"`
		Class              *rawCoding          `json:"class"`
		Period             *rawPeriod          `json:"period"`
		Hospitalization    *rawHospitalization `json:"hospitalization"`
		EffectiveDateTime  *string             `json:"effectiveDateTime"`
		EffectivePeriod    *rawStartPeriod     `json:"effectivePeriod"`
		Issued             *string             `json:"issued"`
		ValueQuantity      *rawQuantity        `json:"valueQuantity"`
		Component          []rawComponent      `json:"component"`
		VerificationStatus *rawConcept         `json:"verificationStatus"`
		OnsetDateTime      *string             `json:"onsetDateTime"`
		RecordedDate       *string             `json:"recordedDate"`
	}
	rawPeriod struct {
		Start *string `json:"start"`
		End   *string `json:"end"`
	}
	rawStartPeriod struct {
		Start *string `json:"start"`
	}
	rawHospitalization struct {
		DischargeDisposition *rawConcept `json:"dischargeDisposition"`
	}
	rawMeta struct {
		VersionID   string  `json:"versionId"`
		LastUpdated *string `json:"lastUpdated"`
	}
	rawReference struct {
		Reference string `json:"reference"`
	}
	rawConcept struct {
		Coding []rawCoding `json:"coding"`
	}
	rawCoding struct {
		System string `json:"system"`
		Code   string `json:"code"`
	}
	rawQuantity struct {
		Value  json.RawMessage `json:"value"`
		Unit   string          `json:"unit"`
		System string          `json:"system"`
		Code   string          `json:"code"`
	}
	rawComponent struct {
		Code          *rawConcept  `json:"code"`
		ValueQuantity *rawQuantity `json:"valueQuantity"`
	}
)

// parse decodes one resource. typ is the resource type when it could be
// read (used to count skipped types). fallbackID is used when the resource
// has no id (Bundle entries identified by their fullUrl). c holds the
// unit, plausibility and time checks.
func parse(b []byte, fallbackID string, c *checker) (typ string, v any, err error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return "", nil, ErrMalformed
	}
	r, err := decode(b)
	if err != nil {
		return r.ResourceType, nil, err
	}
	typ = r.ResourceType
	switch typ {
	case "Patient":
		v, err = buildPatient(r, fallbackID)
	case "Observation":
		v, err = buildObservation(r, fallbackID, c)
	case "Condition":
		v, err = buildCondition(r, fallbackID, c)
	case "Encounter":
		v, err = buildEncounter(r, fallbackID, c)
	}
	return typ, v, err
}

// decode reads the fields of a supported resource in one pass; see
// rawResource. On error, r.ResourceType is the type when it could be read.
func decode(b []byte) (r *rawResource, err error) {
	r = new(rawResource)
	err = json.Unmarshal(b, r)
	if err == nil {
		switch r.ResourceType {
		case "":
			return &rawResource{}, ErrMissingType
		case "Patient", "Observation", "Condition", "Encounter":
			return r, nil
		}
		return &rawResource{ResourceType: r.ResourceType}, ErrUnsupportedType
	}
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		// A syntax error: map it as for any other decode.
		if err := unmarshal(b, &rawHead{}); err != nil {
			return &rawResource{}, err
		}
		return &rawResource{}, ErrMalformed
	}
	// A type error: read the type, then decode with that type's own shape.
	var head rawHead
	if err := unmarshal(b, &head); err != nil {
		return &rawResource{}, err
	}
	r = &rawResource{ResourceType: head.ResourceType}
	switch head.ResourceType {
	case "":
		return r, ErrMissingType
	case "Patient":
		var p rawPatient
		if err := unmarshal(b, &p); err != nil {
			return r, err
		}
		r.Meta, r.ID, r.BirthDate, r.Gender, r.DeceasedBoolean, r.DeceasedDateTime = p.Meta, p.ID, p.BirthDate, p.Gender, p.DeceasedBoolean, p.DeceasedDateTime
	case "Observation":
		var o rawObservation
		if err := unmarshal(b, &o); err != nil {
			return r, err
		}
		r.Meta, r.ID, r.Status, r.Subject, r.Code = o.Meta, o.ID, o.Status, o.Subject, o.Code
		r.EffectiveDateTime, r.EffectivePeriod, r.Issued, r.ValueQuantity, r.Component = o.EffectiveDateTime, o.EffectivePeriod, o.Issued, o.ValueQuantity, o.Component
	case "Condition":
		var cd rawCondition
		if err := unmarshal(b, &cd); err != nil {
			return r, err
		}
		r.Meta, r.ID, r.Subject, r.Code = cd.Meta, cd.ID, cd.Subject, cd.Code
		r.VerificationStatus, r.OnsetDateTime, r.RecordedDate = cd.VerificationStatus, cd.OnsetDateTime, cd.RecordedDate
	case "Encounter":
		var e rawEncounter
		if err := unmarshal(b, &e); err != nil {
			return r, err
		}
		r.Meta, r.ID, r.Status, r.Subject, r.Class, r.Period, r.Hospitalization = e.Meta, e.ID, e.Status, e.Subject, e.Class, e.Period, e.Hospitalization
	default:
		return r, ErrUnsupportedType
	}
	return r, nil
}

// unmarshal decodes b into v and maps decoding errors to sentinels. The
// messages of encoding/json quote input bytes, so they are not kept.
func unmarshal(b []byte, v any) error {
	err := json.Unmarshal(b, v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w at byte %d", ErrMalformed, se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%w at byte %d", ErrBadStructure, te.Offset)
	}
	return ErrMalformed
}

func buildPatient(r *rawResource, fallbackID string) (Patient, error) {
	id, err := resourceID(r.ID, fallbackID)
	if err != nil {
		return Patient{}, err
	}
	ver, err := version(r.Meta)
	if err != nil {
		return Patient{}, err
	}
	p := Patient{ID: id, Version: ver}
	if r.BirthDate != nil && *r.BirthDate != "" {
		t, err := parseTime(*r.BirthDate)
		if err != nil {
			return Patient{}, fmt.Errorf("birthDate: %w", err)
		}
		p.BirthDate = t
	}
	if r.DeceasedBoolean != nil && *r.DeceasedBoolean {
		p.Deceased = true
	}
	if r.DeceasedDateTime != nil && *r.DeceasedDateTime != "" {
		t, err := parseTime(*r.DeceasedDateTime)
		if err != nil {
			return Patient{}, fmt.Errorf("deceasedDateTime: %w", err)
		}
		p.Deceased, p.DeceasedTime = true, t
	}
	if r.Gender != nil {
		switch g := strings.ToLower(strings.TrimSpace(*r.Gender)); g {
		case "":
		case "male", "female", "other", "unknown":
			p.Gender = g
		default:
			p.Gender = "unknown"
		}
	}
	return p, nil
}

func buildEncounter(r *rawResource, fallbackID string, c *checker) (Encounter, error) {
	id, err := resourceID(r.ID, fallbackID)
	if err != nil {
		return Encounter{}, err
	}
	if r.Status == "entered-in-error" {
		return Encounter{}, ErrEnteredInError
	}
	pid, err := subjectPatient(r.Subject)
	if err != nil {
		return Encounter{}, err
	}
	ver, err := version(r.Meta)
	if err != nil {
		return Encounter{}, err
	}
	e := Encounter{ID: id, Version: ver, PatientID: pid}
	if r.Class != nil {
		e.Class = strings.TrimSpace(r.Class.Code)
	}
	if r.Period == nil || r.Period.Start == nil || *r.Period.Start == "" {
		return Encounter{}, ErrMissingTime
	}
	if e.Start, err = parseTime(*r.Period.Start); err != nil {
		return Encounter{}, fmt.Errorf("period.start: %w", err)
	}
	if err := c.notFuture(e.Start, *r.Period.Start); err != nil {
		return Encounter{}, fmt.Errorf("period.start: %w", err)
	}
	if r.Period.End != nil && *r.Period.End != "" {
		if e.End, err = parseTime(*r.Period.End); err != nil {
			return Encounter{}, fmt.Errorf("period.end: %w", err)
		}
		if e.End.Before(e.Start) {
			return Encounter{}, fmt.Errorf("%w: period ends before it starts", ErrBadTime)
		}
	}
	if h := r.Hospitalization; h != nil && h.DischargeDisposition != nil && len(h.DischargeDisposition.Coding) > 0 {
		e.Discharge = strings.TrimSpace(h.DischargeDisposition.Coding[0].Code)
	}
	return e, nil
}

func buildObservation(r *rawResource, fallbackID string, c *checker) ([]Observation, error) {
	id, err := resourceID(r.ID, fallbackID)
	if err != nil {
		return nil, err
	}
	if r.Status == "entered-in-error" {
		return nil, ErrEnteredInError
	}
	pid, err := subjectPatient(r.Subject)
	if err != nil {
		return nil, err
	}
	ver, err := version(r.Meta)
	if err != nil {
		return nil, err
	}

	var out []Observation
	hasNumber := false
	code := loinc(r.Code)
	val, ok, err := quantity(r.ValueQuantity)
	if err != nil {
		return nil, fmt.Errorf("valueQuantity: %w", err)
	}
	if ok {
		hasNumber = true
		if code != "" {
			v, unit, err := normalizeQuantity(code, val, r.ValueQuantity, c.plausibility)
			if err != nil {
				return nil, fmt.Errorf("valueQuantity: %w", err)
			}
			out = append(out, Observation{ID: id, Version: ver, PatientID: pid, Code: code, Unit: unit, Value: v})
		}
	}
	seen := map[string]bool{}
	for i, comp := range r.Component {
		val, ok, err := quantity(comp.ValueQuantity)
		if err != nil {
			return nil, fmt.Errorf("component %d: valueQuantity: %w", i, err)
		}
		if !ok {
			continue
		}
		hasNumber = true
		cc := loinc(comp.Code)
		if cc == "" || seen[cc] {
			continue
		}
		seen[cc] = true
		v, unit, err := normalizeQuantity(cc, val, comp.ValueQuantity, c.plausibility)
		if err != nil {
			return nil, fmt.Errorf("component %d: valueQuantity: %w", i, err)
		}
		out = append(out, Observation{ID: id + "#" + cc, Version: ver, PatientID: pid, Code: cc, Unit: unit, Value: v})
	}
	if len(out) == 0 {
		if hasNumber {
			return nil, ErrNoLOINC
		}
		return nil, ErrNoNumericValue
	}

	var ts *string
	switch {
	case r.EffectiveDateTime != nil:
		ts = r.EffectiveDateTime
	case r.EffectivePeriod != nil && r.EffectivePeriod.Start != nil:
		ts = r.EffectivePeriod.Start
	case r.Issued != nil:
		ts = r.Issued
	}
	if ts == nil || *ts == "" {
		return nil, ErrMissingTime
	}
	t, err := parseTime(*ts)
	if err != nil {
		return nil, fmt.Errorf("effective time: %w", err)
	}
	if err := c.notFuture(t, *ts); err != nil {
		return nil, fmt.Errorf("effective time: %w", err)
	}
	for i := range out {
		out[i].Time = t
	}
	return out, nil
}

func buildCondition(r *rawResource, fallbackID string, chk *checker) (Condition, error) {
	id, err := resourceID(r.ID, fallbackID)
	if err != nil {
		return Condition{}, err
	}
	if r.VerificationStatus != nil {
		for _, c := range r.VerificationStatus.Coding {
			if c.Code == "entered-in-error" {
				return Condition{}, ErrEnteredInError
			}
		}
	}
	pid, err := subjectPatient(r.Subject)
	if err != nil {
		return Condition{}, err
	}
	system, code := conditionCode(r.Code)
	if code == "" {
		return Condition{}, ErrMissingCode
	}
	ver, err := version(r.Meta)
	if err != nil {
		return Condition{}, err
	}
	cd := Condition{ID: id, Version: ver, PatientID: pid, System: system, Code: code}
	var ts *string
	switch {
	case r.OnsetDateTime != nil:
		ts = r.OnsetDateTime
	case r.RecordedDate != nil:
		ts = r.RecordedDate
	}
	if ts != nil && *ts != "" {
		t, err := parseTime(*ts)
		if err != nil {
			return Condition{}, fmt.Errorf("onset: %w", err)
		}
		if err := chk.notFuture(t, *ts); err != nil {
			return Condition{}, fmt.Errorf("onset: %w", err)
		}
		cd.Onset = t
	}
	return cd, nil
}

// version reads meta.versionId and meta.lastUpdated.
func version(m *rawMeta) (Version, error) {
	if m == nil {
		return Version{}, nil
	}
	v := Version{ID: m.VersionID}
	if m.LastUpdated != nil && *m.LastUpdated != "" {
		t, err := parseTime(*m.LastUpdated)
		if err != nil {
			return Version{}, fmt.Errorf("meta.lastUpdated: %w", err)
		}
		v.Updated = t
	}
	return v, nil
}

// resourceID returns the resource's id, or fallback when it has none, and
// checks it against FHIR's id syntax.
func resourceID(id, fallback string) (string, error) {
	if id == "" {
		id = fallback
	}
	if id == "" {
		return "", ErrMissingID
	}
	if !validID(id) {
		return "", ErrBadID
	}
	return id, nil
}

// validID reports whether s matches FHIR's id type: [A-Za-z0-9\-\.]{1,64}.
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// subjectPatient extracts the Patient id from a subject reference:
// "Patient/<id>", an absolute URL ending in "Patient/<id>" (optionally with
// "/_history/<v>"), or "urn:uuid:<id>" (Bulk Data exports and Bundles).
func subjectPatient(ref *rawReference) (string, error) {
	if ref == nil || strings.TrimSpace(ref.Reference) == "" {
		return "", ErrMissingSubject
	}
	s := strings.TrimSpace(ref.Reference)
	var id string
	if rest, ok := strings.CutPrefix(s, "urn:uuid:"); ok {
		id = rest
	} else {
		if i := strings.Index(s, "/_history/"); i >= 0 {
			s = s[:i]
		}
		parts := strings.Split(s, "/")
		if len(parts) < 2 || parts[len(parts)-2] != "Patient" {
			return "", ErrNonPatientSubject
		}
		id = parts[len(parts)-1]
	}
	if !validID(id) {
		return "", fmt.Errorf("subject: %w", ErrBadID)
	}
	return id, nil
}

// loinc returns the first LOINC code of c, or "".
func loinc(c *rawConcept) string {
	if c == nil {
		return ""
	}
	for _, cd := range c.Coding {
		if normSystem(cd.System) == SystemLOINC {
			if code := strings.TrimSpace(cd.Code); code != "" {
				return code
			}
		}
	}
	return ""
}

// conditionCode picks the first SNOMED CT coding, else the first ICD-10 or
// ICD-10-CM coding, else the first coding with a code.
func conditionCode(c *rawConcept) (system, code string) {
	if c == nil {
		return "", ""
	}
	pick := func(match func(string) bool) (string, string, bool) {
		for _, cd := range c.Coding {
			sys, code := normSystem(cd.System), strings.TrimSpace(cd.Code)
			if code != "" && match(sys) {
				return sys, code, true
			}
		}
		return "", "", false
	}
	if s, k, ok := pick(func(s string) bool { return s == SystemSNOMED }); ok {
		return s, k
	}
	if s, k, ok := pick(func(s string) bool { return s == SystemICD10 || s == SystemICD10CM }); ok {
		return s, k
	}
	s, k, _ := pick(func(string) bool { return true })
	return s, k
}

func normSystem(s string) string {
	return strings.TrimSuffix(strings.TrimSpace(s), "/")
}

// quantity reads a Quantity's value. ok is false when there is no value.
func quantity(q *rawQuantity) (v float64, ok bool, err error) {
	if q == nil {
		return 0, false, nil
	}
	raw := bytes.TrimSpace(q.Value)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, false, nil
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, false, ErrBadValue // a string, bool, object or array
	}
	v, err = strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, ErrBadValue
	}
	return v, true, nil
}

// parseTime parses a FHIR date, dateTime or instant: YYYY, YYYY-MM,
// YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm). A dateTime without a
// zone is read as UTC. The result is in UTC.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	var layouts []string
	switch {
	case len(s) == 4:
		layouts = []string{"2006"}
	case len(s) == 7:
		layouts = []string{"2006-01"}
	case len(s) == 10:
		layouts = []string{"2006-01-02"}
	case len(s) > 10 && s[10] == 'T':
		layouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999"}
	}
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			// Years before minYear are no clinical date (and year 1 is
			// the zero time, which reads as "not set").
			if t.UTC().Year() < minYear {
				return time.Time{}, ErrBadTime
			}
			return t.UTC(), nil
		}
	}
	return time.Time{}, ErrBadTime
}

// minYear is the earliest year a clinical date may have.
const minYear = 1800
