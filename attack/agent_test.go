package attack

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/sim/synth"
	"github.com/quic-go/quic-go"
)

// Agent attacks: a real agent process dials a coordinator the test
// scripts (what a compromised coordinator, or a man in the middle holding
// a coordinator's key, would run), with certificates of a CA of the test's
// own.

// testPKI is a federation CA made by `cohort ca init`.
type testPKI struct {
	dir string
	ca  *pki.CA
}

func newPKI(t *testing.T, bin string) *testPKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := runOK(bin, "ca", "init", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{dir: dir, ca: ca}
}

// issue writes a certificate and key for role and id to dir and returns
// their paths.
func (p *testPKI) issue(t *testing.T, role, id string) (certFile, keyFile string) {
	t.Helper()
	req := pki.IssueRequest{Role: role, ID: id}
	if role == pki.RoleCoordinator {
		req.Hosts = []string{"127.0.0.1"}
	}
	dir := filepath.Join(t.TempDir(), id)
	certFile, keyFile, err := p.ca.IssueToFiles(dir, req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// scripted is a coordinator the test scripts. It welcomes the agent,
// hands out the queued offers, answers deployment requests with its
// deployment, serves the blobs it holds (whose bytes need not match the
// digest they are asked by), and records every frame the agent sends.
type scripted struct {
	addr string
	ln   *quic.Listener
	wg   sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	conns      []*quic.Conn
	offers     []*pb.TaskOffer
	deployment *pb.Deployment
	blobs      map[string][]byte
	received   []*pb.Envelope
}

func startScripted(t *testing.T, p *testPKI) *scripted {
	t.Helper()
	certFile, keyFile := p.issue(t, pki.RoleCoordinator, "c-scripted")
	pool, err := pki.LoadPool(filepath.Join(p.dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", pki.ServerTLS(pool, cert, protocol.ALPN, pki.RoleSite),
		&quic.Config{MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{addr: ln.Addr().String(), ln: ln, blobs: map[string][]byte{}}
	s.wg.Go(s.serve)
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		s.closed = true
		for _, c := range s.conns {
			c.CloseWithError(0, "test over")
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *scripted) serve() {
	for {
		conn, err := s.ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.CloseWithError(0, "test over")
			return
		}
		s.conns = append(s.conns, conn)
		s.mu.Unlock()
		s.wg.Go(func() {
			defer conn.CloseWithError(0, "")
			id, _ := pki.PeerIdentity(conn.ConnectionState().TLS)
			for {
				st, err := conn.AcceptStream(context.Background())
				if err != nil {
					return
				}
				s.wg.Go(func() { s.serveStream(id.ID, st) })
			}
		})
	}
}

// serveStream answers the frames of one stream.
func (s *scripted) serveStream(site string, st *quic.Stream) {
	defer st.Close()
	for {
		env, err := protocol.ReadFrame(st, 0)
		if err != nil {
			st.CancelRead(0)
			return
		}
		s.mu.Lock()
		s.received = append(s.received, env)
		s.mu.Unlock()
		var resp *pb.Envelope
		switch b := env.GetBody().(type) {
		case *pb.Envelope_Hello:
			resp = &pb.Envelope{Body: &pb.Envelope_Welcome{Welcome: &pb.Welcome{ProtocolVersion: protocol.Version, NodeId: "c-scripted", SiteId: site}}}
		case *pb.Envelope_TaskRequest:
			s.mu.Lock()
			var offer *pb.TaskOffer
			if len(s.offers) > 0 {
				offer, s.offers = s.offers[0], s.offers[1:]
			}
			s.mu.Unlock()
			if offer != nil {
				resp = &pb.Envelope{Body: &pb.Envelope_TaskOffer{TaskOffer: offer}}
			} else {
				time.Sleep(min(time.Duration(b.TaskRequest.GetWaitMs())*time.Millisecond, 200*time.Millisecond))
				resp = &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
			}
		case *pb.Envelope_DeploymentRequest:
			s.mu.Lock()
			dep := s.deployment
			s.mu.Unlock()
			switch {
			case dep == nil:
				resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no production version")
			case dep.GetModel().GetSha256() == b.DeploymentRequest.GetCurrentSha256():
				resp = &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
			default:
				resp = &pb.Envelope{Body: &pb.Envelope_Deployment{Deployment: dep}}
			}
		case *pb.Envelope_ModelRequest:
			s.mu.Lock()
			blob, ok := s.blobs[b.ModelRequest.GetSha256()]
			s.mu.Unlock()
			off := b.ModelRequest.GetOffset()
			if !ok || off > uint64(len(blob)) {
				resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no such model")
				break
			}
			hdr := &pb.Envelope{Body: &pb.Envelope_BlobHeader{BlobHeader: &pb.BlobHeader{Offset: off,
				Blob: &pb.BlobRef{Sha256: b.ModelRequest.GetSha256(), Size: uint64(len(blob)), Encoding: pb.Encoding_ENCODING_F32LE}}}}
			if protocol.WriteFrame(st, hdr) == nil {
				st.Write(blob[off:])
			}
			return
		case *pb.Envelope_UpdateUpload:
			io.CopyN(io.Discard, st, int64(b.UpdateUpload.GetDelta().GetSize()-b.UpdateUpload.GetOffset()))
			resp = &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: b.UpdateUpload.GetJobId(), Round: b.UpdateUpload.GetRound(),
				Sha256: b.UpdateUpload.GetDelta().GetSha256()}}}
		case *pb.Envelope_Decline:
			resp = &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: b.Decline.GetJobId(), Round: b.Decline.GetRound()}}}
		case *pb.Envelope_StatsUpload, *pb.Envelope_EvalUpload, *pb.Envelope_DriftReport:
			resp = &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{}}}
		case *pb.Envelope_RoundStatusRequest:
			// Every round the agent asks about is over.
			resp = &pb.Envelope{Body: &pb.Envelope_RoundStatus{RoundStatus: &pb.RoundStatus{JobId: b.RoundStatusRequest.GetJobId(),
				Round: b.RoundStatusRequest.GetRound(), State: pb.RoundState_ROUND_STATE_COMMITTED}}}
		default:
			resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "unexpected %T", env.GetBody())
		}
		if protocol.WriteFrame(st, resp) != nil {
			return
		}
	}
}

// queue adds offers, and the model blobs they name (honest ones).
func (s *scripted) queue(offers ...*pb.TaskOffer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offers = append(s.offers, offers...)
}

// serveBlob makes ModelRequests for digest answer body.
func (s *scripted) serveBlob(digest string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[digest] = body
}

func (s *scripted) deploy(dep *pb.Deployment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deployment = dep
}

// got returns the frames received so far that match.
func (s *scripted) got(match func(*pb.Envelope) bool) []*pb.Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*pb.Envelope
	for _, e := range s.received {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}

// agentProc is a running agent and where to reach it.
type agentProc struct {
	p           *proc
	dataDir     string
	metricsAddr string
	predictAddr string
	token       string
}

// startAgent runs `cohort agent` for site against the coordinator at
// coord, with local inference on, following job "sepsis"'s production
// version, and (with patients > 0) a synthetic hospital's FHIR data.
func startAgent(t *testing.T, bin string, p *testPKI, site, coord string, patients int) *agentProc {
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{dataDir: filepath.Join(dir, "data"), metricsAddr: freeAddr(t, "tcp"), predictAddr: freeAddr(t, "tcp"),
		token: "local-inference-token-" + strings.Repeat("7", 16)}
	tokFile := filepath.Join(dir, "predict.token")
	if err := os.WriteFile(tokFile, []byte(a.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"data_dir": a.dataDir, "coordinators": []string{coord}, "metrics_addr": a.metricsAddr,
		"poll_wait": "1s", "backoff_min": "100ms", "backoff_max": "1s",
		"deploy": []string{"sepsis"}, "deploy_poll": "300ms",
		"predict_addr": a.predictAddr, "predict_token_file": tokFile,
	}
	if patients > 0 {
		s := synth.DefaultSites(1, 11)[0]
		s.Patients = patients
		fhirDir := filepath.Join(dir, "fhir")
		if _, err := synth.WriteSite(fhirDir, s, synth.DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		cfg["fhir_dir"] = fhirDir
	}
	cfgFile := filepath.Join(dir, "agent.json")
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := p.issue(t, pki.RoleSite, site)
	a.p = start(t, "agent "+site, bin, "agent", "--config", cfgFile,
		"--ca", filepath.Join(p.dir, "ca.crt"), "--cert", certFile, "--key", keyFile)
	waitFor(t, 30*time.Second, "the agent's /readyz", func() (bool, string) {
		a.p.checkAlive(t)
		resp, err := plainHTTP.Get("http://" + a.metricsAddr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "connected"), string(body)
	})
	return a
}

// healthy fails the test unless the agent runs, has not panicked, and
// answers /healthz.
func (a *agentProc) healthy(t *testing.T) {
	t.Helper()
	a.p.checkAlive(t)
	resp, err := plainHTTP.Get("http://" + a.metricsAddr + "/healthz")
	if err != nil {
		t.Fatalf("agent /healthz: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("agent /healthz: %s", resp.Status)
	}
}

// predict posts a prediction request for job "sepsis" with the given
// Authorization header (none when empty) and returns the status and body.
func (a *agentProc) predict(t *testing.T, auth string, features []float64, edit func(*http.Request)) (int, string) {
	t.Helper()
	body, _ := json.Marshal(agent.PredictRequest{Job: "sepsis", Features: features})
	req, err := http.NewRequest(http.MethodPost, "http://"+a.predictAddr+"/v1/predict", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := plainHTTP.Do(req)
	if err != nil {
		t.Fatalf("predict: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitDeployed waits until a valid prediction names the model digest.
func (a *agentProc) waitDeployed(t *testing.T, digest string) {
	t.Helper()
	waitFor(t, 20*time.Second, "the agent to serve model "+digest[:12], func() (bool, string) {
		status, body := a.predict(t, "Bearer "+a.token, patientFeatures(), nil)
		var p agent.Prediction
		json.Unmarshal([]byte(body), &p)
		return status == http.StatusOK && p.Model == digest, fmt.Sprintf("%d %s", status, body)
	})
}

// patientFeatures is one patient's raw features for synth's default spec.
func patientFeatures() []float64 {
	n := len(synth.DefaultFeatureSpec().GetFeatures())
	x := make([]float64, n)
	for i, f := range synth.DefaultFeatureSpec().GetFeatures() {
		x[i] = f.GetCenter() + f.GetScale()
	}
	return x
}

// logreg is a logistic regression over synth's default feature spec: the
// weights as a blob, its reference and spec.
func logreg(weights []float32) ([]byte, *pb.BlobRef, *pb.ModelSpec) {
	body := protocol.EncodeF32(weights)
	nf := len(synth.DefaultFeatureSpec().GetFeatures())
	return body, &pb.BlobRef{Sha256: protocol.Digest(body), Size: uint64(len(body)), Encoding: pb.Encoding_ENCODING_F32LE},
		&pb.ModelSpec{Kind: "logreg", NumFeatures: uint32(nf), NumParams: uint32(nf + 1)}
}

// weights are nf+1 logistic regression weights, all v.
func weights(v float32) []float32 {
	w := make([]float32, len(synth.DefaultFeatureSpec().GetFeatures())+1)
	for i := range w {
		w[i] = v
	}
	return w
}

// trainOffer is an offer to train job round 1 from a zero model over spec;
// the model blob is served by s.
func trainOffer(s *scripted, job string, spec *pb.FeatureSpec) *pb.TaskOffer {
	nf := len(spec.GetFeatures())
	body := protocol.EncodeF32(make([]float32, nf+1))
	ref := &pb.BlobRef{Sha256: protocol.Digest(body), Size: uint64(len(body)), Encoding: pb.Encoding_ENCODING_F32LE}
	s.serveBlob(ref.GetSha256(), body)
	return &pb.TaskOffer{JobId: job, Round: 1, Kind: pb.TaskKind_TASK_KIND_TRAIN, Model: ref,
		ModelSpec: &pb.ModelSpec{Kind: "logreg", NumFeatures: uint32(nf), NumParams: uint32(nf + 1)},
		Params:    &pb.TrainParams{LocalEpochs: 1, LearningRate: 0.1, MinRecords: 20, ValidationFraction: 0.2, Seed: 1},
		Features:  spec}
}

// withFeature is synth's default spec with one more feature.
func withFeature(f *pb.Feature) *pb.FeatureSpec {
	spec := synth.DefaultFeatureSpec()
	spec.Features = append(spec.Features, f)
	return spec
}

// TestAttackAgentIdentifyingFeatureSpec: a job whose feature spec would
// read identifying fields or free text (a patient's name, address, notes,
// birth date) is refused by the admin API when it is created (400,
// counted, audited, no job). A coordinator that offers one anyway (it
// cannot be written in the wire schema, which has no such field: so a
// feature kind this agent does not know, a FHIR path to the name where a
// LOINC code belongs, free text where condition codes belong) is declined
// by the agent with reason "spec", counted in its metrics, and nothing of
// the site's data leaves: no update, statistics or evaluation reaches the
// coordinator, and the egress log shows none. The same agent trains and
// sends an update for an acceptable spec, so the declines are the spec's.
func TestAttackAgentIdentifyingFeatureSpec(t *testing.T) {
	f := fed(t)
	bad := f.count(t, "admin_bad_requests_total")
	auditFrom := f.auditSize(t)
	specs := []map[string]any{
		{"name": "patient_name", "field": "name"},
		{"name": "home", "kind": "address"},
		{"name": "notes", "field": "note"},
		{"name": "dob", "field": "birth_date"},
		{"name": "mrn", "kind": "identifier"},
	}
	for i, feat := range specs {
		spec := jobSpec(fmt.Sprintf("phi-%d", i), 1, map[string]any{"features": map[string]any{
			"features": []map[string]any{{"name": "age", "kind": "age", "scale": 10}, feat}, "label": map[string]any{"kind": "deceased"}}})
		status, body := f.api(t, http.MethodPost, "/v1/jobs", spec, nil)
		if status != http.StatusBadRequest || !strings.Contains(body, "identifying field") {
			t.Fatalf("a job reading %v: answered %d %s, want 400 naming the identifying field", feat, status, body)
		}
		if status, _ := f.api(t, http.MethodGet, fmt.Sprintf("/v1/jobs/phi-%d", i), nil, nil); status != http.StatusNotFound {
			t.Fatalf("the refused job phi-%d exists (%d)", i, status)
		}
	}
	bad.grew(t, float64(len(specs)))
	f.audited(t, auditFrom, len(specs), "the refused jobs", func(e auditEntry) bool {
		return e.Action == "POST /v1/jobs" && e.Status == http.StatusBadRequest
	})

	t.Parallel()
	p := newPKI(t, f.bin)
	s := startScripted(t, p)
	a := startAgent(t, f.bin, p, "st-phi", s.addr, 150)
	badOffers := []*pb.TaskOffer{
		trainOffer(s, "phi-kind", withFeature(&pb.Feature{Name: "patient_name", Kind: pb.FeatureKind(100), Scale: 1})),
		trainOffer(s, "phi-path", withFeature(&pb.Feature{Name: "given_name", Kind: pb.FeatureKind_FEATURE_KIND_OBS_LAST, Loinc: "Patient.name.given", Scale: 1})),
		trainOffer(s, "phi-text", withFeature(&pb.Feature{Name: "dx", Kind: pb.FeatureKind_FEATURE_KIND_CONDITION_FLAG,
			ConditionCodes: []string{"see note: lives at 12 Elm St"}, Scale: 1})),
	}
	stats := trainOffer(s, "phi-stats", withFeature(&pb.Feature{Name: "patient_name", Kind: pb.FeatureKind(100), Scale: 1}))
	stats.Kind, stats.Model, stats.ModelSpec = pb.TaskKind_TASK_KIND_STATS, nil, nil
	badOffers = append(badOffers, stats)
	declined := metric(t, a.metricsAddr, "cohort_agent_rounds_declined_total", "reason", "spec")
	s.queue(badOffers...)
	s.queue(trainOffer(s, "control", synth.DefaultFeatureSpec()))
	waitFor(t, 60*time.Second, "the control job's update", func() (bool, string) {
		a.p.checkAlive(t)
		n := len(s.got(func(e *pb.Envelope) bool { return e.GetUpdateUpload().GetJobId() == "control" }))
		return n > 0, fmt.Sprintf("%d frames received", len(s.got(func(*pb.Envelope) bool { return true })))
	})
	for _, o := range badOffers {
		ds := s.got(func(e *pb.Envelope) bool {
			d := e.GetDecline()
			return d.GetJobId() == o.GetJobId() && d.GetRound() == o.GetRound()
		})
		if len(ds) != 1 || ds[0].GetDecline().GetReason() != pb.DeclineReason_DECLINE_REASON_SPEC {
			t.Fatalf("job %s: declines %v, want one with reason SPEC", o.GetJobId(), ds)
		}
	}
	leaked := s.got(func(e *pb.Envelope) bool {
		switch {
		case e.GetUpdateUpload() != nil:
			return e.GetUpdateUpload().GetJobId() != "control"
		case e.GetStatsUpload() != nil, e.GetEvalUpload() != nil, e.GetSecaggMessage() != nil:
			return true
		}
		return false
	})
	if len(leaked) > 0 {
		t.Fatalf("the agent sent data for a refused spec: %v", leaked)
	}
	if got := metric(t, a.metricsAddr, "cohort_agent_rounds_declined_total", "reason", "spec"); got < declined+float64(len(badOffers)) {
		t.Fatalf("cohort_agent_rounds_declined_total{reason=spec} = %v, want %v", got, declined+float64(len(badOffers)))
	}
	lf, err := os.Open(filepath.Join(a.dataDir, "egress.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	recs, badLines, err := egress.ReadLog(lf, egress.Filter{})
	if err != nil || len(badLines) > 0 {
		t.Fatalf("egress log: %v %v", err, badLines)
	}
	for _, r := range recs {
		switch r.Kind {
		case egress.KindUpdateHeader, egress.KindUpdateBody:
			if r.Job != "control" {
				t.Fatalf("the egress log shows an update of %s leaving", r.Job)
			}
		case egress.KindStats, egress.KindEval, egress.KindSecAgg:
			t.Fatalf("the egress log shows %s leaving", r.Kind)
		}
	}
	a.healthy(t)
}

// TestAttackAgentModelDigestMismatch: a coordinator (or a man in the middle with
// a coordinator's key) offers a production version and serves weights that
// do not hash to its digest; offers one that lies about its size (16 GiB
// of weights); and offers a training round whose model blob claims 2^62
// bytes. The agent refuses each without allocating or writing the model:
// the refused versions are counted, the round is declined, the agent keeps
// serving its current version, and it neither panics nor stops.
func TestAttackAgentModelDigestMismatch(t *testing.T) {
	bin := buildBinary(t)
	t.Parallel()
	p := newPKI(t, bin)
	s := startScripted(t, p)
	good, goodRef, ms := logreg(weights(0.01))
	s.serveBlob(goodRef.GetSha256(), good)
	s.deploy(&pb.Deployment{JobId: "sepsis", Model: goodRef, ModelSpec: ms, Features: synth.DefaultFeatureSpec(), Round: 3})
	a := startAgent(t, bin, p, "st-tamper", s.addr, 0)
	a.waitDeployed(t, goodRef.GetSha256())

	t.Run("weights not matching their digest", func(t *testing.T) {
		refused := metric(t, a.metricsAddr, "cohort_agent_deployments_refused_total")
		_, ref, _ := logreg(weights(0.02))
		tampered := protocol.EncodeF32(weights(0.02))
		binaryPut(tampered, 0, 50) // the first weight becomes 50
		s.serveBlob(ref.GetSha256(), tampered)
		s.deploy(&pb.Deployment{JobId: "sepsis", Model: ref, ModelSpec: ms, Features: synth.DefaultFeatureSpec(), Round: 4})
		waitFor(t, 20*time.Second, "the tampered version to be refused", func() (bool, string) {
			v := metric(t, a.metricsAddr, "cohort_agent_deployments_refused_total")
			return v > refused, fmt.Sprint(v)
		})
		if len(s.got(func(e *pb.Envelope) bool { return e.GetModelRequest().GetSha256() == ref.GetSha256() })) == 0 {
			t.Fatal("the agent refused the version without downloading it: the digest check was not what refused it")
		}
		if _, err := os.Stat(filepath.Join(a.dataDir, "models", "sepsis", ref.GetSha256()+".f32")); !os.IsNotExist(err) {
			t.Fatalf("the tampered weights were written to disk (%v)", err)
		}
		a.waitDeployed(t, goodRef.GetSha256())
	})
	t.Run("a size lie", func(t *testing.T) {
		refused := metric(t, a.metricsAddr, "cohort_agent_deployments_refused_total")
		huge := &pb.BlobRef{Sha256: strings.Repeat("ab", 32), Size: 4 * (1<<32 - 1), Encoding: pb.Encoding_ENCODING_F32LE}
		hugeSpec := &pb.ModelSpec{Kind: "logreg", NumFeatures: ms.GetNumFeatures(), NumParams: 1<<32 - 1}
		s.deploy(&pb.Deployment{JobId: "sepsis", Model: huge, ModelSpec: hugeSpec, Features: synth.DefaultFeatureSpec(), Round: 5})
		waitFor(t, 20*time.Second, "the oversized version to be refused", func() (bool, string) {
			v := metric(t, a.metricsAddr, "cohort_agent_deployments_refused_total")
			return v > refused, fmt.Sprint(v)
		})
		if len(s.got(func(e *pb.Envelope) bool { return e.GetModelRequest().GetSha256() == huge.GetSha256() })) > 0 {
			t.Fatal("the agent asked for the oversized model")
		}
		a.waitDeployed(t, goodRef.GetSha256())
	})
	t.Run("a training round with a 2^62-byte model", func(t *testing.T) {
		declined := metric(t, a.metricsAddr, "cohort_agent_rounds_declined_total", "reason", "model")
		offer := trainOffer(s, "huge-model", synth.DefaultFeatureSpec())
		offer.Model = &pb.BlobRef{Sha256: strings.Repeat("cd", 32), Size: 1 << 62, Encoding: pb.Encoding_ENCODING_F32LE}
		s.queue(offer)
		waitFor(t, 20*time.Second, "the round to be declined", func() (bool, string) {
			a.p.checkAlive(t)
			v := metric(t, a.metricsAddr, "cohort_agent_rounds_declined_total", "reason", "model")
			return v > declined, fmt.Sprint(v)
		})
		if len(s.got(func(e *pb.Envelope) bool { return e.GetModelRequest().GetJobId() == "huge-model" })) > 0 {
			t.Fatal("the agent asked for the oversized model")
		}
	})
	a.healthy(t)
	a.waitDeployed(t, goodRef.GetSha256())
}

// binaryPut sets weight i of an f32le blob to v.
func binaryPut(blob []byte, i int, v float32) {
	copy(blob[4*i:], protocol.EncodeF32([]float32{v}))
}

// TestAttackAgentPredictWithoutToken: local inference refuses, with
// 401, a request without a token, with an empty, a wrong, a longer or a
// shorter token, with the token under another scheme, in the query or in a
// cookie; each refusal is counted in the agent's metrics, and the right
// token is answered. The agent refuses to serve local inference on an
// address other than loopback at all.
func TestAttackAgentPredictWithoutToken(t *testing.T) {
	bin := buildBinary(t)
	t.Parallel()
	p := newPKI(t, bin)
	s := startScripted(t, p)
	body, ref, ms := logreg(weights(0.01))
	s.serveBlob(ref.GetSha256(), body)
	s.deploy(&pb.Deployment{JobId: "sepsis", Model: ref, ModelSpec: ms, Features: synth.DefaultFeatureSpec(), Round: 1})
	a := startAgent(t, bin, p, "st-predict", s.addr, 0)
	a.waitDeployed(t, ref.GetSha256())

	attempts := []struct {
		name, auth string
		edit       func(*http.Request)
	}{
		{"no token", "", nil},
		{"empty token", "Bearer ", nil},
		{"wrong token", "Bearer wrong-token-0123456789abcdef", nil},
		{"longer token", "Bearer " + a.token + "x", nil},
		{"shorter token", "Bearer " + a.token[:len(a.token)-1], nil},
		{"Basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+a.token)), nil},
		{"token in the query", "", func(r *http.Request) { r.URL.RawQuery = "token=" + a.token + "&access_token=" + a.token }},
		{"token in a cookie", "", func(r *http.Request) { r.Header.Set("Cookie", "token="+a.token) }},
	}
	refused := metric(t, a.metricsAddr, "cohort_agent_predictions_refused_total")
	for _, at := range attempts {
		status, body := a.predict(t, at.auth, patientFeatures(), at.edit)
		if status != http.StatusUnauthorized || !strings.Contains(body, "bearer token is required") || strings.Contains(body, "risk") {
			t.Fatalf("%s: answered %d %s, want 401", at.name, status, body)
		}
	}
	if got := metric(t, a.metricsAddr, "cohort_agent_predictions_refused_total"); got != refused+float64(len(attempts)) {
		t.Fatalf("cohort_agent_predictions_refused_total = %v, want %v", got, refused+float64(len(attempts)))
	}
	status, out := a.predict(t, "Bearer "+a.token, patientFeatures(), nil)
	var pred agent.Prediction
	if status != http.StatusOK || json.Unmarshal([]byte(out), &pred) != nil || pred.Model != ref.GetSha256() {
		t.Fatalf("the right token: %d %s", status, out)
	}
	a.healthy(t)

	t.Run("not on loopback", func(t *testing.T) {
		dir := t.TempDir()
		tokFile := filepath.Join(dir, "predict.token")
		os.WriteFile(tokFile, []byte(a.token), 0o600)
		cfg, _ := json.Marshal(map[string]any{"data_dir": filepath.Join(dir, "data"), "coordinators": []string{s.addr},
			"predict_addr": "0.0.0.0:0", "predict_token_file": tokFile})
		cfgFile := filepath.Join(dir, "agent.json")
		os.WriteFile(cfgFile, cfg, 0o600)
		certFile, keyFile := p.issue(t, pki.RoleSite, "st-exposed")
		cmd := exec.Command(bin, "agent", "--config", cfgFile, "--ca", filepath.Join(p.dir, "ca.crt"), "--cert", certFile, "--key", keyFile)
		done := make(chan struct{})
		var (
			out []byte
			err error
		)
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatal("an agent configured to serve local inference on 0.0.0.0 kept running")
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(out), "not a loopback address") {
			t.Fatalf("an agent serving local inference on 0.0.0.0: %v\n%s", err, out)
		}
	})
}
