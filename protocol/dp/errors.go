package dp

import (
	"errors"
	"fmt"
	"math"
)

var (
	// ErrInvalidParameter: a mechanism or accounting parameter is out of
	// range (a noise multiplier that is not > 0, a sample rate outside
	// (0, 1], a delta outside (0, 1), a clip norm that is not > 0, ...).
	ErrInvalidParameter = errors.New("invalid differential privacy parameter")
	// ErrNonFinite: an update holds NaN or ±Inf. Its norm cannot be bounded,
	// so it must not be clipped, noised or aggregated.
	ErrNonFinite = errors.New("non-finite value in update")
	// ErrBudgetTooSmall: no noise multiplier up to MaxNoiseMultiplier keeps
	// the planned steps within the target epsilon (or the budget is already
	// spent).
	ErrBudgetTooSmall = errors.New("privacy budget too small for the plan")
	// ErrInvalidState: serialized accountant or clipper state does not
	// decode to a valid state.
	ErrInvalidState = errors.New("invalid differential privacy state")
)

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidParameter}, args...)...)
}

func checkNoiseMultiplier(z float64) error {
	if !finite(z) || z <= 0 {
		return invalidf("noise multiplier %v must be a finite number > 0", z)
	}
	return nil
}

func checkSampleRate(q float64) error {
	if !finite(q) || q <= 0 || q > 1 {
		return invalidf("sample rate %v must be in (0, 1]", q)
	}
	return nil
}

func checkDelta(delta float64) error {
	if !finite(delta) || delta <= 0 || delta >= 1 {
		return invalidf("delta %v must be in (0, 1)", delta)
	}
	return nil
}

func checkSteps(steps int) error {
	if steps < 0 {
		return invalidf("steps %d must be >= 0", steps)
	}
	if int64(steps) > MaxSteps {
		return invalidf("steps %d exceed the maximum %d", steps, MaxSteps)
	}
	return nil
}

func checkEpsilon(eps float64) error {
	if !finite(eps) || eps <= 0 {
		return invalidf("epsilon %v must be a finite number > 0", eps)
	}
	return nil
}

func checkClip(c float64) error {
	if !finite(c) || c <= 0 {
		return invalidf("clip norm %v must be a finite number > 0", c)
	}
	return nil
}

func checkMinContributors(n int) error {
	if n < 1 {
		return invalidf("minimum contributors %d must be >= 1", n)
	}
	return nil
}
