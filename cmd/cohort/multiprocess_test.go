package main

import (
	"context"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

// TestMultiProcessFederation runs the real binary as 3 coordinator and 2
// agent processes on loopback, runs a job to completion and shuts
// everything down with SIGTERM.
func TestMultiProcessFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as five processes")
	}
	job := coordinator.JobSpec{ID: "mp-job", Rounds: 3, MinSites: 2, RoundTimeout: coordinator.Duration(time.Minute)}
	c := newCluster(t, 3, 2, job)
	c.startAll()

	// Wait for the job to finish, reading any node's status endpoint.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := waitJobDone(ctx, t, "http://"+c.nodes[2].status+"/v1/status", job.ID)
	js := st.Jobs[0]
	if js.State != coordinator.JobDone || js.CommittedRounds != 3 {
		t.Fatalf("job ended %s with %d rounds: %+v", js.State, js.CommittedRounds, js)
	}
	for _, r := range js.History {
		if r.State == coordinator.RoundCommitted && len(r.Contributors) != len(c.sites) {
			t.Errorf("round %d aggregated %v, want both sites", r.Round, r.Contributors)
		}
	}

	for _, a := range c.agents {
		a.proc.stop(t)
	}
	for _, n := range c.nodes {
		n.proc.stop(t)
	}
}
