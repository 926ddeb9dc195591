package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

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
	}
	return fmt.Sprintf("cmd(%d)", byte(t))
}

// command is the JSON body after the type byte. ReqID deduplicates retries;
// At is the leader's clock when it proposed the command, so the FSM never
// reads a clock of its own.
type command struct {
	ReqID string          `json:"req_id"`
	At    time.Time       `json:"at"`
	Body  json.RawMessage `json:"body"`
}

type openRoundBody struct {
	Job      string    `json:"job"`
	Round    uint64    `json:"round"`
	Kind     string    `json:"kind,omitempty"`
	Base     string    `json:"base"`
	Deadline time.Time `json:"deadline"`
	// Selected are the sites asked (empty: all), chosen by the leader.
	Selected []string `json:"selected,omitempty"`
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
}

type failRoundBody struct {
	Job     string `json:"job"`
	Round   uint64 `json:"round"`
	Attempt int    `json:"attempt"`
	Reason  string `json:"reason"`
}

func encodeCommand(t cmdType, reqID string, at time.Time, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	c, err := json.Marshal(command{ReqID: reqID, At: at.UTC(), Body: b})
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
	)
	if f.st.markSeen(c.ReqID) {
		res = nil // a retried proposal: already applied
	} else {
		res = f.apply(t, c)
		if res == nil && t == cmdCommitRound {
			committed = new(commitRoundBody)
			_ = json.Unmarshal(c.Body, committed)
		}
	}
	close(f.changedC)
	f.changedC = make(chan struct{})
	onCommit := f.onCommit
	f.mu.Unlock()
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
		var b struct {
			Spec    JobSpec `json:"spec"`
			Initial Model   `json:"initial"`
		}
		if err := decode(&b); err != nil {
			return err
		}
		if _, ok := st.Jobs[b.Spec.ID]; ok {
			return nil // idempotent by id
		}
		if err := b.Spec.Validate(0); err != nil {
			return err
		}
		if err := checkModelRef(b.Initial.Digest, b.Initial.Size, b.Spec.Model); err != nil {
			return err
		}
		b.Initial.Round = 0
		j := &Job{Spec: b.Spec, State: JobRunning, Created: c.At, Models: []*Model{&b.Initial}}
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
		if kind == KindStats {
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
		if (r.Kind == KindStats) != (b.Receipt.Stats != nil) {
			return fmt.Errorf("%w: job %s round %d: a %s round takes %s", ErrRoundConflict, b.Job, b.Round,
				map[bool]string{true: "statistics", false: "training"}[r.Kind == KindStats],
				map[bool]string{true: "statistics", false: "model updates"}[r.Kind == KindStats])
		}
		if prev, ok := r.Receipts[b.Receipt.Site]; ok {
			if prev.Digest == b.Receipt.Digest && r.Kind != KindStats {
				return nil // the same update again: harmless
			}
			if r.Kind == KindStats {
				return nil // statistics already in: the first answer counts
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
		m := &Model{Digest: b.Digest, Round: b.Round, Size: b.Size}
		j.Models = append(j.Models, m)
		j.byDigest[m.Digest] = m
		j.Global = m
		r.State = RoundCommitted
		r.Closed = c.At
		r.Result = b.Digest
		r.Contributors = slices.Clone(b.Contributors)
		r.Samples = b.Samples
		r.MeanValAUROC = b.MeanValAUROC
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
		j := st.Jobs[b.Job]
		r.State = RoundFailed
		r.Closed = c.At
		r.FailReason = b.Reason
		j.Current = nil
		if r.Attempt >= j.Spec.MaxAttempts {
			j.State = JobFailed
			j.Finished = c.At
			j.FailReason = fmt.Sprintf("round %d failed on all %d attempts; last: %s", b.Round, r.Attempt, b.Reason)
		}
		return nil
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

func (f *fsm) openRound(job string, round uint64) (*Round, error) {
	j, err := f.runningJob(job)
	if err != nil {
		return nil, err
	}
	if j.Current == nil || j.Current.Number != round {
		return nil, fmt.Errorf("%w: job %s round %d is not open", ErrRoundClosed, job, round)
	}
	return j.Current, nil
}

// Snapshot captures the whole state as JSON.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.st)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return snapshot(b), nil
}

// Restore replaces the state with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st := newState()
	if err := json.NewDecoder(rc).Decode(st); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	st.reindex()
	f.mu.Lock()
	f.st = st
	close(f.changedC)
	f.changedC = make(chan struct{})
	f.mu.Unlock()
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		return errors.Join(fmt.Errorf("persist snapshot: %w", err), sink.Cancel())
	}
	return sink.Close()
}

func (s snapshot) Release() {}

// view runs fn with the state read-locked. fn must not keep references.
func (f *fsm) view(fn func(st *state)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.st)
}
