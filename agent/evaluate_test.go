package agent

import (
	"crypto/sha256"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/train"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
)

// evalWeights is a known logistic regression model over
// synth.DefaultFeatureSpec's nine standardized features, then its bias.
var evalWeights = []float32{0.6, -0.1, 0.55, 0.55, -0.4, 0, 0.3, -0.5, 0.15, -2.5}

// evalOffer is an evaluation of the model blob model, trained by job
// "sepsis" with validation fraction 0.3, in 10 bins of minimum cell 12.
func evalOffer(model []byte) *pb.TaskOffer {
	spec := synth.DefaultFeatureSpec()
	nf := len(spec.GetFeatures())
	return &pb.TaskOffer{
		JobId: "sepsis-eval", Round: 0, Kind: pb.TaskKind_TASK_KIND_EVALUATE,
		Model:     &pb.BlobRef{Sha256: protocol.Digest(model), Size: uint64(len(model)), Encoding: pb.Encoding_ENCODING_F32LE},
		ModelSpec: &pb.ModelSpec{Kind: "logreg", NumFeatures: uint32(nf), NumParams: uint32(nf + 1)},
		Params:    &pb.TrainParams{ValidationFraction: 0.3, MinRecords: 20},
		Features:  spec,
		Eval:      &pb.EvalParams{SplitSalt: "sepsis", Bins: 10, MinCell: 12},
	}
}

// TestCalibrationBinsSuppression: a bin of fewer records than the minimum
// cell, but not none, leaves with zero counts and marked suppressed; an
// empty bin and a bin at the minimum leave as they are.
func TestCalibrationBinsSuppression(t *testing.T) {
	table := []train.CalibrationBin{{}, {Count: 1, Positives: 1, SumScores: 0.15}, {Count: 19, Positives: 3, SumScores: 4.5},
		{Count: 20, Positives: 4, SumScores: 7}, {Count: 31, Positives: 30, SumScores: 29.5}}
	got := calibrationBins(table, 20)
	want := []*pb.CalibrationBin{{}, {Suppressed: true}, {Suppressed: true},
		{Count: 20, Positives: 4, SumPredicted: 7}, {Count: 31, Positives: 30, SumPredicted: 29.5}}
	if len(got) != len(want) {
		t.Fatalf("%d bins, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.GetCount() != w.GetCount() || g.GetPositives() != w.GetPositives() || g.GetSumPredicted() != w.GetSumPredicted() || g.GetSuppressed() != w.GetSuppressed() {
			t.Errorf("bin %d = %v, want %v", i, g, w)
		}
	}
}

// TestCalibrationBinsComplementarySuppression: a lone suppressed bin
// could be recovered from the totals, so the smallest other non-empty bin
// is suppressed with it.
func TestCalibrationBinsComplementarySuppression(t *testing.T) {
	table := []train.CalibrationBin{{Count: 5, Positives: 1, SumScores: 0.3}, {Count: 40, Positives: 4, SumScores: 8},
		{Count: 25, Positives: 10, SumScores: 12}, {}}
	got := calibrationBins(table, 20)
	for i, want := range []bool{true, false, true, false} {
		if got[i].GetSuppressed() != want || want && got[i].GetCount() != 0 {
			t.Errorf("bin %d = %v, want suppressed %v", i, got[i], want)
		}
	}
	if got[1].GetCount() != 40 {
		t.Errorf("the largest bin = %v", got[1])
	}
}

// TestMinCellFloor: an evaluation cannot report bins below the site's own
// floor k; it can ask for a larger minimum cell.
func TestMinCellFloor(t *testing.T) {
	for _, c := range []struct {
		floor int
		cell  uint32
		want  int
	}{
		{0, 0, 20}, {0, 5, 20}, {0, 50, 50}, {10, 5, 10}, {10, 12, 12}, {100, 20, 100},
	} {
		a := &Agent{cfg: Config{MinCohort: c.floor}}
		if got := a.minCell(&pb.EvalParams{MinCell: c.cell}); got != c.want {
			t.Errorf("site floor %d, minimum cell %d: %d, want %d", c.floor, c.cell, got, c.want)
		}
	}
}

// TestEvalModelRefusesBadOffers: an evaluation offer that does not hold
// together is refused before its model is downloaded, with an error that
// declines it for its spec (or, for an unknown model kind, the model).
func TestEvalModelRefusesBadOffers(t *testing.T) {
	model := protocol.EncodeF32(evalWeights)
	if _, err := evalModel(evalOffer(model)); err != nil {
		t.Fatalf("the good offer: %v", err)
	}
	cases := []struct {
		name   string
		change func(o *pb.TaskOffer)
		reason pb.DeclineReason
	}{
		{"no evaluation parameters", func(o *pb.TaskOffer) { o.Eval = nil }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"no bins", func(o *pb.TaskOffer) { o.Eval.Bins = 0 }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"too many bins", func(o *pb.TaskOffer) { o.Eval.Bins = egress.MaxCalibrationBins + 1 }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"no split salt", func(o *pb.TaskOffer) { o.Eval.SplitSalt = "" }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"nothing held out", func(o *pb.TaskOffer) { o.Params.ValidationFraction = 0 }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"NaN validation fraction", func(o *pb.TaskOffer) { o.Params.ValidationFraction = math.NaN() }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"no feature spec", func(o *pb.TaskOffer) { o.Features = nil }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"model for other features", func(o *pb.TaskOffer) { o.ModelSpec.NumFeatures++ }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"model spec with other parameters", func(o *pb.TaskOffer) { o.ModelSpec.NumParams++ }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"model blob of another size", func(o *pb.TaskOffer) { o.Model.Size += 4 }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"model blob not f32le", func(o *pb.TaskOffer) { o.Model.Encoding = pb.Encoding_ENCODING_UNSPECIFIED }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"model digest is text", func(o *pb.TaskOffer) { o.Model.Sha256 = "MRN-0012345" }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"invalid mlp", func(o *pb.TaskOffer) { o.ModelSpec.Kind, o.ModelSpec.Hidden = "mlp", nil }, pb.DeclineReason_DECLINE_REASON_SPEC},
		{"unknown model kind", func(o *pb.TaskOffer) { o.ModelSpec.Kind = "forest" }, pb.DeclineReason_DECLINE_REASON_MODEL},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			o := evalOffer(model)
			tt.change(o)
			_, err := evalModel(o)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := declineReason(err); got != tt.reason {
				t.Errorf("declined with %s (%v), want %s", got, err, tt.reason)
			}
		})
	}
}

// TestEvaluateRefusesBadModels: a downloaded model that does not decode
// into the offer's model is refused (declined for its spec) before any
// record is read.
func TestEvaluateRefusesBadModels(t *testing.T) {
	good := protocol.EncodeF32(evalWeights)
	nan := protocol.EncodeF32(evalWeights)
	copy(nan[8:], []byte{0, 0, 0xc0, 0x7f})
	for _, tt := range []struct {
		name string
		body []byte
	}{
		{"not finite", nan},
		{"odd length", good[:len(good)-1]},
		{"too few weights", good[:len(good)-4]},
		{"too many weights", append(good[:len(good):len(good)], 0, 0, 0, 0)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := evalOffer(good)
			model, err := evalModel(o)
			if err != nil {
				t.Fatal(err)
			}
			// The zero Agent has no store: reading records would panic.
			_, err = (&Agent{}).evaluate(o, model, tt.body)
			if !errors.Is(err, errEvalOffer) || declineReason(err) != pb.DeclineReason_DECLINE_REASON_SPEC {
				t.Fatalf("evaluate = %v, want a SPEC refusal", err)
			}
		})
	}
}

// evalScript answers, on a scriptedCoordinator, what an evaluation needs
// beyond the script: it keeps the site's first evaluation or decline and
// acknowledges each, and once it has one offers the site nothing more and
// reports the round over. doneC is closed when the site, done with its
// answer, asks for work again.
type evalScript struct {
	mu      sync.Mutex
	eval    *pb.EvalUpload
	decline *pb.Decline
	answers int // evaluations and declines received
	done    bool
	doneC   chan struct{}
}

func (e *evalScript) handle(env *pb.Envelope) *pb.Envelope {
	e.mu.Lock()
	defer e.mu.Unlock()
	answered := e.answers > 0
	switch b := env.GetBody().(type) {
	case *pb.Envelope_EvalUpload:
		if e.answers++; !answered {
			e.eval = b.EvalUpload
		}
		return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: b.EvalUpload.GetJobId(), Round: b.EvalUpload.GetRound()}}}
	case *pb.Envelope_Decline:
		if e.answers++; !answered {
			e.decline = b.Decline
		}
		return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: b.Decline.GetJobId(), Round: b.Decline.GetRound()}}}
	case *pb.Envelope_TaskRequest:
		if answered {
			if !e.done {
				e.done = true
				close(e.doneC)
			}
			return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
		}
	case *pb.Envelope_RoundStatusRequest:
		if answered {
			return &pb.Envelope{Body: &pb.Envelope_RoundStatus{RoundStatus: &pb.RoundStatus{
				JobId: b.RoundStatusRequest.GetJobId(), Round: b.RoundStatusRequest.GetRound(), State: pb.RoundState_ROUND_STATE_COMMITTED}}}
		}
	}
	return nil
}

// TestAgentEvaluatesModel: offered an evaluation over real QUIC, an agent
// downloads the model (resuming the download the script cuts), scores it
// on the rows the training job held out and sends exactly the metrics and
// calibration bins computed here from the same rows; it keeps nothing in
// its outbox and logs the answer as "eval". Too few held-out records, or a
// model that does not decode, are declined instead.
func TestAgentEvaluatesModel(t *testing.T) {
	dir := t.TempDir()
	site := synth.DefaultSites(1, 5)[0]
	site.Patients = 200
	data := filepath.Join(dir, "fhir")
	if _, err := synth.WriteSite(data, site, synth.DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	p := newTestPKI(t)
	coordCert := p.coordinatorCert(t)
	good := protocol.EncodeF32(evalWeights)
	nan := protocol.EncodeF32(evalWeights)
	copy(nan[8:], []byte{0, 0, 0xc0, 0x7f})

	for _, tt := range []struct {
		name       string
		model      []byte
		minRecords uint32
		// decline is the reason expected; unspecified expects an
		// evaluation.
		decline pb.DeclineReason
	}{
		{"evaluates", good, 20, pb.DeclineReason_DECLINE_REASON_UNSPECIFIED},
		{"too few held-out records", good, 1000, pb.DeclineReason_DECLINE_REASON_TOO_FEW_RECORDS},
		{"model does not decode", nan, 20, pb.DeclineReason_DECLINE_REASON_SPEC},
	} {
		t.Run(tt.name, func(t *testing.T) {
			offer := evalOffer(tt.model)
			offer.Params.MinRecords = tt.minRecords
			es := &evalScript{doneC: make(chan struct{})}
			c := &scriptedCoordinator{t: t, model: tt.model, offer: offer, handle: es.handle, done: make(chan struct{})}
			addr := serveScripted(t, c, p.pool, coordCert)

			cfg := DefaultConfig()
			cfg.DataDir = filepath.Join(t.TempDir(), "agent")
			p.enrolled(t, cfg.DataDir, "st-mary", time.Hour, time.Now())
			// A fixed pseudonym key: the held-out split follows the
			// pseudonyms, and the fixture needs both reported and
			// suppressed calibration bins.
			key := sha256.Sum256([]byte("cohort evaluate test"))
			if err := os.WriteFile(filepath.Join(cfg.DataDir, "pseudonym.key"), key[:], 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.Coordinators = []string{addr}
			cfg.FHIRDir = data
			cfg.MinCohort = 10 // the offer's minimum cell, 12, is the larger
			cfg.BackoffMin, cfg.BackoffMax = Duration(50*time.Millisecond), Duration(200*time.Millisecond)
			cfg.PollWait = Duration(time.Second)
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			runUntil(t, a, es.doneC, "an evaluation or a decline")

			es.mu.Lock()
			defer es.mu.Unlock()
			if es.answers != 1 {
				t.Errorf("%d answers to one offer", es.answers)
			}
			if st := a.Stats(); st.RoundsTrained != 0 || st.UpdatesAcked != 0 {
				t.Errorf("stats %+v: an evaluation trained or sent an update", st)
			}
			if ents, err := os.ReadDir(a.outboxDir()); err != nil || len(ents) != 0 {
				t.Errorf("outbox holds %d entries (%v), want none", len(ents), err)
			}
			if tt.decline != pb.DeclineReason_DECLINE_REASON_UNSPECIFIED {
				if es.decline.GetReason() != tt.decline || es.decline.GetJobId() != "sepsis-eval" {
					t.Fatalf("answer: decline %v, evaluation %v; want a decline %s", es.decline, es.eval, tt.decline)
				}
				if n := a.Stats().Evaluations; n != 0 {
					t.Errorf("stats count %d evaluations, want 0", n)
				}
				return
			}
			if es.eval == nil {
				t.Fatalf("declined %v, want an evaluation", es.decline)
			}
			checkEvaluation(t, a, offer, es.eval)
			if n := a.Stats().Evaluations; n != 1 {
				t.Errorf("stats count %d evaluations, want 1", n)
			}
			checkEvalEgress(t, a, es.eval)
		})
	}
}

// checkEvaluation compares got with the evaluation of evalWeights computed
// here, from the agent's own records, split as the training job split them.
func checkEvaluation(t *testing.T, a *Agent, offer *pb.TaskOffer, got *pb.EvalUpload) {
	t.Helper()
	ds, err := a.dataset(offer.GetFeatures())
	if err != nil {
		t.Fatal(err)
	}
	_, val := features.Split(ds, 0.3, "sepsis")
	lr, err := train.NewLogReg(ds.Cols)
	if err != nil {
		t.Fatal(err)
	}
	if err := lr.SetWeights(evalWeights); err != nil {
		t.Fatal(err)
	}
	scores, err := lr.Predict(val.X, val.Rows)
	if err != nil {
		t.Fatal(err)
	}
	var positives uint64
	for _, y := range val.Y {
		positives += uint64(y)
	}
	if positives == 0 || positives == uint64(val.Rows) || val.Rows < 20 {
		t.Fatalf("fixture: %d held-out records, %d positive; want at least 20 of both classes", val.Rows, positives)
	}
	auroc, err := train.AUROC(scores, val.Y)
	if err != nil {
		t.Fatal(err)
	}
	auprc, err := train.AUPRC(scores, val.Y)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetJobId() != "sepsis-eval" || got.GetRound() != 0 || got.GetModelSha256() != offer.GetModel().GetSha256() {
		t.Errorf("evaluation of job %q round %d model %.12s, want the offer's", got.GetJobId(), got.GetRound(), got.GetModelSha256())
	}
	if got.GetCount() != uint64(val.Rows) || got.GetPositives() != positives {
		t.Errorf("%d records, %d positive; the held-out split has %d, %d positive", got.GetCount(), got.GetPositives(), val.Rows, positives)
	}
	for _, m := range []struct {
		name      string
		got, want float64
	}{
		{"AUROC", got.GetAuroc(), auroc},
		{"AUPRC", got.GetAuprc(), auprc},
		{"accuracy", got.GetAccuracy(), train.Accuracy(scores, val.Y, 0.5)},
		{"Brier", got.GetBrier(), train.Brier(scores, val.Y)},
	} {
		if math.Abs(m.got-m.want) > 1e-12 {
			t.Errorf("%s = %v, want %v", m.name, m.got, m.want)
		}
	}

	// Calibration: 10 bins; under the offer's minimum cell of 12 (above
	// the site's floor of 10) a bin is suppressed.
	table, err := train.Calibration(scores, val.Y, 10)
	if err != nil {
		t.Fatal(err)
	}
	bins := got.GetCalibration()
	if len(bins) != 10 {
		t.Fatalf("%d calibration bins, want 10", len(bins))
	}
	// A lone small bin takes the smallest other non-empty bin with it
	// (complementary suppression).
	small, smallest := 0, -1
	for i, w := range table {
		switch {
		case w.Count > 0 && w.Count < 12:
			small++
		case w.Count > 0 && (smallest < 0 || w.Count < table[smallest].Count):
			smallest = i
		}
	}
	var suppressed, reported int
	for i, w := range table {
		b := bins[i]
		switch {
		case w.Count > 0 && w.Count < 12, small == 1 && i == smallest:
			suppressed++
			if !b.GetSuppressed() || b.GetCount() != 0 || b.GetPositives() != 0 || b.GetSumPredicted() != 0 {
				t.Errorf("bin %d of %d records = %v, want it suppressed", i, w.Count, b)
			}
		default:
			if w.Count > 0 {
				reported++
			}
			if b.GetSuppressed() || b.GetCount() != uint64(w.Count) || b.GetPositives() != uint64(w.Positives) || math.Abs(b.GetSumPredicted()-w.SumScores) > 1e-9 {
				t.Errorf("bin %d = %v, want %+v", i, b, w)
			}
		}
	}
	if suppressed == 0 || reported == 0 {
		t.Errorf("fixture: %d bins suppressed and %d reported; the test wants both", suppressed, reported)
	}
}

// checkEvalEgress checks that the evaluation left as one "eval" record of
// its job and round, and no update.
func checkEvalEgress(t *testing.T, a *Agent, up *pb.EvalUpload) {
	t.Helper()
	f, err := os.Open(filepath.Join(a.cfg.DataDir, egress.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, bad, err := egress.ReadLog(f, egress.Filter{})
	if err != nil || len(bad) != 0 {
		t.Fatalf("ReadLog: %v, bad lines %v", err, bad)
	}
	n := map[string]int{}
	for _, r := range recs {
		n[r.Kind]++
		if r.Kind == egress.KindEval && (r.Job != up.GetJobId() || r.Round != up.GetRound()) {
			t.Errorf("eval record %+v, want job %q round %d", r, up.GetJobId(), up.GetRound())
		}
	}
	if n[egress.KindEval] != 1 || n[egress.KindUpdateHeader] != 0 || n[egress.KindUpdateBody] != 0 || n[egress.KindDecline] != 0 {
		t.Errorf("egress records by kind %v, want one eval and no update or decline", n)
	}
}
