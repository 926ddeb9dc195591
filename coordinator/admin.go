package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// The admin API, on the status address, under /v1: the cluster's members
// (list, join, remove), sites (enroll, list, show) and jobs (create, list,
// show). Errors are RFC 9457 problem details.
//
// Writes go to the leader: a follower forwards them (once; a forwarded
// request that reaches a node that does not lead either gets 503). Reads
// are linearizable by default, answered by the leader after it confirms its
// leadership with a quorum; ?stale=true answers from the node's own state.
//
// The API has no authentication yet (the admin issue adds tokens and
// HTTPS): serve it on loopback or an admin network only.

// forwardedHeader marks a request a follower forwarded to the leader.
const forwardedHeader = "Cohort-Forwarded-By"

// maxAdminBody bounds an admin request body.
const maxAdminBody = 1 << 20

// Problem is an RFC 9457 problem details document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// problemFor maps an error from a proposal to a status and a detail.
func problemFor(err error) (int, string) {
	switch {
	case errors.Is(err, ErrInvalidJob), errors.Is(err, ErrInvalidSite), errors.Is(err, ErrModelTooLarge), errors.Is(err, ErrInvalidConfig):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrUnknownJob), errors.Is(err, ErrUnknownSite), errors.Is(err, errNoSuchNode):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, errLastVoter):
		return http.StatusConflict, err.Error()
	case errors.Is(err, ErrNotLeader), errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return http.StatusServiceUnavailable, "leadership changed while the request ran; retry"
	}
	return http.StatusInternalServerError, err.Error()
}

// decodeBody reads a JSON body into v, refusing unknown fields, trailing
// data and bodies above maxAdminBody.
func decodeBody(w http.ResponseWriter, req *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		var tooBig *http.MaxBytesError
		if err2 := dec.Decode(new(json.RawMessage)); errors.As(err2, &tooBig) {
			err = err2
		} else if err2 != io.EOF {
			err = errors.New("unexpected data after the JSON document")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is above %d bytes", maxAdminBody))
			return false
		}
		writeProblem(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

// onLeader runs h on the leader: a follower forwards the request to the
// leader's status address. With stale reads allowed and ?stale=true, h
// runs here. A leader confirms its leadership before a read.
func (n *Node) onLeader(read bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if read && req.URL.Query().Get("stale") == "true" {
			h(w, req)
			return
		}
		if n.IsLeader() {
			if read {
				// A new leader answers once its barrier has applied every
				// entry of earlier terms, and after confirming with a
				// quorum that it still leads.
				if err := n.verifyLeader(); err != nil {
					writeProblem(w, http.StatusServiceUnavailable, "leadership not confirmed; retry, or read with ?stale=true")
					return
				}
			}
			h(w, req)
			return
		}
		if by := req.Header.Get(forwardedHeader); by != "" {
			writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("forwarded by %s to a node that does not lead; retry", by))
			return
		}
		var addr string
		if lid, _ := n.Leader(); lid != "" {
			n.fsm.view(func(st *state) { addr = st.Nodes[lid].StatusAddr })
		}
		if addr == "" {
			writeProblem(w, http.StatusServiceUnavailable, "no leader known yet; retry")
			return
		}
		proxy := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(&url.URL{Scheme: "http", Host: addr})
				pr.Out.Header.Set(forwardedHeader, n.cfg.ID)
			},
			ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
				writeProblem(w, http.StatusBadGateway, "forwarding to the leader failed; retry")
			},
		}
		proxy.ServeHTTP(w, req)
	}
}

// ClusterNode is one member of the cluster as the admin API shows it.
type ClusterNode struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	Voter      bool   `json:"voter"`
	Leader     bool   `json:"leader"`
	AgentAddr  string `json:"agent_addr,omitempty"`
	StatusAddr string `json:"status_addr,omitempty"`
}

// ClusterView is GET /v1/cluster.
type ClusterView struct {
	Node   string        `json:"node"`
	Leader string        `json:"leader"`
	Nodes  []ClusterNode `json:"nodes"`
}

// Cluster returns the cluster's membership as this node knows it.
func (n *Node) Cluster() (ClusterView, error) {
	r := n.raftNode()
	if r == nil {
		return ClusterView{}, ErrNotLeader
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return ClusterView{}, fmt.Errorf("raft configuration: %w", err)
	}
	lid, _ := n.Leader()
	v := ClusterView{Node: n.cfg.ID, Leader: lid, Nodes: []ClusterNode{}}
	n.fsm.view(func(st *state) {
		for _, s := range f.Configuration().Servers {
			info := st.Nodes[string(s.ID)]
			v.Nodes = append(v.Nodes, ClusterNode{ID: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter,
				Leader: string(s.ID) == lid, AgentAddr: info.AgentAddr, StatusAddr: info.StatusAddr})
		}
	})
	slices.SortFunc(v.Nodes, func(a, b ClusterNode) int { return cmpString(a.ID, b.ID) })
	return v, nil
}

// AddNode adds a voter to the cluster (idempotent). Leader only. The new
// node must be running without a configuration of its own (started
// without bootstrap); it catches up from the leader's log or snapshot and
// fetches the models from its peers.
func (n *Node) AddNode(id, raftAddr string) error {
	if !validID(id) {
		return fmt.Errorf("%w: node id %q: use 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalidConfig, id)
	}
	if host, port, err := net.SplitHostPort(raftAddr); err != nil || host == "" || port == "" || port == "0" {
		return fmt.Errorf("%w: raft_addr %q: want host:port", ErrInvalidConfig, raftAddr)
	}
	r := n.raftNode()
	if r == nil || r.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := r.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, time.Duration(n.cfg.ApplyTimeout)).Error(); err != nil {
		return fmt.Errorf("add node %s: %w", id, err)
	}
	n.log.Info("node added", "id", id, "raft_addr", raftAddr)
	return nil
}

// errLastVoter: removing the node would leave the cluster without voters.
var errLastVoter = errors.New("it is the only voter; the cluster would have none")

// errNoSuchNode: the node is not a member.
var errNoSuchNode = errors.New("no such node in the cluster")

// RemoveNode removes a member. Leader only. Removing the leader itself
// makes it step down once the change commits.
func (n *Node) RemoveNode(id string) error {
	v, err := n.Cluster()
	if err != nil {
		return err
	}
	voters, found := 0, false
	for _, m := range v.Nodes {
		if m.Voter {
			voters++
		}
		found = found || m.ID == id
	}
	switch {
	case !found:
		return fmt.Errorf("remove node %q: %w", id, errNoSuchNode)
	case voters <= 1:
		return fmt.Errorf("remove node %q: %w", id, errLastVoter)
	}
	r := n.raftNode()
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := r.RemoveServer(raft.ServerID(id), 0, time.Duration(n.cfg.ApplyTimeout)).Error(); err != nil {
		return fmt.Errorf("remove node %s: %w", id, err)
	}
	n.log.Info("node removed", "id", id)
	return nil
}

// SiteView is one enrolled site as the admin API shows it.
type SiteView struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// adminRoutes adds the admin API's routes to mux.
func (n *Node) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cluster", n.onLeader(true, func(w http.ResponseWriter, _ *http.Request) {
		v, err := n.Cluster()
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}))
	mux.HandleFunc("POST /v1/cluster/nodes", n.onLeader(false, func(w http.ResponseWriter, req *http.Request) {
		var b struct {
			ID       string `json:"id"`
			RaftAddr string `json:"raft_addr"`
		}
		if !decodeBody(w, req, &b) {
			return
		}
		if err := n.AddNode(b.ID, b.RaftAddr); err != nil {
			writeErr(w, err)
			return
		}
		v, _ := n.Cluster()
		writeJSON(w, http.StatusOK, v)
	}))
	mux.HandleFunc("DELETE /v1/cluster/nodes/{id}", n.onLeader(false, func(w http.ResponseWriter, req *http.Request) {
		if err := n.RemoveNode(req.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		v, _ := n.Cluster()
		writeJSON(w, http.StatusOK, v)
	}))

	mux.HandleFunc("GET /v1/sites", n.onLeader(true, func(w http.ResponseWriter, _ *http.Request) {
		var out []SiteView
		n.fsm.view(func(st *state) {
			for _, id := range st.siteIDs() {
				out = append(out, SiteView{ID: id, Created: st.Sites[id].Created})
			}
		})
		writeJSON(w, http.StatusOK, map[string]any{"sites": nonNil(out)})
	}))
	mux.HandleFunc("GET /v1/sites/{id}", n.onLeader(true, func(w http.ResponseWriter, req *http.Request) {
		var out *SiteView
		n.fsm.view(func(st *state) {
			if s, ok := st.Sites[req.PathValue("id")]; ok {
				out = &SiteView{ID: s.ID, Created: s.Created}
			}
		})
		if out == nil {
			writeProblem(w, http.StatusNotFound, "no such site")
			return
		}
		writeJSON(w, http.StatusOK, out)
	}))
	mux.HandleFunc("POST /v1/sites", n.onLeader(false, func(w http.ResponseWriter, req *http.Request) {
		var b struct {
			ID string `json:"id"`
		}
		if !decodeBody(w, req, &b) {
			return
		}
		if err := n.EnsureSite(b.ID); err != nil {
			writeErr(w, err)
			return
		}
		var out SiteView
		n.fsm.view(func(st *state) {
			if s, ok := st.Sites[b.ID]; ok {
				out = SiteView{ID: s.ID, Created: s.Created}
			}
		})
		writeJSON(w, http.StatusCreated, out)
	}))

	mux.HandleFunc("GET /v1/jobs", n.onLeader(true, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"jobs": n.Status().Jobs})
	}))
	mux.HandleFunc("GET /v1/jobs/{id}", n.onLeader(true, func(w http.ResponseWriter, req *http.Request) {
		for _, j := range n.Status().Jobs {
			if j.ID == req.PathValue("id") {
				writeJSON(w, http.StatusOK, j)
				return
			}
		}
		writeProblem(w, http.StatusNotFound, "no such job")
	}))
	mux.HandleFunc("POST /v1/jobs", n.onLeader(false, func(w http.ResponseWriter, req *http.Request) {
		spec := DefaultJobSpec()
		if !decodeBody(w, req, &spec) {
			return
		}
		if spec.Features.FeatureSpec != nil && spec.Model.NumFeatures == 0 {
			spec.Model.NumFeatures = len(spec.Features.GetFeatures())
		}
		if prev, ok := n.Job(spec.ID); ok {
			a, _ := json.Marshal(prev.Spec)
			b, _ := json.Marshal(spec)
			if string(a) != string(b) {
				writeProblem(w, http.StatusConflict, fmt.Sprintf("job %q exists with a different spec", spec.ID))
				return
			}
		}
		if err := n.CreateJob(spec); err != nil {
			writeErr(w, err)
			return
		}
		for _, j := range n.Status().Jobs {
			if j.ID == spec.ID {
				writeJSON(w, http.StatusCreated, j)
				return
			}
		}
		writeProblem(w, http.StatusInternalServerError, "the job was created but is not visible")
	}))
}

// writeErr answers an error as a problem.
func writeErr(w http.ResponseWriter, err error) {
	status, detail := problemFor(err)
	writeProblem(w, status, detail)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
