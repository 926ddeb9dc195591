// Package features turns a site's records into the feature matrix a job's
// FeatureSpec asks for: one row per eligible patient (the spec's cohort, as
// of each patient's index time), one column per Feature (age, sex, windowed
// aggregates of LOINC-coded observations, condition flags), and a binary
// label (a condition, within a horizon or ever; in-hospital death; or an
// imported label observation). It also computes the per-feature counts,
// sums and sums of squares that federated normalization aggregates across
// sites: aggregates only, never rows.
package features

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/protocol/featurespec"
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

// ValidateSpec checks that spec can be built (see featurespec.Validate).
// It refuses, among others, identifying fields and free text, which the
// wire schema cannot even express.
func ValidateSpec(spec *pb.FeatureSpec) error {
	if err := featurespec.Validate(spec); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
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

// Build computes the dataset for spec: one row per eligible patient (see
// Eligible), sorted by key (Patient.ID, else the observations' PatientID).
// Each column is (raw - center) / scale, where a missing raw value is
// replaced by the feature's fill (missing: fill), by its center (missing:
// mean; under federated normalization the center is the federated mean), or
// drops the patient (missing: drop). Under federated normalization the spec
// must already carry the computed centers and scales.
func Build(spec *pb.FeatureSpec, patients []fhir.PatientData) (*Dataset, error) {
	if err := ValidateSpec(spec); err != nil {
		return nil, err
	}
	feats := spec.GetFeatures()
	for _, f := range feats {
		if f.GetScale() == 0 {
			return nil, fmt.Errorf("%w: feature %s has no scale yet (federated normalization runs before training)", ErrInvalidSpec, f.GetName())
		}
	}
	rows, err := eligibleRows(spec, patients)
	if err != nil {
		return nil, err
	}
	ds := &Dataset{Cols: len(feats)}
	raw := make([]float64, len(feats))
	have := make([]bool, len(feats))
rowLoop:
	for _, rw := range rows {
		rawValues(feats, rw.pd, rw.index, raw, have)
		for c, f := range feats {
			if have[c] {
				continue
			}
			switch f.GetMissing() {
			case pb.MissingPolicy_MISSING_POLICY_DROP:
				continue rowLoop
			case pb.MissingPolicy_MISSING_POLICY_MEAN:
				raw[c] = f.GetCenter()
			default:
				raw[c] = f.GetFill()
			}
		}
		for c, f := range feats {
			v := (raw[c] - f.GetCenter()) / f.GetScale()
			v32 := float32(v)
			if !finite(v) || math.IsInf(float64(v32), 0) {
				return nil, fmt.Errorf("row %d feature %q: %w", ds.Rows, f.GetName(), ErrNonFinite)
			}
			ds.X = append(ds.X, v32)
		}
		ds.Y = append(ds.Y, labelOf(spec.GetLabel(), rw.pd, rw.index))
		ds.Keys = append(ds.Keys, rw.key)
		ds.Rows++
	}
	return ds, nil
}

// FeatureStats are one feature's aggregates over the eligible cohort: the
// count, sum and sum of squares of its present raw values, and, when asked
// for, its histogram's bin counts.
type FeatureStats struct {
	Count      uint64
	Sum, SumSq float64
	Bins       []uint64
}

// Stats computes, for federated normalization, each feature's count, sum
// and sum of squares of raw values over the eligible patients, and the
// number of eligible patients. Nothing per patient leaves this function.
func Stats(spec *pb.FeatureSpec, patients []fhir.PatientData) (cohort int, stats []FeatureStats, err error) {
	return Histograms(spec, patients, nil, false)
}

// Histograms is Stats with, for each feature i with len(edges[i]) >= 2, the
// counts of its values in the bins [edges[k], edges[k+1]) (the last bin
// closed; values outside the edges are not counted unless clip is set).
// With clip every value is first clipped into [first edge, last edge],
// for the count, sum and sum of squares as well.
func Histograms(spec *pb.FeatureSpec, patients []fhir.PatientData, edges [][]float64, clip bool) (cohort int, stats []FeatureStats, err error) {
	if err := ValidateSpec(spec); err != nil {
		return 0, nil, err
	}
	rows, err := eligibleRows(spec, patients)
	if err != nil {
		return 0, nil, err
	}
	feats := spec.GetFeatures()
	stats = make([]FeatureStats, len(feats))
	for c := range feats {
		if c < len(edges) && len(edges[c]) >= 2 {
			stats[c].Bins = make([]uint64, len(edges[c])-1)
		}
	}
	raw := make([]float64, len(feats))
	have := make([]bool, len(feats))
	for _, rw := range rows {
		rawValues(feats, rw.pd, rw.index, raw, have)
		for c := range feats {
			if !have[c] {
				continue
			}
			v := raw[c]
			var e []float64
			if stats[c].Bins != nil {
				e = edges[c]
				if clip {
					v = min(max(v, e[0]), e[len(e)-1])
				}
			}
			stats[c].Count++
			stats[c].Sum += v
			stats[c].SumSq += v * v
			if k := binOf(e, v); k >= 0 {
				stats[c].Bins[k]++
			}
		}
	}
	return len(rows), stats, nil
}

// binOf is the bin of v among increasing edges, or -1 outside them (or
// with no edges).
func binOf(edges []float64, v float64) int {
	n := len(edges)
	if n < 2 || !(v >= edges[0] && v <= edges[n-1]) {
		return -1
	}
	if v == edges[n-1] {
		return n - 2
	}
	k, _ := slices.BinarySearch(edges, v) // first edge >= v
	if k < n && edges[k] == v {
		return k
	}
	return k - 1
}

type row struct {
	key   string
	pd    *fhir.PatientData
	index time.Time
}

// eligibleRows returns the eligible patients with their index times,
// sorted by key.
func eligibleRows(spec *pb.FeatureSpec, patients []fhir.PatientData) ([]row, error) {
	rows := make([]row, 0, len(patients))
	seen := map[string]int{}
	for i := range patients {
		pd := &patients[i]
		index, ok := Eligible(spec, pd)
		if !ok {
			continue
		}
		key := pd.Patient.ID
		if key == "" && len(pd.Observations) > 0 {
			key = pd.Observations[0].PatientID
		}
		if key == "" {
			return nil, fmt.Errorf("patient %d: %w", i, ErrMissingKey)
		}
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("patients %d and %d: %w", j, i, ErrDuplicateKey)
		}
		seen[key] = i
		rows = append(rows, row{key: key, pd: pd, index: index})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].key < rows[j].key })
	return rows, nil
}

// Eligible returns the patient's index time and whether the patient is in
// the spec's cohort. The index time is the time of the last observation
// (default), or the start of the first encounter (of the index's encounter
// class, when set) plus the offset; a patient without one is not eligible.
// The cohort then requires, when set: an age within [min_age, max_age] at
// the index time, an encounter of the cohort's class, one of the required
// conditions with onset at or before the index, and at least
// min_observations observations at or before the index.
func Eligible(spec *pb.FeatureSpec, pd *fhir.PatientData) (time.Time, bool) {
	var index time.Time
	ix := spec.GetIndex()
	switch ix.GetKind() {
	case pb.IndexKind_INDEX_KIND_ENCOUNTER_START:
		found := false
		for _, e := range pd.Encounters {
			if ix.GetEncounterClass() != "" && e.Class != ix.GetEncounterClass() {
				continue
			}
			if !found || e.Start.Before(index) {
				index, found = e.Start, true
			}
		}
		if !found {
			return time.Time{}, false
		}
		index = index.Add(time.Duration(ix.GetOffsetSeconds()) * time.Second)
	default:
		if len(pd.Observations) == 0 {
			return time.Time{}, false
		}
		index = lastObservation(pd.Observations)
	}
	c := spec.GetCohort()
	if c == nil {
		return index, true
	}
	if c.GetMinAge() > 0 || c.GetMaxAge() > 0 {
		age, ok := ageAt(pd.Patient.BirthDate, index)
		if !ok || age < c.GetMinAge() || (c.GetMaxAge() > 0 && age > c.GetMaxAge()) {
			return time.Time{}, false
		}
	}
	if cls := c.GetEncounterClass(); cls != "" && !slices.ContainsFunc(pd.Encounters, func(e fhir.Encounter) bool { return e.Class == cls }) {
		return time.Time{}, false
	}
	if req := c.GetRequireConditions(); len(req) > 0 && !hasCondition(pd.Conditions, req, index) {
		return time.Time{}, false
	}
	if n := c.GetMinObservations(); n > 0 {
		k := 0
		for _, o := range pd.Observations {
			if !o.Time.After(index) {
				k++
			}
		}
		if k < int(n) {
			return time.Time{}, false
		}
	}
	return index, true
}

func lastObservation(obs []fhir.Observation) time.Time {
	var t time.Time
	for i, o := range obs {
		if i == 0 || o.Time.After(t) {
			t = o.Time
		}
	}
	return t
}

func ageAt(birth, index time.Time) (float64, bool) {
	if birth.IsZero() || birth.After(index) {
		return 0, false
	}
	secs := float64(index.Unix()-birth.Unix()) + float64(index.Nanosecond()-birth.Nanosecond())/1e9
	return secs / yearSeconds, true
}

// hasCondition reports a condition with one of codes and an onset at or
// before index (an unknown onset counts).
func hasCondition(conds []fhir.Condition, codes []string, index time.Time) bool {
	for _, c := range conds {
		if slices.Contains(codes, c.Code) && (c.Onset.IsZero() || !c.Onset.After(index)) {
			return true
		}
	}
	return false
}

// rawValues fills raw and have with each feature's raw value for one
// patient as of index.
func rawValues(feats []*pb.Feature, pd *fhir.PatientData, index time.Time, raw []float64, have []bool) {
	for c, f := range feats {
		raw[c], have[c] = rawValue(f, pd, index)
	}
}

// rawValue computes a feature's raw value; ok is false when it is missing.
// Observations count when they have the feature's LOINC code and a time in
// (index - window, index] (or at or before index with no window).
func rawValue(f *pb.Feature, pd *fhir.PatientData, index time.Time) (float64, bool) {
	switch f.GetKind() {
	case pb.FeatureKind_FEATURE_KIND_AGE:
		return ageAt(pd.Patient.BirthDate, index)
	case pb.FeatureKind_FEATURE_KIND_SEX_FEMALE:
		if pd.Patient.Gender == "female" {
			return 1, true
		}
		return 0, true
	case pb.FeatureKind_FEATURE_KIND_CONDITION_FLAG:
		if hasCondition(pd.Conditions, f.GetConditionCodes(), index) {
			return 1, true
		}
		return 0, true
	}
	var from time.Time
	if w := f.GetWindowSeconds(); w > 0 {
		from = index.Add(-time.Duration(w) * time.Second)
	}
	in := func(o fhir.Observation) bool {
		return o.Code == f.GetLoinc() && !o.Time.After(index) && (from.IsZero() || o.Time.After(from))
	}
	switch f.GetKind() {
	case pb.FeatureKind_FEATURE_KIND_OBS_LAST:
		var last fhir.Observation
		found := false
		for _, o := range pd.Observations {
			// The latest; among equal times the greatest id, so the
			// choice does not depend on input order.
			if in(o) && (!found || o.Time.After(last.Time) || (o.Time.Equal(last.Time) && o.ID > last.ID)) {
				last, found = o, true
			}
		}
		return last.Value, found
	case pb.FeatureKind_FEATURE_KIND_OBS_MEAN, pb.FeatureKind_FEATURE_KIND_OBS_MIN, pb.FeatureKind_FEATURE_KIND_OBS_MAX,
		pb.FeatureKind_FEATURE_KIND_OBS_COUNT:
		sum, n := 0.0, 0
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, o := range pd.Observations {
			if in(o) {
				sum += o.Value
				n++
				lo, hi = min(lo, o.Value), max(hi, o.Value)
			}
		}
		switch {
		case f.GetKind() == pb.FeatureKind_FEATURE_KIND_OBS_COUNT:
			return float64(n), true
		case n == 0:
			return 0, false
		case f.GetKind() == pb.FeatureKind_FEATURE_KIND_OBS_MIN:
			return lo, true
		case f.GetKind() == pb.FeatureKind_FEATURE_KIND_OBS_MAX:
			return hi, true
		}
		return sum / float64(n), true
	case pb.FeatureKind_FEATURE_KIND_OBS_SLOPE:
		// Least-squares slope per hour, with times relative to index.
		var n, st, sv, stt, stv float64
		for _, o := range pd.Observations {
			if in(o) {
				t := o.Time.Sub(index).Hours()
				n++
				st += t
				sv += o.Value
				stt += t * t
				stv += t * o.Value
			}
		}
		den := n*stt - st*st
		if n < 2 || den <= 1e-12 {
			return 0, false
		}
		return (n*stv - st*sv) / den, true
	}
	return 0, false
}

// labelOf is the patient's outcome (see pb.LabelKind).
func labelOf(l *pb.Label, pd *fhir.PatientData, index time.Time) float32 {
	switch l.GetKind() {
	case pb.LabelKind_LABEL_KIND_DECEASED:
		if pd.Patient.Deceased {
			return 1
		}
		for _, e := range pd.Encounters {
			if e.Discharge == "exp" {
				return 1
			}
		}
		return 0
	case pb.LabelKind_LABEL_KIND_OBSERVATION:
		for _, o := range pd.Observations {
			if o.Code == l.GetObservationCode() && o.Value >= l.GetThreshold() {
				return 1
			}
		}
		return 0
	}
	horizon := time.Duration(l.GetHorizonSeconds()) * time.Second
	for _, c := range pd.Conditions {
		if c.Code != l.GetConditionCode() || (l.GetConditionSystem() != "" && c.System != l.GetConditionSystem()) {
			continue
		}
		if horizon == 0 || (c.Onset.After(index) && !c.Onset.After(index.Add(horizon))) {
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
