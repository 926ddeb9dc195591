package report

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strings"

	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// File names of the charts Write draws.
const (
	ChartAUROCRounds = "auroc-rounds.png"
	ChartAUROCTime   = "auroc-time.png"
	ChartSites       = "sites.png"
	ChartBytes       = "bytes.png"
	ChartLatency     = "latency.png"
)

// Size of every chart: 8 x 4.5 in at 96 dpi, 768 x 432 pixels.
const (
	chartWidth  = 8 * vg.Inch
	chartHeight = 4.5 * vg.Inch
	chartDPI    = 96

	// legendChars is the longest legend entry, in runes.
	legendChars = 30
	// maxBars is the most bars the bytes chart draws before it switches
	// to lines.
	maxBars = 120
	// maxRunsPerSiteChart is the most runs the sites chart shows side
	// by side; with more it shows the first run that has sites.
	maxRunsPerSiteChart = 3
	// maxLegendRuns is the most runs named in a legend; the others are
	// drawn and counted in one "+N more runs" entry.
	maxLegendRuns = 12
	// maxFaultColors is the most runs whose faults get their run's
	// colour; with more, every fault is dark red.
	maxFaultColors = 3
)

// errRender wraps a panic raised while drawing a chart.
var errRender = errors.New("render failed")

// section is where in the Markdown a chart is linked.
type section int

const (
	sectionSummary section = iota
	sectionSites
	sectionRounds
)

// chart is one PNG: its file, its alt text, where the Markdown links it,
// whether the report has data for it, and how to draw it.
type chart struct {
	file    string
	alt     string
	section section
	has     func(*Report) bool
	build   func(*Report) (*figure, error)
}

func chartList() []chart {
	return []chart{
		{ChartAUROCRounds, "Test AUROC per round", sectionSummary, hasAUROCRounds, aurocRoundsChart},
		{ChartAUROCTime, "Test AUROC over time, faults marked", sectionSummary, hasAUROCTime, aurocTimeChart},
		{ChartSites, "AUROC per site, local only and federated", sectionSites, hasSites, sitesChart},
		{ChartBytes, "Bytes sent by agents per round", sectionRounds, hasBytes, bytesChart},
		{ChartLatency, "Round latency, open to commit", sectionRounds, hasLatency, latencyChart},
	}
}

// renderChart draws c for r as PNG bytes. A panic inside the plotting
// library comes back as an error.
func renderChart(c chart, r *Report) (png []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			png, err = nil, fmt.Errorf("%w: %v", errRender, v)
		}
	}()
	f, err := c.build(r)
	if err != nil {
		return nil, err
	}
	return f.png()
}

// Availability: a chart is drawn only when it has at least one point.

func hasAUROCRounds(r *Report) bool {
	return anyRound(r, func(rd Round) bool { return finite(rd.AUROC) })
}

func hasAUROCTime(r *Report) bool {
	return anyRound(r, func(rd Round) bool { return finite(rd.AUROC) && finite(rd.Elapsed) && rd.Elapsed > 0 })
}

func hasBytes(r *Report) bool {
	return anyRound(r, func(rd Round) bool { return rd.BytesUp > 0 })
}

func hasLatency(r *Report) bool {
	return anyRound(r, func(rd Round) bool { return finite(rd.Latency) && rd.Latency > 0 })
}

func hasSites(r *Report) bool {
	for _, i := range siteRuns(r) {
		for _, s := range r.Runs[i].Sites {
			if measured(s.LocalOnlyAUROC) || measured(s.FederatedAUROC) {
				return true
			}
		}
	}
	return false
}

func anyRound(r *Report, ok func(Round) bool) bool {
	for i := range r.Runs {
		for _, rd := range r.Runs[i].Rounds {
			if ok(rd) {
				return true
			}
		}
	}
	return false
}

// measured reports whether a score is finite and not zero ("not
// measured").
func measured(f float64) bool { return f != 0 && finite(f) }

// refLine is a horizontal baseline on the AUROC chart.
type refLine struct {
	label  string
	y      float64
	color  color.Color
	dashes []vg.Length
}

// baselines are the centralized and local-only (mean) AUROC lines. Runs
// that agree share one grey line; a few runs that differ get one line each
// in their colour; many runs that differ get the mean of runs.
func baselines(r *Report) []refLine {
	kinds := []struct {
		name   string
		value  func(*Run) float64
		color  color.RGBA
		dashes []vg.Length
	}{
		{"centralized", func(run *Run) float64 { return run.Centralized.AUROC }, darkGray, dashed},
		{"local only (mean)", localMean, midGray, dotted},
	}
	var out []refLine
	for _, k := range kinds {
		var vals []float64
		var runs []int
		for i := range r.Runs {
			if v := k.value(&r.Runs[i]); measured(v) {
				vals = append(vals, v)
				runs = append(runs, i)
			}
		}
		switch {
		case len(vals) == 0:
		case allEqual(vals):
			out = append(out, refLine{k.name, vals[0], k.color, k.dashes})
		case len(vals) <= 3:
			for j, i := range runs {
				out = append(out, refLine{runName(&r.Runs[i], i) + ": " + k.name, vals[j], runColor(i), k.dashes})
			}
		default:
			out = append(out, refLine{k.name + ", mean of runs", mean(vals), k.color, k.dashes})
		}
	}
	return out
}

func allEqual(v []float64) bool {
	for _, x := range v[1:] {
		if x != v[0] {
			return false
		}
	}
	return true
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func aurocRoundsChart(r *Report) (*figure, error) {
	f := newFigure("Test AUROC per round", "round", "test AUROC (pooled test set)")
	f.p.X.Tick.Marker = intTicks{}
	rg := newRange()
	for i := range r.Runs {
		run := &r.Runs[i]
		pts := roundPoints(run, func(rd Round) (float64, float64) { return float64(rd.Round), rd.AUROC })
		if len(pts) == 0 {
			continue
		}
		if err := f.addSeries(runName(run, i), pts, i, vg.Points(3.2)); err != nil {
			return nil, err
		}
		for _, p := range pts {
			rg.add(p.X, p.Y)
		}
	}
	if rg.emptyX() {
		return nil, errors.New("no rounds")
	}
	xlo, xhi := rg.xlo, rg.xhi
	if xlo == xhi {
		xlo, xhi = xlo-1, xhi+1
	}
	for _, b := range baselines(r) {
		l, err := hline(b.y, xlo, xhi, b.color, b.dashes)
		if err != nil {
			return nil, err
		}
		f.p.Add(l)
		f.addLegend(b.label, l)
		rg.addY(b.y)
	}
	f.p.X.Min, f.p.X.Max = xlo, xhi
	f.p.Y.Min, f.p.Y.Max = scoreAxis(rg.ylo, rg.yhi)
	return f, nil
}

// faultMark is one fault drawn on a chart's X axis.
type faultMark struct {
	x      float64
	action string
	run    int
}

// addFaults draws each fault as a dashed vertical line from ylo to yhi with
// its action written near the top. Faults are in their run's colour when
// a few runs have them, else dark red.
func (f *figure) addFaults(r *Report, marks []faultMark, ylo, yhi float64) error {
	if len(marks) == 0 {
		return nil
	}
	runsWith := map[int]bool{}
	for _, m := range marks {
		runsWith[m.run] = true
	}
	perRun := len(runsWith) > 1 && len(runsWith) <= maxFaultColors
	colorOf := func(run int) color.Color {
		if !perRun {
			return faultRed
		}
		return runColor(run)
	}
	if !perRun {
		// One colour for all: the same fault in several runs is one mark.
		type key struct {
			x      float64
			action string
		}
		seen := map[key]bool{}
		var uniq []faultMark
		for _, m := range marks {
			if k := (key{m.x, m.action}); !seen[k] {
				seen[k] = true
				uniq = append(uniq, m)
			}
		}
		marks = uniq
	}
	legendDone := map[int]bool{}
	span := yhi - ylo
	for k, m := range marks {
		l, err := plotter.NewLine(plotter.XYs{{X: m.x, Y: ylo}, {X: m.x, Y: yhi}})
		if err != nil {
			return err
		}
		l.Color = colorOf(m.run)
		l.Width = vg.Points(1.3)
		l.Dashes = faultDash
		f.p.Add(l)

		y := yhi - span*(0.07+0.065*float64(k%3))
		lb, err := plotter.NewLabels(plotter.XYLabels{
			XYs:    plotter.XYs{{X: m.x, Y: y}},
			Labels: []string{truncate(m.action, 18)},
		})
		if err != nil {
			return err
		}
		lb.TextStyle[0] = text.Style{
			Color:   colorOf(m.run),
			Font:    font.From(sansFont, 9),
			Handler: f.p.TextHandler,
		}
		lb.Offset = vg.Point{X: vg.Points(3)}
		f.p.Add(lb)

		key := m.run
		if !perRun {
			key = -1
		}
		if !legendDone[key] {
			legendDone[key] = true
			label := "fault"
			if key >= 0 {
				label = runName(&r.Runs[m.run], m.run) + ": fault"
			}
			f.addLegend(label, l)
		}
	}
	return nil
}

func aurocTimeChart(r *Report) (*figure, error) {
	f := newFigure("Test AUROC over time, with faults", "seconds since the run started", "test AUROC (pooled test set)")
	rg := newRange()
	rg.addX(0)
	var marks []faultMark
	for i := range r.Runs {
		run := &r.Runs[i]
		pts := roundPoints(run, func(rd Round) (float64, float64) {
			if rd.Elapsed <= 0 {
				return math.NaN(), 0
			}
			return rd.Elapsed, rd.AUROC
		})
		if len(pts) > 0 {
			if err := f.addSeries(runName(run, i), pts, i, vg.Points(3)); err != nil {
				return nil, err
			}
			for _, p := range pts {
				rg.add(p.X, p.Y)
			}
		}
		end := 0.0
		if finite(run.WallSeconds) {
			end = run.WallSeconds
		}
		for _, p := range pts {
			end = math.Max(end, p.X)
		}
		for _, ft := range run.Faults {
			// A fault after the run's end (or with no time) stays in the
			// faults table only.
			if finite(ft.At) && ft.At >= 0 && ft.At <= end {
				marks = append(marks, faultMark{ft.At, ft.Action, i})
				rg.addX(ft.At)
			}
		}
	}
	if rg.emptyY() {
		return nil, errors.New("no timed rounds")
	}
	ylo, yhi := scoreAxis(rg.ylo, rg.yhi)
	if len(marks) > 0 {
		yhi += 0.18 * (yhi - ylo) // room for the fault labels
	}
	if err := f.addFaults(r, marks, ylo, yhi); err != nil {
		return nil, err
	}
	f.p.X.Min, f.p.X.Max = rg.xlo, rg.xhi
	f.p.Y.Min, f.p.Y.Max = ylo, yhi
	return f, nil
}

// siteRuns are the runs the sites chart shows: every run with sites when
// there are few, else the first.
func siteRuns(r *Report) []int {
	var runs []int
	for i := range r.Runs {
		if len(r.Runs[i].Sites) > 0 {
			runs = append(runs, i)
		}
	}
	if len(runs) > maxRunsPerSiteChart {
		runs = runs[:1]
	}
	return runs
}

// barSeries is one colour of bars in a grouped bar chart.
type barSeries struct {
	label string
	color color.Color
	vals  []float64 // per category; NaN or 0 = no bar
}

func sitesChart(r *Report) (*figure, error) {
	runs := siteRuns(r)
	// Categories: every site name, in order of first appearance.
	var names []string
	index := map[string]int{}
	patients := map[string]int{}
	byz := map[string]bool{}
	for _, i := range runs {
		for _, s := range r.Runs[i].Sites {
			if _, ok := index[s.Name]; !ok {
				index[s.Name] = len(names)
				names = append(names, s.Name)
				patients[s.Name] = s.Patients
			}
			byz[s.Name] = byz[s.Name] || s.Byzantine
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no sites")
	}
	vals := func(i int, v func(Site) float64) []float64 {
		out := make([]float64, len(names))
		for _, s := range r.Runs[i].Sites {
			out[index[s.Name]] = v(s)
		}
		return out
	}
	local := func(s Site) float64 { return s.LocalOnlyAUROC }
	fed := func(s Site) float64 { return s.FederatedAUROC }

	var series []barSeries
	sharedLocal := true
	for _, i := range runs[1:] {
		a, b := vals(runs[0], local), vals(i, local)
		for j := range a {
			sharedLocal = sharedLocal && sameFloat(a[j], b[j])
		}
	}
	var fedRuns []int
	for _, i := range runs {
		for _, v := range vals(i, fed) {
			if measured(v) {
				fedRuns = append(fedRuns, i)
				break
			}
		}
	}
	single := len(runs) == 1 || (sharedLocal && len(fedRuns) <= 1)
	name := func(i int, what string) string {
		if single {
			return what
		}
		return runName(&r.Runs[i], i) + ": " + what
	}
	if sharedLocal {
		series = append(series, barSeries{"local only", midGray, vals(runs[0], local)})
	}
	for _, i := range runs {
		if !sharedLocal {
			series = append(series, barSeries{name(i, "local only"), lighter(runColor(i)), vals(i, local)})
		}
		if slices.Contains(fedRuns, i) {
			series = append(series, barSeries{name(i, "federated"), runColor(i), vals(i, fed)})
		}
	}

	title := "AUROC per site"
	if len(runs) == 1 && len(r.Runs) > 1 {
		title += " (" + truncate(runName(&r.Runs[runs[0]], runs[0]), 30) + ")"
	}
	f := newFigure(title, "site", "AUROC")
	f.grid.Vertical.Color = nil // bars need only horizontal lines

	ticks := make([]string, len(names))
	for j, n := range names {
		var second []string
		if p := patients[n]; p > 0 {
			second = append(second, fmt.Sprintf("%d %s", p, plural(p, "patient", "patients")))
		}
		if byz[n] {
			second = append(second, "BYZANTINE")
		}
		ticks[j] = truncate(n, 20)
		if len(second) > 0 {
			ticks[j] += "\n" + strings.Join(second, ", ")
		}
	}
	f.p.NominalX(ticks...)
	f.p.Y.Padding = 0
	f.p.X.Padding = 0

	series = slices.DeleteFunc(series, func(s barSeries) bool {
		return !slices.ContainsFunc(s.vals, measured)
	})
	if len(series) == 0 {
		return nil, errors.New("no site scores")
	}
	rg := newRange()
	var all []*bars
	width := 0.8 / float64(len(series))
	labelBars := len(series) <= 3 && len(names) <= 8
	for k, s := range series {
		b := &bars{width: width * 0.92, color: s.color}
		all = append(all, b)
		for j, v := range s.vals {
			if !measured(v) {
				continue
			}
			x := float64(j) + (float64(k)-float64(len(series)-1)/2)*width
			b.xs, b.ys = append(b.xs, x), append(b.ys, v)
			rg.addY(v)
		}
		f.p.Add(b)
		f.addLegend(s.label, b)
		if labelBars && len(b.xs) > 0 {
			lb, err := valueLabels(b.xs, b.ys, f.p.TextHandler)
			if err != nil {
				return nil, err
			}
			f.p.Add(lb)
		}
	}
	if rg.emptyY() {
		return nil, errors.New("no site scores")
	}
	lo := 0.0
	if rg.ylo >= 0.5 {
		lo = 0.5 // AUROC of chance; bars show the lift above it
	}
	for _, b := range all {
		b.base = lo
	}
	f.p.X.Min, f.p.X.Max = -0.5, float64(len(names))-0.5
	f.p.Y.Min, f.p.Y.Max = lo, math.Max(rg.yhi+0.08*(rg.yhi-lo), lo+0.05)
	return f, nil
}

// valueLabels writes each value (3 decimals) centred above its bar.
func valueLabels(xs, ys []float64, h text.Handler) (*plotter.Labels, error) {
	pts := make(plotter.XYs, len(xs))
	labels := make([]string, len(xs))
	for i := range xs {
		pts[i] = plotter.XY{X: xs[i], Y: ys[i]}
		labels[i] = fmt.Sprintf("%.3f", ys[i])
	}
	lb, err := plotter.NewLabels(plotter.XYLabels{XYs: pts, Labels: labels})
	if err != nil {
		return nil, err
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i] = text.Style{
			Color:   darkGray,
			Font:    font.From(sansFont, 8),
			XAlign:  draw.XCenter,
			Handler: h,
		}
	}
	lb.Offset = vg.Point{Y: vg.Points(2)}
	return lb, nil
}

func bytesChart(r *Report) (*figure, error) {
	var max float64
	nbars := 0
	for i := range r.Runs {
		for _, rd := range r.Runs[i].Rounds {
			max = math.Max(max, float64(rd.BytesUp))
			nbars++
		}
	}
	u := unitFor(max)
	f := newFigure("Bytes sent by agents per round", "round", "bytes sent by agents ("+u.name+")")
	f.p.X.Tick.Marker = intTicks{}

	var withRounds []int
	for i := range r.Runs {
		if len(r.Runs[i].Rounds) > 0 {
			withRounds = append(withRounds, i)
		}
	}
	if len(withRounds) == 0 {
		return nil, errors.New("no rounds")
	}
	rg := newRange()
	rg.addY(0)
	if nbars <= maxBars {
		width := 0.8 / float64(len(withRounds))
		for k, i := range withRounds {
			run := &r.Runs[i]
			b := &bars{width: width * 0.92, color: runColor(i)}
			for _, rd := range run.Rounds {
				x := float64(rd.Round) + (float64(k)-float64(len(withRounds)-1)/2)*width
				b.xs, b.ys = append(b.xs, x), append(b.ys, float64(rd.BytesUp)/u.size)
				rg.add(float64(rd.Round), b.ys[len(b.ys)-1])
			}
			f.p.Add(b)
			f.addRunLegend(runName(run, i), b)
		}
		rg.addX(rg.xlo - 0.5)
		rg.addX(rg.xhi + 0.5)
	} else {
		for _, i := range withRounds {
			run := &r.Runs[i]
			pts := roundPoints(run, func(rd Round) (float64, float64) {
				return float64(rd.Round), float64(rd.BytesUp) / u.size
			})
			if err := f.addSeries(runName(run, i), pts, i, vg.Points(1.8)); err != nil {
				return nil, err
			}
			for _, p := range pts {
				rg.add(p.X, p.Y)
			}
		}
	}
	if rg.emptyX() {
		return nil, errors.New("no rounds")
	}
	f.p.X.Min, f.p.X.Max = rg.xlo, rg.xhi
	f.p.Y.Min, f.p.Y.Max = 0, math.Max(rg.yhi*1.08, 1e-9)
	return f, nil
}

func latencyChart(r *Report) (*figure, error) {
	var max float64
	for i := range r.Runs {
		for _, rd := range r.Runs[i].Rounds {
			if finite(rd.Latency) {
				max = math.Max(max, rd.Latency)
			}
		}
	}
	scale, unit := 1.0, "s"
	if max < 1 {
		scale, unit = 1000, "ms"
	}
	f := newFigure("Round latency, open to commit", "round", "latency ("+unit+")")
	f.p.X.Tick.Marker = intTicks{}
	rg := newRange()
	rg.addY(0)
	var marks []faultMark
	for i := range r.Runs {
		run := &r.Runs[i]
		pts := roundPoints(run, func(rd Round) (float64, float64) {
			if rd.Latency < 0 {
				return math.NaN(), 0
			}
			return float64(rd.Round), rd.Latency * scale
		})
		if len(pts) == 0 {
			continue
		}
		if err := f.addSeries(runName(run, i), pts, i, vg.Points(3)); err != nil {
			return nil, err
		}
		for _, p := range pts {
			rg.add(p.X, p.Y)
		}
		for _, ft := range run.Faults {
			if n := faultRound(run, ft); n != 0 {
				marks = append(marks, faultMark{float64(n), ft.Action, i})
				rg.addX(float64(n))
			}
		}
	}
	if rg.emptyX() {
		return nil, errors.New("no rounds")
	}
	xlo, xhi := rg.xlo, rg.xhi
	if xlo == xhi {
		xlo, xhi = xlo-1, xhi+1
	}
	yhi := math.Max(rg.yhi*1.1, 1e-9)
	if len(marks) > 0 {
		yhi *= 1.2 // room for the fault labels
	}
	if err := f.addFaults(r, marks, 0, yhi); err != nil {
		return nil, err
	}
	f.p.X.Min, f.p.X.Max = xlo, xhi
	f.p.Y.Min, f.p.Y.Max = 0, yhi
	return f, nil
}
