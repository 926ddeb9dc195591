package coordinator

import (
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"

	"github.com/cohort-fl/cohort/protocol/dp"
	"github.com/cohort-fl/cohort/protocol/featurespec"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/sdc"
	"google.golang.org/protobuf/proto"
)

// Federated analytics: a job of kind "analytics" trains nothing. It runs
// one statistics round in which every site sends, per feature, the count,
// sum and sum of squares of its eligible patients' values and, when the
// spec asks, a histogram's bin counts. Sites zero any feature observed in
// fewer than k patients (train.min_records) and any bin holding fewer than
// k; the leader pools the answers, optionally adds Laplace noise, zeroes
// any pooled cell under k, derives means, standard deviations and
// quantiles, and commits the result, after which the job is done.

// Job kinds.
const (
	// JobKindTrain trains a model over rounds (the default).
	JobKindTrain = "train"
	// JobKindAnalytics computes federated descriptive statistics.
	JobKindAnalytics = "analytics"
)

// AnalyticsSpec is an analytics job's section: counts, means and standard
// deviations are always computed; histograms and quantiles on request.
type AnalyticsSpec struct {
	// Histograms by feature name: explicit increasing edges, or bins
	// equal-width bins over [lo, hi]. Values outside the range are not
	// counted in the histogram (with epsilon they are clipped into it).
	Histograms map[string]HistogramSpec `json:"histograms,omitempty"`
	// Quantiles, each in (0, 1), are estimated from each feature's pooled
	// histogram by linear interpolation within a bin.
	Quantiles []float64 `json:"quantiles,omitempty"`
	// Epsilon, when positive, makes the released aggregates ε-differentially
	// private (Laplace mechanism, add/remove one patient); it needs a
	// histogram range for every feature, which bounds each patient's
	// contribution (see noiseScales).
	Epsilon float64 `json:"epsilon,omitempty"`
}

// HistogramSpec is one feature's histogram: Edges, or Bins over [Lo, Hi].
type HistogramSpec struct {
	Edges []float64 `json:"edges,omitempty"`
	Lo    float64   `json:"lo,omitempty"`
	Hi    float64   `json:"hi,omitempty"`
	Bins  int       `json:"bins,omitempty"`
}

// maxHistogramBins bounds a histogram's size on the wire and in Raft.
const maxHistogramBins = 1000

// edges are the histogram's bin edges.
func (h HistogramSpec) edges() []float64 {
	if len(h.Edges) > 0 {
		return slices.Clone(h.Edges)
	}
	e := make([]float64, h.Bins+1)
	for i := range e {
		e[i] = h.Lo + (h.Hi-h.Lo)*float64(i)/float64(h.Bins)
	}
	e[h.Bins] = h.Hi
	return e
}

func (h HistogramSpec) validate(name string) error {
	switch {
	case len(h.Edges) > 0 && (h.Bins != 0 || h.Lo != 0 || h.Hi != 0):
		return fmt.Errorf("%w: analytics.histograms.%s: give edges, or bins with lo and hi, not both", ErrInvalidJob, name)
	case len(h.Edges) == 0 && (h.Bins < 1 || h.Bins > maxHistogramBins):
		return fmt.Errorf("%w: analytics.histograms.%s: bins must be in [1, %d] (or give edges)", ErrInvalidJob, name, maxHistogramBins)
	case len(h.Edges) == 0 && !(finiteF(h.Lo) && finiteF(h.Hi) && h.Lo < h.Hi):
		return fmt.Errorf("%w: analytics.histograms.%s: lo must be below hi", ErrInvalidJob, name)
	case len(h.Edges) == 1 || len(h.Edges) > maxHistogramBins+1:
		return fmt.Errorf("%w: analytics.histograms.%s: 2 to %d edges", ErrInvalidJob, name, maxHistogramBins+1)
	}
	for i, e := range h.Edges {
		if !finiteF(e) || (i > 0 && !(e > h.Edges[i-1])) {
			return fmt.Errorf("%w: analytics.histograms.%s: edges must be finite and strictly increasing", ErrInvalidJob, name)
		}
	}
	return nil
}

func finiteF(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// IsAnalytics reports whether the spec is an analytics job.
func (s JobSpec) IsAnalytics() bool { return s.Kind == JobKindAnalytics }

// noModel reports whether an analytics spec's model is absent or only the
// defaults (kind logreg, num_features filled from the features).
func (s JobSpec) noModel() bool {
	m := s.Model
	return (m.Kind == "" || m.Kind == "logreg") && len(m.Hidden) == 0 && m.Activation == "" && m.Dropout == 0 &&
		(m.NumFeatures == 0 || m.NumFeatures == len(s.Features.GetFeatures()))
}

// validateAnalytics is Validate for an analytics job.
func (s JobSpec) validateAnalytics() error {
	switch {
	case !validID(s.ID):
		return fmt.Errorf("%w: job id %q: use 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalidJob, s.ID)
	case s.MinSites < 1:
		return fmt.Errorf("%w: min_sites must be at least 1", ErrInvalidJob)
	case s.RoundTimeout <= 0:
		return fmt.Errorf("%w: round_timeout must be positive", ErrInvalidJob)
	case s.MaxAttempts < 1:
		return fmt.Errorf("%w: max_attempts must be at least 1", ErrInvalidJob)
	case !s.noModel():
		return fmt.Errorf("%w: an analytics job trains no model: remove model", ErrInvalidJob)
	case s.Privacy != nil:
		return fmt.Errorf("%w: privacy is for training jobs; an analytics job sets analytics.epsilon", ErrInvalidJob)
	case s.Sampling != (Sampling{}):
		return fmt.Errorf("%w: an analytics job asks every site; remove sampling", ErrInvalidJob)
	case s.Features.FeatureSpec == nil || len(s.Features.GetFeatures()) == 0:
		return fmt.Errorf("%w: features: at least one feature is required", ErrInvalidJob)
	}
	if err := featurespec.Validate(s.analyticsFeatures()); err != nil {
		return fmt.Errorf("%w: features: %w", ErrInvalidJob, err)
	}
	a := s.Analytics
	if a == nil {
		return nil
	}
	names := make(map[string]bool)
	for _, f := range s.Features.GetFeatures() {
		names[f.GetName()] = true
	}
	for _, name := range slices.Sorted(maps.Keys(a.Histograms)) {
		if !names[name] {
			return fmt.Errorf("%w: analytics.histograms: no feature named %q", ErrInvalidJob, name)
		}
		if err := a.Histograms[name].validate(name); err != nil {
			return err
		}
	}
	for _, q := range a.Quantiles {
		if !(q > 0 && q < 1) {
			return fmt.Errorf("%w: analytics.quantiles: %g is not in (0, 1)", ErrInvalidJob, q)
		}
	}
	if len(a.Quantiles) > 0 && len(a.Histograms) == 0 {
		return fmt.Errorf("%w: analytics.quantiles are estimated from histograms: add analytics.histograms", ErrInvalidJob)
	}
	switch {
	case !(a.Epsilon >= 0) || math.IsInf(a.Epsilon, 0):
		return fmt.Errorf("%w: analytics.epsilon must be a positive number (or 0 for no noise)", ErrInvalidJob)
	case a.Epsilon > 0:
		for _, f := range s.Features.GetFeatures() {
			if _, ok := a.Histograms[f.GetName()]; !ok {
				return fmt.Errorf("%w: analytics.epsilon needs a histogram range for every feature (it bounds each patient's contribution); %q has none", ErrInvalidJob, f.GetName())
			}
		}
	}
	return nil
}

// analyticsFeatures is the feature spec an analytics job sends: raw values
// are summarized, so centers and scales play no part and may be left out
// (the spec is marked federated, as for a normalization statistics round).
func (s JobSpec) analyticsFeatures() *pb.FeatureSpec {
	spec := proto.Clone(s.Features.FeatureSpec).(*pb.FeatureSpec)
	spec.Normalization = pb.Normalization_NORMALIZATION_FEDERATED
	return spec
}

// featureEdges are the histogram edges of each feature in spec order (nil
// for a feature without a histogram).
func (s JobSpec) featureEdges() [][]float64 {
	feats := s.Features.GetFeatures()
	out := make([][]float64, len(feats))
	if s.Analytics == nil {
		return out
	}
	for i, f := range feats {
		if h, ok := s.Analytics.Histograms[f.GetName()]; ok {
			out[i] = h.edges()
		}
	}
	return out
}

// analyticsWire is what a statistics offer of an analytics job asks.
func (s JobSpec) analyticsWire() *pb.AnalyticsParams {
	if !s.IsAnalytics() {
		return nil
	}
	p := &pb.AnalyticsParams{Clip: s.Analytics != nil && s.Analytics.Epsilon > 0}
	for _, e := range s.featureEdges() {
		p.Histograms = append(p.Histograms, &pb.HistogramEdges{Edges: e})
	}
	return p
}

// AnalyticsResult is what an analytics job committed.
type AnalyticsResult struct {
	// Sites that contributed.
	Sites []string `json:"sites"`
	// Cohort is the number of eligible patients (omitted with noise).
	Cohort uint64 `json:"cohort,omitempty"`
	// K is the suppression threshold: cells under K are withheld.
	K int `json:"k"`
	// Epsilon is the privacy loss of the release (0: no noise).
	Epsilon  float64         `json:"epsilon,omitempty"`
	Features []FeatureResult `json:"features"`
}

// FeatureResult is one feature's pooled statistics. When Suppressed (fewer
// than K patients), only the name is given.
type FeatureResult struct {
	Name       string  `json:"name"`
	N          uint64  `json:"n"`
	Suppressed bool    `json:"suppressed,omitempty"`
	Mean       float64 `json:"mean"`
	// Std is the sample standard deviation (n - 1 in the denominator).
	Std       float64          `json:"std"`
	Histogram *HistogramResult `json:"histogram,omitempty"`
	Quantiles []QuantileResult `json:"quantiles,omitempty"`
}

// HistogramResult is a pooled histogram. Counts[i] is bin [Edges[i],
// Edges[i+1]); Suppressed[i] marks a pooled count withheld, reported as 0:
// one under K but not 0, or, when that is a single bin, also the smallest
// other non-empty one (sdc.Suppress: N minus the other bins would give it
// away).
// Bins a site suppressed (fewer than K of its patients) are not in the
// counts.
type HistogramResult struct {
	Edges      []float64 `json:"edges"`
	Counts     []uint64  `json:"counts"`
	Suppressed []bool    `json:"suppressed"`
}

// QuantileResult is the estimate of quantile Q.
type QuantileResult struct {
	Q     float64 `json:"q"`
	Value float64 `json:"value"`
}

// laplace draws Laplace(0, b) noise; nil adds none.
type laplace func(b float64) float64

// newLaplace samples from src (nil: a cryptographically secure source).
func newLaplace(src dp.Source) laplace {
	if src == nil {
		src = dp.NewCryptoSource()
	}
	return func(b float64) float64 {
		u := (float64(src.Uint64()>>11)+0.5)/(1<<53) - 0.5 // in (-0.5, 0.5)
		return -b * math.Copysign(1, u) * math.Log(1-2*math.Abs(u))
	}
}

// noiseScales are the Laplace scales of a feature's count, sum, sum of
// squares and histogram bins. Under add/remove-one-patient neighbourhood,
// with values clipped into [lo, hi] and B = max(|lo|, |hi|), one patient
// changes the count by 1, the sum by at most B, the sum of squares by at
// most B² and one histogram bin by 1 (the bins are disjoint: parallel
// composition). These four queries per feature over F features share ε by
// sequential composition, ε/(4F) each, so the scale is sensitivity·4F/ε.
func noiseScales(edges []float64, eps float64, nFeat int) (count, sum, sumSq, bin float64) {
	b := max(math.Abs(edges[0]), math.Abs(edges[len(edges)-1]))
	per := 4 * float64(nFeat) / eps
	return per, b * per, b * b * per, per
}

// aggregateAnalytics pools the sites' answers into the job's result: sums,
// noise (when noise is set and the spec has an epsilon), suppression of
// pooled cells under k (sdc.Suppress), then the derived statistics.
func aggregateAnalytics(spec JobSpec, receipts map[string]*Receipt, noise laplace) *AnalyticsResult {
	feats := spec.Features.GetFeatures()
	edges := spec.featureEdges()
	k := spec.Train.MinRecords
	res := &AnalyticsResult{K: k, Features: make([]FeatureResult, len(feats))}
	count := make([]float64, len(feats))
	sum := make([]float64, len(feats))
	sumSq := make([]float64, len(feats))
	bins := make([][]float64, len(feats))
	for i := range feats {
		if len(edges[i]) >= 2 {
			bins[i] = make([]float64, len(edges[i])-1)
		}
	}
	for _, site := range slices.Sorted(maps.Keys(receipts)) {
		rc := receipts[site]
		res.Sites = append(res.Sites, site)
		res.Cohort += rc.CohortSize
		for i, fs := range rc.Stats {
			if i >= len(feats) {
				break
			}
			count[i] += float64(fs.Count)
			sum[i] += fs.Sum
			sumSq[i] += fs.SumSq
			for b, c := range fs.Bins {
				if b < len(bins[i]) {
					bins[i][b] += float64(c)
				}
			}
		}
	}
	var eps float64
	if spec.Analytics != nil {
		eps = spec.Analytics.Epsilon
	}
	if eps > 0 && noise != nil {
		res.Epsilon, res.Cohort = eps, 0
		for i := range feats {
			sc, ss, sss, sb := noiseScales(edges[i], eps, len(feats))
			count[i] += noise(sc)
			sum[i] += noise(ss)
			sumSq[i] += noise(sss)
			for b := range bins[i] {
				bins[i][b] += noise(sb)
			}
		}
	}
	for i, f := range feats {
		fr := FeatureResult{Name: f.GetName()}
		n := uint64(max(math.Round(count[i]), 0))
		if n < uint64(max(k, 1)) {
			fr.Suppressed = true
			res.Features[i] = fr
			continue
		}
		fr.N = n
		nf := float64(n)
		mean := sum[i] / nf
		if eps > 0 && len(edges[i]) >= 2 {
			mean = min(max(mean, edges[i][0]), edges[i][len(edges[i])-1])
		}
		if n > 1 {
			fr.Std = math.Sqrt(max(sumSq[i]-nf*mean*mean, 0) / (nf - 1))
		}
		fr.Mean = mean
		if !finiteF(fr.Mean) || !finiteF(fr.Std) {
			fr.Mean, fr.Std = 0, 0
		}
		if bins[i] != nil {
			h := &HistogramResult{Edges: edges[i], Counts: make([]uint64, len(bins[i]))}
			for b, c := range bins[i] {
				h.Counts[b] = uint64(max(math.Round(c), 0))
			}
			h.Suppressed = sdc.Suppress(h.Counts, uint64(max(k, 0)))
			for b, withhold := range h.Suppressed {
				if withhold {
					h.Counts[b] = 0
				}
			}
			fr.Histogram = h
			if spec.Analytics != nil {
				fr.Quantiles = histogramQuantiles(h, spec.Analytics.Quantiles)
			}
		}
		res.Features[i] = fr
	}
	return res
}

// histogramQuantiles estimates each quantile from a histogram's released
// counts, interpolating linearly within the bin that holds it. With no
// counts released it returns nil.
func histogramQuantiles(h *HistogramResult, qs []float64) []QuantileResult {
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	if total == 0 || len(qs) == 0 {
		return nil
	}
	out := make([]QuantileResult, 0, len(qs))
	for _, q := range qs {
		target := q * float64(total)
		var cum float64
		v := h.Edges[len(h.Edges)-1]
		for b, c := range h.Counts {
			if c == 0 {
				continue
			}
			if cum+float64(c) >= target {
				lo, hi := h.Edges[b], h.Edges[b+1]
				v = lo + (hi-lo)*(target-cum)/float64(c)
				break
			}
			cum += float64(c)
		}
		out = append(out, QuantileResult{Q: q, Value: v})
	}
	return out
}

// checkAnalyticsStats checks a site's histograms against the job: one bin
// per edge interval, none holding fewer than k patients unless zero, and
// no more patients in the bins than in the feature.
func checkAnalyticsStats(spec JobSpec, fs *pb.FeatureStats, i, k int) error {
	edges := spec.featureEdges()
	want := 0
	if spec.IsAnalytics() && i < len(edges) && len(edges[i]) >= 2 {
		want = len(edges[i]) - 1
	}
	if len(fs.GetBins()) != want {
		return fmt.Errorf("feature %d: %d histogram bins, the job asks %d", i, len(fs.GetBins()), want)
	}
	var in uint64
	for _, c := range fs.GetBins() {
		if c > 0 && c < uint64(k) {
			return fmt.Errorf("feature %d: a histogram bin of %d patients is below the minimum of %d", i, c, k)
		}
		in += c
		if c > fs.GetCount() || in > fs.GetCount() {
			return fmt.Errorf("feature %d: histogram counts exceed the feature's count", i)
		}
	}
	return nil
}

// getJobResults is GET /v1/jobs/{id}/results: an analytics job's result.
func (n *Node) getJobResults(w http.ResponseWriter, req *http.Request) {
	var (
		found, analytics bool
		res              *AnalyticsResult
		eval             *Evaluation
		jobState         JobState
	)
	n.fsm.view(func(st *state) {
		j, ok := st.Jobs[req.PathValue("id")]
		if !ok {
			return
		}
		found, analytics, res, jobState = true, j.Spec.IsAnalytics(), j.Results, j.State
		if j.Spec.IsEvaluation() && j.Evaluated != nil {
			cp := *j.Evaluated
			eval = &cp
		}
	})
	switch {
	case !found:
		writeProblem(w, http.StatusNotFound, "no such job")
	case eval != nil:
		writeJSON(w, http.StatusOK, eval)
	case !analytics:
		writeProblem(w, http.StatusConflict, "not an analytics or a finished evaluation job: a training job's results are its models (GET /v1/jobs/{id}/models)")
	case res == nil:
		writeProblem(w, http.StatusConflict, fmt.Sprintf("no results yet (job is %s)", jobState))
	default:
		writeJSON(w, http.StatusOK, res)
	}
}
