package agent

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/sim/synth"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeAgentMetrics GETs /metrics from addr and parses it as the
// Prometheus text format; it returns the families and the raw body (nil,
// "" when the listener does not answer yet).
func scrapeAgentMetrics(t *testing.T, addr string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v\n%s", err, body)
	}
	return fams, string(body)
}

// agentMetric is the value of family name's series whose labels include
// the name=value pairs; -1 when there is none.
func agentMetric(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	for _, m := range fams[name].GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			match = match && found
		}
		if !match {
			continue
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}

// handlerMetrics is a's /metrics, served by its handler and parsed.
func handlerMetrics(t *testing.T, a *Agent) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	a.metricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	return fams
}

func getAgentText(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// An agent trains a round with a scripted coordinator (which cuts the
// first download and upload): /metrics, parsed as Prometheus text, keeps
// the metric names dashboards use, its counters move with the round,
// /readyz answers, and no site id or patient identifier reaches a name, a
// label or a value.
func TestAgentMetricsAfterRound(t *testing.T) {
	const siteID = "canary-site-5e1d"
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.InitCA(pkiDir, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	siteCert, siteKey, err := ca.IssueToFiles(pkiDir, pki.IssueRequest{Role: pki.RoleSite, ID: siteID}, time.Now())
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
	manifest, err := synth.WriteSite(data, site, synth.DefaultTruth())
	if err != nil {
		t.Fatal(err)
	}
	spec := synth.DefaultFeatureSpec()
	nf := len(spec.GetFeatures())
	mdl := make([]byte, 4*(nf+1))
	c := &scriptedCoordinator{t: t, site: siteID, model: mdl, done: make(chan struct{}), offer: &pb.TaskOffer{
		JobId: "j", Round: 1, Kind: pb.TaskKind_TASK_KIND_TRAIN,
		Model:     &pb.BlobRef{Sha256: protocol.Digest(mdl), Size: uint64(len(mdl)), Encoding: pb.Encoding_ENCODING_F32LE},
		ModelSpec: &pb.ModelSpec{Kind: "logreg", NumFeatures: uint32(nf), NumParams: uint32(nf + 1)},
		Params:    &pb.TrainParams{LocalEpochs: 1, LearningRate: 0.1, BatchSize: 32, Seed: 1, ValidationFraction: 0.2, MinRecords: 20},
		Features:  spec,
	}}
	coordAddr := serveScripted(t, c, pool, cert)

	metricsAddr := freeLoopback(t)
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "agent")
	cfg.Coordinators = []string{coordAddr}
	cfg.TLS = pki.Files{CA: filepath.Join(pkiDir, "ca.crt"), Cert: siteCert, Key: siteKey}
	cfg.FHIRDir = data
	cfg.MetricsAddr = metricsAddr
	cfg.BackoffMin, cfg.BackoffMax = Duration(50*time.Millisecond), Duration(200*time.Millisecond)
	cfg.PollWait = Duration(time.Second)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(actx) }()
	defer func() {
		acancel()
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("agent: %v", err)
		}
		a.Close()
	}()

	select {
	case <-c.done:
	case err := <-runErr:
		t.Fatalf("agent stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the update was not delivered within 60 s")
	}
	var fams map[string]*dto.MetricFamily
	var body string
	eventually(t, "the acknowledged round on /metrics with a live session", func() bool {
		fams, body = scrapeAgentMetrics(t, metricsAddr)
		return agentMetric(fams, "cohort_agent_updates_acked_total") >= 1 && agentMetric(fams, "cohort_agent_coordinator_connected") == 1
	})
	for _, tt := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"cohort_agent_resources_ingested_total", []string{"type", "Patient"}, 200},
		{"cohort_agent_rounds_trained_total", nil, 1},
		{"cohort_agent_updates_acked_total", nil, 1},
		{"cohort_agent_updates_resent_total", nil, 0},
		{"cohort_agent_uploads_resumed_total", nil, 1},
		{"cohort_agent_downloads_resumed_total", nil, 1},
		{"cohort_agent_reconnects_total", nil, 1},
		{"cohort_agent_bytes_sent_total", nil, 1},
		{"cohort_agent_ready", nil, 1},
	} {
		if got := agentMetric(fams, tt.name, tt.labels...); got < tt.min {
			t.Errorf("%s%v = %v, want at least %v", tt.name, tt.labels, got, tt.min)
		}
	}
	for _, name := range []string{"cohort_agent_rounds_trained_total", "cohort_agent_bytes_sent_total", "cohort_agent_resources_ingested_total"} {
		if fams[name].GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s is a %v, want a counter", name, fams[name].GetType())
		}
	}
	if got, want := agentMetric(fams, "cohort_agent_bytes_sent_total"), float64(a.BytesSent()); got > want || got <= 0 {
		t.Errorf("bytes_sent_total = %v, the guard counts %v", got, want)
	}
	if fams["go_goroutines"] == nil || fams["process_cpu_seconds_total"] == nil {
		t.Error("the Go and process collectors are not registered")
	}
	if code, rb := getAgentText(t, "http://"+metricsAddr+"/readyz"); code != http.StatusOK || !strings.Contains(rb, "connected") {
		t.Errorf("/readyz = %d %q", code, rb)
	}
	if code, _ := getAgentText(t, "http://"+metricsAddr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}

	// The canaries: the site id and every patient's identifiers.
	canaries := []string{siteID}
	for _, list := range [][]string{manifest.Names, manifest.MRNs, manifest.Phones, manifest.Emails, manifest.Addresses, manifest.PatientIDs} {
		canaries = append(canaries, list...)
	}
	if len(canaries) < 1000 {
		t.Fatalf("only %d canaries", len(canaries))
	}
	found := 0
	for _, cn := range canaries {
		if len(cn) >= 6 && strings.Contains(body, cn) {
			found++
			t.Errorf("/metrics holds %q", cn)
		}
	}
	// The search works: the canaries are in what the agent ingested.
	raw, err := os.ReadFile(filepath.Join(data, synth.PatientFile))
	if err != nil {
		t.Fatal(err)
	}
	hits := 0
	for _, cn := range manifest.PatientIDs {
		if strings.Contains(string(raw), cn) {
			hits++
		}
	}
	if hits == 0 {
		t.Fatal("no patient id found in the raw input: the canary search is broken")
	}
	if found > 0 {
		t.Errorf("%d identifiers reached /metrics", found)
	}
}

// Label values that do not look like a type name or reason code, and
// labels past maxLabelValues, are counted under "other".
func TestBoundedLabels(t *testing.T) {
	m := map[string]int{"Patient": 2, "John Smith 1970-01-01": 1, "": 1, "bad\nline": 1}
	got := boundedLabels(m)
	if got["Patient"] != 2 || got["other"] != 3 || len(got) != 2 {
		t.Fatalf("boundedLabels = %v", got)
	}
	many := map[string]uint64{}
	for i := range maxLabelValues + 10 {
		many[strings.Repeat("a", 1+i%60)+string(rune('a'+i/60))] = 1
	}
	got = boundedLabels(many)
	if len(got) != maxLabelValues+1 || got["other"] != 10 {
		t.Fatalf("%d series, other = %v; want %d and 10", len(got), got["other"], maxLabelValues+1)
	}
}

// /readyz follows the store and the coordinator session.
func TestAgentReadiness(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Coordinators = []string{"127.0.0.1:1"}
	cfg.TLS = siteFiles(t, "st-mary")
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h := a.metricsHandler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store not open") {
		t.Fatalf("before Open: %d %q", code, body)
	}
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not started") {
		t.Fatalf("open, loop not started: %d %q", code, body)
	}
	for _, tt := range []struct {
		state, addr string
		code        int
		want        string
	}{
		{SessionConnecting, "", http.StatusOK, "retrying"},
		{SessionConnected, "127.0.0.1:7401", http.StatusOK, "connected to the coordinator at 127.0.0.1:7401"},
		{SessionRefused, "", http.StatusServiceUnavailable, "refused"},
		{SessionStopped, "", http.StatusServiceUnavailable, "stopped"},
	} {
		t.Run(tt.state, func(t *testing.T) {
			a.session.set(tt.state, tt.addr)
			if code, body := get("/readyz"); code != tt.code || !strings.Contains(body, tt.want) {
				t.Fatalf("/readyz = %d %q, want %d and %q", code, body, tt.code, tt.want)
			}
			ready := 0.0
			if tt.code == http.StatusOK {
				ready = 1
			}
			if _, body := get("/metrics"); !strings.Contains(body, "cohort_agent_ready "+map[float64]string{0: "0", 1: "1"}[ready]+"\n") {
				t.Fatalf("cohort_agent_ready is not %v:\n%s", ready, body)
			}
		})
	}
	// With no device subscriber the device families are absent, as before.
	if _, body := get("/metrics"); strings.Contains(body, "cohort_agent_device_") {
		t.Error("device metrics without a device subscriber")
	}
}
