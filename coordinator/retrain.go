package coordinator

import (
	"fmt"
	"math"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
)

// Retraining: a training job with a retrain section starts a new training
// run of itself once it is done, on a schedule (Every after it finished)
// or when a site that runs its production version reports drift above
// DriftPSI (agents send DriftReport with their deployment checks). The new
// run is a job with the same spec under the id JOB-rN, starting from the
// job's production version (its last model when none is in production);
// the old job names it (RetrainedBy) and so starts no other. Each run that
// finishes retrains in turn, so a schedule keeps going.

// RetrainSpec is a training job's retrain section.
type RetrainSpec struct {
	// Every retrains this long after the job finished (0: not on a
	// schedule); at least a minute.
	Every Duration `json:"every,omitempty"`
	// DriftPSI retrains when a site reports a population stability index
	// of a feature at or above it (0: not on drift).
	DriftPSI float64 `json:"drift_psi,omitempty"`
}

func (r *RetrainSpec) validate() error {
	switch {
	case r.Every < 0 || (r.Every > 0 && r.Every < Duration(time.Minute)):
		return fmt.Errorf("%w: retrain.every must be at least 1m (or 0)", ErrInvalidJob)
	case !(r.DriftPSI >= 0) || math.IsInf(r.DriftPSI, 0):
		return fmt.Errorf("%w: retrain.drift_psi must be a positive number (or 0)", ErrInvalidJob)
	case r.Every == 0 && r.DriftPSI == 0:
		return fmt.Errorf("%w: retrain needs every, drift_psi or both", ErrInvalidJob)
	}
	return nil
}

// Drift is the last drift a site reported for a job.
type Drift struct {
	Model  string    `json:"model"`
	Scored uint64    `json:"scored"`
	MaxPSI float64   `json:"max_psi"`
	At     time.Time `json:"at"`
}

// driftBody records a site's drift report.
type driftBody struct {
	Job   string `json:"job"`
	Site  string `json:"site"`
	Drift Drift  `json:"drift"`
}

func (f *fsm) applyDrift(b driftBody, at time.Time) error {
	j, ok := f.st.Jobs[b.Job]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownJob, b.Job)
	}
	if _, ok := f.st.Sites[b.Site]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSite, b.Site)
	}
	if j.Drift == nil {
		j.Drift = make(map[string]Drift)
	}
	d := b.Drift
	d.At = at
	j.Drift[b.Site] = d
	return nil
}

// onDriftReport records a site's drift report (numbers only) in the log.
func (n *Node) onDriftReport(ac *agentConn, r *pb.DriftReport) *pb.Envelope {
	reject := func(code pb.ErrorCode, format string, args ...any) *pb.Envelope {
		n.stats.FramesRejected.Add(1)
		return protocol.Errorf(code, format, args...)
	}
	if psi := r.GetMaxPsi(); !(psi >= 0) || math.IsInf(psi, 0) || validDigest(r.GetModelSha256()) != nil {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "drift report: a finite, non-negative index and a model digest are required")
	}
	err := n.propose(cmdDrift, driftBody{Job: r.GetJobId(), Site: ac.site,
		Drift: Drift{Model: r.GetModelSha256(), Scored: r.GetScored(), MaxPSI: r.GetMaxPsi()}})
	if resp := n.proposalAnswer(err, reject); resp != nil {
		return resp
	}
	return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: r.GetJobId()}}}
}

// retrainDue reports whether a done job should retrain now, and why.
func retrainDue(j *Job, now time.Time) (bool, string) {
	r := j.Spec.Retrain
	if r == nil || j.State != JobDone || j.RetrainedBy != "" || j.Spec.IsAnalytics() || j.Spec.IsEvaluation() {
		return false, ""
	}
	if r.Every > 0 && !now.Before(j.Finished.Add(time.Duration(r.Every))) {
		return true, fmt.Sprintf("%s after it finished", time.Duration(r.Every))
	}
	if r.DriftPSI > 0 {
		for site, d := range j.Drift {
			if d.MaxPSI >= r.DriftPSI {
				return true, fmt.Sprintf("site %s reported a population stability index of %.3g (threshold %g)", site, d.MaxPSI, r.DriftPSI)
			}
		}
	}
	return false, ""
}

// retrainID is the id of job's next training run: JOB-rN.
func retrainID(job string, existing func(string) bool) string {
	base, n := job, 1
	if i := lastIndex(job, "-r"); i > 0 {
		var k int
		if _, err := fmt.Sscanf(job[i+2:], "%d", &k); err == nil && fmt.Sprint(k) == job[i+2:] {
			base, n = job[:i], k+1
		}
	}
	for {
		id := fmt.Sprintf("%s-r%d", base, n)
		if len(id) > 63 {
			id = fmt.Sprintf("r%d-%s", n, base[len(base)-min(len(base), 50):])
		}
		if !existing(id) {
			return id
		}
		n++
	}
}

func lastIndex(s, sub string) int {
	for i := len(s) - len(sub); i >= 0; i-- {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// stepRetrain starts the next training run of every done job that is due
// to retrain.
func (n *Node) stepRetrain() {
	type due struct {
		job, reason string
		spec        JobSpec
		from        *Model
	}
	var todo []due
	now := n.now()
	n.fsm.view(func(st *state) {
		for id, j := range st.Jobs {
			ok, reason := retrainDue(j, now)
			if !ok {
				continue
			}
			from := j.ModelByDigest(j.Production)
			if from == nil {
				from = j.Global
			}
			if from == nil {
				continue
			}
			spec := j.Spec
			spec.ID = retrainID(id, func(s string) bool { _, ok := st.Jobs[s]; return ok })
			cp := *from
			todo = append(todo, due{job: id, reason: reason, spec: spec, from: &cp})
		}
	})
	for _, d := range todo {
		if err := d.spec.Validate(n.cfg.MaxModelBytes); err != nil {
			n.warnEngine(d.job, fmt.Errorf("retrain: %w", err))
			continue
		}
		err := n.propose(cmdEnsureJob, ensureJobBody{Spec: d.spec, Initial: Model{Digest: d.from.Digest, Size: d.from.Size}, RetrainOf: d.job})
		if err != nil {
			n.warnEngine(d.job, fmt.Errorf("retrain: %w", err))
			continue
		}
		n.log.Info("retraining", "job", d.job, "new_job", d.spec.ID, "from_model", d.from.Digest[:12], "because", d.reason)
	}
}
