package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent"
)

// TestCheckConfig: --check-config prints the effective configuration (the
// file, the flags over it, the defaults under both) without starting
// anything, redacts the MQTT password, and refuses an invalid one with
// the reason.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	run := func(cmd func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := cmd(context.Background(), args, &out, &errOut)
		return out.String(), err
	}
	agentCmd := func(ctx context.Context, args []string, out, errOut *bytes.Buffer) error {
		return runAgent(ctx, args, out, errOut)
	}
	coordCmd := func(ctx context.Context, args []string, out, errOut *bytes.Buffer) error {
		return runCoordinator(ctx, args, out, errOut)
	}

	const password = "cohort-canary-mqtt-password"
	agentConf := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(agentConf, []byte(`{"data_dir": "/var/lib/cohort", "coordinators": ["c1:7401"],
		"mqtt": {"broker": "tcp://gw:`+password+`-in-url@127.0.0.1:1883", "password": "`+password+`"}, "risk_min_interval": "5m"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(agentCmd, "--config", agentConf, "--coordinator", "c2:7401", "--log-level", "warn", "--check-config")
	if err != nil {
		t.Fatalf("agent --check-config: %v", err)
	}
	if strings.Contains(out, password) || !strings.Contains(out, redactedSecret) {
		t.Errorf("the MQTT password is not redacted:\n%s", out)
	}
	var a agentFile
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	if a.DataDir != "/var/lib/cohort" || len(a.Coordinators) != 1 || a.Coordinators[0] != "c2:7401" || a.LogLevel != "warn" ||
		a.RiskMinInterval != agent.Duration(5*time.Minute) || a.PollWait != agent.DefaultConfig().PollWait {
		t.Errorf("effective agent config: %+v", a)
	}
	if _, err := run(agentCmd, "--config", agentConf, "--log-level", "loud", "--check-config"); err == nil {
		t.Error("an unknown log level passed the check")
	}
	if _, err := run(agentCmd, "--data-dir", dir, "--check-config"); err == nil || !strings.Contains(err.Error(), "coordinator") {
		t.Errorf("an agent without coordinators: %v, want an error naming them", err)
	}

	coordConf := filepath.Join(dir, "coordinator.json")
	if err := os.WriteFile(coordConf, []byte(`{"id": "c1", "data_dir": "`+dir+`/c1", "raft_addr": "127.0.0.1:7400", "agent_addr": "127.0.0.1:7401",
		"tls": {"ca": "ca.crt", "cert": "c1.crt", "key": "c1.key"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run(coordCmd, "--config", coordConf, "--admin-addr", "127.0.0.1:7443", "--bootstrap", "--peer", "c1=127.0.0.1:7400", "--check-config")
	if err != nil {
		t.Fatalf("coordinator --check-config: %v", err)
	}
	var c coordinatorFile
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	if c.ID != "c1" || c.AdminAddr != "127.0.0.1:7443" || !c.Bootstrap || len(c.Peers) != 1 || c.LogLevel != "info" {
		t.Errorf("effective coordinator config: %+v", c)
	}
	if _, err := os.Stat(filepath.Join(dir, "c1")); err == nil {
		t.Error("--check-config created the data directory")
	}
	trailing := filepath.Join(dir, "trailing.json")
	if err := os.WriteFile(trailing, []byte(`{"id": "c1"}
{"id": "c2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(coordCmd, "--config", trailing, "--check-config"); err == nil || !strings.Contains(err.Error(), "more after the JSON object") {
		t.Errorf("a config file with a second object: %v, want it refused", err)
	}
	if _, err := run(coordCmd, "--config", coordConf, "--bootstrap", "--check-config"); err == nil {
		t.Error("--bootstrap without peers passed the check")
	}
	if _, err := run(coordCmd, "--config", coordConf, "--id", "", "--check-config"); err == nil {
		t.Error("a coordinator without an id passed the check")
	}
}
