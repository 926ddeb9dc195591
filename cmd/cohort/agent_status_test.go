package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-fl/cohort/agent"
)

func TestAgentStatus(t *testing.T) {
	dir := t.TempDir()
	st := agent.Status{Site: "st-mary", Ingested: map[string]int{"Patient": 3}, Rejected: map[string]int{"bad-time": 2}, RoundsTrained: 4}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, agent.StatusFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runAgentStatus([]string{"--data-dir", dir}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"site st-mary", "Patient", "bad-time", "rounds trained 4"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := runAgentStatus([]string{"--data-dir", t.TempDir()}, &out, &out); err == nil {
		t.Error("status of a directory without an agent succeeded")
	}
}
