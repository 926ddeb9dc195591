package coordinator

import "errors"

var (
	// ErrInvalidConfig: the node's Config does not validate.
	ErrInvalidConfig = errors.New("invalid coordinator config")
	// ErrInvalidJob: a job spec does not validate.
	ErrInvalidJob = errors.New("invalid job spec")
	// ErrInvalidSite: a site id is not acceptable.
	ErrInvalidSite = errors.New("invalid site")
	// ErrNotSelected: a site sent an update for a round that did not ask it.
	ErrNotSelected = errors.New("site not selected for this round")
	// ErrModelTooLarge: a model is above max_model_bytes.
	ErrModelTooLarge = errors.New("model too large")
	// ErrUnknownJob: no job with that id.
	ErrUnknownJob = errors.New("unknown job")
	// ErrNoModel: a job has no model version with that digest.
	ErrNoModel = errors.New("no such model version")
	// ErrUnknownSite: the site is not enrolled in this federation.
	ErrUnknownSite = errors.New("unknown site")
	// ErrRoundClosed: the round is not open (closed, failed, or not yet opened).
	ErrRoundClosed = errors.New("round not open")
	// ErrRoundConflict: a round transition that does not follow from the state.
	ErrRoundConflict = errors.New("round conflict")
	// ErrDuplicateUpdate: a site sent a second, different update for a round.
	ErrDuplicateUpdate = errors.New("duplicate update")
	// ErrBadCommand: a log entry that does not decode.
	ErrBadCommand = errors.New("bad command")
	// ErrNotLeader: this node cannot do that because it is not the leader.
	ErrNotLeader = errors.New("not the leader")
	// ErrInvalidToken: a token request does not validate.
	ErrInvalidToken = errors.New("invalid token request")
	// ErrUnknownToken: no token with that id.
	ErrUnknownToken = errors.New("unknown token")
	// ErrSiteRevoked: the site was revoked.
	ErrSiteRevoked = errors.New("site revoked")
	// ErrJobState: the job's state does not allow that (pausing a job
	// that is done, resuming one that runs).
	ErrJobState = errors.New("job state does not allow it")
	// ErrAudit: the audit log could not record an entry; the node answers
	// no admin request until it can.
	ErrAudit = errors.New("audit log unavailable")
	// errApply: Raft did not apply a proposal (it may or may not commit
	// later), as opposed to the FSM refusing it.
	errApply = errors.New("raft apply")
	// ErrClosed: the node is shut down.
	ErrClosed = errors.New("coordinator closed")
)
