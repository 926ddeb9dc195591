package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
	"github.com/cohort-fl/cohort/coordinator/audit"
	"github.com/cohort-fl/cohort/coordinator/raftnet"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/quic-go/quic-go"
	"go.etcd.io/bbolt"
)

// RaftALPN is the ALPN of Raft traffic between coordinators.
const RaftALPN = "cohort-raft/1"

// Node is one coordinator. New opens its stores and binds its listeners
// (so Addr methods answer before Run); Run starts Raft and serves until its
// context ends; Close releases everything and is idempotent.
type Node struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	fsm  *fsm
	blob *blobStore

	boltStore *raftboltdb.BoltStore
	snaps     raft.SnapshotStore
	trans     *raft.NetworkTransport
	stream    *raftnet.StreamLayer
	udpConn   *net.UDPConn
	quicTr    *quic.Transport
	quicLn    *quic.Listener
	statusLn  net.Listener
	adminLn   net.Listener
	agentTLS  *tls.Config
	// adminTLS serves the admin API; forwardTLS is the client side a
	// follower uses to forward a request to the leader's admin API.
	adminTLS   *tls.Config
	forwardTLS *tls.Config
	auth       AuthConfig
	// tokenLimits and failLimits rate-limit admin requests per token and,
	// for requests that fail to authenticate, per client address.
	tokenLimits *limiters
	failLimits  *limiters
	audit       *auditSink
	// ca signs site certificates (nil: enrollment is off).
	ca     *pki.CA
	enroll EnrollConfig

	raftMu sync.Mutex // guards r
	r      *raft.Raft

	stats Stats

	// connWG tracks the goroutines serving agent connections and streams;
	// Run waits for them after closing the QUIC listener.
	connWG sync.WaitGroup

	// heartbeat is Raft's heartbeat timeout.
	heartbeat time.Duration

	// abandon makes Run stop without handing over leadership (Abandon).
	abandon atomic.Bool

	// downMu is read-held by every call that waits on a Raft future from
	// outside Run's own goroutines (raftCall) and write-held by Run to set
	// raftDown before Raft shuts down: hashicorp/raft never answers a
	// VerifyLeader future queued when it stops, nor an entry it committed
	// but had not yet handed to the FSM, so none may be in flight then.
	downMu   sync.RWMutex
	raftDown bool

	// beforeRecord, if set, runs in an admin request after its handler
	// and before its audit record (a test hook that holds a request in
	// flight).
	beforeRecord atomic.Pointer[func()]

	// lastSeen is when each site last sent this node a request (site id
	// → time.Time), for sampling the available sites.
	lastSeen sync.Map
	// agentBuilds is what each site's agent said it runs in its last
	// hello (site id → siteBuild).
	agentBuilds sync.Map
	// engineWarned is the last round engine warning per job (job id →
	// engineWarning), so that a job stuck on the same problem is logged
	// once a minute, not at every tick.
	engineWarned sync.Map
	// conns are the open agent connections by site (site id → *siteConns);
	// agentConns counts every open agent connection, said hello or not.
	conns      sync.Map
	agentConns atomic.Int64

	// auditQ holds refusals' audit entries for flushAudit.
	auditQMu sync.Mutex
	auditQ   []AuditEntry

	// leaderC is closed and replaced when this node gains or loses
	// leadership (seen by the engine within a tick); long polls wait on it.
	leaderMu sync.Mutex
	leaderC  chan struct{}

	// readyTerm is the term in which this node led and finished onElected
	// (its barrier applied every entry of earlier terms); see isReady.
	readyTerm atomic.Uint64
	// setUpAgain asks the engine to run the leader setup again (after a
	// backup was restored).
	setUpAgain atomic.Bool

	// bgCtx bounds background blob transfers (bgWG); Run ends them.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	// fetching holds the blobs being fetched from peers, closed when done.
	fetchMu  sync.Mutex
	fetching map[string]chan struct{}

	closeOnce sync.Once
	closeErr  error
	running   atomic.Bool
}

// Stats are the node's counters. Labels never carry PHI: they are fixed
// reasons.
type Stats struct {
	HandshakesRefused atomic.Int64
	FramesRejected    atomic.Int64
	UnknownSites      atomic.Int64
	UpdatesAccepted   atomic.Int64
	UpdatesRejected   atomic.Int64
	RoundsCommitted   atomic.Int64
	RoundsFailed      atomic.Int64
	BytesReceived     atomic.Int64
	BytesSent         atomic.Int64
	// Model blobs between coordinators.
	BlobsFetched    atomic.Int64
	BlobBytesPushed atomic.Int64
	BlobBytesServed atomic.Int64
	BlobsCollected  atomic.Int64
	// Update uploads interrupted mid-body, and resumed from an offset.
	UploadsInterrupted atomic.Int64
	UploadsResumed     atomic.Int64
	// UpdatesLate are updates for a round that had already closed
	// (stragglers), discarded; UpdatesNotAsked are updates from a site the
	// round did not sample.
	UpdatesLate     atomic.Int64
	UpdatesNotAsked atomic.Int64
	// UpdatesClipped are accepted updates above their job's norm bound,
	// which the aggregation rule clips to it.
	UpdatesClipped atomic.Int64
	// Admin API requests refused for their token or role (audited), and
	// refused by a rate limit.
	AdminDenied      atomic.Int64
	AdminRateLimited atomic.Int64
	// AdminBadRequests are admin API requests refused for what they
	// asked: malformed or invalid input, an unknown route or resource, a
	// body too large (4xx other than 401, 403 and 429).
	AdminBadRequests atomic.Int64
	// SitesRevokedRefused are connections or requests of revoked sites.
	SitesRevokedRefused atomic.Int64
	// HelloTimeouts are agent connections closed because no hello was
	// accepted on them within helloTimeout.
	HelloTimeouts atomic.Int64
	// AuditDropped are queued refusals that could not be recorded
	// (the queue was full, or the node lost leadership before writing it).
	AuditDropped atomic.Int64
	// SecAggMessages are secure aggregation messages from sites applied to
	// a round's run; SecAggRejected are those refused (malformed, for
	// another phase or run, or from a site the run went on without).
	SecAggMessages atomic.Int64
	SecAggRejected atomic.Int64
}

// New validates cfg, opens the Raft stores in cfg.DataDir and binds the
// Raft, agent and status listeners. It starts no goroutine except those of
// the Raft network transport, which Close stops.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n, err := newNode(cfg)
	if err != nil {
		n.Close() // releases whatever was opened before the failure
		return nil, err
	}
	return n, nil
}

// newNode opens and binds everything; on error the returned node holds
// what was opened so far, for Close.
func newNode(cfg Config) (n *Node, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.ID)
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	n = &Node{cfg: cfg, log: log, now: now, fsm: newFSM(), fetching: make(map[string]chan struct{}), leaderC: make(chan struct{})}
	n.fsm.secAggObserver = cfg.SecAggObserver
	n.bgCtx, n.bgCancel = context.WithCancel(context.Background())
	n.heartbeat = n.raftConfig().HeartbeatTimeout
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return n, fmt.Errorf("data dir: %w", err)
	}
	if n.blob, err = newBlobStore(filepath.Join(cfg.DataDir, "blobs")); err != nil {
		return n, err
	}
	pool, cert, err := cfg.TLS.Load()
	if err != nil {
		return n, fmt.Errorf("load tls: %w", err)
	}
	// BoltDB waits forever for a lock held by another process; a timeout
	// turns "another coordinator uses this data dir" into an error.
	if n.boltStore, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second}}); err != nil {
		return n, fmt.Errorf("open raft log %s (is another coordinator using this data dir?): %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	if n.snaps, err = raft.NewFileSnapshotStore(cfg.DataDir, 2, io.Discard); err != nil {
		return n, fmt.Errorf("open snapshots: %w", err)
	}
	rcfg := raftnet.DefaultConfig()
	rcfg.Addr = cfg.RaftAddr
	rcfg.Advertise = cfg.RaftAdvertise
	// The listener serves Raft and blob transfers, told apart by ALPN:
	// raftnet checks the negotiated protocol, so pki is not asked to.
	rcfg.Server = pki.ServerTLS(pool, cert, "", pki.RoleCoordinator)
	rcfg.Server.NextProtos = []string{RaftALPN}
	rcfg.Client = pki.ClientTLS(pool, cert, "", "", pki.RoleCoordinator)
	rcfg.Client.NextProtos = []string{RaftALPN}
	rcfg.Logger = log
	rcfg.Protocols = map[string]func(net.Conn){BlobALPN: n.serveBlobConn}
	if n.stream, err = raftnet.ListenConfig(rcfg); err != nil {
		return n, fmt.Errorf("raft listener: %w", err)
	}
	n.trans = raft.NewNetworkTransport(n.stream, 3, 10*time.Second, io.Discard)

	n.agentTLS = n.agentServerTLS(pool, cert)
	// The node owns its UDP socket and QUIC transport (rather than
	// quic.ListenAddr's), so that Close can close every agent connection
	// and wait for the transport's goroutines.
	udpAddr, err := net.ResolveUDPAddr("udp", cfg.AgentAddr)
	if err != nil {
		return n, fmt.Errorf("agent address: %w", err)
	}
	if n.udpConn, err = net.ListenUDP("udp", udpAddr); err != nil {
		return n, fmt.Errorf("agent listener: %w", err)
	}
	// A stateless-reset key that survives restarts lets a restarted node
	// tell agents at once that their old connections are gone, instead of
	// leaving them to an idle timeout.
	resetKey, err := loadResetKey(filepath.Join(cfg.DataDir, "quic-reset.key"))
	if err != nil {
		return n, err
	}
	n.quicTr = &quic.Transport{Conn: n.udpConn, StatelessResetKey: resetKey}
	n.quicLn, err = n.quicTr.Listen(n.agentTLS, &quic.Config{
		HandshakeIdleTimeout: 5 * time.Second,
		MaxIdleTimeout:       30 * time.Second,
		KeepAlivePeriod:      10 * time.Second,
		MaxIncomingStreams:   maxStreamsPerAgent,
	})
	if err != nil {
		return n, fmt.Errorf("agent listener: %w", err)
	}
	if cfg.StatusAddr != "" {
		if n.statusLn, err = net.Listen("tcp", cfg.StatusAddr); err != nil {
			return n, fmt.Errorf("status listener: %w", err)
		}
	}
	alog, err := audit.Open(filepath.Join(cfg.DataDir, "audit"), "cohort-audit")
	if err != nil {
		return n, fmt.Errorf("audit log: %w", err)
	}
	n.audit = &auditSink{log: alog, logger: log}
	n.fsm.audit = n.audit
	n.fsm.onRevoke = n.closeSite
	n.auth = cfg.Auth.withDefaults(cfg.DataDir)
	n.tokenLimits = newLimiters(n.auth.RatePerSecond, n.auth.Burst)
	n.failLimits = newLimiters(n.auth.FailedPerSecond, n.auth.FailedBurst)
	n.adminTLS, n.forwardTLS = adminTLS(pool, cert)
	n.enroll = cfg.Enroll.withDefaults()
	if cfg.Enroll.CADir != "" {
		if n.ca, err = pki.LoadCA(cfg.Enroll.CADir); err != nil {
			return n, fmt.Errorf("enroll: %w", err)
		}
	}
	if cfg.AdminAddr != "" {
		if n.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return n, fmt.Errorf("admin listener: %w", err)
		}
	}
	return n, nil
}

// agentServerTLS is the QUIC server's TLS config: mutual TLS with site
// certificates of the federation CA. It verifies the chain itself so that a
// refused certificate is logged and counted here, not only on the agent.
func (n *Node) agentServerTLS(pool *x509.CertPool, cert tls.Certificate) *tls.Config {
	base := pki.ServerTLS(pool, cert, protocol.ALPN, pki.RoleSite)
	verify := base.VerifyConnection
	// Ask for any certificate and verify the chain in VerifyConnection:
	// with no acceptable-CA list in the request, a gateway holding a
	// certificate from another CA still presents it, and the refusal is
	// logged and counted on this side too.
	base.ClientAuth = tls.RequireAnyClientCert
	base.ClientCAs = nil
	// A client that offers another application protocol is refused by
	// the TLS stack (no_application_protocol) before any certificate is
	// looked at; count and log it here.
	base.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(hi.SupportedProtos, protocol.ALPN) {
			n.stats.HandshakesRefused.Add(1)
			n.log.Warn("refused agent connection: it does not speak "+protocol.ALPN, "offered", hi.SupportedProtos)
		}
		return nil, nil
	}
	base.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verifyChain(pool, cs)
		if err == nil && verify != nil {
			err = verify(cs)
		}
		if err != nil {
			n.stats.HandshakesRefused.Add(1)
			n.log.Warn("refused agent certificate", "err", err)
		}
		return err
	}
	return base
}

// ID is this node's Raft server id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr is the bound Raft address.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// AgentAddr is the address agents reach this node at.
func (n *Node) AgentAddr() string {
	if n.cfg.AgentAdvertise != "" {
		return n.cfg.AgentAdvertise
	}
	return n.quicLn.Addr().String()
}

// AdminAddr is the address the other coordinators reach this node's admin
// API at (AdminAdvertise, else the bound address), or "" when it is off.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	if n.cfg.AdminAdvertise != "" {
		return n.cfg.AdminAdvertise
	}
	return n.adminLn.Addr().String()
}

// AuditLogDir is the directory of this node's audit log.
func (n *Node) AuditLogDir() string { return filepath.Join(n.cfg.DataDir, "audit") }

// StatusAddr is the bound status address, or "".
func (n *Node) StatusAddr() string {
	if n.statusLn == nil {
		return ""
	}
	return n.statusLn.Addr().String()
}

// Stats returns the node's counters.
func (n *Node) Stats() *Stats { return &n.stats }

// Bootstrap writes the initial cluster configuration if this node has no
// Raft state yet; on a node that has state it does nothing. Every voter may
// bootstrap with the same peers. Call it before Run.
func (n *Node) Bootstrap(peers []Peer) error {
	has, err := raft.HasExistingState(n.boltStore, n.boltStore, n.snaps)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if has {
		return nil
	}
	var conf raft.Configuration
	for _, p := range peers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	if err := raft.BootstrapCluster(n.raftConfig(), n.boltStore, n.boltStore, n.snaps, n.trans, conf); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

func (n *Node) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{n.log}, DisableTime: true})
	if n.cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = time.Duration(n.cfg.HeartbeatTimeout)
	}
	if n.cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = time.Duration(n.cfg.ElectionTimeout)
	}
	if n.cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = time.Duration(n.cfg.LeaderLeaseTimeout)
	}
	if n.cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = time.Duration(n.cfg.SnapshotInterval)
	}
	if n.cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	}
	if n.cfg.TrailingLogs > 0 {
		rc.TrailingLogs = n.cfg.TrailingLogs
	}
	return rc
}

// adminDrainTimeout bounds how long a stopping node waits for the admin
// requests in flight to be answered.
const adminDrainTimeout = 10 * time.Second

// Run starts Raft, the agent server, the round engine and the status
// server, and blocks until ctx ends or one of them fails.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("coordinator: Run called twice")
	}
	r, err := raft.NewRaft(n.raftConfig(), n.fsm, n.boltStore, n.boltStore, n.snaps, n.trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.raftMu.Lock()
	n.r = r
	n.raftMu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errC := make(chan error, 7)
	wg.Go(func() { errC <- n.serveAgents(ctx) })
	wg.Go(func() { errC <- n.runEngine(ctx) })
	wg.Go(func() { errC <- n.syncBlobs(ctx) })
	wg.Go(func() { errC <- n.collectLoop(ctx) })
	wg.Go(func() { errC <- n.flushAudit(ctx) })
	if n.statusLn != nil {
		srv := &http.Server{Handler: n.statusHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(n.statusLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errC <- fmt.Errorf("status server: %w", err)
			}
		})
		wg.Go(func() { <-ctx.Done(); srv.Close() })
	}
	if n.adminLn != nil {
		srv := &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, TLSConfig: n.adminTLS,
			ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
		wg.Go(func() {
			if err := srv.ServeTLS(n.adminLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errC <- fmt.Errorf("admin server: %w", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			// Requests in flight get their answers, and their audit
			// records commit, before Raft stops; one that takes longer
			// than the drain is cut off.
			drain, cancel := context.WithTimeout(context.Background(), adminDrainTimeout)
			defer cancel()
			if err := srv.Shutdown(drain); err != nil {
				n.log.Warn("admin requests still in flight at shutdown; closing their connections", "err", err)
				srv.Close()
			}
		})
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errC:
	}
	cancel()
	n.quicLn.Close()
	n.quicTr.Close() // closes every agent connection and waits for its reader
	wg.Wait()
	n.connWG.Wait()
	n.bgCancel()
	n.bgWG.Wait()
	// A leader that is stopped on purpose hands over first, so the cluster
	// does not wait an election timeout for a new one.
	if r.State() == raft.Leader && !n.abandon.Load() {
		if err := r.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer on shutdown", "err", err)
		} else {
			n.log.Info("leadership handed over")
		}
	}
	n.downMu.Lock()
	n.raftDown = true
	n.downMu.Unlock()
	if err := r.Shutdown().Error(); err != nil && runErr == nil {
		runErr = fmt.Errorf("raft shutdown: %w", err)
	}
	return runErr
}

// InjectFault drops or delays this node's traffic (Raft and blob
// transfers) with other coordinators, by their ids, for fault-injection
// tests and testbeds: fn is asked at every connection and every write; nil
// removes the fault. Agents' connections are not affected.
func (n *Node) InjectFault(fn func(peer string) raftnet.Fault) { n.stream.SetFault(fn) }

// Abandon makes the node behave as if it crashed: its Raft and blob
// traffic with the other coordinators stops at once, and the next stop of
// Run skips the leadership transfer. For fault injection in tests and
// testbeds.
func (n *Node) Abandon() {
	n.abandon.Store(true)
	n.stream.SetFault(func(string) raftnet.Fault { return raftnet.Fault{Drop: true} })
}

// Close releases the listeners and stores. It is idempotent; call it after
// Run has returned.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		n.bgCancel()
		n.bgWG.Wait()
		if n.quicLn != nil {
			n.quicLn.Close()
		}
		if n.quicTr != nil {
			n.quicTr.Close()
		}
		if n.udpConn != nil {
			n.udpConn.Close()
		}
		if n.statusLn != nil {
			n.statusLn.Close()
		}
		if n.adminLn != nil {
			n.adminLn.Close()
		}
		if n.trans != nil {
			errs = append(errs, n.trans.Close())
			// Raft answers heartbeats on the transport's connection
			// goroutines, writing its term to the store: the store
			// closes only once they have returned (the transport's
			// Close does not wait for them).
			if !n.stream.WaitInbound(10 * time.Second) {
				n.log.Warn("raft connection handlers still running at close")
			}
		}
		if n.boltStore != nil {
			errs = append(errs, n.boltStore.Close())
		}
		if n.audit != nil {
			errs = append(errs, n.audit.log.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func (n *Node) raftNode() *raft.Raft {
	n.raftMu.Lock()
	defer n.raftMu.Unlock()
	return n.r
}

// verifyLeader confirms with a quorum that this node still leads, and that
// it finished its leader setup in the current term (before and after), so
// a read answered next is linearizable.
func (n *Node) verifyLeader() error {
	return n.raftCall(func(r *raft.Raft) error {
		if !n.isReady() {
			return ErrNotLeader
		}
		if err := r.VerifyLeader().Error(); err != nil {
			return err
		}
		if !n.isReady() {
			return ErrNotLeader
		}
		return nil
	})
}

// raftCall runs fn, which may wait on Raft futures, unless Raft is
// stopping or not started (ErrNotLeader). Run waits for every raftCall in
// progress before it stops Raft (see downMu).
func (n *Node) raftCall(fn func(r *raft.Raft) error) error {
	n.downMu.RLock()
	defer n.downMu.RUnlock()
	r := n.raftNode()
	if n.raftDown || r == nil {
		return ErrNotLeader
	}
	return fn(r)
}

// leadershipChanged returns a channel closed at this node's next gain or
// loss of leadership.
func (n *Node) leadershipChanged() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderC
}

func (n *Node) signalLeadership() {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	close(n.leaderC)
	n.leaderC = make(chan struct{})
}

// isReady reports whether this node leads and has finished its leader
// setup in the current term: its state then holds every committed entry.
func (n *Node) isReady() bool {
	r := n.raftNode()
	return r != nil && r.State() == raft.Leader && n.readyTerm.Load() == r.CurrentTerm()
}

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool {
	r := n.raftNode()
	return r != nil && r.State() == raft.Leader
}

// Leader returns the leader's id and agent address, as far as this node
// knows; empty strings when unknown.
func (n *Node) Leader() (id, agentAddr string) {
	r := n.raftNode()
	if r == nil {
		return "", ""
	}
	_, lid := r.LeaderWithID()
	id = string(lid)
	if id == "" {
		return "", ""
	}
	// A follower that has not heard from the leader lately may be talking
	// about a dead one: better to say "no leader yet" than to send agents
	// to an address that will not answer.
	if r.State() != raft.Leader && time.Since(r.LastContact()) > 2*n.heartbeat {
		return "", ""
	}
	n.fsm.view(func(st *state) { agentAddr = st.Nodes[id].AgentAddr })
	return id, agentAddr
}

// propose applies a command through Raft on the leader and returns the
// FSM's answer.
func (n *Node) propose(t cmdType, body any) error {
	return n.proposeAudited(t, body, nil)
}

// proposeAudited is propose with the admin request that caused the
// command, recorded in the same entry.
func (n *Node) proposeAudited(t cmdType, body any, ev *AuditEntry) error {
	return n.raftCall(func(r *raft.Raft) error {
		if r.State() != raft.Leader {
			return ErrNotLeader
		}
		data, err := encodeCommand(t, newReqID(), n.now(), body, ev)
		if err != nil {
			return err
		}
		f := r.Apply(data, time.Duration(n.cfg.ApplyTimeout))
		if err := f.Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return fmt.Errorf("%w: %w", ErrNotLeader, err)
			}
			return fmt.Errorf("%w %s: %w", errApply, t, err)
		}
		if err, ok := f.Response().(error); ok && err != nil {
			return err
		}
		return nil
	})
}

// EnsureSite enrolls a site (idempotent). Leader only for now.
func (n *Node) EnsureSite(id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: site id %q", ErrInvalidSite, id)
	}
	return n.propose(cmdEnsureSite, Site{ID: id})
}

// CreateJob creates a job with a zero initial model (idempotent by id).
// Like every model, the initial one is a blob that a majority holds before
// the entry naming it is proposed. Leader only.
func (n *Node) CreateJob(spec JobSpec) error { return n.createJob(spec, n.propose) }

// createJob is CreateJob proposing with prop.
func (n *Node) createJob(spec JobSpec, prop func(cmdType, any) error) error {
	if err := spec.PlanPrivacy(); err != nil {
		return err
	}
	if err := spec.Validate(n.cfg.MaxModelBytes); err != nil {
		return err
	}
	if err := spec.checkCohort(n.cfg.minCohort()); err != nil {
		return err
	}
	if !n.IsLeader() {
		return ErrNotLeader
	}
	var exists bool
	n.fsm.view(func(st *state) { _, exists = st.Jobs[spec.ID] })
	if exists {
		return nil
	}
	if spec.IsAnalytics() || spec.IsEvaluation() {
		return prop(cmdEnsureJob, ensureJobBody{Spec: spec}) // no model of its own
	}
	w, err := initialWeights(spec)
	if err != nil {
		return err
	}
	ref, err := n.storeModel(w)
	if err != nil {
		return err
	}
	return prop(cmdEnsureJob, ensureJobBody{Spec: spec, Initial: ref})
}

// initialWeights is a new job's round-0 model: zeros for logistic
// regression, a seeded Glorot/He draw for an MLP (which cannot learn from
// all zeros). It depends only on the spec, so a retried creation proposes
// the same model.
func initialWeights(spec JobSpec) ([]byte, error) {
	if spec.Model.Kind != "mlp" {
		return make([]byte, spec.Model.ModelBytes()), nil
	}
	w, err := mlpspec.InitialWeights(spec.Model.NumFeatures,
		mlpspec.Config{Hidden: spec.Model.Hidden, Activation: spec.Model.Activation, Dropout: spec.Model.Dropout}, spec.Train.Seed)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidJob, err)
	}
	return protocol.EncodeF32(w), nil
}

// ensureJobBody creates a job and names its initial model's blob.
type ensureJobBody struct {
	Spec    JobSpec `json:"spec"`
	Initial Model   `json:"initial"`
	// RetrainOf is the job this one retrains (retrain.go).
	RetrainOf string `json:"retrain_of,omitempty"`
}

// storeModel writes a model blob here and replicates it to a majority of
// voters, so that an entry naming it can be proposed.
func (n *Node) storeModel(w []byte) (Model, error) {
	digest, err := n.blob.create(w)
	if err != nil {
		return Model{}, err
	}
	m := Model{Digest: digest, Size: int64(len(w))}
	ctx, cancel := context.WithTimeout(n.bgCtx, blobTransferTimeout(m.Size))
	defer cancel()
	if err := n.replicateBlob(ctx, m.Digest, m.Size); err != nil {
		return Model{}, fmt.Errorf("replicate model: %w", err)
	}
	return m, nil
}

// ModelWeights returns a committed model's weights (little-endian
// float32), fetching the blob from a peer if this node lacks it.
func (n *Node) ModelWeights(ctx context.Context, digest string) ([]byte, error) {
	if err := n.ensureBlob(ctx, digest); err != nil {
		return nil, err
	}
	return n.blob.get(digest)
}

// Job returns a copy of a job's replicated state.
func (n *Node) Job(id string) (*Job, bool) {
	var j *Job
	n.fsm.view(func(st *state) {
		if src, ok := st.Jobs[id]; ok {
			j = src.clone()
		}
	})
	return j, j != nil
}

// Changed returns a channel that is closed when the next log entry applies.
func (n *Node) Changed() <-chan struct{} { return n.fsm.changed() }

func newReqID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// slogWriter turns hclog's lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(string(trimNewline(p)), "component", "raft")
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

// loadResetKey reads the node's QUIC stateless-reset key, creating it
// (32 random bytes, mode 0600) on first start.
func loadResetKey(path string) (*quic.StatelessResetKey, error) {
	var key quic.StatelessResetKey
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) == len(key):
		copy(key[:], b)
		return &key, nil
	case err == nil:
		return nil, fmt.Errorf("stateless reset key %s: %d bytes, want %d", path, len(b), len(key))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("stateless reset key: %w", err)
	}
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, key[:], 0o600); err != nil {
		return nil, fmt.Errorf("stateless reset key: %w", err)
	}
	return &key, nil
}
