package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics serves GET /metrics (Prometheus), GET /healthz and
// GET /readyz on ln until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: a.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// metricsHandler is the metrics listener's mux. Its registry is the
// agent's own (nothing is registered globally).
func (a *Agent) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		statusCollector{a},
		monitorCollector{a},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		ready, reason := a.readiness()
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		fmt.Fprintf(w, "ready: %s\n", reason)
	})
	return mux
}

// readiness reports whether the agent can do its work: its store is open
// and it holds a coordinator session or is retrying to get one (a refused
// or stopped agent is not ready). reason is a short explanation for people.
func (a *Agent) readiness() (ready bool, reason string) {
	a.mu.Lock()
	open := a.st != nil
	a.mu.Unlock()
	if !open {
		return false, "store not open"
	}
	state, addr := a.session.get()
	switch state {
	case SessionConnected:
		return true, "connected to the coordinator at " + addr
	case SessionConnecting:
		return true, "store open; connecting to the coordinators (retrying)"
	case SessionRefused:
		return false, "refused by the coordinator"
	case SessionStopped:
		return false, "stopped"
	case SessionRevoked:
		return false, "this site has been revoked by the federation operator"
	}
	return false, "not started"
}

// maxLabelValues bounds the series of one labelled family; the rest are
// summed under "other".
const maxLabelValues = 100

func metricDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// Metric names are kept from the hand-written exposition that came
// before, so dashboards and alerts that use them go on working.
var (
	descIngested = metricDesc("cohort_agent_resources_ingested_total", "FHIR resources ingested, by resource type.", "type")
	descSkipped  = metricDesc("cohort_agent_resources_skipped_total", "FHIR resources skipped (valid but unused), by type or reason.", "reason")
	descRejected = metricDesc("cohort_agent_resources_rejected_total", "FHIR resources rejected and quarantined, by reason.", "reason")

	descDevReceived = metricDesc("cohort_agent_device_readings_received_total", "MQTT messages delivered by the broker.")
	descDevStored   = metricDesc("cohort_agent_device_readings_stored_total", "Device readings stored and acknowledged.")
	descDevRejected = metricDesc("cohort_agent_device_readings_rejected_total", "Device payloads rejected and quarantined, by reason.", "reason")
	descDevQueue    = metricDesc("cohort_agent_device_queue_depth", "Device readings decoded but not yet stored.")

	descRounds     = metricDesc("cohort_agent_rounds_trained_total", "Training rounds this site trained.")
	descAcked      = metricDesc("cohort_agent_updates_acked_total", "Updates the coordinator acknowledged.")
	descResent     = metricDesc("cohort_agent_updates_resent_total", "Acknowledged updates sent again after a failover.")
	descUpResumed  = metricDesc("cohort_agent_uploads_resumed_total", "Uploads continued from the byte an interrupted one reached.")
	descDnResumed  = metricDesc("cohort_agent_downloads_resumed_total", "Model downloads continued from the byte an interrupted one reached.")
	descReconnects = metricDesc("cohort_agent_reconnects_total", "Reconnections to the coordinators.")
	descDeclined   = metricDesc("cohort_agent_rounds_declined_total", "Rounds this site declined, by reason (too_few_records, spec, model).", "reason")
	descBytesSent  = metricDesc("cohort_agent_bytes_sent_total", "Bytes sent to the coordinators (through the egress guard).")

	descDeployments    = metricDesc("cohort_agent_deployments_total", "Production model versions this site switched to.")
	descDeployRefused  = metricDesc("cohort_agent_deployments_refused_total", "Production model versions this site refused (weights not matching their digest, a spec that does not fit).")
	descPredictions    = metricDesc("cohort_agent_predictions_total", "Local inference requests answered.")
	descPredictRefused = metricDesc("cohort_agent_predictions_refused_total", "Local inference requests refused for no or a wrong bearer token.")
	descScored         = metricDesc("cohort_agent_scores_total", "Streaming scores of patients whose device telemetry arrived.")
	descRiskWritten    = metricDesc("cohort_agent_risk_assessments_total", "Streaming scores written as FHIR RiskAssessments to the risk outbox.")
	descScoresSame     = metricDesc("cohort_agent_scores_unchanged_total", "Streaming scores not written: too close to the patient's last RiskAssessment (risk_min_change, risk_min_interval).")
	descRiskPosted     = metricDesc("cohort_agent_risk_assessments_posted_total", "RiskAssessments the hospital's FHIR server accepted.")
	descAlerts         = metricDesc("cohort_agent_alerts_total", "Alerts published for RiskAssessments at or above a job's alert threshold.")

	descReady     = metricDesc("cohort_agent_ready", "1 if /readyz answers 200: the store is open and the agent holds a coordinator session or is retrying.")
	descConnected = metricDesc("cohort_agent_coordinator_connected", "1 while the agent holds a session with the leading coordinator.")
	descRevoked   = metricDesc("cohort_agent_revoked", "1 once a coordinator has said this site was revoked.")

	descCertExpiry      = metricDesc("cohort_agent_cert_expiry_timestamp_seconds", "When the site certificate in use expires (Unix time).")
	descCertRenewals    = metricDesc("cohort_agent_cert_renewals_total", "Site certificate renewals.")
	descCertRenewalFail = metricDesc("cohort_agent_cert_renewal_failures_total", "Failed site certificate renewal attempts.")
)

// statusCollector exports the agent's status snapshot (the one
// status.json holds) at scrape time. Label values are resource types and
// fixed reason codes, never data: a value that does not look like one is
// counted under "other".
type statusCollector struct{ a *Agent }

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIngested, descSkipped, descRejected,
		descDevReceived, descDevStored, descDevRejected, descDevQueue,
		descRounds, descAcked, descResent, descUpResumed, descDnResumed, descReconnects, descDeclined, descBytesSent,
		descDeployments, descDeployRefused, descPredictions, descPredictRefused,
		descScored, descRiskWritten, descScoresSame, descRiskPosted, descAlerts,
		descReady, descConnected, descRevoked, descCertExpiry, descCertRenewals, descCertRenewalFail} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.status()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	for k, v := range boundedLabels(st.Ingested) {
		counter(descIngested, v, k)
	}
	for k, v := range boundedLabels(st.Skipped) {
		counter(descSkipped, v, k)
	}
	for k, v := range boundedLabels(st.Rejected) {
		counter(descRejected, v, k)
	}
	if d := st.Devices; d != nil {
		counter(descDevReceived, float64(d.Received))
		counter(descDevStored, float64(d.Stored))
		for k, v := range boundedLabels(d.Rejected) {
			counter(descDevRejected, v, k)
		}
		gauge(descDevQueue, float64(d.Queue))
	}
	counter(descRounds, float64(st.RoundsTrained))
	counter(descAcked, float64(st.UpdatesAcked))
	counter(descResent, float64(st.UpdatesResent))
	counter(descUpResumed, float64(st.UploadsResumed))
	counter(descDnResumed, float64(st.DownloadsResumed))
	counter(descReconnects, float64(st.Reconnects))
	for k, v := range boundedLabels(st.Declined) {
		counter(descDeclined, v, k)
	}
	counter(descDeployments, float64(st.Deployments))
	counter(descDeployRefused, float64(st.DeploymentsRefused))
	counter(descPredictions, float64(st.Predictions))
	counter(descPredictRefused, float64(st.PredictionsRefused))
	counter(descScored, float64(st.Scored))
	counter(descRiskWritten, float64(st.RiskAssessments))
	counter(descScoresSame, float64(st.ScoresUnchanged))
	counter(descRiskPosted, float64(st.RiskAssessmentsPosted))
	counter(descAlerts, float64(st.Alerts))
	counter(descBytesSent, float64(st.BytesSent))
	ready, _ := c.a.readiness()
	gauge(descReady, gaugeBool(ready))
	gauge(descConnected, gaugeBool(st.Session == SessionConnected))
	gauge(descRevoked, gaugeBool(st.Session == SessionRevoked))
	gauge(descCertExpiry, float64(st.CertExpires.Unix()))
	counter(descCertRenewals, float64(st.CertRenewals))
	counter(descCertRenewalFail, float64(st.CertRenewalFailures))
}

// boundedLabels returns m's counts keyed by safe label values: keys that
// do not look like a type name or reason code, and keys past the first
// maxLabelValues (in sorted order), are summed under "other".
func boundedLabels[V int | uint64](m map[string]V) map[string]float64 {
	out := make(map[string]float64, min(len(m), maxLabelValues+1))
	kept := 0
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if labelValueOK(k) && kept < maxLabelValues {
			out[k] += float64(m[k])
			kept++
			continue
		}
		out["other"] += float64(m[k])
	}
	return out
}

// labelValueOK reports whether s has the shape of a resource type or a
// reason code: 1 to 64 ASCII letters, digits, '-', '_' or '.'.
func labelValueOK(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func gaugeBool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
