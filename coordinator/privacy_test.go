package coordinator

import (
	"context"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
)

// TestPrivateJobStopsAtItsBudget runs a DP-FedAvg job: each committed
// round spends ε (shown in the job's status), the models carry noise,
// and the leader refuses to open the round that would pass the budget,
// ending the job with the reason.
func TestPrivateJobStopsAtItsBudget(t *testing.T) {
	job := testJob("private", 20, 2)
	job.Privacy = &PrivacySpec{ClipNorm: 1, NoiseMultiplier: 1, Epsilon: 12}
	tc := startCluster(t, 1, []string{"st-a", "st-b"}, []JobSpec{job})
	leader, _ := tc.leader(t)
	agents := map[string]*rawAgent{}
	for _, s := range []string{"st-a", "st-b"} {
		agents[s] = tc.welcomed(t, leader, s)
	}
	var spent []float64
	for round := 1; ; round++ {
		j, _ := leader.Job("private")
		if j.State != JobRunning {
			break
		}
		if round > 20 {
			t.Fatal("the job ran all its rounds: the budget never stopped it")
		}
		var global []float32
		for _, a := range agents {
			offer := a.task(t, 2*time.Second)
			if offer == nil {
				break // the job stopped
			}
			global = download(t, a, offer)
			if resp := upload(t, a, offer, []float32{0.1, 0.1, 0.1, 0.1}, 100); resp.GetAck() == nil {
				t.Fatalf("round %d upload: %v", round, resp)
			}
		}
		if global == nil {
			waitFor(t, leader, "the job to stop", func() bool { j, _ := leader.Job("private"); return j.State != JobRunning })
			break
		}
		waitFor(t, leader, "the round to commit", func() bool {
			j, _ := leader.Job("private")
			return j.CommittedRounds() >= uint64(round)
		})
		j, _ = leader.Job("private")
		if j.Privacy == nil || j.Privacy.Rounds != round {
			t.Fatalf("round %d: privacy state %+v", round, j.Privacy)
		}
		spent = append(spent, j.Privacy.Epsilon)
		// The new model is global + mean + noise of std z·C/n = 0.5.
		wb, err := leader.ModelWeights(context.Background(), j.Models[len(j.Models)-1].Digest)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := protocol.DecodeF32(wb)
		exact := 0
		for i := range w {
			if math.Abs(float64(w[i]-(global[i]+0.1))) < 1e-6 {
				exact++
			}
		}
		if exact == len(w) {
			t.Fatalf("round %d: the model is the exact mean: no noise", round)
		}
	}
	if len(spent) < 2 {
		t.Fatalf("only %d rounds fit the budget; the test wants several", len(spent))
	}
	for i := 1; i < len(spent); i++ {
		if !(spent[i] > spent[i-1]) {
			t.Errorf("ε did not grow: %v", spent)
		}
	}
	if last := spent[len(spent)-1]; last > 12 {
		t.Errorf("spent ε=%v, over the budget 12", last)
	}
	var js JobStatus
	if code, raw := tc.api(t, "GET", leader.AdminAddr(), "/v1/jobs/private", nil, &js); code != http.StatusOK {
		t.Fatalf("%d %s", code, raw)
	}
	if js.State != JobDone || !strings.Contains(js.StopReason, "privacy budget reached") || js.Privacy == nil ||
		js.Privacy.EpsilonSpent != spent[len(spent)-1] || js.Privacy.EpsilonBudget != 12 || js.CommittedRounds != uint64(len(spent)) {
		t.Fatalf("job status %+v (privacy %+v)", js, js.Privacy)
	}
	t.Logf("%d rounds, ε spent per round: %.3g", len(spent), spent)
}

// TestPrivacySpecValidation refuses specs the analysis does not cover.
func TestPrivacySpecValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		p    PrivacySpec
		rule string
		want string
	}{
		{"fedadam", PrivacySpec{ClipNorm: 1, NoiseMultiplier: 1, Epsilon: 8}, "fedadam", "only fedavg and fedprox"},
		{"no clip", PrivacySpec{NoiseMultiplier: 1, Epsilon: 8}, "fedavg", "clip_norm"},
		{"no noise", PrivacySpec{ClipNorm: 1, Epsilon: 8}, "fedavg", "noise_multiplier"},
		{"no budget", PrivacySpec{ClipNorm: 1, NoiseMultiplier: 1}, "fedavg", "epsilon"},
		{"bad delta", PrivacySpec{ClipNorm: 1, NoiseMultiplier: 1, Epsilon: 8, Delta: 1}, "fedavg", "delta"},
		{"NaN clip", PrivacySpec{ClipNorm: math.NaN(), NoiseMultiplier: 1, Epsilon: 8}, "fedavg", "clip_norm"},
		{"budget below one round", PrivacySpec{ClipNorm: 1, NoiseMultiplier: 0.3, Epsilon: 0.5}, "fedavg", "already spends"},
	} {
		err := c.p.validate(c.rule, 1)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", c.name, err, c.want)
		}
	}
	if err := (&PrivacySpec{ClipNorm: 1, NoiseMultiplier: 1, Epsilon: 8}).validate("fedprox", 1); err != nil {
		t.Errorf("a valid spec: %v", err)
	}
}

// TestPrivacyPlansNoise: a job that names a budget but no noise gets the
// smallest noise multiplier with which all its rounds fit; the planned
// job then runs every round without hitting the budget.
func TestPrivacyPlansNoise(t *testing.T) {
	spec := testJob("planned", 10, 1)
	spec.Privacy = &PrivacySpec{ClipNorm: 1, Epsilon: 3}
	if err := spec.PlanPrivacy(); err != nil {
		t.Fatal(err)
	}
	z := spec.Privacy.NoiseMultiplier
	if !(z > 1 && z < 20) {
		t.Fatalf("planned noise multiplier %v", z)
	}
	ok, eps, err := budgetLeft(spec.Privacy, nil, 0, 0)
	if !ok || err != nil || eps > 3 {
		t.Fatalf("one round: %v %v %v", ok, eps, err)
	}
	var st *PrivacyState
	for r := range 10 {
		w := make([]float32, 4)
		if err := addPrivacyNoise(w, spec.Privacy.NoiseMultiplier, spec.Privacy.ClipNorm, 2, nil); err != nil {
			t.Fatal(err)
		}
		if st, err = stepAccountant(spec.Privacy, st, 0, 2); err != nil {
			t.Fatal(err)
		}
		if st.Epsilon > 3*(1+1e-9) {
			t.Fatalf("round %d: ε=%v over the budget", r+1, st.Epsilon)
		}
	}
	if ok, _, _ := budgetLeft(spec.Privacy, st, 0, 0); ok {
		t.Error("an 11th round fits a budget planned for 10")
	}
	// Planning more rounds takes more noise.
	more := testJob("more", 40, 1)
	more.Privacy = &PrivacySpec{ClipNorm: 1, Epsilon: 3}
	if err := more.PlanPrivacy(); err != nil || more.Privacy.NoiseMultiplier <= z {
		t.Fatalf("40 rounds: z=%v (10 rounds: %v), %v", more.Privacy.NoiseMultiplier, z, err)
	}
}

// TestAdaptiveClipping: the clip moves by exp(−η(b̄ − γ)) with the noised
// count of unclipped updates, the noise on the updates grows to z_Δ so the
// round costs what z states, and the clipper's state survives in the
// replicated privacy state.
func TestAdaptiveClipping(t *testing.T) {
	spec := &PrivacySpec{ClipNorm: 0.5, NoiseMultiplier: 1, Epsilon: 10, AdaptiveClipping: &AdaptiveClipSpec{}}
	if err := spec.validate("fedavg", 4); err != nil {
		t.Fatal(err)
	}
	clip, z, c, err := spec.roundClip(nil, 4)
	if err != nil || c == nil {
		t.Fatal(err)
	}
	if clip != 0.5 || !(z > 1) {
		t.Fatalf("first round: clip %g, z_Δ %g; want 0.5 and more than z = 1", clip, z)
	}
	if got := c.Config().CountStddev; got != 1 {
		t.Fatalf("default count stddev %g, want max(4/20, z) = 1", got)
	}
	// Every one of 4 updates clipped: b̄ = -2/4 + ½ = 0, so the clip grows
	// by exp(0.2·0.5).
	st, err := endPrivateRound(spec, nil, c, -2, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := 0.5 * math.Exp(0.1); math.Abs(st.Clip-want) > 1e-12 || st.Rounds != 1 || !(st.Epsilon > 0) {
		t.Fatalf("after a round with every update clipped: %+v, want clip %g", st, want)
	}
	clip2, _, _, err := spec.roundClip(st, 4)
	if err != nil || clip2 != st.Clip {
		t.Fatalf("the next round's clip %g (%v), want the state's %g", clip2, err, st.Clip)
	}
	if got := privacyStatus(spec, st).CurrentClip; got != st.Clip {
		t.Fatalf("status shows clip %g", got)
	}
	// A count noise that cannot pay for itself is refused.
	bad := *spec
	bad.AdaptiveClipping = &AdaptiveClipSpec{CountStddev: 0.4}
	if err := bad.validate("fedavg", 4); err == nil || !strings.Contains(err.Error(), "count_stddev") {
		t.Fatalf("count_stddev below z/2: %v", err)
	}
}

// TestAdaptiveClippingJob runs a private job with adaptive clipping whose
// sites' updates are all far above the clip: the clip grows round after
// round (the noised count can only slow it), and the status shows it.
func TestAdaptiveClippingJob(t *testing.T) {
	job := testJob("adaptive", 3, 2)
	job.Privacy = &PrivacySpec{ClipNorm: 0.01, NoiseMultiplier: 0.5, Epsilon: 100,
		AdaptiveClipping: &AdaptiveClipSpec{LearningRate: 1, CountStddev: 0.3}}
	tc := startCluster(t, 1, []string{"st-a", "st-b"}, []JobSpec{job})
	leader, _ := tc.leader(t)
	agents := []*rawAgent{tc.welcomed(t, leader, "st-a"), tc.welcomed(t, leader, "st-b")}
	for round := 1; round <= 3; round++ {
		for _, a := range agents {
			offer := a.task(t, 5*time.Second)
			download(t, a, offer)
			if resp := upload(t, a, offer, []float32{10, 10, 10, 10}, 100); resp.GetAck() == nil {
				t.Fatalf("round %d upload: %v", round, resp)
			}
		}
		waitFor(t, leader, "the round to commit", func() bool {
			j, _ := leader.Job("adaptive")
			return j.CommittedRounds() >= uint64(round)
		})
	}
	j, _ := leader.Job("adaptive")
	ps := j.PrivacyStatus()
	if ps == nil || ps.Rounds != 3 || !(ps.CurrentClip > 0.01) || ps.CurrentClip > 0.01*math.Exp(3*0.5)+1e-12 {
		t.Fatalf("after 3 rounds of clipped updates: %+v; want the clip grown above 0.01 by at most e^1.5", ps)
	}
}
