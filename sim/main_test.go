package sim

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine running: the
// federation must stop every coordinator and agent it started, and each of
// them must wait for its own goroutines.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
