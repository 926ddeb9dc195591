package train

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (such as one started
// by gorgonia's tape machine) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
