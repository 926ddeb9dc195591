package coordinator

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/sdc"
)

// Federated evaluation: a job of kind "evaluation" scores one version of a
// training job's model at every site, on the records that training job
// held out (its validation split), in one round. Each site sends its
// AUROC, AUPRC, accuracy, Brier score and calibration bins (bins under the
// minimum cell suppressed); the leader pools them and records the per-site
// and pooled results on the model version in the registry (registry.go).
// Raw scores never leave a site, so the pooled AUROC and AUPRC are the
// means of the sites' values (AUROC weighted by each site's positive-negative
// pairs, AUPRC by its positives); the pooled accuracy, Brier
// score and calibration bins are exact (sums of the sites' counts).

// JobKindEvaluation scores a model version at the sites.
const JobKindEvaluation = "evaluation"

// KindEval is an evaluation job's round (number 0).
const KindEval = "eval"

// EvaluationSpec is an evaluation job's section.
type EvaluationSpec struct {
	// Job is the training job whose model is scored; Model the version's
	// digest (empty: the job's latest model when the evaluation is
	// created).
	Job   string `json:"job"`
	Model string `json:"model,omitempty"`
	// Bins are equal-width calibration bins of the predicted risk (default
	// 10, at most 100); MinCell is the smallest count a bin is reported
	// with (default the federation's minimum cohort).
	Bins    int `json:"bins,omitempty"`
	MinCell int `json:"min_cell,omitempty"`
}

const (
	defaultEvalBins = 10
	maxEvalBins     = 100
)

// IsEvaluation reports whether the spec is an evaluation job's.
func (s JobSpec) IsEvaluation() bool { return s.Kind == JobKindEvaluation }

func (s JobSpec) validateEvaluation() error {
	e := s.Evaluation
	switch {
	case !validID(s.ID):
		return fmt.Errorf("%w: job id %q: use 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalidJob, s.ID)
	case e == nil || !validID(e.Job):
		return fmt.Errorf("%w: an evaluation job needs evaluation.job, the training job whose model it scores", ErrInvalidJob)
	case e.Model != "" && validDigest(e.Model) != nil:
		return fmt.Errorf("%w: evaluation.model must be a model digest (64 hex digits)", ErrInvalidJob)
	case e.Bins < 0 || e.Bins > maxEvalBins:
		return fmt.Errorf("%w: evaluation.bins must be in [1, %d] (0: %d)", ErrInvalidJob, maxEvalBins, defaultEvalBins)
	case e.MinCell < 0:
		return fmt.Errorf("%w: evaluation.min_cell must not be negative", ErrInvalidJob)
	case s.MinSites < 1:
		return fmt.Errorf("%w: min_sites must be at least 1", ErrInvalidJob)
	case s.RoundTimeout <= 0:
		return fmt.Errorf("%w: round_timeout must be positive", ErrInvalidJob)
	case s.MaxAttempts < 1:
		return fmt.Errorf("%w: max_attempts must be at least 1", ErrInvalidJob)
	case s.Privacy != nil || s.SecureAggregation != nil || s.Analytics != nil || s.Sampling != (Sampling{}):
		return fmt.Errorf("%w: an evaluation job takes no privacy, secure_aggregation, analytics or sampling section", ErrInvalidJob)
	}
	return nil
}

// resolveEvaluation completes an evaluation job's spec from the training
// job it names (as st holds it): the model version (the latest when
// unset), the model's shape, the features it was trained with, and the
// validation split and minimum records of its training.
func resolveEvaluation(st *state, spec *JobSpec) error {
	e := spec.Evaluation
	tj, ok := st.Jobs[e.Job]
	switch {
	case !ok:
		return fmt.Errorf("%w: evaluation.job: no job %q", ErrInvalidJob, e.Job)
	case tj.Spec.IsAnalytics() || tj.Spec.IsEvaluation():
		return fmt.Errorf("%w: evaluation.job: %q trains no model", ErrInvalidJob, e.Job)
	case e.Model == "" && tj.Global != nil:
		e.Model = tj.Global.Digest
	}
	if tj.ModelByDigest(e.Model) == nil {
		return fmt.Errorf("%w: job %s has no model %.12s", ErrInvalidJob, e.Job, e.Model)
	}
	spec.Model = tj.Spec.Model
	features := tj.EffectiveFeatures()
	// The centers and scales it trained with are in the spec now.
	features.Normalization = pb.Normalization_NORMALIZATION_GIVEN
	spec.Features = FeatureSpec{FeatureSpec: features}
	spec.Train = TrainParams{ValidationFraction: tj.Spec.Train.ValidationFraction, MinRecords: tj.Spec.Train.MinRecords}
	return nil
}

// EvalReport is one site's evaluation of a model version (a receipt of an
// evaluation round): numbers only.
type EvalReport struct {
	Count     uint64  `json:"count"`
	Positives uint64  `json:"positives"`
	AUROC     float64 `json:"auroc"`
	AUPRC     float64 `json:"auprc"`
	Accuracy  float64 `json:"accuracy"`
	Brier     float64 `json:"brier"`
	// Calibration are the bins of predicted risk, in order.
	Calibration []CalibrationBin `json:"calibration"`
}

// CalibrationBin is one bin of predicted risk. A suppressed bin held
// fewer records than the minimum cell; its counts are not reported.
type CalibrationBin struct {
	Count        uint64  `json:"count"`
	Positives    uint64  `json:"positives"`
	SumPredicted float64 `json:"sum_predicted"`
	Suppressed   bool    `json:"suppressed,omitempty"`
}

// Evaluation is a model version's federated evaluation, as the registry
// keeps it.
type Evaluation struct {
	// Job is the evaluation job that produced it.
	Job string    `json:"job"`
	At  time.Time `json:"at"`
	// Sites are the per-site results; Pooled their combination (AUROC and
	// AUPRC weighted means, see poolEvaluation; the rest exact).
	Sites  map[string]EvalReport `json:"sites"`
	Pooled EvalReport            `json:"pooled"`
}

// evalReport reads a site's upload, refusing values that cannot be right.
func evalReport(u *pb.EvalUpload, bins int) (EvalReport, error) {
	r := EvalReport{Count: u.GetCount(), Positives: u.GetPositives(), AUROC: u.GetAuroc(), AUPRC: u.GetAuprc(),
		Accuracy: u.GetAccuracy(), Brier: u.GetBrier()}
	for _, x := range []float64{r.AUROC, r.AUPRC, r.Accuracy, r.Brier} {
		if !(x >= 0 && x <= 1) {
			return r, fmt.Errorf("a metric of %v is outside [0, 1]", x)
		}
	}
	if r.Positives > r.Count {
		return r, fmt.Errorf("%d positives among %d records", r.Positives, r.Count)
	}
	if len(u.GetCalibration()) != bins {
		return r, fmt.Errorf("%d calibration bins, the evaluation asked for %d", len(u.GetCalibration()), bins)
	}
	var total uint64
	for _, b := range u.GetCalibration() {
		c := CalibrationBin{Count: b.GetCount(), Positives: b.GetPositives(), SumPredicted: b.GetSumPredicted(), Suppressed: b.GetSuppressed()}
		total += c.Count
		switch {
		case c.Positives > c.Count, !(c.SumPredicted >= 0 && c.SumPredicted <= float64(c.Count)), total > r.Count:
			return r, fmt.Errorf("a calibration bin does not add up")
		case c.Suppressed && (c.Count != 0 || c.Positives != 0 || c.SumPredicted != 0):
			return r, fmt.Errorf("a suppressed calibration bin carries counts")
		}
		r.Calibration = append(r.Calibration, c)
	}
	return r, nil
}

// poolEvaluation combines the sites' reports: counts, accuracy, Brier
// score and calibration exactly; AUROC as the mean of the sites' values
// weighted by their positive-negative pairs (a site with one class has no
// AUROC and no weight), AUPRC weighted by positives. A pooled bin under
// minCell is suppressed too, with a second one when it is alone (as the
// sites do).
func poolEvaluation(reports map[string]EvalReport, bins, minCell int) EvalReport {
	p := EvalReport{Calibration: make([]CalibrationBin, bins)}
	var auroc, aurocW, auprc, acc, brier float64
	for _, site := range slices.Sorted(maps.Keys(reports)) {
		r := reports[site]
		p.Count += r.Count
		p.Positives += r.Positives
		n := float64(r.Count)
		pairs := float64(r.Positives) * float64(r.Count-r.Positives)
		auroc += pairs * r.AUROC
		aurocW += pairs
		auprc += float64(r.Positives) * r.AUPRC
		acc += n * r.Accuracy
		brier += n * r.Brier
		for i, b := range r.Calibration {
			if i < bins {
				p.Calibration[i].Count += b.Count
				p.Calibration[i].Positives += b.Positives
				p.Calibration[i].SumPredicted += b.SumPredicted
			}
		}
	}
	if p.Count > 0 {
		n := float64(p.Count)
		p.Accuracy, p.Brier = acc/n, brier/n
	}
	if aurocW > 0 {
		p.AUROC = auroc / aurocW
	}
	if p.Positives > 0 {
		p.AUPRC = auprc / float64(p.Positives)
	}
	counts := make([]uint64, bins)
	for i, b := range p.Calibration {
		counts[i] = b.Count
	}
	for i, withhold := range sdc.Suppress(counts, uint64(max(minCell, 0))) {
		if withhold {
			p.Calibration[i] = CalibrationBin{Suppressed: true}
		}
	}
	return p
}

// commitEvalBody ends an evaluation job with its results.
type commitEvalBody struct {
	Job        string     `json:"job"`
	Attempt    int        `json:"attempt"`
	Evaluation Evaluation `json:"evaluation"`
}

// applyCommitEval records an evaluation on the model version it scored
// and ends the evaluation job.
func (f *fsm) applyCommitEval(b commitEvalBody, at time.Time) error {
	r, err := f.openRound(b.Job, 0)
	if err != nil {
		return err
	}
	j := f.st.Jobs[b.Job]
	if r.Kind != KindEval || r.Attempt != b.Attempt || !j.Spec.IsEvaluation() {
		return fmt.Errorf("%w: job %s has no open evaluation round attempt %d", ErrRoundConflict, b.Job, b.Attempt)
	}
	e := j.Spec.Evaluation
	var m *Model
	if tj, ok := f.st.Jobs[e.Job]; ok {
		m = tj.ModelByDigest(e.Model)
	}
	if m == nil {
		return fmt.Errorf("%w: job %s has no model %.12s", ErrUnknownJob, e.Job, e.Model)
	}
	ev := b.Evaluation
	ev.Job, ev.At = b.Job, at
	m.Evaluations = append(m.Evaluations, &ev)
	j.Evaluated = &ev
	r.State, r.Closed = RoundCommitted, at
	r.Contributors = slices.Sorted(maps.Keys(ev.Sites))
	j.Current = nil
	j.State, j.Finished = JobDone, at
	return nil
}

// stepEval closes an evaluation round once every site answered (or at the
// deadline) with at least MinSites reports, committing the pooled and
// per-site results; with fewer it fails the attempt.
func (n *Node) stepEval(v roundView, now time.Time) error {
	r := v.open
	answered := len(r.Receipts)+len(r.Declines) >= v.sites
	if !answered && now.Before(r.Deadline) {
		return nil
	}
	if len(r.Receipts) < v.spec.MinSites {
		reason := fmt.Sprintf("%d of %d required sites sent evaluations (%d declined)", len(r.Receipts), v.spec.MinSites, len(r.Declines))
		n.stats.RoundsFailed.Add(1)
		n.log.Warn("evaluation round failed", "job", v.job, "attempt", r.Attempt, "reason", reason)
		return n.propose(cmdFailRound, failRoundBody{Job: v.job, Round: 0, Attempt: r.Attempt, Reason: reason})
	}
	e := v.spec.Evaluation
	sites := make(map[string]EvalReport, len(r.Receipts))
	for s, rc := range r.Receipts {
		if rc.Eval != nil {
			sites[s] = *rc.Eval
		}
	}
	ev := Evaluation{Sites: sites, Pooled: poolEvaluation(sites, e.bins(), e.minCell(n.cfg.minCohort()))}
	if err := n.propose(cmdCommitEval, commitEvalBody{Job: v.job, Attempt: r.Attempt, Evaluation: ev}); err != nil {
		return fmt.Errorf("commit evaluation: %w", err)
	}
	n.log.Info("evaluation committed", "job", v.job, "model", e.Model[:12], "sites", len(sites), "auroc", ev.Pooled.AUROC)
	return nil
}

func (e *EvaluationSpec) bins() int {
	if e.Bins == 0 {
		return defaultEvalBins
	}
	return e.Bins
}

func (e *EvaluationSpec) minCell(k int) int { return max(e.MinCell, k) }

// evalOffer is the task offer of an evaluation round.
func (n *Node) evalOffer(st *state, id string, j *Job, r *Round) *pb.TaskOffer {
	e := j.Spec.Evaluation
	tj, ok := st.Jobs[e.Job]
	if !ok {
		return nil
	}
	m := tj.ModelByDigest(e.Model)
	if m == nil {
		return nil
	}
	return &pb.TaskOffer{
		JobId: id, Round: r.Number, Kind: pb.TaskKind_TASK_KIND_EVALUATE,
		Model:     &pb.BlobRef{Sha256: m.Digest, Size: uint64(m.Size), Encoding: pb.Encoding_ENCODING_F32LE},
		ModelSpec: j.Spec.Model.Wire(),
		Params:    &pb.TrainParams{ValidationFraction: j.Spec.Train.ValidationFraction, MinRecords: uint32(j.Spec.Train.MinRecords)},
		Features:  j.Spec.Features.FeatureSpec,
		Eval:      &pb.EvalParams{SplitSalt: e.Job, Bins: uint32(e.bins()), MinCell: uint32(e.minCell(n.cfg.minCohort()))},
	}
}

// onEvalUpload takes a site's evaluation: checked, then committed as the
// site's receipt of the round before the Ack.
func (n *Node) onEvalUpload(ac *agentConn, u *pb.EvalUpload) *pb.Envelope {
	reject := func(code pb.ErrorCode, format string, args ...any) *pb.Envelope {
		n.stats.UpdatesRejected.Add(1)
		msg := fmt.Sprintf(format, args...)
		n.log.Warn("rejected evaluation", "site", ac.site, "job", u.GetJobId(), "reason", msg)
		return protocol.Errorf(code, "%s", msg)
	}
	var (
		resp *pb.Envelope
		bins int
	)
	n.fsm.view(func(st *state) {
		j, ok := st.Jobs[u.GetJobId()]
		switch {
		case !ok:
			resp = reject(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no job %q", u.GetJobId())
		case !j.State.active() || j.Current == nil || j.Current.Kind != KindEval || j.Current.Number != u.GetRound():
			resp = reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "job %s has no open evaluation round", u.GetJobId())
		case u.GetModelSha256() != j.Spec.Evaluation.Model:
			resp = reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "the evaluation scored model %.12s, the job evaluates %.12s", u.GetModelSha256(), j.Spec.Evaluation.Model)
		default:
			bins = j.Spec.Evaluation.bins()
		}
	})
	if resp != nil {
		return resp
	}
	rep, err := evalReport(u, bins)
	if err != nil {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "evaluation: %v", err)
	}
	err = n.propose(cmdReceipt, receiptBody{Job: u.GetJobId(), Round: u.GetRound(), Receipt: Receipt{Site: ac.site, Eval: &rep}})
	if resp := n.proposalAnswer(err, reject); resp != nil {
		return resp
	}
	return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: u.GetJobId(), Round: u.GetRound()}}}
}
