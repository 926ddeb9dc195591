package webtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator/web"
)

// Fixtures of NewFakeAPI.
const (
	// FixtureToken is the bearer token the fake accepts.
	FixtureToken = "cohort-fixture-token-0123456789" // #nosec G101 -- the browser tests' fake API token, valid only against the in-process fake
	// ChartJobID is a running job with 5 committed rounds (one retried
	// after a failed attempt) and one open round.
	ChartJobID = "j-auroc"
	// ChartJobPoints is how many points ChartJobID's chart has.
	ChartJobPoints = 5
	// XSSJobID is a job named with a script-injection attempt; the
	// dashboard must show it as text.
	XSSJobID = `<img src=x onerror=alert(1)>`
	// XSSSiteID is a site named with a script-injection attempt.
	XSSSiteID = `<script>alert("site")</script>`
	// FixtureAuditSize is the number of audit entries.
	FixtureAuditSize = 120
)

// WhoAmI is GET /v1/whoami.
type WhoAmI struct {
	Person  string `json:"person"`
	Role    string `json:"role"`
	TokenID string `json:"token_id"`
	Expires string `json:"expires"`
}

// ClusterNode is one member in GET /v1/cluster.
type ClusterNode struct {
	ID        string `json:"id"`
	RaftAddr  string `json:"raft_addr"`
	Voter     bool   `json:"voter"`
	Leader    bool   `json:"leader"`
	AgentAddr string `json:"agent_addr"`
	AdminAddr string `json:"admin_addr"`
}

// Cluster is GET /v1/cluster.
type Cluster struct {
	Node   string        `json:"node"`
	Leader string        `json:"leader"`
	Nodes  []ClusterNode `json:"nodes"`
}

// Site is one site in GET /v1/sites.
type Site struct {
	ID          string `json:"id"`
	Created     string `json:"created"`
	Revoked     bool   `json:"revoked"`
	Online      bool   `json:"online"`
	LastSeen    string `json:"last_seen,omitempty"`
	CertExpires string `json:"cert_expires,omitempty"`
	// XFuture stands for fields a later API adds; the page must ignore it.
	XFuture map[string]any `json:"x_future,omitempty"`
}

// Round is one attempt in a job's history.
type Round struct {
	Round        int      `json:"round"`
	Kind         string   `json:"kind"`
	Attempt      int      `json:"attempt"`
	State        string   `json:"state"`
	Contributors []string `json:"contributors"`
	Samples      int      `json:"samples"`
	MeanValAUROC *float64 `json:"mean_val_auroc,omitempty"`
	Model        string   `json:"model,omitempty"`
	FailReason   string   `json:"fail_reason,omitempty"`
}

// Job is a JobStatus of GET /v1/jobs and GET /v1/jobs/{id}.
type Job struct {
	ID              string         `json:"id"`
	State           string         `json:"state"`
	Rounds          int            `json:"rounds"`
	CommittedRounds int            `json:"committed_rounds"`
	FailReason      string         `json:"fail_reason,omitempty"`
	Created         string         `json:"created"`
	Finished        string         `json:"finished,omitempty"`
	History         []Round        `json:"history"`
	XFuture         map[string]any `json:"x_future,omitempty"`
}

// Version is a ModelVersion of GET /v1/jobs/{id}/models.
type Version struct {
	Job               string   `json:"job"`
	Digest            string   `json:"digest"`
	Round             int      `json:"round"`
	Stage             string   `json:"stage"`
	Committed         string   `json:"committed,omitempty"`
	Strategy          string   `json:"strategy,omitempty"`
	Contributors      []string `json:"contributors,omitempty"`
	Samples           int      `json:"samples,omitempty"`
	MeanValAUROC      float64  `json:"mean_val_auroc,omitempty"`
	EpsilonSpent      float64  `json:"epsilon_spent,omitempty"`
	SecureAggregation bool     `json:"secure_aggregation,omitempty"`
}

// AuditEntry is one entry of GET /v1/audit/entries.
type AuditEntry struct {
	Index      int    `json:"index"`
	Time       string `json:"time"`
	Kind       string `json:"kind"`
	Actor      string `json:"actor"`
	Role       string `json:"role"`
	Action     string `json:"action"`
	Target     string `json:"target"`
	Outcome    string `json:"outcome"`
	Status     int    `json:"status"`
	BreakGlass bool   `json:"break_glass"`
}

// FakeAPI implements the admin API's read routes that the dashboard uses,
// over fixed data, with bearer-token checks and RFC 9457 problem details.
// Set its exported fields before serving; use Revoke and Restore while
// serving.
type FakeAPI struct {
	// Token is the one bearer token accepted.
	Token string
	// MaxPageSize caps page_size on the list routes, so that a test with
	// a few items still crosses pages. Zero means 2.
	MaxPageSize int

	WhoAmI  WhoAmI
	Cluster Cluster
	Sites   []Site
	Jobs    []Job
	// Versions are the jobs' model registries, by job id (a job without
	// an entry has none).
	Versions map[string][]Version
	Audit    []AuditEntry

	mu      sync.Mutex
	revoked bool // guarded by mu
}

// NewFakeAPI returns a fake with the fixtures: person alice (admin), three
// nodes with c2 leading, five sites (one offline, one revoked, one never
// seen, XSSSiteID), five jobs (ChartJobID, XSSJobID, and done, paused and
// cancelled ones) and FixtureAuditSize audit entries. Times are relative to
// now.
func NewFakeAPI(token string, now time.Time) *FakeAPI {
	ts := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }
	auroc := func(v float64) *float64 { return &v }
	model := func(i int) string {
		sum := sha256.Sum256([]byte("model " + strconv.Itoa(i)))
		return hex.EncodeToString(sum[:])
	}
	f := &FakeAPI{
		Token: token,
		WhoAmI: WhoAmI{
			Person: "alice", Role: "admin", TokenID: "t-1a2b3c4d", Expires: ts(time.Hour),
		},
		Cluster: Cluster{Node: "c1", Leader: "c2", Nodes: []ClusterNode{
			{ID: "c1", RaftAddr: "10.0.0.1:7000", Voter: true, AgentAddr: "10.0.0.1:7443", AdminAddr: "10.0.0.1:8443"},
			{ID: "c2", RaftAddr: "10.0.0.2:7000", Voter: true, Leader: true, AgentAddr: "10.0.0.2:7443", AdminAddr: "10.0.0.2:8443"},
			{ID: "c3", RaftAddr: "10.0.0.3:7000", Voter: true, AgentAddr: "10.0.0.3:7443", AdminAddr: "10.0.0.3:8443"},
		}},
		Sites: []Site{
			{ID: "st-mary", Created: ts(-30 * 24 * time.Hour), Online: true, LastSeen: ts(-20 * time.Second), CertExpires: ts(5 * 24 * time.Hour),
				XFuture: map[string]any{"region": "north"}},
			{ID: "st-luke", Created: ts(-20 * 24 * time.Hour), LastSeen: ts(-3 * time.Hour), CertExpires: ts(10 * time.Hour)},
			{ID: "st-old", Created: ts(-90 * 24 * time.Hour), Revoked: true, LastSeen: ts(-40 * 24 * time.Hour), CertExpires: ts(-33 * 24 * time.Hour)},
			{ID: "st-new", Created: ts(-time.Hour)},
			{ID: XSSSiteID, Created: ts(-2 * time.Hour), Online: true, LastSeen: ts(-5 * time.Second), CertExpires: ts(6 * 24 * time.Hour)},
		},
		Audit: make([]AuditEntry, 0, FixtureAuditSize),
	}

	sites := []string{"st-mary", "st-luke"}
	var history []Round
	for r, v := range []float64{0.62, 0.68, 0.71, 0.75, 0.78} {
		round := r + 1
		if round == 3 {
			history = append(history, Round{Round: 3, Kind: "train", Attempt: 1, State: "failed",
				Contributors: sites[:1], FailReason: "quorum not reached before the deadline"})
			history = append(history, Round{Round: 3, Kind: "train", Attempt: 2, State: "committed",
				Contributors: sites, Samples: 1800, MeanValAUROC: auroc(v), Model: model(round)})
			continue
		}
		history = append(history, Round{Round: round, Kind: "train", Attempt: 1, State: "committed",
			Contributors: sites, Samples: 1700 + 10*round, MeanValAUROC: auroc(v), Model: model(round)})
	}
	history = append(history, Round{Round: 6, Kind: "train", Attempt: 1, State: "open", Contributors: []string{}})

	f.Jobs = []Job{
		{ID: ChartJobID, State: "running", Rounds: 8, CommittedRounds: 5, Created: ts(-2 * time.Hour), History: history,
			XFuture: map[string]any{"strategy": "fedavg"}},
		{ID: XSSJobID, State: "failed", Rounds: 3, CommittedRounds: 1, Created: ts(-3 * time.Hour), Finished: ts(-150 * time.Minute),
			FailReason: "<b>quorum</b> lost", History: []Round{
				{Round: 1, Kind: "train", Attempt: 1, State: "committed", Contributors: []string{XSSSiteID}, Samples: 300,
					MeanValAUROC: auroc(0.55), Model: model(99)},
				{Round: 2, Kind: "train", Attempt: 1, State: "failed", Contributors: []string{}, FailReason: "<b>quorum</b> lost"},
			}},
		{ID: "j-stats", State: "done", Rounds: 1, CommittedRounds: 1, Created: ts(-26 * time.Hour), Finished: ts(-25 * time.Hour),
			History: []Round{{Round: 1, Kind: "stats", Attempt: 1, State: "committed", Contributors: sites, Samples: 4000}}},
		{ID: "j-paused", State: "paused", Rounds: 10, CommittedRounds: 0, Created: ts(-5 * time.Hour), History: []Round{}},
		{ID: "j-cancelled", State: "cancelled", Rounds: 4, CommittedRounds: 0, Created: ts(-50 * time.Hour), Finished: ts(-49 * time.Hour)},
	}

	// ChartJobID's registry: the initial model and one version per
	// committed round; round 4 in production, round 5 in staging.
	f.Versions = map[string][]Version{ChartJobID: {{Job: ChartJobID, Digest: model(0), Round: 0, Stage: "candidate",
		Committed: ts(-70 * time.Minute)}}}
	for i, v := range []float64{0.62, 0.68, 0.71, 0.75, 0.78} { // as in history
		round := i + 1
		ver := Version{Job: ChartJobID, Digest: model(round), Round: round, Stage: "candidate",
			Committed: ts(time.Duration(round-7) * 10 * time.Minute), Strategy: "fedavg", Contributors: sites,
			Samples: 1700 + 10*round, MeanValAUROC: v}
		switch round {
		case 4:
			ver.Stage = "production"
		case 5:
			ver.Stage = "staging"
		}
		f.Versions[ChartJobID] = append(f.Versions[ChartJobID], ver)
	}
	f.Versions[XSSJobID] = []Version{{Job: XSSJobID, Digest: model(99), Round: 1, Stage: "candidate",
		Strategy: `<img src=y onerror=alert(2)>`, Contributors: []string{XSSSiteID}, Samples: 300, SecureAggregation: true}}

	for i := range FixtureAuditSize {
		e := AuditEntry{
			Index: i, Time: ts(time.Duration(i-FixtureAuditSize) * 30 * time.Second),
			Kind: "admin", Actor: "alice", Role: "admin", Action: "GET /v1/jobs", Target: "jobs",
			Outcome: "ok", Status: 200,
		}
		switch {
		case i%10 == 3:
			e.Kind, e.Actor, e.Role, e.Action, e.Target = "round", "c2", "", "round commit", "job j-auroc round "+strconv.Itoa(i/10+1)
			e.Status = 0
		case i%7 == 0:
			e.Actor, e.Role, e.Action, e.Target, e.Outcome, e.Status = "bob", "viewer", "POST /v1/jobs", "job j-new", "denied", 403
		case i%13 == 0:
			e.Action, e.Target, e.Outcome, e.Status = "POST /v1/sites", "site "+XSSSiteID, "error", 500
		}
		if i == FixtureAuditSize-5 {
			e.Actor, e.Role, e.Action, e.Target, e.BreakGlass = "carol", "break-glass", "POST /v1/sites/st-old/revoke", "site st-old", true
		}
		f.Audit = append(f.Audit, e)
	}
	return f
}

// Revoke makes the fake refuse its token with 401 until Restore.
func (f *FakeAPI) Revoke() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = true
}

// Restore undoes Revoke.
func (f *FakeAPI) Restore() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = false
}

func (f *FakeAPI) authorized(req *http.Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	return ok && !f.revoked && f.Token != "" && tok == f.Token
}

// ServeHTTP answers the /v1 routes.
func (f *FakeAPI) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !f.authorized(req) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cohort"`)
		writeProblem(w, http.StatusUnauthorized, "the bearer token is missing, unknown, expired or revoked")
		return
	}
	if req.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeProblem(w, http.StatusMethodNotAllowed, "the fake API only reads")
		return
	}
	q := req.URL.Query()
	p := req.URL.Path
	switch {
	case p == "/v1/whoami":
		writeJSON(w, f.WhoAmI)
	case p == "/v1/cluster":
		writeJSON(w, f.Cluster)
	case p == "/v1/sites":
		page, next, ok := paginate(w, q, f.Sites, f.MaxPageSize)
		if ok {
			writeJSON(w, map[string]any{"sites": page, "next_page_token": next})
		}
	case p == "/v1/jobs":
		page, next, ok := paginate(w, q, f.Jobs, f.MaxPageSize)
		if ok {
			writeJSON(w, map[string]any{"jobs": page, "next_page_token": next})
		}
	case strings.HasPrefix(p, "/v1/jobs/") && strings.HasSuffix(p, "/models"):
		id := strings.TrimSuffix(strings.TrimPrefix(p, "/v1/jobs/"), "/models")
		if !slices.ContainsFunc(f.Jobs, func(j Job) bool { return j.ID == id }) {
			writeProblem(w, http.StatusNotFound, "no such job")
			return
		}
		page, next, ok := paginate(w, q, f.Versions[id], f.MaxPageSize)
		if ok {
			writeJSON(w, map[string]any{"models": page, "next_page_token": next})
		}
	case strings.HasPrefix(p, "/v1/jobs/"):
		id := strings.TrimPrefix(p, "/v1/jobs/")
		for _, j := range f.Jobs {
			if j.ID == id {
				writeJSON(w, j)
				return
			}
		}
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no job %q", id))
	case p == "/v1/audit/entries":
		f.serveAudit(w, q)
	default:
		writeProblem(w, http.StatusNotFound, "no route "+p)
	}
}

func (f *FakeAPI) serveAudit(w http.ResponseWriter, q map[string][]string) {
	num := func(name string, def int) (int, bool) {
		v := ""
		if len(q[name]) > 0 {
			v = q[name][0]
		}
		if v == "" {
			return def, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeProblem(w, http.StatusBadRequest, name+" must be a number ≥ 0")
			return 0, false
		}
		return n, true
	}
	start, ok := num("start", 0)
	if !ok {
		return
	}
	limit, ok := num("limit", 100)
	if !ok {
		return
	}
	size := len(f.Audit)
	start = min(start, size)
	end := min(start+min(limit, 1000), size)
	writeJSON(w, map[string]any{"size": size, "entries": f.Audit[start:end]})
}

// paginate cuts items by ?page_size and ?page_token (an offset here; the
// real API's tokens are opaque).
func paginate[T any](w http.ResponseWriter, q map[string][]string, items []T, maxSize int) ([]T, string, bool) {
	if maxSize <= 0 {
		maxSize = 2
	}
	get := func(k string) string {
		if len(q[k]) == 0 {
			return ""
		}
		return q[k][0]
	}
	size := maxSize
	if s := get("page_size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			writeProblem(w, http.StatusBadRequest, "page_size must be a positive number")
			return nil, "", false
		}
		size = min(n, maxSize)
	}
	off := 0
	if s := get("page_token"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > len(items) {
			writeProblem(w, http.StatusBadRequest, "invalid page_token")
			return nil, "", false
		}
		off = n
	}
	end := min(off+size, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	page := items[off:end]
	if page == nil {
		page = []T{}
	}
	return page, next, true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail,
	})
}

// NewServer starts an HTTPS test server with the dashboard mounted
// (web.Mount) and api under /v1/; it is closed when the test ends.
func NewServer(t testing.TB, api http.Handler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	web.Mount(mux)
	mux.Handle("/v1/", api)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}
