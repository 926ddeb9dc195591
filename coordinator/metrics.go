package coordinator

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"unicode"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names are cohort_coordinator_<name>. Every value is read from the
// node at scrape time (Stats counters, Raft, the replicated state); label
// values are fixed enums (job states, Raft states), never site or job ids,
// so the series are bounded and hold no PHI.
const metricsNamespace = "cohort_coordinator"

// statsHelp is the help text of each Stats counter, by field name. A
// counter added to Stats without an entry here is still exported, with a
// generic help text.
var statsHelp = map[string]string{
	"HandshakesRefused":  "Agent handshakes refused (certificate not from the federation CA, wrong role, application protocol or protocol version).",
	"FramesRejected":     "Agent frames rejected as malformed or out of place.",
	"UnknownSites":       "Requests from sites that are not enrolled.",
	"UpdatesAccepted":    "Site updates accepted into a round.",
	"UpdatesRejected":    "Site updates refused (bad size, digest, base model or values).",
	"RoundsCommitted":    "Rounds this node committed as leader.",
	"RoundsFailed":       "Round attempts this node failed as leader.",
	"BytesReceived":      "Bytes received from agents.",
	"BytesSent":          "Bytes sent to agents.",
	"BlobsFetched":       "Model blobs fetched from other coordinators.",
	"BlobBytesPushed":    "Model blob bytes pushed to other coordinators.",
	"BlobBytesServed":    "Model blob bytes served to other coordinators.",
	"BlobsCollected":     "Blobs removed by garbage collection.",
	"UploadsInterrupted": "Update uploads interrupted mid-body.",
	"UploadsResumed":     "Update uploads resumed from an offset.",
	"UpdatesLate":        "Updates for a round that had already closed (stragglers), discarded.",
	"UpdatesNotAsked":    "Updates from a site the round did not sample, discarded.",
	"UpdatesClipped":     "Updates above their job's norm bound (strategy.norm_bound), accepted and clipped to it.",
	"SecAggMessages":     "Secure aggregation messages from sites applied to a round's run.",
	"SecAggRejected":     "Secure aggregation messages from sites refused (malformed, wrong phase or run).",
	"HelloTimeouts":      "Agent connections closed because no hello was accepted on them in time.",
	"AdminBadRequests":   "Admin API requests refused for what they asked: invalid input, unknown route or resource, body too large (4xx but 401, 403, 429).",
}

// statsCounter is one atomic counter of Stats, exported as
// cohort_coordinator_<snake_name>_total.
type statsCounter struct {
	desc  *prometheus.Desc
	value func(*Stats) int64
}

// statsCounters lists every atomic.Int64 field of Stats, found by
// reflection so that a counter added to Stats is exported without a
// change here.
var statsCounters = func() []statsCounter {
	var out []statsCounter
	typ := reflect.TypeFor[Stats]()
	counterType := reflect.TypeFor[atomic.Int64]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() || f.Type != counterType {
			continue
		}
		help := statsHelp[f.Name]
		if help == "" {
			help = "Coordinator counter " + f.Name + " (see coordinator.Stats)."
		}
		idx := f.Index
		out = append(out, statsCounter{
			desc: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", snakeCase(f.Name)+"_total"), help, nil, nil),
			value: func(s *Stats) int64 {
				return reflect.ValueOf(s).Elem().FieldByIndex(idx).Addr().Interface().(*atomic.Int64).Load()
			},
		})
	}
	return out
}()

// snakeCase turns a Go field name into a metric name part:
// HandshakesRefused → handshakes_refused.
func snakeCase(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			// A new word starts at an upper-case letter that follows a
			// lower-case one, or that ends an acronym (the "B" of "HTTPBytes").
			if i > 0 && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1])) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// jobStates are always exported (at 0 when no job is in them), so that
// dashboards and alerts see every series from the first scrape.
var jobStates = []JobState{JobRunning, JobPaused, JobDone, JobFailed, JobCancelled}

// raftStates are the values of the state label of
// cohort_coordinator_raft_state.
var raftStates = []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown}

func gaugeDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", name), help, labels, nil)
}

var (
	descIsLeader     = gaugeDesc("is_leader", "1 if this node is the Raft leader, else 0.")
	descReady        = gaugeDesc("ready", "1 if /readyz answers 200: a member of a cluster with a known leader (and, on the leader, past its barrier).")
	descLeaderKnown  = gaugeDesc("leader_known", "1 if this node knows a live leader, else 0.")
	descRaftState    = gaugeDesc("raft_state", "1 for this node's current Raft state, 0 for the others.", "state")
	descRaftTerm     = gaugeDesc("raft_term", "Current Raft term.")
	descRaftLast     = gaugeDesc("raft_last_index", "Index of the last entry in this node's Raft log (or snapshot).")
	descRaftCommit   = gaugeDesc("raft_commit_index", "Raft commit index known to this node.")
	descRaftApplied  = gaugeDesc("raft_applied_index", "Index of the last Raft entry applied to this node's state.")
	descClusterNodes = gaugeDesc("cluster_servers", "Servers in the latest Raft configuration, by suffrage.", "suffrage")
	descSites        = gaugeDesc("sites", "Enrolled sites.")
	descJobs         = gaugeDesc("jobs", "Jobs, by state.", "state")
	descRoundsOpen   = gaugeDesc("rounds_open", "Rounds open now, over all jobs.")
	descAgentConns   = gaugeDesc("agent_connections", "Agent QUIC connections open on this node.")
)

// nodeCollector reads a node's counters, Raft and replicated state at
// scrape time.
type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, s := range statsCounters {
		ch <- s.desc
	}
	for _, d := range []*prometheus.Desc{descIsLeader, descReady, descLeaderKnown, descRaftState, descRaftTerm,
		descRaftLast, descRaftCommit, descRaftApplied, descClusterNodes, descSites, descJobs, descRoundsOpen, descAgentConns} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	for _, s := range statsCounters {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, float64(s.value(&n.stats)))
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ready, _ := n.readiness()
	gauge(descIsLeader, gaugeBool(n.IsLeader()))
	gauge(descReady, gaugeBool(ready))
	lid, _ := n.Leader()
	gauge(descLeaderKnown, gaugeBool(lid != ""))
	gauge(descAgentConns, float64(n.agentConns.Load()))

	if r := n.raftNode(); r != nil {
		cur := r.State()
		for _, s := range raftStates {
			gauge(descRaftState, gaugeBool(s == cur), strings.ToLower(s.String()))
		}
		gauge(descRaftTerm, float64(r.CurrentTerm()))
		gauge(descRaftLast, float64(r.LastIndex()))
		gauge(descRaftCommit, float64(r.CommitIndex()))
		gauge(descRaftApplied, float64(r.AppliedIndex()))
		voters, nonvoters := 0, 0
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					voters++
				} else {
					nonvoters++
				}
			}
		}
		gauge(descClusterNodes, float64(voters), "voter")
		gauge(descClusterNodes, float64(nonvoters), "nonvoter")
	}

	var sites, open int
	jobs := make(map[JobState]int, len(jobStates))
	for _, s := range jobStates {
		jobs[s] = 0
	}
	n.fsm.view(func(st *state) {
		sites = len(st.Sites)
		for _, j := range st.Jobs {
			// A state this code does not know yet is counted under its
			// name only if it looks like an enum value: a label never
			// carries free text.
			if _, known := jobs[j.State]; known || enumLike(string(j.State)) {
				jobs[j.State]++
			} else {
				jobs["other"]++
			}
			for _, r := range j.Rounds {
				if r.State == RoundOpen {
					open++
				}
			}
		}
	})
	gauge(descSites, float64(sites))
	for s, v := range jobs {
		gauge(descJobs, float64(v), string(s))
	}
	gauge(descRoundsOpen, float64(open))
}

// enumLike reports whether s is short lower-case letters, digits,
// hyphens or underscores: the shape of an enum value, not of data.
func enumLike(s string) bool {
	if s == "" || len(s) > 24 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
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

// newMetricsRegistry returns a registry of this node's metrics plus the Go
// runtime and process collectors. Each node has its own (tests run several
// nodes in one process); nothing is registered globally.
func (n *Node) newMetricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		nodeCollector{n},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// readiness reports whether this node can serve: it is a member of a
// cluster that has a known leader and, if it is that leader, it has passed
// its barrier (its state holds every committed entry). reason is a short
// explanation for people.
func (n *Node) readiness() (ready bool, reason string) {
	r := n.raftNode()
	if r == nil {
		return false, "raft not started"
	}
	if r.State() == raft.Shutdown {
		return false, "raft shut down"
	}
	member := false
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			member = member || string(s.ID) == n.cfg.ID
		}
	}
	if !member {
		return false, "not a member of a cluster (not bootstrapped, not yet joined, or removed)"
	}
	if r.State() == raft.Leader {
		if !n.isReady() {
			return false, "leader still applying earlier terms' entries"
		}
		return true, "leader"
	}
	lid, _ := n.Leader()
	if lid == "" {
		return false, "no leader known"
	}
	return true, "follower of " + lid
}

// healthRoutes adds GET /readyz and GET /metrics to the status mux
// (/healthz, which only says the process answers, is in statusHandler).
func (n *Node) healthRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		ready, reason := n.readiness()
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", reason)
			return
		}
		fmt.Fprintf(w, "ready: %s\n", reason)
	})
	reg := n.newMetricsRegistry()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
}
