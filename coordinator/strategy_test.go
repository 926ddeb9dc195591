package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
)

func TestStrategySpecJSON(t *testing.T) {
	var j JobSpec
	if err := json.Unmarshal([]byte(`{"strategy": "fedyogi"}`), &j); err != nil || j.Strategy.Name != "fedyogi" {
		t.Fatalf("a bare name: %v %+v", err, j.Strategy)
	}
	if err := json.Unmarshal([]byte(`{"strategy": {"name": "fedadam", "params": {"server_lr": 0.03}, "norm_bound": 5}}`), &j); err != nil ||
		j.Strategy.Params["server_lr"] != 0.03 || j.Strategy.NormBound != 5 {
		t.Fatalf("an object: %v %+v", err, j.Strategy)
	}
	if err := json.Unmarshal([]byte(`{"strategy": {"name": "fedadam", "lr": 1}}`), &j); err == nil {
		t.Fatal("an unknown field in a strategy was accepted")
	}
	b, _ := json.Marshal(StrategySpec{aggregator.Spec{Name: "median"}})
	if string(b) != `"median"` {
		t.Fatalf("a plain rule marshals as %s", b)
	}
	for _, c := range []struct {
		spec     string
		minSites int
		want     string
	}{
		{`"nope"`, 1, "unknown rule"},
		{`{"name": "fedadam", "params": {"beta1": 2}}`, 1, "beta1"},
		{`{"name": "krum", "params": {"f": 1}}`, 4, "2f"},
		{`{"name": "fedprox", "params": {"mu": -1}}`, 1, "mu"},
	} {
		job := testJob("j", 1, c.minSites)
		if err := json.Unmarshal([]byte(c.spec), &job.Strategy); err != nil {
			t.Fatal(err)
		}
		err := job.Validate(0)
		if !errors.Is(err, ErrInvalidJob) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("strategy %s with min_sites %d: %v, want an invalid-job error about %q", c.spec, c.minSites, err, c.want)
		}
	}
	job := testJob("j", 1, 5)
	json.Unmarshal([]byte(`{"name": "krum", "params": {"f": 1}}`), &job.Strategy)
	if err := job.Validate(0); err != nil {
		t.Errorf("krum f=1 with 5 sites: %v", err)
	}
}

// TestServerOptimizerStateSurvivesFailover runs FedAdam: its state (the
// moments) is a blob a majority holds before each commit, named in the
// log, and a new leader continues from it.
func TestServerOptimizerStateSurvivesFailover(t *testing.T) {
	adam := testJob("j2", 3, 1)
	adam.Strategy = StrategySpec{aggregator.Spec{Name: "fedadam"}}
	tc := startCluster(t, 3, []string{"st-mary"}, []JobSpec{adam})
	leader, _ := tc.leader(t)
	site := tc.ca.issue(t, pki.RoleSite, "st-mary")

	round := func(leader *Node, number uint64) *Job {
		t.Helper()
		a, err := dialRaw(t, leader.AgentAddr(), site)
		if err != nil {
			t.Fatal(err)
		}
		a.call(t, hello())
		offer := a.call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 10000}}}).GetTaskOffer()
		if offer.GetRound() != number {
			t.Fatalf("offer = %v", offer)
		}
		download(t, a, offer)
		if resp := upload(t, a, offer, []float32{1, -1, 0.5, 2}, 10); resp.GetAck() == nil {
			t.Fatalf("upload answered %v", resp)
		}
		var j *Job
		waitFor(t, leader, "the round to commit", func() bool {
			j, _ = leader.Job("j2")
			return j.CommittedRounds() >= number
		})
		return j
	}
	j := round(leader, 1)
	if j.OptState == nil {
		t.Fatal("FedAdam committed no state")
	}
	if k := holders(tc, j.OptState.Digest); k < 2 {
		t.Fatalf("the state is held by %d nodes after the commit, want a majority", k)
	}
	first := j.OptState.Digest
	li := indexOf(tc.nodes, leader)
	next := tc.crashLeader(t, li)
	j = round(next, 2)
	if j.OptState == nil || j.OptState.Digest == first {
		t.Fatalf("round 2 state %+v: the new leader did not carry the moments forward", j.OptState)
	}
	// The committed model is two FedAdam steps computed here, the second
	// from the first's state: the new leader continued from the moments
	// the old one replicated (starting over from no state gives another
	// model).
	d := []float32{1, -1, 0.5, 2}
	w1, s1 := fedAdamStep(t, make([]float32, len(d)), nil, d)
	w2, _ := fedAdamStep(t, w1, s1, d)
	restarted, _ := fedAdamStep(t, w1, nil, d)
	want := protocol.EncodeF32(w2)
	got, err := next.ModelWeights(t.Context(), j.Models[2].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("round 2 model %v, want two chained FedAdam steps %v", got, want)
	}
	if bytes.Equal(want, protocol.EncodeF32(restarted)) {
		t.Fatal("the check cannot tell a continued optimizer from a restarted one")
	}
}

// fedAdamStep is one FedAdam round of update d (10 samples) from weights w
// and state.
func fedAdamStep(t *testing.T, w []float32, state []byte, d []float32) ([]float32, []byte) {
	t.Helper()
	st, err := aggregator.New(aggregator.Spec{Name: "fedadam"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Begin(w, state)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(d, 10); err != nil {
		t.Fatal(err)
	}
	res, err := r.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return res.Weights, res.State
}

// A FedProx job's offers carry its mu, which sites add to their loss.
func TestFedProxMuReachesSites(t *testing.T) {
	job := testJob("j1", 1, 1)
	job.Strategy = StrategySpec{aggregator.Spec{Name: "fedprox", Params: map[string]float64{"mu": 0.5}}}
	tc := startCluster(t, 1, []string{"st-mary"}, []JobSpec{job})
	leader, _ := tc.leader(t)
	_, offer := tc.offerFor(t, leader, "st-mary")
	if mu := offer.GetParams().GetProxMu(); mu != 0.5 {
		t.Fatalf("offer carries prox_mu %v, want 0.5", mu)
	}
}
