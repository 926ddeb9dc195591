package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/coordinator/audit"
	"github.com/cohort-fl/cohort/protocol/secagg"
)

// The audit trail: every admin request (allowed, refused or failed) and
// every round event is one leaf of an append-only Merkle log (RFC 6962
// hashing) kept by coordinator/audit in each node's data directory. A
// leaf is appended by the FSM while it applies the Raft entry that
// carries it, so the record and the state change it describes commit
// together, and every node holds the same leaves in the same order. Each
// node signs checkpoints of its log with its own Ed25519 key, published in
// the replicated NodeInfo. Entries hold ids, routes, roles and outcomes:
// never patient data, request bodies or error texts.

// AuditEntry is one leaf of the audit log.
type AuditEntry struct {
	// Index is the leaf's position, from 0; set by the FSM.
	Index uint64 `json:"index"`
	// Time is the leader's clock when it proposed the entry.
	Time time.Time `json:"time"`
	// Kind is "admin" (an admin API request), "round" (a round event),
	// "site" (a site's update, decline or protocol message) or "registry"
	// (a model version's stage change).
	Kind string `json:"kind"`
	// Actor is who acted: a token's person, a site id, or "coordinator".
	Actor string `json:"actor"`
	// TokenID and Role name the token of an admin request ("" when the
	// request carried no valid token).
	TokenID string `json:"token_id,omitempty"`
	Role    Role   `json:"role,omitempty"`
	// BreakGlass flags a request made with a break-glass token.
	BreakGlass bool `json:"break_glass,omitempty"`
	// Action is the route ("POST /v1/jobs") or the event ("round.commit").
	Action string `json:"action"`
	// Target is the resource acted on ("job j1", "site st-mary").
	Target string `json:"target,omitempty"`
	// Outcome is "ok", "denied" (authentication, authorization or rate
	// limit), "error", or "attempted" (recorded before a membership
	// change, after which the node may no longer lead); Status is the
	// HTTP status of an admin request.
	Outcome string `json:"outcome"`
	Status  int    `json:"status,omitempty"`
	// Remote is the client's address; Node the node that received it.
	Remote string `json:"remote,omitempty"`
	Node   string `json:"node,omitempty"`
	// RequestID is the admin request's id (also in the response header
	// Cohort-Request-Id).
	RequestID string `json:"request_id,omitempty"`
}

// AuditHead is the audit log's size and root after the last applied
// entry, kept in the replicated state.
type AuditHead struct {
	Size uint64 `json:"size"`
	Root []byte `json:"root,omitempty"`
}

// auditSink is the FSM's side of the audit log.
type auditSink struct {
	log    *audit.Log
	logger *slog.Logger
	// broken is set when an append failed: the node's copy of the log no
	// longer follows the replicated state, and it answers no admin request
	// (see Node.auditHealthy).
	broken atomic.Bool
}

// roundEvent returns the audit entry for an applied engine or agent
// command, if it is one.
func roundEvent(t cmdType, c command) (AuditEntry, bool) {
	e := AuditEntry{Time: c.At, Actor: "coordinator", Kind: "round", Outcome: "ok"}
	switch t {
	case cmdOpenRound:
		var b openRoundBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Action, e.Target = "round.open", fmt.Sprintf("job %s round %d", b.Job, b.Round)
	case cmdCommitRound:
		var b commitRoundBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Action, e.Target = "round.commit", fmt.Sprintf("job %s round %d", b.Job, b.Round)
	case cmdFailRound:
		var b failRoundBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Action, e.Target = "round.fail", fmt.Sprintf("job %s round %d", b.Job, b.Round)
	case cmdCommitStats:
		var b commitStatsBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Action, e.Target = "round.commit-stats", fmt.Sprintf("job %s", b.Job)
	case cmdReceipt:
		var b receiptBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Kind, e.Actor, e.Action = "site", b.Receipt.Site, "update.accept"
		e.Target = fmt.Sprintf("job %s round %d", b.Job, b.Round)
	case cmdDecline:
		var b declineBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Kind, e.Actor, e.Action = "site", b.Site, "round.decline"
		e.Target = fmt.Sprintf("job %s round %d", b.Job, b.Round)
	case cmdSecAggInput:
		var b secAggInputBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		// The kind of message only, never its content.
		kind := "message"
		if m, err := secagg.Decode(b.Payload); err == nil {
			kind = m.Kind().String()
		}
		e.Kind, e.Actor, e.Action = "site", b.Site, "secagg."+kind
		e.Target = fmt.Sprintf("job %s round %d attempt %d", b.Job, b.Round, b.Attempt)
	case cmdModelStage:
		var b stageBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Kind, e.Action, e.Target = "registry", "model.stage", fmt.Sprintf("job %s model %.12s %s", b.Job, b.Model, b.Stage)
	case cmdRollback:
		var b rollbackBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Kind, e.Action, e.Target = "registry", "model.rollback", fmt.Sprintf("job %s", b.Job)
	case cmdSecAggAdvance:
		var b secAggAdvanceBody
		if json.Unmarshal(c.Body, &b) != nil {
			return e, false
		}
		e.Action, e.Target = "secagg.close-phase", fmt.Sprintf("job %s round %d attempt %d phase %s", b.Job, b.Round, b.Attempt, b.Phase)
	default:
		return e, false
	}
	return e, true
}

// record appends the leaves an applied command carries: its admin
// request, with the outcome the state change had, and its round event.
// Called by Apply with f.mu held.
func (f *fsm) record(t cmdType, c command, res error) {
	var leaves []AuditEntry
	if c.Audit != nil {
		e := *c.Audit
		e.Time = c.At
		if t != cmdAudit {
			if res != nil {
				e.Outcome = "error"
				e.Status, _ = problemFor(res)
			} else if e.Outcome == "" {
				e.Outcome = "ok"
			}
		}
		leaves = append(leaves, e)
	}
	if res == nil {
		if e, ok := roundEvent(t, c); ok {
			leaves = append(leaves, e)
		}
	}
	if t == cmdAuditBatch && res == nil {
		var b auditBatchBody
		if json.Unmarshal(c.Body, &b) == nil {
			leaves = append(leaves, b.Entries...)
		}
	}
	if len(leaves) == 0 {
		return
	}
	st := f.st
	raw := make([][]byte, len(leaves))
	for i := range leaves {
		leaves[i].Index = st.Audit.Size + uint64(i)
		raw[i], _ = json.Marshal(leaves[i])
	}
	if f.audit == nil {
		st.Audit.Size += uint64(len(raw))
		return
	}
	if f.audit.broken.Load() {
		st.Audit.Size += uint64(len(raw))
		return
	}
	// On a replay after a restart the leaves may already be in the log,
	// and more after them: the head is the state's, not the log's end.
	_, _, err := f.audit.log.AppendAt(st.Audit.Size, raw...)
	size := st.Audit.Size + uint64(len(raw))
	var root []byte
	if err == nil {
		root, err = f.audit.log.RootAt(size)
	}
	if err != nil {
		f.audit.broken.Store(true)
		f.audit.logger.Error("audit log: append failed; this node answers no admin request until its log is repaired", "index", st.Audit.Size, "err", err)
		st.Audit.Size += uint64(len(raw))
		return
	}
	st.Audit = AuditHead{Size: size, Root: root}
}

// restore brings the node's log to a restored snapshot's head; r holds the
// snapshot's leaves, one per line (none in snapshots taken without a log).
func (a *auditSink) restore(head AuditHead, r io.Reader) error {
	if a.log.Size() >= head.Size {
		root, err := a.log.RootAt(head.Size)
		if err == nil && (head.Size == 0 || bytes.Equal(root, head.Root)) {
			a.broken.Store(false)
			return nil
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 64<<10+1)
	var leaves [][]byte
	for uint64(len(leaves)) < head.Size && sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		leaves = append(leaves, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("audit leaves: %w", err)
	}
	if uint64(len(leaves)) < head.Size {
		a.broken.Store(true)
		a.logger.Error("audit log: the snapshot carries fewer leaves than its state counts; this node answers no admin request", "have", len(leaves), "want", head.Size)
		return nil
	}
	if err := a.log.Reset(leaves); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if !bytes.Equal(a.log.Root(), head.Root) {
		a.broken.Store(true)
		a.logger.Error("audit log: the snapshot's leaves do not hash to its root; this node answers no admin request", "size", head.Size)
		return nil
	}
	a.broken.Store(false)
	return nil
}

// Rate-limited refusals of admin requests, and sites' refused uploads, are
// recorded in batches: queueAudit holds their entries and the leader's
// flush loop writes them, many per Raft entry (cmdAuditBatch). The queue is
// bounded: past maxAuditQueue entries (a flood faster than the log can
// take), refusals are only counted (AuditDropped).
const (
	maxAuditQueue   = 10000
	maxAuditBatch   = 1000
	auditFlushEvery = 200 * time.Millisecond
)

type auditBatchBody struct {
	Entries []AuditEntry `json:"entries"`
}

// queueAudit queues an entry for the next batch.
func (n *Node) queueAudit(e AuditEntry) {
	n.auditQMu.Lock()
	defer n.auditQMu.Unlock()
	if len(n.auditQ) >= maxAuditQueue {
		n.stats.AuditDropped.Add(1)
		return
	}
	n.auditQ = append(n.auditQ, e)
}

// flushAudit writes the queued entries, in batches, while this node leads.
func (n *Node) flushAudit(ctx context.Context) error {
	t := time.NewTicker(auditFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for {
			n.auditQMu.Lock()
			k := min(len(n.auditQ), maxAuditBatch)
			batch := slices.Clone(n.auditQ[:k])
			n.auditQ = slices.Delete(n.auditQ, 0, k)
			n.auditQMu.Unlock()
			if k == 0 {
				break
			}
			if err := n.propose(cmdAuditBatch, auditBatchBody{Entries: batch}); err != nil {
				n.stats.AuditDropped.Add(int64(k))
				n.log.Warn("audit: a batch of refusals could not be recorded", "entries", k, "err", err)
				break
			}
		}
	}
}
