package sim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

// Every scenario in the repository's suite parses and validates.
func TestScenarioSuiteParses(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "scenarios", "*.yaml"))
	if err != nil || len(files) < 7 {
		t.Fatalf("want the scenario suite in ../scenarios, got %v (%v)", files, err)
	}
	for _, f := range files {
		sc, err := LoadScenario(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if want := strings.TrimSuffix(filepath.Base(f), ".yaml"); sc.Name != want {
			t.Errorf("%s: name %q, want the file's name %q", f, sc.Name, want)
		}
	}
}

func TestScenarioRefusesBadInput(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "name: x\nroundz: 3\n", `unknown field "roundz"`},
		{"not yaml", "name: [x\n", "scenario"},
		{"unknown action", "faults:\n- round: 1\n  action: explode\n", `unknown action "explode"`},
		{"two triggers", "faults:\n- round: 1\n  time: 2s\n  action: heal\n", "exactly one trigger"},
		{"no trigger", "faults:\n- action: heal\n", "exactly one trigger"},
		{"bad node", "faults:\n- round: 1\n  action: kill-node\n  node: 4\n", "numbered 1 to 3"},
		{"unknown site", "faults:\n- round: 1\n  action: drop-site\n  sites: [nowhere]\n", `unknown site "nowhere"`},
		{"site action without sites", "faults:\n- round: 1\n  action: drop-site\n", "needs sites"},
		{"straggle without delay", "faults:\n- round: 1\n  action: straggle\n  sites: [academic]\n", "positive delay"},
		{"partition everyone", "faults:\n- round: 1\n  action: partition\n  nodes: [1, 2, 3]\n", "between 1 and 2 nodes"},
		{"bad loss", "links:\n  loss: 1.5\n", "loss must be in [0, 1]"},
		{"bad link fault", "faults:\n- time: 1s\n  action: link\n  loss: -0.1\n", "loss must be in [0, 1]"},
		{"bad duration", "job:\n  round_timeout: soon\n", "invalid duration"},
		{"after_updates without round", "faults:\n- time: 1s\n  after_updates: 1\n  action: heal\n", "after_updates needs a round trigger"},
		{"bad strategy", "job:\n  strategy: fedmagic\n", "fedmagic"},
		{"krum needs sites", "job:\n  strategy: {name: krum, params: {f: 1}}\n", "krum"},
		{"dropped datagrams without relays", "expect:\n  min_dropped_datagrams: 1\n", "needs links"},
		{"no_phi on real data", "data:\n  dataset: physionet\nexpect:\n  no_phi: true\n", "synthetic"},
		{"bad dataset", "data:\n  dataset: mimic\n", `dataset "mimic"`},
		{"sites on real data", "data:\n  dataset: physionet\n  sites: [{name: a, patients: 10}]\n", "synthetic hospitals"},
		{"bad synthetic site", "data:\n  sites: [{name: a, patients: -1}]\n", "patients"},
		{"byzantine everyone", "topology: {sites: 2}\nbyzantine: {sites: 2, attack: signflip}\n", "honest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScenario([]byte(tc.yaml))
			if err == nil || !errors.Is(err, ErrScenario) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrScenario mentioning %q", err, tc.want)
			}
		})
	}
}

func TestScenarioConfig(t *testing.T) {
	sc, err := ParseScenario([]byte(`
seed: 9
topology: {coordinators: 5}
data:
  sites:
    - {name: big, patients: 300, age_mean: 60, age_sd: 10, female_frac: 0.5}
    - {patients: 100, age_mean: 40, age_sd: 10, female_frac: 0.5, prevalence_shift: -1}
job:
  rounds: 3
  strategy: {name: fedadam, params: {server_lr: 0.05}}
  model: {kind: mlp, hidden: [8]}
  optimizer: adam
  min_sites: 1
links: {loss: 0.1, latency: 5ms}
faults:
  - {round: 2, after_updates: 1, action: kill-leader, for: 2s}
  - {time: 3s, action: straggle, sites: [site-2], delay: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := sc.Config(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if c.Seed != 9 || c.Coordinators != 5 || c.Sites != 2 || c.Rounds != 3 || c.Strategy.Name != "fedadam" ||
		c.Strategy.Params["server_lr"] != 0.05 || c.Model.Kind != "mlp" || c.Optimizer != "adam" || c.MinSites != 1 ||
		c.Links.Loss != 0.1 || time.Duration(c.Links.Latency) != 5*time.Millisecond || len(c.Faults) != 2 || !c.relays() {
		t.Fatalf("config: %+v", c)
	}
	if got := c.siteNames(); strings.Join(got, ",") != "big,site-2" {
		t.Fatalf("site names %v", got)
	}
	sites := c.syntheticSites()
	if sites[1].Index != 2 || sites[1].Seed == 0 || sites[0].Seed == sites[1].Seed {
		t.Fatalf("blank index and seed not filled in: %+v", sites)
	}
}

func TestExpectations(t *testing.T) {
	gap, gain := 0.01, 0.0
	e := Expect{MinAUROC: 0.8, MaxGapToCentralized: &gap, MinGainOverLocal: &gain, MaxRecoverySeconds: 5,
		MinLateUpdates: 1, MinRoundSites: 3, MinDroppedDatagrams: 2, MaxWallSeconds: 60, NoPHI: true}
	rep := &Report{RoundsCompleted: 3, Federated: Metrics{AUROC: 0.85}, Centralized: Metrics{AUROC: 0.855},
		LocalOnly: LocalOnly{MeanAUROC: 0.82}, UpdatesLate: 2, DatagramsDropped: 7, WallSeconds: 30,
		Rounds:     []RoundLine{{Sites: 3}, {Sites: 4}, {Sites: 3}},
		Faults:     []FaultEvent{{Action: ActKillLeader, Recovery: 2.5}, {Action: ActStraggle}},
		PHIChecked: 100}
	c := Config{Rounds: 3}
	if es := e.check(rep, c, nil); !Passed(es) || len(es) != 11 {
		t.Fatalf("a run meeting every expectation: %+v", es)
	}
	bad := *rep
	bad.Federated.AUROC = 0.7
	bad.Faults = []FaultEvent{{Action: ActKillNode, Recovery: -1}}
	bad.PHIFound = []string{"mrn"}
	bad.Rounds = []RoundLine{{Sites: 2}}
	failed := map[string]bool{}
	for _, x := range e.check(&bad, c, nil) {
		if !x.Pass {
			failed[x.Name] = true
		}
	}
	for _, want := range []string{"final AUROC", "gap to centralized", "gain over local only",
		"recovery after coordinator faults", "contributors per round", "no planted identifier in agent egress or logs"} {
		if !failed[want] {
			t.Errorf("%q should fail: failed %v", want, failed)
		}
	}
	if es := e.check(&Report{}, c, errors.New("job failed")); Passed(es) || es[0].Pass {
		t.Fatalf("a failed run passed: %+v", es)
	}
}

func TestTimelineTriggers(t *testing.T) {
	tl := &timeline{}
	for _, tc := range []struct {
		f    Fault
		cur  roundView
		now  time.Duration
		want bool
	}{
		{Fault{Round: 2}, roundView{number: 1, open: true}, 0, false},
		{Fault{Round: 2}, roundView{number: 1}, 0, false},
		{Fault{Round: 2}, roundView{number: 2, open: true}, 0, true},
		{Fault{Round: 2, AfterUpdates: 2}, roundView{number: 2, open: true, receipts: 1}, 0, false},
		{Fault{Round: 2, AfterUpdates: 2}, roundView{number: 2, open: true, receipts: 2}, 0, true},
		// A round that went by without the watcher seeing it open still
		// fires its faults.
		{Fault{Round: 2, AfterUpdates: 2}, roundView{number: 2}, 0, true},
		{Fault{Round: 2}, roundView{number: 3, open: true}, 0, true},
		{Fault{Time: coordinator.Duration(time.Second)}, roundView{}, 999 * time.Millisecond, false},
		{Fault{Time: coordinator.Duration(time.Second)}, roundView{}, time.Second, true},
	} {
		if got := tl.due(tc.f, tc.cur, tc.now); got != tc.want {
			t.Errorf("due(%s, %+v, %s) = %v, want %v", tc.f.trigger(), tc.cur, tc.now, got, tc.want)
		}
	}
}

func TestRecoveries(t *testing.T) {
	ev := []FaultEvent{{At: 1, Action: ActKillLeader}, {At: 5, Action: ActPartition}, {At: 2, Action: ActStraggle}, {At: 9, Action: ActKillNode}}
	recoveries(ev, []RoundLine{{Elapsed: 0.5}, {Elapsed: 3}, {Elapsed: 5.5}})
	if ev[0].Recovery != 2 || ev[1].Recovery != 0.5 || ev[2].Recovery != 0 || ev[3].Recovery != -1 {
		t.Fatalf("recoveries: %+v", ev)
	}
}

// A scenario with a fault of every kind the in-process testbed has runs to
// completion: the leader is killed and restarts, a follower is cut off and
// healed, a site drops out and rejoins, another straggles, and every link
// is lossy.
func TestScenarioWithEveryFaultKind(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end scenario; skipped with -short")
	}
	sc, err := ParseScenario([]byte(`
name: every-fault
seed: 11
topology: {coordinators: 3, sites: 3}
data:
  test_patients: 300
  sites:
    - {name: a, patients: 150, age_mean: 55, age_sd: 15, female_frac: 0.5}
    - {name: b, patients: 150, age_mean: 65, age_sd: 12, female_frac: 0.5, prevalence_shift: 0.3}
    - {name: c, patients: 150, age_mean: 45, age_sd: 12, female_frac: 0.5, prevalence_shift: -0.3}
job: {rounds: 6, round_timeout: 4s, max_attempts: 6}
links: {loss: 0.02, latency: 2ms}
faults:
  - {round: 2, after_updates: 1, action: kill-leader, for: 2s}
  - {round: 3, action: partition, nodes: [1]}
  - {round: 4, action: heal}
  - {round: 4, action: drop-site, sites: [c], for: 3s}
  # While c is away round 4 waits for it (every site must contribute), so
  # a's disconnection ends, and reconnect-site fires, before the job does.
  - {round: 4, action: disconnect-site, sites: [a], for: 1s}
  - {round: 5, action: straggle, sites: [b], delay: 500ms, for: 2s}
expect:
  min_round_sites: 3
  max_recovery_seconds: 30
  no_phi: true
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Out = testWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs, err := RunScenario(ctx, sc, cfg)
	if err != nil || len(runs) != 1 {
		t.Fatalf("%d runs: %v", len(runs), err)
	}
	res := runs[0]
	for _, e := range res.Expectations {
		t.Logf("%v %s: want %s, got %s", e.Pass, e.Name, e.Want, e.Got)
	}
	if !res.Passed() {
		t.Fatalf("scenario failed: %v", res.Err)
	}
	fired := map[string]bool{}
	for _, e := range res.Report.Faults {
		if e.Err != "" {
			t.Errorf("fault %s at %.1fs failed: %s", e.Action, e.At, e.Err)
		}
		fired[e.Action] = true
	}
	for _, a := range []string{ActKillLeader, ActRestartNode, ActPartition, ActHeal, ActDropSite, ActRejoinSite, ActStraggle, ActDisconnectSite, ActReconnectSite} {
		if !fired[a] {
			t.Errorf("%s never fired: %+v", a, res.Report.Faults)
		}
	}
	var up int64
	for _, r := range res.Report.Rounds {
		up += r.BytesUp
		if r.Latency <= 0 {
			t.Errorf("round %d: latency %v", r.Round, r.Latency)
		}
	}
	if up == 0 || up > res.Report.BytesSentByAgents {
		t.Errorf("bytes per round sum to %d of %d sent", up, res.Report.BytesSentByAgents)
	}
}

// testWriter sends a run's output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// Scenario files are user input: any bytes give a scenario or an error
// wrapping ErrScenario, never a panic.
func FuzzParseScenario(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "scenarios", "*.yaml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("faults:\n- {round: 1, action: link, loss: 2}\n"))
	f.Add([]byte("{\"job\": {\"strategy\": {\"name\": \"krum\", \"params\": {\"f\": 1e308}}}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sc, err := ParseScenario(b)
		if err != nil {
			if !errors.Is(err, ErrScenario) {
				t.Fatalf("error %v does not wrap ErrScenario", err)
			}
			return
		}
		if _, err := sc.Config(DefaultConfig()); err != nil {
			t.Fatalf("a parsed scenario does not configure: %v", err)
		}
	})
}
