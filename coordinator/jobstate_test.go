package coordinator

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPauseResumeCancel: pausing lets the open round finish and opens no
// other; resuming opens the next; cancelling fails the open round and
// ends the job; transitions that make no sense are refused (409).
func TestPauseResumeCancel(t *testing.T) {
	tc := startCluster(t, 1, []string{"st-a"}, []JobSpec{testJob("j1", 5, 1)})
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()
	a := tc.welcomed(t, leader, "st-a")
	offer := a.task(t, 10*time.Second)
	if offer.GetRound() != 1 {
		t.Fatalf("offer %v", offer)
	}
	var js JobStatus
	if code, raw := tc.api(t, "POST", addr, "/v1/jobs/j1/pause", nil, &js); code != http.StatusOK || js.State != JobPaused {
		t.Fatalf("pause: %d %s", code, raw)
	}
	if code, _ := tc.api(t, "POST", addr, "/v1/jobs/j1/pause", nil, nil); code != http.StatusConflict {
		t.Errorf("pausing a paused job: %d, want 409", code)
	}
	// The open round still takes the update and commits.
	download(t, a, offer)
	if resp := upload(t, a, offer, []float32{1, 1, 1, 1}, 5); resp.GetAck() == nil {
		t.Fatalf("upload to a paused job's open round: %v", resp)
	}
	waitFor(t, leader, "round 1 committed", func() bool {
		j, _ := leader.Job("j1")
		return j.CommittedRounds() == 1
	})
	for range 5 {
		leader.step() // the engine, as its ticks would run it
	}
	j, _ := leader.Job("j1")
	if j.Current != nil || len(j.Rounds) != 1 || j.State != JobPaused {
		t.Fatalf("a paused job opened round %v (state %s)", j.Current, j.State)
	}
	if code, raw := tc.api(t, "POST", addr, "/v1/jobs/j1/resume", nil, &js); code != http.StatusOK || js.State != JobRunning {
		t.Fatalf("resume: %d %s", code, raw)
	}
	waitFor(t, leader, "round 2 open", func() bool {
		j, _ := leader.Job("j1")
		return j.Current != nil && j.Current.Number == 2
	})
	if code, raw := tc.api(t, "POST", addr, "/v1/jobs/j1/cancel", nil, &js); code != http.StatusOK || js.State != JobCancelled {
		t.Fatalf("cancel: %d %s", code, raw)
	}
	j, _ = leader.Job("j1")
	if last := j.Rounds[len(j.Rounds)-1]; last.State != RoundFailed || last.FailReason != "job cancelled" || j.Current != nil {
		t.Fatalf("the open round after cancel: %+v", last)
	}
	for _, action := range []string{"pause", "resume", "cancel"} {
		if code, _ := tc.api(t, "POST", addr, "/v1/jobs/j1/"+action, nil, nil); code != http.StatusConflict {
			t.Errorf("%s a cancelled job: %d, want 409", action, code)
		}
	}
	if code, _ := tc.api(t, "POST", addr, "/v1/jobs/nowhere/pause", nil, nil); code != http.StatusNotFound {
		t.Errorf("pause an unknown job: %d, want 404", code)
	}
}

// TestJobBelowMinimumCohortIsRefused: a job asking sites for cohorts
// smaller than the federation's k is refused, through the API and in a
// node's config.
func TestJobBelowMinimumCohortIsRefused(t *testing.T) {
	tc := startCluster(t, 1, nil, nil)
	leader, _ := tc.leader(t)
	spec := testJob("small", 1, 1)
	spec.Train.MinRecords = 5
	code, raw := tc.api(t, "POST", leader.AdminAddr(), "/v1/jobs", spec, nil)
	if code != http.StatusBadRequest || !strings.Contains(raw, "minimum cohort of 20") {
		t.Fatalf("a job with min_records 5: %d %s", code, raw)
	}
	cfg := tc.cfgs[0]
	cfg.Jobs = []JobSpec{spec}
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "minimum cohort") {
		t.Fatalf("config with such a job: %v", err)
	}
	cfg.MinCohort = 5
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with min_cohort 5: %v", err)
	}
}
