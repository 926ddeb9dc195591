package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
)

// buildBinary compiles cohort once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cohort")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeAddr returns a loopback address with a port free for network
// ("tcp" or "udp") at the time of the call.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	switch network {
	case "tcp":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	default:
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
}

// proc is one running cohort process with its output kept for diagnosis.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: new(syncBuffer), done: make(chan error, 1)}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit within 15 s.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("%s did not exit cleanly: %v", p.name, err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not exit within 15 s of SIGTERM", p.name)
	}
	if strings.Contains(p.out.String(), "panic:") {
		t.Errorf("%s panicked", p.name)
	}
}

func runOK(t *testing.T, bin string, args ...string) {
	t.Helper()
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("cohort %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestMultiProcessFederation runs the real binary as 3 coordinator and 2
// agent processes on loopback, runs a job to completion and shuts
// everything down with SIGTERM.
func TestMultiProcessFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as five processes")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	runOK(t, bin, "ca", "init", "--dir", pkiDir)
	sites := synth.DefaultSites(2, 7)
	for _, s := range sites {
		runOK(t, bin, "ca", "issue", "--dir", pkiDir, "--role", "site", "--id", s.Name)
		if _, err := synth.WriteSite(filepath.Join(dir, "data", s.Name), s, synth.DefaultTruth()); err != nil {
			t.Fatal(err)
		}
	}

	type node struct{ id, raft, agent, status string }
	nodes := make([]node, 3)
	var peers []string
	for i := range nodes {
		n := node{id: fmt.Sprintf("c%d", i+1), raft: freeAddr(t, "tcp"), agent: freeAddr(t, "udp"), status: freeAddr(t, "tcp")}
		nodes[i] = n
		peers = append(peers, "--peer", n.id+"="+n.raft)
		runOK(t, bin, "ca", "issue", "--dir", pkiDir, "--role", "coordinator", "--id", n.id, "--host", "127.0.0.1")
	}
	job := coordinator.JobSpec{ID: "mp-job", Rounds: 3, MinSites: len(sites), RoundTimeout: coordinator.Duration(time.Minute)}
	cfgPath := filepath.Join(dir, "coordinator.json")
	b, err := json.Marshal(map[string]any{
		"sites":     []string{sites[0].Name, sites[1].Name},
		"jobs":      []coordinator.JobSpec{job},
		"log_level": "info",
		// Fast elections for a test on one machine.
		"heartbeat_timeout": "300ms", "election_timeout": "300ms", "leader_lease_timeout": "200ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}

	var coords []*proc
	for _, n := range nodes {
		args := append([]string{"coordinator", "--config", cfgPath, "--id", n.id,
			"--data-dir", filepath.Join(dir, n.id), "--raft-addr", n.raft, "--agent-addr", n.agent,
			"--status-addr", n.status, "--ca", filepath.Join(pkiDir, "ca.crt"),
			"--cert", filepath.Join(pkiDir, n.id+".crt"), "--key", filepath.Join(pkiDir, n.id+".key"),
			"--bootstrap"}, peers...)
		coords = append(coords, start(t, n.id, bin, args...))
	}
	var agents []*proc
	for _, s := range sites {
		args := []string{"agent", "--data-dir", filepath.Join(dir, "agent-"+s.Name),
			"--fhir-dir", filepath.Join(dir, "data", s.Name), "--ca", filepath.Join(pkiDir, "ca.crt"),
			"--cert", filepath.Join(pkiDir, s.Name+".crt"), "--key", filepath.Join(pkiDir, s.Name+".key")}
		for _, n := range nodes {
			args = append(args, "--coordinator", n.agent)
		}
		agents = append(agents, start(t, "agent-"+s.Name, bin, args...))
	}

	// Wait for the job to finish, reading any node's status endpoint.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := waitJobDone(ctx, t, "http://"+nodes[2].status+"/v1/status", job.ID)
	js := st.Jobs[0]
	if js.State != coordinator.JobDone || js.CommittedRounds != 3 {
		t.Fatalf("job ended %s with %d rounds: %+v", js.State, js.CommittedRounds, js)
	}
	for _, r := range js.History {
		if r.State == coordinator.RoundCommitted && len(r.Contributors) != len(sites) {
			t.Errorf("round %d aggregated %v, want both sites", r.Round, r.Contributors)
		}
	}

	if os.Getenv("COHORT_TEST_VERBOSE") != "" {
		for _, p := range append(agents, coords...) {
			t.Logf("--- %s ---\n%s", p.name, p.out.String())
		}
	}
	for _, p := range agents {
		p.stop(t)
	}
	for _, p := range coords {
		p.stop(t)
	}
}

func waitJobDone(ctx context.Context, t *testing.T, url, job string) coordinator.Status {
	t.Helper()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last coordinator.Status
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var st coordinator.Status
			if json.NewDecoder(resp.Body).Decode(&st) == nil {
				last = st
				for _, j := range st.Jobs {
					if j.ID == job && j.State != coordinator.JobRunning {
						resp.Body.Close()
						return st
					}
				}
			}
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s did not finish in time; last status: %+v", job, last)
		case <-tick.C:
		}
	}
}
