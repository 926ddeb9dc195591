package report

import (
	"fmt"
	"math"
	"strings"
)

// Placeholders in tables.
const (
	notMeasured = "—"   // a metric that was not measured (zero)
	notANumber  = "n/a" // a metric that came out NaN or infinite
)

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// fmtAUROC formats an AUROC, an accuracy or another score in [0, 1].
func fmtAUROC(f float64) string {
	if !finite(f) {
		return notANumber
	}
	return fmt.Sprintf("%.4f", f)
}

// fmtOptAUROC is fmtAUROC with zero meaning "not measured".
func fmtOptAUROC(f float64) string {
	if f == 0 {
		return notMeasured
	}
	return fmtAUROC(f)
}

// fmtGap formats a signed difference of two scores, or "—" when either is
// not measured.
func fmtGap(a, b float64) string {
	if a == 0 || b == 0 {
		return notMeasured
	}
	if !finite(a) || !finite(b) {
		return notANumber
	}
	return fmt.Sprintf("%+.4f", a-b)
}

// fmtDuration formats seconds for a person: 850ms, 12.3s, 2m05s, 1h02m.
func fmtDuration(sec float64) string {
	switch {
	case !finite(sec) || sec < 0:
		return notANumber
	case sec < 1:
		return fmt.Sprintf("%.0fms", sec*1000)
	case sec < 60:
		return fmt.Sprintf("%.1fs", sec)
	case sec < 3600:
		s := int(math.Round(sec))
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	default:
		m := int(math.Round(sec / 60))
		return fmt.Sprintf("%dh%02dm", m/60, m%60)
	}
}

// fmtLatency formats a round's latency: 850ms, 2.85s, 2m05s.
func fmtLatency(sec float64) string {
	if finite(sec) && sec >= 1 && sec < 60 {
		return fmt.Sprintf("%.2fs", sec)
	}
	return fmtDuration(sec)
}

// fmtElapsed formats seconds since a run started, always in seconds so
// that a column of them lines up: 0.4s, 12.3s, 312.0s.
func fmtElapsed(sec float64) string {
	if !finite(sec) {
		return notANumber
	}
	return fmt.Sprintf("%.1fs", sec)
}

// byteUnit is a binary unit for a byte count.
type byteUnit struct {
	name string
	size float64
}

// unitFor picks the largest binary unit in which max is at least 1.
func unitFor(max float64) byteUnit {
	units := []byteUnit{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if max >= u.size {
			return u
		}
	}
	return byteUnit{"B", 1}
}

// fmtBytes formats a byte count with a binary unit: 512 B, 3.4 KiB,
// 12.50 MiB.
func fmtBytes(n int64) string {
	u := unitFor(math.Abs(float64(n)))
	switch u.name {
	case "B":
		return fmt.Sprintf("%d B", n)
	case "KiB":
		return fmt.Sprintf("%.1f KiB", float64(n)/u.size)
	default:
		return fmt.Sprintf("%.2f %s", float64(n)/u.size, u.name)
	}
}

// cell makes s safe inside a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "\r\n", " ")
	s = strings.NewReplacer("\n", " ", "\r", " ", "|", `\|`).Replace(s)
	return strings.TrimSpace(s)
}

// localMean is run's local-only mean AUROC: LocalMeanAUROC, or the mean of
// the sites' finite, measured LocalOnlyAUROC when that is zero.
func localMean(run *Run) float64 {
	if run.LocalMeanAUROC != 0 {
		return run.LocalMeanAUROC
	}
	var sum float64
	var n int
	for _, s := range run.Sites {
		if s.LocalOnlyAUROC != 0 && finite(s.LocalOnlyAUROC) {
			sum += s.LocalOnlyAUROC
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// faultRound is the round a fault belongs to: f.Round, or else the first
// round of run that committed at or after the fault fired (0 when none).
func faultRound(run *Run, f Fault) uint64 {
	if f.Round != 0 {
		return f.Round
	}
	if !finite(f.At) {
		return 0
	}
	for _, rd := range run.Rounds {
		if finite(rd.Elapsed) && rd.Elapsed >= f.At {
			return rd.Round
		}
	}
	return 0
}

// truncate shortens s to at most n runes, ending in "…" when cut.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	if n <= 1 {
		return string(r[:n])
	}
	return string(r[:n-1]) + "…"
}

// sameFloat reports whether a and b are equal, counting two NaNs as equal.
func sameFloat(a, b float64) bool {
	return a == b || (math.IsNaN(a) && math.IsNaN(b))
}
