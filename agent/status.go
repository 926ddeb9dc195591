package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// StatusFile is the name, in the data directory, of the status the agent
// writes for `cohort agent status`. It holds counts and reasons only.
const StatusFile = "status.json"

// Status is the agent's state as written to StatusFile.
type Status struct {
	Site    string    `json:"site"`
	Updated time.Time `json:"updated"`
	// Ingested, Skipped and Rejected count FHIR resources: ingested by
	// type, skipped and rejected by type or reason.
	Ingested map[string]int `json:"ingested"`
	Skipped  map[string]int `json:"skipped"`
	Rejected map[string]int `json:"rejected"`
	// Rounds are the training rounds this site trained, and the updates the
	// coordinator acknowledged.
	RoundsTrained int `json:"rounds_trained"`
	UpdatesAcked  int `json:"updates_acked"`
	UpdatesResent int `json:"updates_resent"`
	// UploadsResumed and DownloadsResumed count transfers continued from
	// the byte an interrupted one reached.
	UploadsResumed   int    `json:"uploads_resumed"`
	DownloadsResumed int    `json:"downloads_resumed"`
	Reconnects       int    `json:"reconnects"`
	LastRoundError   string `json:"last_round_error,omitempty"`
	// Declined counts the rounds this site declined, by reason code
	// (too_few_records, spec, model): a job's spec it refuses is "spec".
	Declined  map[string]int `json:"declined,omitempty"`
	BytesSent int64          `json:"bytes_sent"`
	// Deployments are production versions this site switched to, and
	// DeploymentsRefused those it refused (weights that do not match
	// their digest, a spec that does not fit).
	Deployments        int `json:"deployments"`
	DeploymentsRefused int `json:"deployments_refused"`
	// Predictions are local inference requests answered, and
	// PredictionsRefused those refused for no or a wrong token.
	Predictions        int `json:"predictions"`
	PredictionsRefused int `json:"predictions_refused"`
	// Streaming scoring: scores, those written as RiskAssessments and
	// those not (unchanged since the last one written), RiskAssessments
	// the FHIR server accepted, and alerts published.
	Scored                int `json:"scored,omitempty"`
	RiskAssessments       int `json:"risk_assessments,omitempty"`
	ScoresUnchanged       int `json:"scores_unchanged,omitempty"`
	RiskAssessmentsPosted int `json:"risk_assessments_posted,omitempty"`
	Alerts                int `json:"alerts,omitempty"`
	// Session says whether the agent holds a session with the leading
	// coordinator (SessionConnected) or is trying to get one; empty before
	// the agent first tries.
	Session string `json:"session,omitempty"`
	// Devices counts MQTT telemetry, when the agent subscribes to it.
	Devices *DeviceStatus `json:"devices,omitempty"`
	// CertExpires is when the site certificate in use expires;
	// NextRenewal when the agent will renew it (zero with renewal off).
	CertExpires time.Time `json:"cert_expires,omitzero"`
	NextRenewal time.Time `json:"next_renewal,omitzero"`
	// CertRenewals and CertRenewalFailures count renewals and failed
	// attempts; LastRenewalError is the last failure, until a success.
	CertRenewals        int    `json:"cert_renewals"`
	CertRenewalFailures int    `json:"cert_renewal_failures"`
	LastRenewalError    string `json:"last_renewal_error,omitempty"`
}

// DeviceStatus counts device readings.
type DeviceStatus struct {
	Received int64             `json:"received"`
	Stored   int64             `json:"stored"`
	Rejected map[string]uint64 `json:"rejected"`
	Queue    int               `json:"queue"`
}

// Session states, in Status.Session.
const (
	// SessionConnecting: dialling the coordinators, or waiting to retry.
	SessionConnecting = "connecting"
	// SessionConnected: a session with the leader is up.
	SessionConnected = "connected"
	// SessionRefused: a coordinator refused this site; the agent stopped.
	SessionRefused = "refused"
	// SessionStopped: the agent's federation loop has ended.
	SessionStopped = "stopped"
	// SessionRevoked: the federation operator revoked this site; the
	// coordinators refuse it, and the agent retries only rarely.
	SessionRevoked = "revoked"
)

// sessionState is the agent's coordinator session as /readyz and the
// status report see it. Its lock is a leaf: nothing is taken while it is
// held.
type sessionState struct {
	mu    sync.Mutex
	state string
	addr  string
	// revoked holds the state at SessionRevoked until a coordinator
	// welcomes the site again; wasRevoked stays set.
	revoked, wasRevoked bool
}

func (s *sessionState) set(state, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked && state != SessionConnected {
		return
	}
	s.state, s.addr, s.revoked = state, addr, false
}

// revoke sets SessionRevoked. first reports the first revocation this
// process has seen; changed, whether the state was another.
func (s *sessionState) revoke() (first, changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, changed = !s.wasRevoked, !s.revoked
	s.state, s.addr, s.revoked, s.wasRevoked = SessionRevoked, "", true, true
	return first, changed
}

func (s *sessionState) get() (state, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.addr
}

// status snapshots the counters. The agent's lock is released before the
// sources' own Stats are read: their writers take the agent's lock (to mark
// the store changed) while holding theirs.
func (a *Agent) status() Status {
	a.mu.Lock()
	st := Status{Site: a.site, Updated: a.now().UTC(), RoundsTrained: a.stats.RoundsTrained,
		UpdatesAcked: a.stats.UpdatesAcked, UpdatesResent: a.stats.UpdatesResent,
		UploadsResumed: a.stats.UploadsResumed, DownloadsResumed: a.stats.DownloadsResumed, Reconnects: a.stats.Reconnects,
		LastRoundError: a.stats.LastRoundError, Ingested: map[string]int{}, Skipped: map[string]int{}, Rejected: map[string]int{},
		NextRenewal: a.nextRenewal, CertRenewals: a.stats.CertRenewals, CertRenewalFailures: a.stats.CertRenewalFailures,
		LastRenewalError: a.stats.LastRenewalError, Declined: maps.Clone(a.stats.Declined),
		Deployments: a.stats.Deployments, DeploymentsRefused: a.stats.DeploymentsRefused,
		Predictions: a.stats.Predictions, PredictionsRefused: a.stats.PredictionsRefused,
		Scored: a.stats.Scored, RiskAssessments: a.stats.RiskAssessments, ScoresUnchanged: a.stats.ScoresUnchanged,
		RiskAssessmentsPosted: a.stats.RiskAssessmentsPosted, Alerts: a.stats.Alerts}
	merge := func(dst, src map[string]int) {
		for k, v := range src {
			dst[k] += v
		}
	}
	if in := a.stats.Ingest; in != nil {
		merge(st.Ingested, in.Resources)
		merge(st.Skipped, in.Skipped)
		merge(st.Rejected, in.Rejected)
	}
	guard, sub, drop := a.guard, a.mqtt, a.drop
	a.mu.Unlock()
	st.Session, _ = a.session.get()
	st.CertExpires = a.CertExpires().UTC()
	if st.Session == SessionRevoked {
		st.NextRenewal = time.Time{} // a revoked site is not renewed
	}

	if guard != nil {
		st.BytesSent = guard.BytesSent()
	}
	if drop != nil {
		r := drop.Stats().Read
		merge(st.Ingested, r.Resources)
		merge(st.Skipped, r.Skipped)
		merge(st.Rejected, r.Rejected)
	}
	if sub != nil {
		ds := sub.Stats()
		st.Devices = &DeviceStatus{Received: int64(ds.Received), Stored: int64(ds.Stored), Rejected: maps.Clone(ds.Rejected), Queue: ds.QueueDepth}
	}
	return st
}

// writeStatus replaces StatusFile atomically. Failures are logged, not
// fatal: the status is for people, the work goes on.
func (a *Agent) writeStatus() {
	b, err := json.MarshalIndent(a.status(), "", "  ")
	if err != nil {
		a.log.Warn("status", "err", err)
		return
	}
	path := filepath.Join(a.cfg.DataDir, StatusFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		a.log.Warn("status", "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		a.log.Warn("status", "err", err)
	}
}

// ReadStatus reads the status an agent wrote in dataDir.
func ReadStatus(dataDir string) (*Status, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, StatusFile))
	if err != nil {
		return nil, fmt.Errorf("agent status: %w (has the agent run with this data dir?)", err)
	}
	st := new(Status)
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("agent status %s: %w", filepath.Join(dataDir, StatusFile), err)
	}
	return st, nil
}
