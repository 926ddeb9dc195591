package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/hashicorp/raft"
)

// The admin API, over HTTPS on the admin address, under /v1: the
// cluster's members, sites, jobs and their rounds, models, tokens and the
// audit log (see openapi.json, served at /v1/openapi.json). Errors are RFC
// 9457 problem details; lists are paginated.
//
// Every request is answered by the leader: a follower forwards it over
// mutual TLS with its own coordinator certificate, which is how the leader
// knows to trust the client address the follower passes on. The leader
// authenticates the bearer token, rate-limits, checks the route's
// permission against the token's role, runs the handler, and records the
// request as one audit leaf: in the Raft entry of the state change it
// makes, or in an audit-only entry for reads and refusals. A response is
// sent only once its leaf has committed, so no answered request is missing
// from the log (and a read is confirmed by a quorum, hence linearizable).

// Headers of the admin API.
const (
	// forwardedHeader marks a request a follower forwarded to the leader.
	forwardedHeader = "Cohort-Forwarded-By"
	// clientAddrHeader is the client's address as the forwarding node saw
	// it; trusted only from a coordinator's certificate.
	clientAddrHeader = "Cohort-Client-Addr"
	// clientSiteHeader is the site of the client certificate a forwarded
	// request came with; trusted only from a coordinator's certificate.
	clientSiteHeader = "Cohort-Client-Site"
	// RequestIDHeader names the request's audit entry.
	RequestIDHeader = "Cohort-Request-Id"
)

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
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// problemFor maps an error from a proposal to a status and a detail.
func problemFor(err error) (int, string) {
	switch {
	case errors.Is(err, ErrInvalidJob), errors.Is(err, ErrInvalidSite), errors.Is(err, ErrModelTooLarge), errors.Is(err, ErrInvalidConfig),
		errors.Is(err, ErrInvalidToken), errors.Is(err, ErrBadCommand):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrUnknownJob), errors.Is(err, ErrNoModel), errors.Is(err, ErrUnknownSite), errors.Is(err, errNoSuchNode), errors.Is(err, ErrUnknownToken):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, errLastVoter), errors.Is(err, ErrJobState):
		return http.StatusConflict, err.Error()
	case errors.Is(err, ErrEnrollToken):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, ErrSiteRevoked):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, ErrEnrollOff):
		return http.StatusNotImplemented, err.Error()
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

// adminTLS returns the admin server's TLS configuration (any client; a
// client certificate, if given, must chain to the federation CA: followers
// forwarding requests present theirs) and the client configuration a
// follower forwards with.
func adminTLS(pool *x509.CertPool, cert tls.Certificate) (server, forward *tls.Config) {
	server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	forward = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := pki.PeerIdentity(cs)
			if err == nil && id.Role != pki.RoleCoordinator {
				err = &pki.RoleError{Got: id.Role, Want: []string{pki.RoleCoordinator}}
			}
			return err
		},
	}
	return server, forward
}

// fromCoordinator reports whether a request came over a connection with a
// verified coordinator certificate (a follower forwarding).
func fromCoordinator(req *http.Request) bool {
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 {
		return false
	}
	id, err := pki.PeerIdentity(*req.TLS)
	return err == nil && id.Role == pki.RoleCoordinator
}

// forward sends a request to the leader's admin API.
func (n *Node) forward(w http.ResponseWriter, req *http.Request) {
	if by := req.Header.Get(forwardedHeader); by != "" && fromCoordinator(req) {
		writeProblem(w, http.StatusServiceUnavailable, fmt.Sprintf("forwarded by %s to a node that does not lead; retry", by))
		return
	}
	var addr string
	if lid, _ := n.Leader(); lid != "" {
		n.fsm.view(func(st *state) { addr = st.Nodes[lid].AdminAddr })
	}
	if addr == "" {
		writeProblem(w, http.StatusServiceUnavailable, "no leader known yet; retry")
		return
	}
	client := clientAddr(req)
	site, isSite := clientSite(req)
	tlsConf := n.forwardTLS.Clone()
	tlsConf.ServerName = pki.ServerNameFor(addr)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: addr})
			pr.Out.Header.Set(forwardedHeader, n.cfg.ID)
			pr.Out.Header.Set(clientAddrHeader, client)
			pr.Out.Header.Del(clientSiteHeader)
			if isSite {
				pr.Out.Header.Set(clientSiteHeader, site)
			}
		},
		Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, ResponseHeaderTimeout: time.Minute},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			n.log.Warn("forwarding an admin request to the leader failed", "leader_addr", addr, "err", err)
			writeProblem(w, http.StatusBadGateway, "forwarding to the leader failed; retry")
		},
	}
	proxy.ServeHTTP(w, req)
}

// clientAddr is the request's client address: the forwarding node's
// report when a coordinator forwarded it, else the connection's peer.
func clientAddr(req *http.Request) string {
	if a := req.Header.Get(clientAddrHeader); a != "" && fromCoordinator(req) {
		return a
	}
	return req.RemoteAddr
}

// ctxKey keys the request's reqState in its context.
type ctxKey struct{}

// reqState is one admin request on the leader: its audit entry, filled as
// the request goes, and whether a proposal already recorded it.
type reqState struct {
	entry    AuditEntry
	recorded bool
}

func stateOf(req *http.Request) *reqState {
	rs, _ := req.Context().Value(ctxKey{}).(*reqState)
	return rs
}

// proposeFor proposes a state change made by an admin request, recording
// the request in the same entry; status is what the handler answers on
// success.
func (n *Node) proposeFor(req *http.Request, t cmdType, body any, status int) error {
	rs := stateOf(req)
	if rs == nil || rs.recorded {
		return n.propose(t, body)
	}
	ev := rs.entry
	ev.Status = status
	err := n.proposeAudited(t, body, &ev)
	if err == nil || !errors.Is(err, ErrNotLeader) && !isApplyFailure(err) {
		rs.recorded = true // the entry applied (with its outcome), or was refused by the FSM
	}
	return err
}

// isApplyFailure reports an error from Raft itself (the entry may not
// have committed), as opposed to the FSM's refusal.
func isApplyFailure(err error) bool { return errors.Is(err, errApply) }

// captureWriter holds a handler's answer until the request's audit leaf
// has committed.
type captureWriter struct {
	rw     http.ResponseWriter // for http.ResponseController (deadlines)
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }

// Unwrap lets http.ResponseController reach the connection (a restore
// extends its read deadline).
func (c *captureWriter) Unwrap() http.ResponseWriter { return c.rw }
func (c *captureWriter) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}

// adminRoute is one route of the admin API.
type adminRoute struct {
	method, pattern string
	perm            perm
	// stream routes write their answer themselves, after recordNow
	// (model downloads); the others are captured until audited.
	stream bool
	// before: the request is recorded (outcome "attempted") before it
	// runs, for changes after which this node may no longer lead
	// (removing itself from the cluster).
	before bool
	h      http.HandlerFunc
}

// adminHandler serves the admin API and the dashboard.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range n.adminRoutes() {
		mux.Handle(rt.method+" "+rt.pattern, n.guard(rt))
	}
	mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPIDoc)
	})
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, req *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such route; see /v1/openapi.json")
	})
	n.mountDashboard(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		sw := &statusWriter{ResponseWriter: w}
		mux.ServeHTTP(sw, req)
		// Refusals for the token are counted where they are made
		// (AdminDenied, AdminRateLimited); these are for what was asked.
		if c := sw.status; c >= 400 && c < 500 && c != http.StatusUnauthorized && c != http.StatusForbidden && c != http.StatusTooManyRequests {
			n.stats.AdminBadRequests.Add(1)
		}
	})
}

// statusWriter notes the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// guard wraps a route with forwarding, authentication, rate limiting,
// authorization and auditing.
func (n *Node) guard(rt adminRoute) http.Handler {
	action := rt.method + " " + rt.pattern
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !n.IsLeader() {
			n.forward(w, req)
			return
		}
		// A leader just elected may not have applied every entry of
		// earlier terms yet: a read answered now could miss a write
		// acknowledged by the previous leader. It serves once its leader
		// setup (a barrier) is done.
		if !n.waitReady(req.Context()) {
			if !n.IsLeader() {
				n.forward(w, req)
				return
			}
			w.Header().Set("Retry-After", "1")
			writeProblem(w, http.StatusServiceUnavailable, "the leader is starting; retry")
			return
		}
		if n.audit != nil && n.audit.broken.Load() {
			writeProblem(w, http.StatusServiceUnavailable, "this node's audit log is damaged; ask another node")
			return
		}
		rs := &reqState{entry: AuditEntry{Kind: "admin", Action: action, Target: auditTarget(rt.pattern, req),
			Remote: clientAddr(req), Node: n.cfg.ID, RequestID: newReqID()}}
		w.Header().Set(RequestIDHeader, rs.entry.RequestID)
		now := n.now()
		if rt.perm == permNone {
			// Authenticated by the handler (an enrollment token, a site
			// certificate); only refusals count against the address's
			// limit, so gateways behind one NAT can all enroll.
			host := hostOf(rs.entry.Remote)
			if n.failLimits.blocked(host, now) {
				n.stats.AdminRateLimited.Add(1)
				rs.entry.Kind, rs.entry.Actor, rs.entry.Outcome = "site", "unauthenticated", "denied"
				rs.entry.Status, rs.entry.Time = http.StatusTooManyRequests, now
				n.queueAudit(rs.entry)
				w.Header().Set("Retry-After", "1")
				writeProblem(w, http.StatusTooManyRequests, "too many refused requests from this address")
				return
			}
			rs.entry.Kind, rs.entry.Actor = "site", "unauthenticated"
			n.answer(w, rs, rt.h, req.WithContext(context.WithValue(req.Context(), ctxKey{}, rs)))
			if rs.entry.Outcome == "denied" {
				n.failLimits.allow(host, now)
			}
			return
		}
		var (
			tok *Token
			err error
		)
		n.fsm.view(func(st *state) { tok, err = st.authenticate(bearer(req), now) })
		if err != nil {
			rs.entry.Actor, rs.entry.Outcome = "unauthenticated", "denied"
			host := hostOf(rs.entry.Remote)
			if ok, wait := n.failLimits.allow(host, now); !ok {
				// Past the limit, a refusal is answered at once and its
				// leaf queued: the queue is written in batches (many
				// leaves per Raft entry), so a client guessing tokens
				// costs the log little and cannot hold the leader up.
				n.stats.AdminRateLimited.Add(1)
				rs.entry.Status, rs.entry.Time = http.StatusTooManyRequests, now
				n.queueAudit(rs.entry)
				w.Header().Set("Retry-After", strconv.Itoa(max(1, int(wait.Seconds()+0.5))))
				writeProblem(w, http.StatusTooManyRequests, "too many failed authentications from this address")
				return
			}
			n.stats.AdminDenied.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="cohort"`)
			n.answer(w, rs, problemWriter(http.StatusUnauthorized, err.Error()))
			return
		}
		rs.entry.Actor, rs.entry.TokenID, rs.entry.Role = tok.Person, tok.ID, tok.Role
		rs.entry.BreakGlass = tok.Role == RoleBreakGlass
		if ok, wait := n.tokenLimits.allow(tok.ID, now); !ok {
			n.stats.AdminRateLimited.Add(1)
			rs.entry.Outcome = "denied"
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(wait.Seconds()+0.5))))
			n.answer(w, rs, problemWriter(http.StatusTooManyRequests, "rate limit of this token exceeded; slow down"))
			return
		}
		if !tok.Role.can(rt.perm) {
			n.stats.AdminDenied.Add(1)
			rs.entry.Outcome = "denied"
			n.answer(w, rs, problemWriter(http.StatusForbidden, fmt.Sprintf("role %s may not %s (needs %s)", tok.Role, action, rt.perm)))
			return
		}
		if rs.entry.BreakGlass {
			n.log.Warn("break-glass token used", "token_id", tok.ID, "action", action, "request_id", rs.entry.RequestID)
		}
		req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, rs))
		if rt.before {
			rs.entry.Outcome = "attempted"
			if err := n.recordNow(rs, 0); err != nil {
				writeProblem(w, http.StatusServiceUnavailable, "the request could not be recorded in the audit log; retry")
				return
			}
		}
		if rt.stream {
			rt.h(w, req)
			return
		}
		n.answer(w, rs, rt.h, req)
	})
}

// problemWriter is a handler that answers a problem.
func problemWriter(status int, detail string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeProblem(w, status, detail) }
}

// answer runs h into a buffer, records the request (unless a proposal of
// h did), and then sends the answer; when the record cannot be made, it
// answers 503 instead.
func (n *Node) answer(w http.ResponseWriter, rs *reqState, h http.HandlerFunc, req ...*http.Request) {
	c := &captureWriter{rw: w, header: w.Header()}
	var r *http.Request
	if len(req) > 0 {
		r = req[0]
	}
	h(c, r)
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if hook := n.beforeRecord.Load(); hook != nil {
		(*hook)()
	}
	if err := n.recordNow(rs, c.status); err != nil {
		c.header.Del("Content-Length")
		writeProblem(w, http.StatusServiceUnavailable, "the request could not be recorded in the audit log; retry")
		return
	}
	w.WriteHeader(c.status)
	w.Write(c.body.Bytes())
}

// waitReady waits, up to ApplyTimeout, until this node leads and has
// finished its leader setup in the current term (isReady); false if it
// did not, or stopped leading.
func (n *Node) waitReady(ctx context.Context) bool {
	deadline := time.Now().Add(time.Duration(n.cfg.ApplyTimeout))
	for !n.isReady() {
		if !n.IsLeader() || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-n.leadershipChanged():
		case <-time.After(5 * time.Millisecond):
		}
	}
	return true
}

// recordNow records a request that no proposal recorded, with its answer's
// status, in an audit-only entry.
func (n *Node) recordNow(rs *reqState, status int) error {
	if rs.recorded {
		return nil
	}
	ev := rs.entry
	ev.Status = status
	if ev.Outcome == "" {
		ev.Outcome = "ok"
		if status >= 400 {
			ev.Outcome = "error"
		}
	}
	if err := n.proposeAudited(cmdAudit, struct{}{}, &ev); err != nil {
		n.log.Warn("audit record failed", "request_id", ev.RequestID, "err", err)
		return err
	}
	rs.recorded = true
	return nil
}

// auditTarget names what a request acts on from its path values, keeping
// only values shaped like ids or digests (a path is client input).
func auditTarget(pattern string, req *http.Request) string {
	var parts []string
	for _, name := range []string{"id", "digest"} {
		if !strings.Contains(pattern, "{"+name+"}") {
			continue
		}
		v := req.PathValue(name)
		if !validID(v) && validDigest(v) != nil {
			v = "(malformed)"
		}
		kind := strings.Split(strings.TrimPrefix(pattern, "/v1/"), "/")[0]
		parts = append(parts, strings.TrimSuffix(kind, "s")+" "+v)
	}
	return strings.Join(parts, " ")
}

// hostOf returns the host of a host:port address.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// ClusterNode is one member of the cluster as the admin API shows it.
type ClusterNode struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	Voter      bool   `json:"voter"`
	Leader     bool   `json:"leader"`
	AgentAddr  string `json:"agent_addr,omitempty"`
	StatusAddr string `json:"status_addr,omitempty"`
	AdminAddr  string `json:"admin_addr,omitempty"`
	// AuditKey is the Ed25519 public key (base64) the node signs its audit
	// checkpoints with.
	AuditKey string `json:"audit_key,omitempty"`
	// Version is the node's build when it last became leader.
	Version string `json:"version,omitempty"`
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
				Leader: string(s.ID) == lid, AgentAddr: info.AgentAddr, StatusAddr: info.StatusAddr,
				AdminAddr: info.AdminAddr, AuditKey: info.AuditKey, Version: info.Version})
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
	err := n.raftCall(func(r *raft.Raft) error {
		if r.State() != raft.Leader {
			return ErrNotLeader
		}
		return r.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, time.Duration(n.cfg.ApplyTimeout)).Error()
	})
	if errors.Is(err, ErrNotLeader) {
		return err
	} else if err != nil {
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
	err = n.raftCall(func(r *raft.Raft) error {
		if r.State() != raft.Leader {
			return ErrNotLeader
		}
		return r.RemoveServer(raft.ServerID(id), 0, time.Duration(n.cfg.ApplyTimeout)).Error()
	})
	if errors.Is(err, ErrNotLeader) {
		return err
	} else if err != nil {
		return fmt.Errorf("remove node %s: %w", id, err)
	}
	n.log.Info("node removed", "id", id)
	return nil
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
