package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/train"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/sdc"
	"github.com/cohort-fl/cohort/protocol/secagg"
	"google.golang.org/protobuf/proto"
)

// pending is an update the agent keeps (in memory and in its outbox on
// disk) until it sees the round committed: after a leader failover the new
// leader may ask for it again.
type pending struct {
	Job     string     `json:"job"`
	Round   uint64     `json:"round"`
	Base    string     `json:"base"`
	Samples uint64     `json:"samples"`
	M       [4]float64 `json:"metrics"` // train loss, val AUROC, val accuracy, val count
	Delta   []byte     `json:"delta"`
	Acked   bool       `json:"acked"`
}

func (p *pending) header() *pb.UpdateUpload {
	return &pb.UpdateUpload{
		JobId: p.Job, Round: p.Round, BaseModelSha256: p.Base, SampleCount: p.Samples,
		Metrics: &pb.LocalMetrics{TrainLoss: p.M[0], ValAuroc: p.M[1], ValAccuracy: p.M[2], ValCount: uint64(p.M[3])},
		Delta:   &pb.BlobRef{Sha256: protocol.Digest(p.Delta), Size: uint64(len(p.Delta)), Encoding: pb.Encoding_ENCODING_F32LE},
	}
}

func (p *pending) file() string { return fmt.Sprintf("%s-%06d.json", p.Job, p.Round) }

func (a *Agent) outboxDir() string { return filepath.Join(a.cfg.DataDir, "outbox") }

func (a *Agent) saveOutbox(p *pending) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	tmp := filepath.Join(a.outboxDir(), "."+p.file())
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return os.Rename(tmp, filepath.Join(a.outboxDir(), p.file()))
}

func (a *Agent) dropOutbox(p *pending) {
	os.Remove(filepath.Join(a.outboxDir(), p.file()))
}

func (a *Agent) loadOutbox() ([]*pending, error) {
	ents, err := os.ReadDir(a.outboxDir())
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	var out []*pending
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.outboxDir(), e.Name()))
		if err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
		p := new(pending)
		if err := json.Unmarshal(b, p); err != nil {
			a.log.Warn("outbox entry does not decode; setting it aside", "file", e.Name(), "err", err)
			os.Rename(filepath.Join(a.outboxDir(), e.Name()), filepath.Join(a.outboxDir(), e.Name()+".bad"))
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y *pending) int {
		return cmp.Or(cmp.Compare(x.Job, y.Job), cmp.Compare(x.Round, y.Round))
	})
	return out, nil
}

// loop keeps a session to the leader and serves tasks until ctx ends.
func (a *Agent) loop(ctx context.Context) (err error) {
	a.session.set(SessionConnecting, "")
	defer func() {
		if errors.Is(err, ErrRefused) {
			a.session.set(SessionRefused, "")
		} else {
			a.session.set(SessionStopped, "")
		}
	}()
	hint := ""
	for sessions := 0; ; sessions++ {
		s, err := a.connect(ctx, hint)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrRevoked) {
				if a.waitRevoked(ctx, err) != nil {
					return nil
				}
				continue
			}
			return err
		}
		a.session.set(SessionConnected, s.addr)
		a.writeStatus()
		if sessions > 0 {
			// Every session after the first replaces a lost one.
			a.mu.Lock()
			a.stats.Reconnects++
			a.mu.Unlock()
		}
		hint = ""
		err = a.serve(ctx, s)
		s.close()
		a.session.set(SessionConnecting, "")
		if ctx.Err() != nil {
			return nil
		}
		var rd *errRedirect
		switch {
		case isRevocation(err):
			if a.waitRevoked(ctx, err) != nil {
				return nil
			}
		case errors.As(err, &rd) && rd.addr != "":
			hint = rd.addr
			a.log.Info("following the leader", "addr", rd.addr)
		case errors.As(err, &rd):
			a.log.Info("the cluster has no leader yet; retrying")
		case isRefusal(err):
			return fmt.Errorf("%w: %w", ErrRefused, err)
		default:
			a.log.Info("coordinator connection lost; reconnecting", "err", err)
		}
	}
}

// revokedRetry is how long an agent whose site was revoked waits before
// it dials again: long, so that a revoked gateway does not hammer the
// coordinators (they refuse it at once).
const revokedRetry = time.Hour

// waitRevoked records that the site was revoked and waits revokedRetry.
// It returns ctx's error if ctx ends.
func (a *Agent) waitRevoked(ctx context.Context, cause error) error {
	a.markRevoked(cause)
	return a.clock.Sleep(ctx, revokedRetry)
}

// markRevoked records a revocation in the status. The first one is
// logged as an error; later ones (the hourly retries) as warnings.
func (a *Agent) markRevoked(cause error) {
	first, changed := a.session.revoke()
	switch {
	case first:
		a.log.Error("this site has been revoked by the federation operator: the coordinators refuse its connections and will not renew its certificate; "+
			"the agent stays up and tries again every "+revokedRetry.String()+" (ask the federation operator)", "err", cause)
	case changed:
		a.log.Warn("this site is still revoked; trying again in "+revokedRetry.String(), "err", cause)
	default:
		a.log.Debug("still revoked", "err", cause)
	}
	if changed {
		a.writeStatus()
	}
}

// serve runs one session: settle kept updates, continue a secure
// aggregation run an earlier session left, then ask for work.
func (a *Agent) serve(ctx context.Context, s *session) error {
	// Stopping the agent closes the session at once, which ends any read
	// blocked on the coordinator (a long poll can take PollWait).
	stop := context.AfterFunc(ctx, s.close)
	defer stop()
	for ctx.Err() == nil {
		if err := a.flushOutbox(ctx, s); err != nil {
			return err
		}
		if err := a.checkDeployments(ctx, s); err != nil {
			return err
		}
		if run := a.secagg; run != nil {
			if err := a.runSecAgg(ctx, s); err != nil {
				if a.secagg != nil || isTransport(err) {
					return err // the run is kept for the next session
				}
				if err := a.taskFailed(ctx, s, run.job, run.round, err); err != nil {
					return err
				}
			}
		}
		resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{
			WaitMs: uint32(a.cfg.PollWait / 1e6)}}})
		if err != nil {
			return err
		}
		offer := resp.GetTaskOffer()
		if offer == nil {
			continue // NoTask: ask again
		}
		if err := a.runTask(ctx, s, offer); err != nil {
			// A secure aggregation run the agent still holds stopped
			// on a session error: the next session continues it.
			if a.secagg != nil || isTransport(err) {
				return err
			}
			if err := a.taskFailed(ctx, s, offer.GetJobId(), offer.GetRound(), err); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// taskFailed records a task that failed for a reason other than the
// session (local work, a refusal, an abandoned secure aggregation run) and
// holds off until its round is no longer open. It returns only a session
// error.
func (a *Agent) taskFailed(ctx context.Context, s *session, job string, round uint64, cause error) error {
	a.mu.Lock()
	a.stats.LastRoundError = cause.Error()
	a.mu.Unlock()
	a.writeStatus()
	msg := "round not trained"
	switch {
	case errors.Is(cause, errSecAgg):
		msg = "secure aggregation run abandoned"
	case errors.Is(cause, errEvaluate):
		msg = "model not evaluated"
	}
	a.log.Warn(msg, "job", job, "round", round, "err", cause)
	return a.waitForChange(ctx, s, job, round)
}

// waitForChange holds off after a failed task until its round is no longer
// open, so a site that cannot train does not spin.
func (a *Agent) waitForChange(ctx context.Context, s *session, job string, round uint64) error {
	for ctx.Err() == nil {
		resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_RoundStatusRequest{RoundStatusRequest: &pb.RoundStatusRequest{
			JobId: job, Round: round}}})
		if err != nil {
			return err
		}
		if resp.GetRoundStatus().GetState() != pb.RoundState_ROUND_STATE_OPEN {
			return nil
		}
		// Long-poll for anything new; the answer itself is not needed.
		if _, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{
			WaitMs: uint32(a.cfg.PollWait / 1e6)}}}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// isTransport reports whether err came from the connection (reconnect)
// rather than from local training, the coordinator's refusal, or an
// abandoned secure aggregation run.
func isTransport(err error) bool {
	var rd *errRedirect
	var re *protocol.RemoteError
	return errors.As(err, &rd) || !errors.As(err, &re) && !errors.Is(err, errLocal) && !errors.Is(err, errSecAgg)
}

// errLocal marks failures of local work (features, training).
var errLocal = errors.New("local training")

// flushOutbox settles every kept update: dropped once its round is
// committed or gone, uploaded again when the coordinator lacks it.
func (a *Agent) flushOutbox(ctx context.Context, s *session) error {
	kept, err := a.loadOutbox()
	if err != nil {
		return err
	}
	for _, p := range kept {
		resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_RoundStatusRequest{RoundStatusRequest: &pb.RoundStatusRequest{
			JobId: p.Job, Round: p.Round, UpdateSha256: protocol.Digest(p.Delta)}}})
		if err != nil {
			return err
		}
		rs := resp.GetRoundStatus()
		switch rs.GetState() {
		case pb.RoundState_ROUND_STATE_OPEN:
			if rs.GetHaveUpdate() {
				continue
			}
			if p.Acked {
				a.mu.Lock()
				a.stats.UpdatesResent++
				a.mu.Unlock()
				a.log.Info("coordinator lacks an acknowledged update; sending it again", "job", p.Job, "round", p.Round)
			}
			if off := rs.GetHaveBytes(); off > 0 && off <= uint64(len(p.Delta)) {
				a.mu.Lock()
				a.stats.UploadsResumed++
				a.mu.Unlock()
				a.log.Info("resuming an interrupted upload", "job", p.Job, "round", p.Round, "from_byte", off, "of", len(p.Delta))
				if err := a.sendFrom(ctx, s, p, off); err != nil {
					return err
				}
				continue
			}
			if err := a.send(ctx, s, p); err != nil {
				return err
			}
		default:
			// Committed, failed or unknown: the update is no longer needed.
			a.dropOutbox(p)
		}
	}
	return nil
}

// send uploads p and records the Ack. A refusal drops the update.
func (a *Agent) send(ctx context.Context, s *session, p *pending) error {
	return a.sendFrom(ctx, s, p, 0)
}

// sendFrom is send for an upload the coordinator holds offset bytes of.
func (a *Agent) sendFrom(ctx context.Context, s *session, p *pending, offset uint64) error {
	err := a.upload(ctx, s, p, offset)
	var re *protocol.RemoteError
	switch {
	case err == nil:
		p.Acked = true
		a.mu.Lock()
		a.stats.UpdatesAcked++
		a.mu.Unlock()
		a.writeStatus()
		return a.saveOutbox(p)
	case errors.As(err, &re) && re.Code != pb.ErrorCode_ERROR_CODE_UNAVAILABLE && re.Code != pb.ErrorCode_ERROR_CODE_INTERNAL:
		a.log.Warn("coordinator refused an update; dropping it", "job", p.Job, "round", p.Round, "code", re.Code.String())
		a.dropOutbox(p)
		return nil
	default:
		return err
	}
}

// runTask answers one offer: statistics, an evaluation of a model (see
// runEvaluate), or a training round whose update it sends (or, when the
// round is securely aggregated, masks in a protocol run: see startSecAgg).
// A site that cannot or may not take part declines with a code.
func (a *Agent) runTask(ctx context.Context, s *session, offer *pb.TaskOffer) error {
	switch offer.GetKind() {
	case pb.TaskKind_TASK_KIND_STATS:
		return a.runStats(s, offer)
	case pb.TaskKind_TASK_KIND_EVALUATE:
		return a.runEvaluate(ctx, s, offer)
	}
	// Decline a model this agent cannot train before downloading it.
	if k := offer.GetModelSpec().GetKind(); k != "logreg" && k != "mlp" {
		return a.decline(s, offer, fmt.Errorf("%w: %q", ErrUnsupportedModel, k))
	}
	if size, n := offer.GetModel().GetSize(), offer.GetModelSpec().GetNumParams(); size != 4*uint64(n) || size > maxModelBytes {
		return a.decline(s, offer, fmt.Errorf("%w: a model blob of %d bytes for %d parameters (at most %d bytes)", ErrUnsupportedModel, size, n, maxModelBytes))
	}
	// Likewise secure aggregation parameters this site cannot run.
	var sa *secagg.Client
	if offer.GetSecagg() != nil {
		var err error
		if sa, err = a.newSecAggClient(offer); err != nil {
			return a.decline(s, offer, err)
		}
	}
	ref := offer.GetModel()
	body, err := a.download(ctx, s, offer.GetJobId(), ref)
	if err != nil {
		return err
	}
	global, err := protocol.DecodeF32(body)
	if err != nil {
		return fmt.Errorf("%w: global model: %w", errLocal, err)
	}
	release := func() {}
	if a.cfg.TrainGate != nil {
		if release, err = a.cfg.TrainGate(ctx); err != nil {
			return err
		}
	}
	p, err := a.trainRound(ctx, offer, global)
	release()
	if err != nil {
		return a.decline(s, offer, err)
	}
	if a.cfg.Adversary != nil {
		d, err := protocol.DecodeF32(p.Delta)
		if err != nil {
			return fmt.Errorf("%w: %w", errLocal, err)
		}
		a.cfg.Adversary(offer.GetJobId(), offer.GetRound(), d)
		p.Delta = protocol.EncodeF32(d)
	}
	if a.cfg.Straggle != nil {
		if d := a.cfg.Straggle(offer.GetJobId(), offer.GetRound()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
	if sa != nil {
		// The update goes into the secure aggregation run, never into
		// the outbox: the coordinator must not see it on its own.
		return a.startSecAgg(ctx, s, offer, sa, p)
	}
	p.Base = ref.GetSha256()
	if err := a.saveOutbox(p); err != nil {
		return fmt.Errorf("%w: %w", errLocal, err)
	}
	a.mu.Lock()
	a.stats.RoundsTrained++
	a.mu.Unlock()
	return a.send(ctx, s, p)
}

// NewTrainer builds the model an offer names, for a feature matrix of
// cols columns.
func NewTrainer(ms *pb.ModelSpec, cols int) (train.Trainer, error) {
	switch ms.GetKind() {
	case "logreg":
		return train.NewLogReg(cols)
	case "mlp":
		hidden := make([]int, len(ms.GetHidden()))
		for i, h := range ms.GetHidden() {
			hidden[i] = int(h)
		}
		return train.NewMLP(cols, train.MLPConfig{Hidden: hidden, Activation: ms.GetActivation(), Dropout: ms.GetDropout()})
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedModel, ms.GetKind())
}

// TrainOptions are the local training options an offer's parameters ask
// for.
func TrainOptions(p *pb.TrainParams) train.Options {
	return train.Options{
		Epochs: int(p.GetLocalEpochs()), LearningRate: float64(p.GetLearningRate()),
		BatchSize: int(p.GetBatchSize()), Seed: p.GetSeed(),
		Optimizer: p.GetOptimizer(), AdamBeta1: p.GetAdamBeta1(), AdamBeta2: p.GetAdamBeta2(), AdamEps: p.GetAdamEps(),
		PosWeight: p.GetPosWeight(), ProxMu: p.GetProxMu(),
	}
}

// trainRound builds the offer's features from the local store, trains from
// global and returns the update (not yet sent).
func (a *Agent) trainRound(ctx context.Context, offer *pb.TaskOffer, global []float32) (*pending, error) {
	spec := offer.GetFeatures()
	if err := features.ValidateSpec(spec); err != nil {
		return nil, fmt.Errorf("job feature spec: %w", err)
	}
	ms := offer.GetModelSpec()
	if int(ms.GetNumFeatures()) != len(spec.GetFeatures()) || len(global) != int(ms.GetNumParams()) {
		return nil, fmt.Errorf("model spec %q with %d features and %d params does not fit the feature spec (%d features) and global model (%d params)",
			ms.GetKind(), ms.GetNumFeatures(), ms.GetNumParams(), len(spec.GetFeatures()), len(global))
	}
	ds, err := a.dataset(spec)
	if err != nil {
		return nil, err
	}
	params := offer.GetParams()
	tr, val := features.Split(ds, params.GetValidationFraction(), offer.GetJobId())
	if minN := a.minCohort(params.GetMinRecords()); tr.Rows < minN || tr.Rows == 0 {
		return nil, fmt.Errorf("%w: %d training records, the job needs at least %d", ErrTooFewRecords, tr.Rows, minN)
	}
	model, err := NewTrainer(ms, ds.Cols)
	if err != nil {
		return nil, err
	}
	if err := model.SetWeights(global); err != nil {
		return nil, err
	}
	loss, err := model.Train(ctx, tr.X, tr.Y, tr.Rows, TrainOptions(params))
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	w := model.Weights()
	delta := make([]float32, len(w))
	for i := range w {
		delta[i] = w[i] - global[i]
	}
	p := &pending{Job: offer.GetJobId(), Round: offer.GetRound(), Samples: uint64(tr.Rows), Delta: protocol.EncodeF32(delta)}
	p.M[0] = loss
	if val.Rows > 0 {
		scores, err := model.Predict(val.X, val.Rows)
		if err != nil {
			return nil, fmt.Errorf("validate: %w", err)
		}
		if auc, err := train.AUROC(scores, val.Y); err == nil {
			p.M[1] = auc
		}
		p.M[2] = train.Accuracy(scores, val.Y, 0.5)
		p.M[3] = float64(val.Rows)
	}
	return p, nil
}

// minCohort is the smallest cohort this site computes on for a job: the
// job's minimum or the site's own floor, whichever is larger.
func (a *Agent) minCohort(job uint32) int {
	k := a.cfg.MinCohort
	if k == 0 {
		k = 20
	}
	return max(int(job), k)
}

// decline tells the coordinator this site will not take part in the
// offer's round, with a reason code only, and returns the local error.
func (a *Agent) decline(s *session, offer *pb.TaskOffer, cause error) error {
	reason := declineReason(cause)
	a.log.Warn("declining a round", "job", offer.GetJobId(), "round", offer.GetRound(), "reason", reason.String(), "err", cause)
	a.mu.Lock()
	if a.stats.Declined == nil {
		a.stats.Declined = map[string]int{}
	}
	a.stats.Declined[strings.ToLower(strings.TrimPrefix(reason.String(), "DECLINE_REASON_"))]++
	a.mu.Unlock()
	if _, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_Decline{Decline: &pb.Decline{
		JobId: offer.GetJobId(), Round: offer.GetRound(), Reason: reason}}}); err != nil {
		return err
	}
	return fmt.Errorf("%w: %w", errLocal, cause)
}

// declineReason is the code a decline for cause carries: too few records,
// a model kind this agent does not know, or else the offer's spec.
func declineReason(cause error) pb.DeclineReason {
	switch {
	case errors.Is(cause, ErrTooFewRecords):
		return pb.DeclineReason_DECLINE_REASON_TOO_FEW_RECORDS
	case errors.Is(cause, ErrUnsupportedModel):
		return pb.DeclineReason_DECLINE_REASON_MODEL
	}
	return pb.DeclineReason_DECLINE_REASON_SPEC
}

// runStats answers a statistics offer with each feature's count, sum and
// sum of squares over the eligible cohort. Below the job's minimum cohort
// it declines; a feature observed in fewer patients than the minimum is
// sent as empty (count 0), so no small group's values can be inferred. An
// analytics job's offer also asks for histograms: a bin holding fewer
// patients than the minimum is sent as 0 (suppressed), and when that is a
// single bin, so is the smallest other one (sdc.Suppress: the feature's
// count minus the other bins would give it away).
func (a *Agent) runStats(s *session, offer *pb.TaskOffer) error {
	minN := a.minCohort(offer.GetParams().GetMinRecords())
	patients, err := a.patients()
	if err != nil {
		return fmt.Errorf("%w: %w", errLocal, err)
	}
	var edges [][]float64
	for _, h := range offer.GetAnalytics().GetHistograms() {
		edges = append(edges, h.GetEdges())
	}
	n, stats, err := features.Histograms(offer.GetFeatures(), patients, edges, offer.GetAnalytics().GetClip())
	if err != nil {
		return a.decline(s, offer, err)
	}
	if n < minN || n == 0 {
		return a.decline(s, offer, fmt.Errorf("%w: %d eligible records, the job needs at least %d", ErrTooFewRecords, n, minN))
	}
	up := &pb.StatsUpload{JobId: offer.GetJobId(), Round: offer.GetRound(), CohortSize: uint64(n)}
	for _, fs := range stats {
		k := uint64(max(minN, 1))
		if fs.Count < k {
			fs = features.FeatureStats{Bins: make([]uint64, len(fs.Bins))}
		}
		for i, withhold := range sdc.Suppress(fs.Bins, k) {
			if withhold {
				fs.Bins[i] = 0
			}
		}
		up.Stats = append(up.Stats, &pb.FeatureStats{Count: fs.Count, Sum: fs.Sum, SumSq: fs.SumSq, Bins: fs.Bins})
	}
	resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_StatsUpload{StatsUpload: up}})
	if err != nil {
		var re *protocol.RemoteError
		if errors.As(err, &re) {
			a.log.Warn("coordinator refused this site's statistics", "job", offer.GetJobId(), "code", re.Code.String())
			return fmt.Errorf("%w: %w", errLocal, err)
		}
		return err
	}
	if resp.GetAck() == nil {
		return fmt.Errorf("statistics answer: %w", protocol.ErrUnexpected)
	}
	a.log.Info("sent feature statistics", "job", offer.GetJobId(), "cohort", n)
	return nil
}

// patients reads every patient from the store.
func (a *Agent) patients() ([]fhir.PatientData, error) {
	var out []fhir.PatientData
	if err := a.st.ForEachPatient(func(pd fhir.PatientData) error {
		out = append(out, pd)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read store: %w", err)
	}
	return out, nil
}

// dataset builds spec's features from the store, reusing the last build
// when neither the spec nor the store's contents changed since (rounds of
// one job share a spec; decrypting a large store every round is waste).
func (a *Agent) dataset(spec *pb.FeatureSpec) (*features.Dataset, error) {
	key, err := proto.MarshalOptions{Deterministic: true}.Marshal(spec)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	c := a.cache
	gen := a.storeGen
	a.mu.Unlock()
	if c != nil && c.gen == gen && bytes.Equal(c.spec, key) {
		return c.ds, nil
	}
	patients, err := a.patients()
	if err != nil {
		return nil, err
	}
	ds, err := features.Build(spec, patients)
	if err != nil {
		return nil, fmt.Errorf("features: %w", err)
	}
	a.mu.Lock()
	a.cache = &datasetCache{spec: key, gen: gen, ds: ds}
	a.mu.Unlock()
	return ds, nil
}

// datasetCache is the last dataset built, for one spec and store state.
type datasetCache struct {
	spec []byte
	gen  uint64
	ds   *features.Dataset
}
