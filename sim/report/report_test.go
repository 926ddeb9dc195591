package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var (
	update = flag.Bool("update", false, "rewrite testdata/*.golden.md from the current output")
	sample = flag.String("sample", "", "also write the sample report into this directory, to look at")
)

// sampleReport is a realistic testbed report: two strategies on the same
// four synthetic hospitals, ten rounds each, a leader killed during the
// first and a slow link during the second, and one expectation missed.
func sampleReport() *Report {
	sites := []Site{
		{Name: "community", Patients: 200, LocalOnlyAUROC: 0.7712},
		{Name: "academic", Patients: 900, LocalOnlyAUROC: 0.8321},
		{Name: "geriatric", Patients: 500, LocalOnlyAUROC: 0.8015},
		{Name: "regional", Patients: 400, LocalOnlyAUROC: 0.7904},
	}
	run := func(label, strategy string, aurocs []float64, latency func(int) float64, faults []Fault, fed []float64) Run {
		r := Run{
			Label: label, Strategy: strategy, Seed: 1, Dataset: "synthetic",
			Coordinators: 3, Centralized: Metrics{AUROC: 0.8460, Accuracy: 0.8865},
			LocalMeanAUROC: 0.7988, Faults: faults, PeakHeapBytes: 187 << 20,
		}
		r.Sites = append([]Site(nil), sites...)
		for i := range r.Sites {
			r.Sites[i].FederatedAUROC = fed[i]
		}
		var elapsed float64
		for i, a := range aurocs {
			lat := latency(i + 1)
			elapsed += lat + 0.05
			up := int64(4*38_000 + i*1_200)
			r.Rounds = append(r.Rounds, Round{
				Round: uint64(i + 1), Sites: 4, AUROC: a, Accuracy: math.Round((0.79+(a-0.8)*1.9)*1e4) / 1e4,
				Elapsed: math.Round(elapsed*1000) / 1000, Latency: lat,
				BytesUp: up, BytesDown: 4 * 36_500,
			})
			r.BytesSentByAgents += up
		}
		last := r.Rounds[len(r.Rounds)-1]
		r.Final = Metrics{AUROC: last.AUROC, Accuracy: last.Accuracy}
		r.WallSeconds = last.Elapsed + 0.4
		return r
	}
	fedavg := run("fedavg", "fedavg",
		[]float64{0.8297, 0.8352, 0.8389, 0.8391, 0.8420, 0.8433, 0.8441, 0.8450, 0.8455, 0.8461},
		func(n int) float64 {
			if n == 4 {
				return 2.85 // the leader died mid-round
			}
			return 0.21 + 0.01*float64(n%3)
		},
		[]Fault{{At: 0.9, Round: 4, Action: "kill-leader", Detail: "coordinator c1 (leader, term 2)"}},
		[]float64{0.8102, 0.8530, 0.8388, 0.8297})
	fedadam := run("fedadam", "fedadam",
		[]float64{0.8012, 0.8240, 0.8355, 0.8412, 0.8440, 0.8458, 0.8466, 0.8471, 0.8470, 0.8474},
		func(n int) float64 {
			if n >= 6 && n <= 7 {
				return 0.95 // the slow link
			}
			return 0.23
		},
		[]Fault{{At: 1.7, Round: 6, Action: "link", Detail: "academic: 200ms delay, 5% loss for 2s"}},
		[]float64{0.8121, 0.8544, 0.8401, 0.8310})
	return &Report{
		Title:       "Failover during training",
		Scenario:    "failover",
		Description: "Kill the Raft leader mid-round and slow one hospital's link; the federation must finish every round and stay near centralized training.",
		Command:     "cohort sim --scenario failover --strategies fedavg,fedadam --report-dir out/failover",
		Machine:     "linux/amd64, 2 CPUs, Go 1.26",
		Runs:        []Run{fedavg, fedadam},
		Expectations: []Expectation{
			{Name: "every round committed", Want: "10 of 10", Got: "10 of 10", Pass: true},
			{Name: "fedavg within 0.01 of centralized", Want: "gap >= -0.0100", Got: "+0.0001", Pass: true},
			{Name: "leader failover latency", Want: "< 2.0s", Got: "2.85s", Pass: false},
			{Name: "no update lost", Want: "0", Got: "0", Pass: true},
		},
	}
}

func TestMain(m *testing.M) {
	flag.Parse()
	if *sample != "" {
		if err := Write(*sample, sampleReport()); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

func allCharts() []string {
	return []string{ChartAUROCRounds, ChartAUROCTime, ChartSites, ChartBytes, ChartLatency}
}

// TestWriteSample writes the sample report once (drawing charts is slow
// under -race) and checks everything Write made.
func TestWriteSample(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "out")
	r := sampleReport()
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}
	for _, name := range allCharts() {
		t.Run(name, func(t *testing.T) {
			img := readPNG(t, filepath.Join(dir, name))
			if b := img.Bounds(); b.Dx() != 768 || b.Dy() != 432 {
				t.Errorf("size %dx%d, want 768x432", b.Dx(), b.Dy())
			}
			if n := distinctColors(img); n < 12 {
				t.Errorf("%d distinct colours: looks blank", n)
			}
			if f := inkFraction(img); f < 0.02 {
				t.Errorf("only %.1f%% of pixels are not white", 100*f)
			}
			// Both runs' colours are drawn.
			for i := range r.Runs {
				if n := pixelsNear(img, runColor(i), 40); n < 30 {
					t.Errorf("run %d colour: %d pixels", i, n)
				}
			}
		})
	}
	t.Run("markdown", func(t *testing.T) {
		md, err := os.ReadFile(filepath.Join(dir, MarkdownFile))
		if err != nil {
			t.Fatal(err)
		}
		if string(md) != Markdown(r) {
			t.Error("report.md differs from Markdown(r)")
		}
	})
	t.Run("json round trip", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dir, JSONFile))
		if err != nil {
			t.Fatal(err)
		}
		var got Report
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, r) {
			t.Errorf("round trip changed the report:\ngot  %+v\nwant %+v", got, *r)
		}
		for _, key := range []string{`"title"`, `"runs"`, `"local_mean_auroc"`, `"bytes_sent_by_agents"`, `"at_seconds"`, `"elapsed_seconds"`, `"latency_seconds"`, `"local_only_auroc"`, `"federated_auroc"`, `"expectations"`} {
			if !bytes.Contains(b, []byte(key)) {
				t.Errorf("report.json lacks %s", key)
			}
		}
	})
	// Last: a later report without data in the same directory leaves no
	// stale charts behind.
	t.Run("stale charts removed", func(t *testing.T) {
		if err := Write(dir, &Report{Title: "later, empty"}); err != nil {
			t.Fatal(err)
		}
		for _, name := range allCharts() {
			if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still there: %v", name, err)
			}
		}
	})
}

func TestMarkdownSample(t *testing.T) {
	md := Markdown(sampleReport())
	for _, want := range []string{
		"# Failover during training\n",
		"Kill the Raft leader mid-round",
		"```sh\ncohort sim --scenario failover",
		"- Machine: linux/amd64, 2 CPUs, Go 1.26\n",
		"- Verdict: **FAIL** (3 of 4 expectations met)\n",
		"## Summary\n",
		"| run | strategy | seed | rounds | final AUROC | accuracy | centralized | local-only mean | gap to centralized | wall time | bytes sent | peak heap |",
		"| fedavg | fedavg | 1 | 10 | 0.8461 |",
		"| 0.8460 | 0.7988 | +0.0001 |",
		"| fedadam | fedadam | 1 | 10 | 0.8474 |",
		"## Sites\n",
		"| site | patients | local-only AUROC | federated (fedavg) | federated (fedadam) |",
		"| academic | 900 | 0.8321 | 0.8530 | 0.8544 |",
		"## Rounds\n", "### fedavg\n", "### fedadam\n",
		"| 4 | 4 | 0.8391 |", "| kill-leader |", "| link |",
		"## Faults\n",
		"| fedavg | 0.9s | 4 | kill-leader | coordinator c1 (leader, term 2) |",
		"## Expectations\n",
		"| leader failover latency | < 2.0s | 2.85s | **FAIL** |",
		"| no update lost | 0 | 0 | PASS |",
		"**Verdict: FAIL** (3 of 4 expectations met)\n",
		"![Test AUROC per round](auroc-rounds.png)",
		"![Test AUROC over time, faults marked](auroc-time.png)",
		"![AUROC per site, local only and federated](sites.png)",
		"![Bytes sent by agents per round](bytes.png)",
		"![Round latency, open to commit](latency.png)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	// Sections come in order.
	last := -1
	for _, h := range []string{"## Summary", "## Sites", "## Rounds", "## Faults", "## Expectations"} {
		i := strings.Index(md, h)
		if i <= last {
			t.Errorf("%s out of order", h)
		}
		last = i
	}
}

func TestMarkdownGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *Report
	}{
		{"sample", sampleReport()},
		{"empty", &Report{Title: "Nothing ran"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Markdown(tc.r)
			path := filepath.Join("testdata", tc.name+".golden.md")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Markdown differs from %s (run with -update if intended):\n%s", path, got)
			}
		})
	}
}

func TestJSONNaN(t *testing.T) {
	r := &Report{Title: "nan", Runs: []Run{{
		Label: "x", Final: Metrics{AUROC: math.NaN()}, WallSeconds: math.Inf(1),
		Rounds: []Round{{Round: 1, AUROC: math.NaN(), Latency: math.Inf(-1)}},
	}}}
	b, err := marshalJSON(r)
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Runs[0].Final.AUROC != 0 || got.Runs[0].WallSeconds != 0 || got.Runs[0].Rounds[0].AUROC != 0 || got.Runs[0].Rounds[0].Latency != 0 {
		t.Errorf("non-finite numbers not written as 0: %s", b)
	}
	if !math.IsNaN(r.Runs[0].Final.AUROC) || !math.IsNaN(r.Runs[0].Rounds[0].AUROC) {
		t.Error("marshalJSON changed the report it was given")
	}
}

func TestEdgeCases(t *testing.T) {
	nan := math.NaN()
	many := &Report{Title: "many runs, many rounds"}
	for i := range 12 {
		run := Run{Label: strings.Repeat("long label ", 5), Seed: uint64(i), Centralized: Metrics{AUROC: 0.80 + float64(i)/100}}
		for n := 1; n <= 11; n++ { // 132 bars: too many, so lines
			run.Rounds = append(run.Rounds, Round{Round: uint64(n), AUROC: 0.7 + float64(n)/1000, Elapsed: float64(n), Latency: 0.5, BytesUp: 3 << 30})
		}
		run.Faults = []Fault{{At: 5, Action: "partition"}, {At: 1e9, Action: "never"}}
		many.Runs = append(many.Runs, run)
	}
	for _, tc := range []struct {
		name   string
		r      *Report
		charts []string // the charts that must be drawn; the others must not
	}{
		{"zero runs", &Report{}, nil},
		{"run failed before any round", &Report{Runs: []Run{{Label: "boom", Error: "coordinator:\nno quorum | retry"}}}, nil},
		{"run without sites or rounds", &Report{Runs: []Run{{Label: "idle", Centralized: Metrics{AUROC: 0.8}}}}, nil},
		{"single round", &Report{Runs: []Run{{
			Label: "one", Rounds: []Round{{Round: 1, AUROC: 0.8, Elapsed: 1, Latency: 1, BytesUp: 100}},
			Faults: []Fault{{At: 0.5, Action: "kill-leader"}},
		}}}, []string{ChartAUROCRounds, ChartAUROCTime, ChartBytes, ChartLatency}},
		{"NaN everywhere", &Report{Runs: []Run{{
			Label: "nan", Final: Metrics{nan, nan}, Centralized: Metrics{nan, nan}, LocalMeanAUROC: nan, WallSeconds: nan,
			Sites:  []Site{{Name: "a", LocalOnlyAUROC: nan, FederatedAUROC: nan}},
			Rounds: []Round{{Round: 1, AUROC: nan, Accuracy: nan, Elapsed: nan, Latency: nan}},
			Faults: []Fault{{At: nan, Action: "x"}},
		}}}, nil},
		{"some NaN rounds", &Report{Runs: []Run{{
			Label:  "partly",
			Rounds: []Round{{Round: 1, AUROC: nan, Elapsed: 1}, {Round: 2, AUROC: 0.7, Elapsed: 2, Latency: math.Inf(1)}, {Round: 3, AUROC: 0.75, Elapsed: 3, Latency: 0.002}},
		}}}, []string{ChartAUROCRounds, ChartAUROCTime, ChartLatency}},
		{"constant AUROC of 1", &Report{Runs: []Run{{
			Label: "perfect", Centralized: Metrics{AUROC: 1}, LocalMeanAUROC: 1,
			Rounds: []Round{{Round: 1, AUROC: 1}, {Round: 2, AUROC: 1}},
		}}}, []string{ChartAUROCRounds}},
		{"no elapsed times", &Report{Runs: []Run{{Label: "untimed", Rounds: []Round{{Round: 1, AUROC: 0.6}, {Round: 2, AUROC: 0.65}}}}}, []string{ChartAUROCRounds}},
		{"sites that differ between runs, one Byzantine", &Report{Runs: []Run{
			{Label: "a", Sites: []Site{{Name: "x", Patients: 1, LocalOnlyAUROC: 0.3}, {Name: "y", Patients: 2, LocalOnlyAUROC: 0.9, Byzantine: true}}},
			{Label: "b", Sites: []Site{{Name: "y", Patients: 2, LocalOnlyAUROC: 0.7, FederatedAUROC: 0.8}, {Name: "z", Patients: 3}}},
			{Sites: []Site{{Name: "z|w", Patients: 3, FederatedAUROC: 0.6}}},
		}}, []string{ChartSites}},
		{"many runs, many rounds", many, []string{ChartAUROCRounds, ChartAUROCTime, ChartBytes, ChartLatency}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // drawing is slow under -race
			dir := t.TempDir()
			if *sample != "" {
				dir = filepath.Join(*sample, "edge", strings.ReplaceAll(tc.name, " ", "-"))
			}
			if err := Write(dir, tc.r); err != nil {
				t.Fatal(err)
			}
			md := Markdown(tc.r)
			if !strings.Contains(md, "Verdict: **") || !strings.Contains(md, "## Expectations") {
				t.Errorf("Markdown lacks the verdict:\n%s", md)
			}
			for _, name := range allCharts() {
				want := strings.Contains(strings.Join(tc.charts, " "), name)
				_, err := os.Stat(filepath.Join(dir, name))
				if got := err == nil; got != want {
					t.Errorf("%s written = %v, want %v", name, got, want)
				}
				if got := strings.Contains(md, "]("+name+")"); got != want {
					t.Errorf("%s linked = %v, want %v", name, got, want)
				}
				if want {
					if n := distinctColors(readPNG(t, filepath.Join(dir, name))); n < 8 {
						t.Errorf("%s: %d distinct colours", name, n)
					}
				}
			}
			b, err := os.ReadFile(filepath.Join(dir, JSONFile))
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(b) {
				t.Errorf("report.json is not JSON: %s", b)
			}
			// Every table row has as many cells as its header.
			checkTables(t, md)
		})
	}
}

// checkTables fails when a Markdown table row has the wrong number of
// cells (an unescaped | or a newline in a cell breaks the table).
func checkTables(t *testing.T, md string) {
	t.Helper()
	cells := func(line string) int {
		return strings.Count(strings.ReplaceAll(line, `\|`, ""), "|") - 1
	}
	want := -1
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			want = -1
			continue
		}
		if want < 0 {
			want = cells(line)
			continue
		}
		if got := cells(line); got != want {
			t.Errorf("table row has %d cells, header %d: %s", got, want, line)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	if err := Write(t.TempDir(), nil); !errors.Is(err, ErrNilReport) {
		t.Errorf("nil report: %v, want ErrNilReport", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(file, "sub"), sampleReport()); err == nil {
		t.Error("Write under a regular file succeeded")
	}
	if Markdown(nil) != "" {
		t.Error("Markdown(nil) is not empty")
	}
}

// Fault markers and baselines are really drawn: the single-run charts
// hold the fault colour only when there is a fault.
func TestFaultMarkersDrawn(t *testing.T) {
	r := sampleReport()
	r.Runs = r.Runs[:1]
	for _, tc := range []struct {
		name   string
		faults []Fault
		want   bool
	}{
		{"with fault", r.Runs[0].Faults, true},
		{"without", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := *r
			rr.Runs = []Run{r.Runs[0]}
			rr.Runs[0].Faults = tc.faults
			for _, c := range chartList() {
				if c.file != ChartAUROCTime && c.file != ChartLatency {
					continue
				}
				b, err := renderChart(c, &rr)
				if err != nil {
					t.Fatal(err)
				}
				img, err := png.Decode(bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				if got := pixelsNear(img, faultRed, 30) > 20; got != tc.want {
					t.Errorf("%s: fault colour drawn = %v, want %v", c.file, got, tc.want)
				}
			}
		})
	}
}

func TestBaselines(t *testing.T) {
	one := sampleReport()
	one.Runs = one.Runs[:1]
	if got := labels(baselines(one)); got != "centralized, local only (mean)" {
		t.Errorf("one run: %s", got)
	}
	two := sampleReport()
	if got := labels(baselines(two)); got != "centralized, local only (mean)" {
		t.Errorf("two runs sharing baselines: %s", got)
	}
	two.Runs[1].Centralized.AUROC = 0.85
	if got := labels(baselines(two)); got != "fedavg: centralized, fedadam: centralized, local only (mean)" {
		t.Errorf("two runs, different centralized: %s", got)
	}
	two.Runs = append(two.Runs, two.Runs[0], two.Runs[1])
	if got := labels(baselines(two)); got != "centralized, mean of runs, local only (mean)" {
		t.Errorf("four runs: %s", got)
	}
}

func labels(refs []refLine) string {
	var s []string
	for _, r := range refs {
		s = append(s, r.label)
	}
	return strings.Join(s, ", ")
}

func TestPassed(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *Report
		want bool
	}{
		{"nil", nil, false},
		{"empty", &Report{}, true},
		{"all pass", &Report{Expectations: []Expectation{{Pass: true}, {Pass: true}}}, true},
		{"one fails", &Report{Expectations: []Expectation{{Pass: true}, {Pass: false}}}, false},
		{"a run failed", &Report{Runs: []Run{{}, {Error: "boom"}}, Expectations: []Expectation{{Pass: true}}}, false},
		{"sample", sampleReport(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Passed(); got != tc.want {
				t.Errorf("Passed() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtAUROC(0.84608), "0.8461"},
		{fmtAUROC(math.NaN()), "n/a"},
		{fmtOptAUROC(0), "—"},
		{fmtGap(0.84, 0.85), "-0.0100"},
		{fmtGap(0.84, 0), "—"},
		{fmtDuration(0.0123), "12ms"},
		{fmtDuration(12.34), "12.3s"},
		{fmtDuration(125), "2m05s"},
		{fmtDuration(3725), "1h02m"},
		{fmtDuration(math.NaN()), "n/a"},
		{fmtBytes(512), "512 B"},
		{fmtBytes(3 << 10), "3.0 KiB"},
		{fmtBytes(12<<20 + 512<<10), "12.50 MiB"},
		{fmtBytes(5 << 30), "5.00 GiB"},
		{cell("a|b\nc"), `a\|b c`},
		{truncate("abcdef", 4), "abc…"},
		{truncate("abc", 4), "abc"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestIntTicks(t *testing.T) {
	for _, tc := range []struct {
		min, max float64
		want     string
	}{
		{1, 10, "1 2 3 4 5 6 7 8 9 10"},
		{0, 1, "0 1"},
		{0.5, 1.5, "1"},
		{1, 200, "20 40 60 80 100 120 140 160 180 200"},
		{1, 23, "5 10 15 20"},
		{0.2, 0.8, ""},
		{math.Inf(-1), 3, ""},
	} {
		var got []string
		for _, tk := range (intTicks{}).Ticks(tc.min, tc.max) {
			got = append(got, tk.Label)
		}
		if s := strings.Join(got, " "); s != tc.want {
			t.Errorf("Ticks(%v, %v) = %q, want %q", tc.min, tc.max, s, tc.want)
		}
	}
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

// rgba is img as *image.RGBA (what the charts decode to), converted when
// it is not.
func rgba(img image.Image) *image.RGBA {
	if m, ok := img.(*image.RGBA); ok {
		return m
	}
	m := image.NewRGBA(img.Bounds())
	draw.Draw(m, m.Bounds(), img, img.Bounds().Min, draw.Src)
	return m
}

// pixels calls f for each pixel of img.
func pixels(img image.Image, f func(r, g, b uint8)) {
	m := rgba(img)
	b := m.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		row := m.Pix[(y-b.Min.Y)*m.Stride:]
		for x := 0; x < b.Dx(); x++ {
			f(row[4*x], row[4*x+1], row[4*x+2])
		}
	}
}

func distinctColors(img image.Image) int {
	seen := map[[3]uint8]bool{}
	pixels(img, func(r, g, b uint8) { seen[[3]uint8{r, g, b}] = true })
	return len(seen)
}

func inkFraction(img image.Image) float64 {
	ink := 0
	pixels(img, func(r, g, b uint8) {
		if r < 250 || g < 250 || b < 250 {
			ink++
		}
	})
	return float64(ink) / float64(img.Bounds().Dx()*img.Bounds().Dy())
}

// pixelsNear counts the pixels within tol (per channel) of c.
func pixelsNear(img image.Image, c color.RGBA, tol int) int {
	near := func(a, b uint8) bool { return max(int(a)-int(b), int(b)-int(a)) <= tol }
	n := 0
	pixels(img, func(r, g, b uint8) {
		if near(r, c.R) && near(g, c.G) && near(b, c.B) {
			n++
		}
	})
	return n
}

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		min, max float64
		want     string
	}{
		{0.78, 0.86, "0.78 0.80 0.82 0.84 0.86"},
		{0, 5.3, "0 1 2 3 4 5"},
		{0, 170, "0 50 100 150"},
		{-1, 1, "-1.0 -0.5 0.0 0.5 1.0"},
		{1, 1, ""},
		{math.NaN(), 1, ""},
	} {
		var got []string
		for _, tk := range (niceTicks{}).Ticks(tc.min, tc.max) {
			if tk.Label != "" {
				got = append(got, tk.Label)
			}
		}
		if s := strings.Join(got, " "); s != tc.want {
			t.Errorf("Ticks(%v, %v) = %q, want %q", tc.min, tc.max, s, tc.want)
		}
	}
}
