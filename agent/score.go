package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/fhir"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Streaming scoring of device telemetry: every time the MQTT subscriber
// flushes readings to the store, the patients they were about are scored
// with each deployed production version (deploy.go), from their features
// as of now. Each score is written as a FHIR RiskAssessment to the risk
// outbox (DataDir/riskassessments, for the hospital's integration engine
// or, with RiskFHIRURL, POSTed to its FHIR server by the integration
// loop), and a score at or above the job's alert threshold is published
// as an alert to MQTT.AlertTopic. All of it stays at the site: the
// RiskAssessment names the hospital's own patient, the alert the
// patient's pseudonymous key.

// Alert is what the agent publishes to the alert topic.
type Alert struct {
	Job       string    `json:"job"`
	Model     string    `json:"model"`
	Round     uint64    `json:"round"`
	Patient   string    `json:"patient"` // the pseudonymous key
	Risk      float64   `json:"risk"`
	Threshold float64   `json:"threshold"`
	Time      time.Time `json:"time"`
	// Top are the main contributing features.
	Top []Contribution `json:"top"`
}

// scoringSink is the MQTT subscriber's store sink: it remembers whose
// readings it stored, and scores them after each flush.
type scoringSink struct {
	storeSink
	mu      sync.Mutex
	touched map[string]struct{}
}

func (s *scoringSink) Observation(o fhir.Observation) error {
	s.mu.Lock()
	s.touched[o.PatientID] = struct{}{}
	s.mu.Unlock()
	return s.storeSink.Observation(o)
}

func (s *scoringSink) Flush() error {
	err := s.storeSink.Flush()
	s.mu.Lock()
	ids := make([]string, 0, len(s.touched))
	for id := range s.touched {
		ids = append(ids, id)
	}
	clear(s.touched)
	s.mu.Unlock()
	if err == nil {
		s.a.scorePatients(ids)
	}
	return err
}

// scorePatients scores the patients (hospital ids) with every deployed
// version, writes a RiskAssessment for each score and publishes the
// alerts. Failures are logged (without patient data) and counted.
func (a *Agent) scorePatients(ids []string) {
	for _, job := range a.cfg.Deploy {
		d := a.deployedModel(job)
		if d == nil {
			continue
		}
		m, err := d.trainer()
		if err != nil {
			a.log.Warn("streaming scoring: model", "job", job, "err", err)
			continue
		}
		for _, id := range ids {
			pd, err := a.st.LoadPatient(id)
			if err != nil {
				a.log.Warn("streaming scoring: read store", "job", job, "err", err)
				continue
			}
			ds, err := features.Build(d.spec, []fhir.PatientData{pd})
			if err != nil || ds.Rows == 0 {
				continue // not in the job's cohort (yet)
			}
			x := ds.Row(0)
			p, err := m.Predict(x, 1)
			if err != nil {
				continue
			}
			contrib, err := contributions(d, m, x)
			if err != nil {
				continue
			}
			pr := &Prediction{Job: job, Model: d.Digest, Round: d.Round, Risk: float64(p[0])}
			pr.Alert = d.AlertThreshold > 0 && pr.Risk >= d.AlertThreshold
			for i, name := range d.features {
				f := d.spec.GetFeatures()[i]
				pr.Contributions = append(pr.Contributions, Contribution{Feature: name,
					Value: float64(x[i])*scaleOf(f.GetScale()) + f.GetCenter(), Contribution: contrib[i]})
			}
			sortContributions(pr.Contributions)
			d.mon.observe(x, pr.Risk)
			write := a.riskLast.admit(riskKey{job: job, patient: id}, pr, a.now(),
				a.cfg.RiskMinChange, time.Duration(a.cfg.RiskMinInterval))
			a.mu.Lock()
			a.stats.Scored++
			if !write {
				a.stats.ScoresUnchanged++
			}
			a.mu.Unlock()
			if !write {
				continue
			}
			if err := a.writeRiskAssessment(pr, "Patient/"+id); err != nil {
				a.log.Warn("risk assessment outbox", "job", job, "err", err)
			}
			if pr.Alert {
				a.publishAlert(pr, ds.Keys[0], d.AlertThreshold)
			}
		}
	}
}

// riskGate remembers the last score written as a RiskAssessment for each
// job and patient, so that a patient whose readings arrive every few
// seconds does not get a RiskAssessment (and an alert) for each batch. It
// lives in memory: after a restart, each patient's first score is
// written again.
type riskGate struct {
	mu     sync.Mutex
	last   map[riskKey]riskWritten
	admits int
}

type riskKey struct{ job, patient string }

type riskWritten struct {
	model string
	risk  float64
	alert bool
	at    time.Time
}

// admit reports whether pr, a new score of key's patient at now, is to be
// written (and records it if so): the first score, another model version,
// a crossing of the alert threshold, a move of at least minChange (any
// move when minChange is 0), or minInterval since the last one written
// (every score when minInterval is 0).
func (g *riskGate) admit(key riskKey, pr *Prediction, now time.Time, minChange float64, minInterval time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = make(map[riskKey]riskWritten)
	}
	// Now and then forget patients whose next score would be written
	// anyway, so the map holds only the recently scored.
	if g.admits++; g.admits%4096 == 0 {
		for k, w := range g.last {
			if now.Sub(w.at) >= minInterval {
				delete(g.last, k)
			}
		}
	}
	w, seen := g.last[key]
	moved := math.Abs(pr.Risk - w.risk)
	if seen && w.model == pr.Model && w.alert == pr.Alert &&
		(moved == 0 || moved < minChange-1e-9) && now.Sub(w.at) < minInterval { // 1e-9: 0.35-0.30 < 0.05 in floating point
		return false
	}
	g.last[key] = riskWritten{model: pr.Model, risk: pr.Risk, alert: pr.Alert, at: now}
	return true
}

// RiskOutbox is the directory streaming scoring writes RiskAssessments to.
func (a *Agent) RiskOutbox() string { return a.riskOutbox() }

// riskOutbox is where RiskAssessments are written.
func (a *Agent) riskOutbox() string {
	if a.cfg.RiskOutbox != "" {
		return a.cfg.RiskOutbox
	}
	return filepath.Join(a.cfg.DataDir, "riskassessments")
}

// riskAssessment is a FHIR R4 RiskAssessment for a prediction about
// subject, a reference to the hospital's Patient.
func riskAssessment(pr *Prediction, subject string, now time.Time, id string) map[string]any {
	var top []string
	for i, c := range pr.Contributions {
		if i == 3 {
			break
		}
		top = append(top, fmt.Sprintf("%s (%+.3f)", c.Feature, c.Contribution))
	}
	ra := map[string]any{
		"resourceType":       "RiskAssessment",
		"id":                 id,
		"status":             "final",
		"occurrenceDateTime": now.UTC().Format(time.RFC3339),
		"method": map[string]any{
			"coding": []any{map[string]any{"system": "urn:cohort:model", "code": pr.Model,
				"display": fmt.Sprintf("Cohort job %s, model version %s (round %d)", pr.Job, short(pr.Model), pr.Round)}},
			"text": "Cohort federated model " + pr.Model,
		},
		"prediction": []any{map[string]any{"outcome": map[string]any{"text": pr.Job}, "probabilityDecimal": pr.Risk}},
		"note": []any{map[string]any{"text": fmt.Sprintf("Model version %s (job %s, round %d). Main contributing features: %s.",
			pr.Model, pr.Job, pr.Round, strings.Join(top, ", "))}},
		"subject":    map[string]any{"reference": subject},
		"identifier": []any{map[string]any{"system": riskIDSystem, "value": id}},
	}
	return ra
}

// riskIDSystem is the identifier system of the agent's RiskAssessments:
// each carries its random id under it, and is POSTed as a conditional
// create on it, so a RiskAssessment sent twice (the agent stopped between
// the server's answer and moving the file to sent/) is kept once by a
// server that supports conditional create.
const riskIDSystem = "urn:cohort:risk-assessment"

// riskFileID is the id in a RiskAssessment file name (TIME-ID.json).
func riskFileID(name string) string {
	name = strings.TrimSuffix(name, ".json")
	return name[strings.LastIndexByte(name, '-')+1:]
}

// writeRiskAssessment writes a prediction's RiskAssessment to the outbox.
func (a *Agent) writeRiskAssessment(pr *Prediction, subject string) error {
	dir := a.riskOutbox()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	now := a.now()
	b, err := json.MarshalIndent(riskAssessment(pr, subject, now, id), "", "  ")
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s-%s.json", now.UTC().Format("20060102T150405.000Z"), id)
	if err := writeFileAtomic(filepath.Join(dir, name), b); err != nil {
		return err
	}
	a.mu.Lock()
	a.stats.RiskAssessments++
	a.mu.Unlock()
	return nil
}

// alerter publishes alerts to the hospital's MQTT broker.
type alerter struct {
	client mqtt.Client
	topic  string
}

// startAlerts connects the alert publisher, when MQTT.AlertTopic is set,
// to the broker the subscriber uses.
func (a *Agent) startAlerts(ctx context.Context, mc *MQTTConfig, broker string) {
	if mc.AlertTopic == "" {
		return
	}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(a.mqttClientID(mc) + "-alerts").
		SetUsername(mc.Username).SetPassword(mc.Password).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second)
	c := mqtt.NewClient(opts)
	c.Connect() // connects (and reconnects) in the background
	a.mu.Lock()
	a.alerts = &alerter{client: c, topic: mc.AlertTopic}
	a.mu.Unlock()
	go func() {
		<-ctx.Done()
		c.Disconnect(250)
	}()
}

// publishAlert publishes one alert (QoS 1) to the alert topic, with the
// job id as the last topic level.
func (a *Agent) publishAlert(pr *Prediction, patient string, threshold float64) {
	a.mu.Lock()
	al := a.alerts
	a.stats.Alerts++
	a.mu.Unlock()
	if al == nil {
		return
	}
	top := pr.Contributions
	if len(top) > 3 {
		top = top[:3]
	}
	b, err := json.Marshal(Alert{Job: pr.Job, Model: pr.Model, Round: pr.Round, Patient: patient, Risk: pr.Risk,
		Threshold: threshold, Time: a.now().UTC(), Top: top})
	if err != nil {
		return
	}
	tok := al.client.Publish(al.topic+"/"+url.PathEscape(pr.Job), 1, false, b)
	go func() {
		if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
			a.log.Warn("alert not published", "job", pr.Job, "err", tok.Error())
		}
	}()
}

// riskSendEvery is how often the outbox is sent to RiskFHIRURL (a
// variable for tests).
var riskSendEvery = 5 * time.Second

// riskPruneEvery is how often the sender removes RiskAssessments older
// than RiskSentRetention from RiskOutbox/sent.
const riskPruneEvery = time.Hour

// pruneRiskSent removes the RiskAssessments in RiskOutbox/sent written
// more than RiskSentRetention before now (none when it is 0), and returns
// how many it removed.
func (a *Agent) pruneRiskSent(now time.Time) int {
	keep := time.Duration(a.cfg.RiskSentRetention)
	if keep <= 0 {
		return 0
	}
	dir := filepath.Join(a.riskOutbox(), "sent")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		if fi, err := e.Info(); err == nil && now.Sub(fi.ModTime()) > keep {
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				removed++
			}
		}
	}
	if removed > 0 {
		a.log.Info("removed delivered risk assessments past their retention", "count", removed, "retention", keep.String())
	}
	return removed
}

// runRiskSender POSTs the RiskAssessments of the outbox to the hospital's
// FHIR server (RiskFHIRURL) until ctx ends, moving each accepted one to
// RiskOutbox/sent; a refused or unsent one stays and is tried again.
func (a *Agent) runRiskSender(ctx context.Context) {
	client := &http.Client{Timeout: 10 * time.Second}
	endpoint := strings.TrimSuffix(a.cfg.RiskFHIRURL, "/") + "/RiskAssessment"
	t := time.NewTicker(riskSendEvery)
	defer t.Stop()
	var pruned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := a.now(); now.Sub(pruned) >= riskPruneEvery {
			a.pruneRiskSent(now)
			pruned = now
		}
		dir := a.riskOutbox()
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(b))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "application/fhir+json")
			req.Header.Set("If-None-Exist", "identifier="+riskIDSystem+"|"+riskFileID(e.Name()))
			resp, err := client.Do(req)
			if err != nil {
				a.log.Warn("risk assessments not sent to the FHIR server; will retry", "err", err)
				break
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				a.log.Warn("the FHIR server refused a risk assessment; it stays in the outbox", "status", resp.StatusCode)
				continue
			}
			err = os.MkdirAll(filepath.Join(dir, "sent"), 0o700)
			if err == nil {
				err = os.Rename(path, filepath.Join(dir, "sent", e.Name()))
			}
			if err != nil {
				a.log.Warn("a sent risk assessment stays in the outbox and will be sent again", "file", e.Name(), "err", err)
			}
			a.mu.Lock()
			a.stats.RiskAssessmentsPosted++
			a.mu.Unlock()
		}
	}
}
