package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	findings := `{"config":{"scanner_name":"govulncheck"}}
{"finding":{"osv":"GO-1","fixed_version":"v1.2","trace":[{"module":"m","version":"v1.1","package":"m/p","function":"F"},{"module":"me","package":"me/q","function":"G"}]}}
{"finding":{"osv":"GO-2","fixed_version":"v2","trace":[{"module":"n","version":"v1"}]}}
`
	exc := filepath.Join(t.TempDir(), "exc")
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name, exceptions string
		failed           bool
		want             string
	}{
		{"not excepted", "", true, "FAIL GO-1 in m@v1.1 (fixed in v1.2), reached from m/p.F from me/q.G"},
		{"excepted", "GO-1 2026-12-31 waiting for v1.2\n", false, "excepted until 2026-12-31: GO-1"},
		{"expired", "GO-1 2026-11-01 waiting\n", true, "expired on 2026-11-01"},
		{"unused exception", "GO-1 2026-12-31 x\nGO-9 2026-12-31 y\n", false, "GO-9 is no longer needed"},
	} {
		if err := os.WriteFile(exc, []byte(c.exceptions), 0o644); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		failed, err := run(strings.NewReader(findings), exc, now, &out)
		if err != nil || failed != c.failed || !strings.Contains(out.String(), c.want) || strings.Contains(out.String(), "GO-2 ") {
			t.Errorf("%s: failed %v, err %v:\n%s", c.name, failed, err, out.String())
		}
	}
	if err := os.WriteFile(exc, []byte("GO-1 soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(strings.NewReader(findings), exc, now, &strings.Builder{}); err == nil {
		t.Error("a malformed exception was accepted")
	}
}
