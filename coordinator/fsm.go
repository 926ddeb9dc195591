package coordinator

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/coordinator/audit"
	"github.com/cohort-fl/cohort/protocol/secagg"
	"github.com/hashicorp/raft"
)

// cmdType is the first byte of every Raft log entry.
type cmdType byte

const (
	cmdNodeInfo cmdType = iota + 1
	cmdEnsureSite
	cmdEnsureJob
	cmdOpenRound
	cmdReceipt
	cmdCommitRound
	cmdFailRound
	cmdDecline
	cmdCommitStats
	// cmdAudit records an admin request that changed nothing (a read, a
	// refused or a failed request): its entry is the command's Audit.
	cmdAudit
	cmdCreateToken
	cmdRevokeToken
	cmdRevokeSite
	cmdJobState
	cmdCreateEnrollToken
	cmdEnroll
	cmdRenew
	// cmdAuditBatch records many admin requests that changed nothing
	// (rate-limited refusals), each one leaf.
	cmdAuditBatch
	// cmdSecAggInput and cmdSecAggAdvance drive a round's secure
	// aggregation run (secagg.go).
	cmdSecAggInput
	cmdSecAggAdvance
	// cmdCommitEval ends an evaluation job with its results;
	// cmdModelStage and cmdRollback change the registry (registry.go).
	cmdCommitEval
	cmdModelStage
	cmdRollback
	// cmdDrift records a site's drift report (retrain.go).
	cmdDrift
)

func (t cmdType) String() string {
	switch t {
	case cmdNodeInfo:
		return "node-info"
	case cmdEnsureSite:
		return "ensure-site"
	case cmdEnsureJob:
		return "ensure-job"
	case cmdOpenRound:
		return "open-round"
	case cmdReceipt:
		return "receipt"
	case cmdCommitRound:
		return "commit-round"
	case cmdFailRound:
		return "fail-round"
	case cmdDecline:
		return "decline"
	case cmdCommitStats:
		return "commit-stats"
	case cmdAudit:
		return "audit"
	case cmdCreateToken:
		return "create-token"
	case cmdRevokeToken:
		return "revoke-token"
	case cmdRevokeSite:
		return "revoke-site"
	case cmdJobState:
		return "job-state"
	case cmdCreateEnrollToken:
		return "create-enroll-token"
	case cmdEnroll:
		return "enroll"
	case cmdRenew:
		return "renew"
	case cmdAuditBatch:
		return "audit-batch"
	case cmdSecAggInput:
		return "secagg-input"
	case cmdSecAggAdvance:
		return "secagg-advance"
	case cmdCommitEval:
		return "commit-eval"
	case cmdModelStage:
		return "model-stage"
	case cmdRollback:
		return "rollback"
	case cmdDrift:
		return "drift"
	}
	return fmt.Sprintf("cmd(%d)", byte(t))
}

// command is the JSON body after the type byte. ReqID deduplicates retries;
// At is the leader's clock when it proposed the command, so the FSM never
// reads a clock of its own.
//
// Audit, when set, is the admin request that caused the command: the FSM
// appends it to the audit log, with the command's outcome, in the same
// apply that changes the state.
type command struct {
	ReqID string          `json:"req_id"`
	At    time.Time       `json:"at"`
	Body  json.RawMessage `json:"body"`
	Audit *AuditEntry     `json:"audit,omitempty"`
}

type revokeBody struct {
	ID string `json:"id"`
}

type jobStateBody struct {
	Job    string `json:"job"`
	Action string `json:"action"` // pause, resume, cancel; budget (the engine: the privacy budget is spent)
	Reason string `json:"reason,omitempty"`
}

type openRoundBody struct {
	Job      string    `json:"job"`
	Round    uint64    `json:"round"`
	Kind     string    `json:"kind,omitempty"`
	Base     string    `json:"base"`
	Deadline time.Time `json:"deadline"`
	// Selected are the sites asked (empty: all), chosen by the leader.
	Selected []string `json:"selected,omitempty"`
	// SecAgg opens a secure aggregation run (a job with
	// secure_aggregation): its sites and configuration.
	SecAgg *secAggOpen `json:"secagg,omitempty"`
}

type receiptBody struct {
	Job     string  `json:"job"`
	Round   uint64  `json:"round"`
	Receipt Receipt `json:"receipt"`
}

type commitRoundBody struct {
	Job     string `json:"job"`
	Round   uint64 `json:"round"`
	Attempt int    `json:"attempt"`
	// Digest and Size name the new model's blob, which a majority of
	// voters held before this entry was proposed.
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	// OptState names the rule's new state blob (replicated like the
	// model); nil for stateless rules.
	OptState     *BlobRef `json:"opt_state,omitempty"`
	Contributors []string `json:"contributors"`
	Samples      uint64   `json:"samples"`
	MeanValAUROC float64  `json:"mean_val_auroc"`
	// Privacy is a private job's accountant after this round, computed by
	// the leader.
	Privacy *PrivacyState `json:"privacy,omitempty"`
}

type declineBody struct {
	Job    string `json:"job"`
	Round  uint64 `json:"round"`
	Site   string `json:"site"`
	Reason string `json:"reason"`
}

type commitStatsBody struct {
	Job     string        `json:"job"`
	Attempt int           `json:"attempt"`
	Norm    Normalization `json:"norm"`
	// Results are an analytics job's (instead of Norm), computed and, with
	// noise, drawn by the leader.
	Results *AnalyticsResult `json:"results,omitempty"`
}

type failRoundBody struct {
	Job     string `json:"job"`
	Round   uint64 `json:"round"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
}

func encodeCommand(t cmdType, reqID string, at time.Time, body any, audit *AuditEntry) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	c, err := json.Marshal(command{ReqID: reqID, At: at.UTC(), Body: b, Audit: audit})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, c...), nil
}

// statsAttemptKey counts a job's statistics round attempts apart from its
// training round numbers.
const statsAttemptKey = ^uint64(0)

// fsm is the replicated state machine. Readers take mu.RLock; Apply takes
// mu.Lock. No other lock is taken while mu is held. After each applied entry
// changedC is closed and replaced, waking every waiter.
type fsm struct {
	mu       sync.RWMutex
	st       *state
	changedC chan struct{}
	// onCommit, if set, is called (without mu held) after a round commits.
	onCommit func(job string, round uint64)
	// onRevoke, if set, is called (without mu held) after a site is revoked.
	onRevoke func(site string)
	// audit is the node's audit log; nil keeps only the count and root's
	// place in the state (unit tests of the FSM).
	audit *auditSink
	// secAggObserver, if set, sees every vector a secure aggregation
	// server holds (a test hook; see secagg.Server.SetObserver).
	secAggObserver func(label string, v []uint32)
}

func newFSM() *fsm {
	return &fsm{st: newState(), changedC: make(chan struct{})}
}

// changed returns a channel closed at the next applied entry.
func (f *fsm) changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changedC
}

// Apply applies one committed entry. It returns nil or an error; the error
// is the proposer's answer (a refused command changes nothing).
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	t := cmdType(l.Data[0])
	var c command
	if err := json.Unmarshal(l.Data[1:], &c); err != nil {
		return fmt.Errorf("%w: %s entry does not decode: %w", ErrBadCommand, t, err)
	}
	f.mu.Lock()
	var (
		res       error
		committed *commitRoundBody
		revoked   *revokeBody
	)
	if f.st.markSeen(c.ReqID) {
		res = nil // a retried proposal: already applied
	} else {
		res = f.apply(t, c)
		if res == nil && t == cmdCommitRound {
			committed = new(commitRoundBody)
			_ = json.Unmarshal(c.Body, committed)
		}
		if res == nil && t == cmdRevokeSite {
			revoked = new(revokeBody)
			_ = json.Unmarshal(c.Body, revoked)
		}
		f.record(t, c, res)
	}
	close(f.changedC)
	f.changedC = make(chan struct{})
	onCommit, onRevoke := f.onCommit, f.onRevoke
	f.mu.Unlock()
	if revoked != nil && onRevoke != nil {
		onRevoke(revoked.ID)
	}
	if committed != nil && onCommit != nil {
		onCommit(committed.Job, committed.Round)
	}
	return res
}

func (f *fsm) apply(t cmdType, c command) error {
	decode := func(v any) error {
		if err := json.Unmarshal(c.Body, v); err != nil {
			return fmt.Errorf("%w: %s body: %w", ErrBadCommand, t, err)
		}
		return nil
	}
	st := f.st
	switch t {
	case cmdNodeInfo:
		var n NodeInfo
		if err := decode(&n); err != nil {
			return err
		}
		st.Nodes[n.ID] = n
		return nil
	case cmdEnsureSite:
		var s Site
		if err := decode(&s); err != nil {
			return err
		}
		if !validID(s.ID) {
			return fmt.Errorf("%w: site id %q", ErrInvalidSite, s.ID)
		}
		if _, ok := st.Sites[s.ID]; !ok {
			st.Sites[s.ID] = &Site{ID: s.ID, Created: c.At}
		}
		return nil
	case cmdEnsureJob:
		var b ensureJobBody
		if err := decode(&b); err != nil {
			return err
		}
		if _, ok := st.Jobs[b.Spec.ID]; ok {
			return nil // idempotent by id
		}
		if err := b.Spec.Validate(0); err != nil {
			return err
		}
		j := &Job{Spec: b.Spec, State: JobRunning, Created: c.At, RetrainOf: b.RetrainOf}
		if b.RetrainOf != "" {
			old, ok := st.Jobs[b.RetrainOf]
			switch {
			case !ok:
				return fmt.Errorf("%w: retrain of %q", ErrUnknownJob, b.RetrainOf)
			case old.RetrainedBy != "":
				return fmt.Errorf("%w: job %s was already retrained by %s", ErrJobState, b.RetrainOf, old.RetrainedBy)
			}
			old.RetrainedBy = b.Spec.ID
		}
		if e := b.Spec.Evaluation; b.Spec.IsEvaluation() {
			// It scores another job's model: that model must exist.
			if tj, ok := st.Jobs[e.Job]; !ok || tj.ModelByDigest(e.Model) == nil {
				return fmt.Errorf("%w: evaluation: job %s has no model %.12s", ErrInvalidJob, e.Job, e.Model)
			}
		} else if !b.Spec.IsAnalytics() { // an analytics job has no model
			if err := checkModelRef(b.Initial.Digest, b.Initial.Size, b.Spec.Model); err != nil {
				return err
			}
			b.Initial.Round = 0
			j.Models = []*Model{&b.Initial}
		}
		j.reindex()
		st.Jobs[b.Spec.ID] = j
		return nil
	case cmdOpenRound:
		var b openRoundBody
		if err := decode(&b); err != nil {
			return err
		}
		j, err := f.runningJob(b.Job)
		if err != nil {
			return err
		}
		if j.Current != nil {
			return fmt.Errorf("%w: job %s round %d is still open", ErrRoundConflict, b.Job, j.Current.Number)
		}
		kind := KindTrain
		switch {
		case j.Spec.IsEvaluation() != (b.Kind == KindEval):
			return fmt.Errorf("%w: job %s: an evaluation job opens evaluation rounds only, and only it does", ErrRoundConflict, b.Job)
		case b.Kind == KindEval:
			if j.Evaluated != nil || b.Round != 0 {
				return fmt.Errorf("%w: job %s has evaluated its model", ErrRoundConflict, b.Job)
			}
			kind = KindEval
		case b.Kind == KindStats:
			if !j.NeedsStats() || b.Round != 0 {
				return fmt.Errorf("%w: job %s needs no statistics round", ErrRoundConflict, b.Job)
			}
			kind = KindStats
		case j.NeedsStats():
			return fmt.Errorf("%w: job %s needs its statistics round first", ErrRoundConflict, b.Job)
		case b.Round != j.committedN+1:
			return fmt.Errorf("%w: job %s: next round is %d, not %d", ErrRoundConflict, b.Job, j.committedN+1, b.Round)
		case j.Global == nil || b.Base != j.Global.Digest:
			return fmt.Errorf("%w: job %s: round base is not the current global model", ErrRoundConflict, b.Job)
		}
		key := b.Round
		if kind == KindStats || kind == KindEval {
			key = statsAttemptKey
		}
		j.attempts[key]++
		for _, site := range b.Selected {
			if _, ok := st.Sites[site]; !ok {
				return fmt.Errorf("%w: selected site %q", ErrUnknownSite, site)
			}
		}
		r := &Round{Number: b.Round, Kind: kind, Attempt: j.attempts[key], State: RoundOpen, Base: b.Base,
			Opened: c.At, Deadline: b.Deadline, Receipts: make(map[string]*Receipt), Declines: make(map[string]string),
			Selected: slices.Clone(b.Selected)}
		if (b.SecAgg != nil) != (kind == KindTrain && j.Spec.SecureAggregation != nil) {
			j.attempts[key]--
			return fmt.Errorf("%w: job %s: a round opens a secure aggregation run exactly when the job asks for one", ErrRoundConflict, b.Job)
		}
		if b.SecAgg != nil {
			for _, site := range b.SecAgg.Clients {
				if _, ok := st.Sites[site]; !ok {
					j.attempts[key]--
					return fmt.Errorf("%w: secure aggregation site %q", ErrUnknownSite, site)
				}
			}
			srv, err := secagg.NewServer(b.SecAgg.Config, secagg.Session{JobID: b.Job, Round: b.Round, Clients: b.SecAgg.Clients})
			if err != nil {
				j.attempts[key]--
				return fmt.Errorf("%w: job %s round %d: %w", ErrBadCommand, b.Job, b.Round, err)
			}
			r.SecAgg, r.SecAggProgress, r.PhaseDeadline = srv, progress(srv), b.Deadline
			st.SecAgg[b.Job] = srv
		}
		j.Rounds = append(j.Rounds, r)
		j.Current = r
		return nil
	case cmdReceipt:
		var b receiptBody
		if err := decode(&b); err != nil {
			return err
		}
		r, err := f.openRound(b.Job, b.Round)
		if err != nil {
			return err
		}
		if _, ok := st.Sites[b.Receipt.Site]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownSite, b.Receipt.Site)
		}
		if !r.Asks(b.Receipt.Site) {
			return fmt.Errorf("%w: job %s round %d did not ask site %s", ErrNotSelected, b.Job, b.Round, b.Receipt.Site)
		}
		kind := r.Kind
		if kind == "" {
			kind = KindTrain
		}
		if got := b.Receipt.kind(); got != kind {
			return fmt.Errorf("%w: job %s round %d: a %s round does not take a %s answer", ErrRoundConflict, b.Job, b.Round, kind, got)
		}
		if prev, ok := r.Receipts[b.Receipt.Site]; ok {
			if prev.Digest == b.Receipt.Digest && kind == KindTrain {
				return nil // the same update again: harmless
			}
			if kind != KindTrain {
				return nil // statistics or an evaluation already in: the first answer counts
			}
			return fmt.Errorf("%w: site %s already submitted a different update for round %d", ErrDuplicateUpdate, b.Receipt.Site, b.Round)
		}
		rc := b.Receipt
		rc.At = c.At
		r.Receipts[rc.Site] = &rc
		return nil
	case cmdCommitRound:
		var b commitRoundBody
		if err := decode(&b); err != nil {
			return err
		}
		r, err := f.openRound(b.Job, b.Round)
		if err != nil {
			return err
		}
		if r.Attempt != b.Attempt || r.Kind == KindStats {
			return fmt.Errorf("%w: job %s round %d attempt %d is not an open training round", ErrRoundConflict, b.Job, b.Round, b.Attempt)
		}
		j := st.Jobs[b.Job]
		if err := checkModelRef(b.Digest, b.Size, j.Spec.Model); err != nil {
			return err
		}
		if b.OptState != nil {
			if err := validDigest(b.OptState.Digest); err != nil || b.OptState.Size <= 0 {
				return fmt.Errorf("%w: optimizer state reference", ErrBadCommand)
			}
		}
		j.OptState = b.OptState
		if b.Privacy != nil {
			j.Privacy = b.Privacy
		}
		m := &Model{Digest: b.Digest, Round: b.Round, Size: b.Size, Committed: c.At, Strategy: j.Spec.Strategy.Name,
			Contributors: slices.Clone(b.Contributors), Samples: b.Samples, MeanValAUROC: b.MeanValAUROC,
			SecureAggregation: j.Spec.SecureAggregation != nil}
		if j.Global != nil {
			m.Parent = j.Global.Digest
		}
		if j.Privacy != nil {
			m.Epsilon = j.Privacy.Epsilon
		}
		j.Models = append(j.Models, m)
		j.byDigest[m.Digest] = m
		j.Global = m
		r.State = RoundCommitted
		r.Closed = c.At
		r.Result = b.Digest
		r.Contributors = slices.Clone(b.Contributors)
		r.Samples = b.Samples
		r.MeanValAUROC = b.MeanValAUROC
		r.SecAgg = nil // the sum is in the model; the run's state is no longer needed
		delete(st.SecAgg, b.Job)
		j.Current = nil
		j.committedN = b.Round
		if int(b.Round) >= j.Spec.Rounds {
			j.State = JobDone
			j.Finished = c.At
		}
		return nil
	case cmdDecline:
		var b declineBody
		if err := decode(&b); err != nil {
			return err
		}
		r, err := f.openRound(b.Job, b.Round)
		if err != nil {
			return err
		}
		if _, ok := st.Sites[b.Site]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownSite, b.Site)
		}
		if _, sent := r.Receipts[b.Site]; !sent {
			r.Declines[b.Site] = b.Reason
		}
		return nil
	case cmdCommitStats:
		var b commitStatsBody
		if err := decode(&b); err != nil {
			return err
		}
		r, err := f.openRound(b.Job, 0)
		if err != nil {
			return err
		}
		j := st.Jobs[b.Job]
		if r.Kind != KindStats || r.Attempt != b.Attempt {
			return fmt.Errorf("%w: job %s has no open statistics round attempt %d", ErrRoundConflict, b.Job, b.Attempt)
		}
		if j.Spec.IsAnalytics() {
			if b.Results == nil || len(b.Results.Features) != len(j.Spec.Features.GetFeatures()) {
				return fmt.Errorf("%w: job %s: analytics results must cover the spec's %d features", ErrBadCommand, b.Job, len(j.Spec.Features.GetFeatures()))
			}
			j.Results = b.Results
			r.State = RoundCommitted
			r.Closed = c.At
			r.Contributors = slices.Clone(b.Results.Sites)
			j.Current = nil
			j.State = JobDone
			j.Finished = c.At
			return nil
		}
		if n := len(j.Spec.Features.GetFeatures()); len(b.Norm.Mean) != n || len(b.Norm.Std) != n {
			return fmt.Errorf("%w: job %s: normalization for %d features, the spec has %d", ErrBadCommand, b.Job, len(b.Norm.Mean), n)
		}
		norm := b.Norm
		j.Norm = &norm
		r.State = RoundCommitted
		r.Closed = c.At
		r.Contributors = slices.Clone(b.Norm.Sites)
		j.Current = nil
		return nil
	case cmdFailRound:
		var b failRoundBody
		if err := decode(&b); err != nil {
			return err
		}
		r, err := f.openRound(b.Job, b.Round)
		if err != nil {
			return err
		}
		if r.Attempt != b.Attempt {
			return fmt.Errorf("%w: job %s round %d attempt %d is not open", ErrRoundConflict, b.Job, b.Round, b.Attempt)
		}
		f.failRound(st.Jobs[b.Job], r, c.At, b.Reason)
		return nil
	case cmdSecAggInput:
		var b secAggInputBody
		if err := decode(&b); err != nil {
			return err
		}
		return f.applySecAggInput(b)
	case cmdSecAggAdvance:
		var b secAggAdvanceBody
		if err := decode(&b); err != nil {
			return err
		}
		return f.applySecAggAdvance(b, c.At)
	case cmdCommitEval:
		var b commitEvalBody
		if err := decode(&b); err != nil {
			return err
		}
		return f.applyCommitEval(b, c.At)
	case cmdModelStage:
		var b stageBody
		if err := decode(&b); err != nil {
			return err
		}
		return f.applyStage(b, c.At)
	case cmdRollback:
		var b rollbackBody
		if err := decode(&b); err != nil {
			return err
		}
		return f.applyRollback(b, c.At)
	case cmdDrift:
		var b driftBody
		if err := decode(&b); err != nil {
			return err
		}
		return f.applyDrift(b, c.At)
	case cmdAudit:
		return nil // the entry is c.Audit, recorded by Apply
	case cmdAuditBatch:
		var b auditBatchBody
		if err := decode(&b); err != nil {
			return err
		}
		if len(b.Entries) == 0 || len(b.Entries) > maxAuditBatch {
			return fmt.Errorf("%w: an audit batch of %d entries", ErrBadCommand, len(b.Entries))
		}
		return nil // the entries are recorded by Apply
	case cmdCreateToken:
		var tk Token
		if err := decode(&tk); err != nil {
			return err
		}
		if _, ok := tokenID(tokenPrefix + tk.ID + "_x"); !ok || len(tk.Hash) != 64 {
			return fmt.Errorf("%w: malformed token id or hash", ErrInvalidToken)
		}
		if _, ok := st.Tokens[tk.ID]; ok {
			return fmt.Errorf("%w: token id %s exists", ErrInvalidToken, tk.ID)
		}
		spec := tokenSpec{Person: tk.Person, Role: tk.Role, TTL: Duration(tk.Expires.Sub(c.At))}
		if err := spec.validate(); err != nil {
			return err
		}
		tk.Created, tk.Revoked = c.At, time.Time{}
		st.Tokens[tk.ID] = &tk
		st.Bootstrapped = true
		return nil
	case cmdRevokeToken:
		var b revokeBody
		if err := decode(&b); err != nil {
			return err
		}
		tk, ok := st.Tokens[b.ID]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownToken, b.ID)
		}
		if tk.Revoked.IsZero() {
			tk.Revoked = c.At
		}
		return nil
	case cmdRevokeSite:
		var b revokeBody
		if err := decode(&b); err != nil {
			return err
		}
		s, ok := st.Sites[b.ID]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownSite, b.ID)
		}
		if s.Revoked.IsZero() {
			s.Revoked = c.At
		}
		return nil
	case cmdJobState:
		var b jobStateBody
		if err := decode(&b); err != nil {
			return err
		}
		j, ok := st.Jobs[b.Job]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownJob, b.Job)
		}
		switch {
		case b.Action == "pause" && j.State == JobRunning:
			j.State = JobPaused
		case b.Action == "resume" && j.State == JobPaused:
			j.State = JobRunning
		case b.Action == "budget" && j.State.active() && j.Current == nil:
			j.State, j.Finished, j.StopReason = JobDone, c.At, b.Reason
		case b.Action == "cancel" && j.State.active():
			if r := j.Current; r != nil {
				r.State, r.Closed, r.FailReason, r.SecAgg = RoundFailed, c.At, "job cancelled", nil
				delete(st.SecAgg, b.Job)
				j.Current = nil
			}
			j.State, j.Finished = JobCancelled, c.At
		case b.Action != "pause" && b.Action != "resume" && b.Action != "cancel" && b.Action != "budget":
			return fmt.Errorf("%w: action %q: pause, resume or cancel", ErrBadCommand, b.Action)
		default:
			return fmt.Errorf("%w: cannot %s job %s: it is %s", ErrJobState, b.Action, b.Job, j.State)
		}
		return nil
	case cmdCreateEnrollToken:
		var et EnrollToken
		if err := decode(&et); err != nil {
			return err
		}
		if _, ok := enrollTokenID(enrollPrefix + et.ID + "_x"); !ok || len(et.Hash) != 64 {
			return fmt.Errorf("%w: malformed enrollment token id or hash", ErrInvalidToken)
		}
		if _, ok := st.EnrollTokens[et.ID]; ok {
			return fmt.Errorf("%w: enrollment token id %s exists", ErrInvalidToken, et.ID)
		}
		s, ok := st.Sites[et.Site]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownSite, et.Site)
		}
		if !s.Revoked.IsZero() {
			return fmt.Errorf("%w: %s", ErrSiteRevoked, et.Site)
		}
		et.Created, et.Used = c.At, time.Time{}
		st.EnrollTokens[et.ID] = &et
		return nil
	case cmdEnroll, cmdRenew:
		var b enrollBody
		if err := decode(&b); err != nil {
			return err
		}
		if t == cmdRenew {
			b.Token = ""
		} else if b.Token == "" {
			return fmt.Errorf("%w: enrollment without a token", ErrEnrollToken)
		}
		return st.applyEnroll(b, c.At)
	}
	return fmt.Errorf("%w: unknown command type %d", ErrBadCommand, byte(t))
}

// checkModelRef checks that a model reference fits the job's model.
func checkModelRef(digest string, size int64, spec ModelSpec) error {
	if err := validDigest(digest); err != nil {
		return fmt.Errorf("%w: model %w", ErrBadCommand, err)
	}
	if size != spec.ModelBytes() {
		return fmt.Errorf("%w: model of %d bytes, the job's model has %d", ErrBadCommand, size, spec.ModelBytes())
	}
	return nil
}

func (f *fsm) runningJob(id string) (*Job, error) {
	j, ok := f.st.Jobs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownJob, id)
	}
	if j.State != JobRunning {
		return nil, fmt.Errorf("%w: job %s is %s", ErrRoundClosed, id, j.State)
	}
	return j, nil
}

// activeJob is runningJob for work on a round already open, which a
// paused job lets finish.
func (f *fsm) activeJob(id string) (*Job, error) {
	j, ok := f.st.Jobs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownJob, id)
	}
	if !j.State.active() {
		return nil, fmt.Errorf("%w: job %s is %s", ErrRoundClosed, id, j.State)
	}
	return j, nil
}

// failRound ends round r of job j as failed, and the job with it once the
// round has used all its attempts.
func (f *fsm) failRound(j *Job, r *Round, at time.Time, reason string) {
	r.State = RoundFailed
	r.Closed = at
	r.FailReason = reason
	r.SecAgg = nil
	delete(f.st.SecAgg, j.Spec.ID)
	j.Current = nil
	if r.Attempt >= j.Spec.MaxAttempts {
		j.State = JobFailed
		j.Finished = at
		j.FailReason = fmt.Sprintf("round %d failed on all %d attempts; last: %s", r.Number, r.Attempt, reason)
	}
}

func (f *fsm) openRound(job string, round uint64) (*Round, error) {
	j, err := f.activeJob(job)
	if err != nil {
		return nil, err
	}
	if j.Current == nil || j.Current.Number != round {
		return nil, fmt.Errorf("%w: job %s round %d is not open", ErrRoundClosed, job, round)
	}
	return j.Current, nil
}

// Snapshot captures the whole state as JSON and, after it, the audit
// log's leaves up to the state's audit size, one per line, so a node that
// installs the snapshot gets the leaves it lacks. The log is append-only:
// its first Size leaves do not change, so Persist reads them later.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.st)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	s := &snapshot{state: b, size: f.st.Audit.Size}
	if f.audit != nil && !f.audit.broken.Load() {
		if err := f.audit.log.Sync(); err != nil {
			return nil, fmt.Errorf("snapshot: audit log: %w", err)
		}
		s.log = f.audit.log
	}
	return s, nil
}

// Restore replaces the state with a snapshot's, and brings the audit log
// to the snapshot's: a node whose log already holds those leaves keeps it
// (the entries after the snapshot are applied again and must match); one
// that lacks leaves, or holds different ones, takes the snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st := newState()
	br := bufio.NewReaderSize(rc, 1<<16)
	dec := json.NewDecoder(br)
	if err := dec.Decode(st); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	st.reindex()
	if f.audit != nil {
		if err := f.audit.restore(st.Audit, io.MultiReader(dec.Buffered(), br)); err != nil {
			return fmt.Errorf("restore snapshot: %w", err)
		}
	}
	f.mu.Lock()
	f.st = st
	close(f.changedC)
	f.changedC = make(chan struct{})
	f.mu.Unlock()
	return nil
}

type snapshot struct {
	state []byte
	size  uint64
	log   *audit.Log // nil: no leaves follow the state
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	err := s.write(sink)
	if err != nil {
		return errors.Join(fmt.Errorf("persist snapshot: %w", err), sink.Cancel())
	}
	return sink.Close()
}

func (s *snapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	if _, err := bw.Write(s.state); err != nil {
		return err
	}
	if s.log != nil {
		for i := uint64(0); i < s.size; {
			leaves, err := s.log.Entries(i, 1024)
			if err != nil {
				return fmt.Errorf("audit leaves: %w", err)
			}
			if len(leaves) == 0 {
				return fmt.Errorf("audit leaves: the log ends at %d, the state says %d", i, s.size)
			}
			for _, l := range leaves {
				if i >= s.size {
					break
				}
				bw.WriteByte('\n')
				bw.Write(l)
				i++
			}
		}
	}
	return bw.Flush()
}

func (s *snapshot) Release() {}

// view runs fn with the state read-locked. fn must not keep references.
func (f *fsm) view(fn func(st *state)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.st)
}
