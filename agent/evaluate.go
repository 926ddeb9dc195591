package agent

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/train"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/sdc"
)

var (
	// errEvaluate marks the failures of a federated evaluation, so that
	// they are logged as such rather than as an untrained round.
	errEvaluate = errors.New("evaluation")
	// errEvalOffer: an evaluation offer this site cannot score (declined
	// with reason SPEC).
	errEvalOffer = errors.New("invalid evaluation offer")
)

// runEvaluate answers an evaluation offer: it scores the offered model on
// the records its training job held out from training (the validation
// split of features.Split with the job's split salt and validation
// fraction) and sends the metrics and calibration bins (see evaluate). It
// declines an offer it cannot score (reason SPEC, or MODEL for a model kind
// it does not know) and one with fewer held-out records than the job's or
// the site's minimum (TOO_FEW_RECORDS). An evaluation writes nothing to the
// outbox and trains nothing.
func (a *Agent) runEvaluate(ctx context.Context, s *session, offer *pb.TaskOffer) error {
	// Check what can be checked before downloading the model.
	model, err := evalModel(offer)
	if err != nil {
		return a.decline(s, offer, fmt.Errorf("%w: %w", errEvaluate, err))
	}
	body, err := a.download(ctx, s, offer.GetJobId(), offer.GetModel())
	if err != nil {
		return err
	}
	up, err := a.evaluate(offer, model, body)
	if err != nil {
		return a.decline(s, offer, fmt.Errorf("%w: %w", errEvaluate, err))
	}
	resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_EvalUpload{EvalUpload: up}})
	var re *protocol.RemoteError
	switch {
	case errors.Is(err, egress.ErrPayload), errors.Is(err, egress.ErrForbidden):
		// Nothing was sent; another session would not change that.
		return fmt.Errorf("%w: %w: %w", errLocal, errEvaluate, err)
	case errors.As(err, &re):
		a.log.Warn("coordinator refused this site's evaluation", "job", offer.GetJobId(), "round", offer.GetRound(), "code", re.Code.String())
		return fmt.Errorf("%w: %w: %w", errLocal, errEvaluate, err)
	case err != nil:
		return err
	case resp.GetAck() == nil:
		return fmt.Errorf("evaluation answer: %w", protocol.ErrUnexpected)
	}
	a.mu.Lock()
	a.stats.Evaluations++
	a.mu.Unlock()
	a.log.Info("sent a model evaluation", "job", offer.GetJobId(), "round", offer.GetRound(), "records", up.GetCount())
	return nil
}

// evalModel checks an evaluation offer against itself (evaluation
// parameters, feature spec, model spec and the size of the model blob) and
// returns the model it names, with its weights not yet set.
func evalModel(offer *pb.TaskOffer) (train.Trainer, error) {
	ev := offer.GetEval()
	switch {
	case ev == nil:
		return nil, fmt.Errorf("%w: no evaluation parameters", errEvalOffer)
	case ev.GetBins() < 1 || ev.GetBins() > egress.MaxCalibrationBins:
		return nil, fmt.Errorf("%w: %d calibration bins, want 1..%d", errEvalOffer, ev.GetBins(), egress.MaxCalibrationBins)
	case ev.GetSplitSalt() == "":
		// Without the training job's salt the held-out rows are unknown;
		// scoring any other split could score training rows.
		return nil, fmt.Errorf("%w: no split salt", errEvalOffer)
	}
	if f := offer.GetParams().GetValidationFraction(); !(f > 0 && f <= 1) {
		return nil, fmt.Errorf("%w: validation fraction %v, want (0, 1]", errEvalOffer, f)
	}
	spec := offer.GetFeatures()
	if err := features.ValidateSpec(spec); err != nil {
		return nil, fmt.Errorf("%w: feature spec: %w", errEvalOffer, err)
	}
	ms := offer.GetModelSpec()
	if k := ms.GetKind(); k != "logreg" && k != "mlp" {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedModel, k)
	}
	if int(ms.GetNumFeatures()) != len(spec.GetFeatures()) {
		return nil, fmt.Errorf("%w: model spec for %d features, feature spec of %d", errEvalOffer, ms.GetNumFeatures(), len(spec.GetFeatures()))
	}
	model, err := NewTrainer(ms, len(spec.GetFeatures()))
	if err != nil {
		return nil, fmt.Errorf("%w: model spec: %w", errEvalOffer, err)
	}
	ref := offer.GetModel()
	if n := model.NumParams(); n != int(ms.GetNumParams()) || ref.GetSize() != 4*uint64(n) {
		return nil, fmt.Errorf("%w: a %q model has %d parameters; the model spec says %d and the model blob holds %d bytes",
			errEvalOffer, ms.GetKind(), n, ms.GetNumParams(), ref.GetSize())
	}
	if enc := ref.GetEncoding(); enc != pb.Encoding_ENCODING_F32LE {
		return nil, fmt.Errorf("%w: model encoding %s", errEvalOffer, enc)
	}
	if !isDigest(ref.GetSha256()) {
		return nil, fmt.Errorf("%w: model digest is not 64 hex digits", errEvalOffer)
	}
	return model, nil
}

// isDigest reports whether s is a lower-case hex SHA-256 digest, as the
// egress guard wants one.
func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// evaluate scores model, with the weights in body (the offer's model
// blob), on this site's held-out records for the offer and returns the
// answer, not yet sent. Held-out rows are the validation split of
// features.Split with the offer's validation fraction and split salt:
// the rows the training job never trained on.
//
// The answer holds counts and metrics only: the number of held-out
// records and of positives among them, AUROC (0 when the held-out records
// hold only one class, where it is undefined), average precision (0
// without a positive), accuracy at a 0.5 threshold, the Brier score, and
// the offer's number of calibration bins, those under minCell suppressed
// (see calibrationBins).
func (a *Agent) evaluate(offer *pb.TaskOffer, model train.Trainer, body []byte) (*pb.EvalUpload, error) {
	weights, err := protocol.DecodeF32(body)
	if err != nil {
		return nil, fmt.Errorf("%w: model: %w", errEvalOffer, err)
	}
	if err := model.SetWeights(weights); err != nil {
		return nil, fmt.Errorf("%w: model: %w", errEvalOffer, err)
	}
	ds, err := a.dataset(offer.GetFeatures())
	if err != nil {
		return nil, err
	}
	if ds.Cols != int(offer.GetModelSpec().GetNumFeatures()) {
		return nil, fmt.Errorf("%w: %d feature columns for a model of %d", errEvalOffer, ds.Cols, offer.GetModelSpec().GetNumFeatures())
	}
	params, ev := offer.GetParams(), offer.GetEval()
	_, val := features.Split(ds, params.GetValidationFraction(), ev.GetSplitSalt())
	if minN := a.minCohort(params.GetMinRecords()); val.Rows < minN || val.Rows == 0 {
		return nil, fmt.Errorf("%w: %d held-out records, the job needs at least %d", ErrTooFewRecords, val.Rows, minN)
	}
	scores, err := model.Predict(val.X, val.Rows)
	if err != nil {
		return nil, fmt.Errorf("predict: %w", err)
	}
	// Calibration first: it refuses a score that is not a probability,
	// which the other metrics would take.
	table, err := train.Calibration(scores, val.Y, int(ev.GetBins()))
	if err != nil {
		return nil, fmt.Errorf("%w: model: %w", errEvalOffer, err)
	}
	up := &pb.EvalUpload{
		JobId: offer.GetJobId(), Round: offer.GetRound(), ModelSha256: offer.GetModel().GetSha256(),
		Count:       uint64(val.Rows),
		Accuracy:    train.Accuracy(scores, val.Y, 0.5),
		Brier:       train.Brier(scores, val.Y),
		Calibration: calibrationBins(table, a.minCell(ev)),
	}
	for _, b := range table {
		up.Positives += uint64(b.Positives)
	}
	if up.Auroc, err = train.AUROC(scores, val.Y); errors.Is(err, train.ErrOneClass) {
		up.Auroc, err = 0, nil
	}
	if err != nil {
		return nil, err
	}
	if up.Auprc, err = train.AUPRC(scores, val.Y); err != nil {
		return nil, err
	}
	for _, x := range []float64{up.Auroc, up.Auprc, up.Accuracy, up.Brier} {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: a metric is not finite", errEvalOffer)
		}
	}
	return up, nil
}

// minCell is the smallest calibration bin this site reports for an
// evaluation: the evaluation's minimum cell or the site's own floor k
// (Config.MinCohort), whichever is larger.
func (a *Agent) minCell(ev *pb.EvalParams) int {
	return max(int(ev.GetMinCell()), a.minCohort(0))
}

// calibrationBins is the calibration table as an evaluation sends it. A
// bin of fewer than minCell records, but not none, is suppressed: sent with
// zero count, positives and sum, and marked so. An empty bin is sent as it
// is. When exactly one bin is suppressed, the smallest other non-empty bin
// is suppressed too (complementary suppression): the evaluation also sends
// its totals, from which a lone suppressed bin could be recovered by
// subtraction.
func calibrationBins(table []train.CalibrationBin, minCell int) []*pb.CalibrationBin {
	counts := make([]uint64, len(table))
	for i, b := range table {
		counts[i] = uint64(max(b.Count, 0))
	}
	out := make([]*pb.CalibrationBin, len(table))
	for i, withhold := range sdc.Suppress(counts, uint64(max(minCell, 0))) {
		if withhold {
			out[i] = &pb.CalibrationBin{Suppressed: true}
		} else {
			b := table[i]
			out[i] = &pb.CalibrationBin{Count: counts[i], Positives: uint64(max(b.Positives, 0)), SumPredicted: b.SumScores}
		}
	}
	return out
}
