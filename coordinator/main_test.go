package coordinator

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine running: Run
// must wait for everything it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
