package coordinator

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"
)

// Status is the read-only view served at /v1/status. It holds ids, counts,
// digests and metrics: nothing about patients.
type Status struct {
	Node      string           `json:"node"`
	Version   string           `json:"version,omitempty"`
	Leader    string           `json:"leader"`
	IsLeader  bool             `json:"is_leader"`
	AgentAddr string           `json:"agent_addr"`
	Sites     []string         `json:"sites"`
	Jobs      []JobStatus      `json:"jobs"`
	Counters  map[string]int64 `json:"counters"`
}

// JobStatus summarizes one job.
type JobStatus struct {
	ID              string         `json:"id"`
	State           JobState       `json:"state"`
	Rounds          int            `json:"rounds"`
	CommittedRounds uint64         `json:"committed_rounds"`
	FailReason      string         `json:"fail_reason,omitempty"`
	StopReason      string         `json:"stop_reason,omitempty"`
	Privacy         *PrivacyStatus `json:"privacy,omitempty"`
	// RetrainOf and RetrainedBy link a job's training runs (retrain.go).
	RetrainOf   string         `json:"retrain_of,omitempty"`
	RetrainedBy string         `json:"retrained_by,omitempty"`
	Created     time.Time      `json:"created"`
	Finished    time.Time      `json:"finished,omitzero"`
	History     []RoundSummary `json:"history"`
}

// RoundSummary is one round attempt.
type RoundSummary struct {
	Round        uint64     `json:"round"`
	Kind         string     `json:"kind"`
	Attempt      int        `json:"attempt"`
	State        RoundState `json:"state"`
	Selected     []string   `json:"selected,omitempty"`
	Contributors []string   `json:"contributors,omitempty"`
	Samples      uint64     `json:"samples,omitempty"`
	MeanValAUROC float64    `json:"mean_val_auroc,omitempty"`
	Model        string     `json:"model,omitempty"`
	FailReason   string     `json:"fail_reason,omitempty"`
	// SecAggPhase is the phase an open secure aggregation round's run is
	// in (AdvertiseKeys, ShareKeys, MaskedInput, Unmasking).
	SecAggPhase string `json:"secagg_phase,omitempty"`
}

// Status returns the node's view of the federation.
func (n *Node) Status() Status {
	lid, _ := n.Leader()
	s := Status{Sites: []string{}, Jobs: []JobStatus{}, Node: n.cfg.ID, Version: n.cfg.Build, Leader: lid, IsLeader: n.IsLeader(), AgentAddr: n.AgentAddr(), Counters: map[string]int64{
		"handshakes_refused":    n.stats.HandshakesRefused.Load(),
		"frames_rejected":       n.stats.FramesRejected.Load(),
		"unknown_sites":         n.stats.UnknownSites.Load(),
		"updates_accepted":      n.stats.UpdatesAccepted.Load(),
		"updates_rejected":      n.stats.UpdatesRejected.Load(),
		"rounds_committed":      n.stats.RoundsCommitted.Load(),
		"rounds_failed":         n.stats.RoundsFailed.Load(),
		"bytes_received":        n.stats.BytesReceived.Load(),
		"bytes_sent":            n.stats.BytesSent.Load(),
		"updates_late":          n.stats.UpdatesLate.Load(),
		"updates_not_asked":     n.stats.UpdatesNotAsked.Load(),
		"uploads_resumed":       n.stats.UploadsResumed.Load(),
		"blobs_fetched":         n.stats.BlobsFetched.Load(),
		"blobs_collected":       n.stats.BlobsCollected.Load(),
		"sites_revoked_refused": n.stats.SitesRevokedRefused.Load(),
		"admin_denied":          n.stats.AdminDenied.Load(),
		"admin_rate_limited":    n.stats.AdminRateLimited.Load(),
	}}
	n.fsm.view(func(st *state) {
		s.Sites = append(s.Sites, st.siteIDs()...)
		for id, j := range st.Jobs {
			js := JobStatus{ID: id, State: j.State, Rounds: j.Spec.Rounds, CommittedRounds: j.committedN,
				FailReason: j.FailReason, StopReason: j.StopReason, Created: j.Created, Finished: j.Finished,
				Privacy: privacyStatus(j.Spec.Privacy, j.Privacy), RetrainOf: j.RetrainOf, RetrainedBy: j.RetrainedBy}
			for _, r := range j.Rounds {
				kind := r.Kind
				if kind == "" {
					kind = KindTrain
				}
				js.History = append(js.History, RoundSummary{Round: r.Number, Kind: kind, Attempt: r.Attempt, State: r.State,
					Selected: slices.Clone(r.Selected), Contributors: slices.Clone(r.Contributors), Samples: r.Samples, MeanValAUROC: r.MeanValAUROC,
					Model: r.Result, FailReason: r.FailReason})
				if r.SecAgg != nil {
					js.History[len(js.History)-1].SecAggPhase = r.SecAggProgress.Phase.String()
				}
			}
			s.Jobs = append(s.Jobs, js)
		}
	})
	slices.SortFunc(s.Jobs, func(a, b JobStatus) int { return cmpString(a.ID, b.ID) })
	return s
}

func (n *Node) statusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	n.healthRoutes(mux) // GET /readyz, GET /metrics (metrics.go)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, req *http.Request) {
		// Linearizable by default: only a leader that has just confirmed
		// its leadership with a quorum answers; followers send the reader
		// to it. ?stale=true answers from this node's own state.
		if req.URL.Query().Get("stale") != "true" {
			if !n.IsLeader() {
				var addr string
				if lid, _ := n.Leader(); lid != "" {
					n.fsm.view(func(st *state) { addr = st.Nodes[lid].StatusAddr })
				}
				if addr == "" {
					http.Error(w, "no leader known yet; retry, or ask for ?stale=true", http.StatusServiceUnavailable)
					return
				}
				http.Redirect(w, req, "http://"+addr+"/v1/status", http.StatusTemporaryRedirect)
				return
			}
			if err := n.verifyLeader(); err != nil {
				http.Error(w, "leadership not confirmed; retry, or ask for ?stale=true", http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(n.Status())
	})
	return mux
}
