// Package features turns a site's records into the feature matrix a job's
// FeatureSpec asks for: one row per patient, one column per Feature, and a
// binary label from the patient's conditions.
//
// Each patient's index time is the time of their last observation. Column
// values are (raw - center) / scale, where a missing raw value is replaced
// by the feature's fill before scaling (so fill = center gives 0).
package features

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/protocol/pb"
)

// Sentinel errors.
var (
	// ErrInvalidSpec: the FeatureSpec cannot be built.
	ErrInvalidSpec = errors.New("invalid feature spec")
	// ErrNonFinite: a computed value is NaN or does not fit a float32.
	ErrNonFinite = errors.New("feature value not finite")
	// ErrMissingKey: a patient has no id to key its row by.
	ErrMissingKey = errors.New("patient without id")
	// ErrDuplicateKey: two patients share an id.
	ErrDuplicateKey = errors.New("duplicate patient id")
)

// yearSeconds is the length of a mean Gregorian year in seconds.
const yearSeconds = 365.2425 * 24 * 3600

// ValidateSpec checks that spec can be built: at least one feature, every
// kind known, a LOINC code for observation kinds, finite center and fill, a
// finite non-zero scale, unique non-empty names, and a label code.
func ValidateSpec(spec *pb.FeatureSpec) error {
	if spec == nil {
		return fmt.Errorf("%w: spec is missing", ErrInvalidSpec)
	}
	fs := spec.GetFeatures()
	if len(fs) == 0 {
		return fmt.Errorf("%w: no features", ErrInvalidSpec)
	}
	names := map[string]int{}
	for i, f := range fs {
		if f == nil {
			return fmt.Errorf("%w: feature %d is missing", ErrInvalidSpec, i)
		}
		name := f.GetName()
		if name == "" {
			return fmt.Errorf("%w: feature %d has no name", ErrInvalidSpec, i)
		}
		if j, dup := names[name]; dup {
			return fmt.Errorf("%w: feature %d %q has the same name as feature %d", ErrInvalidSpec, i, name, j)
		}
		names[name] = i
		switch f.GetKind() {
		case pb.FeatureKind_FEATURE_KIND_AGE, pb.FeatureKind_FEATURE_KIND_SEX_FEMALE:
		case pb.FeatureKind_FEATURE_KIND_OBS_LAST, pb.FeatureKind_FEATURE_KIND_OBS_MEAN:
			if f.GetLoinc() == "" {
				return fmt.Errorf("%w: feature %d %q: kind %s needs a loinc code", ErrInvalidSpec, i, name, f.GetKind())
			}
		default:
			return fmt.Errorf("%w: feature %d %q: unknown kind %d", ErrInvalidSpec, i, name, int32(f.GetKind()))
		}
		if s := f.GetScale(); s == 0 || !finite(s) {
			return fmt.Errorf("%w: feature %d %q: scale must be finite and non-zero", ErrInvalidSpec, i, name)
		}
		if !finite(f.GetCenter()) || !finite(f.GetFill()) {
			return fmt.Errorf("%w: feature %d %q: center and fill must be finite", ErrInvalidSpec, i, name)
		}
	}
	if spec.GetLabel() == nil || spec.GetLabel().GetConditionCode() == "" {
		return fmt.Errorf("%w: label condition code is missing", ErrInvalidSpec)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Dataset is a dense feature matrix with labels.
type Dataset struct {
	// X holds Rows x Cols values, row-major.
	X []float32
	// Y holds one label (0 or 1) per row.
	Y []float32
	// Rows and Cols are the matrix dimensions.
	Rows, Cols int
	// Keys holds the patient id (a pseudonym, from the store) of each row.
	Keys []string
}

// Validate checks that the fields agree: len(X) == Rows*Cols and one
// label and one key per row.
func (d *Dataset) Validate() error {
	switch {
	case d == nil:
		return errors.New("dataset is nil")
	case d.Rows < 0 || d.Cols < 0:
		return errors.New("dataset has negative dimensions")
	case len(d.X) != d.Rows*d.Cols || len(d.Y) != d.Rows || len(d.Keys) != d.Rows:
		return fmt.Errorf("dataset has %d values, %d labels, %d keys for %d rows of %d columns", len(d.X), len(d.Y), len(d.Keys), d.Rows, d.Cols)
	}
	return nil
}

// Row returns row i of X (sharing X's memory), or nil when i is out of
// range.
func (d *Dataset) Row(i int) []float32 {
	if d == nil || i < 0 || i >= d.Rows || d.Cols < 0 || (i+1)*d.Cols > len(d.X) {
		return nil
	}
	return d.X[i*d.Cols : (i+1)*d.Cols]
}

// Positives returns the number of rows labelled 1.
func (d *Dataset) Positives() int {
	n := 0
	for _, y := range d.Y {
		if y == 1 {
			n++
		}
	}
	return n
}

// Build computes the dataset for spec: one row per patient with at least
// one observation, sorted by key (Patient.ID, else the observations'
// PatientID). For each patient the index time is the time of their last
// observation and:
//
//   - AGE is fractional years from BirthDate to the index time (fill when
//     the birth date is missing or after the index time);
//   - SEX_FEMALE is 1 when Gender is "female", else 0;
//   - OBS_LAST / OBS_MEAN are the last value / mean of the observations with
//     the feature's LOINC code at or before the index time (fill when none).
//
// Every value is then (raw - center) / scale. The label is 1 when any
// condition has the label's code (and its system, when the label sets one).
func Build(spec *pb.FeatureSpec, patients []fhir.PatientData) (*Dataset, error) {
	if err := ValidateSpec(spec); err != nil {
		return nil, err
	}
	feats := spec.GetFeatures()
	label := spec.GetLabel()

	type row struct {
		key string
		pd  *fhir.PatientData
	}
	rows := make([]row, 0, len(patients))
	seen := map[string]int{}
	for i := range patients {
		pd := &patients[i]
		if len(pd.Observations) == 0 {
			continue
		}
		key := pd.Patient.ID
		if key == "" {
			key = pd.Observations[0].PatientID
		}
		if key == "" {
			return nil, fmt.Errorf("patient %d: %w", i, ErrMissingKey)
		}
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("patients %d and %d: %w", j, i, ErrDuplicateKey)
		}
		seen[key] = i
		rows = append(rows, row{key: key, pd: pd})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].key < rows[j].key })

	ds := &Dataset{
		X:    make([]float32, 0, len(rows)*len(feats)),
		Y:    make([]float32, 0, len(rows)),
		Rows: len(rows),
		Cols: len(feats),
		Keys: make([]string, 0, len(rows)),
	}
	for r, rw := range rows {
		index := indexTime(rw.pd.Observations)
		for _, f := range feats {
			raw, ok := rawValue(f, rw.pd, index)
			if !ok {
				raw = f.GetFill()
			}
			v := (raw - f.GetCenter()) / f.GetScale()
			v32 := float32(v)
			if !finite(v) || math.IsInf(float64(v32), 0) {
				return nil, fmt.Errorf("row %d feature %q: %w", r, f.GetName(), ErrNonFinite)
			}
			ds.X = append(ds.X, v32)
		}
		ds.Y = append(ds.Y, labelOf(label, rw.pd.Conditions))
		ds.Keys = append(ds.Keys, rw.key)
	}
	return ds, nil
}

// indexTime is the time of the last observation.
func indexTime(obs []fhir.Observation) time.Time {
	var t time.Time
	for i, o := range obs {
		if i == 0 || o.Time.After(t) {
			t = o.Time
		}
	}
	return t
}

// rawValue computes a feature's raw value; ok is false when it is missing.
func rawValue(f *pb.Feature, pd *fhir.PatientData, index time.Time) (float64, bool) {
	switch f.GetKind() {
	case pb.FeatureKind_FEATURE_KIND_AGE:
		b := pd.Patient.BirthDate
		if b.IsZero() || b.After(index) {
			return 0, false
		}
		secs := float64(index.Unix()-b.Unix()) + float64(index.Nanosecond()-b.Nanosecond())/1e9
		return secs / yearSeconds, true
	case pb.FeatureKind_FEATURE_KIND_SEX_FEMALE:
		if pd.Patient.Gender == "female" {
			return 1, true
		}
		return 0, true
	case pb.FeatureKind_FEATURE_KIND_OBS_LAST:
		var last fhir.Observation
		found := false
		for _, o := range pd.Observations {
			if o.Code != f.GetLoinc() || o.Time.After(index) {
				continue
			}
			// The latest; among equal times the greatest id, so the
			// choice does not depend on input order.
			if !found || o.Time.After(last.Time) || (o.Time.Equal(last.Time) && o.ID > last.ID) {
				last, found = o, true
			}
		}
		return last.Value, found
	case pb.FeatureKind_FEATURE_KIND_OBS_MEAN:
		sum, n := 0.0, 0
		for _, o := range pd.Observations {
			if o.Code == f.GetLoinc() && !o.Time.After(index) {
				sum += o.Value
				n++
			}
		}
		if n == 0 {
			return 0, false
		}
		return sum / float64(n), true
	}
	return 0, false
}

func labelOf(l *pb.Label, conds []fhir.Condition) float32 {
	for _, c := range conds {
		if c.Code == l.GetConditionCode() && (l.GetConditionSystem() == "" || c.System == l.GetConditionSystem()) {
			return 1
		}
	}
	return 0
}

// Split divides ds into training and validation rows. A row goes to
// validation when a hash of salt and its key, read as a number in [0, 1), is
// below valFraction (clamped to [0, 1]); so a patient lands in the same split
// every time for the same salt, whatever else is in the dataset. Row order is
// kept. A nil or inconsistent ds (see Dataset.Validate) gives two empty
// datasets.
func Split(ds *Dataset, valFraction float64, salt string) (train, val *Dataset) {
	if ds.Validate() != nil {
		return &Dataset{}, &Dataset{}
	}
	switch {
	case math.IsNaN(valFraction) || valFraction < 0:
		valFraction = 0
	case valFraction > 1:
		valFraction = 1
	}
	train, val = &Dataset{Cols: ds.Cols}, &Dataset{Cols: ds.Cols}
	for i := 0; i < ds.Rows; i++ {
		dst := train
		if splitPoint(salt, ds.Keys[i]) < valFraction {
			dst = val
		}
		dst.X = append(dst.X, ds.Row(i)...)
		dst.Y = append(dst.Y, ds.Y[i])
		dst.Keys = append(dst.Keys, ds.Keys[i])
		dst.Rows++
	}
	return train, val
}

// splitPoint maps (salt, key) to a uniform number in [0, 1).
func splitPoint(salt, key string) float64 {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(salt)))
	h.Write(n[:]) // length prefix: ("ab","c") and ("a","bc") differ
	h.Write([]byte(salt))
	h.Write([]byte(key))
	sum := h.Sum(nil)
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}
