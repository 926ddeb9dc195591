package sim

import (
	"log/slog"
	"slices"
	"testing"
)

// TestPHILogHandlerFindsCanaries: an identifier in a log message, in an
// attribute, or in an attribute added with With, at debug level under an
// info logger, is found; the next handler still gets what it would have.
func TestPHILogHandlerFindsCanaries(t *testing.T) {
	for _, c := range []struct {
		name string
		log  func(*slog.Logger)
		want []string
	}{
		{"message", func(l *slog.Logger) { l.Info("admitted Zelda Canary-Name") }, []string{"name"}},
		{"attribute", func(l *slog.Logger) { l.Warn("bad record", "mrn", "MRN-CANARY-7") }, []string{"mrn"}},
		{"with", func(l *slog.Logger) { l.With("phone", "555-0199-CANARY").Info("x") }, []string{"phone"}},
		{"debug under info", func(l *slog.Logger) { l.Debug("dob 1901-02-03") }, []string{"birth_date"}},
		{"nothing", func(l *slog.Logger) { l.Info("round committed", "job", "j", "round", 3) }, nil},
	} {
		p := newPHIScanner(map[string][]string{"name": {"Zelda Canary-Name"}, "mrn": {"MRN-CANARY-7"},
			"phone": {"555-0199-CANARY"}, "birth_date": {"1901-02-03"}})
		var seen []string
		next := slog.NewTextHandler(writerFunc(func(b []byte) { seen = append(seen, string(b)) }), &slog.HandlerOptions{Level: slog.LevelInfo})
		c.log(slog.New(newPHILogHandler(next, p)))
		_, found := p.result()
		if !slices.Equal(found, c.want) {
			t.Errorf("%s: found %v, want %v", c.name, found, c.want)
		}
		if c.name == "debug under info" && len(seen) != 0 {
			t.Errorf("the next handler got a debug line: %v", seen)
		}
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(b []byte) (int, error) { f(b); return len(b), nil }
