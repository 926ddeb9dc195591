package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/protocol/featurespec"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/secagg"
	"google.golang.org/protobuf/proto"
)

// JobState is a job's lifecycle state.
type JobState string

// Job states.
const (
	JobRunning JobState = "running"
	// JobPaused: no new round opens; a round already open runs to its end.
	JobPaused    JobState = "paused"
	JobDone      JobState = "done"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// active reports whether a job's open round, if any, may still take
// updates and close.
func (s JobState) active() bool { return s == JobRunning || s == JobPaused }

// RoundState is a round's lifecycle state.
type RoundState string

// Round states.
const (
	RoundOpen      RoundState = "open"
	RoundCommitted RoundState = "committed"
	RoundFailed    RoundState = "failed"
)

// Site is an enrolled hospital. Its id is the common name of its certificate.
type Site struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	// Revoked is when the site was revoked: its connections close and
	// new ones are refused. Zero while it is enrolled.
	Revoked time.Time `json:"revoked,omitzero"`
	// CertSerial and CertExpires are those of the last certificate the
	// cluster issued the site (enrollment or renewal).
	CertSerial  string    `json:"cert_serial,omitempty"`
	CertExpires time.Time `json:"cert_expires,omitzero"`
}

// NodeInfo is what a coordinator publishes about itself in the log.
type NodeInfo struct {
	ID        string `json:"id"`
	AgentAddr string `json:"agent_addr"`
	// StatusAddr is the node's status HTTP address, if it serves one, so
	// followers can send readers to the leader.
	StatusAddr string `json:"status_addr,omitempty"`
	// AdminAddr is the node's admin API (HTTPS) address, if it serves one.
	AdminAddr string `json:"admin_addr,omitempty"`
	// AuditKey is the node's Ed25519 public key (base64) that signs its
	// audit checkpoints.
	AuditKey string `json:"audit_key,omitempty"`
	// Version is the node's build (cohort version) when it published
	// this, at its last election.
	Version string `json:"version,omitempty"`
}

// ModelSpec names a model architecture.
type ModelSpec struct {
	// Kind is the architecture: "logreg", or "mlp" (a multilayer
	// perceptron, started from a seeded random initialization).
	Kind string `json:"kind"`
	// NumFeatures is the width of the feature vector.
	NumFeatures int `json:"num_features"`
	// Hidden are the widths of an MLP's hidden layers.
	Hidden []int `json:"hidden,omitempty"`
	// Activation of an MLP's hidden layers: "relu" (default), "tanh" or
	// "sigmoid". Dropout is the rate applied to them during training.
	Activation string  `json:"activation,omitempty"`
	Dropout    float64 `json:"dropout,omitempty"`
}

// NumParams is the length of the flat weight vector: for an MLP, every
// layer's weights and biases, down to one output.
func (m ModelSpec) NumParams() int {
	if m.Kind != "mlp" {
		return m.NumFeatures + 1
	}
	n, in := 0, m.NumFeatures
	for _, h := range append(slices.Clone(m.Hidden), 1) {
		n += in*h + h
		in = h
	}
	return n
}

// Wire is the model's shape as task offers carry it.
func (m ModelSpec) Wire() *pb.ModelSpec {
	w := &pb.ModelSpec{Kind: m.Kind, NumFeatures: uint32(m.NumFeatures), NumParams: uint32(m.NumParams()),
		Activation: m.Activation, Dropout: m.Dropout}
	for _, h := range m.Hidden {
		w.Hidden = append(w.Hidden, uint32(h))
	}
	if m.Kind == "mlp" && w.Activation == "" {
		w.Activation = "relu"
	}
	return w
}

// ModelBytes is the size of the model's flat float32 weight vector.
func (m ModelSpec) ModelBytes() int64 { return 4 * int64(m.NumParams()) }

// TrainParams are the job's local training parameters, sent to sites.
type TrainParams struct {
	LocalEpochs        int     `json:"local_epochs"`
	LearningRate       float64 `json:"learning_rate"`
	BatchSize          int     `json:"batch_size"`
	Seed               uint64  `json:"seed"`
	ValidationFraction float64 `json:"validation_fraction"`
	MinRecords         int     `json:"min_records"`
	// Optimizer is "sgd" (default) or "adam"; the Adam parameters default
	// to 0.9, 0.999 and 1e-8.
	Optimizer string  `json:"optimizer,omitempty"`
	AdamBeta1 float64 `json:"adam_beta1,omitempty"`
	AdamBeta2 float64 `json:"adam_beta2,omitempty"`
	AdamEps   float64 `json:"adam_eps,omitempty"`
	// PosWeight weighs positive examples in the local loss, for rare
	// outcomes (0 means 1).
	PosWeight float64 `json:"pos_weight,omitempty"`
}

// FeatureSpec wraps the wire FeatureSpec so that config files and Raft
// commands carry it in the operator form of protocol/featurespec (YAML or
// JSON: kinds as words, durations as "48h").
type FeatureSpec struct{ *pb.FeatureSpec }

// MarshalJSON writes the operator form.
func (f FeatureSpec) MarshalJSON() ([]byte, error) {
	if f.FeatureSpec == nil {
		return []byte("null"), nil
	}
	return json.Marshal(featurespec.FromWire(f.FeatureSpec))
}

// UnmarshalJSON reads the operator form, refusing identifying fields.
func (f *FeatureSpec) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		f.FeatureSpec = nil
		return nil
	}
	spec, err := featurespec.Parse(b)
	if err != nil {
		return err
	}
	f.FeatureSpec = spec
	return nil
}

// Duration is a time.Duration that reads and writes as a Go duration string
// ("90s") in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// JobSpec is what an operator asks for: a model trained over some rounds.
type JobSpec struct {
	// ID names the job; lowercase letters, digits, '-', '_' and '.'.
	ID string `json:"id"`
	// Kind is JobKindTrain ("train", the default when empty) or
	// JobKindAnalytics ("analytics": one statistics round, no model; see
	// analytics.go).
	Kind string `json:"kind,omitempty"`
	// Analytics is an analytics job's section.
	Analytics *AnalyticsSpec `json:"analytics,omitempty"`
	// Evaluation is an evaluation job's section (kind "evaluation":
	// one round scoring a model version at the sites; see evaluation.go).
	Evaluation *EvaluationSpec `json:"evaluation,omitempty"`
	// Rounds is the number of rounds to commit.
	Rounds int `json:"rounds"`
	// MinSites is how many site updates close a round; at the deadline a
	// round with fewer fails and is retried.
	MinSites int `json:"min_sites"`
	// RoundTimeout is each round's deadline after it opens.
	RoundTimeout Duration `json:"round_timeout"`
	// MaxAttempts bounds the failed attempts of one round before the job fails.
	MaxAttempts int `json:"max_attempts"`
	// Strategy is the aggregation rule and its parameters: a name
	// ("fedavg") or {"name", "params", "norm_bound"}; see
	// aggregator.Names and aggregator.Defaults.
	Strategy StrategySpec `json:"strategy"`
	// Sampling chooses the sites asked to take part in each round; the
	// zero value asks every enrolled site.
	Sampling Sampling    `json:"sampling,omitzero"`
	Model    ModelSpec   `json:"model"`
	Train    TrainParams `json:"train"`
	Features FeatureSpec `json:"features"`
	// Privacy, when set, makes the job differentially private (central
	// DP-FedAvg) under an ε budget; see privacy.go.
	Privacy *PrivacySpec `json:"privacy,omitempty"`
	// SecureAggregation, when set, aggregates each training round with
	// secure aggregation: the coordinator learns only the sum of the
	// sites' updates; see secagg.go.
	SecureAggregation *SecureAggregationSpec `json:"secure_aggregation,omitempty"`
	// AlertThreshold is the predicted risk at or above which a site that
	// runs the job's production model raises an alert (0: none).
	AlertThreshold float64 `json:"alert_threshold,omitempty"`
	// Retrain, when set, starts a new training run of the job on a
	// schedule or on drift (retrain.go).
	Retrain *RetrainSpec `json:"retrain,omitempty"`
}

// StrategySpec is a job's aggregation rule. In JSON it is a rule name
// ("fedadam") or an object {"name", "params", "norm_bound"}.
type StrategySpec struct{ aggregator.Spec }

// UnmarshalJSON reads a name or an object, refusing unknown fields.
func (s *StrategySpec) UnmarshalJSON(b []byte) error {
	var name string
	if json.Unmarshal(b, &name) == nil {
		s.Spec = aggregator.Spec{Name: name}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var sp aggregator.Spec
	if err := dec.Decode(&sp); err != nil {
		return fmt.Errorf("strategy: want a rule name or {\"name\", \"params\", \"norm_bound\"}: %w", err)
	}
	s.Spec = sp
	return nil
}

// MarshalJSON writes a bare name when there is nothing else to say.
func (s StrategySpec) MarshalJSON() ([]byte, error) {
	if len(s.Params) == 0 && s.NormBound == 0 {
		return json.Marshal(s.Name)
	}
	return json.Marshal(s.Spec)
}

// Strategy builds the rule.
func (s StrategySpec) Strategy() (aggregator.Strategy, error) { return aggregator.New(s.Spec) }

func (s StrategySpec) check(minSites int) error {
	st, err := s.Strategy()
	if err != nil {
		return err
	}
	return aggregator.CheckByzantine(st, minSites)
}

// ProxMu is the FedProx proximal coefficient sites train with (0 unless
// the rule is fedprox).
func (s StrategySpec) ProxMu() float64 {
	st, err := s.Strategy()
	if err != nil {
		return 0
	}
	return aggregator.ProximalMu(st)
}

// Sampling chooses which sites a round asks. At most one of Fraction and
// Count is set. The leader draws the sites at random (seeded by the job's
// seed, the round and the attempt) among the available ones (those that
// contacted it within the last two poll waits; all enrolled sites if fewer
// than MinSites did), and records its choice in the round's open entry.
type Sampling struct {
	// Fraction of the available sites asked, in (0, 1]; rounded up.
	Fraction float64 `json:"fraction,omitempty"`
	// Count of sites asked.
	Count int `json:"count,omitempty"`
}

// size is how many of n available sites a round asks (n when unset).
func (s Sampling) size(n int) int {
	switch {
	case s.Count > 0:
		return min(s.Count, n)
	case s.Fraction > 0:
		return min(n, int(math.Ceil(s.Fraction*float64(n))))
	}
	return n
}

// DefaultJobSpec returns a spec with every knob but ID, Model and Features
// set to its default.
func DefaultJobSpec() JobSpec {
	return JobSpec{
		Rounds:       10,
		MinSites:     1,
		RoundTimeout: Duration(2 * time.Minute),
		MaxAttempts:  3,
		Strategy:     StrategySpec{aggregator.Spec{Name: "fedavg"}},
		Model:        ModelSpec{Kind: "logreg"},
		Train: TrainParams{
			LocalEpochs:        5,
			LearningRate:       0.1,
			BatchSize:          32,
			Seed:               1,
			ValidationFraction: 0.2,
			MinRecords:         20,
		},
	}
}

// Validate reports the first problem with the spec. maxModelBytes is the
// largest model accepted (0 = no limit); the FSM checks with no limit, so
// that the nodes' configurations cannot make them disagree.
// checkCohort refuses a job that asks sites to compute on cohorts smaller
// than the federation's floor k.
func (s JobSpec) checkCohort(k int) error {
	if s.Train.MinRecords < k {
		return fmt.Errorf("%w: train.min_records %d is below this federation's minimum cohort of %d: sites would train on, or report, groups of fewer than %d patients", ErrInvalidJob, s.Train.MinRecords, k, k)
	}
	return nil
}

func (s JobSpec) Validate(maxModelBytes int) error {
	switch s.Kind {
	case "", JobKindTrain:
		if s.Analytics != nil {
			return fmt.Errorf("%w: the analytics section is for kind %q jobs", ErrInvalidJob, JobKindAnalytics)
		}
		if s.Evaluation != nil {
			return fmt.Errorf("%w: the evaluation section is for kind %q jobs", ErrInvalidJob, JobKindEvaluation)
		}
	case JobKindAnalytics:
		return s.validateAnalytics()
	case JobKindEvaluation:
		return s.validateEvaluation()
	default:
		return fmt.Errorf("%w: kind %q: use %q, %q or %q", ErrInvalidJob, s.Kind, JobKindTrain, JobKindAnalytics, JobKindEvaluation)
	}
	switch {
	case !validID(s.ID):
		return fmt.Errorf("%w: job id %q: use 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalidJob, s.ID)
	case s.Rounds < 1:
		return fmt.Errorf("%w: rounds must be at least 1", ErrInvalidJob)
	case s.MinSites < 1:
		return fmt.Errorf("%w: min_sites must be at least 1", ErrInvalidJob)
	case s.RoundTimeout <= 0:
		return fmt.Errorf("%w: round_timeout must be positive", ErrInvalidJob)
	case s.MaxAttempts < 1:
		return fmt.Errorf("%w: max_attempts must be at least 1", ErrInvalidJob)
	case s.Strategy.check(s.MinSites) != nil:
		return fmt.Errorf("%w: strategy: %w", ErrInvalidJob, s.Strategy.check(s.MinSites))
	case s.Model.Kind != "logreg" && s.Model.Kind != "mlp":
		return fmt.Errorf("%w: model kind %q is not supported (supported: logreg, mlp)", ErrInvalidJob, s.Model.Kind)
	case s.Model.NumFeatures < 1 || s.Model.NumFeatures > maxLayerWidth:
		return fmt.Errorf("%w: model.num_features must be in [1, %d]", ErrInvalidJob, maxLayerWidth)
	case s.Model.Kind == "logreg" && len(s.Model.Hidden) > 0:
		return fmt.Errorf("%w: model.hidden is for kind mlp, not logreg", ErrInvalidJob)
	case s.Model.Kind == "mlp" && (len(s.Model.Hidden) < 1 || len(s.Model.Hidden) > maxHiddenLayers):
		return fmt.Errorf("%w: model.hidden: an mlp has 1 to %d hidden layers", ErrInvalidJob, maxHiddenLayers)
	case s.Model.Kind == "logreg" && (s.Model.Activation != "" || s.Model.Dropout != 0):
		return fmt.Errorf("%w: model.activation and model.dropout are for kind mlp", ErrInvalidJob)
	case !slices.Contains([]string{"", "relu", "tanh", "sigmoid"}, s.Model.Activation):
		return fmt.Errorf("%w: model.activation %q: use relu, tanh or sigmoid", ErrInvalidJob, s.Model.Activation)
	case !(s.Model.Dropout >= 0 && s.Model.Dropout < 1):
		return fmt.Errorf("%w: model.dropout must be in [0, 1)", ErrInvalidJob)
	case !slices.Contains([]string{"", "sgd", "adam"}, s.Train.Optimizer):
		return fmt.Errorf("%w: train.optimizer %q: use sgd or adam", ErrInvalidJob, s.Train.Optimizer)
	case !(s.Train.AdamBeta1 >= 0 && s.Train.AdamBeta1 < 1) || !(s.Train.AdamBeta2 >= 0 && s.Train.AdamBeta2 < 1):
		return fmt.Errorf("%w: train.adam_beta1 and adam_beta2 must be in [0, 1)", ErrInvalidJob)
	case !(s.Train.AdamEps >= 0 && s.Train.AdamEps < 1):
		return fmt.Errorf("%w: train.adam_eps must be in [0, 1)", ErrInvalidJob)
	case !(s.Train.PosWeight >= 0 && s.Train.PosWeight <= 1e6):
		return fmt.Errorf("%w: train.pos_weight must be in [0, 1e6]", ErrInvalidJob)
	case s.Privacy != nil && s.Privacy.validate(s.Strategy.Name, s.MinSites) != nil:
		return s.Privacy.validate(s.Strategy.Name, s.MinSites)
	case s.SecureAggregation != nil && s.SecureAggregation.validate(&s) != nil:
		return s.SecureAggregation.validate(&s)
	case s.Features.FeatureSpec == nil || len(s.Features.GetFeatures()) == 0:
		return fmt.Errorf("%w: features: at least one feature is required", ErrInvalidJob)
	case featurespec.Validate(s.Features.FeatureSpec) != nil:
		return fmt.Errorf("%w: features: %w", ErrInvalidJob, featurespec.Validate(s.Features.FeatureSpec))
	case len(s.Features.GetFeatures()) != s.Model.NumFeatures:
		return fmt.Errorf("%w: model.num_features is %d but the feature spec has %d features",
			ErrInvalidJob, s.Model.NumFeatures, len(s.Features.GetFeatures()))
	case s.Train.LocalEpochs < 1 || s.Train.LearningRate <= 0 || s.Train.BatchSize < 0:
		return fmt.Errorf("%w: train: local_epochs >= 1, learning_rate > 0 and batch_size >= 0 are required", ErrInvalidJob)
	case s.Sampling.Fraction < 0 || s.Sampling.Fraction > 1 || math.IsNaN(s.Sampling.Fraction):
		return fmt.Errorf("%w: sampling.fraction must be in (0, 1]", ErrInvalidJob)
	case s.Sampling.Count < 0:
		return fmt.Errorf("%w: sampling.count must not be negative", ErrInvalidJob)
	case s.Sampling.Count > 0 && s.Sampling.Fraction > 0:
		return fmt.Errorf("%w: sampling: set fraction or count, not both", ErrInvalidJob)
	case s.Sampling.Count > 0 && s.Sampling.Count < s.MinSites:
		return fmt.Errorf("%w: sampling.count %d is below min_sites %d: no round could close", ErrInvalidJob, s.Sampling.Count, s.MinSites)
	case s.Retrain != nil && s.Retrain.validate() != nil:
		return s.Retrain.validate()
	case !(s.AlertThreshold >= 0 && s.AlertThreshold < 1):
		return fmt.Errorf("%w: alert_threshold must be in [0, 1) (0: no alerts)", ErrInvalidJob)
	case s.Train.ValidationFraction < 0 || s.Train.ValidationFraction >= 1:
		return fmt.Errorf("%w: train.validation_fraction must be in [0, 1)", ErrInvalidJob)
	}
	for _, h := range s.Model.Hidden {
		if h < 1 || h > maxLayerWidth {
			return fmt.Errorf("%w: model.hidden: layer widths must be in [1, %d]", ErrInvalidJob, maxLayerWidth)
		}
	}
	if size := s.Model.ModelBytes(); maxModelBytes > 0 && size > int64(maxModelBytes) {
		return fmt.Errorf("%w: the model is %d bytes, above max_model_bytes (%d)", ErrModelTooLarge, size, maxModelBytes)
	}
	return nil
}

// Bounds on model shapes: they keep NumParams far from overflow.
const (
	maxLayerWidth   = 1 << 16
	maxHiddenLayers = 8
)

// Receipt records one accepted site update. The update's body is a blob the
// leader holds; the receipt is what Raft commits before the agent is acked.
type Receipt struct {
	Site    string       `json:"site"`
	Digest  string       `json:"digest"`
	Size    uint64       `json:"size"`
	Samples uint64       `json:"samples"`
	Metrics LocalMetrics `json:"metrics"`
	At      time.Time    `json:"at"`
	// Base is the digest of the global model the update was computed from.
	Base string `json:"base"`
	// Stats and CohortSize are a statistics round's answer (no body).
	Stats      []FeatureStats `json:"stats,omitempty"`
	CohortSize uint64         `json:"cohort_size,omitempty"`
	// Eval is an evaluation round's answer (no body).
	Eval *EvalReport `json:"eval,omitempty"`
}

// FeatureStats are one feature's count, sum and sum of squares at a site.
type FeatureStats struct {
	Count uint64  `json:"n"`
	Sum   float64 `json:"s"`
	SumSq float64 `json:"ss"`
	// Bins are an analytics job's histogram counts.
	Bins []uint64 `json:"b,omitempty"`
}

// Round kinds.
const (
	// KindTrain rounds train the model (numbered from 1).
	KindTrain = "train"
	// KindStats is the statistics round (number 0) that federated
	// normalization runs before training.
	KindStats = "stats"
)

// Normalization is what a statistics round committed: each feature's
// federated mean and standard deviation.
type Normalization struct {
	Mean   []float64 `json:"mean"`
	Std    []float64 `json:"std"`
	Count  []uint64  `json:"count"`
	Sites  []string  `json:"sites"`
	Cohort uint64    `json:"cohort"`
}

// LocalMetrics mirrors pb.LocalMetrics with JSON tags.
type LocalMetrics struct {
	TrainLoss   float64 `json:"train_loss"`
	ValAUROC    float64 `json:"val_auroc"`
	ValAccuracy float64 `json:"val_accuracy"`
	ValCount    uint64  `json:"val_count"`
}

// Round is one attempt at one round of a job.
type Round struct {
	Number uint64 `json:"number"`
	// Kind is KindTrain or KindStats ("" reads as train).
	Kind     string              `json:"kind,omitempty"`
	Attempt  int                 `json:"attempt"`
	State    RoundState          `json:"state"`
	Base     string              `json:"base"`
	Opened   time.Time           `json:"opened"`
	Deadline time.Time           `json:"deadline"`
	Closed   time.Time           `json:"closed,omitzero"`
	Receipts map[string]*Receipt `json:"receipts"`
	// Selected are the sites this round asks (empty: every enrolled site).
	Selected []string `json:"selected,omitempty"`
	// Declines are the sites that said they will not take part, with the
	// reason code.
	Declines map[string]string `json:"declines,omitempty"`
	// Result is the digest of the model this round committed.
	Result       string   `json:"result,omitempty"`
	Contributors []string `json:"contributors,omitempty"`
	Samples      uint64   `json:"samples,omitempty"`
	// MeanValAUROC is the sample-weighted mean of the sites' local
	// validation AUROC.
	MeanValAUROC float64 `json:"mean_val_auroc,omitempty"`
	FailReason   string  `json:"fail_reason,omitempty"`
	// SecAgg is a secure aggregation round's protocol server while the
	// round is open (replicated: see secagg.go; it is serialized in the
	// state's SecAgg map, not with the round, so that copies of a job for
	// readers stay small). SecAggProgress summarizes it for readers;
	// PhaseDeadline closes its current phase.
	SecAgg         *secagg.Server  `json:"-"`
	SecAggProgress *SecAggProgress `json:"secagg,omitempty"`
	PhaseDeadline  time.Time       `json:"phase_deadline,omitzero"`
}

// SecAggProgress is where a secure aggregation round's run stands.
type SecAggProgress struct {
	Phase secagg.Phase `json:"phase"`
	// Participants are the sites in the current phase, Pending those whose
	// message for it has not arrived, and MaskedInputs the masked updates
	// received so far.
	Participants int `json:"participants"`
	Pending      int `json:"pending"`
	MaskedInputs int `json:"masked_inputs"`
}

// progress summarizes the run.
func progress(srv *secagg.Server) *SecAggProgress {
	p := &SecAggProgress{Phase: srv.Phase(), Participants: len(srv.Participants()), Pending: len(srv.Pending())}
	switch p.Phase {
	case secagg.PhaseMaskedInput:
		p.MaskedInputs = p.Participants - p.Pending
	case secagg.PhaseUnmasking:
		p.MaskedInputs = p.Participants
	}
	return p
}

// Model is one committed global model: a reference to a blob (the
// weights as little-endian float32) that a majority of nodes held before
// the entry naming it was proposed.
type Model struct {
	Digest string `json:"digest"`
	Round  uint64 `json:"round"`
	Size   int64  `json:"size"`
	// The version's lineage (registry.go), set when its round commits:
	// the version it was trained from, when, by which rule, from which
	// sites' updates, and the job's spent ε as of it.
	Parent            string    `json:"parent,omitempty"`
	Committed         time.Time `json:"committed,omitzero"`
	Strategy          string    `json:"strategy,omitempty"`
	Contributors      []string  `json:"contributors,omitempty"`
	Samples           uint64    `json:"samples,omitempty"`
	MeanValAUROC      float64   `json:"mean_val_auroc,omitempty"`
	Epsilon           float64   `json:"epsilon,omitempty"`
	SecureAggregation bool      `json:"secure_aggregation,omitempty"`
	// Stage is the version's registry stage ("" reads as candidate).
	Stage Stage `json:"stage,omitempty"`
	// Evaluations are the federated evaluations of this version.
	Evaluations []*Evaluation `json:"evaluations,omitempty"`
}

// BlobRef names a blob by digest and size.
type BlobRef struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Job is a job's replicated state.
type Job struct {
	Spec JobSpec `json:"spec"`
	// Norm is set once a statistics round committed (federated
	// normalization).
	Norm *Normalization `json:"norm,omitempty"`
	// Results are what an analytics job committed.
	Results    *AnalyticsResult `json:"results,omitempty"`
	State      JobState         `json:"state"`
	Created    time.Time        `json:"created"`
	Finished   time.Time        `json:"finished,omitzero"`
	FailReason string           `json:"fail_reason,omitempty"`
	// StopReason says why a job ended before its last round (its privacy
	// budget).
	StopReason string `json:"stop_reason,omitempty"`
	// Privacy is what a private job has spent.
	Privacy *PrivacyState `json:"privacy,omitempty"`
	Rounds  []*Round      `json:"rounds"`
	Models  []*Model      `json:"models"`
	// OptState is the aggregation rule's state after the last committed
	// round (server momentum, Adam moments), a blob like the models; nil
	// for stateless rules.
	OptState *BlobRef `json:"opt_state,omitempty"`
	// Production is the digest of the job's version in production (empty:
	// none), and Promotions every change of it, oldest first (registry.go).
	Production string      `json:"production,omitempty"`
	Promotions []Promotion `json:"promotions,omitempty"`
	// Evaluated is what an evaluation job committed.
	Evaluated *Evaluation `json:"evaluated,omitempty"`
	// RetrainOf is the job this one retrains; RetrainedBy the job that
	// retrains this one; Drift the last drift each site reported for the
	// job's deployed version (retrain.go).
	RetrainOf   string           `json:"retrain_of,omitempty"`
	RetrainedBy string           `json:"retrained_by,omitempty"`
	Drift       map[string]Drift `json:"drift,omitempty"`
	Current     *Round           `json:"-"`
	Global      *Model           `json:"-"`
	byDigest    map[string]*Model
	attempts    map[uint64]int
	committedN  uint64
}

// reindex rebuilds the derived fields after a restore.
func (j *Job) reindex() {
	j.byDigest = make(map[string]*Model, len(j.Models))
	for _, m := range j.Models {
		j.byDigest[m.Digest] = m
	}
	if n := len(j.Models); n > 0 {
		j.Global = j.Models[n-1]
	}
	j.attempts = make(map[uint64]int)
	j.Current = nil
	j.committedN = 0
	for _, r := range j.Rounds {
		if r.Receipts == nil {
			r.Receipts = make(map[string]*Receipt)
		}
		if r.Declines == nil {
			r.Declines = make(map[string]string)
		}
		key := r.Number
		if r.Kind == KindStats {
			key = statsAttemptKey
		}
		j.attempts[key] = max(j.attempts[key], r.Attempt)
		switch r.State {
		case RoundOpen:
			j.Current = r
		case RoundCommitted:
			if r.Kind != KindStats {
				j.committedN = max(j.committedN, r.Number)
			}
		}
	}
}

// kind is the kind of round the receipt answers.
func (rc *Receipt) kind() string {
	switch {
	case rc.Eval != nil && rc.Stats == nil:
		return KindEval
	case rc.Stats != nil && rc.Eval == nil:
		return KindStats
	case rc.Stats == nil && rc.Eval == nil:
		return KindTrain
	}
	return "mixed"
}

// Asks reports whether the round asks site to take part.
func (r *Round) Asks(site string) bool {
	return len(r.Selected) == 0 || slices.Contains(r.Selected, site)
}

// NeedsStats reports whether the job still has to run its statistics round.
func (j *Job) NeedsStats() bool {
	if j.Spec.IsAnalytics() {
		return j.Results == nil
	}
	if j.Spec.IsEvaluation() {
		return false // its round is an evaluation round (NeedsEval)
	}
	return j.Spec.Features.GetNormalization() == pb.Normalization_NORMALIZATION_FEDERATED && j.Norm == nil
}

// EffectiveFeatures is the spec sites train with: under federated
// normalization, every feature's center and scale are the committed
// federated mean and standard deviation.
func (j *Job) EffectiveFeatures() *pb.FeatureSpec {
	spec := proto.Clone(j.Spec.Features.FeatureSpec).(*pb.FeatureSpec)
	if j.Norm != nil {
		for i, f := range spec.GetFeatures() {
			if i < len(j.Norm.Mean) {
				f.Center, f.Scale = j.Norm.Mean[i], j.Norm.Std[i]
			}
		}
	}
	return spec
}

// CommittedRounds is the number of rounds committed so far.
func (j *Job) CommittedRounds() uint64 { return j.committedN }

// ModelByDigest returns a committed model, or nil.
func (j *Job) ModelByDigest(d string) *Model { return j.byDigest[d] }

// clone deep-copies the job for readers outside the FSM lock.
func (j *Job) clone() *Job {
	b, err := json.Marshal(j)
	if err != nil {
		return nil
	}
	var c Job
	if err := json.Unmarshal(b, &c); err != nil {
		return nil
	}
	c.reindex()
	return &c
}

// state is everything the FSM replicates.
type state struct {
	Nodes map[string]NodeInfo `json:"nodes"`
	Sites map[string]*Site    `json:"sites"`
	Jobs  map[string]*Job     `json:"jobs"`
	// Tokens are the admin API's bearer tokens by id (hashes only).
	Tokens map[string]*Token `json:"tokens"`
	// EnrollTokens are the one-time site enrollment tokens by id.
	EnrollTokens map[string]*EnrollToken `json:"enroll_tokens"`
	// Bootstrapped is set once the first admin token exists.
	Bootstrapped bool `json:"bootstrapped,omitempty"`
	// Audit is the size and root of the audit log after the last applied
	// entry.
	Audit AuditHead `json:"audit"`
	// Seen holds recent request ids, oldest first, so a retried Apply is
	// harmless.
	Seen []string `json:"seen"`
	// SecAgg holds the protocol server of each job's open secure
	// aggregation round, by job id (Round.SecAgg points to it).
	SecAgg map[string]*secagg.Server `json:"secagg,omitempty"`

	seen map[string]struct{}
}

func newState() *state {
	return &state{
		Nodes:        make(map[string]NodeInfo),
		Sites:        make(map[string]*Site),
		Jobs:         make(map[string]*Job),
		Tokens:       make(map[string]*Token),
		EnrollTokens: make(map[string]*EnrollToken),
		SecAgg:       make(map[string]*secagg.Server),
		seen:         make(map[string]struct{}),
	}
}

// maxSeen bounds the request-id window for deduplication.
const maxSeen = 10000

func (s *state) markSeen(id string) bool {
	if id == "" {
		return false
	}
	if _, ok := s.seen[id]; ok {
		return true
	}
	s.seen[id] = struct{}{}
	s.Seen = append(s.Seen, id)
	if len(s.Seen) > maxSeen {
		delete(s.seen, s.Seen[0])
		s.Seen = slices.Delete(s.Seen, 0, 1)
	}
	return false
}

func (s *state) reindex() {
	if s.Tokens == nil {
		s.Tokens = make(map[string]*Token)
	}
	if s.EnrollTokens == nil {
		s.EnrollTokens = make(map[string]*EnrollToken)
	}
	s.seen = make(map[string]struct{}, len(s.Seen))
	for _, id := range s.Seen {
		s.seen[id] = struct{}{}
	}
	if s.SecAgg == nil {
		s.SecAgg = make(map[string]*secagg.Server)
	}
	for id, j := range s.Jobs {
		j.reindex()
		if j.Current != nil {
			j.Current.SecAgg = s.SecAgg[id]
		}
	}
}

func (s *state) siteIDs() []string {
	return slices.Sorted(maps.Keys(s.Sites))
}

func validID(id string) bool {
	if len(id) == 0 || len(id) > 63 {
		return false
	}
	for i, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (i > 0 && (c == '-' || c == '_' || c == '.'))
		if !ok {
			return false
		}
	}
	return true
}
