package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/device"
	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestStreamingScoringAlertsAndRiskAssessments: telemetry for a patient
// arriving over MQTT is scored with the deployed production version; the
// score is written as a FHIR RiskAssessment naming the version, and, at
// or above the job's alert threshold, published as an alert on the alert
// topic.
func TestStreamingScoringAlertsAndRiskAssessments(t *testing.T) {
	p := newTestPKI(t)
	dep, body := deploymentOf(evalWeights, 0.001) // every score alerts
	ds := &deployScript{dep: dep}
	c := &scriptedCoordinator{t: t, model: body, offer: &pb.TaskOffer{Model: dep.GetModel()}, handle: ds.handle, done: make(chan struct{})}
	broker := freeLoopback(t)
	var patient string
	a, _, _ := startDeployAgent(t, c, p, filepath.Join(t.TempDir(), "agent"), func(cfg *Config, data string) {
		cfg.MQTT = &MQTTConfig{Embedded: broker, AlertTopic: "cohort/alerts"}
		f, err := os.Open(filepath.Join(data, synth.PatientFile))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Scan()
		var pt struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &pt); err != nil || pt.ID == "" {
			t.Fatalf("the fixture's first patient: %v", err)
		}
		patient = pt.ID
	})
	waitUntil(t, "the version to be deployed and the subscriber to connect", func() bool {
		st, ok := a.DeviceStats()
		return a.deployedModel("sepsis") != nil && ok && st.Connected
	})

	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("alert-console"))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer cl.Disconnect(100)
	var (
		mu     sync.Mutex
		alerts []Alert
	)
	if tok := cl.Subscribe("cohort/alerts/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		var al Alert
		if json.Unmarshal(m.Payload(), &al) == nil && strings.HasSuffix(m.Topic(), "/sepsis") {
			mu.Lock()
			alerts = append(alerts, al)
			mu.Unlock()
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	for i := range 3 {
		b, _ := json.Marshal(device.Reading{DeviceID: "mon-1", Patient: patient, Time: time.Now().Add(-time.Duration(i) * time.Minute).UTC(),
			LOINC: "8867-4", Value: float64(110 + i), Unit: "/min"})
		if tok := cl.Publish(device.Topic("st-mary", "mon-1"), 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	waitUntil(t, "an alert", func() bool { mu.Lock(); defer mu.Unlock(); return len(alerts) > 0 })
	mu.Lock()
	al := alerts[0]
	mu.Unlock()
	if al.Model != dep.GetModel().GetSha256() || al.Round != 7 || !(al.Risk >= 0.001) || len(al.Patient) != 32 || al.Patient == patient || len(al.Top) != 3 {
		t.Fatalf("alert %+v", al)
	}
	ents, err := os.ReadDir(a.riskOutbox())
	if err != nil || len(ents) == 0 {
		t.Fatalf("risk outbox: %d files, %v", len(ents), err)
	}
	raw, err := os.ReadFile(filepath.Join(a.riskOutbox(), ents[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	var ra struct {
		ResourceType string `json:"resourceType"`
		Subject      struct {
			Reference string `json:"reference"`
		} `json:"subject"`
		Method struct {
			Coding []struct{ Code string } `json:"coding"`
		} `json:"method"`
		Prediction []struct {
			ProbabilityDecimal float64 `json:"probabilityDecimal"`
		} `json:"prediction"`
		Note []struct{ Text string } `json:"note"`
	}
	if err := json.Unmarshal(raw, &ra); err != nil {
		t.Fatal(err)
	}
	if ra.ResourceType != "RiskAssessment" || ra.Subject.Reference != "Patient/"+patient || ra.Method.Coding[0].Code != dep.GetModel().GetSha256() ||
		len(ra.Prediction) != 1 || !strings.Contains(ra.Note[0].Text, dep.GetModel().GetSha256()) {
		t.Fatalf("risk assessment:\n%s", raw)
	}
	if st := a.Stats(); st.Scored == 0 || st.Alerts == 0 || st.RiskAssessments == 0 {
		t.Fatalf("stats %+v", st)
	}
	// Drift and scores are metrics.
	rec := httptest.NewRecorder()
	a.metricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	metrics := rec.Body.String()
	for _, want := range []string{`cohort_agent_feature_psi{feature="age",job="sepsis"}`, `cohort_agent_risk_score_count{job="sepsis"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestDriftMonitor: the PSI of a feature is 0 when the scored patients
// look like the reference, and large when they all fall in one tail.
func TestDriftMonitor(t *testing.T) {
	ds := &features.Dataset{Rows: 1000, Cols: 1}
	for i := range 1000 {
		ds.X = append(ds.X, float32(i)/1000)
		ds.Y = append(ds.Y, 0)
		ds.Keys = append(ds.Keys, "k")
	}
	m := newMonitor(ds)
	for i := range 1000 {
		m.observe([]float32{float32(i) / 1000}, 0.05)
	}
	if p := m.psi()[0]; p > 0.01 {
		t.Fatalf("PSI of the reference itself = %v", p)
	}
	shifted := newMonitor(ds)
	for range 1000 {
		shifted.observe([]float32{0.99}, 0.95)
	}
	if p := shifted.psi()[0]; p < 1 {
		t.Fatalf("PSI of a population all in the top decile = %v", p)
	}
	if shifted.scores[psiBins-1] != 1000 || m.scores[0] != 1000 {
		t.Fatalf("score histograms %v, %v", m.scores, shifted.scores)
	}
}

// TestRiskAssessmentsPostedToFHIRServer: with risk_fhir_url, each
// RiskAssessment of the outbox is POSTed to BASE/RiskAssessment as FHIR
// JSON and moved to sent/ once accepted; one the server refuses stays.
func TestRiskAssessmentsPostedToFHIRServer(t *testing.T) {
	var (
		mu     sync.Mutex
		posted []string
		refuse = true
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/fhir/RiskAssessment" || r.Header.Get("Content-Type") != "application/fhir+json" {
			t.Errorf("%s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		// A conditional create on the RiskAssessment's own identifier.
		var ra struct {
			Identifier []struct{ System, Value string } `json:"identifier"`
		}
		if err := json.Unmarshal(b, &ra); err != nil || len(ra.Identifier) != 1 ||
			r.Header.Get("If-None-Exist") != "identifier="+riskIDSystem+"|"+ra.Identifier[0].Value || ra.Identifier[0].System != riskIDSystem {
			t.Errorf("If-None-Exist %q for identifier %+v (%v)", r.Header.Get("If-None-Exist"), ra.Identifier, err)
		}
		if refuse {
			refuse = false
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		posted = append(posted, string(b))
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	dir := t.TempDir()
	a := &Agent{cfg: Config{DataDir: dir, RiskFHIRURL: srv.URL + "/fhir/"}, log: slog.New(slog.DiscardHandler), now: time.Now}
	pr := &Prediction{Job: "sepsis", Model: strings.Repeat("c", 64), Round: 4, Risk: 0.42,
		Contributions: []Contribution{{Feature: "age", Value: 80, Contribution: 0.3}}}
	for range 2 {
		if err := a.writeRiskAssessment(pr, "Patient/p1"); err != nil {
			t.Fatal(err)
		}
	}
	defer func(d time.Duration) { riskSendEvery = d }(riskSendEvery)
	riskSendEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.runRiskSender(ctx); close(done) }()
	// The server records a POST before it answers; the agent counts it
	// and moves the file once it has the answer.
	waitUntil(t, "both assessments posted and moved", func() bool { return a.Stats().RiskAssessmentsPosted == 2 })
	cancel()
	<-done
	sent, _ := os.ReadDir(filepath.Join(a.riskOutbox(), "sent"))
	if len(sent) != 2 || a.Stats().RiskAssessmentsPosted != 2 || !strings.Contains(posted[0], `"resourceType": "RiskAssessment"`) {
		t.Fatalf("%d sent files, stats %+v, first %s", len(sent), a.Stats(), posted[0])
	}
}

// TestRiskGate: a patient's score becomes a RiskAssessment when it is the
// first, from another model version, crosses the alert threshold, moved
// by at least the minimum change, or the minimum interval passed; not
// otherwise.
func TestRiskGate(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	pr := func(model string, risk float64, alert bool) *Prediction {
		return &Prediction{Model: model, Risk: risk, Alert: alert}
	}
	var g riskGate
	k, other := riskKey{job: "sepsis", patient: "p1"}, riskKey{job: "sepsis", patient: "p2"}
	steps := []struct {
		name  string
		key   riskKey
		pr    *Prediction
		after time.Duration
		want  bool
	}{
		{"first score", k, pr("m1", 0.30, false), 0, true},
		{"the same score again", k, pr("m1", 0.30, false), time.Second, false},
		{"a small move", k, pr("m1", 0.34, false), 2 * time.Second, false},
		{"another patient", other, pr("m1", 0.30, false), 3 * time.Second, true},
		{"a move of the minimum from the last written", k, pr("m1", 0.35, false), 4 * time.Second, true},
		{"crossing the alert threshold", k, pr("m1", 0.36, true), 5 * time.Second, true},
		{"staying above it", k, pr("m1", 0.37, true), 6 * time.Second, false},
		{"back under it", k, pr("m1", 0.36, false), 7 * time.Second, true},
		{"another model version", k, pr("m2", 0.36, false), 8 * time.Second, true},
		{"the interval passed", k, pr("m2", 0.36, false), 8*time.Second + time.Hour, true},
	}
	for _, s := range steps {
		if got := g.admit(s.key, s.pr, t0.Add(s.after), 0.05, time.Hour); got != s.want {
			t.Errorf("%s: admit = %v, want %v", s.name, got, s.want)
		}
	}
	// With a minimum interval of 0, every score is written.
	var all riskGate
	for i := range 3 {
		if !all.admit(k, pr("m1", 0.3, false), t0.Add(time.Duration(i)*time.Second), 0.05, 0) {
			t.Fatalf("score %d not written with risk_min_interval 0", i)
		}
	}
}

// TestPruneRiskSent: delivered RiskAssessments older than the retention
// are removed from sent/; newer ones, undelivered ones and other files
// stay; a retention of 0 keeps everything.
func TestPruneRiskSent(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	a := &Agent{cfg: Config{DataDir: dir, RiskSentRetention: Duration(24 * time.Hour)}, log: slog.New(slog.DiscardHandler), now: time.Now}
	sent := filepath.Join(a.riskOutbox(), "sent")
	if err := os.MkdirAll(sent, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(path string, age time.Duration) {
		t.Helper()
		if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(sent, "old.json"), 48*time.Hour)
	write(filepath.Join(sent, "new.json"), time.Hour)
	write(filepath.Join(sent, "notes.txt"), 48*time.Hour)
	write(filepath.Join(a.riskOutbox(), "unsent.json"), 48*time.Hour)
	keep := &Agent{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), now: time.Now}
	if n := keep.pruneRiskSent(now); n != 0 {
		t.Fatalf("retention 0 removed %d", n)
	}
	if n := a.pruneRiskSent(now); n != 1 {
		t.Fatalf("removed %d, want 1", n)
	}
	for _, p := range []string{filepath.Join(sent, "new.json"), filepath.Join(sent, "notes.txt"), filepath.Join(a.riskOutbox(), "unsent.json")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(sent, "old.json")); !os.IsNotExist(err) {
		t.Errorf("old.json stays: %v", err)
	}
}

// TestRiskConfigValidation: the scoring settings' defaults are valid, and
// out-of-range values are refused with the setting's name.
func TestRiskConfigValidation(t *testing.T) {
	base := DefaultConfig()
	base.DataDir, base.Coordinators = "x", []string{"127.0.0.1:7000"}
	if err := base.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"negative change", func(c *Config) { c.RiskMinChange = -0.1 }, "risk_min_change"},
		{"change above 1", func(c *Config) { c.RiskMinChange = 1.5 }, "risk_min_change"},
		{"NaN change", func(c *Config) { c.RiskMinChange = math.NaN() }, "risk_min_change"},
		{"negative interval", func(c *Config) { c.RiskMinInterval = Duration(-time.Second) }, "risk_min_interval"},
		{"negative retention", func(c *Config) { c.RiskSentRetention = Duration(-time.Second) }, "risk_sent_retention"},
	} {
		c := base
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}
