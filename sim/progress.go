package sim

import (
	"io"

	simprogress "github.com/cohort-fl/cohort/sim/progress"
)

// progress shows a run's progress on the terminal.
type progress interface {
	Set(done int, status string)
	Done()
	// Enabled reports whether it draws (then the per-round lines are
	// left out of the output).
	Enabled() bool
}

// newProgress returns a progress bar on w, drawn only when w is a terminal
// outside CI; nil w means none.
func newProgress(w io.Writer, total int, label string) progress {
	if w == nil {
		return (*simprogress.Bar)(nil)
	}
	return simprogress.New(w, total, label)
}
