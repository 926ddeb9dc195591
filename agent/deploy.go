package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/train"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"google.golang.org/protobuf/encoding/protojson"
)

// Deployment: a site follows the production version of the jobs its
// config lists (Config.Deploy). Between tasks, at most every DeployPoll,
// it asks the coordinator for each job's production version; a new one
// is downloaded (resumably, like any model), checked against the digest
// the registry names, written to DataDir/models/JOB/DIGEST.f32 with its
// deployment record, and only then made current: DataDir/models/JOB/
// current.json is replaced by a rename, and the in-memory model is
// swapped in one atomic store, so a prediction uses either the old
// version or the new one, never a mix. The previous version stays on disk
// (and is named in current.json) for a rollback; older ones are removed.
// A restarted agent serves its current versions before it reaches any
// coordinator.

// ErrDeployment: a production version the site refuses (its weights do not
// match the digest, or its spec does not fit).
var ErrDeployment = errors.New("deployment refused")

// defaultDeployPoll is how often a site asks for its jobs' production
// versions.
const defaultDeployPoll = 30 * time.Second

// deployed is a production version running at this site.
type deployed struct {
	Job            string  `json:"job"`
	Digest         string  `json:"digest"`
	Round          uint64  `json:"round"`
	AlertThreshold float64 `json:"alert_threshold,omitempty"`
	// Previous is the version this one replaced ("" for none); its files
	// stay for a rollback.
	Previous string    `json:"previous,omitempty"`
	Since    time.Time `json:"since"`

	spec     *pb.FeatureSpec
	model    *pb.ModelSpec
	weights  []float32
	features []string
	// model is built once, on first use (its Predict is safe for
	// concurrent use).
	built func() (train.Trainer, error)
	// mon tracks drift and scores at this site (monitor.go); nil when
	// the site had no eligible records to take as the reference.
	mon *monitor
}

// monitorFor takes the site's eligible records as d's reference
// distribution.
func (a *Agent) monitorFor(d *deployed) {
	if ds, err := a.dataset(d.spec); err == nil {
		d.mon = newMonitor(ds)
	}
}

// currentRecord is DataDir/models/JOB/current.json.
type currentRecord struct {
	Digest   string    `json:"digest"`
	Previous string    `json:"previous,omitempty"`
	Since    time.Time `json:"since"`
}

func (a *Agent) modelsDir(job string) string { return filepath.Join(a.cfg.DataDir, "models", job) }

// Deployed returns the digest and round of the production version of job
// this site runs; ok is false when it runs none.
func (a *Agent) Deployed(job string) (digest string, round uint64, ok bool) {
	if d := a.deployedModel(job); d != nil {
		return d.Digest, d.Round, true
	}
	return "", 0, false
}

// deployedModel returns job's current version, or nil.
func (a *Agent) deployedModel(job string) *deployed {
	if p, ok := a.deployments.Load(job); ok {
		return p.(*atomic.Pointer[deployed]).Load()
	}
	return nil
}

func (a *Agent) setDeployed(d *deployed) {
	p, _ := a.deployments.LoadOrStore(d.Job, new(atomic.Pointer[deployed]))
	p.(*atomic.Pointer[deployed]).Store(d)
}

// loadDeployments restores the current version of every followed job from
// disk (at start, before any coordinator is reached). A version whose
// files are missing or do not match their digest is not served.
func (a *Agent) loadDeployments() {
	for _, job := range a.cfg.Deploy {
		b, err := os.ReadFile(filepath.Join(a.modelsDir(job), "current.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		var cur currentRecord
		if err == nil {
			err = json.Unmarshal(b, &cur)
		}
		if err == nil {
			var d *deployed
			if d, err = a.readVersion(job, cur.Digest); err == nil {
				d.Previous, d.Since = cur.Previous, cur.Since
				a.monitorFor(d)
				a.setDeployed(d)
				a.log.Info("serving the deployed model", "job", job, "model", d.Digest[:12], "round", d.Round)
				continue
			}
		}
		a.log.Warn("the deployed model on disk cannot be served; waiting for the coordinator's", "job", job, "err", err)
	}
}

// readVersion reads a version's weights and record from disk, checking the
// weights against the digest.
func (a *Agent) readVersion(job, digest string) (*deployed, error) {
	dir := a.modelsDir(job)
	body, err := os.ReadFile(filepath.Join(dir, digest+".f32"))
	if err != nil {
		return nil, err
	}
	if protocol.Digest(body) != digest {
		return nil, fmt.Errorf("%w: the weights on disk do not match %.12s", ErrDeployment, digest)
	}
	rec, err := os.ReadFile(filepath.Join(dir, digest+".json"))
	if err != nil {
		return nil, err
	}
	var dep pb.Deployment
	if err := protojson.Unmarshal(rec, &dep); err != nil {
		return nil, fmt.Errorf("deployment record: %w", err)
	}
	return newDeployed(&dep, body)
}

// newDeployed checks a deployment against its weights.
func newDeployed(dep *pb.Deployment, body []byte) (*deployed, error) {
	if protocol.Digest(body) != dep.GetModel().GetSha256() {
		// Downloads and reads from disk check this already; the record
		// itself must name these weights too.
		return nil, fmt.Errorf("%w: the weights do not match the deployment's digest", ErrDeployment)
	}
	w, err := protocol.DecodeF32(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDeployment, err)
	}
	ms, spec := dep.GetModelSpec(), dep.GetFeatures()
	switch {
	case ms.GetKind() != "logreg" && ms.GetKind() != "mlp":
		return nil, fmt.Errorf("%w: model kind %q", ErrDeployment, ms.GetKind())
	case len(w) != int(ms.GetNumParams()) || int(ms.GetNumFeatures()) != len(spec.GetFeatures()):
		return nil, fmt.Errorf("%w: %d weights, %d features for a %s of %d parameters over %d features", ErrDeployment,
			len(w), len(spec.GetFeatures()), ms.GetKind(), ms.GetNumParams(), ms.GetNumFeatures())
	case !(dep.GetAlertThreshold() >= 0 && dep.GetAlertThreshold() < 1):
		return nil, fmt.Errorf("%w: alert threshold %v", ErrDeployment, dep.GetAlertThreshold())
	}
	if err := features.ValidateSpec(spec); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDeployment, err)
	}
	for _, x := range w {
		if x != x || x > 1e30 || x < -1e30 {
			return nil, fmt.Errorf("%w: a weight is not finite", ErrDeployment)
		}
	}
	d := &deployed{Job: dep.GetJobId(), Digest: dep.GetModel().GetSha256(), Round: dep.GetRound(), AlertThreshold: dep.GetAlertThreshold(),
		spec: spec, model: ms, weights: w}
	for _, f := range spec.GetFeatures() {
		d.features = append(d.features, f.GetName())
	}
	d.built = sync.OnceValues(d.build)
	return d, nil
}

// trainer is the version's model with its weights, built on first use.
func (d *deployed) trainer() (train.Trainer, error) {
	if d.built == nil {
		return d.build()
	}
	return d.built()
}

func (d *deployed) build() (train.Trainer, error) {
	m, err := NewTrainer(d.model, len(d.spec.GetFeatures()))
	if err != nil {
		return nil, err
	}
	return m, m.SetWeights(d.weights)
}

// checkDeployments asks, for every followed job whose last check is older
// than DeployPoll, whether its production version changed, and deploys a
// new one. A refused version (digest mismatch, bad spec) is logged and
// counted; the current one stays. Only session errors are returned.
func (a *Agent) checkDeployments(ctx context.Context, s *session) error {
	poll := time.Duration(a.cfg.DeployPoll)
	if poll <= 0 {
		poll = defaultDeployPoll
	}
	now := a.now()
	for _, job := range a.cfg.Deploy {
		if last, ok := a.deployChecked[job]; ok && now.Sub(last) < poll {
			continue
		}
		a.deployChecked[job] = now
		err := a.deploy(ctx, s, job)
		if err == nil {
			err = a.reportDrift(s, job)
		}
		var re *protocol.RemoteError
		switch {
		case err == nil:
		case errors.As(err, &re) && re.Code == pb.ErrorCode_ERROR_CODE_NOT_FOUND:
			a.log.Debug("no production version to deploy yet", "job", job)
		case errors.Is(err, ErrDeployment):
			a.mu.Lock()
			a.stats.DeploymentsRefused++
			a.mu.Unlock()
			a.log.Warn("refused a production model; keeping the current one", "job", job, "err", err)
		case isTransport(err):
			return err
		default:
			a.log.Warn("deployment check failed", "job", job, "err", err)
		}
	}
	return nil
}

// minDriftScored is how many patients a site scores with a version before
// it reports their drift.
const minDriftScored = 20

// reportDrift tells the coordinator the largest population stability
// index of job's deployed version here (monitor.go), once enough patients
// were scored: numbers only.
func (a *Agent) reportDrift(s *session, job string) error {
	d := a.deployedModel(job)
	if d == nil || d.mon == nil {
		return nil
	}
	d.mon.mu.Lock()
	n := d.mon.n
	d.mon.mu.Unlock()
	if n < minDriftScored {
		return nil
	}
	maxPSI := 0.0
	for _, v := range d.mon.psi() {
		maxPSI = max(maxPSI, v)
	}
	resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_DriftReport{DriftReport: &pb.DriftReport{
		JobId: job, ModelSha256: d.Digest, Scored: n, MaxPsi: maxPSI}}})
	if err != nil {
		return err
	}
	if resp.GetAck() == nil {
		return fmt.Errorf("drift report answer: %w", protocol.ErrUnexpected)
	}
	return nil
}

// deploy fetches job's production version if it is not the current one,
// and switches to it.
func (a *Agent) deploy(ctx context.Context, s *session, job string) error {
	cur := a.deployedModel(job)
	current := ""
	if cur != nil {
		current = cur.Digest
	}
	resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_DeploymentRequest{DeploymentRequest: &pb.DeploymentRequest{
		JobId: job, CurrentSha256: current}}})
	if err != nil {
		return err
	}
	dep := resp.GetDeployment()
	if dep == nil {
		return nil // NoTask: unchanged
	}
	ref := dep.GetModel()
	if dep.GetJobId() != job || ref.GetEncoding() != pb.Encoding_ENCODING_F32LE || !isHexDigest(ref.GetSha256()) ||
		ref.GetSize() != 4*uint64(dep.GetModelSpec().GetNumParams()) || ref.GetSize() > maxModelBytes {
		return fmt.Errorf("%w: the deployment does not describe a model of this job", ErrDeployment)
	}
	body, err := a.download(ctx, s, job, ref)
	if errors.Is(err, errDigestMismatch) {
		return fmt.Errorf("%w: %w", ErrDeployment, err)
	}
	if err != nil {
		return err
	}
	d, err := newDeployed(dep, body)
	if err != nil {
		return err
	}
	if err := a.writeVersion(dep, body); err != nil {
		return fmt.Errorf("%w: %w", errLocal, err)
	}
	d.Previous, d.Since = current, a.now()
	if err := a.makeCurrent(job, d); err != nil {
		return fmt.Errorf("%w: %w", errLocal, err)
	}
	a.monitorFor(d)
	a.setDeployed(d)
	a.mu.Lock()
	a.stats.Deployments++
	a.mu.Unlock()
	a.writeStatus()
	a.log.Info("deployed a new production model", "job", job, "model", d.Digest[:12], "round", d.Round, "previous", short(current))
	return nil
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// writeVersion writes a version's weights and record, each through a
// temporary file, synced, and renamed.
func (a *Agent) writeVersion(dep *pb.Deployment, body []byte) error {
	dir := a.modelsDir(dep.GetJobId())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	rec, err := protojson.Marshal(dep)
	if err != nil {
		return err
	}
	d := dep.GetModel().GetSha256()
	if err := writeFileAtomic(filepath.Join(dir, d+".f32"), body); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, d+".json"), rec)
}

// makeCurrent points current.json at d and removes the versions that are
// neither d nor the one it replaced.
func (a *Agent) makeCurrent(job string, d *deployed) error {
	dir := a.modelsDir(job)
	b, err := json.Marshal(currentRecord{Digest: d.Digest, Previous: d.Previous, Since: d.Since})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "current.json"), b); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil // the switch is done; cleaning up can wait
	}
	keep := []string{d.Digest, d.Previous}
	for _, e := range ents {
		name := e.Name()
		digest := strings.TrimSuffix(strings.TrimSuffix(name, ".f32"), ".json")
		if isHexDigest(digest) && !slices.Contains(keep, digest) {
			os.Remove(filepath.Join(dir, name))
		}
	}
	return nil
}

// writeFileAtomic writes b to path through a synced temporary file and a
// rename, so that path holds the old content or the new, never part.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
