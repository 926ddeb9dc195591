package agent

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
)

// TestOversizedModelOfferIsDeclined: training offers whose model blob is
// not the size of the model they name (2^62 bytes), or is larger than the
// largest model an agent builds, are declined with reason "model" before
// the model is asked for or anything is allocated, and counted.
func TestOversizedModelOfferIsDeclined(t *testing.T) {
	p := newTestPKI(t)
	spec := synth.DefaultFeatureSpec()
	nf := uint32(len(spec.GetFeatures()))
	offer := func(job string, size uint64, params uint32) *pb.TaskOffer {
		return &pb.TaskOffer{JobId: job, Round: 1, Kind: pb.TaskKind_TASK_KIND_TRAIN,
			Model:     &pb.BlobRef{Sha256: strings.Repeat("ab", 32), Size: size, Encoding: pb.Encoding_ENCODING_F32LE},
			ModelSpec: &pb.ModelSpec{Kind: "logreg", NumFeatures: nf, NumParams: params},
			Params:    &pb.TrainParams{LocalEpochs: 1, LearningRate: 0.1, MinRecords: 20}, Features: spec}
	}
	var (
		mu       sync.Mutex
		offers   = []*pb.TaskOffer{offer("size-lie", 1<<62, nf+1), offer("too-large", 4*(1<<32-1), 1<<32-1)}
		declines []*pb.Decline
		asked    int
	)
	handle := func(env *pb.Envelope) *pb.Envelope {
		mu.Lock()
		defer mu.Unlock()
		switch b := env.GetBody().(type) {
		case *pb.Envelope_TaskRequest:
			if len(offers) == 0 {
				return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
			}
			o := offers[0]
			offers = offers[1:]
			return &pb.Envelope{Body: &pb.Envelope_TaskOffer{TaskOffer: o}}
		case *pb.Envelope_Decline:
			declines = append(declines, b.Decline)
			return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: b.Decline.GetJobId(), Round: 1}}}
		case *pb.Envelope_RoundStatusRequest:
			return &pb.Envelope{Body: &pb.Envelope_RoundStatus{RoundStatus: &pb.RoundStatus{State: pb.RoundState_ROUND_STATE_COMMITTED}}}
		case *pb.Envelope_ModelRequest:
			asked++
			return protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no model")
		case *pb.Envelope_DeploymentRequest:
			return protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no production version")
		}
		return nil
	}
	c := &scriptedCoordinator{t: t, handle: handle, done: make(chan struct{})}
	a, _, _ := startDeployAgent(t, c, p, filepath.Join(t.TempDir(), "agent"))
	waitUntil(t, "both offers to be declined", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(declines) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	for _, d := range declines {
		if d.GetReason() != pb.DeclineReason_DECLINE_REASON_MODEL {
			t.Errorf("job %s declined with %s, want MODEL", d.GetJobId(), d.GetReason())
		}
	}
	if asked > 0 {
		t.Errorf("the agent asked for an oversized model %d times", asked)
	}
	if got := agentMetric(handlerMetrics(t, a), "cohort_agent_rounds_declined_total", "reason", "model"); got != 2 || a.Stats().Declined["model"] != 2 {
		t.Errorf("declines counted: metric %v, stats %v; want 2", got, a.Stats().Declined)
	}
}
