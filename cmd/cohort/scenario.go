package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cohort-fl/cohort/sim"
	"github.com/cohort-fl/cohort/sim/report"
)

// runScenarios runs `cohort sim --scenario`: one scenario file, or every
// *.yaml file of a directory in name order. It fails when a scenario cannot
// be read or any run misses its expectations.
func runScenarios(ctx context.Context, base sim.Config, path, reportDir string, args []string, stdout io.Writer) error {
	files, err := scenarioFiles(path)
	if err != nil {
		return err
	}
	var scs []*sim.Scenario
	for _, f := range files {
		sc, err := sim.LoadScenario(f)
		if err != nil {
			return err
		}
		scs = append(scs, sc)
	}
	start := time.Now()
	var results []*sim.ScenarioResult
	for i, sc := range scs {
		fmt.Fprintf(stdout, "=== scenario %d/%d: %s\n", i+1, len(scs), sc.Name)
		if sc.Description != "" {
			fmt.Fprintf(stdout, "    %s\n", sc.Description)
		}
		cfg := base
		if base.Dir != "" && len(scs) > 1 {
			cfg.Dir = filepath.Join(base.Dir, sc.Name)
		}
		runs, err := sim.RunScenario(ctx, sc, cfg)
		for _, res := range runs {
			printExpectations(stdout, res)
		}
		results = append(results, runs...)
		if reportDir != "" && len(runs) > 0 {
			dir := reportDir
			if len(scs) > 1 {
				dir = filepath.Join(reportDir, sc.Name)
			}
			cmd := "cohort sim " + strings.Join(args, " ")
			if err := report.Write(dir, sim.ScenarioReport(cmd, runs...)); err != nil {
				return fmt.Errorf("scenario %s: write report: %w", sc.Name, err)
			}
			fmt.Fprintf(stdout, "    report: %s\n", filepath.Join(dir, report.MarkdownFile))
		}
		if err != nil {
			return err
		}
	}
	failed := 0
	if len(results) > 1 {
		fmt.Fprintf(stdout, "\n=== %d scenarios in %.0fs\n", len(results), time.Since(start).Seconds())
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "scenario\tresult\tauroc\tcentralized\trounds\twall")
		for _, r := range results {
			name := r.Scenario.Name
			if len(r.Scenario.Compare) > 0 {
				name += " (" + r.Label + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%.4f\t%.4f\t%d\t%.0fs\n", name, verdict(r), r.Report.Federated.AUROC,
				r.Report.Centralized.AUROC, r.Report.RoundsCompleted, r.Report.WallSeconds)
		}
		tw.Flush()
	}
	for _, r := range results {
		if !r.Passed() {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("sim: %d of %d scenarios failed their expectations", failed, len(results))
	}
	return nil
}

func verdict(r *sim.ScenarioResult) string {
	if r.Passed() {
		return "PASS"
	}
	return "FAIL"
}

// scenarioFiles is path itself, or the *.yaml files in it.
func scenarioFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sim: --scenario: %w", err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	files, err := filepath.Glob(filepath.Join(path, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("sim: --scenario: no *.yaml file in %s", path)
	}
	return files, nil
}

// printExpectations prints a run's checks, one per line.
func printExpectations(w io.Writer, r *sim.ScenarioResult) {
	if r.Err != nil {
		fmt.Fprintf(w, "    run failed: %v\n", r.Err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range r.Expectations {
		mark := "ok  "
		if !e.Pass {
			mark = "FAIL"
		}
		fmt.Fprintf(tw, "    %s\t%s\twant %s\tgot %s\n", mark, e.Name, e.Want, e.Got)
	}
	tw.Flush()
	fmt.Fprintf(w, "--- %s: %s (%s)\n", verdict(r), r.Scenario.Name, r.Label)
}
