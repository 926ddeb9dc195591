// Package sim runs a whole federation on one machine: a Raft cluster of
// coordinators and several hospital agents in one process, talking over
// real QUIC with mutual TLS on loopback, each agent with its own synthetic
// patients in its own encrypted store. It reports the federated model's
// metrics per round and, as baselines, centralized training on the pooled
// data and each site's local-only model, all trained by the same trainer
// and scored on the same held-out test population.
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
	"slices"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pb"
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
	// Out receives one line per round and the summary; nil discards.
	Out io.Writer
	// Logger receives the components' logs; nil discards them.
	Logger *slog.Logger
	// EgressTap sees every byte every agent sends, by site.
	EgressTap func(site string, b []byte)
	// Strategy is the job's aggregation rule (default fedavg).
	Strategy aggregator.Spec
	// Byzantine makes some sites attack; zero means none.
	Byzantine Byzantine
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
			rng := rand.New(rand.NewPCG(seed, h.Sum64()))
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
		Normalization:      "given",
	}
}

// Validate reports the first problem with the config.
func (c Config) Validate() error {
	switch {
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
	case c.Dataset != "" && c.Dataset != DatasetSynthetic && c.Dataset != DatasetPhysioNet:
		return fmt.Errorf("sim: dataset %q: use %s or %s", c.Dataset, DatasetSynthetic, DatasetPhysioNet)
	case c.Normalization != "" && c.Normalization != "given" && c.Normalization != "federated":
		return fmt.Errorf("sim: normalization %q: use given or federated", c.Normalization)
	case c.Byzantine.Sites < 0 || c.Byzantine.Sites >= c.Sites && c.Byzantine.Sites > 0:
		return fmt.Errorf("sim: %d Byzantine sites of %d: at least one site must be honest", c.Byzantine.Sites, c.Sites)
	case c.Byzantine.Sites > 0 && !slices.Contains(Attacks, c.Byzantine.Attack):
		return fmt.Errorf("sim: attack %q: use one of %s", c.Byzantine.Attack, strings.Join(Attacks, ", "))
	case c.Byzantine.Scale < 0 || math.IsNaN(c.Byzantine.Scale) || math.IsInf(c.Byzantine.Scale, 0):
		return errors.New("sim: the attack's scale must be a non-negative number")
	}
	if c.Strategy.Name != "" {
		if _, err := aggregator.New(c.Strategy); err != nil {
			return fmt.Errorf("sim: strategy: %w", err)
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
	Elapsed  float64 `json:"elapsed_seconds"`
}

// Report is the outcome of a run (`cohort sim --report-json`).
type Report struct {
	// Dataset names the data the sites held.
	Dataset string `json:"dataset"`
	// Strategy is the aggregation rule; ByzantineSites the attacking sites.
	Strategy          string      `json:"strategy"`
	ByzantineSites    []string    `json:"byzantine_sites,omitempty"`
	RoundsCompleted   int         `json:"rounds_completed"`
	Sites             int         `json:"sites"`
	Coordinators      int         `json:"coordinators"`
	Federated         Metrics     `json:"federated"`
	Centralized       Metrics     `json:"centralized"`
	LocalOnly         LocalOnly   `json:"local_only"`
	BytesSentByAgents int64       `json:"bytes_sent_by_agents"`
	WallSeconds       float64     `json:"wall_seconds"`
	Rounds            []RoundLine `json:"rounds"`
}

func describeScale(b Byzantine) string {
	if b.Scale == 0 {
		return "default scale"
	}
	return fmt.Sprintf("scale %g", b.Scale)
}

// Run builds the testbed, runs the job to completion and computes the
// baselines. It returns an error if the job fails.
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

	// Data: one input directory per site and a held-out test population.
	var (
		data *prepared
		err  error
	)
	switch cfg.Dataset {
	case DatasetPhysioNet:
		data, err = preparePhysioNet(ctx, dir, cfg, out)
	default:
		data, err = prepareSynthetic(dir, cfg)
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "cohort sim: %d coordinators, %d sites (%s), %d rounds, seed %d\n",
		cfg.Coordinators, len(data.sites), data.describe(), cfg.Rounds, cfg.Seed)
	rep := &Report{}

	job := coordinator.DefaultJobSpec()
	job.ID = data.jobID
	job.Rounds = cfg.Rounds
	job.MinSites = len(data.sites)
	job.RoundTimeout = coordinator.Duration(cfg.RoundTimeout)
	job.Model.NumFeatures = len(data.spec.GetFeatures())
	job.Features = coordinator.FeatureSpec{FeatureSpec: data.spec}
	job.Train.LocalEpochs = cfg.LocalEpochs
	job.Train.LearningRate = cfg.LearningRate
	job.Train.BatchSize = cfg.BatchSize
	job.Train.Seed = cfg.Seed
	job.Train.ValidationFraction = cfg.ValidationFraction
	if cfg.Strategy.Name != "" {
		job.Strategy = coordinator.StrategySpec{Spec: cfg.Strategy}
	}
	if err := job.Validate(0); err != nil {
		return nil, err
	}
	rep.Strategy = job.Strategy.Name
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

	siteIDs := data.siteIDs()
	fed, err := startFederation(ctx, federationConfig{
		Dir: dir, Coordinators: cfg.Coordinators, Sites: siteIDs, DataDir: filepath.Join(dir, "data"),
		Jobs: []coordinator.JobSpec{job}, Logger: log, EgressTap: cfg.EgressTap, Seed: cfg.Seed,
		Adversaries: adversaries,
	})
	if err != nil {
		return nil, err
	}
	defer fed.stop()

	rep.Sites, rep.Coordinators, rep.Dataset = len(siteIDs), cfg.Coordinators, data.name
	// The held-out test population is featurized exactly as the sites do,
	// with the spec they train with (under federated normalization: once
	// the statistics round committed).
	w := &watcher{job: job.ID, rounds: cfg.Rounds, start: start, out: out, rep: rep,
		loadTest: func(spec *pb.FeatureSpec) (*dataset, error) { return loadDataset(ctx, data.testDir, spec) }}
	final, err := w.watch(ctx, fed.nodes, fed.errC)
	if err != nil {
		return rep, err
	}
	rep.Federated = final
	if err := fed.stop(); err != nil {
		return rep, fmt.Errorf("stop federation: %w", err)
	}
	rep.BytesSentByAgents = fed.bytesSent()

	// Baselines, trained by the same trainer on the same training splits.
	fmt.Fprintf(out, "baselines: training centralized and local-only models (%d epochs each)\n", cfg.Rounds*cfg.LocalEpochs)
	base, err := baselines(ctx, dir, siteIDs, w.spec, w.test, cfg, job.ID)
	if err != nil {
		return rep, err
	}
	rep.Centralized = base.central
	rep.LocalOnly = base.local
	rep.WallSeconds = time.Since(start).Seconds()
	printSummary(out, rep)
	return rep, nil
}

// watcher follows the job on the cluster, scores each committed global
// model on the test set and prints a line per round.
type watcher struct {
	job      string
	rounds   int
	start    time.Time
	out      io.Writer
	rep      *Report
	loadTest func(*pb.FeatureSpec) (*dataset, error)

	// spec and test are set at the first committed training round.
	spec *pb.FeatureSpec
	test *dataset
}

func (w *watcher) watch(ctx context.Context, nodes []*coordinator.Node, errC <-chan error) (Metrics, error) {
	var last Metrics
	seen := uint64(0)
	statsSeen := false
	for {
		changed := nodes[0].Changed()
		j, ok := nodes[0].Job(w.job)
		if ok {
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
						return last, fmt.Errorf("test set: %w", err)
					}
					w.test = test
				}
				m, err := scoreModel(ctx, nodes[0], j.Spec.Model, j.ModelByDigest(r.Result), w.test)
				if err != nil {
					return last, err
				}
				// The round's commit time (the leader's clock, in the log),
				// not when this watcher got to it.
				line := RoundLine{Round: r.Number, Sites: len(r.Contributors), AUROC: m.AUROC, Accuracy: m.Accuracy,
					Elapsed: r.Closed.Sub(w.start).Seconds()}
				w.rep.Rounds = append(w.rep.Rounds, line)
				w.rep.RoundsCompleted = int(r.Number)
				fmt.Fprintf(w.out, "round %2d/%d  sites %d  auroc %.4f  accuracy %.4f  elapsed %5.1fs\n",
					line.Round, w.rounds, line.Sites, line.AUROC, line.Accuracy, line.Elapsed)
				seen = r.Number
				last = m
			}
			switch j.State {
			case coordinator.JobDone:
				return last, nil
			case coordinator.JobFailed:
				return last, fmt.Errorf("job failed: %s", j.FailReason)
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case err := <-errC:
			return last, err
		case <-changed:
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
	fmt.Fprintf(out, "rounds %d, bytes sent by agents %d, wall %.1fs\n", rep.RoundsCompleted, rep.BytesSentByAgents, rep.WallSeconds)
}
