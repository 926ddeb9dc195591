package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim"
)

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := sim.DefaultConfig()
	fs := flag.NewFlagSet("cohort sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        = def
		reportJSON = fs.String("report-json", "", "write the run's report as JSON to this `file`")
		logLevel   = fs.String("log-level", "off", "components' log level on stderr: debug, info, warn, error or off")
	)
	fs.IntVar(&cfg.Coordinators, "coordinators", def.Coordinators, "coordinator nodes in the Raft cluster")
	fs.IntVar(&cfg.Sites, "sites", def.Sites, "hospital agents, each with its own synthetic patients")
	fs.IntVar(&cfg.Rounds, "rounds", def.Rounds, "federated rounds")
	fs.Uint64Var(&cfg.Seed, "seed", def.Seed, "seed for the synthetic hospitals and training")
	fs.StringVar(&cfg.Model.Kind, "model", "logreg", "model: logreg (logistic regression) or mlp (multilayer perceptron)")
	hidden := fs.String("hidden", "32,16", "with --model mlp: the hidden layers' widths, comma-separated")
	fs.StringVar(&cfg.Optimizer, "optimizer", "sgd", "local optimizer: sgd or adam")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this `file` (for scale work)")
	memProfile := fs.String("memprofile", "", "write a heap profile, taken when the job has finished, to this `file` (for scale work)")
	fs.BoolVar(&cfg.Processes, "processes", false, "run each site's agent as a separate `cohort agent` process (coordinators stay in this one)")
	fs.IntVar(&cfg.PatientsPerSite, "patients-per-site", 0, "synthetic data: patients at every site (0 = each default hospital's own size: 200 to 900)")
	fs.IntVar(&cfg.TestPatients, "test-patients", def.TestPatients, "size of the held-out test population")
	fs.IntVar(&cfg.LocalEpochs, "local-epochs", def.LocalEpochs, "local training epochs per round")
	fs.Float64Var(&cfg.LearningRate, "lr", def.LearningRate, "local learning rate")
	fs.IntVar(&cfg.BatchSize, "batch-size", def.BatchSize, "local mini-batch size (0 = full batch)")
	fs.DurationVar(&cfg.RoundTimeout, "round-timeout", def.RoundTimeout, "deadline of each round")
	fs.StringVar(&cfg.Dataset, "dataset", def.Dataset, "site data: synthetic (generated hospitals), physionet (PhysioNet 2012 ICU stays; predicts in-hospital death) or synthea (the 100-patient Synthea R4 sample, 2 sites at most; predicts prediabetes)")
	fs.StringVar(&cfg.PhysioNetDir, "physionet-dir", def.PhysioNetDir, "`directory` with PhysioNet 2012 set-a.tar.gz and Outcomes-a.txt")
	fs.StringVar(&cfg.SyntheaDir, "synthea-dir", def.SyntheaDir, "`directory` of the Synthea R4 sample (its ndjson/ folder of Bulk Data files)")
	fs.StringVar(&cfg.Split, "split", def.Split, "how physionet or synthea data is divided into sites: icu (physionet default: one site per ICU type, --sites ignored), random (synthea default: --sites sites of similar size and outcome rate) or skewed (--sites sites of unequal size and outcome rate)")
	fs.StringVar(&cfg.Normalization, "normalization", def.Normalization, "synthetic data: given (reference centers and scales) or federated (a statistics round first)")
	fs.StringVar(&cfg.Dir, "dir", "", "keep certificates, data and stores in this `directory` (default: a temporary one, removed)")
	fs.BoolVar(&cfg.DataOnly, "data-only", false, "only write each site's FHIR data to DIR/data/<site> and the test population to DIR/data/test (needs --dir), and run no federation; an existing DIR/data is kept")
	fs.StringVar(&cfg.Strategy.Name, "strategy", "fedavg", "aggregation rule: "+strings.Join(aggregator.Names(), ", "))
	var params stringList
	fs.Var(&params, "strategy-param", "a rule parameter as `name=value` (repeatable), e.g. server_lr=0.03 for fedadam, f=1 for krum")
	fs.Float64Var(&cfg.Strategy.NormBound, "norm-bound", 0, "clip every update to this L2 norm on the coordinator (0 = off)")
	epsilon := fs.Float64("epsilon", 0, "make the job differentially private (central DP-FedAvg) with this ε budget; the noise is planned so that every round fits (0 = off)")
	delta := fs.Float64("delta", coordinator.DefaultDelta, "with --epsilon: the δ of (ε, δ)-DP")
	clipNorm := fs.Float64("clip-norm", 0.5, "with --epsilon: each site's update is clipped to this L2 norm")
	noise := fs.Float64("noise-multiplier", 0, "with --epsilon: the noise multiplier (0 = planned from the budget)")
	deploy := fs.Bool("deploy", false, "after training, promote the final model to production, check that it reaches every site, and replay device telemetry to score it (risk assessments and alerts)")
	fs.BoolVar(&cfg.Evaluate, "evaluate", false, "after training, score the final model at every site on the records its training held out (a federated evaluation job)")
	secAgg := fs.Bool("secure-aggregation", false, "aggregate every round with secure aggregation: the coordinators learn only the sum of the sites' updates (mean-based rules only; with --epsilon the noise is split across the sites)")
	secAggThreshold := fs.Int("secagg-threshold", 0, "with --secure-aggregation: the threshold t, the fewest sites that must remain at every step (0 = a majority of the sites)")
	secAggClip := fs.Float64("secagg-clip-range", 0, "with --secure-aggregation: each coordinate of an update is clipped to [-c, c] (0 = the default)")
	scenario := fs.String("scenario", "", "run the scenario in this YAML `file`, or every *.yaml in this directory, and check its expectations (other job flags are ignored)")
	reportDir := fs.String("report-dir", "", "write a report (report.md, report.json and PNG charts) to this `directory`; with several scenarios, one subdirectory each")
	compare := fs.String("compare", "", "run once per `rules` (comma-separated; parameters after colons, e.g. fedavg,fedadam:server_lr=0.1) and seed, and print a comparison table")
	compareEps := fs.String("compare-epsilon", "", "run the rule once per ε `budgets` (comma-separated; 0 = without differential privacy) and seed, with the noise planned for each budget, and print a comparison table")
	seedList := fs.String("seeds", "1", "with --compare: the `seeds`, comma-separated")
	markdown := fs.String("markdown", "", "with --compare: also write the table as Markdown to this `file`")
	fs.IntVar(&cfg.Byzantine.Sites, "byzantine", 0, "how many sites attack (the last ones)")
	fs.StringVar(&cfg.Byzantine.Attack, "attack", "signflip", "the Byzantine sites' attack: "+strings.Join(sim.Attacks, ", "))
	fs.Float64Var(&cfg.Byzantine.Scale, "attack-scale", 0, "the attack's factor (signflip, scale; default 10) or noise level (noise; default 1)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: cohort sim [flags]

Runs a whole federation in one process: a Raft cluster of coordinators and
several hospital agents over real QUIC with mutual TLS on loopback. Each
agent ingests its own synthetic FHIR R4 patients (non-IID sites) into an
encrypted store and trains logistic regression locally; the coordinators
aggregate the updates (FedAvg by default; --strategy picks another rule,
and --byzantine makes some sites attack). One line is printed per round with the global
model's AUROC and accuracy on a held-out test population; at the end it
prints AUROC and accuracy for centralized training on the pooled data, and
AUROC for each site alone (and their mean), all trained by the same trainer
on the same records the agents trained on. Exits non-zero if the job fails.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sim: unexpected argument %q", fs.Arg(0))
	}
	if cfg.Model.Kind == "mlp" {
		for _, f := range strings.Split(*hidden, ",") {
			h, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || h < 1 {
				return fmt.Errorf("sim: --hidden %q: want positive widths, comma-separated", *hidden)
			}
			cfg.Model.Hidden = append(cfg.Model.Hidden, h)
		}
	}
	for _, p := range params {
		k, v, ok := strings.Cut(p, "=")
		x, err := strconv.ParseFloat(v, 64)
		if !ok || k == "" || err != nil {
			return fmt.Errorf("sim: --strategy-param %q: want name=number", p)
		}
		if cfg.Strategy.Params == nil {
			cfg.Strategy.Params = map[string]float64{}
		}
		cfg.Strategy.Params[k] = x
	}
	if *epsilon > 0 {
		cfg.Privacy = &coordinator.PrivacySpec{ClipNorm: *clipNorm, NoiseMultiplier: *noise, Epsilon: *epsilon, Delta: *delta}
	}
	if *deploy {
		cfg.Deploy = &sim.DeploySpec{}
	}
	if *secAgg {
		cfg.SecureAggregation = &coordinator.SecureAggregationSpec{Threshold: *secAggThreshold, ClipRange: *secAggClip}
	} else if *secAggThreshold != 0 || *secAggClip != 0 {
		return errors.New("sim: --secagg-threshold and --secagg-clip-range need --secure-aggregation")
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = log
	cfg.Out = stdout
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.HeapProfile = f
	}
	cfg.Progress = stderr
	if exe, err := os.Executable(); err == nil {
		cfg.AgentCommand = []string{exe, "agent"}
	}
	if *scenario != "" {
		return runScenarios(ctx, cfg, *scenario, *reportDir, args, stdout)
	}
	if *compareEps != "" {
		var budgets []float64
		for _, f := range strings.Split(*compareEps, ",") {
			x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || x < 0 {
				return fmt.Errorf("sim: --compare-epsilon %q: want non-negative numbers, comma-separated", *compareEps)
			}
			budgets = append(budgets, x)
		}
		seeds, err := parseSeeds(*seedList)
		if err != nil {
			return err
		}
		cfg.Privacy = &coordinator.PrivacySpec{ClipNorm: *clipNorm, Delta: *delta} // clip and δ for every budget
		c, err := sim.ComparePrivacy(ctx, cfg, budgets, seeds, stdout)
		if err != nil {
			return err
		}
		return writeComparison(c, args, *markdown, stdout)
	}
	if *compare != "" {
		return runCompare(ctx, cfg, *compare, *seedList, *markdown, args, stdout)
	}
	rep, err := sim.Run(ctx, cfg)
	if *reportJSON != "" && rep != nil {
		b, jerr := json.MarshalIndent(rep, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(*reportJSON, append(b, '\n'), 0o644) // #nosec G306 -- a simulation report, meant to be shared; no patient data
		}
		if jerr != nil && err == nil {
			err = fmt.Errorf("write report: %w", jerr)
		}
	}
	return err
}

// runCompare runs `cohort sim --compare`.
func runCompare(ctx context.Context, cfg sim.Config, compare, seedList, markdown string, args []string, stdout io.Writer) error {
	var rules []aggregator.Spec
	for _, item := range strings.Split(compare, ",") {
		parts := strings.Split(strings.TrimSpace(item), ":")
		r := aggregator.Spec{Name: parts[0], NormBound: cfg.Strategy.NormBound}
		for _, p := range parts[1:] {
			k, v, ok := strings.Cut(p, "=")
			x, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return fmt.Errorf("sim: --compare %q: want rule:name=number", item)
			}
			if r.Params == nil {
				r.Params = map[string]float64{}
			}
			r.Params[k] = x
		}
		rules = append(rules, r)
	}
	seeds, err := parseSeeds(seedList)
	if err != nil {
		return err
	}
	c, err := sim.Compare(ctx, cfg, rules, seeds, stdout)
	if err != nil {
		return err
	}
	return writeComparison(c, args, markdown, stdout)
}

// parseSeeds reads --seeds.
func parseSeeds(seedList string) ([]uint64, error) {
	var seeds []uint64
	for _, f := range strings.Split(seedList, ",") {
		x, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("sim: --seeds %q: %w", seedList, err)
		}
		seeds = append(seeds, x)
	}
	return seeds, nil
}

// writeComparison prints a comparison's table and writes it to markdown.
func writeComparison(c *sim.Comparison, args []string, markdown string, stdout io.Writer) error {
	md := c.Markdown("cohort sim " + strings.Join(args, " "))
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, md)
	if markdown != "" {
		if err := os.WriteFile(markdown, []byte(md), 0o644); err != nil { // #nosec G306 G703 -- a simulation report at the path the operator gave (--markdown), meant to be shared
			return fmt.Errorf("write %s: %w", markdown, err)
		}
	}
	return nil
}
