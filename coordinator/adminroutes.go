package coordinator

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cohort-fl/cohort/coordinator/audit"
)

// adminRoutes is the admin API: every route and the permission it needs.
// TestAuthorizationTable walks this table with every role.
func (n *Node) adminRoutes() []adminRoute {
	return []adminRoute{
		{method: "GET", pattern: "/v1/whoami", perm: permSelf, h: n.getWhoami},

		{method: "GET", pattern: "/v1/cluster", perm: permClusterRead, h: n.getCluster},
		{method: "POST", pattern: "/v1/cluster/nodes", perm: permClusterWrite, before: true, h: n.postClusterNode},
		{method: "DELETE", pattern: "/v1/cluster/nodes/{id}", perm: permClusterWrite, before: true, h: n.deleteClusterNode},
		{method: "GET", pattern: "/v1/cluster/backup", perm: permClusterWrite, stream: true, h: n.getBackup},
		{method: "POST", pattern: "/v1/cluster/restore", perm: permClusterWrite, h: n.postRestore},

		{method: "GET", pattern: "/v1/sites", perm: permSitesRead, h: n.listSites},
		{method: "POST", pattern: "/v1/sites", perm: permSitesWrite, h: n.postSite},
		{method: "GET", pattern: "/v1/sites/{id}", perm: permSitesRead, h: n.getSite},
		{method: "POST", pattern: "/v1/sites/{id}/revoke", perm: permSitesWrite, h: n.revokeSite},
		{method: "POST", pattern: "/v1/sites/{id}/enrollment-tokens", perm: permSitesWrite, h: n.postEnrollToken},
		// Gateways: enrollment with a one-time token, renewal with the
		// site certificate (no bearer token).
		{method: "POST", pattern: "/v1/enroll", perm: permNone, h: n.postEnroll},
		{method: "POST", pattern: "/v1/renew", perm: permNone, h: n.postRenew},

		{method: "GET", pattern: "/v1/jobs", perm: permJobsRead, h: n.listJobs},
		{method: "POST", pattern: "/v1/jobs", perm: permJobsWrite, h: n.postJob},
		{method: "GET", pattern: "/v1/jobs/{id}", perm: permJobsRead, h: n.getJob},
		{method: "POST", pattern: "/v1/jobs/{id}/pause", perm: permJobsWrite, h: n.jobAction("pause")},
		{method: "POST", pattern: "/v1/jobs/{id}/resume", perm: permJobsWrite, h: n.jobAction("resume")},
		{method: "POST", pattern: "/v1/jobs/{id}/cancel", perm: permJobsWrite, h: n.jobAction("cancel")},
		{method: "GET", pattern: "/v1/jobs/{id}/rounds", perm: permJobsRead, h: n.listRounds},
		{method: "GET", pattern: "/v1/jobs/{id}/results", perm: permJobsRead, h: n.getJobResults},

		{method: "GET", pattern: "/v1/jobs/{id}/models", perm: permModelsRead, h: n.listVersions},
		{method: "GET", pattern: "/v1/jobs/{id}/models/{digest}", perm: permModelsRead, h: n.getVersion},
		{method: "GET", pattern: "/v1/jobs/{id}/models/{digest}/card", perm: permModelsRead, h: n.getModelCard},
		{method: "POST", pattern: "/v1/jobs/{id}/models/{digest}/stage", perm: permModelsWrite, h: n.setStage},
		{method: "POST", pattern: "/v1/jobs/{id}/models/{digest}/evaluate", perm: permJobsWrite, h: n.evaluateVersion},
		{method: "POST", pattern: "/v1/jobs/{id}/rollback", perm: permModelsWrite, h: n.rollback},
		{method: "GET", pattern: "/v1/models", perm: permModelsRead, h: n.listModels},
		{method: "GET", pattern: "/v1/models/{digest}", perm: permModelsRead, h: n.getModel},
		{method: "GET", pattern: "/v1/models/{digest}/weights", perm: permModelsDownload, stream: true, h: n.getModelWeights},

		{method: "GET", pattern: "/v1/tokens", perm: permTokensRead, h: n.listTokens},
		{method: "POST", pattern: "/v1/tokens", perm: permTokensWrite, h: n.postToken},
		{method: "DELETE", pattern: "/v1/tokens/{id}", perm: permTokensWrite, h: n.revokeToken},

		{method: "GET", pattern: "/v1/audit/entries", perm: permAuditRead, h: n.getAuditEntries},
		{method: "GET", pattern: "/v1/audit/checkpoint", perm: permAuditRead, h: n.getAuditCheckpoint},
		{method: "GET", pattern: "/v1/audit/proofs/inclusion", perm: permAuditRead, h: n.getInclusionProof},
		{method: "GET", pattern: "/v1/audit/proofs/consistency", perm: permAuditRead, h: n.getConsistencyProof},
	}
}

// Whoami is GET /v1/whoami.
type Whoami struct {
	Person  string    `json:"person"`
	Role    Role      `json:"role"`
	TokenID string    `json:"token_id"`
	Expires time.Time `json:"expires"`
}

func (n *Node) getWhoami(w http.ResponseWriter, req *http.Request) {
	var out *Whoami
	id := stateOf(req).entry.TokenID
	n.fsm.view(func(st *state) {
		if t := st.Tokens[id]; t != nil {
			out = &Whoami{Person: t.Person, Role: t.Role, TokenID: t.ID, Expires: t.Expires}
		}
	})
	if out == nil {
		writeProblem(w, http.StatusUnauthorized, errBadToken.Error())
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// pageParams reads ?page_size= (default 100, at most 1000) and
// ?page_token= (opaque: the last key of the previous page).
func pageParams(w http.ResponseWriter, req *http.Request) (size int, after string, ok bool) {
	size = 100
	if s := req.URL.Query().Get("page_size"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 1000 {
			writeProblem(w, http.StatusBadRequest, "page_size: an integer from 1 to 1000")
			return 0, "", false
		}
		size = v
	}
	if t := req.URL.Query().Get("page_token"); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || len(b) > 256 {
			writeProblem(w, http.StatusBadRequest, "page_token: not a token from a previous page")
			return 0, "", false
		}
		after = string(b)
	}
	return size, after, true
}

// paginate returns the page of items (sorted by key) after the key
// `after`, and the token of the next page ("" on the last).
func paginate[T any](items []T, key func(T) string, size int, after string) ([]T, string) {
	slices.SortFunc(items, func(a, b T) int { return cmpString(key(a), key(b)) })
	i, _ := slices.BinarySearchFunc(items, after, func(t T, k string) int { return cmpString(key(t), k) })
	if i < len(items) && after != "" && key(items[i]) == after {
		i++
	}
	if after == "" {
		i = 0
	}
	end := min(len(items), i+size)
	out := items[i:end]
	if end < len(items) {
		return out, base64.RawURLEncoding.EncodeToString([]byte(key(items[end-1])))
	}
	return nonNil(out), ""
}

// listPage answers a paginated list under name.
func listPage[T any](w http.ResponseWriter, req *http.Request, name string, items []T, key func(T) string) {
	size, after, ok := pageParams(w, req)
	if !ok {
		return
	}
	out, next := paginate(items, key, size, after)
	writeJSON(w, http.StatusOK, map[string]any{name: out, "next_page_token": next})
}

func (n *Node) getCluster(w http.ResponseWriter, _ *http.Request) {
	v, err := n.Cluster()
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (n *Node) postClusterNode(w http.ResponseWriter, req *http.Request) {
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
}

func (n *Node) deleteClusterNode(w http.ResponseWriter, req *http.Request) {
	if err := n.RemoveNode(req.PathValue("id")); err != nil {
		writeErr(w, err)
		return
	}
	v, _ := n.Cluster()
	writeJSON(w, http.StatusOK, v)
}

// SiteView is one enrolled site as the admin API shows it.
type SiteView struct {
	ID          string    `json:"id"`
	Created     time.Time `json:"created"`
	Revoked     time.Time `json:"revoked,omitzero"`
	Online      bool      `json:"online"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
	CertExpires time.Time `json:"cert_expires,omitzero"`
	// AgentVersion and Protocol are what the site's agent said it runs,
	// and the protocol version agreed, at its last hello to this leader.
	AgentVersion string `json:"agent_version,omitempty"`
	Protocol     uint32 `json:"protocol,omitempty"`
}

func (n *Node) siteView(s *Site) SiteView {
	v := SiteView{ID: s.ID, Created: s.Created, Revoked: s.Revoked, CertExpires: s.CertExpires}
	if b, ok := n.agentBuilds.Load(s.ID); ok {
		v.AgentVersion, v.Protocol = b.(siteBuild).Version, b.(siteBuild).Protocol
	}
	if t, ok := n.lastSeen.Load(s.ID); ok {
		v.LastSeen = t.(time.Time).UTC()
		v.Online = s.Revoked.IsZero() && n.now().Sub(v.LastSeen) < 2*time.Duration(n.cfg.MaxPollWait)
	}
	return v
}

func (n *Node) listSites(w http.ResponseWriter, req *http.Request) {
	var out []SiteView
	n.fsm.view(func(st *state) {
		for _, s := range st.Sites {
			out = append(out, n.siteView(s))
		}
	})
	listPage(w, req, "sites", out, func(s SiteView) string { return s.ID })
}

func (n *Node) getSite(w http.ResponseWriter, req *http.Request) {
	var out *SiteView
	n.fsm.view(func(st *state) {
		if s, ok := st.Sites[req.PathValue("id")]; ok {
			v := n.siteView(s)
			out = &v
		}
	})
	if out == nil {
		writeProblem(w, http.StatusNotFound, "no such site")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) postSite(w http.ResponseWriter, req *http.Request) {
	var b struct {
		ID string `json:"id"`
	}
	if !decodeBody(w, req, &b) {
		return
	}
	if !validID(b.ID) {
		writeErr(w, fmt.Errorf("%w: site id %q: use 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalidSite, b.ID))
		return
	}
	if err := n.proposeFor(req, cmdEnsureSite, Site{ID: b.ID}, http.StatusCreated); err != nil {
		writeErr(w, err)
		return
	}
	var out SiteView
	n.fsm.view(func(st *state) {
		if s, ok := st.Sites[b.ID]; ok {
			out = n.siteView(s)
		}
	})
	writeJSON(w, http.StatusCreated, out)
}

func (n *Node) revokeSite(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	if err := n.proposeFor(req, cmdRevokeSite, revokeBody{ID: id}, http.StatusOK); err != nil {
		writeErr(w, err)
		return
	}
	var out SiteView // every node closed the site's connections as it applied the entry
	n.fsm.view(func(st *state) { out = n.siteView(st.Sites[id]) })
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) listJobs(w http.ResponseWriter, req *http.Request) {
	listPage(w, req, "jobs", n.Status().Jobs, func(j JobStatus) string { return j.ID })
}

func (n *Node) jobStatus(id string) (JobStatus, bool) {
	for _, j := range n.Status().Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return JobStatus{}, false
}

func (n *Node) getJob(w http.ResponseWriter, req *http.Request) {
	j, ok := n.jobStatus(req.PathValue("id"))
	if !ok {
		writeProblem(w, http.StatusNotFound, "no such job")
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func (n *Node) postJob(w http.ResponseWriter, req *http.Request) {
	spec := DefaultJobSpec()
	if !decodeBody(w, req, &spec) {
		return
	}
	if spec.IsAnalytics() && spec.noModel() {
		spec.Model = ModelSpec{} // the defaults: an analytics job has none
	}
	if spec.IsEvaluation() {
		if err := n.resolveEvaluationSpec(&spec); err != nil {
			writeErr(w, err)
			return
		}
	}
	if !spec.IsAnalytics() && spec.Features.FeatureSpec != nil && spec.Model.NumFeatures == 0 {
		spec.Model.NumFeatures = len(spec.Features.GetFeatures())
	}
	if err := spec.PlanPrivacy(); err != nil {
		writeErr(w, err)
		return
	}
	if prev, ok := n.Job(spec.ID); ok {
		a, _ := json.Marshal(prev.Spec)
		b, _ := json.Marshal(spec)
		if string(a) != string(b) {
			writeProblem(w, http.StatusConflict, fmt.Sprintf("job %q exists with a different spec", spec.ID))
			return
		}
	}
	err := n.createJob(spec, func(t cmdType, body any) error { return n.proposeFor(req, t, body, http.StatusCreated) })
	if err != nil {
		writeErr(w, err)
		return
	}
	if j, ok := n.jobStatus(spec.ID); ok {
		writeJSON(w, http.StatusCreated, j)
		return
	}
	writeProblem(w, http.StatusInternalServerError, "the job was created but is not visible")
}

func (n *Node) jobAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		if err := n.proposeFor(req, cmdJobState, jobStateBody{Job: id, Action: action}, http.StatusOK); err != nil {
			writeErr(w, err)
			return
		}
		j, _ := n.jobStatus(id)
		writeJSON(w, http.StatusOK, j)
	}
}

func (n *Node) listRounds(w http.ResponseWriter, req *http.Request) {
	j, ok := n.jobStatus(req.PathValue("id"))
	if !ok {
		writeProblem(w, http.StatusNotFound, "no such job")
		return
	}
	listPage(w, req, "rounds", j.History, func(r RoundSummary) string {
		return fmt.Sprintf("%s-%020d-%06d", r.Kind, r.Round, r.Attempt)
	})
}

// ModelView is one committed global model.
type ModelView struct {
	Digest string `json:"digest"`
	Job    string `json:"job"`
	Round  uint64 `json:"round"`
	Size   int64  `json:"size"`
}

func (n *Node) models(job string) []ModelView {
	var out []ModelView
	n.fsm.view(func(st *state) {
		for id, j := range st.Jobs {
			if job != "" && id != job {
				continue
			}
			for _, m := range j.Models {
				out = append(out, ModelView{Digest: m.Digest, Job: id, Round: m.Round, Size: m.Size})
			}
		}
	})
	return out
}

func (n *Node) listModels(w http.ResponseWriter, req *http.Request) {
	listPage(w, req, "models", n.models(req.URL.Query().Get("job")), func(m ModelView) string {
		return fmt.Sprintf("%s-%020d-%s", m.Job, m.Round, m.Digest)
	})
}

func (n *Node) findModel(digest string) (ModelView, bool) {
	for _, m := range n.models("") {
		if m.Digest == digest {
			return m, true
		}
	}
	return ModelView{}, false
}

func (n *Node) getModel(w http.ResponseWriter, req *http.Request) {
	m, ok := n.findModel(req.PathValue("digest"))
	if !ok {
		writeProblem(w, http.StatusNotFound, "no committed model has that digest")
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// getModelWeights streams a committed global model's weights (packed
// little-endian float32). Only committed models are served: the blob
// store also holds the sites' individual updates, which must not leave.
func (n *Node) getModelWeights(w http.ResponseWriter, req *http.Request) {
	rs := stateOf(req)
	m, ok := n.findModel(req.PathValue("digest"))
	if !ok {
		n.answer(w, rs, problemWriter(http.StatusNotFound, "no committed model has that digest"))
		return
	}
	body, err := n.ModelWeights(req.Context(), m.Digest)
	if err != nil {
		n.answer(w, rs, problemWriter(http.StatusServiceUnavailable, "the model's weights are not available on the leader yet; retry"))
		return
	}
	if err := n.recordNow(rs, http.StatusOK); err != nil {
		writeProblem(w, http.StatusServiceUnavailable, "the request could not be recorded in the audit log; retry")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cohort-Model-Sha256", m.Digest)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-round%d.f32"`, m.Job, m.Round))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

func (n *Node) listTokens(w http.ResponseWriter, req *http.Request) {
	var out []TokenView
	n.fsm.view(func(st *state) {
		for _, t := range st.Tokens {
			out = append(out, t.view())
		}
	})
	listPage(w, req, "tokens", out, func(t TokenView) string { return t.ID })
}

func (n *Node) postToken(w http.ResponseWriter, req *http.Request) {
	var spec tokenSpec
	if !decodeBody(w, req, &spec) {
		return
	}
	if err := spec.validate(); err != nil {
		writeErr(w, err)
		return
	}
	id, secret, err := newToken()
	if err != nil {
		writeErr(w, err)
		return
	}
	tk := Token{ID: id, Hash: hashToken(secret), Person: spec.Person, Role: spec.Role,
		Expires: n.now().Add(time.Duration(spec.TTL)).UTC(), CreatedBy: stateOf(req).entry.TokenID}
	stateOf(req).entry.Target = "token " + id
	if err := n.proposeFor(req, cmdCreateToken, tk, http.StatusCreated); err != nil {
		writeErr(w, err)
		return
	}
	var v TokenView
	n.fsm.view(func(st *state) { v = st.Tokens[id].view() })
	v.Token = secret
	writeJSON(w, http.StatusCreated, v)
}

func (n *Node) revokeToken(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	if err := n.proposeFor(req, cmdRevokeToken, revokeBody{ID: id}, http.StatusOK); err != nil {
		writeErr(w, err)
		return
	}
	var v TokenView
	n.fsm.view(func(st *state) { v = st.Tokens[id].view() })
	writeJSON(w, http.StatusOK, v)
}

// AuditEntries is GET /v1/audit/entries.
type AuditEntries struct {
	Size    uint64            `json:"size"`
	Start   uint64            `json:"start"`
	Entries []json.RawMessage `json:"entries"`
	// LeafHashes (hex), with ?hashes=true: the leaves' RFC 6962 hashes as
	// the node computed them when it applied them, for locating an entry
	// that no longer matches.
	LeafHashes []string `json:"leaf_hashes,omitempty"`
	// Raw, with ?raw=true: each entry's exact bytes as stored, which is
	// what its leaf hash covers (Entries is re-encoded for reading).
	Raw [][]byte `json:"raw,omitempty"`
}

func queryUint(w http.ResponseWriter, req *http.Request, name string, def uint64) (uint64, bool) {
	s := req.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, name+": a non-negative integer")
		return 0, false
	}
	return v, true
}

func (n *Node) getAuditEntries(w http.ResponseWriter, req *http.Request) {
	start, ok := queryUint(w, req, "start", 0)
	if !ok {
		return
	}
	limit, ok := queryUint(w, req, "limit", 100)
	if !ok {
		return
	}
	if limit > 1000 {
		writeProblem(w, http.StatusBadRequest, "limit: at most 1000")
		return
	}
	out := AuditEntries{Size: n.audit.log.Size(), Start: start, Entries: []json.RawMessage{}}
	if limit > 0 && start < out.Size {
		leaves, err := n.audit.log.Entries(start, int(limit))
		if err != nil {
			writeErr(w, err)
			return
		}
		raw := req.URL.Query().Get("raw") == "true"
		for i, l := range leaves {
			if json.Valid(l) {
				out.Entries = append(out.Entries, json.RawMessage(l))
			} else {
				// A damaged line: shown as a string, so the answer stays
				// JSON and the verifier can name it.
				s, _ := json.Marshal(string(l))
				out.Entries = append(out.Entries, s)
			}
			if raw {
				out.Raw = append(out.Raw, l)
			}
			if req.URL.Query().Get("hashes") == "true" {
				h, err := n.audit.log.LeafHash(start + uint64(i))
				if err != nil {
					writeErr(w, err)
					return
				}
				out.LeafHashes = append(out.LeafHashes, hex.EncodeToString(h))
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// AuditCheckpoint is GET /v1/audit/checkpoint: the latest checkpoint the
// answering node signed, and which node that is.
type AuditCheckpoint struct {
	audit.Checkpoint
	Node string `json:"node"`
}

func (n *Node) getAuditCheckpoint(w http.ResponseWriter, _ *http.Request) {
	cp, err := n.audit.log.Checkpoint()
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, AuditCheckpoint{Checkpoint: cp, Node: n.cfg.ID})
}

// AuditProof is an inclusion or consistency proof (hashes base64).
type AuditProof struct {
	Index  uint64   `json:"index,omitempty"`
	Size   uint64   `json:"size,omitempty"`
	From   uint64   `json:"from,omitempty"`
	To     uint64   `json:"to,omitempty"`
	Hashes [][]byte `json:"hashes"`
}

func (n *Node) getInclusionProof(w http.ResponseWriter, req *http.Request) {
	index, ok := queryUint(w, req, "index", 0)
	if !ok {
		return
	}
	size, ok := queryUint(w, req, "size", n.audit.log.Size())
	if !ok {
		return
	}
	p, err := n.audit.log.InclusionProof(index, size)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, AuditProof{Index: index, Size: size, Hashes: nonNil(p)})
}

func (n *Node) getConsistencyProof(w http.ResponseWriter, req *http.Request) {
	from, ok := queryUint(w, req, "from", 0)
	if !ok {
		return
	}
	to, ok := queryUint(w, req, "to", n.audit.log.Size())
	if !ok {
		return
	}
	p, err := n.audit.log.ConsistencyProof(from, to)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, AuditProof{From: from, To: to, Hashes: nonNil(p)})
}
