package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
)

// deployScript answers deployment requests with the version it holds
// (and NoTask to task requests); serve is the scripted coordinator's
// model blob for it.
type deployScript struct {
	mu  sync.Mutex
	dep *pb.Deployment
	// current is the digest the agent last said it runs.
	current string
}

func (d *deployScript) handle(env *pb.Envelope) *pb.Envelope {
	switch b := env.GetBody().(type) {
	case *pb.Envelope_TaskRequest:
		return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
	case *pb.Envelope_DeploymentRequest:
		d.mu.Lock()
		defer d.mu.Unlock()
		d.current = b.DeploymentRequest.GetCurrentSha256()
		if d.dep == nil {
			return protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no production version")
		}
		if d.dep.GetModel().GetSha256() == d.current {
			return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
		}
		return &pb.Envelope{Body: &pb.Envelope_Deployment{Deployment: d.dep}}
	}
	return nil
}

func deploymentOf(weights []float32, threshold float64) (*pb.Deployment, []byte) {
	body := protocol.EncodeF32(weights)
	o := evalOffer(body)
	return &pb.Deployment{JobId: "sepsis", Model: o.GetModel(), ModelSpec: o.GetModelSpec(), Features: o.GetFeatures(), Round: 7, AlertThreshold: threshold}, body
}

// startDeployAgent runs an agent that follows job "sepsis" against the
// scripted coordinator c, with local inference on; it returns the agent,
// the token, and a function that stops it and closes its store.
func startDeployAgent(t *testing.T, c *scriptedCoordinator, p *testPKI, dataDir string, edit ...func(*Config, string)) (a *Agent, token string, stop func()) {
	t.Helper()
	addr := serveScripted(t, c, p.pool, p.coordinatorCert(t))
	dir := t.TempDir()
	site := synth.DefaultSites(1, 5)[0]
	site.Patients = 60
	data := filepath.Join(dir, "fhir")
	if _, err := synth.WriteSite(data, site, synth.DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	token = "local-inference-token-0123456789"
	tokFile := filepath.Join(dir, "predict.token")
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = dataDir
	if _, err := os.Stat(filepath.Join(dataDir, "tls")); err != nil {
		p.enrolled(t, cfg.DataDir, "st-mary", time.Hour, time.Now())
	}
	cfg.Coordinators = []string{addr}
	cfg.FHIRDir = data
	cfg.Deploy = []string{"sepsis"}
	cfg.DeployPoll = Duration(50 * time.Millisecond)
	cfg.PredictAddr, cfg.PredictTokenFile = "127.0.0.1:0", tokFile
	cfg.BackoffMin, cfg.BackoffMax = Duration(50*time.Millisecond), Duration(200*time.Millisecond)
	cfg.PollWait = Duration(100 * time.Millisecond)
	for _, e := range edit {
		e(&cfg, data)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; a.Close() }) }
	t.Cleanup(stop)
	return a, token, stop
}

// waitUntil polls cond every 20 ms for up to 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func predict(t *testing.T, a *Agent, token string, req PredictRequest) (int, Prediction) {
	t.Helper()
	b, _ := json.Marshal(req)
	hr, _ := http.NewRequest("POST", "http://"+a.PredictAddr()+"/v1/predict", bytes.NewReader(b))
	if token != "" {
		hr.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p Prediction
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, p
}

// TestDeployAndPredict: a site follows a job's production version: it
// downloads it (resuming the download the script cuts), checks it, makes
// it current on disk and in memory, and scores patients with it locally,
// with per-feature contributions that add up to the log-odds; a new
// version replaces it and keeps it as the previous one; a restarted agent
// serves its current version before reaching any coordinator.
func TestDeployAndPredict(t *testing.T) {
	p := newTestPKI(t)
	dep, body := deploymentOf(evalWeights, 0.5)
	ds := &deployScript{dep: dep}
	c := &scriptedCoordinator{t: t, model: body, offer: &pb.TaskOffer{Model: dep.GetModel()}, handle: ds.handle, done: make(chan struct{})}
	dataDir := filepath.Join(t.TempDir(), "agent")
	a, token, stop := startDeployAgent(t, c, p, dataDir)
	waitUntil(t, "the version to be deployed", func() bool {
		d := a.deployedModel("sepsis")
		return d != nil && d.Digest == dep.GetModel().GetSha256()
	})
	if st := a.Stats(); st.Deployments != 1 || st.DeploymentsRefused != 0 || st.DownloadsResumed == 0 {
		t.Errorf("stats after deploying: %+v", st)
	}

	raw := []float64{70, 1, 95, 35, 120, 18, 1.2, 0.6, 4}
	if code, _ := predict(t, a, "", PredictRequest{Job: "sepsis", Features: raw}); code != http.StatusUnauthorized {
		t.Fatalf("a prediction without the token: %d", code)
	}
	if code, _ := predict(t, a, "wrong-token-wrong-token", PredictRequest{Job: "sepsis", Features: raw}); code != http.StatusUnauthorized {
		t.Fatalf("a prediction with a wrong token: %d", code)
	}
	if got := agentMetric(handlerMetrics(t, a), "cohort_agent_predictions_refused_total"); got != 2 || a.Stats().PredictionsRefused != 2 {
		t.Fatalf("predictions refused: metric %v, stats %d; want 2", got, a.Stats().PredictionsRefused)
	}
	if code, _ := predict(t, a, token, PredictRequest{Job: "sepsis", Features: raw[:3]}); code != http.StatusBadRequest {
		t.Fatalf("a prediction with 3 features: %d", code)
	}
	code, pr := predict(t, a, token, PredictRequest{Job: "sepsis", Features: raw})
	if code != http.StatusOK || pr.Model != dep.GetModel().GetSha256() || pr.Round != 7 || len(pr.Contributions) != len(raw) {
		t.Fatalf("prediction: %d %+v", code, pr)
	}
	logit := float64(evalWeights[len(evalWeights)-1])
	for _, c := range pr.Contributions {
		logit += c.Contribution
	}
	if want := 1 / (1 + math.Exp(-logit)); math.Abs(want-pr.Risk) > 1e-5 || pr.Alert != (pr.Risk >= 0.5) {
		t.Fatalf("risk %v, alert %v; the contributions give %v", pr.Risk, pr.Alert, want)
	}
	// A patient of the store, by its pseudonymous key.
	d := a.deployedModel("sepsis")
	dset, err := a.dataset(d.spec)
	if err != nil || dset.Rows == 0 {
		t.Fatalf("dataset: %v", err)
	}
	if code, pr := predict(t, a, token, PredictRequest{Job: "sepsis", Patient: dset.Keys[0]}); code != http.StatusOK || pr.Risk <= 0 || pr.Risk >= 1 {
		t.Fatalf("prediction by patient key: %d %+v", code, pr)
	}
	if code, _ := predict(t, a, token, PredictRequest{Job: "sepsis", Patient: "nobody"}); code != http.StatusBadRequest {
		t.Fatalf("an unknown patient: %d", code)
	}

	// A new production version replaces it; the old one is kept.
	w2 := append([]float32(nil), evalWeights...)
	w2[0] = 1.5
	dep2, body2 := deploymentOf(w2, 0.5)
	c.mu.Lock()
	c.model, c.offer = body2, &pb.TaskOffer{Model: dep2.GetModel()}
	c.downloadOffsets = nil
	c.mu.Unlock()
	ds.mu.Lock()
	ds.dep = dep2
	ds.mu.Unlock()
	waitUntil(t, "the new version", func() bool {
		d := a.deployedModel("sepsis")
		return d != nil && d.Digest == dep2.GetModel().GetSha256()
	})
	d = a.deployedModel("sepsis")
	if d.Previous != dep.GetModel().GetSha256() {
		t.Fatalf("previous version %q, want the first", d.Previous)
	}
	for _, digest := range []string{dep.GetModel().GetSha256(), dep2.GetModel().GetSha256()} {
		if _, err := os.Stat(filepath.Join(dataDir, "models", "sepsis", digest+".f32")); err != nil {
			t.Errorf("version %.12s not on disk: %v", digest, err)
		}
	}
	stop()

	// Restarted with no coordinator version to give, it serves the
	// current version from disk.
	ds.mu.Lock()
	ds.dep = nil
	ds.mu.Unlock()
	a2, token2, _ := startDeployAgent(t, c, p, dataDir)
	waitUntil(t, "the predict server", func() bool { return a2.PredictAddr() != "" })
	if code, pr := predict(t, a2, token2, PredictRequest{Job: "sepsis", Features: raw}); code != http.StatusOK || pr.Model != dep2.GetModel().GetSha256() {
		t.Fatalf("after a restart: %d %+v", code, pr)
	}
}

// TestDeploymentDigestMismatch: weights that do not hash to the digest the
// registry names are refused and counted, and nothing is deployed.
func TestDeploymentDigestMismatch(t *testing.T) {
	p := newTestPKI(t)
	dep, body := deploymentOf(evalWeights, 0)
	bad := bytes.Clone(body)
	bad[0] ^= 1
	ds := &deployScript{dep: dep}
	c := &scriptedCoordinator{t: t, model: bad, offer: &pb.TaskOffer{Model: dep.GetModel()}, handle: ds.handle, done: make(chan struct{})}
	a, _, _ := startDeployAgent(t, c, p, filepath.Join(t.TempDir(), "agent"))
	waitUntil(t, "the refusal", func() bool { return a.Stats().DeploymentsRefused >= 1 })
	if d := a.deployedModel("sepsis"); d != nil {
		t.Fatalf("deployed %.12s from weights that do not match", d.Digest)
	}
	if got := agentMetric(handlerMetrics(t, a), "cohort_agent_deployments_refused_total"); got < 1 {
		t.Fatalf("cohort_agent_deployments_refused_total = %v, want at least 1", got)
	}
	if _, err := os.Stat(filepath.Join(a.modelsDir("sepsis"), "current.json")); err == nil {
		t.Fatal("a refused version became current on disk")
	}
}

// TestDeploymentTooLargeIsRefusedUnread: a version whose spec and blob
// claim more weights than the largest model an agent builds (here 16 GiB)
// is refused and counted before anything is downloaded or allocated.
func TestDeploymentTooLargeIsRefusedUnread(t *testing.T) {
	p := newTestPKI(t)
	dep, body := deploymentOf(evalWeights, 0)
	dep.ModelSpec.NumParams = 1<<32 - 1
	dep.Model.Size = 4 * uint64(dep.ModelSpec.NumParams)
	ds := &deployScript{dep: dep}
	c := &scriptedCoordinator{t: t, model: body, offer: &pb.TaskOffer{Model: dep.GetModel()}, handle: ds.handle, done: make(chan struct{})}
	a, _, _ := startDeployAgent(t, c, p, filepath.Join(t.TempDir(), "agent"))
	waitUntil(t, "the refusal", func() bool { return a.Stats().DeploymentsRefused >= 1 })
	c.mu.Lock()
	asked := len(c.downloadOffsets)
	c.mu.Unlock()
	if asked > 0 || a.deployedModel("sepsis") != nil {
		t.Fatalf("the oversized version was downloaded (%d requests) or deployed", asked)
	}
}

// TestMLPContributionsAddUp: integrated gradients of an MLP add up to the
// risk minus the baseline's risk (completeness), up to the path's
// discretization.
func TestMLPContributionsAddUp(t *testing.T) {
	spec := synth.DefaultFeatureSpec()
	nf := len(spec.GetFeatures())
	ms := &pb.ModelSpec{Kind: "mlp", NumFeatures: uint32(nf), Hidden: []uint32{8}, Activation: "tanh"}
	m, err := NewTrainer(ms, nf)
	if err != nil {
		t.Fatal(err)
	}
	ms.NumParams = uint32(m.NumParams())
	w := m.Weights()
	for i := range w {
		w[i] = float32(math.Sin(float64(i)*1.3)) * 0.8
	}
	d := &deployed{model: ms, spec: spec, weights: w}
	tr, err := d.trainer()
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{1.2, -0.5, 0.8, 2, -1, 0.3, 0.5, -0.7, 1.1}[:nf]
	contrib, err := contributions(d, tr, x)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := tr.Predict(x, 1)
	p0, _ := tr.Predict(make([]float32, nf), 1)
	var sum float64
	for _, c := range contrib {
		sum += c
	}
	if diff := float64(p[0]-p0[0]) - sum; math.Abs(diff) > 0.01 {
		t.Fatalf("contributions add up to %v, the risk moved by %v from the baseline", sum, p[0]-p0[0])
	}
}
