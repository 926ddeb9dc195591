package sim

import (
	"context"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol"
)

// A job that trains a multilayer perceptron with Adam runs end to end:
// the coordinator starts it from a seeded random initialization (not
// zeros), every site trains it, and every round commits from both sites.
func TestMLPJobTrainsEndToEnd(t *testing.T) {
	job := smallJob(3, 2)
	job.Model.Kind, job.Model.Hidden = "mlp", []int{16, 8}
	job.Train.Optimizer, job.Train.LearningRate = "adam", 0.01
	fed, _ := smallFederation(t, 2, 2, job)
	var j *coordinator.Job
	eventually(t, "the job to finish", func() bool {
		var ok bool
		j, ok = fed.nodes[0].Job("j")
		return ok && j.State != coordinator.JobRunning
	})
	if j.State != coordinator.JobDone {
		t.Fatalf("job %s: %s", j.State, j.FailReason)
	}
	for _, r := range j.Rounds {
		if r.State != coordinator.RoundCommitted || len(r.Contributors) != 2 {
			t.Fatalf("round %d attempt %d: %s from %v", r.Number, r.Attempt, r.State, r.Contributors)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := fed.nodes[0].ModelWeights(ctx, j.Models[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := protocol.DecodeF32(b)
	nonzero := 0
	for _, x := range w {
		if x != 0 {
			nonzero++
		}
	}
	if len(w) != job.Model.NumParams() || nonzero < len(w)/2 {
		t.Fatalf("initial MLP model: %d weights, %d non-zero; want %d, mostly non-zero", len(w), nonzero, job.Model.NumParams())
	}
}
