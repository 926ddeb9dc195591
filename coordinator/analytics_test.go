package coordinator

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
)

// analyticsJob is an analytics job over testFeatureSpec(3) with k = 10, a
// histogram of f0 over edges 0, 2, 4, 6 and the median.
func analyticsJob(id string) JobSpec {
	j := testJob(id, 1, 2)
	j.Kind = JobKindAnalytics
	j.Model = ModelSpec{}
	j.Train.MinRecords = 10
	j.Analytics = &AnalyticsSpec{
		Histograms: map[string]HistogramSpec{"f0": {Edges: []float64{0, 2, 4, 6}}},
		Quantiles:  []float64{0.5},
	}
	return j
}

func TestValidateAnalyticsSpec(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*JobSpec)
		want string // "" = valid
	}{
		{"valid", func(*JobSpec) {}, ""},
		{"default model accepted", func(s *JobSpec) { s.Model = ModelSpec{Kind: "logreg", NumFeatures: 3} }, ""},
		{"no analytics section", func(s *JobSpec) { s.Analytics = nil }, ""},
		{"bins over a range", func(s *JobSpec) {
			s.Analytics.Histograms = map[string]HistogramSpec{"f1": {Lo: 0, Hi: 10, Bins: 5}}
		}, ""},
		{"with a model", func(s *JobSpec) { s.Model = ModelSpec{Kind: "mlp", NumFeatures: 3, Hidden: []int{4}} }, "trains no model"},
		{"unknown kind", func(s *JobSpec) { s.Kind = "report" }, "kind"},
		{"analytics section on a training job", func(s *JobSpec) { s.Kind = ""; s.Model = ModelSpec{Kind: "logreg", NumFeatures: 3} }, "analytics section"},
		{"edges not increasing", func(s *JobSpec) {
			s.Analytics.Histograms["f0"] = HistogramSpec{Edges: []float64{0, 2, 2, 6}}
		}, "strictly increasing"},
		{"one edge", func(s *JobSpec) { s.Analytics.Histograms["f0"] = HistogramSpec{Edges: []float64{1}} }, "edges"},
		{"edges and bins", func(s *JobSpec) {
			s.Analytics.Histograms["f0"] = HistogramSpec{Edges: []float64{0, 1}, Bins: 3}
		}, "not both"},
		{"lo not below hi", func(s *JobSpec) { s.Analytics.Histograms["f0"] = HistogramSpec{Lo: 5, Hi: 5, Bins: 3} }, "lo must be below hi"},
		{"too many bins", func(s *JobSpec) { s.Analytics.Histograms["f0"] = HistogramSpec{Lo: 0, Hi: 1, Bins: 5000} }, "bins"},
		{"unknown feature", func(s *JobSpec) { s.Analytics.Histograms["age"] = HistogramSpec{Lo: 0, Hi: 1, Bins: 2} }, "no feature named"},
		{"quantile 0", func(s *JobSpec) { s.Analytics.Quantiles = []float64{0} }, "not in (0, 1)"},
		{"quantile 1", func(s *JobSpec) { s.Analytics.Quantiles = []float64{1} }, "not in (0, 1)"},
		{"quantiles without histograms", func(s *JobSpec) { s.Analytics.Histograms = nil }, "add analytics.histograms"},
		{"negative epsilon", func(s *JobSpec) { s.Analytics.Epsilon = -1 }, "epsilon"},
		{"epsilon without every range", func(s *JobSpec) { s.Analytics.Epsilon = 1 }, "every feature"},
		{"epsilon with every range", func(s *JobSpec) {
			s.Analytics.Epsilon = 1
			s.Analytics.Histograms["f1"] = HistogramSpec{Lo: 0, Hi: 1, Bins: 2}
			s.Analytics.Histograms["f2"] = HistogramSpec{Lo: 0, Hi: 1, Bins: 2}
		}, ""},
		{"training privacy section", func(s *JobSpec) { s.Privacy = &PrivacySpec{} }, "analytics.epsilon"},
		{"sampling", func(s *JobSpec) { s.Sampling = Sampling{Count: 2} }, "sampling"},
		{"no features", func(s *JobSpec) { s.Features = FeatureSpec{} }, "at least one feature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := analyticsJob("an")
			tc.edit(&s)
			err := s.Validate(0)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate accepted the spec, want an error containing %q", tc.want)
			case tc.want != "" && (!errors.Is(err, ErrInvalidJob) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want ErrInvalidJob containing %q", err, tc.want)
			}
		})
	}
}

// An analytics job runs one statistics round with histograms; the leader
// commits pooled counts, means, standard deviations, histograms and
// quantiles, suppresses a feature observed in fewer than k patients, and
// the job is done. Results are served by GET /v1/jobs/{id}/results.
func TestAnalyticsJobCommitsPooledResults(t *testing.T) {
	job := analyticsJob("an")
	tc := startClusterWith(t, 1, []string{"a", "b", "c"}, []JobSpec{job}, func(c *Config) { c.MinCohort = 10 })
	leader, _ := tc.leader(t)
	dial := func(site string) *rawAgent { return tc.welcomed(t, leader, site) }
	task := func(ra *rawAgent) *pb.TaskOffer { return ra.task(t, 10*time.Second) }
	stats := func(ra *rawAgent, cohort uint64, fs ...*pb.FeatureStats) *pb.Envelope {
		return ra.call(t, &pb.Envelope{Body: &pb.Envelope_StatsUpload{StatsUpload: &pb.StatsUpload{
			JobId: "an", CohortSize: cohort, Stats: fs}}})
	}
	// f(n, v) is n patients with value v.
	f := func(n uint64, v float64, bins ...uint64) *pb.FeatureStats {
		return &pb.FeatureStats{Count: n, Sum: float64(n) * v, SumSq: float64(n) * v * v, Bins: bins}
	}
	a, b, c := dial("a"), dial("b"), dial("c")
	o := task(a)
	if o.GetKind() != pb.TaskKind_TASK_KIND_STATS || o.GetModel() != nil {
		t.Fatalf("offer = %v, want a statistics task", o)
	}
	if h := o.GetAnalytics().GetHistograms(); len(h) != 3 || !slices.Equal(h[0].GetEdges(), []float64{0, 2, 4, 6}) || len(h[1].GetEdges()) != 0 {
		t.Fatalf("offer's histograms = %v", h)
	}
	if code, _ := tc.api(t, "GET", leader.AdminAddr(), "/v1/jobs/an/results", nil, nil); code != http.StatusConflict {
		t.Fatalf("results before the round: %d, want 409", code)
	}
	// A bin of 4 patients is under k = 10: refused.
	if e := protocol.AsError(stats(a, 14, f(14, 1, 10, 4, 0), f(10, 1), &pb.FeatureStats{})); e == nil {
		t.Fatal("a histogram bin under k was accepted")
	}
	if e := protocol.AsError(stats(a, 10, f(10, 1), f(10, 1), &pb.FeatureStats{})); e == nil {
		t.Fatal("statistics without the asked histogram were accepted")
	}
	// Site a: 10 patients at 1 (bin [0,2)); f2 suppressed at the site.
	if ack := stats(a, 10, f(10, 1, 10, 0, 0), f(10, 1), &pb.FeatureStats{}).GetAck(); ack == nil {
		t.Fatal("statistics not acknowledged")
	}
	// Site b: 20 patients at 3 (bin [2,4)), 10 at 5 (bin [4,6]).
	task(b)
	fb := &pb.FeatureStats{Count: 30, Sum: 20*3 + 10*5, SumSq: 20*9 + 10*25, Bins: []uint64{0, 20, 10}}
	if ack := stats(b, 30, fb, f(30, 3), &pb.FeatureStats{}).GetAck(); ack == nil {
		t.Fatal("statistics not acknowledged")
	}
	task(c)
	if ack := c.call(t, &pb.Envelope{Body: &pb.Envelope_Decline{Decline: &pb.Decline{JobId: "an",
		Reason: pb.DeclineReason_DECLINE_REASON_TOO_FEW_RECORDS}}}).GetAck(); ack == nil {
		t.Fatal("decline not acknowledged")
	}
	waitFor(t, leader, "analytics committed", func() bool {
		j, _ := leader.Job("an")
		return j.Results != nil
	})
	j, _ := leader.Job("an")
	if j.State != JobDone || j.Norm != nil || len(j.Models) != 0 {
		t.Fatalf("job state %s, norm %v, %d models; want done with neither", j.State, j.Norm, len(j.Models))
	}
	var res AnalyticsResult
	if code, raw := tc.api(t, "GET", leader.AdminAddr(), "/v1/jobs/an/results", nil, &res); code != http.StatusOK {
		t.Fatalf("results: %d %s", code, raw)
	}
	if !slices.Equal(res.Sites, []string{"a", "b"}) || res.Cohort != 40 || res.K != 10 || len(res.Features) != 3 {
		t.Fatalf("result = %+v", res)
	}
	// f0: values 1×10, 3×20, 5×10: n 40, mean 3, sample variance
	// (10·4 + 0 + 10·4)/39.
	f0 := res.Features[0]
	if f0.N != 40 || math.Abs(f0.Mean-3) > 1e-12 || math.Abs(f0.Std-math.Sqrt(80.0/39)) > 1e-12 {
		t.Fatalf("f0 = %+v", f0)
	}
	if h := f0.Histogram; h == nil || !slices.Equal(h.Counts, []uint64{10, 20, 10}) || slices.Contains(h.Suppressed, true) {
		t.Fatalf("f0 histogram = %+v", f0.Histogram)
	}
	// Median: target 20 of 40 lies in [2,4) after 10: 2 + 2·10/20 = 3.
	if len(f0.Quantiles) != 1 || f0.Quantiles[0].Q != 0.5 || math.Abs(f0.Quantiles[0].Value-3) > 1e-12 {
		t.Fatalf("f0 quantiles = %+v", f0.Quantiles)
	}
	// f1: 10 at 1, 30 at 3: mean 2.5, sample variance 30/39; no histogram.
	if f1 := res.Features[1]; f1.N != 40 || f1.Mean != 2.5 || math.Abs(f1.Std-math.Sqrt(30.0/39)) > 1e-12 || f1.Histogram != nil {
		t.Fatalf("f1 = %+v", f1)
	}
	if f2 := res.Features[2]; !f2.Suppressed || f2.N != 0 || f2.Mean != 0 {
		t.Fatalf("f2 = %+v, want suppressed", f2)
	}
	if code, _ := tc.api(t, "GET", leader.AdminAddr(), "/v1/jobs/nowhere/results", nil, nil); code != http.StatusNotFound {
		t.Fatalf("results of an unknown job: %d, want 404", code)
	}
}

// With epsilon the leader adds Laplace noise at the documented scales and
// then suppresses pooled cells under k.
func TestAggregateAnalyticsNoiseAndSuppression(t *testing.T) {
	spec := analyticsJob("an")
	spec.Analytics.Epsilon = 3
	spec.Analytics.Histograms["f1"] = HistogramSpec{Lo: -1, Hi: 2, Bins: 3}
	spec.Analytics.Histograms["f2"] = HistogramSpec{Lo: 0, Hi: 1, Bins: 1}
	receipts := map[string]*Receipt{
		"a": {Site: "a", CohortSize: 30, Stats: []FeatureStats{
			{Count: 30, Sum: 90, SumSq: 270, Bins: []uint64{0, 30, 0}},
			{Count: 30, Sum: 30, SumSq: 30, Bins: []uint64{0, 15, 15}},
			{},
		}},
	}
	var scales []float64
	noise := func(b float64) float64 {
		scales = append(scales, b)
		return 4 // pushes f0's empty bins to 4 < k
	}
	res := aggregateAnalytics(spec, receipts, noise)
	// ε/(4·3 features) = 0.25 per query: scale = sensitivity·4.
	// f0: B = 6: count 4, sum 24, sum_sq 144, 3 bins at 4.
	want := []float64{4, 24, 144, 4, 4, 4}
	if !slices.Equal(scales[:6], want) {
		t.Fatalf("f0 noise scales = %v, want %v", scales[:6], want)
	}
	if res.Epsilon != 3 || res.Cohort != 0 {
		t.Fatalf("a noisy result reports epsilon %v cohort %d", res.Epsilon, res.Cohort)
	}
	f0 := res.Features[0]
	if f0.N != 34 || !slices.Equal(f0.Histogram.Counts, []uint64{0, 34, 0}) || !slices.Equal(f0.Histogram.Suppressed, []bool{true, false, true}) {
		t.Fatalf("f0 = %+v histogram %+v", f0, f0.Histogram)
	}
	if f0.Mean < 0 || f0.Mean > 6 {
		t.Fatalf("f0 mean %v outside the clipping range", f0.Mean)
	}
	if f2 := res.Features[2]; f2.N != 0 || !f2.Suppressed {
		t.Fatalf("f2 (4 noisy patients, k 10) = %+v, want suppressed", f2)
	}
	// Without noise nothing is drawn.
	scales = nil
	spec.Analytics.Epsilon = 0
	if res := aggregateAnalytics(spec, receipts, noise); len(scales) != 0 || res.Cohort != 30 {
		t.Fatalf("no epsilon: %d draws, cohort %d", len(scales), res.Cohort)
	}
}

// TestAggregateAnalyticsComplementarySuppression: when the noise leaves
// one pooled bin under k, the smallest other non-empty bin is withheld
// too, or N minus the released bins would give the small one away.
func TestAggregateAnalyticsComplementarySuppression(t *testing.T) {
	spec := analyticsJob("an")
	spec.Analytics.Epsilon = 3
	spec.Analytics.Histograms["f1"] = HistogramSpec{Lo: 0, Hi: 1, Bins: 1}
	spec.Analytics.Histograms["f2"] = HistogramSpec{Lo: 0, Hi: 1, Bins: 1}
	receipts := map[string]*Receipt{
		"a": {Site: "a", CohortSize: 70, Stats: []FeatureStats{
			{Count: 70, Sum: 210, SumSq: 700, Bins: []uint64{40, 10, 20}},
			{Count: 70, Sum: 35, SumSq: 35, Bins: []uint64{70}},
			{Count: 70, Sum: 35, SumSq: 35, Bins: []uint64{70}},
		}},
	}
	calls := 0
	noise := func(float64) float64 {
		calls++
		if calls == 5 { // f0: count, sum, sum of squares, bin 0, bin 1
			return -7
		}
		return 0
	}
	h := aggregateAnalytics(spec, receipts, noise).Features[0].Histogram
	if !slices.Equal(h.Counts, []uint64{40, 0, 0}) || !slices.Equal(h.Suppressed, []bool{false, true, true}) {
		t.Fatalf("f0 histogram %+v, want bin 1 (3 < k = 10) and bin 2 (the smallest other) withheld", h)
	}
}

func TestLaplaceSamplerScale(t *testing.T) {
	l := newLaplace(nil)
	const n = 20000
	var sumAbs float64
	for range n {
		sumAbs += math.Abs(l(2))
	}
	// E|X| = b for Laplace(0, b).
	if m := sumAbs / n; math.Abs(m-2) > 0.1 {
		t.Fatalf("mean |noise| = %v, want about 2", m)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := &HistogramResult{Edges: []float64{0, 10, 20, 30}, Counts: []uint64{10, 0, 30}}
	got := histogramQuantiles(h, []float64{0.1, 0.25, 0.5})
	// Targets 4, 10 and 20 of 40: 4 into bin 0, the end of bin 0, 10 of
	// bin 2's 30.
	want := []float64{4, 10, 20 + 10*10/30.0}
	for i, q := range got {
		if math.Abs(q.Value-want[i]) > 1e-12 {
			t.Errorf("q%.2f = %v, want %v", q.Q, q.Value, want[i])
		}
	}
}

// The example of docs/operating-a-federation.md ("Federated analytics")
// is a valid spec as POST /v1/jobs reads it.
func TestAnalyticsDocExampleIsValid(t *testing.T) {
	const example = `{"id": "vitals-summary", "kind": "analytics", "min_sites": 2,
 "train": {"min_records": 20},
 "features": {"label": {"kind": "deceased"}, "normalization": "federated",
              "features": [{"name": "age", "kind": "age"},
                           {"name": "hr", "kind": "last", "loinc": "8867-4"}]},
 "analytics": {
   "histograms": {"age": {"edges": [0, 18, 40, 65, 80, 120]},
                  "hr": {"lo": 30, "hi": 200, "bins": 17}},
   "quantiles": [0.25, 0.5, 0.75],
   "epsilon": 1}}`
	spec := DefaultJobSpec()
	dec := json.NewDecoder(strings.NewReader(example))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		t.Fatal(err)
	}
	if !spec.noModel() {
		t.Fatalf("model %+v", spec.Model)
	}
	spec.Model = ModelSpec{}
	if err := spec.Validate(0); err != nil {
		t.Fatal(err)
	}
	if err := spec.checkCohort(20); err != nil {
		t.Fatal(err)
	}
	if e := spec.featureEdges(); len(e[1]) != 18 || e[1][0] != 30 || e[1][17] != 200 || e[1][1] != 40 {
		t.Fatalf("hr edges = %v", e[1])
	}
}
