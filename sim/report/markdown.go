package report

import (
	"fmt"
	"strconv"
	"strings"
)

// Rounds tables longer than maxRoundRows show only the first and last
// roundsShown rows.
const (
	maxRoundRows = 25
	roundsShown  = 10
)

// Markdown renders r as the Markdown that Write puts in report.md. Charts
// are linked by their file names, relative to report.md, and only when
// they have data.
func Markdown(r *Report) string {
	if r == nil {
		return ""
	}
	var b strings.Builder
	title := strings.TrimSpace(r.Title)
	if title == "" {
		title = "Testbed report"
	}
	fmt.Fprintf(&b, "# %s\n\n", oneLine(title))
	if d := strings.TrimSpace(r.Description); d != "" {
		b.WriteString(d + "\n\n")
	}
	writeHeader(&b, r)
	writeSummary(&b, r)
	writeSites(&b, r)
	writeRounds(&b, r)
	writeFaults(&b, r)
	writeExpectations(&b, r)
	return strings.TrimRight(b.String(), "\n") + "\n"
}

func writeHeader(b *strings.Builder, r *Report) {
	if r.Scenario != "" {
		fmt.Fprintf(b, "- Scenario: `%s`\n", oneLine(r.Scenario))
	}
	if ds, ok := common(r.Runs, func(run *Run) string { return run.Dataset }); ok && ds != "" {
		fmt.Fprintf(b, "- Dataset: %s\n", oneLine(ds))
	}
	if n, ok := common(r.Runs, func(run *Run) int { return run.Coordinators }); ok && n != 0 {
		fmt.Fprintf(b, "- Coordinators: %d\n", n)
	}
	if r.Machine != "" {
		fmt.Fprintf(b, "- Machine: %s\n", oneLine(r.Machine))
	}
	word, detail := verdict(r)
	fmt.Fprintf(b, "- Verdict: **%s** (%s)\n\n", word, detail)
	if c := strings.TrimSpace(r.Command); c != "" {
		fence := "```"
		for strings.Contains(c, fence) {
			fence += "`"
		}
		fmt.Fprintf(b, "Command:\n\n%ssh\n%s\n%s\n\n", fence, c, fence)
	}
}

func writeSummary(b *strings.Builder, r *Report) {
	b.WriteString("## Summary\n\n")
	if len(r.Runs) == 0 {
		b.WriteString("No runs.\n\n")
		return
	}
	_, sameDataset := common(r.Runs, func(run *Run) string { return run.Dataset })
	_, sameCoord := common(r.Runs, func(run *Run) int { return run.Coordinators })
	var failed, heap bool
	for i := range r.Runs {
		failed = failed || r.Runs[i].Error != ""
		heap = heap || r.Runs[i].PeakHeapBytes != 0
	}

	t := newTable()
	t.col("run", false)
	t.col("strategy", false)
	t.col("seed", true)
	if !sameDataset {
		t.col("dataset", false)
	}
	if !sameCoord {
		t.col("coordinators", true)
	}
	if failed {
		t.col("status", false)
	}
	t.col("rounds", true)
	t.col("final AUROC", true)
	t.col("accuracy", true)
	t.col("centralized", true)
	t.col("local-only mean", true)
	t.col("gap to centralized", true)
	t.col("wall time", true)
	t.col("bytes sent", true)
	if heap {
		t.col("peak heap", true)
	}
	for i := range r.Runs {
		run := &r.Runs[i]
		row := []string{run.Label, run.Strategy, strconv.FormatUint(run.Seed, 10)}
		if !sameDataset {
			row = append(row, run.Dataset)
		}
		if !sameCoord {
			row = append(row, strconv.Itoa(run.Coordinators))
		}
		if failed {
			row = append(row, ifElse(run.Error == "", "ok", "**failed**"))
		}
		row = append(row,
			strconv.Itoa(len(run.Rounds)),
			fmtOptAUROC(run.Final.AUROC),
			fmtOptAUROC(run.Final.Accuracy),
			fmtOptAUROC(run.Centralized.AUROC),
			fmtOptAUROC(localMean(run)),
			fmtGap(run.Final.AUROC, run.Centralized.AUROC),
			fmtDuration(run.WallSeconds),
			fmtBytes(run.BytesSentByAgents),
		)
		if heap {
			row = append(row, fmtBytes(int64(run.PeakHeapBytes)))
		}
		t.row(row...)
	}
	t.write(b)
	for i := range r.Runs {
		if e := r.Runs[i].Error; e != "" {
			fmt.Fprintf(b, "Run %s failed: %s\n\n", runName(&r.Runs[i], i), oneLine(e))
		}
	}
	writeCharts(b, r, sectionSummary)
}

func writeSites(b *strings.Builder, r *Report) {
	var withSites []int
	for i := range r.Runs {
		if len(r.Runs[i].Sites) > 0 {
			withSites = append(withSites, i)
		}
	}
	if len(withSites) == 0 {
		return
	}
	b.WriteString("## Sites\n\n")
	b.WriteString("Local only: the site's model trained alone, scored on the pooled test set. " +
		"Federated: the final global model scored on the site's own held-out records.\n\n")
	if sameSites(r, withSites) {
		writeSiteTable(b, r, withSites)
	} else {
		for _, i := range withSites {
			fmt.Fprintf(b, "### %s\n\n", oneLine(runName(&r.Runs[i], i)))
			writeSiteTable(b, r, []int{i})
		}
	}
	writeCharts(b, r, sectionSites)
}

// writeSiteTable writes one table for runs that share their sites (names,
// patients, local-only AUROC), with a federated column for each of them
// that measured it.
func writeSiteTable(b *strings.Builder, r *Report, runs []int) {
	first := &r.Runs[runs[0]]
	var fed []int
	for _, i := range runs {
		for _, s := range r.Runs[i].Sites {
			if s.FederatedAUROC != 0 {
				fed = append(fed, i)
				break
			}
		}
	}
	byz := false
	for _, i := range runs {
		for _, s := range r.Runs[i].Sites {
			byz = byz || s.Byzantine
		}
	}
	t := newTable()
	t.col("site", false)
	t.col("patients", true)
	t.col("local-only AUROC", true)
	for _, i := range fed {
		if len(fed) == 1 {
			t.col("federated AUROC", true)
		} else {
			t.col("federated ("+runName(&r.Runs[i], i)+")", true)
		}
	}
	if byz {
		t.col("Byzantine", false)
	}
	for j, s := range first.Sites {
		row := []string{s.Name, strconv.Itoa(s.Patients), fmtOptAUROC(s.LocalOnlyAUROC)}
		anyByz := false
		for _, i := range runs {
			anyByz = anyByz || r.Runs[i].Sites[j].Byzantine
		}
		for _, i := range fed {
			row = append(row, fmtOptAUROC(r.Runs[i].Sites[j].FederatedAUROC))
		}
		if byz {
			row = append(row, ifElse(anyByz, "yes", ""))
		}
		t.row(row...)
	}
	t.write(b)
}

// sameSites reports whether the runs have the same sites with the same
// patients and local-only AUROC, so one table can show them all.
func sameSites(r *Report, runs []int) bool {
	first := r.Runs[runs[0]].Sites
	for _, i := range runs[1:] {
		s := r.Runs[i].Sites
		if len(s) != len(first) {
			return false
		}
		for j := range s {
			a, b := s[j], first[j]
			if a.Name != b.Name || a.Patients != b.Patients || !sameFloat(a.LocalOnlyAUROC, b.LocalOnlyAUROC) {
				return false
			}
		}
	}
	return true
}

func writeRounds(b *strings.Builder, r *Report) {
	rounds := false
	for i := range r.Runs {
		rounds = rounds || len(r.Runs[i].Rounds) > 0
	}
	if !rounds {
		return
	}
	b.WriteString("## Rounds\n\n")
	for i := range r.Runs {
		run := &r.Runs[i]
		if len(r.Runs) > 1 {
			fmt.Fprintf(b, "### %s\n\n", oneLine(runName(run, i)))
		}
		if len(run.Rounds) == 0 {
			b.WriteString("No rounds committed.\n\n")
			continue
		}
		writeRoundTable(b, run)
	}
	writeCharts(b, r, sectionRounds)
}

func writeRoundTable(b *strings.Builder, run *Run) {
	down := false
	for _, rd := range run.Rounds {
		down = down || rd.BytesDown != 0
	}
	faults := map[uint64][]string{}
	for _, f := range run.Faults {
		if n := faultRound(run, f); n != 0 {
			faults[n] = append(faults[n], f.Action)
		}
	}
	t := newTable()
	t.col("round", true)
	t.col("sites", true)
	t.col("AUROC", true)
	t.col("accuracy", true)
	t.col("elapsed", true)
	t.col("latency", true)
	t.col("bytes up", true)
	if down {
		t.col("bytes down", true)
	}
	if len(faults) > 0 {
		t.col("faults", false)
	}
	rounds := run.Rounds
	skipped := 0
	if len(rounds) > maxRoundRows {
		skipped = len(rounds) - 2*roundsShown
	}
	for j, rd := range rounds {
		if skipped > 0 && j >= roundsShown && j < len(rounds)-roundsShown {
			if j == roundsShown {
				t.row(append([]string{"…"}, make([]string, len(t.head)-1)...)...)
			}
			continue
		}
		row := []string{
			strconv.FormatUint(rd.Round, 10),
			strconv.Itoa(rd.Sites),
			fmtAUROC(rd.AUROC),
			fmtAUROC(rd.Accuracy),
			fmtElapsed(rd.Elapsed),
			fmtLatency(rd.Latency),
			fmtBytes(rd.BytesUp),
		}
		if down {
			row = append(row, fmtBytes(rd.BytesDown))
		}
		if len(faults) > 0 {
			row = append(row, strings.Join(faults[rd.Round], ", "))
		}
		t.row(row...)
	}
	t.write(b)
	if skipped > 0 {
		fmt.Fprintf(b, "%d rounds not shown; %s has them all.\n\n", skipped, JSONFile)
	}
}

func writeFaults(b *strings.Builder, r *Report) {
	n := 0
	for i := range r.Runs {
		n += len(r.Runs[i].Faults)
	}
	if n == 0 {
		return
	}
	b.WriteString("## Faults\n\n")
	t := newTable()
	if len(r.Runs) > 1 {
		t.col("run", false)
	}
	t.col("at", true)
	t.col("round", true)
	t.col("action", false)
	t.col("detail", false)
	for i := range r.Runs {
		run := &r.Runs[i]
		for _, f := range run.Faults {
			var row []string
			if len(r.Runs) > 1 {
				row = append(row, runName(run, i))
			}
			round := ""
			if n := faultRound(run, f); n != 0 {
				round = strconv.FormatUint(n, 10)
			}
			row = append(row, fmtElapsed(f.At), round, f.Action, f.Detail)
			t.row(row...)
		}
	}
	t.write(b)
}

func writeExpectations(b *strings.Builder, r *Report) {
	b.WriteString("## Expectations\n\n")
	if len(r.Expectations) == 0 {
		b.WriteString("No expectations were set.\n\n")
	} else {
		t := newTable()
		t.col("expectation", false)
		t.col("want", false)
		t.col("got", false)
		t.col("result", false)
		for _, e := range r.Expectations {
			res := "PASS"
			if !e.Pass {
				res = "**FAIL**"
			}
			t.row(e.Name, e.Want, e.Got, res)
		}
		t.write(b)
	}
	word, detail := verdict(r)
	fmt.Fprintf(b, "**Verdict: %s** (%s)\n", word, detail)
}

// verdict is PASS or FAIL and why, in a few words.
func verdict(r *Report) (word, detail string) {
	word = "FAIL"
	if r.Passed() {
		word = "PASS"
	}
	var parts []string
	passed := 0
	for _, e := range r.Expectations {
		if e.Pass {
			passed++
		}
	}
	switch n := len(r.Expectations); {
	case n == 0:
		parts = append(parts, "no expectations set")
	case passed == n:
		parts = append(parts, fmt.Sprintf("all %d %s met", n, plural(n, "expectation", "expectations")))
	default:
		parts = append(parts, fmt.Sprintf("%d of %d expectations met", passed, n))
	}
	failed := 0
	for i := range r.Runs {
		if r.Runs[i].Error != "" {
			failed++
		}
	}
	switch {
	case len(r.Runs) == 0:
		parts = append(parts, "no runs")
	case failed > 0:
		parts = append(parts, fmt.Sprintf("%d of %d %s failed", failed, len(r.Runs), plural(len(r.Runs), "run", "runs")))
	}
	return word, strings.Join(parts, "; ")
}

func writeCharts(b *strings.Builder, r *Report, s section) {
	for _, c := range chartList() {
		if c.section == s && c.has(r) {
			fmt.Fprintf(b, "![%s](%s)\n\n", c.alt, c.file)
		}
	}
}

// runName is the run's label, or "run N" (1-based) when it has none.
func runName(run *Run, i int) string {
	if strings.TrimSpace(run.Label) != "" {
		return run.Label
	}
	return fmt.Sprintf("run %d", i+1)
}

// common returns the value f gives for every run, and whether they all
// agree (false for zero runs).
func common[T comparable](runs []Run, f func(*Run) T) (T, bool) {
	var zero T
	if len(runs) == 0 {
		return zero, false
	}
	v := f(&runs[0])
	for i := range runs[1:] {
		if f(&runs[i+1]) != v {
			return zero, false
		}
	}
	return v, true
}

func ifElse(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// oneLine folds s onto one line for a heading or a list item.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// table is a Markdown table under construction.
type table struct {
	head  []string
	right []bool
	rows  [][]string
}

func newTable() *table { return &table{} }

// col adds a column; right aligns it right (for numbers).
func (t *table) col(name string, right bool) {
	t.head = append(t.head, name)
	t.right = append(t.right, right)
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	line := func(cells []string) {
		b.WriteString("|")
		for i := range t.head {
			c := ""
			if i < len(cells) {
				c = cell(cells[i])
			}
			b.WriteString(" " + c + " |")
		}
		b.WriteString("\n")
	}
	line(t.head)
	b.WriteString("|")
	for _, r := range t.right {
		if r {
			b.WriteString("---:|")
		} else {
			b.WriteString("---|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		line(r)
	}
	b.WriteString("\n")
}
