package dockertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
)

// The federation's shape and the image's fixed facts.
const (
	// haRounds is the job's length. Rounds go on between the faults, so
	// the job must be long enough to still run at the last fault; the
	// faults are usually over by round 10.
	haRounds = 20
	// haAgents is the number of sites, each with its own agent container.
	haAgents = 3

	raftPort   = 7400
	agentPort  = 7401
	statusPort = 7402
	// imageUser is the image's unprivileged user and group (deploy/Dockerfile).
	imageUser = 65532
	// runLabel marks every container and network the test creates; its
	// value is the run's random suffix.
	runLabel = "cohort.dockertest"
)

// TestDockerCoordinatorHA runs the Cohort image as three coordinators and
// three site agents on a bridge network of their own, and injects faults
// with the docker CLI while one job runs:
//
//  1. `docker kill` of the leader while a round is open: the two others
//     elect a leader and the job goes on;
//  2. `docker start` of the killed container: it catches up;
//  3. `docker network disconnect` of the new leader while a round is
//     open: the two others elect a leader and the job goes on; `docker
//     network connect` puts it back and it catches up;
//  4. `docker network disconnect` of one agent for a few seconds: no round
//     can commit without it (every round needs every site); once it is
//     connected again its updates are acknowledged and rounds commit.
//
// At the end the job must be done on all three coordinators, with the same
// history, every round committed exactly once and from every site.
func TestDockerCoordinatorHA(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Cohort image and runs six containers")
	}
	requireDocker(t)
	// Stop well before `go test -timeout` would, so that the cleanups run.
	budget := 12 * time.Minute
	if d, ok := t.Deadline(); ok {
		budget = min(budget, time.Until(d)-time.Minute)
	}
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()

	began := time.Now()
	spec := coordinator.DefaultJobSpec()
	spec.ID, spec.Rounds, spec.MinSites = "docker-ha", haRounds, haAgents
	// Longer than any stall the faults cause (agents give up on a silent
	// coordinator after about 10 s), so that no round fails on its
	// deadline. A failed attempt is logged; checkHistory still needs
	// every round committed once.
	spec.RoundTimeout = coordinator.Duration(2 * time.Minute)
	// Rounds of about half a second on two cores, as in the fault tests of
	// cmd/cohort, so that the test can act while a round is open.
	spec.Train.LocalEpochs = 200
	f := newFederation(ctx, t, buildImage(ctx, t), spec)
	t.Logf("image built and containers created in %v", since(began))

	for _, n := range f.nodes {
		f.start(n)
	}
	for _, a := range f.agents {
		f.start(a)
	}
	leader := f.leader(60 * time.Second)
	t.Logf("%s leads", leader.id)

	// 1. Kill the leader while a round is open.
	_, st := f.waitStatus(90*time.Second, "round 2 to commit and the next one to open", func(st coordinator.Status) bool {
		return st.IsLeader && f.committed(st) >= 2 && f.openRound(st)
	})
	f.mustHaveRounds(st, "the kill")
	first := f.node(st.Node)
	f.kill(first)
	killed := time.Now()
	t.Logf("killed leader %s while round %d was open", first.id, f.committed(st)+1)
	second := f.leader(30 * time.Second)
	st = f.waitNode(second, 10*time.Second, "the new leader's view", func(coordinator.Status) bool { return true })
	t.Logf("%s leads %v after the kill, with %d rounds committed", second.id, since(killed), f.committed(st))
	f.waitProgress(st, 2*time.Minute, "after the kill")
	t.Logf("a round committed under %s %v after the kill", second.id, since(killed))

	// 2. Start the killed container again; it must catch up.
	f.start(first)
	f.waitCaughtUp(first, 60*time.Second)
	t.Logf("%s restarted and caught up %v after the kill", first.id, since(killed))

	// 3. Cut the leader off the network while a round is open.
	_, st = f.waitStatus(60*time.Second, "a round to be open", func(st coordinator.Status) bool {
		return st.IsLeader && f.openRound(st)
	})
	f.mustHaveRounds(st, "the disconnect")
	cut := f.node(st.Node)
	f.disconnect(cut)
	disconnected := time.Now()
	t.Logf("disconnected leader %s while round %d was open", cut.id, f.committed(st)+1)
	third := f.leader(30 * time.Second)
	st = f.waitNode(third, 10*time.Second, "the new leader's view", func(coordinator.Status) bool { return true })
	t.Logf("%s leads %v after the disconnect", third.id, since(disconnected))
	f.waitProgress(st, 2*time.Minute, "while "+cut.id+" is disconnected")
	t.Logf("a round committed under %s %v after the disconnect", third.id, since(disconnected))
	f.connect(cut)
	f.waitCaughtUp(cut, 60*time.Second)
	t.Logf("%s reconnected and caught up %v after the disconnect", cut.id, since(disconnected))

	// 4. Cut one agent off the network for a few seconds.
	site := f.agents[len(f.agents)-1]
	_, st = f.waitStatus(30*time.Second, "the leader's view", func(st coordinator.Status) bool { return st.IsLeader })
	f.mustHaveRounds(st, "the agent's disconnect")
	f.disconnect(site)
	// Read the count once the site is cut off. The round open then may
	// already hold the site's update; no later one can commit without it.
	var at uint64
	for _, n := range f.up(f.nodes) {
		st := f.waitNode(n, 10*time.Second, "a status", func(coordinator.Status) bool { return true })
		at = max(at, f.committed(st))
	}
	t.Logf("disconnected agent %s with %d rounds committed", site.id, at)
	f.holdsFor(5*time.Second, fmt.Sprintf("no round after %d while %s is disconnected", at+1, site.id), func() (bool, string) {
		for _, n := range f.up(f.nodes) {
			if st, err := f.status(n); err == nil && f.committed(st) > at+1 {
				return false, summarize(st)
			}
		}
		return true, ""
	})
	f.connect(site)
	reconnected := time.Now()
	acked := f.agentStatus(site).UpdatesAcked
	f.waitFor(2*time.Minute, fmt.Sprintf("agent %s to have an update acknowledged and round %d to commit", site.id, at+3), func() (bool, string) {
		s := f.agentStatus(site)
		_, st := f.leaderStatus()
		detail := fmt.Sprintf("%s: %d updates acknowledged (%d at reconnect); %s", site.id, s.UpdatesAcked, acked, summarize(st))
		return s.UpdatesAcked > acked && f.committed(st) >= at+3, detail
	})
	t.Logf("agent %s reconnected and contributed again within %v", site.id, since(reconnected))

	// The end: every coordinator has the whole job, and they agree.
	js := f.waitDoneEverywhere(3 * time.Minute)
	checkHistory(t, js, haRounds, f.sites)
	for _, r := range js.History {
		if r.State != coordinator.RoundCommitted {
			t.Logf("round %d attempt %d %s: %s", r.Round, r.Attempt, r.State, r.FailReason)
		}
	}
	for _, a := range f.agents {
		s := f.agentStatus(a)
		t.Logf("agent %s: %d rounds trained, %d updates acked, %d resent, %d reconnects", a.id, s.RoundsTrained, s.UpdatesAcked, s.UpdatesResent, s.Reconnects)
	}
	for _, n := range append(slices.Clone(f.nodes), f.agents...) {
		if !f.isRunning(n) {
			t.Errorf("container %s is not running", n.container)
		}
		if logs := Logs(ctx, n.container, 100000); strings.Contains(logs, "panic:") {
			t.Errorf("%s panicked", n.container)
		}
	}
	t.Logf("done in %v", since(began))
}

// requireDocker skips the test when no Docker daemon answers, or fails it
// when COHORT_REQUIRE_DOCKER=1 (set by scripts/test.sh in CI).
func requireDocker(t *testing.T) {
	t.Helper()
	required := os.Getenv("COHORT_REQUIRE_DOCKER") == "1"
	unusable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if required {
			t.Fatalf("%s; COHORT_REQUIRE_DOCKER=1 requires a working Docker", msg)
		}
		t.Skipf("%s; skipping (set COHORT_REQUIRE_DOCKER=1 to fail instead)", msg)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		unusable("no docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	platform, err := Docker(ctx, "info", "--format", "{{.OSType}}/{{.Architecture}}")
	if err != nil {
		unusable("docker info failed: %v", err)
	}
	// deploy/build-image.sh builds a linux/amd64 image.
	if platform != "linux/x86_64" && platform != "linux/amd64" {
		unusable("the Docker daemon runs %s; the image is linux/amd64 only", platform)
	}
}

// repoRoot is the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "build-image.sh")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// randomSuffix makes the run's names unique.
func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// buildImage builds the image with deploy/build-image.sh under a tag of
// its own, removed at cleanup. The build date is fixed, so that a build of
// unchanged code reuses the builder's cached layers instead of leaving a
// new untagged intermediate image each run. Only the image for every role
// is built (ROLE_IMAGES=0): the test gives each container its command.
func buildImage(ctx context.Context, t *testing.T) string {
	t.Helper()
	tag := "cohort:dockertest-" + randomSuffix()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(t), "deploy", "build-image.sh"), tag)
	cmd.Env = append(os.Environ(), "VERSION=dockertest", "SOURCE_DATE_EPOCH=0", "ROLE_IMAGES=0")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := Docker(cctx, "image", "inspect", "--format", "{{.Id}}", tag); err != nil {
			return // never built
		}
		if _, err := Docker(cctx, "image", "rm", tag); err != nil {
			t.Errorf("remove image tag: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("deploy/build-image.sh %s: %v\n%s", tag, err, out)
	}
	return tag
}

// buildCLI compiles the cohort binary for this host, to make the PKI with
// `cohort ca`. It is built like the image's binary (-trimpath, no cgo), so
// that it shares the Go build cache with deploy/build-image.sh.
func buildCLI(ctx context.Context, t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "cohort")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/cohort")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// federation is the test's containers and network. Every method runs on
// the test's goroutine.
type federation struct {
	t       *testing.T
	ctx     context.Context
	run     string
	image   string
	network string
	subnet  netip.Prefix
	job     string
	sites   []string
	nodes   []*member // coordinators
	agents  []*member
}

// member is one container: a coordinator or a site agent.
type member struct {
	id        string // Raft id (c1, c2, c3) or site id
	container string // unique per run
	alias     string // the coordinator's name on the network, in its certificate
	ip        netip.Addr
	running   bool
	connected bool
	// statusAddr is the coordinator's status port as published on the
	// host's loopback. Docker picks a new host port at each start and
	// reconnect, so it is looked up again after those.
	statusAddr string
}

// newFederation makes the PKI, the site data and the network, and creates
// (without starting) three coordinator containers and one agent container
// per site, with their files copied in. Everything is removed at cleanup.
func newFederation(ctx context.Context, t *testing.T, image string, spec coordinator.JobSpec) *federation {
	t.Helper()
	run := randomSuffix()
	f := &federation{t: t, ctx: ctx, run: run, image: image, network: "cohort-dt-" + run, job: spec.ID}
	var created []string
	networkMade := false
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			for _, c := range created {
				t.Logf("--- last 100 log lines of %s ---\n%s", c, Logs(cctx, c, 100))
			}
		}
		if len(created) > 0 {
			if _, err := Docker(cctx, append([]string{"rm", "-f", "-v"}, created...)...); err != nil {
				t.Errorf("remove containers: %v", err)
			}
		}
		if networkMade {
			if _, err := Docker(cctx, "network", "rm", f.network); err != nil {
				t.Errorf("remove network: %v", err)
			}
		}
	})

	dir := t.TempDir()
	bin := buildCLI(ctx, t, dir)
	cohort := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("cohort %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var err error
	if f.subnet, err = CreateNetwork(ctx, f.network, runLabel+"="+run); err != nil {
		t.Fatal(err)
	}
	networkMade = true

	pki := filepath.Join(dir, "pki")
	cohort("ca", "init", "--dir", pki)
	for i, s := range synth.DefaultSites(haAgents, 7) {
		cohort("ca", "issue", "--dir", pki, "--role", "site", "--id", s.Name)
		if _, err := synth.WriteSite(filepath.Join(dir, "data", s.Name), s, synth.DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		f.sites = append(f.sites, s.Name)
		f.agents = append(f.agents, &member{id: s.Name, container: f.network + "-" + s.Name, ip: HostAddr(f.subnet, 21+i)})
	}
	var peers []map[string]string
	var agentAddrs []string
	for i := range 3 {
		n := &member{id: fmt.Sprintf("c%d", i+1), ip: HostAddr(f.subnet, 11+i)}
		n.container, n.alias = f.network+"-"+n.id, n.id
		f.nodes = append(f.nodes, n)
		// Agents reach a coordinator by its alias; Raft peers dial its
		// fixed IP. The certificate names both.
		cohort("ca", "issue", "--dir", pki, "--role", "coordinator", "--id", n.id, "--host", n.alias, "--host", n.ip.String())
		peers = append(peers, map[string]string{"id": n.id, "raft_addr": netip.AddrPortFrom(n.ip, raftPort).String()})
		agentAddrs = append(agentAddrs, fmt.Sprintf("%s:%d", n.alias, agentPort))
	}

	// The files go in with `docker cp` from a tar stream whose entries
	// belong to the image's user (65532), so the containers run as that
	// user, as in production, and need no bind mount: nothing depends on
	// the owner of the test's files on the host, nor on the daemon
	// sharing the host's file system.
	tlsFiles := func(a *Archive, id string) map[string]string {
		a.Dir("etc/cohort", 0o700)
		a.CopyFile("etc/cohort/ca.crt", filepath.Join(pki, "ca.crt"), 0o644)
		a.CopyFile("etc/cohort/"+id+".crt", filepath.Join(pki, id+".crt"), 0o644)
		a.CopyFile("etc/cohort/"+id+".key", filepath.Join(pki, id+".key"), 0o600)
		return map[string]string{"ca": "/etc/cohort/ca.crt", "cert": "/etc/cohort/" + id + ".crt", "key": "/etc/cohort/" + id + ".key"}
	}
	for _, n := range f.nodes {
		a := NewArchive(imageUser, imageUser)
		cfg := map[string]any{
			"id":       n.id,
			"data_dir": "/var/lib/cohort",
			// raft_addr must be a concrete IP (it is also what peers
			// dial): the container's fixed address.
			"raft_addr":       netip.AddrPortFrom(n.ip, raftPort).String(),
			"agent_addr":      fmt.Sprintf("0.0.0.0:%d", agentPort),
			"agent_advertise": fmt.Sprintf("%s:%d", n.alias, agentPort),
			// On all of the container's interfaces, but published only
			// on the host's loopback.
			"status_addr": fmt.Sprintf("0.0.0.0:%d", statusPort),
			"tls":         tlsFiles(a, n.id),
			"bootstrap":   true,
			"peers":       peers,
			"sites":       f.sites,
			"jobs":        []coordinator.JobSpec{spec},
			"log_level":   "info",
			// Fast elections, as in cmd/cohort's multi-process tests.
			"heartbeat_timeout": "300ms", "election_timeout": "300ms", "leader_lease_timeout": "200ms",
		}
		a.File("etc/cohort/coordinator.json", mustJSON(t, cfg), 0o600)
		f.create(n, a, &created, []string{"--network-alias", n.alias, "--publish", fmt.Sprintf("127.0.0.1::%d", statusPort)},
			"coordinator", "--config", "/etc/cohort/coordinator.json")
	}
	for _, s := range f.agents {
		a := NewArchive(imageUser, imageUser)
		cfg := map[string]any{
			"data_dir":     "/var/lib/cohort",
			"coordinators": agentAddrs,
			"tls":          tlsFiles(a, s.id),
			"fhir_dir":     "/fhir",
			"log_level":    "info",
			// A shorter long poll than the default 10 s, so that an agent
			// waiting on a coordinator that was cut off gives up sooner.
			"poll_wait": "5s", "backoff_max": "2s",
		}
		a.File("etc/cohort/agent.json", mustJSON(t, cfg), 0o600)
		a.Tree("fhir", filepath.Join(dir, "data", s.id))
		f.create(s, a, &created, nil, "agent", "--config", "/etc/cohort/agent.json")
	}
	return f
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// create creates m's container on the network at its fixed IP, and copies
// the archive's files into it. The fixed IP survives `docker start` and is
// given again at `docker network connect`, so the Raft listener, bound to
// it, keeps working.
func (f *federation) create(m *member, files *Archive, created *[]string, opts []string, args ...string) {
	f.t.Helper()
	tarball, err := files.Bytes()
	if err != nil {
		f.t.Fatal(err)
	}
	create := []string{"create", "--name", m.container, "--label", runLabel + "=" + f.run,
		"--network", f.network, "--ip", m.ip.String()}
	create = append(append(append(create, opts...), f.image), args...)
	if _, err := Docker(f.ctx, create...); err != nil {
		f.t.Fatal(err)
	}
	*created = append(*created, m.container)
	if _, err := DockerInput(f.ctx, bytes.NewReader(tarball), "cp", "-", m.container+":/"); err != nil {
		f.t.Fatal(err)
	}
	m.connected = true
}

func (f *federation) docker(args ...string) {
	f.t.Helper()
	if _, err := Docker(f.ctx, args...); err != nil {
		f.t.Fatal(err)
	}
}

// start starts (or restarts) m's container.
func (f *federation) start(m *member) {
	f.t.Helper()
	f.docker("start", m.container)
	m.running, m.statusAddr = true, ""
}

// kill sends SIGKILL to m's container, as a crash would.
func (f *federation) kill(m *member) {
	f.t.Helper()
	f.docker("kill", m.container)
	m.running = false
}

// disconnect takes m's container off the network.
func (f *federation) disconnect(m *member) {
	f.t.Helper()
	f.docker("network", "disconnect", f.network, m.container)
	m.connected = false
}

// connect puts m's container back on the network with its IP and alias.
func (f *federation) connect(m *member) {
	f.t.Helper()
	args := []string{"network", "connect", "--ip", m.ip.String()}
	if m.alias != "" {
		args = append(args, "--alias", m.alias)
	}
	f.docker(append(args, f.network, m.container)...)
	m.connected, m.statusAddr = true, ""
}

// isRunning asks Docker whether m's container runs.
func (f *federation) isRunning(m *member) bool {
	out, err := Docker(f.ctx, "inspect", "--format", "{{.State.Running}}", m.container)
	return err == nil && out == "true"
}

// up are the members whose container runs and is on the network.
func (f *federation) up(ms []*member) []*member {
	var out []*member
	for _, m := range ms {
		if m.running && m.connected {
			out = append(out, m)
		}
	}
	return out
}

// node returns the coordinator with Raft id id.
func (f *federation) node(id string) *member {
	f.t.Helper()
	for _, n := range f.nodes {
		if n.id == id {
			return n
		}
	}
	f.t.Fatalf("no coordinator %q", id)
	return nil
}

// statusClient bounds every status request.
var statusClient = &http.Client{Timeout: 2 * time.Second}

// status reads n's own view (a stale read, answered whether or not n
// leads) through its status port published on the host's loopback.
func (f *federation) status(n *member) (coordinator.Status, error) {
	if n.statusAddr == "" {
		out, err := Docker(f.ctx, "port", n.container, fmt.Sprintf("%d/tcp", statusPort))
		if err != nil {
			return coordinator.Status{}, err
		}
		n.statusAddr, _, _ = strings.Cut(out, "\n")
	}
	var st coordinator.Status
	req, err := http.NewRequestWithContext(f.ctx, http.MethodGet, "http://"+n.statusAddr+"/v1/status?stale=true", nil)
	if err != nil {
		return st, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status of %s: %s", n.id, resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// agentStatus reads the status file the agent rewrites after each round,
// with `cohort agent status` run in its container. It is the zero Status
// until the agent first wrote it.
func (f *federation) agentStatus(m *member) agent.Status {
	f.t.Helper()
	var st agent.Status
	out, err := Docker(f.ctx, "exec", m.container, "/cohort", "agent", "status", "--data-dir", "/var/lib/cohort", "--json")
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			return st
		}
		f.t.Fatalf("agent %s: %v", m.id, err)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		f.t.Fatalf("agent %s status: %v\n%s", m.id, err, out)
	}
	return st
}

// waitFor polls cond every 100 ms until it reports true, and fails the
// test with what and cond's last detail if timeout passes first.
func (f *federation) waitFor(timeout time.Duration, what string, cond func() (ok bool, detail string)) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, detail)
		}
		select {
		case <-f.ctx.Done():
			f.t.Fatalf("waiting for %s: %v; last: %s", what, f.ctx.Err(), detail)
		case <-tick.C:
		}
	}
}

// holdsFor polls cond every 100 ms for d and fails the test the first
// time it does not hold.
func (f *federation) holdsFor(d time.Duration, what string, cond func() (ok bool, detail string)) {
	f.t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if ok, detail := cond(); !ok {
			f.t.Fatalf("%s stopped holding: %s", what, detail)
		}
		<-tick.C
	}
}

// waitStatus polls the coordinators that are up until cond holds for
// one's status, and returns that node and status.
func (f *federation) waitStatus(timeout time.Duration, what string, cond func(coordinator.Status) bool) (*member, coordinator.Status) {
	f.t.Helper()
	var (
		node *member
		got  coordinator.Status
	)
	f.waitFor(timeout, what, func() (bool, string) {
		var last []string
		for _, n := range f.up(f.nodes) {
			st, err := f.status(n)
			if err != nil {
				n.statusAddr = "" // look the port up again
				last = append(last, fmt.Sprintf("%s: %v", n.id, err))
				continue
			}
			if cond(st) {
				node, got = n, st
				return true, ""
			}
			last = append(last, summarize(st))
		}
		return false, strings.Join(last, "; ")
	})
	return node, got
}

// waitNode polls coordinator n until cond holds for its status.
func (f *federation) waitNode(n *member, timeout time.Duration, what string, cond func(coordinator.Status) bool) coordinator.Status {
	f.t.Helper()
	var got coordinator.Status
	f.waitFor(timeout, what+" on "+n.id, func() (bool, string) {
		st, err := f.status(n)
		if err != nil {
			n.statusAddr = ""
			return false, err.Error()
		}
		got = st
		return cond(st), summarize(st)
	})
	return got
}

// leader waits until a coordinator that is up says it leads and every
// other one that is up and knows a leader names it, and returns it.
func (f *federation) leader(timeout time.Duration) *member {
	f.t.Helper()
	var leader *member
	f.waitFor(timeout, "an agreed leader", func() (bool, string) {
		names := map[string]int{}
		var last []string
		self := ""
		for _, n := range f.up(f.nodes) {
			st, err := f.status(n)
			if err != nil {
				n.statusAddr = ""
				return false, fmt.Sprintf("%s: %v", n.id, err)
			}
			last = append(last, summarize(st))
			if st.IsLeader {
				self = st.Node
			}
			if st.Leader != "" {
				names[st.Leader]++
			}
		}
		if self == "" || len(names) != 1 || names[self] == 0 {
			return false, strings.Join(last, "; ")
		}
		leader = f.node(self)
		return true, ""
	})
	return leader
}

// leaderStatus is the status of a coordinator that is up and says it
// leads, or of the last one polled (the zero Status if none answered).
func (f *federation) leaderStatus() (*member, coordinator.Status) {
	var (
		node *member
		got  coordinator.Status
	)
	for _, n := range f.up(f.nodes) {
		st, err := f.status(n)
		if err != nil {
			n.statusAddr = ""
			continue
		}
		node, got = n, st
		if st.IsLeader {
			break
		}
	}
	return node, got
}

// waitProgress waits until a round commits after the status from, which
// was read from a leader elected after the fault: that round is the new
// leader's work.
func (f *federation) waitProgress(from coordinator.Status, timeout time.Duration, when string) {
	f.t.Helper()
	base := f.committed(from)
	f.waitStatus(timeout, fmt.Sprintf("round %d to commit %s", base+1, when), func(st coordinator.Status) bool {
		return f.committed(st) > base
	})
}

// waitCaughtUp waits until n follows a leader and has applied at least
// the rounds the leader had committed when the wait began.
func (f *federation) waitCaughtUp(n *member, timeout time.Duration) {
	f.t.Helper()
	_, st := f.waitStatus(timeout, "the leader's view", func(st coordinator.Status) bool { return st.IsLeader })
	target := f.committed(st)
	f.waitNode(n, timeout, fmt.Sprintf("a known leader and %d rounds committed", target), func(st coordinator.Status) bool {
		return st.Leader != "" && f.committed(st) >= target
	})
}

// mustHaveRounds stops the test if the job is too close to its end for the
// next fault to happen in the middle of it.
func (f *federation) mustHaveRounds(st coordinator.Status, before string) {
	f.t.Helper()
	if left := haRounds - int(f.committed(st)); left < 4 {
		f.t.Fatalf("only %d rounds left before %s: raise haRounds; %s", left, before, summarize(st))
	}
}

// waitDoneEverywhere waits until every coordinator reports the job
// finished, checks that they agree on its history, and returns it.
func (f *federation) waitDoneEverywhere(timeout time.Duration) coordinator.JobStatus {
	f.t.Helper()
	var first coordinator.JobStatus
	deadline := time.Now().Add(timeout)
	for i, n := range f.nodes {
		st := f.waitNode(n, time.Until(deadline), "the job to finish", func(st coordinator.Status) bool {
			j, _ := job(st, f.job)
			return j.State != coordinator.JobRunning && j.State != ""
		})
		js, _ := job(st, f.job)
		if i == 0 {
			first = js
			continue
		}
		if !slices.EqualFunc(first.History, js.History, sameRound) {
			f.t.Errorf("%s and %s disagree on the job's history:\n%+v\n%+v", f.nodes[0].id, n.id, first.History, js.History)
		}
	}
	return first
}

// committed is the number of rounds the job has committed in st.
func (f *federation) committed(st coordinator.Status) uint64 {
	j, _ := job(st, f.job)
	return j.CommittedRounds
}

// openRound reports whether st shows a training round of the job open.
func (f *federation) openRound(st coordinator.Status) bool {
	j, _ := job(st, f.job)
	for _, r := range j.History {
		if r.State == coordinator.RoundOpen && r.Kind != coordinator.KindStats {
			return true
		}
	}
	return false
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

// summarize is a one-line view of a status for failure messages.
func summarize(st coordinator.Status) string {
	var jobs []string
	for _, j := range st.Jobs {
		jobs = append(jobs, fmt.Sprintf("%s %s %d/%d", j.ID, j.State, j.CommittedRounds, j.Rounds))
	}
	return fmt.Sprintf("%s (leader %q): [%s]", st.Node, st.Leader, strings.Join(jobs, ", "))
}

// sameRound compares two round summaries on what every node must agree on.
func sameRound(a, b coordinator.RoundSummary) bool {
	return a.Round == b.Round && a.Attempt == b.Attempt && a.State == b.State && a.Model == b.Model &&
		slices.Equal(a.Contributors, b.Contributors)
}

// checkHistory checks that the job is done with rounds 1..rounds each
// committed exactly once, every one aggregated from every site.
func checkHistory(t *testing.T, js coordinator.JobStatus, rounds int, sites []string) {
	t.Helper()
	var problems []string
	if js.State != coordinator.JobDone || js.CommittedRounds != uint64(rounds) {
		problems = append(problems, fmt.Sprintf("job %s ended %s with %d of %d rounds (%s)", js.ID, js.State, js.CommittedRounds, rounds, js.FailReason))
	}
	commits := map[uint64]int{}
	for _, r := range js.History {
		if r.Kind == coordinator.KindStats || r.State != coordinator.RoundCommitted {
			continue
		}
		commits[r.Round]++
		if !slices.Equal(slices.Sorted(slices.Values(r.Contributors)), slices.Sorted(slices.Values(sites))) {
			problems = append(problems, fmt.Sprintf("round %d aggregated %v, want %v", r.Round, r.Contributors, sites))
		}
	}
	for r := uint64(1); r <= uint64(rounds); r++ {
		if commits[r] != 1 {
			problems = append(problems, fmt.Sprintf("round %d was committed %d times, want once", r, commits[r]))
		}
	}
	if len(commits) != rounds {
		problems = append(problems, fmt.Sprintf("%d distinct rounds committed, want %d", len(commits), rounds))
	}
	if len(problems) > 0 {
		t.Errorf("%s\nhistory: %+v", strings.Join(problems, "\n"), js.History)
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
