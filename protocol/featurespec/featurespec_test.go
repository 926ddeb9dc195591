package featurespec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cohort-fl/cohort/protocol/pb"
	"google.golang.org/protobuf/proto"
)

const icuSpec = `
index: {at: encounter_start, offset: 48h, encounter_class: ICU}
cohort: {min_age: 16, encounter_class: ICU}
label: {kind: deceased}
normalization: federated
features:
  - {name: age, kind: age}
  - {name: female, field: sex}
  - {name: hr_mean, kind: mean, loinc: 8867-4, window: 48h, missing: mean}
  - {name: gcs_min, kind: min, loinc: 9269-2, window: 48h, missing: mean}
  - {name: lactate_max, kind: max, loinc: 2524-7, window: 48h, missing: fill, fill: 1.5}
  - {name: urine_n, kind: count, loinc: 9187-6, window: 48h}
  - {name: hr_trend, kind: slope, loinc: 8867-4, window: 24h, missing: drop}
  - {name: diabetes, kind: condition, codes: ["44054006", "E11.9"]}
`

func TestParseICUSpec(t *testing.T) {
	s, err := Parse([]byte(icuSpec))
	if err != nil {
		t.Fatal(err)
	}
	if s.GetIndex().GetKind() != pb.IndexKind_INDEX_KIND_ENCOUNTER_START || s.GetIndex().GetOffsetSeconds() != 48*3600 {
		t.Errorf("index = %v", s.GetIndex())
	}
	if s.GetLabel().GetKind() != pb.LabelKind_LABEL_KIND_DECEASED || s.GetNormalization() != pb.Normalization_NORMALIZATION_FEDERATED {
		t.Errorf("label/normalization = %v %v", s.GetLabel(), s.GetNormalization())
	}
	want := []pb.FeatureKind{pb.FeatureKind_FEATURE_KIND_AGE, pb.FeatureKind_FEATURE_KIND_SEX_FEMALE,
		pb.FeatureKind_FEATURE_KIND_OBS_MEAN, pb.FeatureKind_FEATURE_KIND_OBS_MIN, pb.FeatureKind_FEATURE_KIND_OBS_MAX,
		pb.FeatureKind_FEATURE_KIND_OBS_COUNT, pb.FeatureKind_FEATURE_KIND_OBS_SLOPE, pb.FeatureKind_FEATURE_KIND_CONDITION_FLAG}
	for i, f := range s.GetFeatures() {
		if f.GetKind() != want[i] {
			t.Errorf("feature %d kind = %v, want %v", i, f.GetKind(), want[i])
		}
	}
	if f := s.GetFeatures()[6]; f.GetWindowSeconds() != 24*3600 || f.GetMissing() != pb.MissingPolicy_MISSING_POLICY_DROP {
		t.Errorf("slope feature = %v", f)
	}
}

// The operator form and the wire form convert into each other without loss,
// through JSON as the coordinator's log stores it.
func TestRoundTrip(t *testing.T) {
	for _, src := range []string{icuSpec, `
label: {system: "http://snomed.info/sct", code: "91302008", horizon: 720h}
cohort: {min_age: 18, max_age: 90, require_conditions: ["38341003"], min_observations: 2}
features:
  - {name: hr, kind: last, loinc: 8867-4, center: 80, scale: 15, fill: 75}
  - {name: sbp, kind: obs_mean, loinc: 8480-6, center: 120, scale: 20, fill: 120}
`, `
label: {kind: observation, observation_code: "cohort-label", threshold: 0.5}
features: [{name: n_obs, kind: count, loinc: 8867-4, scale: 1}]
`} {
		w1, err := Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(FromWire(w1))
		if err != nil {
			t.Fatal(err)
		}
		w2, err := Parse(b)
		if err != nil {
			t.Fatalf("re-parse %s: %v", b, err)
		}
		if !proto.Equal(w1, w2) {
			t.Fatalf("round trip changed the spec:\n%v\n%v\n%s", w1, w2, b)
		}
	}
}

func TestIdentifyingFieldsAreRefused(t *testing.T) {
	for name, src := range map[string]string{
		"name as field":      `features: [{name: "n", field: name}]`,
		"address as kind":    `features: [{name: a, kind: address}]`,
		"mrn as field":       `features: [{name: m, field: mrn}]`,
		"birth date":         `features: [{name: b, field: birth_date}]`,
		"free text note":     `features: [{name: t, kind: note}]`,
		"free text":          `features: [{name: t, kind: text}]`,
		"phone":              `features: [{name: p, field: phone}]`,
		"unlisted field":     `features: [{name: p, field: marital_status}]`,
		"identifier as kind": `features: [{name: i, kind: identifier}]`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(src + "\nlabel: {kind: deceased}"))
			if !errors.Is(err, ErrIdentifyingField) {
				t.Fatalf("err = %v, want ErrIdentifyingField", err)
			}
		})
	}
}

func TestInvalidSpecs(t *testing.T) {
	for name, src := range map[string]string{
		"unknown field":           `{features: [{name: a, kind: age, scale: 1}], label: {kind: deceased}, colour: blue}`,
		"no features":             `{features: [], label: {kind: deceased}}`,
		"unknown kind":            `{features: [{name: a, kind: median, loinc: 8867-4, scale: 1}], label: {kind: deceased}}`,
		"bad loinc":               `{features: [{name: a, kind: last, loinc: heart-rate, scale: 1}], label: {kind: deceased}}`,
		"zero scale given":        `{features: [{name: a, kind: last, loinc: 8867-4}], label: {kind: deceased}}`,
		"duplicate names":         `{features: [{name: a, kind: age, scale: 1}, {name: a, kind: age, scale: 1}], label: {kind: deceased}}`,
		"bad name":                `{features: [{name: "<script>", kind: age, scale: 1}], label: {kind: deceased}}`,
		"condition without codes": `{features: [{name: a, kind: condition, scale: 1}], label: {kind: deceased}}`,
		"label without code":      `{features: [{name: a, kind: age, scale: 1}], label: {kind: condition}}`,
		"unknown label":           `{features: [{name: a, kind: age, scale: 1}], label: {kind: readmission}}`,
		"bad missing":             `{features: [{name: a, kind: age, scale: 1, missing: guess}], label: {kind: deceased}}`,
		"ages reversed":           `{features: [{name: a, kind: age, scale: 1}], label: {kind: deceased}, cohort: {min_age: 80, max_age: 18}}`,
		"negative window":         `{features: [{name: a, kind: last, loinc: 8867-4, scale: 1, window: -1h}], label: {kind: deceased}}`,
		"bad index":               `{features: [{name: a, kind: age, scale: 1}], label: {kind: deceased}, index: {at: admission}}`,
		"not yaml":                "features: [\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(src)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestValidateWire(t *testing.T) {
	if err := Validate(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil spec: %v", err)
	}
	s := &pb.FeatureSpec{Features: []*pb.Feature{{Name: "a", Kind: 99, Scale: 1}}, Label: &pb.Label{Kind: pb.LabelKind_LABEL_KIND_DECEASED}}
	if err := Validate(s); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown kind on the wire: %v", err)
	}
}

// TestValidateRefusesDurationsPastTimeDuration: a window, horizon or index
// offset whose seconds a time.Duration can't hold is refused, not wrapped
// round when an agent decodes it.
func TestValidateRefusesDurationsPastTimeDuration(t *testing.T) {
	w, err := Parse([]byte(icuSpec))
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(w); err != nil {
		t.Fatalf("the ICU spec: %v", err)
	}
	for name, set := range map[string]func(s *pb.FeatureSpec, v uint64){
		"window":  func(s *pb.FeatureSpec, v uint64) { s.Features[0].WindowSeconds = v },
		"horizon": func(s *pb.FeatureSpec, v uint64) { s.Label.HorizonSeconds = v },
		"offset": func(s *pb.FeatureSpec, v uint64) {
			if s.Index == nil {
				s.Index = &pb.IndexTime{}
			}
			s.Index.OffsetSeconds = v
		},
	} {
		s := proto.Clone(w).(*pb.FeatureSpec)
		set(s, maxSeconds)
		if err := Validate(s); errors.Is(err, ErrInvalid) && strings.Contains(err.Error(), "seconds") {
			t.Errorf("%s of %d seconds (the most a time.Duration holds) refused: %v", name, maxSeconds, err)
		}
		set(s, maxSeconds+1)
		if err := Validate(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s of %d seconds: %v, want %v", name, maxSeconds+1, err, ErrInvalid)
		}
	}
}
