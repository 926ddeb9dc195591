package sim

import (
	"fmt"
	"runtime"

	"github.com/cohort-fl/cohort/sim/report"
)

// Machine describes this machine for reports.
func Machine() string {
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}

// ReportRun is the run as the report renderer reads it.
func (r *Report) ReportRun(label string, runErr error) report.Run {
	run := report.Run{Label: label, Strategy: r.Strategy, Seed: r.Seed, Dataset: r.Dataset, Coordinators: r.Coordinators,
		Final:          report.Metrics{AUROC: r.Federated.AUROC, Accuracy: r.Federated.Accuracy},
		Centralized:    report.Metrics{AUROC: r.Centralized.AUROC, Accuracy: r.Centralized.Accuracy},
		LocalMeanAUROC: r.LocalOnly.MeanAUROC, WallSeconds: r.WallSeconds, BytesSentByAgents: r.BytesSentByAgents,
		PeakHeapBytes: r.PeakHeapBytes}
	if runErr != nil {
		run.Error = runErr.Error()
	}
	for _, s := range r.SiteInfo {
		run.Sites = append(run.Sites, report.Site{Name: s.Name, Patients: s.Patients, LocalOnlyAUROC: s.LocalOnlyAUROC,
			FederatedAUROC: s.FederatedAUROC, Byzantine: s.Byzantine})
	}
	for _, x := range r.Rounds {
		run.Rounds = append(run.Rounds, report.Round{Round: x.Round, Sites: x.Sites, AUROC: x.AUROC, Accuracy: x.Accuracy,
			Elapsed: x.Elapsed, Latency: x.Latency, BytesUp: x.BytesUp, BytesDown: x.BytesDown})
	}
	for _, f := range r.Faults {
		d := f.Detail
		if f.Err != "" {
			d += " (failed: " + f.Err + ")"
		}
		run.Faults = append(run.Faults, report.Fault{At: f.At, Round: f.Round, Action: f.Action, Detail: d})
	}
	return run
}

// ScenarioReport is the report of a scenario's runs (one per compared
// rule).
func ScenarioReport(cmd string, results ...*ScenarioResult) *report.Report {
	rep := &report.Report{Command: cmd, Machine: Machine()}
	for i, res := range results {
		if i == 0 {
			rep.Title = "Scenario: " + res.Scenario.Name
			rep.Scenario, rep.Description = res.Scenario.Name, res.Scenario.Description
		}
		label := res.Label
		if label == "" {
			label = fmt.Sprintf("run %d", i+1)
		}
		rep.Runs = append(rep.Runs, res.Report.ReportRun(label, res.Err))
		for _, e := range res.Expectations {
			name := e.Name
			if len(results) > 1 {
				name = label + ": " + name
			}
			rep.Expectations = append(rep.Expectations, report.Expectation{Name: name, Want: e.Want, Got: e.Got, Pass: e.Pass})
		}
	}
	return rep
}
