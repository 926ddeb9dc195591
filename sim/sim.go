// Package sim runs a whole federation on one machine: a Raft cluster of
// coordinators and several hospital agents in one process, talking over
// real QUIC with mutual TLS on loopback, each agent with its own synthetic
// patients in its own encrypted store. It reports the federated model's
// metrics per round and, as baselines, centralized training on the pooled
// data and each site's local-only model, all trained by the same trainer
// and scored on the same held-out test population.
//
// A Scenario (a YAML file; see scenario.go and docs/running-a-testbed.md)
// describes a testbed with a fault timeline (faults.go: coordinator kills,
// restarts, partitions, slow nodes, site dropouts, stragglers, and lossy
// agent links through sim/relay) and the expectations its run must meet.
// Reports render through sim/report. Agents may also run as separate
// processes (procagent.go).
package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
)

// Config is a testbed run.
type Config struct {
	// Coordinators is the size of the Raft cluster.
	Coordinators int
	// Sites is the number of hospital agents.
	Sites int
	// Rounds is the number of federated rounds.
	Rounds int
	// Seed makes the synthetic data and training reproducible.
	Seed uint64
	// Dataset is DatasetSynthetic (the default: synthetic hospitals) or
	// DatasetPhysioNet (PhysioNet 2012 split by ICU type).
	Dataset string
	// PhysioNetDir holds set-a.tar.gz and Outcomes-a.txt.
	PhysioNetDir string
	// Split is how a real dataset is divided into sites: for PhysioNet
	// "icu" (the default: one site per ICU type), "random" (Sites sites of
	// similar size, stays assigned by a seeded hash) or "skewed" (Sites
	// sites of unequal size and outcome rate, seeded); Synthea is split
	// "random" or "skewed".
	Split string
	// SyntheaDir holds the Synthea R4 sample (its ndjson/ folder).
	SyntheaDir string
	// Normalization of the synthetic job's features: "given" (the
	// generator's reference centers and scales) or "federated" (a
	// statistics round first). PhysioNet jobs are always federated.
	Normalization string
	// TestPatients is the size of the held-out test population.
	TestPatients int
	// LocalEpochs, LearningRate and BatchSize are the job's local training
	// parameters; the baselines train Rounds*LocalEpochs epochs.
	LocalEpochs  int
	LearningRate float64
	BatchSize    int
	// ValidationFraction of each site's records is held out for its local
	// validation metrics (and left out of the baselines' training too).
	ValidationFraction float64
	// RoundTimeout is each round's deadline.
	RoundTimeout time.Duration
	// Dir holds certificates, data and stores; empty means a temporary
	// directory removed at the end.
	Dir string
	// DataOnly writes the sites' data and the test population under
	// Dir/data and returns without running a federation (Dir required).
	// The directory appears whole or not at all; one that exists is kept
	// as it is (remove it to write new data).
	DataOnly bool
	// Out receives one line per round and the summary; nil discards.
	Out io.Writer
	// Logger receives the components' logs; nil discards them.
	Logger *slog.Logger
	// EgressTap sees every byte every agent sends, by site.
	EgressTap func(site string, b []byte)
	// Strategy is the job's aggregation rule (default fedavg).
	Strategy aggregator.Spec
	// Privacy, when set, makes the job differentially private (central
	// DP-FedAvg); a zero noise multiplier is planned from the budget.
	Privacy *coordinator.PrivacySpec
	// SecureAggregation, when set, aggregates every round with secure
	// aggregation (the coordinators learn only the sum of the updates).
	SecureAggregation *coordinator.SecureAggregationSpec
	// Analytics, when set, also runs a federated analytics job (kind
	// analytics, the training job's features) next to the training job,
	// and the run waits for its results.
	Analytics *coordinator.AnalyticsSpec
	// Evaluate, when set, scores the final model at every site (a
	// federated evaluation job) once training is done.
	Evaluate bool
	// Deploy, when set, promotes the final model to production and checks
	// that it reaches every site and scores replayed device telemetry
	// (deploy.go); synthetic sites then write telemetry.
	Deploy *DeploySpec
	// Byzantine makes some sites attack; zero means none.
	Byzantine Byzantine
	// Model is the job's model (default logistic regression); its
	// NumFeatures comes from the data. The baselines train the same model.
	Model coordinator.ModelSpec
	// Optimizer is the local optimizer: sgd (default) or adam.
	Optimizer string
	// MinSites is how many updates close a round (0: every site);
	// MaxAttempts bounds a round's failed attempts (0: the default).
	MinSites    int
	MaxAttempts int
	// Sampling chooses the sites each round asks (zero: all of them).
	Sampling coordinator.Sampling
	// PatientsPerSite, when positive, sets the size of every default
	// synthetic hospital (for testbeds of many small sites).
	PatientsPerSite int
	// SiteSpecs, when set, are the synthetic hospitals (their number
	// overrides Sites); an empty Name, Index or Seed is derived from the
	// position.
	SiteSpecs []synth.Site
	// Links are the agent links' conditions from the start. With them, or
	// any link fault in Faults, every agent reaches every coordinator
	// through its own lossy UDP relay (sim/relay).
	Links Link
	// Faults is the fault timeline.
	Faults []Fault
	// Processes runs each site's agent as a separate process, started
	// with AgentCommand (the cohort binary and "agent"; the CLI sets it).
	// Byzantine sites, stragglers and the PHI check need in-process
	// agents.
	Processes    bool
	AgentCommand []string
	// CheckPHI scans every byte agents send, and every log line of the
	// federation at every level, for the identifiers planted in the
	// synthetic patients (Report.PHIFound).
	CheckPHI bool
	// Progress, when a terminal, shows a progress bar (not in CI).
	Progress io.Writer
	// HeapProfile, when set, receives a heap profile taken when the job
	// has finished, before the federation stops (for scale work).
	HeapProfile io.Writer
}

// outWriter is Out, or a writer that discards.
func (c Config) outWriter() io.Writer {
	if c.Out == nil {
		return io.Discard
	}
	return c.Out
}

// relays reports whether the testbed needs relays on its agent links.
func (c Config) relays() bool {
	if !c.Links.zero() {
		return true
	}
	for _, f := range c.Faults {
		if f.usesLinks() {
			return true
		}
	}
	return false
}

// siteNames are the sites' names as the data will name them.
func (c Config) siteNames() []string {
	var names []string
	switch {
	case c.Dataset == DatasetPhysioNet && (c.Split == "" || c.Split == "icu"):
		for _, s := range icuSites {
			names = append(names, s.name)
		}
	case c.Dataset == DatasetPhysioNet || c.Dataset == DatasetSynthea:
		for i := range c.Sites {
			names = append(names, fmt.Sprintf("site-%d", i+1))
		}
	default:
		for _, s := range c.syntheticSites() {
			names = append(names, s.Name)
		}
	}
	return names
}

// syntheticSites are the synthetic hospitals: SiteSpecs with their blanks
// filled in, or the defaults.
func (c Config) syntheticSites() []synth.Site {
	if len(c.SiteSpecs) == 0 {
		sites := synth.DefaultSites(c.Sites, c.Seed)
		if c.PatientsPerSite > 0 {
			for i := range sites {
				sites[i].Patients = c.PatientsPerSite
			}
		}
		return sites
	}
	def := synth.DefaultSites(len(c.SiteSpecs), c.Seed)
	sites := slices.Clone(c.SiteSpecs)
	for i := range sites {
		if sites[i].Name == "" {
			sites[i].Name = fmt.Sprintf("site-%d", i+1)
		}
		if sites[i].Index == 0 {
			sites[i].Index = i + 1
		}
		if sites[i].Seed == 0 && i < len(def) {
			sites[i].Seed = def[i].Seed
		}
	}
	return sites
}

// Byzantine describes attacking sites: the last Sites sites rewrite every
// update they send.
type Byzantine struct {
	// Sites is how many sites attack.
	Sites int `json:"sites,omitempty"`
	// Attack is "signflip" (send -Scale times the update), "scale" (Scale
	// times the update) or "noise" (Gaussian noise of standard deviation
	// Scale instead of the update).
	Attack string `json:"attack,omitempty"`
	// Scale is the attack's factor or noise level (default 10 for scale
	// and signflip, 1 for noise).
	Scale float64 `json:"scale,omitempty"`
}

// Attacks are the Byzantine attacks the simulator knows.
var Attacks = []string{"signflip", "scale", "noise"}

// adversary returns the update rewriter of one attacking site.
func (b Byzantine) adversary(seed uint64, site string) func(job string, round uint64, delta []float32) {
	scale := b.Scale
	if scale == 0 {
		scale = 10
		if b.Attack == "noise" {
			scale = 1
		}
	}
	return func(job string, round uint64, delta []float32) {
		switch b.Attack {
		case "signflip":
			for i := range delta {
				delta[i] *= float32(-scale)
			}
		case "scale":
			for i := range delta {
				delta[i] *= float32(scale)
			}
		case "noise":
			h := fnv.New64a()
			fmt.Fprintf(h, "%s/%s/%d", site, job, round)
			rng := rand.New(rand.NewPCG(seed, h.Sum64())) // #nosec G404 -- seeded simulation, reproducible from the scenario's seed
			for i := range delta {
				delta[i] = float32(rng.NormFloat64() * scale)
			}
		}
	}
}

// DefaultConfig is what `cohort sim` runs with no flags.
func DefaultConfig() Config {
	return Config{
		Coordinators: 3,
		Sites:        4,
		Rounds:       10,
		Seed:         1,
		TestPatients: 2000,
		LocalEpochs:  5,
		LearningRate: 0.1,
		BatchSize:    32,
		RoundTimeout: 60 * time.Second,

		ValidationFraction: 0.2,
		Dataset:            DatasetSynthetic,
		PhysioNetDir:       filepath.Join("..", "shared", "data", "physionet2012"),
		SyntheaDir:         filepath.Join("..", "shared", "data", "synthea-r4"),
		Normalization:      "given",
	}
}

// Validate reports the first problem with the config.
func (c Config) Validate() error {
	switch {
	case c.DataOnly && c.Dir == "":
		return errors.New("sim: data only needs a directory to write to (--dir)")
	case c.Coordinators < 1:
		return errors.New("sim: need at least 1 coordinator")
	case c.Sites < 1:
		return errors.New("sim: need at least 1 site")
	case c.Rounds < 1:
		return errors.New("sim: need at least 1 round")
	case c.TestPatients < 50:
		return errors.New("sim: need at least 50 test patients")
	case c.LocalEpochs < 1 || c.LearningRate <= 0 || c.BatchSize < 0:
		return errors.New("sim: local_epochs >= 1, learning_rate > 0 and batch_size >= 0 are required")
	case c.RoundTimeout <= 0:
		return errors.New("sim: round timeout must be positive")
	case c.Dataset != "" && c.Dataset != DatasetSynthetic && c.Dataset != DatasetPhysioNet && c.Dataset != DatasetSynthea:
		return fmt.Errorf("sim: dataset %q: use %s, %s or %s", c.Dataset, DatasetSynthetic, DatasetPhysioNet, DatasetSynthea)
	case c.Dataset == DatasetPhysioNet && c.Split != "" && c.Split != SplitICU && c.Split != SplitRandom && c.Split != SplitSkewed:
		return fmt.Errorf("sim: split %q of the physionet dataset: use %s (one site per ICU type), %s or %s", c.Split, SplitICU, SplitRandom, SplitSkewed)
	case c.Dataset == DatasetSynthea && c.Split != "" && c.Split != SplitRandom && c.Split != SplitSkewed:
		return fmt.Errorf("sim: split %q of the synthea dataset: use %s or %s", c.Split, SplitRandom, SplitSkewed)
	case (c.Dataset == "" || c.Dataset == DatasetSynthetic) && c.Split != "":
		return fmt.Errorf("sim: split %q: the synthetic dataset generates one hospital per site and takes no split", c.Split)
	case c.Normalization != "" && c.Normalization != "given" && c.Normalization != "federated":
		return fmt.Errorf("sim: normalization %q: use given or federated", c.Normalization)
	case c.Byzantine.Sites < 0 || c.Byzantine.Sites >= c.Sites && c.Byzantine.Sites > 0:
		return fmt.Errorf("sim: %d Byzantine sites of %d: at least one site must be honest", c.Byzantine.Sites, c.Sites)
	case c.Byzantine.Sites > 0 && !slices.Contains(Attacks, c.Byzantine.Attack):
		return fmt.Errorf("sim: attack %q: use one of %s", c.Byzantine.Attack, strings.Join(Attacks, ", "))
	case c.Byzantine.Scale < 0 || math.IsNaN(c.Byzantine.Scale) || math.IsInf(c.Byzantine.Scale, 0):
		return errors.New("sim: the attack's scale must be a non-negative number")
	}
	names := c.siteNames()
	if c.Strategy.Name != "" {
		st, err := aggregator.New(c.Strategy)
		if err != nil {
			return fmt.Errorf("sim: strategy: %w", err)
		}
		minSites := len(names)
		if c.MinSites > 0 {
			minSites = min(c.MinSites, minSites)
		}
		if err := aggregator.CheckByzantine(st, minSites); err != nil {
			return fmt.Errorf("sim: strategy: %w", err)
		}
	}
	switch {
	case c.MinSites < 0 || c.MinSites > c.Sites && len(c.SiteSpecs) == 0 && c.Dataset == DatasetSynthetic:
		return fmt.Errorf("sim: min_sites %d: between 0 (every site) and the number of sites", c.MinSites)
	case c.PatientsPerSite < 0 || c.PatientsPerSite > synth.MaxPatients:
		return fmt.Errorf("sim: patients per site %d: between 0 (the defaults) and %d", c.PatientsPerSite, synth.MaxPatients)
	case c.Sites > synth.MaxSiteIndex-1 && c.Dataset == DatasetSynthetic:
		return fmt.Errorf("sim: at most %d synthetic sites", synth.MaxSiteIndex-1)
	case c.Processes && (c.Byzantine.Sites > 0 || c.CheckPHI || slices.ContainsFunc(c.Faults, func(f Fault) bool { return f.Action == ActStraggle })):
		return errors.New("sim: byzantine sites, stragglers and the PHI check need in-process agents, not processes")
	case c.MaxAttempts < 0:
		return errors.New("sim: max_attempts must not be negative")
	case c.Optimizer != "" && c.Optimizer != "sgd" && c.Optimizer != "adam":
		return fmt.Errorf("sim: optimizer %q: use sgd or adam", c.Optimizer)
	case c.Model.Kind != "" && c.Model.Kind != "logreg" && c.Model.Kind != "mlp":
		return fmt.Errorf("sim: model kind %q: use logreg or mlp", c.Model.Kind)
	}
	if err := c.Links.validate(); err != nil {
		return fmt.Errorf("sim: links: %w", err)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			return fmt.Errorf("sim: two sites are named %q", n)
		}
		seen[n] = true
	}
	if len(c.SiteSpecs) > 0 {
		for _, s := range c.syntheticSites() {
			if err := s.Validate(); err != nil {
				return fmt.Errorf("sim: site %s: %w", s.Name, err)
			}
		}
	}
	for i, f := range c.Faults {
		if err := f.validate(c.Coordinators, names); err != nil {
			return fmt.Errorf("sim: fault %d (%s, %s): %w", i+1, f.Action, f.trigger(), err)
		}
	}
	return nil
}

// Metrics are a model's scores on the held-out test population.
type Metrics struct {
	AUROC    float64 `json:"auroc"`
	Accuracy float64 `json:"accuracy"`
}

// LocalOnly are the local-only baselines.
type LocalOnly struct {
	MeanAUROC float64            `json:"mean_auroc"`
	Sites     map[string]float64 `json:"sites"`
}

// RoundLine is one committed round as the sim saw it.
type RoundLine struct {
	Round    uint64  `json:"round"`
	Sites    int     `json:"sites"`
	AUROC    float64 `json:"auroc"`
	Accuracy float64 `json:"accuracy"`
	// Elapsed is the commit time, in seconds since the federation started.
	Elapsed float64 `json:"elapsed_seconds"`
	// Latency is the round's open-to-commit time in seconds (of its last
	// attempt).
	Latency float64 `json:"latency_seconds"`
	// BytesUp were sent by all agents, and BytesDown by all coordinators to
	// agents, since the previous committed round.
	BytesUp   int64 `json:"bytes_up"`
	BytesDown int64 `json:"bytes_down"`
}

// SiteInfo describes one site of a run.
type SiteInfo struct {
	Name     string `json:"name"`
	Patients int    `json:"patients"`
	// LocalOnlyAUROC is its model trained alone, on the test population;
	// FederatedAUROC the final global model on the site's own validation
	// records (0 when they cannot be scored).
	LocalOnlyAUROC float64 `json:"local_only_auroc"`
	FederatedAUROC float64 `json:"federated_auroc,omitempty"`
	Byzantine      bool    `json:"byzantine,omitempty"`
}

// prepare writes the sites' data and the test population under
// dir/data.
func prepare(ctx context.Context, dir string, cfg Config, out io.Writer) (*prepared, error) {
	switch cfg.Dataset {
	case DatasetPhysioNet:
		return preparePhysioNet(ctx, dir, cfg, out)
	case DatasetSynthea:
		return prepareSynthea(ctx, dir, cfg, out)
	}
	return prepareSynthetic(dir, cfg)
}

// writeDataOnly is Run with DataOnly: the data is written beside dir/data
// and renamed into place when whole; an existing dir/data is kept.
func writeDataOnly(ctx context.Context, dir string, cfg Config, out io.Writer) (*Report, error) {
	final := filepath.Join(dir, "data")
	if entries, err := os.ReadDir(final); err == nil && len(entries) > 0 {
		fmt.Fprintf(out, "cohort sim: kept the existing data in %s (remove it to write new data)\n", final)
		return &Report{Dataset: cfg.Dataset, Seed: cfg.Seed}, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".data-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	data, err := prepare(ctx, tmp, cfg, out)
	if err != nil {
		return nil, err
	}
	// An empty directory in the way (a run stopped before its data) goes;
	// anything else there is refused.
	if fi, err := os.Lstat(final); err == nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("sim: %s is in the way and is not a directory", final)
		}
		if err := os.Remove(final); err != nil {
			return nil, fmt.Errorf("sim: %s is in the way: %w", final, err)
		}
	}
	if err := os.Rename(filepath.Join(tmp, "data"), final); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "cohort sim: wrote %d sites (%s) to %s/<site> and the test population to %s, seed %d\n",
		len(data.sites), data.describe(), final, filepath.Join(final, "test"), cfg.Seed)
	return &Report{Dataset: data.name, Seed: cfg.Seed}, nil
}

// Report is the outcome of a run (`cohort sim --report-json`).
type Report struct {
	// Dataset names the data the sites held.
	Dataset string `json:"dataset"`
	// Strategy is the aggregation rule; ByzantineSites the attacking sites.
	Strategy        string   `json:"strategy"`
	Seed            uint64   `json:"seed"`
	ByzantineSites  []string `json:"byzantine_sites,omitempty"`
	RoundsCompleted int      `json:"rounds_completed"`
	// Privacy is a private job's ε spent and its parameters.
	Privacy *coordinator.PrivacyStatus `json:"privacy,omitempty"`
	// Analytics are the results of the analytics job run beside the
	// training job (Config.Analytics), nil without one.
	Analytics *coordinator.AnalyticsResult `json:"analytics,omitempty"`
	// Evaluation is the federated evaluation of the final model
	// (Config.Evaluate).
	Evaluation *coordinator.Evaluation `json:"evaluation,omitempty"`
	// Deployment is what the deployment step saw (Config.Deploy).
	Deployment        *DeployReport `json:"deployment,omitempty"`
	Sites             int           `json:"sites"`
	Coordinators      int           `json:"coordinators"`
	Federated         Metrics       `json:"federated"`
	Centralized       Metrics       `json:"centralized"`
	LocalOnly         LocalOnly     `json:"local_only"`
	BytesSentByAgents int64         `json:"bytes_sent_by_agents"`
	WallSeconds       float64       `json:"wall_seconds"`
	Rounds            []RoundLine   `json:"rounds"`
	// SiteInfo describes each site.
	SiteInfo []SiteInfo `json:"site_info,omitempty"`
	// Faults are the timeline's events as they happened.
	Faults []FaultEvent `json:"faults,omitempty"`
	// UpdatesLate are updates the coordinators discarded because their
	// round had closed.
	UpdatesLate int64 `json:"updates_late"`
	// DatagramsDropped are the datagrams the link relays dropped (loss,
	// outages, full queues).
	DatagramsDropped int64 `json:"datagrams_dropped,omitempty"`
	// PHIChecked is how many planted identifiers were looked for in the
	// agents' egress (CheckPHI), and PHIFound the kinds of those found.
	PHIChecked int      `json:"phi_identifiers_checked,omitempty"`
	PHIFound   []string `json:"phi_found,omitempty"`
	// PeakHeapBytes is the largest Go heap seen during the run (the whole
	// testbed: coordinators, agents and the sim).
	PeakHeapBytes uint64 `json:"peak_heap_bytes,omitempty"`
}

func describeScale(b Byzantine) string {
	if b.Scale == 0 {
		return "default scale"
	}
	return fmt.Sprintf("scale %g", b.Scale)
}

// Run builds the testbed, runs the job to completion while firing the
// fault timeline, and computes the baselines. It returns an error if the
// job fails; the report holds what was measured until then.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "cohort-sim-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if cfg.DataOnly {
		return writeDataOnly(ctx, dir, cfg, out)
	}
	heap := startHeapWatch()
	defer heap.stop()

	// Data: one input directory per site and a held-out test population.
	var (
		data *prepared
		err  error
	)
	if data, err = prepare(ctx, dir, cfg, out); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "cohort sim: %d coordinators, %d sites (%s), %d rounds, seed %d\n",
		cfg.Coordinators, len(data.sites), data.describe(), cfg.Rounds, cfg.Seed)
	rep := &Report{Seed: cfg.Seed}

	job := coordinator.DefaultJobSpec()
	job.ID = data.jobID
	job.Rounds = cfg.Rounds
	job.MinSites = len(data.sites)
	if cfg.MinSites > 0 {
		job.MinSites = min(cfg.MinSites, len(data.sites))
	}
	if cfg.MaxAttempts > 0 {
		job.MaxAttempts = cfg.MaxAttempts
	}
	job.Sampling = cfg.Sampling
	job.RoundTimeout = coordinator.Duration(cfg.RoundTimeout)
	if cfg.Model.Kind != "" {
		job.Model = cfg.Model
	}
	job.Model.NumFeatures = len(data.spec.GetFeatures())
	job.Features = coordinator.FeatureSpec{FeatureSpec: data.spec}
	job.Train.LocalEpochs = cfg.LocalEpochs
	job.Train.LearningRate = cfg.LearningRate
	job.Train.BatchSize = cfg.BatchSize
	job.Train.Seed = cfg.Seed
	job.Train.ValidationFraction = cfg.ValidationFraction
	job.Train.Optimizer = cfg.Optimizer
	if cfg.Strategy.Name != "" {
		job.Strategy = coordinator.StrategySpec{Spec: cfg.Strategy}
	}
	if cfg.Privacy != nil {
		p := *cfg.Privacy
		job.Privacy = &p
		if err := job.PlanPrivacy(); err != nil {
			return nil, err
		}
	}
	if sa := cfg.SecureAggregation; sa != nil {
		cp := *sa
		job.SecureAggregation = &cp
	}
	if d := cfg.Deploy; d != nil {
		job.AlertThreshold = d.threshold()
	}
	if err := job.Validate(0); err != nil {
		return nil, err
	}
	rep.Strategy = job.Strategy.Name
	jobs := []coordinator.JobSpec{job}
	if a := cfg.Analytics; a != nil {
		aj := analyticsJob(job, *a)
		if err := aj.Validate(0); err != nil {
			return nil, fmt.Errorf("sim: analytics job: %w", err)
		}
		jobs = append(jobs, aj)
	}
	var adversaries map[string]func(string, uint64, []float32)
	if b := cfg.Byzantine; b.Sites > 0 {
		adversaries = map[string]func(string, uint64, []float32){}
		ids := data.siteIDs()
		for _, s := range ids[len(ids)-b.Sites:] {
			adversaries[s] = b.adversary(cfg.Seed, s)
			rep.ByzantineSites = append(rep.ByzantineSites, s)
		}
		fmt.Fprintf(out, "byzantine: %s attack (%s) from %s\n", b.Attack, describeScale(b), strings.Join(rep.ByzantineSites, ", "))
	}
	tap := cfg.EgressTap
	var phi *phiScanner
	if cfg.CheckPHI {
		phi = newPHIScanner(data.canaries)
		tap = phi.wrap(tap)
		// Every log line of the federation, at every level, is scanned too.
		log = slog.New(newPHILogHandler(log.Handler(), phi))
	}

	var agentCommand []string
	if cfg.Processes {
		if len(cfg.AgentCommand) == 0 {
			return nil, errors.New("sim: processes: no agent command (run it from the cohort binary)")
		}
		agentCommand = cfg.AgentCommand
		fmt.Fprintf(out, "agents run as %d separate processes\n", len(data.sites))
	}
	siteIDs := data.siteIDs()
	var (
		agentEdit func(string, *agent.Config)
		brokers   map[string]string
	)
	if cfg.Deploy != nil {
		if cfg.Processes {
			return nil, errors.New("sim: deploy needs in-process agents, not processes")
		}
		if brokers, err = deployBrokers(siteIDs); err != nil {
			return nil, err
		}
		agentEdit = deployAgentEdit(job.ID, brokers)
	}
	fedStart := time.Now()
	fed, err := startFederation(ctx, federationConfig{
		Dir: dir, Coordinators: cfg.Coordinators, Sites: siteIDs, DataDir: filepath.Join(dir, "data"),
		Jobs: jobs, Logger: log, EgressTap: tap, Seed: cfg.Seed,
		Adversaries: adversaries, Relays: cfg.relays(), AgentCommand: agentCommand, AgentEdit: agentEdit,
	})
	if err != nil {
		return nil, err
	}
	defer fed.stop()
	if !cfg.Links.zero() {
		if err := fed.setLink(nil, cfg.Links.relay()); err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "links: loss %.0f%%, latency %s, jitter %s on every agent link\n",
			100*cfg.Links.Loss, time.Duration(cfg.Links.Latency), time.Duration(cfg.Links.Jitter))
	}

	rep.Sites, rep.Coordinators, rep.Dataset = len(siteIDs), cfg.Coordinators, data.name
	// The fault timeline runs beside the watcher until the job ends.
	tctx, stopTimeline := context.WithCancel(ctx)
	tl := &timeline{fed: fed, job: job.ID, start: fedStart, base: cfg.Links, out: out, pending: slices.Clone(cfg.Faults)}
	events := make(chan []FaultEvent, 1)
	go func() { events <- tl.run(tctx) }()
	finishTimeline := func() {
		stopTimeline()
		rep.Faults = <-events
		recoveries(rep.Faults, rep.Rounds)
		events <- rep.Faults // a second call returns the same events
	}
	// The held-out test population is featurized exactly as the sites do,
	// with the spec they train with (under federated normalization: once
	// the statistics round committed).
	w := &watcher{job: job.ID, rounds: cfg.Rounds, start: fedStart, out: out, rep: rep, fed: fed,
		bar:      newProgress(cfg.Progress, cfg.Rounds, "cohort sim"),
		loadTest: func(spec *pb.FeatureSpec) (*dataset, error) { return loadDataset(ctx, data.testDir, spec) }}
	bytes := startByteSeries(func() (int64, int64) {
		return fed.bytesSent(), fed.coordinatorStat(func(s *coordinator.Stats) int64 { return s.BytesSent.Load() })
	})
	final, finalWeights, err := w.watch(ctx)
	w.bar.Done()
	if cfg.HeapProfile != nil {
		runtime.GC()
		runtime.GC() // and empty the pools' victim caches
		if perr := pprof.WriteHeapProfile(cfg.HeapProfile); perr != nil {
			fmt.Fprintf(out, "heap profile: %v\n", perr)
		}
	}
	if err == nil && cfg.Analytics != nil {
		var aj *coordinator.Job
		if aj, err = waitJob(ctx, fed, jobs[1].ID); err == nil {
			rep.Analytics = aj.Results
			fmt.Fprintf(out, "analytics: %d features over %d sites committed (k = %d)\n", len(rep.Analytics.Features), len(rep.Analytics.Sites), rep.Analytics.K)
		}
	}
	if err == nil && cfg.Deploy != nil {
		if rep.Deployment, err = deployAndScore(ctx, fed, job.ID, filepath.Join(dir, "data"), cfg.Deploy, brokers); err == nil {
			d := rep.Deployment
			fmt.Fprintf(out, "deployment: version %.12s (round %d) promoted, running at %d of %d sites; %d telemetry readings replayed: %d risk assessments (%d naming the version), %d alerts (%d naming it)\n",
				d.Model, d.Round, d.SitesReached, len(siteIDs), d.Readings, d.RiskAssessments, d.RiskAssessmentsNaming, d.Alerts, d.AlertsNaming)
		}
	}
	if err == nil && cfg.Evaluate {
		if rep.Evaluation, err = evaluate(ctx, fed, job.ID); err == nil {
			p := rep.Evaluation.Pooled
			fmt.Fprintf(out, "federated evaluation: %d held-out records at %d sites, AUROC %.4f, AUPRC %.4f, Brier %.4f\n",
				p.Count, len(rep.Evaluation.Sites), p.AUROC, p.AUPRC, p.Brier)
		}
	}
	bytes.stop()
	bytes.perRound(fedStart, rep.Rounds)
	finishTimeline()
	rep.BytesSentByAgents = fed.bytesSent()
	rep.UpdatesLate = fed.coordinatorStat(func(s *coordinator.Stats) int64 { return s.UpdatesLate.Load() })
	rep.DatagramsDropped = fed.datagramsDropped()
	if phi != nil {
		rep.PHIChecked, rep.PHIFound = phi.result()
	}
	if err != nil {
		rep.WallSeconds = time.Since(start).Seconds()
		rep.PeakHeapBytes = heap.peak()
		return rep, err
	}
	rep.Federated = final
	if err := fed.stop(); err != nil {
		return rep, fmt.Errorf("stop federation: %w", err)
	}

	// Baselines, trained by the same trainer on the same training splits.
	fmt.Fprintf(out, "baselines: training centralized and local-only models (%d epochs each)\n", cfg.Rounds*cfg.LocalEpochs)
	base, err := baselines(ctx, dir, siteIDs, w.spec, w.test, job, finalWeights)
	if err != nil {
		return rep, err
	}
	rep.Centralized = base.central
	rep.LocalOnly = base.local
	for _, s := range data.sites {
		rep.SiteInfo = append(rep.SiteInfo, SiteInfo{Name: s.name, Patients: s.patients,
			LocalOnlyAUROC: base.local.Sites[s.name], FederatedAUROC: base.federated[s.name],
			Byzantine: slices.Contains(rep.ByzantineSites, s.name)})
	}
	rep.WallSeconds = time.Since(start).Seconds()
	rep.PeakHeapBytes = heap.peak()
	printSummary(out, rep)
	return rep, nil
}

// watcher follows the job on the cluster's live coordinators, scores each
// committed global model on the test set and prints a line per round.
type watcher struct {
	job      string
	rounds   int
	start    time.Time
	out      io.Writer
	rep      *Report
	fed      *federation
	bar      progress
	loadTest func(*pb.FeatureSpec) (*dataset, error)

	// spec and test are set at the first committed training round.
	spec *pb.FeatureSpec
	test *dataset
}

// view returns the job as the most advanced live coordinator sees it.
func (w *watcher) view() (*coordinator.Node, *coordinator.Job) {
	var (
		bestN *coordinator.Node
		bestJ *coordinator.Job
	)
	for _, n := range w.fed.live() {
		j, ok := n.Job(w.job)
		if ok && (bestJ == nil || j.CommittedRounds() > bestJ.CommittedRounds() || j.State != coordinator.JobRunning && bestJ.State == coordinator.JobRunning) {
			bestN, bestJ = n, j
		}
	}
	return bestN, bestJ
}

// watch returns the final model's metrics and weights once the job is
// done.
func (w *watcher) watch(ctx context.Context) (Metrics, []float32, error) {
	var (
		last        Metrics
		lastWeights []float32
	)
	seen := uint64(0)
	statsSeen := false
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var changed <-chan struct{}
		if live := w.fed.live(); len(live) > 0 {
			changed = live[0].Changed()
		}
		node, j := w.view()
		if j != nil {
			if j.Norm != nil && !statsSeen {
				statsSeen = true
				var closed time.Time
				for _, r := range j.Rounds {
					if r.Kind == coordinator.KindStats && r.State == coordinator.RoundCommitted {
						closed = r.Closed
					}
				}
				fmt.Fprintf(w.out, "statistics  sites %d  cohort %d  (federated normalization)  elapsed %5.1fs\n",
					len(j.Norm.Sites), j.Norm.Cohort, closed.Sub(w.start).Seconds())
			}
			for _, r := range j.Rounds {
				if r.State != coordinator.RoundCommitted || r.Kind == coordinator.KindStats || r.Number <= seen {
					continue
				}
				if w.test == nil {
					w.spec = j.EffectiveFeatures()
					test, err := w.loadTest(w.spec)
					if err != nil {
						return last, nil, fmt.Errorf("test set: %w", err)
					}
					w.test = test
				}
				m, weights, err := scoreModel(ctx, node, j.Spec.Model, j.ModelByDigest(r.Result), w.test)
				if err != nil {
					return last, nil, err
				}
				// The round's commit time (the leader's clock, in the log),
				// not when this watcher got to it.
				line := RoundLine{Round: r.Number, Sites: len(r.Contributors), AUROC: m.AUROC, Accuracy: m.Accuracy,
					Elapsed: r.Closed.Sub(w.start).Seconds(), Latency: r.Closed.Sub(r.Opened).Seconds()}
				w.rep.Rounds = append(w.rep.Rounds, line)
				w.rep.RoundsCompleted = int(r.Number)
				if !w.bar.Enabled() {
					fmt.Fprintf(w.out, "round %2d/%d  sites %d  auroc %.4f  accuracy %.4f  elapsed %5.1fs\n",
						line.Round, w.rounds, line.Sites, line.AUROC, line.Accuracy, line.Elapsed)
				}
				w.bar.Set(int(r.Number), fmt.Sprintf("round %d  auroc %.4f", r.Number, m.AUROC))
				seen = r.Number
				last, lastWeights = m, weights
			}
			switch j.State {
			case coordinator.JobDone:
				w.rep.Privacy = j.PrivacyStatus()
				return last, lastWeights, nil
			case coordinator.JobFailed:
				return last, nil, fmt.Errorf("job failed: %s", j.FailReason)
			}
		}
		select {
		case <-ctx.Done():
			return last, nil, ctx.Err()
		case err := <-w.fed.errC:
			return last, nil, err
		case <-changed:
		case <-tick.C:
		}
	}
}

func printSummary(out io.Writer, rep *Report) {
	fmt.Fprintf(out, "\n%-22s auroc %.4f  accuracy %.4f\n", "federated ("+rep.Strategy+")", rep.Federated.AUROC, rep.Federated.Accuracy)
	fmt.Fprintf(out, "%-22s auroc %.4f  accuracy %.4f\n", "centralized (pooled)", rep.Centralized.AUROC, rep.Centralized.Accuracy)
	fmt.Fprintf(out, "%-22s mean auroc %.4f\n", "local only", rep.LocalOnly.MeanAUROC)
	for _, s := range sortedKeys(rep.LocalOnly.Sites) {
		fmt.Fprintf(out, "  %-20s auroc %.4f\n", s, rep.LocalOnly.Sites[s])
	}
	for _, e := range rep.Faults {
		rec := ""
		switch {
		case e.Recovery > 0:
			rec = fmt.Sprintf("  next commit after %.1fs", e.Recovery)
		case e.Recovery < 0:
			rec = "  no commit followed"
		}
		fmt.Fprintf(out, "fault at %5.1fs  %-16s %s%s\n", e.At, e.Action, e.Detail, rec)
	}
	if p := rep.Privacy; p != nil {
		clip := fmt.Sprintf("clip %g", p.ClipNorm)
		if p.CurrentClip != 0 {
			clip = fmt.Sprintf("adaptive clip %g → %.3g", p.ClipNorm, p.CurrentClip)
		}
		fmt.Fprintf(out, "privacy: ε %.3g of %g spent at δ=%g (noise multiplier %.3g, %s)\n", p.EpsilonSpent, p.EpsilonBudget, p.Delta, p.NoiseMultiplier, clip)
	}
	fmt.Fprintf(out, "rounds %d, bytes sent by agents %d, late updates %d, wall %.1fs, peak heap %.0f MiB\n", rep.RoundsCompleted, rep.BytesSentByAgents, rep.UpdatesLate, rep.WallSeconds, float64(rep.PeakHeapBytes)/(1<<20))
}

// analyticsJob is a federated analytics job over the training job's
// features, asking every site, with the federation's defaults.
func analyticsJob(train coordinator.JobSpec, a coordinator.AnalyticsSpec) coordinator.JobSpec {
	j := coordinator.DefaultJobSpec()
	j.ID, j.Kind, j.Analytics = train.ID+"-analytics", coordinator.JobKindAnalytics, &a
	j.Model, j.Strategy = coordinator.ModelSpec{}, coordinator.StrategySpec{}
	j.Features, j.MinSites, j.RoundTimeout, j.MaxAttempts = train.Features, train.MinSites, train.RoundTimeout, train.MaxAttempts
	j.Train = coordinator.TrainParams{MinRecords: train.Train.MinRecords}
	return j
}

// waitJob waits until job id is done and returns it.
func waitJob(ctx context.Context, fed *federation, id string) (*coordinator.Job, error) {
	for {
		leader, err := fed.leader(ctx)
		if err != nil {
			return nil, err
		}
		changed := leader.Changed()
		if j, ok := leader.Job(id); ok {
			switch j.State {
			case coordinator.JobDone:
				return j, nil
			case coordinator.JobFailed, coordinator.JobCancelled:
				return nil, fmt.Errorf("job %s %s: %s", id, j.State, j.FailReason)
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// evaluate scores the training job's final model at every site (a
// federated evaluation job) and returns the pooled and per-site results.
func evaluate(ctx context.Context, fed *federation, job string) (*coordinator.Evaluation, error) {
	leader, err := fed.leader(ctx)
	if err != nil {
		return nil, err
	}
	j, ok := leader.Job(job)
	if !ok || j.Global == nil {
		return nil, fmt.Errorf("job %s has no model to evaluate", job)
	}
	id := job + "-eval"
	if err := leader.EvaluateModel(id, job, j.Global.Digest, 1); err != nil {
		return nil, err
	}
	ej, err := waitJob(ctx, fed, id)
	if err != nil {
		return nil, err
	}
	if ej.Evaluated == nil {
		return nil, fmt.Errorf("evaluation job %s ended without results", id)
	}
	return ej.Evaluated, nil
}
