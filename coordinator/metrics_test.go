package coordinator

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics GETs /metrics from a status address and parses it as the
// Prometheus text format; it returns the families and the raw body.
func scrapeMetrics(t *testing.T, addr string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v\n%s", err, body)
	}
	return fams, string(body)
}

// metricValue is the value of the series of family name whose labels
// include the given name=value pairs; ok is false when there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
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
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetUntyped() != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func mustMetric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metricValue(fams, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in /metrics", name, labels)
	}
	return v
}

func getStatusText(t *testing.T, url string) (int, string) {
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

// A round moves the coordinator's counters and gauges on /metrics, every
// Stats counter is exported, and no site or job id reaches a metric name,
// a label or a help text.
func TestMetricsMoveAfterRoundAndHoldNoIDs(t *testing.T) {
	const site, job, stranger = "canary-site-4f9c2e", "canary-job-7d1b3a", "canary-stranger-93ab"
	tc := startClusterWith(t, 1, []string{site}, []JobSpec{testJob(job, 2, 1)}, func(c *Config) { c.StatusAddr = "127.0.0.1:0" })
	leader, _ := tc.leader(t)
	waitFor(t, leader, "the leader ready", leader.isReady)
	addr := leader.StatusAddr()

	before, _ := scrapeMetrics(t, addr)
	for _, s := range statsCounters {
		name := s.desc.String()
		if !strings.Contains(name, `"cohort_coordinator_`) || !strings.Contains(name, `_total"`) {
			t.Errorf("counter %s is not named cohort_coordinator_<name>_total", name)
		}
	}
	for _, name := range []string{
		"cohort_coordinator_handshakes_refused_total", "cohort_coordinator_frames_rejected_total",
		"cohort_coordinator_unknown_sites_total", "cohort_coordinator_updates_accepted_total",
		"cohort_coordinator_updates_rejected_total", "cohort_coordinator_rounds_committed_total",
		"cohort_coordinator_rounds_failed_total", "cohort_coordinator_bytes_received_total",
		"cohort_coordinator_bytes_sent_total", "cohort_coordinator_blobs_fetched_total",
		"cohort_coordinator_blob_bytes_pushed_total", "cohort_coordinator_blob_bytes_served_total",
		"cohort_coordinator_blobs_collected_total", "cohort_coordinator_uploads_interrupted_total",
		"cohort_coordinator_uploads_resumed_total", "cohort_coordinator_updates_late_total",
		"cohort_coordinator_updates_not_asked_total",
	} {
		if f := before[name]; f == nil || f.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s missing or not a counter", name)
		}
	}
	if len(statsCounters) < 17 {
		t.Errorf("only %d Stats counters exported", len(statsCounters))
	}
	for name, want := range map[string]float64{
		"cohort_coordinator_is_leader":    1,
		"cohort_coordinator_ready":        1,
		"cohort_coordinator_leader_known": 1,
		"cohort_coordinator_sites":        1,
	} {
		if got := mustMetric(t, before, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := mustMetric(t, before, "cohort_coordinator_raft_state", "state", "leader"); got != 1 {
		t.Errorf("raft_state{state=leader} = %v", got)
	}
	if got := mustMetric(t, before, "cohort_coordinator_raft_state", "state", "follower"); got != 0 {
		t.Errorf("raft_state{state=follower} = %v", got)
	}
	if got := mustMetric(t, before, "cohort_coordinator_cluster_servers", "suffrage", "voter"); got != 1 {
		t.Errorf("cluster_servers{suffrage=voter} = %v", got)
	}
	for state, want := range map[string]float64{"running": 1, "done": 0, "failed": 0} {
		if got := mustMetric(t, before, "cohort_coordinator_jobs", "state", state); got != want {
			t.Errorf("jobs{state=%s} = %v, want %v", state, got, want)
		}
	}
	if mustMetric(t, before, "cohort_coordinator_raft_term") < 1 || mustMetric(t, before, "cohort_coordinator_raft_applied_index") < 1 {
		t.Error("raft term or applied index not reported")
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if before[name] == nil {
			t.Errorf("%s missing: the Go and process collectors are not registered", name)
		}
	}

	// A stranger's refused hello is counted, not named.
	if a, err := dialRaw(t, leader.AgentAddr(), tc.ca.issue(t, pki.RoleSite, stranger)); err == nil {
		a.call(t, hello())
	}
	// One round: download, upload, commit.
	a, offer := tc.offerFor(t, leader, site)
	if offer == nil {
		t.Fatal("no task offered")
	}
	if fams, _ := scrapeMetrics(t, addr); mustMetric(t, fams, "cohort_coordinator_rounds_open") != 1 {
		t.Error("an offered round is not counted in rounds_open")
	}
	download(t, a, offer)
	if resp := upload(t, a, offer, []float32{1, 2, 3, 4}, 10); resp.GetAck() == nil {
		t.Fatalf("upload answered %v", resp)
	}
	waitFor(t, leader, "round 1 committed", func() bool {
		j, _ := leader.Job(job)
		return j.CommittedRounds() >= 1
	})
	appliedBefore := mustMetric(t, before, "cohort_coordinator_raft_applied_index")
	after, body := scrapeMetrics(t, addr)
	for _, name := range []string{
		"cohort_coordinator_rounds_committed_total", "cohort_coordinator_updates_accepted_total",
		"cohort_coordinator_bytes_received_total", "cohort_coordinator_bytes_sent_total",
		"cohort_coordinator_unknown_sites_total",
	} {
		if b, a := mustMetric(t, before, name), mustMetric(t, after, name); a <= b {
			t.Errorf("%s did not move after a round: %v → %v", name, b, a)
		}
	}
	if got := mustMetric(t, after, "cohort_coordinator_raft_applied_index"); got <= appliedBefore {
		t.Errorf("raft_applied_index did not move: %v → %v", appliedBefore, got)
	}
	if got, want := mustMetric(t, after, "cohort_coordinator_rounds_committed_total"), float64(leader.Stats().RoundsCommitted.Load()); got != want {
		t.Errorf("rounds_committed_total = %v, Stats says %v", got, want)
	}

	// The canary: no id anywhere in the exposition.
	for _, canary := range []string{site, job, stranger, "canary"} {
		if strings.Contains(body, canary) {
			t.Errorf("/metrics holds %q", canary)
		}
	}
	for _, f := range after {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !enumLike(l.GetValue()) && !strings.HasPrefix(f.GetName(), "go_") && !strings.HasPrefix(f.GetName(), "process_") {
					t.Errorf("%s has label %s=%q, not an enum value", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// /readyz is 200 on every member of a cluster with a leader, and the
// follower's answer names the leader.
func TestReadyzOnClusterMembers(t *testing.T) {
	tc := startClusterWith(t, 3, []string{"a"}, nil, func(c *Config) { c.StatusAddr = "127.0.0.1:0" })
	leader, followers := tc.leader(t)
	waitFor(t, leader, "the leader ready", leader.isReady)
	code, body := getStatusText(t, "http://"+leader.StatusAddr()+"/readyz")
	if code != http.StatusOK || body != "ready: leader\n" {
		t.Fatalf("leader /readyz = %d %q", code, body)
	}
	for _, f := range followers {
		code, body := getStatusText(t, "http://"+f.StatusAddr()+"/readyz")
		if code != http.StatusOK || !strings.Contains(body, leader.ID()) {
			t.Fatalf("follower %s /readyz = %d %q", f.ID(), code, body)
		}
		fams, _ := scrapeMetrics(t, f.StatusAddr())
		if mustMetric(t, fams, "cohort_coordinator_is_leader") != 0 || mustMetric(t, fams, "cohort_coordinator_ready") != 1 {
			t.Errorf("follower %s: is_leader or ready wrong", f.ID())
		}
		if got := mustMetric(t, fams, "cohort_coordinator_cluster_servers", "suffrage", "voter"); got != 3 {
			t.Errorf("follower %s counts %v voters", f.ID(), got)
		}
	}
	if code, _ := getStatusText(t, "http://"+leader.StatusAddr()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
}

// A node that is not running Raft, or that is in no cluster, is not ready;
// its /metrics still answers.
func TestReadyzNotReady(t *testing.T) {
	ca := newTestCA(t, "fed")
	c := DefaultConfig()
	c.ID = "c1"
	c.DataDir = t.TempDir()
	c.RaftAddr, c.AgentAddr = "127.0.0.1:0", "127.0.0.1:0"
	c.TLS = ca.issue(t, pki.RoleCoordinator, c.ID, "127.0.0.1")
	c.HeartbeatTimeout = Duration(200 * time.Millisecond)
	c.ElectionTimeout = Duration(200 * time.Millisecond)
	c.LeaderLeaseTimeout = Duration(100 * time.Millisecond)
	n, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		n.statusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "raft not started") {
		t.Fatalf("before Run: /readyz = %d %q", code, body)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "cohort_coordinator_ready 0") {
		t.Fatalf("before Run: /metrics = %d %q", code, body)
	}

	// Running, but never bootstrapped nor joined: in no cluster.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, n, "raft started", func() bool { return n.raftNode() != nil })
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not a member") {
		t.Fatalf("unbootstrapped: /readyz = %d %q", code, body)
	}
}

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"HandshakesRefused": "handshakes_refused",
		"BlobBytesPushed":   "blob_bytes_pushed",
		"UpdatesNotAsked":   "updates_not_asked",
		"HTTPBytes":         "http_bytes",
		"X":                 "x",
	} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}
