package agent

import "testing"

// TestMinCohortFloor: a job cannot lower the site's own floor k; it can
// raise it.
func TestMinCohortFloor(t *testing.T) {
	for _, c := range []struct {
		floor int
		job   uint32
		want  int
	}{
		{0, 0, 20}, {0, 5, 20}, {0, 50, 50}, {100, 20, 100}, {10, 5, 10}, {10, 30, 30},
	} {
		a := &Agent{cfg: Config{MinCohort: c.floor}}
		if got := a.minCohort(c.job); got != c.want {
			t.Errorf("site floor %d, job %d: %d, want %d", c.floor, c.job, got, c.want)
		}
	}
	if err := (Config{DataDir: "x", MinCohort: -1}).Validate(); err == nil {
		t.Error("a negative min_cohort was accepted")
	}
}
