package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestHealth(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not leader yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	var out bytes.Buffer
	err := run(t.Context(), []string{"health", srv.URL + "/readyz"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "not leader yet") {
		t.Fatalf("unhealthy: got %v", err)
	}
	ready.Store(true)
	out.Reset()
	if err := run(t.Context(), []string{"health", srv.URL + "/readyz"}, &out, &out); err != nil || !strings.Contains(out.String(), "200") {
		t.Fatalf("healthy: got %v, %q", err, out.String())
	}
	for _, bad := range [][]string{{"health"}, {"health", "https://x/"}, {"health", "127.0.0.1:1"}} {
		if err := run(t.Context(), bad, &out, &out); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
