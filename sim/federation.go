package sim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/coordinator/raftnet"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/sim/relay"
)

// federationConfig describes the processes of a testbed.
type federationConfig struct {
	// Dir holds pki/, coordinators/<id>/ and agents/<site>/.
	Dir string
	// Coordinators is the cluster size.
	Coordinators int
	// Sites are the site ids; site s ingests DataDir/<s> when DataDir is set.
	Sites   []string
	DataDir string
	// Enrolled are sites the coordinators know but whose agents are not
	// started (tests start them later with addAgent).
	Enrolled []string
	// Jobs are created by the leader once elected.
	Jobs      []coordinator.JobSpec
	Logger    *slog.Logger
	EgressTap func(site string, b []byte)
	// Seed derives each site's pseudonym key, so that a run is
	// reproducible (pseudonyms decide the local validation split).
	Seed uint64
	// Adversaries rewrite the updates of Byzantine sites, by site id.
	Adversaries map[string]func(job string, round uint64, delta []float32)
	// AgentCommand, when set, runs each site's agent as a separate
	// process: the command (e.g. the cohort binary and "agent") with the
	// agent's flags appended. Adversaries, EgressTap and stragglers need
	// in-process agents.
	AgentCommand []string
	// Relays puts a lossy UDP relay (sim/relay) on every agent link: each
	// site reaches each coordinator through its own relay, whose loss,
	// latency and outages setLink changes while the federation runs.
	Relays bool
	// AgentEdit, if set, changes every in-process agent's config (also
	// of agents that rejoin).
	AgentEdit func(site string, c *agent.Config)
}

// federation is a running cluster and its agents, all in this process.
// start binds and runs everything; stop cancels and waits for every
// goroutine, then closes every component.
type federation struct {
	cfg   federationConfig
	log   *slog.Logger
	ctx   context.Context
	issue func(role, id string, hosts ...string) (pki.Files, error)
	// nodes[i] is coordinator i; restartNode replaces a killed one (tests
	// that restart nodes read them through node(i)).
	nodes []*coordinator.Node
	// nodeCfgs[i] is what node i was built from, with its bound addresses.
	nodeCfgs []coordinator.Config
	// nodeStop[i] stops node i alone (killNode); nodeDone[i] is closed
	// when its Run has returned.
	nodeStop []context.CancelFunc
	nodeDone []chan struct{}
	// errC receives the failures of components.
	errC chan error

	mu     sync.Mutex // guards the fields below and nodes' slots
	agents []*agent.Agent
	// running are the sites' live agents with their stop functions.
	running map[string]*runningAgent
	// killed[i] is set while node i is down.
	killed []bool
	// straggle is each slow site's wait before it sends an update.
	straggle map[string]time.Duration
	// relays are each site's relays, one per coordinator (Relays only).
	relays map[string][]*relay.Relay
	// links are each site's current link conditions (Relays only).
	links map[string]relay.Link
	// plan is the injected Raft-level faults, installed on every live node.
	plan faultPlan
	// retired are the incarnations of restarted nodes (for their counters).
	retired []*coordinator.Node
	// procs are the agent processes (AgentCommand).
	procs procAgents
	// trainSem lets as many in-process agents train at once as there are
	// cores (large testbeds only; nil otherwise).
	trainSem chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// startFederation issues certificates, binds every coordinator (so all
// addresses are known), bootstraps them with one configuration, runs them,
// then runs one agent per site.
func startFederation(ctx context.Context, cfg federationConfig) (f *federation, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pkiDir := filepath.Join(cfg.Dir, "pki")
	if err := pki.InitCA(pkiDir, "cohort-sim", time.Now()); err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		return nil, err
	}
	// A certificate is issued once per id: a site that rejoins presents
	// the one it had.
	var (
		issuedMu sync.Mutex
		issued   = map[string]pki.Files{}
	)
	issue := func(role, id string, hosts ...string) (pki.Files, error) {
		issuedMu.Lock()
		defer issuedMu.Unlock()
		if f, ok := issued[role+"/"+id]; ok {
			return f, nil
		}
		c, k, err := ca.IssueToFiles(pkiDir, pki.IssueRequest{Role: role, ID: id, Hosts: hosts}, time.Now())
		f := pki.Files{CA: filepath.Join(pkiDir, "ca.crt"), Cert: c, Key: k}
		if err == nil {
			issued[role+"/"+id] = f
		}
		return f, err
	}

	ctx, cancel := context.WithCancel(ctx)
	f = &federation{cfg: cfg, log: log, ctx: ctx, issue: issue, cancel: cancel,
		errC:     make(chan error, 2*cfg.Coordinators+len(cfg.Sites)+len(cfg.Enrolled)),
		running:  map[string]*runningAgent{},
		killed:   make([]bool, cfg.Coordinators),
		straggle: map[string]time.Duration{},
		relays:   map[string][]*relay.Relay{},
		links:    map[string]relay.Link{}}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()
	var peers []coordinator.Peer
	for i := range cfg.Coordinators {
		id := fmt.Sprintf("coord-%d", i+1)
		files, err := issue(pki.RoleCoordinator, id, "127.0.0.1", "localhost")
		if err != nil {
			return f, err
		}
		c := coordinator.DefaultConfig()
		c.ID = id
		c.DataDir = filepath.Join(cfg.Dir, "coordinators", id)
		c.RaftAddr = "127.0.0.1:0"
		c.AgentAddr = "127.0.0.1:0"
		c.TLS = files
		c.Sites = append(slices.Clone(cfg.Sites), cfg.Enrolled...)
		c.Jobs = cfg.Jobs
		// Loopback: fast elections and a short engine tick. Many agents
		// in one process can starve Raft's goroutines of CPU for longer
		// than that, so large testbeds get timeouts nearer the defaults.
		c.HeartbeatTimeout = coordinator.Duration(300 * time.Millisecond)
		c.ElectionTimeout = coordinator.Duration(300 * time.Millisecond)
		c.LeaderLeaseTimeout = coordinator.Duration(200 * time.Millisecond)
		if len(cfg.Sites) > 50 {
			c.HeartbeatTimeout = coordinator.Duration(5 * time.Second)
			c.ElectionTimeout = coordinator.Duration(5 * time.Second)
			c.LeaderLeaseTimeout = coordinator.Duration(2500 * time.Millisecond)
		}
		c.TickInterval = coordinator.Duration(50 * time.Millisecond)
		c.Logger = log.With("component", "coordinator")
		n, err := coordinator.New(c)
		if err != nil {
			return f, fmt.Errorf("coordinator %s: %w", id, err)
		}
		f.nodes = append(f.nodes, n)
		// A restart binds the same addresses again.
		c.RaftAddr, c.AgentAddr = n.RaftAddr(), n.AgentAddr()
		f.nodeCfgs = append(f.nodeCfgs, c)
		peers = append(peers, coordinator.Peer{ID: id, RaftAddr: n.RaftAddr()})
	}
	for _, n := range f.nodes {
		if err := n.Bootstrap(peers); err != nil {
			return f, err
		}
	}
	f.nodeStop = make([]context.CancelFunc, len(f.nodes))
	f.nodeDone = make([]chan struct{}, len(f.nodes))
	for i := range f.nodes {
		f.runNode(i)
	}
	if cfg.Relays {
		for _, s := range append(slices.Clone(cfg.Sites), cfg.Enrolled...) {
			if err := f.addRelays(s); err != nil {
				return f, err
			}
		}
	}
	// A large testbed starts its agents once the cluster has a leader, a
	// batch at a time: a thousand agents ingesting and handshaking at
	// once on two cores starve Raft's heartbeats, so that no leader is
	// ever elected, and time out each other's handshakes.
	const batch, pause = 20, 500 * time.Millisecond
	if len(cfg.Sites) > 50 {
		f.trainSem = make(chan struct{}, runtime.GOMAXPROCS(0))
		if err := f.waitJobs(ctx); err != nil {
			return f, err
		}
	}
	for i, s := range cfg.Sites {
		if i > 0 && i%batch == 0 && len(cfg.Sites) > 50 {
			select {
			case <-ctx.Done():
				return f, ctx.Err()
			case <-time.After(pause):
			}
		}
		if _, err := f.addAgent(s, nil); err != nil {
			return f, err
		}
	}
	return f, nil
}

// runNode runs node i until it is killed or the federation stops.
func (f *federation) runNode(i int) {
	n := f.node(i)
	nctx, stop := context.WithCancel(f.ctx)
	done := make(chan struct{})
	f.mu.Lock()
	f.nodeStop[i], f.nodeDone[i] = stop, done
	f.mu.Unlock()
	f.wg.Go(func() {
		defer close(done)
		if err := n.Run(nctx); err != nil {
			f.errC <- fmt.Errorf("coordinator %s: %w", n.ID(), err)
		}
	})
}

// node is coordinator i (the current incarnation after a restart).
func (f *federation) node(i int) *coordinator.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[i]
}

// indexOf is the index of node n (-1 if it is not one of the current
// incarnations).
func (f *federation) indexOf(n *coordinator.Node) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Index(f.nodes, n)
}

// live are the coordinators that are not killed.
func (f *federation) live() []*coordinator.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ns []*coordinator.Node
	for i, n := range f.nodes {
		if !f.killed[i] {
			ns = append(ns, n)
		}
	}
	return ns
}

// agentAddrs are the addresses site's agent dials: the coordinators' QUIC
// addresses, or its relays to them.
func (f *federation) agentAddrs(site string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var addrs []string
	if rs := f.relays[site]; len(rs) > 0 {
		for _, r := range rs {
			addrs = append(addrs, r.Addr().String())
		}
		return addrs
	}
	for _, c := range f.nodeCfgs {
		addrs = append(addrs, c.AgentAddr)
	}
	return addrs
}

// addRelays starts one relay from site to each coordinator.
func (f *federation) addRelays(site string) error {
	var rs []*relay.Relay
	for i, c := range f.nodeCfgs {
		rc := relay.DefaultConfig()
		rc.Listen, rc.Target = "127.0.0.1:0", c.AgentAddr
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%d", site, i)
		rc.Seed = f.cfg.Seed ^ h.Sum64()
		r, err := relay.New(rc)
		if err != nil {
			return fmt.Errorf("relay %s to %s: %w", site, c.ID, err)
		}
		rs = append(rs, r)
		f.wg.Go(func() {
			if err := r.Run(f.ctx); err != nil && f.ctx.Err() == nil {
				f.errC <- fmt.Errorf("relay %s to %s: %w", site, c.ID, err)
			}
		})
	}
	f.mu.Lock()
	f.relays[site] = rs
	f.mu.Unlock()
	return nil
}

// setLink sets the loss, latency and jitter of every relay of the given
// sites (every site when none is given), keeping whether each is down. It
// fails when the federation has no relays.
func (f *federation) setLink(sites []string, l relay.Link) error {
	return f.editLinks(sites, func(cur *relay.Link) {
		down := cur.Down
		*cur = l
		cur.Down = down
	})
}

// setLinkDown takes the links of the given sites down (every datagram
// dropped) or back up.
func (f *federation) setLinkDown(sites []string, down bool) error {
	return f.editLinks(sites, func(cur *relay.Link) { cur.Down = down })
}

func (f *federation) editLinks(sites []string, edit func(*relay.Link)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.relays) == 0 {
		return errors.New("this testbed has no relays on its agent links")
	}
	if len(sites) == 0 {
		sites = slices.Sorted(maps.Keys(f.relays))
	}
	for _, s := range sites {
		rs, ok := f.relays[s]
		if !ok {
			return fmt.Errorf("no site %q", s)
		}
		l := f.links[s]
		edit(&l)
		f.links[s] = l
		for _, r := range rs {
			if err := r.Set(l); err != nil {
				return err
			}
		}
	}
	return nil
}

// datagramsDropped is what every relay dropped, both ways: lost, during
// outages, or on a full queue.
func (f *federation) datagramsDropped() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n uint64
	for _, rs := range f.relays {
		for _, r := range rs {
			st := r.Stats()
			for _, d := range []relay.DirStats{st.ToTarget, st.ToClient} {
				n += d.DroppedLoss + d.DroppedDown + d.DroppedOverflow
			}
		}
	}
	return int64(n)
}

// setStraggle makes site wait d after training before it sends each
// update (0 ends it).
func (f *federation) setStraggle(site string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.straggle[site] = d
}

// faultPlan is what the injected coordinator faults do: cut the nodes of
// side off from the others, and delay every write to and from the slow
// node.
type faultPlan struct {
	side  map[string]bool
	slow  string
	delay time.Duration
	// down are crashed nodes, cut off from every peer until restarted.
	down map[string]bool
}

// injectLocked installs f.plan on every live node; f.mu is held.
func (f *federation) injectLocked() {
	p := f.plan
	for i, n := range f.nodes {
		if f.killed[i] {
			continue
		}
		if p.side == nil && p.slow == "" && len(p.down) == 0 {
			n.InjectFault(nil)
			continue
		}
		self := n.ID()
		n.InjectFault(func(peer string) raftnet.Fault {
			var ft raftnet.Fault
			if p.side != nil && peer != "" && p.side[peer] != p.side[self] || p.down[peer] || p.down[self] {
				ft.Drop = true
			}
			if p.slow != "" && peer != "" && (self == p.slow || peer == p.slow) {
				ft.Delay = p.delay
			}
			return ft
		})
	}
}

// partition cuts the Raft and blob traffic between the coordinators with
// the given ids and every other coordinator, in both directions (a slow
// node stays slow). Agents' links are not affected.
func (f *federation) partition(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plan.side = map[string]bool{}
	if len(ids) == 0 {
		f.plan.side = nil
	}
	for _, id := range ids {
		f.plan.side[id] = true
	}
	f.injectLocked()
}

// slowNode delays every write between coordinator id and its peers by d,
// both ways.
func (f *federation) slowNode(id string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plan.slow, f.plan.delay = id, d
	f.injectLocked()
}

// heal removes every injected coordinator fault.
func (f *federation) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.plan = faultPlan{}
	f.injectLocked()
}

// crash cuts node i off from its peers and then stops it without a
// leadership transfer. Cutting it first makes the crash instantaneous for
// the other coordinators: killNode alone leaves its Raft (and blob server)
// running while its agent server and engine wind down. The cut ends when
// the node restarts, or at heal.
func (f *federation) crash(i int) {
	f.mu.Lock()
	down := maps.Clone(f.plan.down)
	if down == nil {
		down = map[string]bool{}
	}
	down[f.nodes[i].ID()] = true
	f.plan.down = down
	f.injectLocked()
	f.mu.Unlock()
	f.killNode(i)
}

// runningAgent is a site's live agent.
type runningAgent struct {
	agent *agent.Agent
	stop  context.CancelFunc
	done  chan struct{}
}

// addAgent issues a certificate for site, creates its agent (edit may
// change the config) and runs it until the federation stops.
func (f *federation) addAgent(site string, edit func(*agent.Config)) (*agent.Agent, error) {
	if len(f.cfg.AgentCommand) > 0 {
		return nil, f.addProcAgent(site)
	}
	files, err := f.issue(pki.RoleSite, site)
	if err != nil {
		return nil, err
	}
	c := agent.DefaultConfig()
	c.DataDir = filepath.Join(f.cfg.Dir, "agents", site)
	if err := writeSeededKey(filepath.Join(c.DataDir, "pseudonym.key"), f.cfg.Seed, site); err != nil {
		return nil, err
	}
	c.Coordinators = f.agentAddrs(site)
	c.TLS = files
	if f.cfg.DataDir != "" {
		c.FHIRDir = filepath.Join(f.cfg.DataDir, site)
	}
	c.PollWait = agent.Duration(2 * time.Second)
	c.BackoffMin = agent.Duration(50 * time.Millisecond)
	c.BackoffMax = agent.Duration(time.Second)
	if n := len(f.cfg.Sites); n > 50 {
		// Hundreds of agents retrying handshakes every second on two
		// cores time each other out; the defaults spread them.
		c.BackoffMin = agent.Duration(time.Duration(n) * time.Millisecond)
		c.BackoffMax = agent.DefaultConfig().BackoffMax
	}
	c.Logger = f.log.With("component", "agent")
	if tap := f.cfg.EgressTap; tap != nil {
		c.EgressTap = func(b []byte) { tap(site, b) }
	}
	if f.cfg.AgentEdit != nil {
		f.cfg.AgentEdit(site, &c)
	}
	c.Adversary = f.cfg.Adversaries[site]
	c.Straggle = func(string, uint64) time.Duration {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.straggle[site]
	}
	if f.trainSem != nil {
		c.TrainGate = func(ctx context.Context) (func(), error) {
			select {
			case f.trainSem <- struct{}{}:
				return func() { <-f.trainSem }, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if edit != nil {
		edit(&c)
	}
	a, err := agent.New(c)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", site, err)
	}
	actx, stop := context.WithCancel(f.ctx)
	ra := &runningAgent{agent: a, stop: stop, done: make(chan struct{})}
	f.mu.Lock()
	if _, dup := f.running[site]; dup {
		f.mu.Unlock()
		stop()
		return nil, fmt.Errorf("agent %s is already running", site)
	}
	f.agents = append(f.agents, a)
	f.running[site] = ra
	f.mu.Unlock()
	f.wg.Go(func() {
		defer close(ra.done)
		if err := a.Run(actx); err != nil && actx.Err() == nil {
			f.errC <- fmt.Errorf("agent %s: %w", a.SiteID(), err)
		}
	})
	return a, nil
}

// stopAgent stops site's agent as if its gateway went down: its process
// ends and its store closes; what it kept on disk stays for a later
// addAgent.
func (f *federation) stopAgent(site string) error {
	if len(f.cfg.AgentCommand) > 0 {
		return f.killProcAgent(site)
	}
	f.mu.Lock()
	ra, ok := f.running[site]
	delete(f.running, site)
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("site %q has no running agent", site)
	}
	ra.stop()
	<-ra.done
	return ra.agent.Close()
}

// restartNode starts a killed node again from its data directory, on the
// same addresses.
func (f *federation) restartNode(i int) error {
	f.mu.Lock()
	down := f.killed[i]
	c := f.nodeCfgs[i]
	f.mu.Unlock()
	if !down {
		return fmt.Errorf("coordinator %s is running", c.ID)
	}
	n, err := coordinator.New(c)
	if err != nil {
		return fmt.Errorf("restart coordinator %s: %w", c.ID, err)
	}
	f.mu.Lock()
	f.retired = append(f.retired, f.nodes[i])
	f.nodes[i], f.killed[i] = n, false
	cut := maps.Clone(f.plan.down)
	delete(cut, c.ID)
	f.plan.down = cut
	f.injectLocked()
	f.mu.Unlock()
	f.runNode(i)
	return nil
}

// leader waits until some node leads and has published its address.
func (f *federation) leader(ctx context.Context) (*coordinator.Node, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, n := range f.live() {
			if _, addr := n.Leader(); addr != "" && n.IsLeader() {
				return n, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-f.errC:
			return nil, err
		case <-tick.C:
		}
	}
}

// waitJobs waits until a leader has set up: it leads, has published its
// address and holds every configured job.
func (f *federation) waitJobs(ctx context.Context) error {
	for {
		l, err := f.leader(ctx)
		if err != nil {
			return err
		}
		ready := true
		for _, j := range f.cfg.Jobs {
			if _, ok := l.Job(j.ID); !ok {
				ready = false
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-f.errC:
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// killNode stops node i (its Raft, its agent listener, its engine) and
// closes its stores, as a crash would leave it: no leadership transfer, no
// goodbye to the agents beyond their connections dropping.
func (f *federation) killNode(i int) {
	f.mu.Lock()
	n, stop, done, down := f.nodes[i], f.nodeStop[i], f.nodeDone[i], f.killed[i]
	f.killed[i] = true
	f.mu.Unlock()
	if down {
		return
	}
	n.Abandon()
	stop()
	<-done
	n.Close()
}

// bytesSent is what every agent has sent (agent processes: as of their
// last status report, written after each ingest and round).
func (f *federation) bytesSent() int64 {
	f.mu.Lock()
	var n int64
	for _, a := range f.agents {
		n += a.BytesSent()
	}
	f.mu.Unlock()
	f.procs.mu.Lock()
	defer f.procs.mu.Unlock()
	for _, p := range f.procs.running {
		n += p.bytesSent()
	}
	for _, p := range f.procs.ended {
		n += p.bytesSent()
	}
	return n
}

// addProcAgent starts site's agent process and watches it: a process
// that exits by itself is a failure of the testbed.
func (f *federation) addProcAgent(site string) error {
	f.procs.mu.Lock()
	defer f.procs.mu.Unlock()
	if f.procs.running == nil {
		f.procs.running = map[string]*procAgent{}
	}
	if _, dup := f.procs.running[site]; dup {
		return fmt.Errorf("agent %s is already running", site)
	}
	p, err := f.startProcAgent(site)
	if err != nil {
		return err
	}
	f.procs.running[site] = p
	f.wg.Go(func() {
		select {
		case <-p.done:
			f.procs.mu.Lock()
			expected := f.procs.running[site] != p
			f.procs.mu.Unlock()
			if !expected && f.ctx.Err() == nil {
				f.errC <- fmt.Errorf("agent process %s exited: %v (log: %s)", site, p.err, filepath.Join(f.cfg.Dir, "agents", site+".log"))
			}
		case <-f.ctx.Done():
			if err := p.stop(); err != nil {
				f.log.Warn("agent process stop", "site", site, "err", err)
			}
		}
	})
	return nil
}

// killProcAgent kills site's agent process (SIGKILL).
func (f *federation) killProcAgent(site string) error {
	f.procs.mu.Lock()
	p, ok := f.procs.running[site]
	delete(f.procs.running, site)
	if ok {
		f.procs.ended = append(f.procs.ended, p)
	}
	f.procs.mu.Unlock()
	if !ok {
		return fmt.Errorf("site %q has no running agent", site)
	}
	p.kill()
	return nil
}

// coordinatorStat sums one counter over every coordinator incarnation,
// killed and restarted ones included.
func (f *federation) coordinatorStat(get func(*coordinator.Stats) int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, c := range append(slices.Clone(f.nodes), f.retired...) {
		n += get(c.Stats())
	}
	return n
}

// stop ends every component and waits for them. It is idempotent.
func (f *federation) stop() error {
	var errs []error
	f.once.Do(func() {
		f.cancel()
		f.wg.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, a := range f.agents {
			errs = append(errs, a.Close())
		}
		for i, n := range f.nodes {
			if !f.killed[i] {
				errs = append(errs, n.Close())
			}
		}
		for _, rs := range f.relays {
			for _, r := range rs {
				errs = append(errs, r.Close())
			}
		}
	})
	return errors.Join(errs...)
}

// writeSeededKey writes a 32-byte key derived from seed and site, mode 0600,
// unless the file exists.
func writeSeededKey(path string, seed uint64, site string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	k := sha256.Sum256(fmt.Appendf(nil, "cohort-sim pseudonym key\x00%d\x00%s", seed, site))
	return os.WriteFile(path, k[:], 0o600)
}
