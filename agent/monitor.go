package agent

import (
	"math"
	"slices"
	"sync"

	"github.com/cohort-fl/cohort/agent/features"
	"github.com/prometheus/client_golang/prometheus"
)

// Monitoring of a deployed version at this site: when a version becomes
// current, the agent takes the distribution of each feature over the
// site's eligible records as the reference (deciles), and streaming
// scoring (score.go) then counts, per feature, where the scored patients
// fall, and the scores themselves. The population stability index of each
// feature against its reference, PSI = Σ (c − r)·ln(c/r) over the bins
// (c and r the current and reference fractions), and the score histogram
// are Prometheus metrics: PSI under 0.1 is usually read as stable, above
// 0.25 as a shift worth retraining for. Only counts and fractions are
// kept, never rows.

// psiBins is the number of reference bins per feature (deciles).
const psiBins = 10

// psiFloor keeps an empty bin from making the PSI infinite.
const psiFloor = 1e-4

// monitor is one deployed version's drift and score counts.
type monitor struct {
	mu    sync.Mutex
	edges [][]float64 // per feature, the psiBins-1 interior edges
	ref   [][]float64 // per feature, the reference fraction per bin
	cur   [][]uint64  // per feature, the scored patients per bin
	n     uint64
	// scores[i] counts scores in [i/10, (i+1)/10), the last bin closed.
	scores [psiBins]uint64
	sum    float64
}

// newMonitor takes ds (standardized rows) as the reference; nil when ds
// has no rows.
func newMonitor(ds *features.Dataset) *monitor {
	if ds == nil || ds.Rows == 0 {
		return nil
	}
	m := &monitor{}
	col := make([]float64, ds.Rows)
	for j := range ds.Cols {
		for i := range ds.Rows {
			col[i] = float64(ds.X[i*ds.Cols+j])
		}
		slices.Sort(col)
		edges := make([]float64, 0, psiBins-1)
		for k := 1; k < psiBins; k++ {
			edges = append(edges, col[k*len(col)/psiBins])
		}
		edges = slices.Compact(edges) // a feature with few values has fewer bins
		ref := make([]float64, len(edges)+1)
		for _, v := range col {
			ref[binOf(edges, v)]++
		}
		for k := range ref {
			ref[k] /= float64(len(col))
		}
		m.edges = append(m.edges, edges)
		m.ref = append(m.ref, ref)
		m.cur = append(m.cur, make([]uint64, len(ref)))
	}
	return m
}

// binOf is the bin of v: the number of edges at or below it.
func binOf(edges []float64, v float64) int {
	i, found := slices.BinarySearch(edges, v)
	if found {
		i++
	}
	return i
}

// observe counts one scored row and its score.
func (m *monitor) observe(x []float32, score float64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for j, v := range x {
		if j < len(m.cur) {
			m.cur[j][binOf(m.edges[j], float64(v))]++
		}
	}
	m.n++
	m.sum += score
	m.scores[min(psiBins-1, max(0, int(score*psiBins)))]++
}

// psi returns each feature's population stability index against its
// reference (0 for all before anything was scored).
func (m *monitor) psi() []float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]float64, len(m.ref))
	if m.n == 0 {
		return out
	}
	for j, ref := range m.ref {
		for k, r := range ref {
			c := float64(m.cur[j][k]) / float64(m.n)
			c, r = max(c, psiFloor), max(r, psiFloor)
			out[j] += (c - r) * math.Log(c/r)
		}
	}
	return out
}

var (
	descPSI   = metricDesc("cohort_agent_feature_psi", "Population stability index of a feature of the scored patients against the site's records when the deployed version became current.", "job", "feature")
	descScore = metricDesc("cohort_agent_risk_score", "Risk scores of streaming scoring with the deployed version.", "job")
)

// monitorCollector exports each deployed version's drift and scores.
type monitorCollector struct{ a *Agent }

func (c monitorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPSI
	ch <- descScore
}

func (c monitorCollector) Collect(ch chan<- prometheus.Metric) {
	for _, job := range c.a.cfg.Deploy {
		d := c.a.deployedModel(job)
		if d == nil || d.mon == nil {
			continue
		}
		for j, v := range d.mon.psi() {
			if j < len(d.features) {
				ch <- prometheus.MustNewConstMetric(descPSI, prometheus.GaugeValue, v, job, d.features[j])
			}
		}
		d.mon.mu.Lock()
		buckets := make(map[float64]uint64, psiBins)
		var cum uint64
		for i, n := range d.mon.scores {
			cum += n
			buckets[float64(i+1)/psiBins] = cum
		}
		n, sum := d.mon.n, d.mon.sum
		d.mon.mu.Unlock()
		ch <- prometheus.MustNewConstHistogram(descScore, n, sum, buckets, job)
	}
}
