package coordinator

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pb"
)

// trainRounds runs rounds of job on the leader with the given agents, each
// uploading delta.
func trainRounds(t *testing.T, leader *Node, job string, agents []*rawAgent, rounds int) {
	t.Helper()
	for round := 1; round <= rounds; round++ {
		for _, a := range agents {
			offer := a.task(t, 5*time.Second)
			if offer.GetRound() != uint64(round) {
				t.Fatalf("round %d: offer %v", round, offer)
			}
			download(t, a, offer)
			if resp := upload(t, a, offer, []float32{0.1, -0.1, 0.2, 0}, 50); resp.GetAck() == nil {
				t.Fatalf("round %d upload: %v", round, resp)
			}
		}
		waitFor(t, leader, "the round to commit", func() bool {
			j, _ := leader.Job(job)
			return j.CommittedRounds() >= uint64(round)
		})
	}
}

// TestRegistryLineageStagesAndRollback: each committed model is a version
// with its lineage; promoting one archives the production version it
// replaces; a rollback brings the previous one back; each change is an
// audited admin request, and bad requests get problem details.
func TestRegistryLineageStagesAndRollback(t *testing.T) {
	sites := []string{"st-a", "st-b"}
	tc := startCluster(t, 1, sites, []JobSpec{testJob("j1", 2, 2)})
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()
	agents := []*rawAgent{tc.welcomed(t, leader, "st-a"), tc.welcomed(t, leader, "st-b")}
	trainRounds(t, leader, "j1", agents, 2)

	var list struct {
		Models []ModelVersion `json:"models"`
	}
	if code, raw := tc.api(t, "GET", addr, "/v1/jobs/j1/models", nil, &list); code != http.StatusOK || len(list.Models) != 3 {
		t.Fatalf("versions: %d %s", code, raw)
	}
	v0, v1, v2 := list.Models[0], list.Models[1], list.Models[2]
	if v1.Parent != v0.Digest || v2.Parent != v1.Digest || v0.Parent != "" {
		t.Fatalf("lineage: %s <- %s <- %s, parents %q %q %q", v0.Digest[:8], v1.Digest[:8], v2.Digest[:8], v0.Parent, v1.Parent, v2.Parent)
	}
	if v2.Round != 2 || v2.Strategy != "fedavg" || strings.Join(v2.Contributors, ",") != "st-a,st-b" || v2.Samples != 100 || v2.Stage != StageCandidate || v2.Committed.IsZero() {
		t.Fatalf("version 2: %+v", v2)
	}
	// A site that follows the job's production version.
	follower := agents[0]
	depReq := func(current string) *pb.Envelope {
		return follower.call(t, &pb.Envelope{Body: &pb.Envelope_DeploymentRequest{DeploymentRequest: &pb.DeploymentRequest{JobId: "j1", CurrentSha256: current}}})
	}
	if resp := depReq(""); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("a deployment request before any promotion: %v", resp)
	}
	stage := func(digest string, s Stage) (int, string) {
		return tc.api(t, "POST", addr, "/v1/jobs/j1/models/"+digest+"/stage", map[string]Stage{"stage": s}, nil)
	}
	if code, raw := stage(v1.Digest, StageProduction); code != http.StatusOK {
		t.Fatalf("promote v1: %d %s", code, raw)
	}
	if code, raw := stage(v2.Digest, StageStaging); code != http.StatusOK {
		t.Fatalf("stage v2: %d %s", code, raw)
	}
	if code, raw := stage(v2.Digest, StageProduction); code != http.StatusOK {
		t.Fatalf("promote v2: %d %s", code, raw)
	}
	got := func(d string) Stage { v, _ := leader.version("j1", d); return v.Stage }
	if d := depReq(v1.Digest).GetDeployment(); d.GetModel().GetSha256() != v2.Digest || d.GetRound() != 2 || d.GetModelSpec().GetNumParams() != 4 || len(d.GetFeatures().GetFeatures()) != 3 {
		t.Fatalf("the deployment after promoting v2: %v", d)
	}
	if resp := depReq(v2.Digest); resp.GetNoTask() == nil {
		t.Fatalf("a site running the production version got %v", resp)
	}
	if got(v1.Digest) != StageArchived || got(v2.Digest) != StageProduction {
		t.Fatalf("after promoting v2: v1 %s, v2 %s", got(v1.Digest), got(v2.Digest))
	}
	var back ModelVersion
	if code, raw := tc.api(t, "POST", addr, "/v1/jobs/j1/rollback", nil, &back); code != http.StatusOK || back.Digest != v1.Digest {
		t.Fatalf("rollback: %d %s", code, raw)
	}
	if got(v1.Digest) != StageProduction || got(v2.Digest) != StageArchived {
		t.Fatalf("after rollback: v1 %s, v2 %s", got(v1.Digest), got(v2.Digest))
	}
	if d := depReq(v2.Digest).GetDeployment(); d.GetModel().GetSha256() != v1.Digest {
		t.Fatalf("the deployment after the rollback: %v", d)
	}
	// Bad requests.
	if code, _ := stage(strings.Repeat("0", 64), StageProduction); code != http.StatusNotFound {
		t.Errorf("an unknown version: %d, want 404", code)
	}
	if code, _ := stage(v1.Digest, "gold"); code != http.StatusBadRequest {
		t.Errorf("an unknown stage: %d, want 400", code)
	}
	tc2 := startCluster(t, 1, sites, []JobSpec{testJob("j2", 1, 1)})
	l2, _ := tc2.leader(t)
	if code, _ := tc2.api(t, "POST", l2.AdminAddr(), "/v1/jobs/j2/rollback", nil, nil); code != http.StatusConflict {
		t.Errorf("a rollback with nothing to roll back to: %d, want 409", code)
	}
	// The model card and the audit trail.
	code, card := tc.api(t, "GET", addr, "/v1/jobs/j1/models/"+v2.Digest+"/card", nil, nil)
	if code != http.StatusOK || !strings.Contains(card, "# Model card: job j1, round 2") || !strings.Contains(card, "st-a, st-b") {
		t.Fatalf("model card: %d\n%s", code, card)
	}
	var stages, rollbacks int
	for _, e := range auditActions(t, leader) {
		switch {
		case strings.Contains(e, "/stage"):
			stages++
		case strings.HasSuffix(e, "/rollback"):
			rollbacks++
		}
	}
	if stages < 5 || rollbacks != 1 {
		t.Fatalf("audited %d stage changes and %d rollbacks, want at least 5 and 1", stages, rollbacks)
	}
}

// TestFederatedEvaluation: an evaluation of a version offers every site an
// evaluation task on that version (downloadable through the evaluation
// job), takes their reports, refuses impossible ones, pools them and
// records them on the version.
func TestFederatedEvaluation(t *testing.T) {
	sites := []string{"st-a", "st-b"}
	tc := startCluster(t, 1, sites, []JobSpec{testJob("j1", 1, 2)})
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()
	agents := []*rawAgent{tc.welcomed(t, leader, "st-a"), tc.welcomed(t, leader, "st-b")}
	trainRounds(t, leader, "j1", agents, 1)
	j, _ := leader.Job("j1")
	digest := j.Global.Digest

	var js JobStatus
	if code, raw := tc.api(t, "POST", addr, "/v1/jobs/j1/models/"+digest+"/evaluate", map[string]any{"id": "j1-eval", "bins": 4}, &js); code != http.StatusCreated {
		t.Fatalf("evaluate: %d %s", code, raw)
	}
	report := func(count, pos uint64, auroc float64) *pb.EvalUpload {
		return &pb.EvalUpload{JobId: "j1-eval", ModelSha256: digest, Count: count, Positives: pos, Auroc: auroc, Auprc: 0.5, Accuracy: 0.8, Brier: 0.1,
			Calibration: []*pb.CalibrationBin{{Count: count - 30, Positives: pos - 5, SumPredicted: 5}, {Count: 30, Positives: 5, SumPredicted: 6}, {Suppressed: true}, {}}}
	}
	for i, a := range agents {
		offer := a.task(t, 5*time.Second)
		if offer.GetKind() != pb.TaskKind_TASK_KIND_EVALUATE || offer.GetEval().GetSplitSalt() != "j1" || offer.GetEval().GetBins() != 4 || offer.GetModel().GetSha256() != digest {
			t.Fatalf("evaluation offer: %v", offer)
		}
		if w := download(t, a, offer); len(w) != 4 {
			t.Fatalf("the scored model: %v", w)
		}
		if i == 0 {
			bad := report(100, 20, 1.5)
			if resp := a.call(t, &pb.Envelope{Body: &pb.Envelope_EvalUpload{EvalUpload: bad}}); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_BAD_REQUEST {
				t.Fatalf("an AUROC of 1.5 answered %v", resp)
			}
			other := report(100, 20, 0.7)
			other.ModelSha256 = strings.Repeat("ab", 32)
			if resp := a.call(t, &pb.Envelope{Body: &pb.Envelope_EvalUpload{EvalUpload: other}}); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_BAD_REQUEST {
				t.Fatalf("an evaluation of another model answered %v", resp)
			}
		}
		if resp := a.call(t, &pb.Envelope{Body: &pb.Envelope_EvalUpload{EvalUpload: report(uint64(100*(i+1)), 20, 0.6+0.1*float64(i))}}); resp.GetAck() == nil {
			t.Fatalf("evaluation upload: %v", resp)
		}
	}
	waitFor(t, leader, "the evaluation to commit", func() bool {
		e, _ := leader.Job("j1-eval")
		return e.State == JobDone
	})
	var ev Evaluation
	if code, raw := tc.api(t, "GET", addr, "/v1/jobs/j1-eval/results", nil, &ev); code != http.StatusOK {
		t.Fatalf("results: %d %s", code, raw)
	}
	// AUROC weighted by positive-negative pairs: (20·80·0.6 + 20·180·0.7)/
	// (20·80 + 20·180); counts add up.
	if p := ev.Pooled; p.Count != 300 || p.Positives != 40 || math.Abs(p.AUROC-3480.0/5200) > 1e-12 || len(ev.Sites) != 2 || p.Calibration[1].Count != 60 {
		t.Fatalf("pooled: %+v", ev.Pooled)
	}
	v, _ := leader.version("j1", digest)
	if len(v.Evaluations) != 1 || v.Evaluations[0].Job != "j1-eval" {
		t.Fatalf("the registry's evaluations of the version: %+v", v.Evaluations)
	}
	if code, raw := tc.api(t, "POST", addr, "/v1/jobs/j1/models/"+strings.Repeat("0", 64)+"/evaluate", nil, nil); code != http.StatusNotFound {
		t.Fatalf("evaluating an unknown version: %d %s", code, raw)
	}
}
