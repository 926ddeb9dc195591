package coordinator

import (
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pb"
)

// TestRetrain: a done job with a retrain schedule starts its next run
// (JOB-r1) from its last model once the period passed, and only once; a
// job that retrains on drift starts one when a site reports an index at
// its threshold, not below.
func TestRetrain(t *testing.T) {
	var clk fakeClock
	sched := testJob("sched", 1, 1)
	sched.Retrain = &RetrainSpec{Every: Duration(time.Hour)}
	drift := testJob("drift", 1, 1)
	drift.Retrain = &RetrainSpec{DriftPSI: 0.25}
	tc := startClusterWith(t, 1, []string{"st-a"}, []JobSpec{drift, sched}, func(c *Config) { c.Now = clk.now })
	leader, _ := tc.leader(t)
	a := tc.welcomed(t, leader, "st-a")
	for range 2 { // one round of each job
		offer := a.task(t, 5*time.Second)
		download(t, a, offer)
		if resp := upload(t, a, offer, []float32{0.1, 0.1, 0.1, 0.1}, 30); resp.GetAck() == nil {
			t.Fatalf("upload: %v", resp)
		}
	}
	waitFor(t, leader, "both jobs done", func() bool {
		s, _ := leader.Job("sched")
		d, _ := leader.Job("drift")
		return s.State == JobDone && d.State == JobDone
	})
	for range 5 {
		leader.step()
	}
	if _, ok := leader.Job("sched-r1"); ok {
		t.Fatal("retrained before the period passed")
	}
	clk.advance(2 * time.Hour)
	waitFor(t, leader, "the scheduled retraining", func() bool { _, ok := leader.Job("sched-r1"); return ok })
	old, _ := leader.Job("sched")
	next, _ := leader.Job("sched-r1")
	if old.RetrainedBy != "sched-r1" || next.RetrainOf != "sched" || next.Models[0].Digest != old.Global.Digest || next.State != JobRunning {
		t.Fatalf("retrained job: old %q, new %q from %.12s (old's last %.12s), %s", old.RetrainedBy, next.RetrainOf, next.Models[0].Digest, old.Global.Digest, next.State)
	}
	for range 5 {
		leader.step()
	}
	if _, ok := leader.Job("sched-r2"); ok {
		t.Fatal("a job retrained twice")
	}

	// Drift.
	d, _ := leader.Job("drift")
	report := func(psi float64) *pb.Envelope {
		return a.call(t, &pb.Envelope{Body: &pb.Envelope_DriftReport{DriftReport: &pb.DriftReport{JobId: "drift", ModelSha256: d.Global.Digest, Scored: 50, MaxPsi: psi}}})
	}
	if resp := report(0.1); resp.GetAck() == nil {
		t.Fatalf("drift report: %v", resp)
	}
	for range 5 {
		leader.step()
	}
	if _, ok := leader.Job("drift-r1"); ok {
		t.Fatal("retrained below the drift threshold")
	}
	if resp := report(-1); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_BAD_REQUEST {
		t.Fatalf("a negative index answered %v", resp)
	}
	if resp := report(0.4); resp.GetAck() == nil {
		t.Fatalf("drift report: %v", resp)
	}
	waitFor(t, leader, "the drift retraining", func() bool { _, ok := leader.Job("drift-r1"); return ok })
	if d, _ := leader.Job("drift"); d.Drift["st-a"].MaxPSI != 0.4 {
		t.Fatalf("recorded drift %+v", d.Drift)
	}
}

func TestRetrainIDs(t *testing.T) {
	none := func(string) bool { return false }
	for in, want := range map[string]string{"sepsis": "sepsis-r1", "sepsis-r1": "sepsis-r2", "sepsis-r9": "sepsis-r10", "a-rx": "a-rx-r1"} {
		if got := retrainID(in, none); got != want {
			t.Errorf("retrainID(%q) = %q, want %q", in, got, want)
		}
	}
	if got := retrainID("s", func(id string) bool { return id == "s-r1" }); got != "s-r2" {
		t.Errorf("with s-r1 taken: %q", got)
	}
}
