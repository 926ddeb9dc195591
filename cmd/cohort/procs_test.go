package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
)

// Helpers for the tests that run the real cohort binary as several
// processes on loopback: build it, pick ports, start, kill and restart
// processes, and poll the coordinators' /v1/status.

// built is the cohort binary, compiled at most once per test binary run
// (by the first test that asks for it) and removed by TestMain.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildBinary compiles cohort once per test binary run and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "cohort-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "cohort")
		cmd := exec.Command("go", "build", "-o", built.bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// freeAddr returns a loopback address with a port free for network
// ("tcp" or "udp") at the time of the call, and never one it returned
// before in this test binary: the kernel may hand a just-closed port out
// again, and two processes of one cluster must not be given the same.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	for {
		var addr string
		switch network {
		case "tcp":
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr = l.Addr().String()
			l.Close()
		default:
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr = c.LocalAddr().String()
			c.Close()
		}
		_, port, _ := net.SplitHostPort(addr)
		if _, dup := givenPorts.LoadOrStore(port, true); !dup {
			return addr
		}
	}
}

// givenPorts are the ports freeAddr returned (TCP and UDP alike).
var givenPorts sync.Map

// proc is one running cohort process with its output kept for diagnosis.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	// exitedC is closed when the process has exited; err is then its
	// exit status.
	exitedC chan struct{}
	err     error
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

// start runs bin with args. The process is killed in t.Cleanup if it is
// still running, and its output is printed if the test failed (or always,
// with COHORT_TEST_VERBOSE set).
func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: new(syncBuffer), exitedC: make(chan struct{})}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exitedC)
	}()
	t.Cleanup(func() {
		if p.running() {
			p.cmd.Process.Kill()
			<-p.exitedC
		}
		if t.Failed() || os.Getenv("COHORT_TEST_VERBOSE") != "" {
			t.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	return p
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.exitedC:
		return false
	default:
		return true
	}
}

// wait waits up to d for the process to exit and returns its exit status.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.exitedC:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v", p.name, d)
		return nil
	}
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// kill sends SIGKILL, as a crash would, and waits for the process to go.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	p.wait(t, 10*time.Second)
}

// stop sends SIGTERM and expects a clean exit within 15 s.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
	select {
	case <-p.exitedC:
		if p.err != nil {
			t.Errorf("%s did not exit cleanly: %v", p.name, p.err)
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

// waitFor polls cond every 50 ms until it reports true, and fails the test
// with what and cond's last detail if timeout passes first.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (ok bool, detail string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, detail)
		}
		<-tick.C
	}
}

// holdsFor polls cond every 50 ms for d and fails the test, with what and
// cond's detail, the first time it does not hold.
func holdsFor(t *testing.T, d time.Duration, what string, cond func() (ok bool, detail string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if ok, detail := cond(); !ok {
			t.Fatalf("%s stopped holding: %s", what, detail)
		}
		<-tick.C
	}
}

// statusClient bounds every status request.
var statusClient = &http.Client{Timeout: 2 * time.Second}

// fetchStatus reads /v1/status at addr. A stale read is the node's own
// view; otherwise a follower redirects to the leader, which answers once
// it has confirmed its leadership.
func fetchStatus(ctx context.Context, addr string, stale bool) (coordinator.Status, error) {
	var st coordinator.Status
	url := "http://" + addr + "/v1/status"
	if stale {
		url += "?stale=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %s: %s", addr, resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

func waitJobDone(ctx context.Context, t *testing.T, url, job string) coordinator.Status {
	t.Helper()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last coordinator.Status
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := statusClient.Do(req); err == nil {
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

// cluster is a federation of real cohort processes on loopback: n
// coordinators and one agent per synthetic site, sharing a CA.
type cluster struct {
	t   *testing.T
	bin string
	dir string
	pki string
	cfg string
	// tokenFile is the bootstrap admin token every coordinator is
	// configured with, made by `cohort admin token new`.
	tokenFile string
	sites     []synth.Site
	nodes     []*coordNode
	agents    []*siteAgent
}

// coordNode is one coordinator: its fixed addresses and flags, and the
// process currently running it (nil before the first start).
type coordNode struct {
	id, raft, agent, status, admin string
	args                           []string
	proc                           *proc
	starts                         int
}

// siteAgent is one site's agent process.
type siteAgent struct {
	site    string
	dataDir string
	proc    *proc
}

// newCluster writes the PKI, one synthetic site per agent and the shared
// coordinator config, and picks loopback ports for nCoord coordinators. It
// starts nothing.
func newCluster(t *testing.T, nCoord, nSites int, jobs ...coordinator.JobSpec) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: buildBinary(t), dir: t.TempDir()}
	c.pki = filepath.Join(c.dir, "pki")
	runOK(t, c.bin, "ca", "init", "--dir", c.pki)
	c.tokenFile = filepath.Join(c.dir, "bootstrap-admin.token")
	runOK(t, c.bin, "admin", "token", "new", "-o", c.tokenFile)
	c.sites = synth.DefaultSites(nSites, 7)
	var siteIDs []string
	for _, s := range c.sites {
		runOK(t, c.bin, "ca", "issue", "--dir", c.pki, "--role", "site", "--id", s.Name)
		if _, err := synth.WriteSite(filepath.Join(c.dir, "data", s.Name), s, synth.DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		siteIDs = append(siteIDs, s.Name)
	}
	var peers []string
	for i := range nCoord {
		n := &coordNode{id: fmt.Sprintf("c%d", i+1), raft: freeAddr(t, "tcp"), agent: freeAddr(t, "udp"), status: freeAddr(t, "tcp"), admin: freeAddr(t, "tcp")}
		c.nodes = append(c.nodes, n)
		peers = append(peers, "--peer", n.id+"="+n.raft)
		runOK(t, c.bin, "ca", "issue", "--dir", c.pki, "--role", "coordinator", "--id", n.id, "--host", "127.0.0.1")
	}
	c.cfg = filepath.Join(c.dir, "coordinator.json")
	b, err := json.Marshal(map[string]any{
		"sites":     siteIDs,
		"jobs":      jobs,
		"log_level": "info",
		// Fast elections for a test on one machine.
		"heartbeat_timeout": "300ms", "election_timeout": "300ms", "leader_lease_timeout": "200ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		// --bootstrap is harmless on a restart: a node with Raft state
		// skips it.
		n.args = append(c.coordinatorArgs(n), append([]string{"--bootstrap"}, peers...)...)
	}
	return c
}

// coordinatorArgs are the flags of coordinator n, without --bootstrap and
// peers.
func (c *cluster) coordinatorArgs(n *coordNode) []string {
	return []string{"coordinator", "--config", c.cfg, "--id", n.id,
		"--data-dir", filepath.Join(c.dir, n.id), "--raft-addr", n.raft, "--agent-addr", n.agent,
		"--status-addr", n.status, "--admin-addr", n.admin, "--bootstrap-token-file", c.tokenFile,
		"--ca", filepath.Join(c.pki, "ca.crt"),
		"--cert", filepath.Join(c.pki, n.id+".crt"), "--key", filepath.Join(c.pki, n.id+".key")}
}

// adminArgs prefixes args with `admin` and the flags that reach
// coordinator i's admin API with the bootstrap token.
func (c *cluster) adminArgs(i int, args ...string) []string {
	return append([]string{"admin", "--server", "https://" + c.nodes[i].admin, "--ca", filepath.Join(c.pki, "ca.crt"),
		"--token-file", c.tokenFile}, args...)
}

// startCoordinator starts (or restarts, with the same data dir and flags)
// coordinator i.
func (c *cluster) startCoordinator(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if n.proc != nil && n.proc.running() {
		c.t.Fatalf("%s is already running", n.id)
	}
	n.starts++
	name := n.id
	if n.starts > 1 {
		name = fmt.Sprintf("%s (start %d)", n.id, n.starts)
	}
	n.proc = start(c.t, name, c.bin, n.args...)
}

// startAll starts every coordinator, then every agent.
func (c *cluster) startAll() {
	c.t.Helper()
	for i := range c.nodes {
		c.startCoordinator(i)
	}
	for _, s := range c.sites {
		a := &siteAgent{site: s.Name, dataDir: filepath.Join(c.dir, "agent-"+s.Name)}
		args := []string{"agent", "--data-dir", a.dataDir,
			"--fhir-dir", filepath.Join(c.dir, "data", s.Name), "--ca", filepath.Join(c.pki, "ca.crt"),
			"--cert", filepath.Join(c.pki, s.Name+".crt"), "--key", filepath.Join(c.pki, s.Name+".key")}
		for _, n := range c.nodes {
			args = append(args, "--coordinator", n.agent)
		}
		a.proc = start(c.t, "agent-"+s.Name, c.bin, args...)
		c.agents = append(c.agents, a)
	}
}

// kill SIGKILLs coordinator i.
func (c *cluster) kill(i int) {
	c.t.Helper()
	c.nodes[i].proc.kill(c.t)
}

// live are the indexes of the coordinators whose process runs.
func (c *cluster) live() []int {
	var out []int
	for i, n := range c.nodes {
		if n.proc != nil && n.proc.running() {
			out = append(out, i)
		}
	}
	return out
}

// index returns the index of the coordinator with Raft id id, or -1.
func (c *cluster) index(id string) int {
	for i, n := range c.nodes {
		if n.id == id {
			return i
		}
	}
	return -1
}

// status reads coordinator i's own view (a stale read): it answers
// whether or not the node leads, or knows a leader.
func (c *cluster) status(i int) (coordinator.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return fetchStatus(ctx, c.nodes[i].status, true)
}

// waitStatus polls the live coordinators until cond holds for one's
// status, and returns that node and status.
func (c *cluster) waitStatus(timeout time.Duration, what string, cond func(coordinator.Status) bool) (int, coordinator.Status) {
	c.t.Helper()
	var (
		node int
		got  coordinator.Status
	)
	waitFor(c.t, timeout, what, func() (bool, string) {
		var last []string
		for _, i := range c.live() {
			st, err := c.status(i)
			if err != nil {
				last = append(last, fmt.Sprintf("%s: %v", c.nodes[i].id, err))
				continue
			}
			if cond(st) {
				node, got = i, st
				return true, ""
			}
			last = append(last, summarize(st))
		}
		return false, strings.Join(last, "; ")
	})
	return node, got
}

// waitNode polls coordinator i until cond holds for its status, and
// returns that status.
func (c *cluster) waitNode(i int, timeout time.Duration, what string, cond func(coordinator.Status) bool) coordinator.Status {
	c.t.Helper()
	var got coordinator.Status
	waitFor(c.t, timeout, what+" on "+c.nodes[i].id, func() (bool, string) {
		st, err := c.status(i)
		if err != nil {
			return false, err.Error()
		}
		got = st
		return cond(st), summarize(st)
	})
	return got
}

// waitDoneEverywhere waits until every live coordinator reports the job
// finished, checks that they agree on its history, and returns one status.
func (c *cluster) waitDoneEverywhere(timeout time.Duration, id string) coordinator.JobStatus {
	c.t.Helper()
	var (
		first   coordinator.JobStatus
		firstID string
	)
	deadline := time.Now().Add(timeout)
	for k, i := range c.live() {
		st := c.waitNode(i, time.Until(deadline), fmt.Sprintf("job %s to finish", id), func(st coordinator.Status) bool {
			j, ok := job(st, id)
			return ok && j.State != coordinator.JobRunning
		})
		js, _ := job(st, id)
		if k == 0 {
			first, firstID = js, c.nodes[i].id
			continue
		}
		if !slices.EqualFunc(first.History, js.History, sameRound) {
			c.t.Errorf("%s and %s disagree on the history of job %s:\n%+v\n%+v", firstID, c.nodes[i].id, id, first.History, js.History)
		}
	}
	return first
}

// sameRound compares two round summaries on what every node must agree on.
func sameRound(a, b coordinator.RoundSummary) bool {
	return a.Round == b.Round && a.Attempt == b.Attempt && a.State == b.State && a.Model == b.Model && slices.Equal(a.Contributors, b.Contributors)
}

// leader waits until a live coordinator says it leads and every other live
// coordinator that knows a leader names it, and returns its index.
func (c *cluster) leader(timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	waitFor(c.t, timeout, "an agreed leader", func() (bool, string) {
		ids := map[string]int{}
		var last []string
		self := ""
		for _, i := range c.live() {
			st, err := c.status(i)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", c.nodes[i].id, err)
			}
			last = append(last, summarize(st))
			if st.IsLeader {
				self = st.Node
			}
			if st.Leader != "" {
				ids[st.Leader]++
			}
		}
		if self == "" || len(ids) != 1 || ids[self] == 0 {
			return false, strings.Join(last, "; ")
		}
		leader = c.index(self)
		return true, ""
	})
	return leader
}

// status reads the status file the agent rewrites after each round and
// acknowledged update. It is the zero Status until the agent first wrote it.
func (a *siteAgent) status(t *testing.T) agent.Status {
	t.Helper()
	st, err := agent.ReadStatus(a.dataDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return agent.Status{}
		}
		t.Fatalf("agent %s status: %v", a.site, err)
	}
	return *st
}

// job returns the named job's status, or false.
func job(st coordinator.Status, id string) (coordinator.JobStatus, bool) {
	for _, j := range st.Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return coordinator.JobStatus{}, false
}

// committed is the number of rounds the job has committed in st (0 when
// the node does not know the job yet).
func committed(st coordinator.Status, id string) uint64 {
	j, _ := job(st, id)
	return j.CommittedRounds
}

// summarize is a one-line view of a status for failure messages.
func summarize(st coordinator.Status) string {
	var jobs []string
	for _, j := range st.Jobs {
		jobs = append(jobs, fmt.Sprintf("%s %s %d/%d", j.ID, j.State, j.CommittedRounds, j.Rounds))
	}
	return fmt.Sprintf("%s (leader %q): [%s]", st.Node, st.Leader, strings.Join(jobs, ", "))
}

// checkHistory checks that the job is done with rounds 1..rounds each
// committed exactly once, every one aggregated from every site.
func checkHistory(t *testing.T, js coordinator.JobStatus, rounds int, sites []string) {
	t.Helper()
	if js.State != coordinator.JobDone || js.CommittedRounds != uint64(rounds) {
		t.Errorf("job %s ended %s with %d of %d rounds (%s)", js.ID, js.State, js.CommittedRounds, rounds, js.FailReason)
	}
	commits := map[uint64]int{}
	for _, r := range js.History {
		if r.Kind == coordinator.KindStats {
			continue
		}
		if r.State == coordinator.RoundCommitted {
			commits[r.Round]++
			if !sameSet(r.Contributors, sites) {
				t.Errorf("round %d aggregated %v, want %v", r.Round, r.Contributors, sites)
			}
		}
	}
	for r := uint64(1); r <= uint64(rounds); r++ {
		if commits[r] != 1 {
			t.Errorf("round %d was committed %d times, want once; history: %+v", r, commits[r], js.History)
		}
	}
	if len(commits) != rounds {
		t.Errorf("%d distinct rounds committed, want %d; history: %+v", len(commits), rounds, js.History)
	}
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// siteNames are the ids of the cluster's sites.
func (c *cluster) siteNames() []string {
	var out []string
	for _, s := range c.sites {
		out = append(out, s.Name)
	}
	return out
}
