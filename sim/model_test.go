package sim

import (
	"testing"

	"github.com/cohort-fl/cohort/coordinator"
)

// A job whose model the agents cannot train yet (an MLP: the coordinator
// stores and aggregates it, site training of it is not built) is declined
// by every site with the reason "model", before any download, and the job
// fails with that said, instead of hanging until its deadlines.
func TestAgentsDeclineAModelTheyCannotTrain(t *testing.T) {
	job := smallJob(1, 2)
	job.MaxAttempts = 1
	job.Model.Kind, job.Model.Hidden = "mlp", []int{8}
	fed, _ := smallFederation(t, 2, 2, job)
	var j *coordinator.Job
	eventually(t, "the job to fail", func() bool {
		var ok bool
		j, ok = fed.nodes[0].Job("j")
		return ok && j.State == coordinator.JobFailed
	})
	r := j.Rounds[len(j.Rounds)-1]
	if len(r.Declines) != 2 {
		t.Fatalf("declines = %v, want both sites", r.Declines)
	}
	for site, reason := range r.Declines {
		if reason != "model" {
			t.Errorf("site %s declined with %q, want \"model\"", site, reason)
		}
	}
	for _, n := range fed.nodes {
		if got := n.Stats().BytesSent.Load(); got != 0 {
			t.Errorf("%s sent %d model bytes; the agents should decline before downloading", n.ID(), got)
		}
	}
}
