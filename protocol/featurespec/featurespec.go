// Package featurespec is the declarative feature spec a job carries: the
// form operators write (YAML or JSON), its validation, and its conversion to
// and from the wire form (pb.FeatureSpec). The coordinator validates a job's
// spec with it before accepting the job; every agent validates it again
// before touching its data.
//
// A spec can only name what the schema offers: coded observations (LOINC),
// coded conditions, age, sex, encounters and deaths. It cannot name a
// patient's name, address, identifiers, contact details, birth date or any
// free text; a spec that asks for one is refused with ErrIdentifyingField.
//
// Example:
//
//	index: {at: encounter_start, offset: 48h, encounter_class: ICU}
//	cohort: {min_age: 16}
//	label: {kind: deceased}
//	normalization: federated
//	features:
//	  - {name: age, kind: age}
//	  - {name: hr_mean, kind: mean, loinc: 8867-4, window: 48h, missing: mean}
//	  - {name: gcs_min, kind: min, loinc: 9269-2, window: 48h, missing: mean}
//	  - {name: diabetes, kind: condition, codes: ["44054006"]}
package featurespec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/protocol/pb"
	"sigs.k8s.io/yaml"
)

var (
	// ErrInvalid: the spec is malformed or inconsistent.
	ErrInvalid = errors.New("invalid feature spec")
	// ErrIdentifyingField: the spec asks for an identifying field or free
	// text, which never leaves (or is never even read at) a site.
	ErrIdentifyingField = errors.New("feature spec asks for an identifying field")
)

// Spec is the operator-facing form of a feature spec.
type Spec struct {
	// Cohort selects the eligible patients; empty = all patients with at
	// least one observation.
	Cohort *Cohort `json:"cohort,omitempty"`
	// Index says as of when features are computed; default: each
	// patient's last observation.
	Index *Index `json:"index,omitempty"`
	// Features are the columns, in order.
	Features []Feature `json:"features"`
	// Label is the outcome to predict.
	Label Label `json:"label"`
	// Normalization is "given" (center and scale as written; the default)
	// or "federated" (computed from the sites' counts, sums and sums of
	// squares before training).
	Normalization string `json:"normalization,omitempty"`
}

// Cohort selects the eligible patients.
type Cohort struct {
	MinAge            float64  `json:"min_age,omitempty"`
	MaxAge            float64  `json:"max_age,omitempty"`
	EncounterClass    string   `json:"encounter_class,omitempty"`
	RequireConditions []string `json:"require_conditions,omitempty"`
	MinObservations   uint32   `json:"min_observations,omitempty"`
}

// Index is each patient's index time.
type Index struct {
	// At is "last_observation" (default) or "encounter_start".
	At string `json:"at,omitempty"`
	// Offset is added to the encounter start.
	Offset Duration `json:"offset,omitempty"`
	// EncounterClass picks the first encounter of this class ("" = any).
	EncounterClass string `json:"encounter_class,omitempty"`
}

// Feature is one column.
type Feature struct {
	// Name is the column's name: letters, digits, '_', '.', '-'.
	Name string `json:"name"`
	// Kind is age, sex_female, last, mean, min, max, count, slope or
	// condition.
	Kind string `json:"kind"`
	// Field is accepted only as "age" or "sex" (another way to write those
	// kinds); any other patient field is identifying and refused.
	Field string `json:"field,omitempty"`
	// LOINC is the observation code for last/mean/min/max/count/slope.
	LOINC string `json:"loinc,omitempty"`
	// Window is the look-back before the index time (0 = all history).
	Window Duration `json:"window,omitempty"`
	// Codes are the condition codes for kind condition.
	Codes []string `json:"codes,omitempty"`
	// Missing is fill (default), mean or drop.
	Missing string `json:"missing,omitempty"`
	// Fill replaces a missing raw value under missing: fill.
	Fill float64 `json:"fill,omitempty"`
	// Center and Scale normalize: (raw - center) / scale. Required under
	// given normalization; computed under federated.
	Center float64 `json:"center,omitempty"`
	Scale  float64 `json:"scale,omitempty"`
}

// Label is the outcome.
type Label struct {
	// Kind is condition (default), deceased or observation.
	Kind string `json:"kind,omitempty"`
	// System and Code name the condition for kind condition.
	System string `json:"system,omitempty"`
	Code   string `json:"code,omitempty"`
	// Horizon limits kind condition to onsets within this time after the
	// index (0 = any time).
	Horizon Duration `json:"horizon,omitempty"`
	// ObservationCode and Threshold define kind observation: 1 when the
	// patient has that observation with a value >= Threshold.
	ObservationCode string  `json:"observation_code,omitempty"`
	Threshold       float64 `json:"threshold,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("48h").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"48h\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

var (
	kinds = map[string]pb.FeatureKind{
		"age": pb.FeatureKind_FEATURE_KIND_AGE, "sex_female": pb.FeatureKind_FEATURE_KIND_SEX_FEMALE,
		"last": pb.FeatureKind_FEATURE_KIND_OBS_LAST, "mean": pb.FeatureKind_FEATURE_KIND_OBS_MEAN,
		"min": pb.FeatureKind_FEATURE_KIND_OBS_MIN, "max": pb.FeatureKind_FEATURE_KIND_OBS_MAX,
		"count": pb.FeatureKind_FEATURE_KIND_OBS_COUNT, "slope": pb.FeatureKind_FEATURE_KIND_OBS_SLOPE,
		"condition": pb.FeatureKind_FEATURE_KIND_CONDITION_FLAG,
		// Older spellings.
		"obs_last": pb.FeatureKind_FEATURE_KIND_OBS_LAST, "obs_mean": pb.FeatureKind_FEATURE_KIND_OBS_MEAN,
	}
	missing = map[string]pb.MissingPolicy{"": pb.MissingPolicy_MISSING_POLICY_FILL, "fill": pb.MissingPolicy_MISSING_POLICY_FILL,
		"mean": pb.MissingPolicy_MISSING_POLICY_MEAN, "drop": pb.MissingPolicy_MISSING_POLICY_DROP}
	labels = map[string]pb.LabelKind{"": pb.LabelKind_LABEL_KIND_CONDITION, "condition": pb.LabelKind_LABEL_KIND_CONDITION,
		"deceased": pb.LabelKind_LABEL_KIND_DECEASED, "in_hospital_death": pb.LabelKind_LABEL_KIND_DECEASED,
		"observation": pb.LabelKind_LABEL_KIND_OBSERVATION}
	indexes = map[string]pb.IndexKind{"": pb.IndexKind_INDEX_KIND_LAST_OBSERVATION,
		"last_observation": pb.IndexKind_INDEX_KIND_LAST_OBSERVATION, "encounter_start": pb.IndexKind_INDEX_KIND_ENCOUNTER_START}
	norms = map[string]pb.Normalization{"": pb.Normalization_NORMALIZATION_GIVEN, "given": pb.Normalization_NORMALIZATION_GIVEN,
		"federated": pb.Normalization_NORMALIZATION_FEDERATED}

	// identifying lists what a spec may never ask for, with the words
	// operators might use for it.
	identifying = map[string]string{
		"name": "name", "given": "name", "family": "name", "address": "address", "city": "address",
		"postal_code": "address", "zip": "address", "identifier": "identifier", "mrn": "identifier",
		"ssn": "identifier", "id": "identifier", "telecom": "contact details", "phone": "contact details",
		"email": "contact details", "birth_date": "birth date", "birthdate": "birth date", "dob": "birth date",
		"photo": "photo", "text": "free text", "note": "free text", "free_text": "free text",
		"narrative": "free text", "comment": "free text", "description": "free text",
	}

	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	loincRE = regexp.MustCompile(`^[0-9]{1,7}-[0-9]$`)
	codeRE  = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
)

// Parse reads a spec written in YAML or JSON (unknown fields are errors),
// refuses identifying fields, converts it to the wire form and validates
// it.
func Parse(b []byte) (*pb.FeatureSpec, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return s.Wire()
}

// Wire converts s to the wire form and validates it.
func (s Spec) Wire() (*pb.FeatureSpec, error) {
	out := &pb.FeatureSpec{}
	var ok bool
	if out.Normalization, ok = norms[strings.ToLower(s.Normalization)]; !ok {
		return nil, fmt.Errorf("%w: normalization %q: use given or federated", ErrInvalid, s.Normalization)
	}
	if c := s.Cohort; c != nil {
		out.Cohort = &pb.Cohort{MinAge: c.MinAge, MaxAge: c.MaxAge, EncounterClass: c.EncounterClass,
			RequireConditions: c.RequireConditions, MinObservations: c.MinObservations}
	}
	if ix := s.Index; ix != nil {
		k, ok := indexes[strings.ToLower(ix.At)]
		if !ok {
			return nil, fmt.Errorf("%w: index.at %q: use last_observation or encounter_start", ErrInvalid, ix.At)
		}
		out.Index = &pb.IndexTime{Kind: k, OffsetSeconds: uint64(time.Duration(ix.Offset) / time.Second), EncounterClass: ix.EncounterClass}
	}
	for i, f := range s.Features {
		kindWord := strings.ToLower(strings.TrimSpace(f.Kind))
		field := strings.ToLower(strings.TrimSpace(f.Field))
		if what, bad := identifying[kindWord]; bad {
			return nil, fmt.Errorf("%w: feature %d (%s) asks for the patient's %s", ErrIdentifyingField, i, f.Name, what)
		}
		switch field {
		case "":
		case "age", "sex", "gender":
			if kindWord != "" && kindWord != "field" {
				return nil, fmt.Errorf("%w: feature %d (%s) has both kind and field", ErrInvalid, i, f.Name)
			}
			kindWord = map[string]string{"age": "age", "sex": "sex_female", "gender": "sex_female"}[field]
		default:
			what := identifying[field]
			if what == "" {
				what = "field " + field
			}
			return nil, fmt.Errorf("%w: feature %d (%s) asks for the patient's %s; only age and sex may be used", ErrIdentifyingField, i, f.Name, what)
		}
		k, ok := kinds[kindWord]
		if !ok {
			return nil, fmt.Errorf("%w: feature %d (%s): unknown kind %q (use age, sex_female, last, mean, min, max, count, slope or condition)", ErrInvalid, i, f.Name, f.Kind)
		}
		mp, ok := missing[strings.ToLower(f.Missing)]
		if !ok {
			return nil, fmt.Errorf("%w: feature %d (%s): missing %q: use fill, mean or drop", ErrInvalid, i, f.Name, f.Missing)
		}
		out.Features = append(out.Features, &pb.Feature{Name: f.Name, Kind: k, Loinc: f.LOINC,
			Center: f.Center, Scale: f.Scale, Fill: f.Fill, WindowSeconds: uint64(time.Duration(f.Window) / time.Second),
			Missing: mp, ConditionCodes: f.Codes})
	}
	lk, ok := labels[strings.ToLower(s.Label.Kind)]
	if !ok {
		return nil, fmt.Errorf("%w: label.kind %q: use condition, deceased or observation", ErrInvalid, s.Label.Kind)
	}
	out.Label = &pb.Label{Kind: lk, ConditionSystem: s.Label.System, ConditionCode: s.Label.Code,
		HorizonSeconds:  uint64(time.Duration(s.Label.Horizon) / time.Second),
		ObservationCode: s.Label.ObservationCode, Threshold: s.Label.Threshold}
	if err := Validate(out); err != nil {
		return nil, err
	}
	return out, nil
}

// FromWire converts a wire spec back to the operator form (the inverse of
// Wire for every valid spec).
func FromWire(w *pb.FeatureSpec) Spec {
	s := Spec{Normalization: word(norms, w.GetNormalization())}
	if c := w.GetCohort(); c != nil {
		s.Cohort = &Cohort{MinAge: c.GetMinAge(), MaxAge: c.GetMaxAge(), EncounterClass: c.GetEncounterClass(),
			RequireConditions: c.GetRequireConditions(), MinObservations: c.GetMinObservations()}
	}
	if ix := w.GetIndex(); ix != nil {
		s.Index = &Index{At: word(indexes, ix.GetKind()), Offset: Duration(time.Duration(ix.GetOffsetSeconds()) * time.Second),
			EncounterClass: ix.GetEncounterClass()}
	}
	for _, f := range w.GetFeatures() {
		s.Features = append(s.Features, Feature{Name: f.GetName(), Kind: word(kinds, f.GetKind()), LOINC: f.GetLoinc(),
			Window: Duration(time.Duration(f.GetWindowSeconds()) * time.Second), Codes: f.GetConditionCodes(),
			Missing: word(missing, f.GetMissing()), Fill: f.GetFill(), Center: f.GetCenter(), Scale: f.GetScale()})
	}
	l := w.GetLabel()
	s.Label = Label{Kind: word(labels, l.GetKind()), System: l.GetConditionSystem(), Code: l.GetConditionCode(),
		Horizon: Duration(time.Duration(l.GetHorizonSeconds()) * time.Second), ObservationCode: l.GetObservationCode(),
		Threshold: l.GetThreshold()}
	return s
}

// word returns the canonical (first, shortest non-empty) word for v.
func word[V comparable](m map[string]V, v V) string {
	best := ""
	for k, x := range m {
		if x == v && k != "" && !strings.HasPrefix(k, "obs_") && k != "in_hospital_death" && (best == "" || len(k) < len(best) || len(k) == len(best) && k < best) {
			best = k
		}
	}
	return best
}

// maxSeconds is the longest duration, in seconds, a time.Duration holds
// (about 292 years).
const maxSeconds = uint64(math.MaxInt64 / int64(time.Second))

// Validate checks a wire spec: features with unique names, known kinds,
// LOINC codes where needed, condition codes for flags, usable center,
// scale and fill, and a complete label and cohort.
func Validate(s *pb.FeatureSpec) error {
	if s == nil {
		return fmt.Errorf("%w: spec is missing", ErrInvalid)
	}
	// Durations travel as seconds: more than a time.Duration holds would
	// wrap round to a wrong (even negative) window when decoded.
	secs := []uint64{s.GetIndex().GetOffsetSeconds(), s.GetLabel().GetHorizonSeconds()}
	for _, f := range s.GetFeatures() {
		secs = append(secs, f.GetWindowSeconds())
	}
	for _, v := range secs {
		if v > maxSeconds {
			return fmt.Errorf("%w: a duration of %d seconds is longer than %d", ErrInvalid, v, maxSeconds)
		}
	}
	fed := s.GetNormalization() == pb.Normalization_NORMALIZATION_FEDERATED
	if _, ok := pb.Normalization_name[int32(s.GetNormalization())]; !ok {
		return fmt.Errorf("%w: unknown normalization %d", ErrInvalid, s.GetNormalization())
	}
	if len(s.GetFeatures()) == 0 {
		return fmt.Errorf("%w: no features", ErrInvalid)
	}
	seen := map[string]bool{}
	for i, f := range s.GetFeatures() {
		if f == nil {
			return fmt.Errorf("%w: feature %d is missing", ErrInvalid, i)
		}
		name := f.GetName()
		if !nameRE.MatchString(name) {
			return fmt.Errorf("%w: feature %d: name %q: use 1-64 letters, digits, '_', '.' or '-'", ErrInvalid, i, name)
		}
		if seen[name] {
			return fmt.Errorf("%w: feature name %q is used twice", ErrInvalid, name)
		}
		seen[name] = true
		switch k := f.GetKind(); k {
		case pb.FeatureKind_FEATURE_KIND_AGE, pb.FeatureKind_FEATURE_KIND_SEX_FEMALE:
		case pb.FeatureKind_FEATURE_KIND_OBS_LAST, pb.FeatureKind_FEATURE_KIND_OBS_MEAN, pb.FeatureKind_FEATURE_KIND_OBS_MIN,
			pb.FeatureKind_FEATURE_KIND_OBS_MAX, pb.FeatureKind_FEATURE_KIND_OBS_COUNT, pb.FeatureKind_FEATURE_KIND_OBS_SLOPE:
			if !loincRE.MatchString(f.GetLoinc()) {
				return fmt.Errorf("%w: feature %s: kind %s needs a LOINC code like 8867-4, not %q", ErrInvalid, name, word(kinds, k), f.GetLoinc())
			}
		case pb.FeatureKind_FEATURE_KIND_CONDITION_FLAG:
			if len(f.GetConditionCodes()) == 0 {
				return fmt.Errorf("%w: feature %s: kind condition needs codes", ErrInvalid, name)
			}
			for _, c := range f.GetConditionCodes() {
				if !codeRE.MatchString(c) {
					return fmt.Errorf("%w: feature %s: condition code %q is not a code", ErrInvalid, name, c)
				}
			}
		default:
			return fmt.Errorf("%w: feature %s: unknown kind %d", ErrInvalid, name, int32(k))
		}
		if _, ok := pb.MissingPolicy_name[int32(f.GetMissing())]; !ok {
			return fmt.Errorf("%w: feature %s: unknown missing policy %d", ErrInvalid, name, f.GetMissing())
		}
		if !finite(f.GetCenter()) || !finite(f.GetFill()) || !finite(f.GetScale()) {
			return fmt.Errorf("%w: feature %s: center, scale and fill must be finite", ErrInvalid, name)
		}
		if !fed && f.GetScale() == 0 {
			return fmt.Errorf("%w: feature %s: scale must be non-zero (or use normalization: federated)", ErrInvalid, name)
		}
	}
	l := s.GetLabel()
	if l == nil {
		return fmt.Errorf("%w: label is missing", ErrInvalid)
	}
	switch l.GetKind() {
	case pb.LabelKind_LABEL_KIND_CONDITION:
		if !codeRE.MatchString(l.GetConditionCode()) {
			return fmt.Errorf("%w: label: a condition code is required", ErrInvalid)
		}
	case pb.LabelKind_LABEL_KIND_DECEASED:
	case pb.LabelKind_LABEL_KIND_OBSERVATION:
		if !codeRE.MatchString(l.GetObservationCode()) || !finite(l.GetThreshold()) {
			return fmt.Errorf("%w: label: kind observation needs observation_code and a finite threshold", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: label: unknown kind %d", ErrInvalid, l.GetKind())
	}
	if c := s.GetCohort(); c != nil {
		if c.GetMinAge() < 0 || c.GetMaxAge() < 0 || (c.GetMaxAge() > 0 && c.GetMinAge() > c.GetMaxAge()) || !finite(c.GetMinAge()) || !finite(c.GetMaxAge()) {
			return fmt.Errorf("%w: cohort: need 0 <= min_age <= max_age", ErrInvalid)
		}
		for _, code := range c.GetRequireConditions() {
			if !codeRE.MatchString(code) {
				return fmt.Errorf("%w: cohort: condition code %q is not a code", ErrInvalid, code)
			}
		}
	}
	if ix := s.GetIndex(); ix != nil {
		if _, ok := pb.IndexKind_name[int32(ix.GetKind())]; !ok {
			return fmt.Errorf("%w: index: unknown kind %d", ErrInvalid, ix.GetKind())
		}
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
