package coordinator

import (
	"testing"

	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// TestSamplingAndStragglers: a job that asks one site per round offers the
// round to that site only; an update from a site it did not ask, and one
// that arrives after its round closed, are refused and counted, and never
// reach an aggregate.
func TestSamplingAndStragglers(t *testing.T) {
	sites := []string{"a-site", "b-site", "c-site"}
	job := testJob("j1", 2, 1)
	job.Sampling = Sampling{Count: 1}
	tc := startCluster(t, 1, sites, []JobSpec{job})
	leader, _ := tc.leader(t)
	agents := map[string]*rawAgent{}
	for _, s := range sites {
		a, err := dialRaw(t, leader.AgentAddr(), tc.ca.issue(t, pki.RoleSite, s))
		if err != nil {
			t.Fatal(err)
		}
		a.call(t, hello())
		agents[s] = a
	}
	var r *Round
	waitFor(t, leader, "round 1 to open", func() bool {
		j, _ := leader.Job("j1")
		r = j.Current
		return r != nil
	})
	if len(r.Selected) != 1 {
		t.Fatalf("round 1 asks %v, want one site", r.Selected)
	}
	asked := r.Selected[0]
	var other string
	for _, s := range sites {
		if s != asked {
			other = s
			break
		}
	}
	// The site not asked gets no offer, and its update is refused.
	if resp := agents[other].call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 200}}}); resp.GetNoTask() == nil {
		t.Fatalf("a site the round did not ask got %v", resp)
	}
	offer := agents[asked].call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 10000}}}).GetTaskOffer()
	if offer.GetRound() != 1 {
		t.Fatalf("the asked site got %v", offer)
	}
	download(t, agents[asked], offer)
	if resp := upload(t, agents[other], offer, []float32{9, 9, 9, 9}, 5); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_ROUND_CLOSED {
		t.Fatalf("an update from a site not asked answered %v", resp)
	}
	if got := leader.Stats().UpdatesNotAsked.Load(); got != 1 {
		t.Fatalf("updates not asked = %d", got)
	}
	if resp := upload(t, agents[asked], offer, []float32{1, 1, 1, 1}, 5); resp.GetAck() == nil {
		t.Fatalf("the asked site's update answered %v", resp)
	}
	waitFor(t, leader, "round 1 to commit", func() bool {
		j, _ := leader.Job("j1")
		return j.CommittedRounds() == 1
	})
	// A straggler: an update for round 1, now closed.
	if resp := upload(t, agents[other], offer, []float32{2, 2, 2, 2}, 5); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_ROUND_CLOSED {
		t.Fatalf("a late update answered %v", resp)
	}
	if got := leader.Stats().UpdatesLate.Load(); got != 1 {
		t.Fatalf("late updates = %d", got)
	}
	var j *Job
	waitFor(t, leader, "round 2 to open", func() bool {
		j, _ = leader.Job("j1")
		return j.Current != nil
	})
	if c := j.Rounds[0].Contributors; len(c) != 1 || c[0] != asked {
		t.Fatalf("round 1 aggregated %v, want only %s", c, asked)
	}
	if len(j.Current.Selected) != 1 {
		t.Fatalf("round 2 asks %v", j.Current.Selected)
	}
}

func TestSamplingValidation(t *testing.T) {
	for _, c := range []struct {
		s    Sampling
		min  int
		fail bool
	}{
		{Sampling{}, 1, false},
		{Sampling{Fraction: 0.5}, 1, false},
		{Sampling{Count: 3}, 2, false},
		{Sampling{Count: 1}, 2, true},
		{Sampling{Fraction: 1.5}, 1, true},
		{Sampling{Fraction: 0.5, Count: 2}, 1, true},
		{Sampling{Count: -1}, 1, true},
	} {
		j := testJob("j", 1, c.min)
		j.Sampling = c.s
		if err := j.Validate(0); (err != nil) != c.fail {
			t.Errorf("%+v with min_sites %d: %v", c.s, c.min, err)
		}
	}
	if got := (Sampling{Fraction: 0.3}).size(10); got != 3 {
		t.Errorf("fraction 0.3 of 10 = %d", got)
	}
	if got := (Sampling{Fraction: 0.25}).size(10); got != 3 {
		t.Errorf("fraction 0.25 of 10 = %d, want 3 (rounded up)", got)
	}
}
