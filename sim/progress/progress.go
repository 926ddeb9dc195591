// Package progress draws a one-line progress bar for long runs on a
// terminal, and nothing anywhere else:
//
//	round [#########-----------]  3/10  30%  round 3  auroc 0.8123  elapsed 12s  eta 28s
//
// The line is redrawn in place with a carriage return, at most ten times a
// second, and cut to the terminal's width. A Bar draws only when it writes
// to a terminal and the CI environment variable is empty, so logs and CI
// output stay clean; elsewhere every method does nothing. Config.Force
// turns it on regardless, for tests.
package progress

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// barWidth is the number of cells between the brackets.
const barWidth = 20

// Config holds the knobs of a Bar. The zero Config is the default.
type Config struct {
	// Force draws even when the writer is not a terminal or CI is set.
	Force bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Interval is the least time between two redraws; zero means 100ms.
	// Done always draws the final state.
	Interval time.Duration
	// Width is the line width in columns; zero means the terminal's width
	// when it can be read, else 80.
	Width int
}

// DefaultConfig returns the Config that New uses.
func DefaultConfig() Config {
	return Config{Now: time.Now, Interval: 100 * time.Millisecond}
}

// Bar is a progress bar on one terminal line. It is safe for concurrent
// use.
type Bar struct {
	w        io.Writer
	file     *os.File // w, when it is a file: for the terminal width
	total    int
	label    string
	on       bool
	now      func() time.Time
	interval time.Duration
	width    int

	mu       sync.Mutex // guards the fields below and writes to w
	start    time.Time
	drawn    time.Time // when the line was last drawn; zero before the first
	done     int
	status   string
	dirty    bool // Set changed the state since the last draw
	lastLen  int  // columns of the last line drawn, to blank what is left
	finished bool
}

// New returns a Bar writing to w, counting to total. It draws only when w
// is a terminal (an *os.File whose mode has os.ModeCharDevice) and the CI
// environment variable is empty; otherwise every method is a no-op.
func New(w io.Writer, total int, label string) *Bar {
	return NewWithConfig(w, total, label, DefaultConfig())
}

// NewWithConfig is New with explicit settings.
func NewWithConfig(w io.Writer, total int, label string, cfg Config) *Bar {
	b := &Bar{
		w:        w,
		total:    total,
		label:    clean(label),
		now:      cfg.Now,
		interval: cfg.Interval,
		width:    cfg.Width,
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.interval <= 0 {
		b.interval = 100 * time.Millisecond
	}
	if f, ok := w.(*os.File); ok && f != nil {
		b.file = f
	}
	b.on = w != nil && (cfg.Force || (isTerminal(w) && os.Getenv("CI") == ""))
	if b.on {
		b.start = b.now()
	}
	return b
}

// isTerminal reports whether w is an *os.File on a character device.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Enabled reports whether the bar draws. Callers can print their own
// progress lines instead when it does not.
func (b *Bar) Enabled() bool { return b != nil && b.on }

// Set records that done of total steps are finished, with a short status
// such as "round 3  auroc 0.8123", and redraws the line unless it was
// drawn less than the interval ago.
func (b *Bar) Set(done int, status string) {
	if !b.Enabled() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.done, b.status, b.dirty = done, clean(status), true
	now := b.now()
	if !b.drawn.IsZero() && now.Sub(b.drawn) < b.interval {
		return
	}
	b.draw(now)
}

// Done draws the final state and ends the line. Later calls to Set and
// Done do nothing.
func (b *Bar) Done() {
	if !b.Enabled() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	if b.dirty || b.drawn.IsZero() {
		b.draw(b.now())
	}
	_, _ = io.WriteString(b.w, "\n")
}

// draw writes the line. b.mu is held.
func (b *Bar) draw(now time.Time) {
	line := b.line(now)
	width := b.width
	if width <= 0 {
		width = 80
		if b.file != nil {
			if w, ok := terminalWidth(b.file); ok && w > 0 {
				width = w
			}
		}
	}
	// Leave the last column free: writing into it wraps some terminals.
	line = cut(line, width-1)
	n := len([]rune(line))
	pad := ""
	if n < b.lastLen {
		pad = strings.Repeat(" ", b.lastLen-n)
	}
	_, _ = io.WriteString(b.w, "\r"+line+pad)
	b.lastLen = n
	b.drawn, b.dirty = now, false
}

// line is the text of the bar at now, before it is cut to width.
func (b *Bar) line(now time.Time) string {
	elapsed := now.Sub(b.start)
	var parts []string
	if b.label != "" {
		parts = append(parts, b.label)
	}
	if b.total > 0 {
		done := min(max(b.done, 0), b.total)
		fill := done * barWidth / b.total
		parts = append(parts, "["+strings.Repeat("#", fill)+strings.Repeat("-", barWidth-fill)+"]",
			" "+strconv.Itoa(b.done)+"/"+strconv.Itoa(b.total),
			" "+strconv.Itoa(done*100/b.total)+"%")
	} else {
		parts = append(parts, " "+strconv.Itoa(b.done))
	}
	if b.status != "" {
		parts = append(parts, " "+b.status)
	}
	parts = append(parts, " elapsed "+duration(elapsed))
	if b.total > 0 && b.done > 0 && b.done < b.total {
		eta := time.Duration(float64(elapsed) * float64(b.total-b.done) / float64(b.done))
		parts = append(parts, " eta "+duration(eta))
	}
	return strings.Join(parts, " ")
}

// duration formats d for the bar: 12s, 2m05s, 1h02m.
func duration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s"
	case d < time.Hour:
		s := int(d.Round(time.Second) / time.Second)
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	default:
		m := int(d.Round(time.Minute) / time.Minute)
		return fmt.Sprintf("%dh%02dm", m/60, m%60)
	}
}

// clean puts s on one line: control characters (a newline or a carriage
// return would break the redraw) become spaces.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// cut shortens s to at most n runes.
func cut(s string, n int) string {
	if n < 0 {
		n = 0
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}
