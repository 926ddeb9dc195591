package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
)

// The model registry: every global model a training job committed is a
// version with its lineage (job, round, parent version, rule, contributing
// sites, privacy spent, metrics), its federated evaluations (evaluation.go)
// and a stage. A job has at most one version in production; promoting
// another archives the one it replaces, and a rollback brings back the
// version production had before. Stage changes are Raft entries carrying
// the admin request, so each is an audit entry.

// Stage is a model version's place in its life.
type Stage string

// Stages. A committed version starts as a candidate.
const (
	StageCandidate  Stage = "candidate"
	StageStaging    Stage = "staging"
	StageProduction Stage = "production"
	StageArchived   Stage = "archived"
)

func validStage(s Stage) bool {
	return s == StageCandidate || s == StageStaging || s == StageProduction || s == StageArchived
}

// Promotion is one change of a job's production version.
type Promotion struct {
	Model string    `json:"model"`
	At    time.Time `json:"at"`
	// Rollback is set when the change brought back an earlier version.
	Rollback bool `json:"rollback,omitempty"`
}

// stageBody sets a version's stage.
type stageBody struct {
	Job   string `json:"job"`
	Model string `json:"model"`
	Stage Stage  `json:"stage"`
}

// rollbackBody puts back a job's previous production version.
type rollbackBody struct {
	Job string `json:"job"`
}

// stage returns a version's stage ("" reads as candidate).
func (m *Model) stage() Stage {
	if m.Stage == "" {
		return StageCandidate
	}
	return m.Stage
}

// applyStage moves a version to a stage. Promoting to production archives
// the job's production version.
func (f *fsm) applyStage(b stageBody, at time.Time) error {
	j, ok := f.st.Jobs[b.Job]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownJob, b.Job)
	}
	m := j.ModelByDigest(b.Model)
	switch {
	case m == nil:
		return fmt.Errorf("%w: job %s has no model %.12s", ErrNoModel, b.Job, b.Model)
	case !validStage(b.Stage):
		return fmt.Errorf("%w: stage %q: use candidate, staging, production or archived", ErrBadCommand, b.Stage)
	case m.stage() == b.Stage:
		return nil
	}
	if b.Stage == StageProduction {
		if cur := j.ModelByDigest(j.Production); cur != nil {
			cur.Stage = StageArchived
		}
		j.Production = m.Digest
		j.Promotions = append(j.Promotions, Promotion{Model: m.Digest, At: at})
	} else if j.Production == m.Digest {
		j.Production = "" // the production version leaves production
		j.Promotions = append(j.Promotions, Promotion{At: at})
	}
	m.Stage = b.Stage
	return nil
}

// applyRollback brings back the version that was in production before the
// current one, archiving the current one.
func (f *fsm) applyRollback(b rollbackBody, at time.Time) error {
	j, ok := f.st.Jobs[b.Job]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownJob, b.Job)
	}
	prev := j.previousProduction()
	if prev == "" {
		return fmt.Errorf("%w: job %s has no earlier production version to roll back to", ErrJobState, b.Job)
	}
	if cur := j.ModelByDigest(j.Production); cur != nil {
		cur.Stage = StageArchived
	}
	j.ModelByDigest(prev).Stage = StageProduction
	j.Production = prev
	j.Promotions = append(j.Promotions, Promotion{Model: prev, At: at, Rollback: true})
	return nil
}

// previousProduction is the version production held before the current
// one (skipping the current one's own earlier terms), or "".
func (j *Job) previousProduction() string {
	for _, p := range slices.Backward(j.Promotions) {
		if p.Model != "" && p.Model != j.Production && j.ModelByDigest(p.Model) != nil {
			return p.Model
		}
	}
	return ""
}

// SetStage moves version digest of job to stage, as
// POST /v1/jobs/{id}/models/{digest}/stage does but not on behalf of an
// admin request (the simulator, tools); the change is an audit entry.
func (n *Node) SetStage(job, digest string, stage Stage) error {
	if !validStage(stage) {
		return fmt.Errorf("%w: stage %q", ErrBadCommand, stage)
	}
	return n.propose(cmdModelStage, stageBody{Job: job, Model: digest, Stage: stage})
}

// ModelVersion is a registry entry as the admin API shows it.
type ModelVersion struct {
	Job    string `json:"job"`
	Digest string `json:"digest"`
	Round  uint64 `json:"round"`
	Size   int64  `json:"size"`
	Stage  Stage  `json:"stage"`
	// Parent is the version this one was trained from (the previous
	// round's), empty for a job's initial model.
	Parent            string        `json:"parent,omitempty"`
	Committed         time.Time     `json:"committed,omitzero"`
	Strategy          string        `json:"strategy,omitempty"`
	Contributors      []string      `json:"contributors,omitempty"`
	Samples           uint64        `json:"samples,omitempty"`
	MeanValAUROC      float64       `json:"mean_val_auroc,omitempty"`
	EpsilonSpent      float64       `json:"epsilon_spent,omitempty"`
	SecureAggregation bool          `json:"secure_aggregation,omitempty"`
	Evaluations       []*Evaluation `json:"evaluations,omitempty"`
}

func versionView(job string, m *Model) ModelVersion {
	v := ModelVersion{Job: job, Digest: m.Digest, Round: m.Round, Size: m.Size, Stage: m.stage(), Parent: m.Parent,
		Committed: m.Committed, Strategy: m.Strategy, Contributors: slices.Clone(m.Contributors), Samples: m.Samples,
		MeanValAUROC: m.MeanValAUROC, EpsilonSpent: m.Epsilon, SecureAggregation: m.SecureAggregation}
	for _, e := range m.Evaluations {
		cp := *e
		v.Evaluations = append(v.Evaluations, &cp)
	}
	return v
}

// versions lists a job's versions, oldest first; ok is false when the job
// does not exist.
func (n *Node) versions(job string) (out []ModelVersion, production string, ok bool) {
	n.fsm.view(func(st *state) {
		j, found := st.Jobs[job]
		if !found {
			return
		}
		ok, production = true, j.Production
		for _, m := range j.Models {
			out = append(out, versionView(job, m))
		}
	})
	return out, production, ok
}

func (n *Node) version(job, digest string) (ModelVersion, bool) {
	vs, _, _ := n.versions(job)
	for _, v := range vs {
		if v.Digest == digest {
			return v, true
		}
	}
	return ModelVersion{}, false
}

func (n *Node) listVersions(w http.ResponseWriter, req *http.Request) {
	vs, _, ok := n.versions(req.PathValue("id"))
	if !ok {
		writeProblem(w, http.StatusNotFound, "no such job")
		return
	}
	listPage(w, req, "models", vs, func(v ModelVersion) string { return fmt.Sprintf("%020d-%s", v.Round, v.Digest) })
}

func (n *Node) getVersion(w http.ResponseWriter, req *http.Request) {
	v, ok := n.version(req.PathValue("id"), req.PathValue("digest"))
	if !ok {
		writeProblem(w, http.StatusNotFound, "no such model version")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// setStage is POST /v1/jobs/{id}/models/{digest}/stage {"stage": "..."}.
func (n *Node) setStage(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Stage Stage `json:"stage"`
	}
	if !decodeBody(w, req, &body) {
		return
	}
	if !validStage(body.Stage) {
		writeProblem(w, http.StatusBadRequest, "stage must be candidate, staging, production or archived")
		return
	}
	b := stageBody{Job: req.PathValue("id"), Model: req.PathValue("digest"), Stage: body.Stage}
	if err := n.proposeFor(req, cmdModelStage, b, http.StatusOK); err != nil {
		writeErr(w, err)
		return
	}
	v, _ := n.version(b.Job, b.Model)
	writeJSON(w, http.StatusOK, v)
}

// rollback is POST /v1/jobs/{id}/rollback.
func (n *Node) rollback(w http.ResponseWriter, req *http.Request) {
	b := rollbackBody{Job: req.PathValue("id")}
	if err := n.proposeFor(req, cmdRollback, b, http.StatusOK); err != nil {
		writeErr(w, err)
		return
	}
	vs, prod, _ := n.versions(b.Job)
	for _, v := range vs {
		if v.Digest == prod {
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// getModelCard is GET /v1/jobs/{id}/models/{digest}/card: the version's
// model card in Markdown.
func (n *Node) getModelCard(w http.ResponseWriter, req *http.Request) {
	job := req.PathValue("id")
	v, ok := n.version(job, req.PathValue("digest"))
	if !ok {
		writeProblem(w, http.StatusNotFound, "no such model version")
		return
	}
	var spec JobSpec
	n.fsm.view(func(st *state) {
		if j, ok := st.Jobs[job]; ok {
			spec = j.Spec
			spec.Features = FeatureSpec{FeatureSpec: j.EffectiveFeatures()}
		}
	})
	w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, modelCard(spec, v))
}

// modelCard writes a version's model card (after Mitchell et al., "Model
// Cards for Model Reporting", 2019): what it is, how it was trained, how
// it performed, what it may not be used for. Everything in it is
// aggregate: no site's data appears.
func modelCard(spec JobSpec, v ModelVersion) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Model card: job %s, round %d", v.Job, v.Round)
	p("")
	p("- Version: `%s` (%s)", v.Digest, v.Stage)
	if v.Parent != "" {
		p("- Trained from: `%s`", v.Parent)
	}
	if !v.Committed.IsZero() {
		p("- Committed: %s", v.Committed.UTC().Format(time.RFC3339))
	}
	p("- Model: %s with %d input features (%d parameters)", spec.Model.Kind, spec.Model.NumFeatures, spec.Model.NumParams())
	p("")
	p("## Intended use")
	p("")
	p("Decision support for the outcome below, scored at the hospital's gateway on its own records. Not validated for clinical use by this card; a clinician decides.")
	p("")
	p("## Training")
	p("")
	p("- Federated over %d sites (%s); the coordinator never saw patient records.", len(v.Contributors), strings.Join(v.Contributors, ", "))
	p("- Aggregation: %s", v.Strategy)
	if v.SecureAggregation {
		p("- Secure aggregation: the coordinator learned only the sum of the sites' updates.")
	}
	if pr := spec.Privacy; pr != nil {
		p("- Differential privacy: ε = %.3g spent of %g at δ = %g (site-level, noise multiplier %.3g).", v.EpsilonSpent, pr.Epsilon, pr.delta(), pr.NoiseMultiplier)
	}
	if f := spec.Features.FeatureSpec; f != nil {
		var names []string
		for _, ft := range f.GetFeatures() {
			names = append(names, ft.GetName())
		}
		p("- Features: %s", strings.Join(names, ", "))
		if l := f.GetLabel(); l != nil {
			p("- Outcome: %s %s%s", l.GetKind(), l.GetConditionCode(), l.GetObservationCode())
		}
	}
	p("")
	p("## Performance")
	p("")
	if v.MeanValAUROC > 0 {
		p("- Mean local validation AUROC reported with the round's updates: %.4f", v.MeanValAUROC)
	}
	if len(v.Evaluations) == 0 {
		p("- No federated evaluation yet.")
	}
	for _, e := range v.Evaluations {
		p("- Federated evaluation %s (%s), %d held-out records at %d sites: AUROC %.4f, AUPRC %.4f, accuracy %.4f, Brier %.4f",
			e.Job, e.At.UTC().Format(time.RFC3339), e.Pooled.Count, len(e.Sites), e.Pooled.AUROC, e.Pooled.AUPRC, e.Pooled.Accuracy, e.Pooled.Brier)
	}
	p("")
	p("## Limitations")
	p("")
	p("- Sites differ in case mix, devices and coding: check each site's evaluation, not only the pooled figures.")
	p("- Pooled AUROC and AUPRC are weighted means of the sites' values (by positive-negative pairs and by positives: scores never leave a site).")
	return b.String()
}

// resolveEvaluationSpec completes an evaluation job's spec from the
// training job it names, as this node's state holds it (see
// resolveEvaluation), and fills the defaults an evaluation job does not
// use.
func (n *Node) resolveEvaluationSpec(spec *JobSpec) error {
	if spec.Evaluation == nil {
		return fmt.Errorf("%w: an evaluation job needs an evaluation section", ErrInvalidJob)
	}
	var err error
	n.fsm.view(func(st *state) { err = resolveEvaluation(st, spec) })
	spec.Strategy, spec.Rounds = StrategySpec{}, 1
	return err
}

// EvaluateModel creates evaluation job id (see EvaluationSpec), scoring
// version digest of training job at every site, with the federation's
// defaults for the rest.
func (n *Node) EvaluateModel(id, job, digest string, minSites int) error {
	spec := DefaultJobSpec()
	spec.Kind, spec.ID = JobKindEvaluation, id
	if minSites > 0 {
		spec.MinSites = minSites
	}
	spec.Evaluation = &EvaluationSpec{Job: job, Model: digest}
	if err := n.resolveEvaluationSpec(&spec); err != nil {
		return err
	}
	return n.CreateJob(spec)
}

// evaluateVersion is POST /v1/jobs/{id}/models/{digest}/evaluate: it
// creates an evaluation job scoring the version at every site. The body
// may set the evaluation job's id, min_sites, round_timeout, bins and
// min_cell.
func (n *Node) evaluateVersion(w http.ResponseWriter, req *http.Request) {
	job, digest := req.PathValue("id"), req.PathValue("digest")
	var body struct {
		ID           string   `json:"id,omitempty"`
		MinSites     int      `json:"min_sites,omitempty"`
		RoundTimeout Duration `json:"round_timeout,omitempty"`
		Bins         int      `json:"bins,omitempty"`
		MinCell      int      `json:"min_cell,omitempty"`
	}
	if req.ContentLength != 0 && !decodeBody(w, req, &body) {
		return
	}
	if _, ok := n.version(job, digest); !ok {
		writeProblem(w, http.StatusNotFound, "no such model version")
		return
	}
	spec := DefaultJobSpec()
	spec.Kind, spec.ID = JobKindEvaluation, body.ID
	if spec.ID == "" {
		spec.ID = fmt.Sprintf("%s-eval-%.8s-%d", job, digest, n.now().Unix())
		if len(spec.ID) > 63 {
			spec.ID = fmt.Sprintf("eval-%.8s-%d", digest, n.now().Unix())
		}
	}
	if body.MinSites > 0 {
		spec.MinSites = body.MinSites
	}
	if body.RoundTimeout > 0 {
		spec.RoundTimeout = body.RoundTimeout
	}
	spec.Evaluation = &EvaluationSpec{Job: job, Model: digest, Bins: body.Bins, MinCell: body.MinCell}
	if err := n.resolveEvaluationSpec(&spec); err != nil {
		writeErr(w, err)
		return
	}
	if _, exists := n.Job(spec.ID); exists {
		writeProblem(w, http.StatusConflict, fmt.Sprintf("job %q exists", spec.ID))
		return
	}
	if err := n.createJob(spec, func(t cmdType, b any) error { return n.proposeFor(req, t, b, http.StatusCreated) }); err != nil {
		writeErr(w, err)
		return
	}
	j, _ := n.jobStatus(spec.ID)
	writeJSON(w, http.StatusCreated, j)
}

// deployment is the production version of job as sites receive it; nil
// when the job has none. Called with the FSM read-locked.
func deployment(st *state, job string) (*pb.Deployment, error) {
	j, ok := st.Jobs[job]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownJob, job)
	}
	m := j.ModelByDigest(j.Production)
	if m == nil {
		return nil, nil
	}
	return &pb.Deployment{
		JobId: job, Round: m.Round, AlertThreshold: j.Spec.AlertThreshold,
		Model:     &pb.BlobRef{Sha256: m.Digest, Size: uint64(m.Size), Encoding: pb.Encoding_ENCODING_F32LE},
		ModelSpec: j.Spec.Model.Wire(), Features: j.EffectiveFeatures(),
	}, nil
}

// onDeploymentRequest answers a site that follows a job's production
// version: the version (at once if it is not the one the site runs, or
// when it changes within the request's wait), NoTask if it did not
// change, NOT_FOUND when the job has none.
func (n *Node) onDeploymentRequest(ctx context.Context, req *pb.DeploymentRequest) *pb.Envelope {
	return n.longPoll(ctx, req.GetWaitMs(), func() *pb.Envelope {
		var (
			d   *pb.Deployment
			err error
		)
		n.fsm.view(func(st *state) { d, err = deployment(st, req.GetJobId()) })
		switch {
		case err != nil:
			return protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "%v", err)
		case d == nil && req.GetCurrentSha256() == "":
			return protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "job %s has no version in production", req.GetJobId())
		case d != nil && d.GetModel().GetSha256() != req.GetCurrentSha256():
			return &pb.Envelope{Body: &pb.Envelope_Deployment{Deployment: d}}
		}
		return nil
	})
}
