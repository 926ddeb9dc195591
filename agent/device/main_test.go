package device

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine running: Run and
// Close must wait for everything they started. buntdb's background
// goroutine (in the store some tests write to) notices a Close only at its
// next one-second tick, so it is ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"))
}
