package sim

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pki"
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
}

// federation is a running cluster and its agents, all in this process.
// start binds and runs everything; stop cancels and waits for every
// goroutine, then closes every component.
type federation struct {
	cfg   federationConfig
	log   *slog.Logger
	ctx   context.Context
	issue func(role, id string, hosts ...string) (pki.Files, error)
	nodes []*coordinator.Node
	// nodeStop[i] stops node i alone (killNode); nodeDone[i] is closed
	// when its Run has returned.
	nodeStop []context.CancelFunc
	nodeDone []chan struct{}
	// errC receives the failures of components.
	errC chan error

	mu     sync.Mutex // guards agents
	agents []*agent.Agent

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
	issue := func(role, id string, hosts ...string) (pki.Files, error) {
		c, k, err := ca.IssueToFiles(pkiDir, pki.IssueRequest{Role: role, ID: id, Hosts: hosts}, time.Now())
		return pki.Files{CA: filepath.Join(pkiDir, "ca.crt"), Cert: c, Key: k}, err
	}

	ctx, cancel := context.WithCancel(ctx)
	f = &federation{cfg: cfg, log: log, ctx: ctx, issue: issue, cancel: cancel,
		errC: make(chan error, cfg.Coordinators+len(cfg.Sites)+len(cfg.Enrolled))}
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
		// Loopback: fast elections and a short engine tick.
		c.HeartbeatTimeout = coordinator.Duration(300 * time.Millisecond)
		c.ElectionTimeout = coordinator.Duration(300 * time.Millisecond)
		c.LeaderLeaseTimeout = coordinator.Duration(200 * time.Millisecond)
		c.TickInterval = coordinator.Duration(50 * time.Millisecond)
		c.Logger = log.With("component", "coordinator")
		n, err := coordinator.New(c)
		if err != nil {
			return f, fmt.Errorf("coordinator %s: %w", id, err)
		}
		f.nodes = append(f.nodes, n)
		peers = append(peers, coordinator.Peer{ID: id, RaftAddr: n.RaftAddr()})
	}
	for _, n := range f.nodes {
		if err := n.Bootstrap(peers); err != nil {
			return f, err
		}
	}
	for _, n := range f.nodes {
		nctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		f.nodeStop = append(f.nodeStop, stop)
		f.nodeDone = append(f.nodeDone, done)
		f.wg.Go(func() {
			defer close(done)
			if err := n.Run(nctx); err != nil {
				f.errC <- fmt.Errorf("coordinator %s: %w", n.ID(), err)
			}
		})
	}
	for _, s := range cfg.Sites {
		if _, err := f.addAgent(s, nil); err != nil {
			return f, err
		}
	}
	return f, nil
}

// agentAddrs are the coordinators' QUIC addresses.
func (f *federation) agentAddrs() []string {
	var addrs []string
	for _, n := range f.nodes {
		addrs = append(addrs, n.AgentAddr())
	}
	return addrs
}

// addAgent issues a certificate for site, creates its agent (edit may
// change the config) and runs it until the federation stops.
func (f *federation) addAgent(site string, edit func(*agent.Config)) (*agent.Agent, error) {
	files, err := f.issue(pki.RoleSite, site)
	if err != nil {
		return nil, err
	}
	c := agent.DefaultConfig()
	c.DataDir = filepath.Join(f.cfg.Dir, "agents", site)
	if err := writeSeededKey(filepath.Join(c.DataDir, "pseudonym.key"), f.cfg.Seed, site); err != nil {
		return nil, err
	}
	c.Coordinators = f.agentAddrs()
	c.TLS = files
	if f.cfg.DataDir != "" {
		c.FHIRDir = filepath.Join(f.cfg.DataDir, site)
	}
	c.PollWait = agent.Duration(2 * time.Second)
	c.BackoffMin = agent.Duration(50 * time.Millisecond)
	c.BackoffMax = agent.Duration(time.Second)
	c.Logger = f.log.With("component", "agent")
	if tap := f.cfg.EgressTap; tap != nil {
		c.EgressTap = func(b []byte) { tap(site, b) }
	}
	c.Adversary = f.cfg.Adversaries[site]
	if edit != nil {
		edit(&c)
	}
	a, err := agent.New(c)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", site, err)
	}
	f.mu.Lock()
	f.agents = append(f.agents, a)
	f.mu.Unlock()
	f.wg.Go(func() {
		if err := a.Run(f.ctx); err != nil {
			f.errC <- fmt.Errorf("agent %s: %w", a.SiteID(), err)
		}
	})
	return a, nil
}

// leader waits until some node leads and has published its address.
func (f *federation) leader(ctx context.Context) (*coordinator.Node, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, n := range f.nodes {
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

// killNode stops node i (its Raft, its agent listener, its engine) and
// closes its stores, as a crash would leave it: no leadership transfer, no
// goodbye to the agents beyond their connections dropping.
func (f *federation) killNode(i int) {
	f.nodes[i].Abandon()
	f.nodeStop[i]()
	<-f.nodeDone[i]
	f.nodes[i].Close()
}

// bytesSent is what every agent has sent.
func (f *federation) bytesSent() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, a := range f.agents {
		n += a.BytesSent()
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
		for _, n := range f.nodes {
			errs = append(errs, n.Close())
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
