package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
	"sigs.k8s.io/yaml"
)

// ErrScenario reports a scenario file that cannot be run as written.
var ErrScenario = errors.New("sim: scenario")

// Scenario is a testbed described in a YAML file (docs/running-a-testbed.md
// documents every field; sim/scenarios/ holds examples): the topology, each
// site's data, the job, a fault timeline and the expectations checked at
// the end. Fields left out take DefaultConfig's values.
type Scenario struct {
	// Name identifies the scenario in reports (default: the file name).
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Seed makes the data, training and faults reproducible.
	Seed     uint64   `json:"seed,omitempty"`
	Topology Topology `json:"topology,omitzero"`
	Data     Data     `json:"data,omitzero"`
	Job      Job      `json:"job,omitzero"`
	// Byzantine makes the last sites attack.
	Byzantine Byzantine `json:"byzantine,omitzero"`
	// Links are the agent links' conditions from the start; with them or
	// any link fault, every agent reaches every coordinator through a
	// lossy UDP relay.
	Links  Link    `json:"links,omitzero"`
	Faults []Fault `json:"faults,omitempty"`
	Expect Expect  `json:"expect,omitzero"`
	// Compare runs the scenario once per rule (instead of job.strategy),
	// on the same data, seed and fault timeline; each run is checked
	// against the expectations, and the report puts them side by side.
	Compare []coordinator.StrategySpec `json:"compare,omitempty"`
}

// Topology is the testbed's processes.
type Topology struct {
	Coordinators int `json:"coordinators,omitempty"`
	// Sites is the number of sites (ignored when Data.Sites lists them or
	// the data is PhysioNet split by ICU type).
	Sites int `json:"sites,omitempty"`
	// Processes runs each site's agent as a separate process.
	Processes bool `json:"processes,omitempty"`
}

// Data is what the sites hold.
type Data struct {
	// Dataset is synthetic (default), physionet or synthea.
	Dataset string `json:"dataset,omitempty"`
	// Split divides a real dataset into sites: icu, random or skewed.
	Split string `json:"split,omitempty"`
	// Dir is the real dataset's folder (default: ../shared/data/...).
	Dir string `json:"dir,omitempty"`
	// TestPatients is the size of the synthetic held-out population.
	TestPatients int `json:"test_patients,omitempty"`
	// Normalization of synthetic features: given or federated.
	Normalization string `json:"normalization,omitempty"`
	// PatientsPerSite sets the size of every default synthetic hospital.
	PatientsPerSite int `json:"patients_per_site,omitempty"`
	// Sites are the synthetic hospitals, one per site, overriding the
	// defaults (see sim/synth.Site for the fields: size, age and sex mix,
	// prevalence shift, missingness, device calibration and noise, label
	// noise). A site's name, index and seed default from its position.
	Sites []synth.Site `json:"sites,omitempty"`
}

// Job is the federated job the testbed runs.
type Job struct {
	Rounds       int                      `json:"rounds,omitempty"`
	Strategy     coordinator.StrategySpec `json:"strategy,omitzero"`
	Model        coordinator.ModelSpec    `json:"model,omitzero"`
	Optimizer    string                   `json:"optimizer,omitempty"`
	LocalEpochs  int                      `json:"local_epochs,omitempty"`
	LearningRate float64                  `json:"learning_rate,omitempty"`
	BatchSize    int                      `json:"batch_size,omitempty"`
	RoundTimeout coordinator.Duration     `json:"round_timeout,omitempty"`
	// MinSites is how many updates close a round (default: every site).
	MinSites    int                  `json:"min_sites,omitempty"`
	MaxAttempts int                  `json:"max_attempts,omitempty"`
	Sampling    coordinator.Sampling `json:"sampling,omitzero"`
	// Privacy makes the job differentially private (see the operator's
	// guide); a zero noise_multiplier is planned from epsilon.
	Privacy *coordinator.PrivacySpec `json:"privacy,omitempty"`
	// SecureAggregation aggregates every round with secure aggregation
	// (see the operator's guide): {} for the defaults.
	SecureAggregation *coordinator.SecureAggregationSpec `json:"secure_aggregation,omitempty"`
	// Analytics also runs a federated analytics job over the same
	// features (see the operator's guide): {} for counts, means and
	// standard deviations only.
	Analytics *coordinator.AnalyticsSpec `json:"analytics,omitempty"`
	// Evaluate scores the final model at every site (federated
	// evaluation) after training.
	Evaluate bool `json:"evaluate,omitempty"`
	// Deploy promotes the final model and checks it reaches every site
	// and scores replayed device telemetry ({} for the defaults).
	Deploy *DeploySpec `json:"deploy,omitempty"`
}

// Expect are the checks made at the end of a run; a run whose checks fail
// exits non-zero. The job must always finish with every round committed.
type Expect struct {
	// MinAUROC is the least test AUROC of the final global model.
	MinAUROC float64 `json:"min_auroc,omitempty"`
	// MaxGapToCentralized bounds centralized AUROC minus federated AUROC.
	MaxGapToCentralized *float64 `json:"max_gap_to_centralized,omitempty"`
	// MinGainOverLocal is the least federated AUROC minus the mean
	// local-only AUROC.
	MinGainOverLocal *float64 `json:"min_gain_over_local,omitempty"`
	// MaxRecoverySeconds bounds, for each fault that stops or cuts off
	// coordinators, the time to the next round commit.
	MaxRecoverySeconds float64 `json:"max_recovery_seconds,omitempty"`
	// MinLateUpdates is the least number of straggling updates the
	// coordinators discarded as late.
	MinLateUpdates int `json:"min_late_updates,omitempty"`
	// MinRoundSites is the least number of contributors to every round.
	MinRoundSites int `json:"min_round_sites,omitempty"`
	// MinDroppedDatagrams is the least number of datagrams the relays
	// dropped (proof that a lossy link was lossy).
	MinDroppedDatagrams int64 `json:"min_dropped_datagrams,omitempty"`
	// MaxWallSeconds bounds the whole run, baselines included.
	MaxWallSeconds float64 `json:"max_wall_seconds,omitempty"`
	// NoPHI checks that no planted identifier of any synthetic patient
	// appears in any byte an agent sent.
	NoPHI bool `json:"no_phi,omitempty"`
	// MaxEpsilon bounds the ε a private job spent (and requires the job
	// to be private).
	MaxEpsilon float64 `json:"max_epsilon,omitempty"`
}

// Expectation is one check of a run and its outcome.
type Expectation struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Pass bool   `json:"pass"`
}

// LoadScenario reads and checks a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	sc, err := ParseScenario(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if sc.Name == "" {
		sc.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return sc, nil
}

// ParseScenario reads a scenario from YAML (or JSON), refusing unknown
// fields, and checks it.
func ParseScenario(b []byte) (*Scenario, error) {
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var sc Scenario
	if err := dec.Decode(&sc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	if _, err := sc.Config(DefaultConfig()); err != nil {
		return nil, err
	}
	for _, r := range sc.Compare {
		v := sc
		v.Compare, v.Job.Strategy = nil, r
		if _, err := v.Config(DefaultConfig()); err != nil {
			return nil, fmt.Errorf("compare %s: %w", r.Name, err)
		}
	}
	return &sc, nil
}

// Config turns the scenario into a run's config, starting from def.
func (sc *Scenario) Config(def Config) (Config, error) {
	c := def
	bad := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("%w: %s", ErrScenario, fmt.Sprintf(format, a...))
	}
	if sc.Seed != 0 {
		c.Seed = sc.Seed
	}
	if t := sc.Topology; t.Coordinators != 0 {
		c.Coordinators = t.Coordinators
	}
	if sc.Topology.Sites != 0 {
		c.Sites = sc.Topology.Sites
	}
	c.Processes = c.Processes || sc.Topology.Processes
	d := sc.Data
	if d.Dataset != "" {
		c.Dataset = d.Dataset
	}
	c.Split = d.Split
	if d.Dir != "" {
		switch c.Dataset {
		case DatasetPhysioNet:
			c.PhysioNetDir = d.Dir
		case DatasetSynthea:
			c.SyntheaDir = d.Dir
		default:
			return bad("data.dir applies to physionet and synthea only")
		}
	}
	if d.TestPatients != 0 {
		c.TestPatients = d.TestPatients
	}
	if d.Normalization != "" {
		c.Normalization = d.Normalization
	}
	c.PatientsPerSite = d.PatientsPerSite
	if len(d.Sites) > 0 {
		if c.Dataset != DatasetSynthetic {
			return bad("data.sites describes synthetic hospitals; dataset is %s", c.Dataset)
		}
		c.SiteSpecs = d.Sites
		c.Sites = len(d.Sites)
	}
	j := sc.Job
	if j.Rounds != 0 {
		c.Rounds = j.Rounds
	}
	if j.Strategy.Name != "" {
		c.Strategy = j.Strategy.Spec
	}
	if j.Model.Kind != "" {
		c.Model = j.Model
	}
	if j.Optimizer != "" {
		c.Optimizer = j.Optimizer
	}
	if j.LocalEpochs != 0 {
		c.LocalEpochs = j.LocalEpochs
	}
	if j.LearningRate != 0 {
		c.LearningRate = j.LearningRate
	}
	if j.BatchSize != 0 {
		c.BatchSize = j.BatchSize
	}
	if j.RoundTimeout != 0 {
		c.RoundTimeout = time.Duration(j.RoundTimeout)
	}
	c.MinSites, c.MaxAttempts, c.Sampling = j.MinSites, j.MaxAttempts, j.Sampling
	c.Privacy = j.Privacy
	c.SecureAggregation = j.SecureAggregation
	c.Analytics = j.Analytics
	c.Evaluate = j.Evaluate
	c.Deploy = j.Deploy
	c.Byzantine = sc.Byzantine
	c.Links = sc.Links
	c.Faults = sc.Faults
	if err := sc.Links.validate(); err != nil {
		return bad("links: %v", err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrScenario, err)
	}
	e := sc.Expect
	if e.MinAUROC < 0 || e.MinAUROC > 1 || e.MaxRecoverySeconds < 0 || e.MinLateUpdates < 0 ||
		e.MinRoundSites < 0 || e.MinDroppedDatagrams < 0 || e.MaxWallSeconds < 0 || e.MaxEpsilon < 0 {
		return bad("expect: values must not be negative, and min_auroc at most 1")
	}
	if e.MinDroppedDatagrams > 0 && !c.relays() {
		return bad("expect.min_dropped_datagrams needs links or a link fault")
	}
	if e.NoPHI && c.Processes {
		return bad("expect.no_phi scans in-process agents' egress; topology.processes is set")
	}
	if e.NoPHI && c.Dataset != DatasetSynthetic {
		return bad("expect.no_phi checks the planted identifiers of synthetic data")
	}
	return c, nil
}

// check evaluates the expectations on a finished run (err is the run's
// error, if any).
func (e Expect) check(rep *Report, c Config, runErr error) []Expectation {
	var out []Expectation
	add := func(name, want, got string, pass bool) {
		out = append(out, Expectation{Name: name, Want: want, Got: got, Pass: pass})
	}
	f4 := func(x float64) string { return fmt.Sprintf("%.4f", x) }
	if runErr != nil {
		add("job finished", "done", "error: "+runErr.Error(), false)
	} else {
		add("job finished", "done", "done", true)
	}
	add("rounds committed", fmt.Sprint(c.Rounds), fmt.Sprint(rep.RoundsCompleted), rep.RoundsCompleted == c.Rounds)
	if c.Deploy != nil {
		got, pass := "not deployed", false
		if d := rep.Deployment; d != nil {
			got = fmt.Sprintf("%d of %d sites; %d risk assessments, %d alerts", d.SitesReached, rep.Sites, d.RiskAssessments, d.Alerts)
			pass = d.SitesReached == rep.Sites && d.RiskAssessments > 0 && d.RiskAssessmentsNaming == d.RiskAssessments &&
				d.Alerts > 0 && d.AlertsNaming == d.Alerts
		}
		add("promoted model at every site, scoring telemetry", "every site; assessments and alerts naming it", got, pass)
	}
	if c.Evaluate {
		got := "no results"
		if e := rep.Evaluation; e != nil {
			got = fmt.Sprintf("%d sites, AUROC %.4f", len(e.Sites), e.Pooled.AUROC)
		}
		add("federated evaluation committed", "every site", got, rep.Evaluation != nil && len(rep.Evaluation.Sites) == rep.Sites)
	}
	if c.Analytics != nil {
		got := "no results"
		if a := rep.Analytics; a != nil {
			got = fmt.Sprintf("%d features over %d sites", len(a.Features), len(a.Sites))
		}
		add("analytics results committed", "every feature", got, rep.Analytics != nil && len(rep.Analytics.Features) > 0)
	}
	if runErr != nil {
		return out
	}
	fed := rep.Federated.AUROC
	if e.MinAUROC > 0 {
		add("final AUROC", "≥ "+f4(e.MinAUROC), f4(fed), fed >= e.MinAUROC)
	}
	if e.MaxEpsilon > 0 {
		if p := rep.Privacy; p == nil {
			add("ε spent", "≤ "+f4(e.MaxEpsilon), "the job is not private", false)
		} else {
			add("ε spent", "≤ "+f4(e.MaxEpsilon), f4(p.EpsilonSpent), p.EpsilonSpent <= e.MaxEpsilon && p.EpsilonSpent > 0)
		}
	}
	if g := e.MaxGapToCentralized; g != nil {
		gap := rep.Centralized.AUROC - fed
		add("gap to centralized", "≤ "+f4(*g), f4(gap), gap <= *g)
	}
	if g := e.MinGainOverLocal; g != nil {
		gain := fed - rep.LocalOnly.MeanAUROC
		add("gain over local only", "≥ "+f4(*g), f4(gain), gain >= *g)
	}
	if e.MaxRecoverySeconds > 0 {
		worst, n := 0.0, 0
		for _, ev := range rep.Faults {
			if !disruptive(ev.Action) || ev.Err != "" {
				continue
			}
			n++
			if ev.Recovery < 0 {
				worst = math.Inf(1)
			} else {
				worst = max(worst, ev.Recovery)
			}
		}
		got := fmt.Sprintf("%.1fs over %d faults", worst, n)
		add("recovery after coordinator faults", fmt.Sprintf("≤ %.1fs", e.MaxRecoverySeconds), got, n > 0 && worst <= e.MaxRecoverySeconds)
	}
	if e.MinLateUpdates > 0 {
		add("late updates discarded", fmt.Sprintf("≥ %d", e.MinLateUpdates), fmt.Sprint(rep.UpdatesLate), rep.UpdatesLate >= int64(e.MinLateUpdates))
	}
	if e.MinRoundSites > 0 {
		least := math.MaxInt
		for _, r := range rep.Rounds {
			least = min(least, r.Sites)
		}
		if len(rep.Rounds) == 0 {
			least = 0
		}
		add("contributors per round", fmt.Sprintf("≥ %d", e.MinRoundSites), fmt.Sprint(least), least >= e.MinRoundSites)
	}
	if e.MinDroppedDatagrams > 0 {
		add("datagrams dropped on the links", fmt.Sprintf("≥ %d", e.MinDroppedDatagrams), fmt.Sprint(rep.DatagramsDropped), rep.DatagramsDropped >= e.MinDroppedDatagrams)
	}
	if e.MaxWallSeconds > 0 {
		add("wall time", fmt.Sprintf("≤ %.0fs", e.MaxWallSeconds), fmt.Sprintf("%.1fs", rep.WallSeconds), rep.WallSeconds <= e.MaxWallSeconds)
	}
	if e.NoPHI {
		got := "none found"
		if len(rep.PHIFound) > 0 {
			got = fmt.Sprintf("%d kinds found: %s", len(rep.PHIFound), strings.Join(rep.PHIFound, ", "))
		}
		add("no planted identifier in agent egress or logs", "none found", got, len(rep.PHIFound) == 0 && rep.PHIChecked > 0)
	}
	return out
}

// Passed reports whether every expectation held.
func Passed(es []Expectation) bool {
	for _, e := range es {
		if !e.Pass {
			return false
		}
	}
	return true
}

// ScenarioResult is a scenario's run: its report, its checks, and the
// run's error if it failed.
type ScenarioResult struct {
	// Label names the run: its rule and parameters.
	Label        string
	Scenario     *Scenario
	Report       *Report
	Expectations []Expectation
	Err          error
}

// Passed reports whether the run finished and every expectation held.
func (r *ScenarioResult) Passed() bool { return r.Err == nil && Passed(r.Expectations) }

// RunScenario runs sc on top of base (which supplies what a scenario does
// not describe: output, logger, progress, directory) and checks its
// expectations: once, or once per rule of sc.Compare. Only a scenario that
// cannot be run returns an error; a failed run is reported in its result.
func RunScenario(ctx context.Context, sc *Scenario, base Config) ([]*ScenarioResult, error) {
	variants := []*Scenario{sc}
	if len(sc.Compare) > 0 {
		variants = nil
		for _, r := range sc.Compare {
			v := *sc
			v.Compare, v.Job.Strategy = nil, r
			variants = append(variants, &v)
		}
	}
	var out []*ScenarioResult
	for i, v := range variants {
		cfg, err := v.Config(base)
		if err != nil {
			return out, err
		}
		if len(variants) > 1 {
			fmt.Fprintf(cfg.outWriter(), "--- %s (%d of %d)\n", describeRule(cfg.Strategy), i+1, len(variants))
			if base.Dir != "" {
				cfg.Dir = filepath.Join(base.Dir, fmt.Sprintf("run-%d", i+1))
			}
		}
		cfg.CheckPHI = cfg.CheckPHI || v.Expect.NoPHI
		rep, runErr := Run(ctx, cfg)
		if rep == nil {
			rep = &Report{Strategy: cfg.Strategy.Name, Seed: cfg.Seed}
		}
		label := describeRule(cfg.Strategy)
		if label == "" {
			label = rep.Strategy
		}
		res := &ScenarioResult{Label: label, Scenario: sc, Report: rep, Err: runErr}
		res.Expectations = v.Expect.check(rep, cfg, runErr)
		out = append(out, res)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}
