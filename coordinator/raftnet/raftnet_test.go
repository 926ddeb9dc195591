package raftnet

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// testPKI is a federation CA plus an unrelated one.
type testPKI struct {
	ca, other *pki.CA
	pool      *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	now := time.Now()
	load := func(name string) *pki.CA {
		dir := filepath.Join(t.TempDir(), name)
		if err := pki.InitCA(dir, name, now); err != nil {
			t.Fatal(err)
		}
		ca, err := pki.LoadCA(dir)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	p := &testPKI{ca: load("federation"), other: load("impostor")}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(p.ca.Certificate())
	return p
}

func issue(t *testing.T, ca *pki.CA, role, id string) tls.Certificate {
	t.Helper()
	req := pki.IssueRequest{Role: role, ID: id}
	if role == pki.RoleCoordinator {
		req.Hosts = []string{"127.0.0.1"}
	}
	certPEM, keyPEM, err := ca.Issue(req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// listen starts a StreamLayer on loopback for cert, trusting the federation CA.
func listen(t *testing.T, p *testPKI, cert tls.Certificate, log *slog.Logger) *StreamLayer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Server, cfg.Client = TLSConfigs(p.pool, cert)
	cfg.Logger = log
	s, err := ListenConfig(cfg)
	if err != nil {
		t.Fatalf("ListenConfig: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestConfigValidate(t *testing.T) {
	p := newTestPKI(t)
	srv, cli := TLSConfigs(p.pool, issue(t, p.ca, pki.RoleCoordinator, "c1"))
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr error
	}{
		{"valid", func(*Config) {}, nil},
		{"no address", func(c *Config) { c.Addr = "" }, ErrInvalidAddr},
		{"no port", func(c *Config) { c.Addr = "127.0.0.1" }, ErrInvalidAddr},
		{"unspecified advertise", func(c *Config) { c.Advertise = "0.0.0.0:7000" }, ErrInvalidAddr},
		{"advertise without host", func(c *Config) { c.Advertise = ":7000" }, ErrInvalidAddr},
		{"no server config", func(c *Config) { c.Server = nil }, ErrNoServerConfig},
		{"no client config", func(c *Config) { c.Client = nil }, ErrNoClientConfig},
		{"server does not verify clients", func(c *Config) {
			c.Server = c.Server.Clone()
			c.Server.ClientAuth = tls.VerifyClientCertIfGiven
		}, ErrNotMutual},
		{"zero handshake timeout", func(c *Config) { c.HandshakeTimeout = 0 }, ErrInvalidConfig},
		{"zero pending handshakes", func(c *Config) { c.MaxPendingHandshakes = 0 }, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Addr, cfg.Server, cfg.Client = "127.0.0.1:0", srv, cli
			tt.mutate(&cfg)
			if err := cfg.Validate(); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate = %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("listening on an unspecified address needs Advertise", func(t *testing.T) {
		if _, err := Listen("0.0.0.0:0", srv, cli); !errors.Is(err, ErrInvalidAddr) {
			t.Fatalf("Listen error = %v, want ErrInvalidAddr", err)
		}
		cfg := DefaultConfig()
		cfg.Addr, cfg.Advertise, cfg.Server, cfg.Client = "0.0.0.0:0", "c1.cohort.test:7000", srv, cli
		s, err := ListenConfig(cfg)
		if err != nil {
			t.Fatalf("ListenConfig: %v", err)
		}
		defer s.Close()
		if got := s.Addr().String(); got != "c1.cohort.test:7000" {
			t.Errorf("Addr = %q", got)
		}
	})
}

// TestAcceptSurvivesBadPeers: garbage, a silent connection, a foreign
// certificate and a site certificate do not stop the listener from
// accepting a good peer.
func TestAcceptSurvivesBadPeers(t *testing.T) {
	p := newTestPKI(t)
	logs := &syncBuffer{}
	server := listen(t, p, issue(t, p.ca, pki.RoleCoordinator, "c1"), slog.New(slog.NewTextHandler(logs, nil)))
	addr := server.Addr().String()

	// A silent peer holds a pending handshake for the whole test.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	// Garbage instead of a ClientHello.
	garbage, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = garbage.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	_, _ = io.Copy(io.Discard, garbage) // until the server hangs up
	garbage.Close()

	// Peers with the wrong certificates. TLS 1.3 clients see the refusal on
	// their first read.
	for _, bad := range []struct {
		name string
		cert tls.Certificate
	}{
		{"foreign coordinator", issue(t, p.other, pki.RoleCoordinator, "c9")},
		{"site", issue(t, p.ca, pki.RoleSite, "s1")},
	} {
		_, cli := TLSConfigs(p.pool, bad.cert)
		cli.ServerName = "127.0.0.1"
		cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &bad.cert, nil }
		c, err := tls.Dial("tcp", addr, cli)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatalf("%s: connection was not refused", bad.name)
		}
	}

	// A good peer dials through its own StreamLayer.
	peer := listen(t, p, issue(t, p.ca, pki.RoleCoordinator, "c2"), nil)
	type accepted struct {
		c   net.Conn
		err error
	}
	acceptC := make(chan accepted, 1)
	go func() {
		c, err := server.Accept()
		acceptC <- accepted{c, err}
	}()
	out, err := peer.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer out.Close()
	if _, err := out.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	a := <-acceptC
	if a.err != nil {
		t.Fatalf("Accept: %v", a.err)
	}
	defer a.c.Close()
	_ = a.c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(a.c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	tr, ok := a.c.(*trackedConn)
	if !ok {
		t.Fatalf("Accept returned %T, want *trackedConn", a.c)
	}
	tc, ok := tr.Conn.(*tls.Conn)
	if !ok {
		t.Fatalf("Accept returned a %T inside, want *tls.Conn", tr.Conn)
	}
	st := tc.ConnectionState()
	if id, err := pki.PeerIdentity(st); err != nil || id != (pki.Identity{Role: pki.RoleCoordinator, ID: "c2"}) {
		t.Errorf("PeerIdentity = %+v, %v", id, err)
	}
	if st.NegotiatedProtocol != ALPN || st.Version != tls.VersionTLS13 {
		t.Errorf("ALPN %q, version %x", st.NegotiatedProtocol, st.Version)
	}
	waitFor(t, 5*time.Second, "handshake failures to be logged", func() bool {
		return strings.Count(logs.String(), "peer handshake failed") >= 3
	})
	out.Close()
}

func TestClose(t *testing.T) {
	p := newTestPKI(t)
	s := listen(t, p, issue(t, p.ca, pki.RoleCoordinator, "c1"), nil)
	addr := s.Addr().String()
	// A pending handshake must not keep Close waiting.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if _, err := s.Dial(raft.ServerAddress(addr), time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Dial after Close = %v, want net.ErrClosed", err)
	}
}

// TestWaitInbound: after Close, WaitInbound waits until the user of every
// accepted connection (Raft's per-connection handler) has closed it, and
// dialled connections do not count.
func TestWaitInbound(t *testing.T) {
	p := newTestPKI(t)
	s := listen(t, p, issue(t, p.ca, pki.RoleCoordinator, "c1"), nil)
	peer := listen(t, p, issue(t, p.ca, pki.RoleCoordinator, "c2"), nil)
	out, err := peer.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Dial(raft.ServerAddress(peer.Addr().String()), 5*time.Second); err != nil { // not counted
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close closed the connection under its user, who has not closed it.
	if s.WaitInbound(50 * time.Millisecond) {
		t.Fatal("WaitInbound returned while the accepted connection's user still held it")
	}
	if err := in.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("user's close: %v", err)
	}
	in.Close() // a second close counts once
	if !s.WaitInbound(5*time.Second) || s.inbound.Load() != 0 {
		t.Fatalf("after the user closed the connection: WaitInbound false or %d inbound, want 0", s.inbound.Load())
	}
}

// fsm records applied commands.
type fsm struct {
	mu   sync.Mutex
	cmds []string
}

func (f *fsm) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return nil
}

func (f *fsm) has(cmd string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.cmds, cmd)
}

func (f *fsm) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.cmds)
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return snapshot(slices.Clone(f.cmds)), nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var cmds []string
	if err := json.NewDecoder(rc).Decode(&cmds); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = cmds
	return nil
}

type snapshot []string

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshot) Release() {}

type node struct {
	id    raft.ServerID
	raft  *raft.Raft
	fsm   *fsm
	trans *raft.NetworkTransport
}

// startNode starts a Raft node on loopback using cert and trusting pool.
func startNode(t *testing.T, id string, pool *x509.CertPool, cert tls.Certificate) *node {
	t.Helper()
	srv, cli := TLSConfigs(pool, cert)
	layer, err := Listen("127.0.0.1:0", srv, cli)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	trans := raft.NewNetworkTransport(layer, 3, 2*time.Second, io.Discard)
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(id)
	conf.HeartbeatTimeout = 300 * time.Millisecond
	conf.ElectionTimeout = 300 * time.Millisecond
	conf.LeaderLeaseTimeout = 150 * time.Millisecond
	conf.CommitTimeout = 10 * time.Millisecond
	conf.LogOutput = io.Discard
	conf.LogLevel = "ERROR"
	store := raft.NewInmemStore()
	f := &fsm{}
	r, err := raft.NewRaft(conf, f, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		_ = trans.Close()
		t.Fatalf("NewRaft: %v", err)
	}
	n := &node{id: conf.LocalID, raft: r, fsm: f, trans: trans}
	t.Cleanup(func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Errorf("shutdown %s: %v", id, err)
		}
		_ = trans.Close()
		_ = layer.Close()
	})
	return n
}

// startCluster starts three bootstrapped nodes and waits for a leader.
func startCluster(t *testing.T, p *testPKI) (nodes []*node, leader *node) {
	t.Helper()
	var servers []raft.Server
	for i := range 3 {
		id := fmt.Sprintf("c%d", i+1)
		n := startNode(t, id, p.pool, issue(t, p.ca, pki.RoleCoordinator, id))
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: n.trans.LocalAddr()})
	}
	for _, n := range nodes {
		if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatalf("bootstrap %s: %v", n.id, err)
		}
	}
	waitFor(t, 15*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				leader = n
				return true
			}
		}
		return false
	})
	return nodes, leader
}

func TestRaftCluster(t *testing.T) {
	p := newTestPKI(t)
	nodes, leader := startCluster(t, p)

	for i := range 3 {
		cmd := fmt.Sprintf("cmd-%d", i)
		if err := leader.raft.Apply([]byte(cmd), 5*time.Second).Error(); err != nil {
			t.Fatalf("Apply %s: %v", cmd, err)
		}
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, fmt.Sprintf("%s to apply cmd-2", n.id), func() bool { return n.fsm.has("cmd-2") })
		if got := n.fsm.count(); got != 3 {
			t.Errorf("%s applied %d commands, want 3", n.id, got)
		}
	}
	for _, n := range nodes {
		_, id := n.raft.LeaderWithID()
		if id != leader.id {
			t.Errorf("%s sees leader %q, want %q", n.id, id, leader.id)
		}
	}
}

func TestRaftRefusesForeignNode(t *testing.T) {
	p := newTestPKI(t)
	nodes, leader := startCluster(t, p)

	// The rogue trusts the federation CA but holds a certificate from
	// another CA, with a coordinator role and a matching IP SAN.
	rogue := startNode(t, "rogue", p.pool, issue(t, p.other, pki.RoleCoordinator, "rogue"))

	t.Run("its RPCs fail", func(t *testing.T) {
		for _, n := range nodes {
			var resp raft.RequestVoteResponse
			err := rogue.trans.RequestVote(n.id, n.trans.LocalAddr(), &raft.RequestVoteRequest{
				RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(rogue.id), Addr: []byte(rogue.trans.LocalAddr())},
				Term:               1000,
				LastLogIndex:       1000,
				LastLogTerm:        1000,
				LeadershipTransfer: true,
			}, &resp)
			if err == nil {
				t.Errorf("RequestVote to %s succeeded (granted=%v)", n.id, resp.Granted)
			}
		}
	})

	t.Run("it cannot join", func(t *testing.T) {
		obsC := make(chan raft.Observation, 16)
		obs := raft.NewObserver(obsC, false, func(o *raft.Observation) bool {
			f, ok := o.Data.(raft.FailedHeartbeatObservation)
			return ok && f.PeerID == rogue.id
		})
		leader.raft.RegisterObserver(obs)
		defer leader.raft.DeregisterObserver(obs)

		if err := leader.raft.AddVoter(rogue.id, rogue.trans.LocalAddr(), 0, 5*time.Second).Error(); err != nil {
			t.Fatalf("AddVoter: %v", err)
		}
		if err := leader.raft.Apply([]byte("after-rogue"), 5*time.Second).Error(); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		select {
		case <-obsC:
		case <-time.After(15 * time.Second):
			t.Fatal("leader never reported a failed heartbeat to the rogue")
		}
		for _, n := range nodes {
			waitFor(t, 10*time.Second, fmt.Sprintf("%s to apply", n.id), func() bool { return n.fsm.has("after-rogue") })
		}
		if got := rogue.fsm.count(); got != 0 {
			t.Errorf("rogue applied %d commands", got)
		}
		if got := rogue.raft.LastIndex(); got != 0 {
			t.Errorf("rogue last index = %d, want 0", got)
		}
		if _, id := rogue.raft.LeaderWithID(); id != "" {
			t.Errorf("rogue knows leader %q", id)
		}
		if _, id := leader.raft.LeaderWithID(); id != leader.id {
			t.Errorf("leadership changed to %q", id)
		}
	})
}
