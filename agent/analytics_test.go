package agent

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/sim/synth"
)

// TestAgentSendsAnalyticsHistogramsWithSmallBinsSuppressed: an analytics
// statistics offer gets the feature's histogram, with a bin of fewer than
// k patients sent as 0 and the others exact.
func TestAgentSendsAnalyticsHistogramsWithSmallBinsSuppressed(t *testing.T) {
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.InitCA(pkiDir, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	siteCert, siteKey, err := ca.IssueToFiles(pkiDir, pki.IssueRequest{Role: pki.RoleSite, ID: "st-mary"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	coordCert, coordKey, err := ca.IssueToFiles(pkiDir, pki.IssueRequest{Role: pki.RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool, cert, err := pki.Files{CA: filepath.Join(pkiDir, "ca.crt"), Cert: coordCert, Key: coordKey}.Load()
	if err != nil {
		t.Fatal(err)
	}
	site := synth.DefaultSites(1, 5)[0]
	site.Patients = 200
	data := filepath.Join(dir, "data")
	if _, err := synth.WriteSite(data, site, synth.DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	spec := synth.DefaultFeatureSpec()

	// Choose edges [0, m, 200] where m is the oldest patient's year of
	// age: the top bin then holds a handful of patients (under k = 20).
	var direct fhir.Collector
	if _, err := fhir.ReadDir(context.Background(), data, &direct); err != nil {
		t.Fatal(err)
	}
	years := make([]float64, 202)
	for i := range years {
		years[i] = float64(i)
	}
	_, fine, err := features.Histograms(spec, direct.Patients(), [][]float64{years}, false)
	if err != nil {
		t.Fatal(err)
	}
	const k = 20
	top := len(fine[0].Bins) - 1
	for top > 0 && fine[0].Bins[top] == 0 {
		top--
	}
	edges := []float64{0, float64(top), 200}
	_, want, err := features.Histograms(spec, direct.Patients(), [][]float64{edges}, false)
	if err != nil {
		t.Fatal(err)
	}
	if b := want[0].Bins; len(b) != 2 || b[0] < k || b[1] == 0 || b[1] >= k {
		t.Fatalf("fixture: age bins %v, want one of at least %d and one small", b, k)
	}

	c := &scriptedCoordinator{t: t, done: make(chan struct{}), offer: &pb.TaskOffer{
		JobId: "an", Kind: pb.TaskKind_TASK_KIND_STATS,
		Params:    &pb.TrainParams{MinRecords: k},
		Features:  spec,
		Analytics: &pb.AnalyticsParams{Histograms: []*pb.HistogramEdges{{Edges: edges}}},
	}}
	coordAddr := serveScripted(t, c, pool, cert)

	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "agent")
	cfg.Coordinators = []string{coordAddr}
	cfg.TLS = pki.Files{CA: filepath.Join(pkiDir, "ca.crt"), Cert: siteCert, Key: siteKey}
	cfg.FHIRDir = data
	cfg.BackoffMin, cfg.BackoffMax = Duration(50*time.Millisecond), Duration(200*time.Millisecond)
	cfg.PollWait = Duration(time.Second)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, a, c.done, "the statistics")

	c.mu.Lock()
	defer c.mu.Unlock()
	got := c.stats.GetStats()
	if len(got) != len(spec.GetFeatures()) {
		t.Fatalf("%d feature statistics, want %d", len(got), len(spec.GetFeatures()))
	}
	// The small bin is withheld, and so is the other: the count minus it
	// would give the small one away (complementary suppression).
	if got[0].GetCount() != want[0].Count || !slices.Equal(got[0].GetBins(), []uint64{0, 0}) {
		t.Fatalf("age: count %d bins %v; want count %d bins [0 0] (the small bin of %d and, complementary, the bin of %d withheld)",
			got[0].GetCount(), got[0].GetBins(), want[0].Count, want[0].Bins[1], want[0].Bins[0])
	}
	if len(got[1].GetBins()) != 0 {
		t.Fatalf("sex_female: bins %v, none were asked", got[1].GetBins())
	}
}
