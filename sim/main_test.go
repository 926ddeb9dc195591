package sim

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine running: the
// federation must stop every coordinator and agent it started, and each of
// them must wait for its own goroutines. buntdb's background manager is the
// one exception: it notices a Close only at its next one-second tick, and
// nothing outside buntdb can wait for it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"))
}
