package sim

import (
	"context"
	"log/slog"
)

// phiLogHandler passes every log record of the federation (coordinators
// and in-process agents) to the next handler and also formats it, at
// every level, into the PHI scanner: a planted identifier in any log line
// is found like one in the egress.
type phiLogHandler struct {
	next slog.Handler
	text slog.Handler // formats into the scanner
}

// scanWriter feeds the scanner the formatted log lines.
type scanWriter struct{ p *phiScanner }

func (w scanWriter) Write(b []byte) (int, error) {
	w.p.scan("log", b)
	return len(b), nil
}

func newPHILogHandler(next slog.Handler, p *phiScanner) *phiLogHandler {
	return &phiLogHandler{next: next, text: slog.NewTextHandler(scanWriter{p}, &slog.HandlerOptions{Level: slog.LevelDebug})}
}

func (h *phiLogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *phiLogHandler) Handle(ctx context.Context, r slog.Record) error {
	_ = h.text.Handle(ctx, r)
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *phiLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &phiLogHandler{next: h.next.WithAttrs(as), text: h.text.WithAttrs(as)}
}

func (h *phiLogHandler) WithGroup(name string) slog.Handler {
	return &phiLogHandler{next: h.next.WithGroup(name), text: h.text.WithGroup(name)}
}
