// Package raftnet is the network layer between coordinators: a
// raft.StreamLayer over TCP with mutual TLS 1.3, for
// raft.NewNetworkTransport.
//
// Both ends present coordinator certificates from the federation CA (see
// package pki) and negotiate ALPN "cohort-raft/1"; a peer with a certificate
// from another CA, a site certificate, or another protocol is refused during
// the handshake. TLSConfigs builds matching server and client
// configurations.
//
// Incoming handshakes run concurrently, each bounded by a timeout, so a slow
// or hostile client cannot stall the listener; a failed handshake is logged
// and dropped and the listener keeps accepting. Accept only returns
// connections whose handshake has completed.
//
// Other protocols between coordinators (model blobs) share the listener:
// Config.Protocols names them by ALPN, and an accepted connection that
// negotiated one of them goes to its handler instead of Raft. DialProtocol
// dials one.
//
// SetFault drops or slows the traffic with chosen peers, by coordinator id,
// for partition tests.
//
// In TLS 1.3 the client finishes its handshake before the server has checked
// the client's certificate. A Dial by a peer whose certificate the server
// refuses therefore returns a connection, and the refusal surfaces as an
// error on that connection's first read (raft's first RPC response).
package raftnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// ALPN is the application protocol coordinators negotiate with each other.
const ALPN = "cohort-raft/1"

var (
	// ErrNoServerConfig: Config.Server is nil.
	ErrNoServerConfig = errors.New("raftnet: server TLS config is required")
	// ErrNoClientConfig: Config.Client is nil.
	ErrNoClientConfig = errors.New("raftnet: client TLS config is required")
	// ErrNotMutual: the server TLS config does not require and verify client certificates.
	ErrNotMutual = errors.New("raftnet: server TLS config must require and verify client certificates")
	// ErrInvalidAddr: a missing or malformed listen or advertise address.
	ErrInvalidAddr = errors.New("raftnet: invalid address")
	// ErrInvalidConfig: a non-positive timeout or limit.
	ErrInvalidConfig = errors.New("raftnet: invalid config")
)

// Config configures a StreamLayer.
type Config struct {
	// Addr is the TCP address to listen on, host:port (port 0 picks one).
	Addr string
	// Advertise is the address peers dial to reach this node, host:port.
	// Empty means the listener's own address, which must then not be an
	// unspecified IP (0.0.0.0 or ::). Its host must be one of this node's
	// certificate SANs.
	Advertise string
	// Server is the TLS configuration for accepted connections; it must
	// require and verify client certificates. See TLSConfigs.
	Server *tls.Config
	// Client is the TLS configuration for dialled connections. Its
	// ServerName is replaced per dial by the host of the dialled address.
	Client *tls.Config
	// HandshakeTimeout bounds each incoming and outgoing TLS handshake
	// (outgoing ones are also bounded by raft's dial timeout).
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds incoming connections that are
	// handshaking or waiting for Accept; further connections wait in the
	// kernel's accept queue.
	MaxPendingHandshakes int
	// Logger receives handshake failures and accept errors; nil discards.
	Logger *slog.Logger
	// Protocols are further protocols served on the listener, by ALPN: a
	// connection that negotiates one is handed to its handler (in its own
	// goroutine, which owns the connection) instead of Accept.
	Protocols map[string]func(net.Conn)
}

// Fault is what SetFault does to the traffic with one peer.
type Fault struct {
	// Drop refuses and closes every connection with the peer.
	Drop bool
	// Delay is added before every write to the peer.
	Delay time.Duration
}

// DefaultConfig returns a Config with default timeouts and limits and no
// address or TLS configurations.
func DefaultConfig() Config {
	return Config{
		HandshakeTimeout:     10 * time.Second,
		MaxPendingHandshakes: 64,
	}
}

// Validate reports whether the config can be used.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("%w: listen address %q: %w", ErrInvalidAddr, c.Addr, err)
	}
	if c.Advertise != "" {
		if err := checkAdvertise(c.Advertise); err != nil {
			return err
		}
	}
	switch {
	case c.Server == nil:
		return ErrNoServerConfig
	case c.Client == nil:
		return ErrNoClientConfig
	case c.Server.ClientAuth != tls.RequireAndVerifyClientCert:
		return ErrNotMutual
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("%w: handshake timeout %v", ErrInvalidConfig, c.HandshakeTimeout)
	case c.MaxPendingHandshakes <= 0:
		return fmt.Errorf("%w: max pending handshakes %d", ErrInvalidConfig, c.MaxPendingHandshakes)
	}
	return nil
}

func checkAdvertise(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: advertise address %q: %w", ErrInvalidAddr, addr, err)
	}
	if host == "" {
		return fmt.Errorf("%w: advertise address %q has no host", ErrInvalidAddr, addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%w: advertise address %q is unspecified; set Advertise", ErrInvalidAddr, addr)
	}
	return nil
}

// TLSConfigs returns the server and client TLS configurations for Raft
// between coordinators: TLS 1.3, ALPN "cohort-raft/1", certificates from
// pool on both ends, role coordinator on both ends.
func TLSConfigs(pool *x509.CertPool, cert tls.Certificate) (server, client *tls.Config) {
	return pki.ServerTLS(pool, cert, ALPN, pki.RoleCoordinator),
		pki.ClientTLS(pool, cert, ALPN, "", pki.RoleCoordinator)
}

// StreamLayer is a raft.StreamLayer over TCP with mutual TLS. It is a
// net.Listener whose Accept returns handshaken *tls.Conn values, and it
// dials peers with Dial. Close stops accepting and waits for the goroutines
// it started; connections already returned belong to the caller.
type StreamLayer struct {
	ln               net.Listener
	addr             net.Addr
	server, client   *tls.Config
	handshakeTimeout time.Duration
	log              *slog.Logger

	protocols map[string]func(net.Conn)
	fault     atomic.Pointer[func(peer string) Fault]

	connC     chan net.Conn   // handshaken incoming connections
	slots     chan struct{}   // one token per incoming conn not yet taken by Accept
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
	// handlers are the Config.Protocols handlers running; Close waits for
	// them after closing their connections.
	handlers sync.WaitGroup

	connsMu sync.Mutex // guards conns
	// conns are the connections handed to Raft (accepted or dialled);
	// Close closes them so Raft's per-connection goroutines end with the
	// transport instead of waiting for the peer to hang up.
	conns  map[*trackedConn]struct{}
	closed bool
	lnErr  error // result of closing ln, set once in Close
	// inbound counts the accepted connections that their user (Raft's
	// per-connection handler) has not closed yet; see WaitInbound.
	inbound atomic.Int64
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// Listen listens on addr (host:port) with the default config, the given TLS
// configurations and no logger. See ListenConfig.
func Listen(addr string, server, client *tls.Config) (*StreamLayer, error) {
	cfg := DefaultConfig()
	cfg.Addr, cfg.Server, cfg.Client = addr, server, client
	return ListenConfig(cfg)
}

// ListenConfig validates cfg, listens on cfg.Addr and starts accepting
// connections in the background until Close.
func ListenConfig(cfg Config) (*StreamLayer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("raftnet: listen: %w", err)
	}
	var addr net.Addr = ln.Addr()
	if cfg.Advertise != "" {
		addr = advertiseAddr(cfg.Advertise)
	} else if err := checkAdvertise(addr.String()); err != nil {
		_ = ln.Close()
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	server := cfg.Server
	if len(cfg.Protocols) > 0 {
		server = server.Clone()
		for p := range cfg.Protocols {
			if !slices.Contains(server.NextProtos, p) {
				server.NextProtos = append(server.NextProtos, p)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &StreamLayer{
		ln:               ln,
		addr:             addr,
		protocols:        cfg.Protocols,
		server:           server,
		client:           cfg.Client,
		handshakeTimeout: cfg.HandshakeTimeout,
		log:              log.With("component", "raftnet", "listen", ln.Addr().String()),
		connC:            make(chan net.Conn),
		slots:            make(chan struct{}, cfg.MaxPendingHandshakes),
		ctx:              ctx,
		cancel:           cancel,
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// acceptLoop accepts TCP connections and hands each to a handshake
// goroutine, holding a slot per pending handshake.
func (s *StreamLayer) acceptLoop() {
	defer s.wg.Done()
	const baseDelay, maxDelay = 5 * time.Millisecond, time.Second
	var delay time.Duration
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-s.slots
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, baseDelay), maxDelay)
			s.log.Warn("accept failed", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		s.wg.Add(1)
		go s.handshake(c)
	}
}

// handshake completes the server side of the TLS handshake on c and
// delivers it to Accept, or logs the failure and closes c.
func (s *StreamLayer) handshake(c net.Conn) {
	defer s.wg.Done()
	// The slot is held until Accept takes the connection, so a caller that
	// stops accepting also stops the accept loop.
	defer func() { <-s.slots }()
	tc := tls.Server(c, s.server)
	ctx, cancel := context.WithTimeout(s.ctx, s.handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		_ = c.Close()
		if s.ctx.Err() == nil {
			s.log.Warn("peer handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	if np := s.server.NextProtos; len(np) > 0 && !slices.Contains(np, tc.ConnectionState().NegotiatedProtocol) {
		_ = tc.Close()
		s.log.Warn("peer handshake failed", "remote", c.RemoteAddr().String(), "err", "no application protocol negotiated")
		return
	}
	peer := ""
	if id, err := pki.PeerIdentity(tc.ConnectionState()); err == nil {
		peer = id.ID
		s.log.Debug("peer connected", "remote", c.RemoteAddr().String(), "peer", id.String())
	}
	if s.faultFor(peer).Drop {
		_ = tc.Close()
		return
	}
	if h, ok := s.protocols[tc.ConnectionState().NegotiatedProtocol]; ok {
		c := s.track(tc, peer, false)
		s.handlers.Go(func() { h(c) })
		return
	}
	select {
	case s.connC <- tc:
	case <-s.ctx.Done():
		_ = tc.Close()
	}
}

// Accept returns the next incoming connection whose TLS handshake has
// completed. After Close it returns an error matching net.ErrClosed.
func (s *StreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.connC:
		peer := ""
		if id, err := pki.PeerIdentity(c.(*tls.Conn).ConnectionState()); err == nil {
			peer = id.ID
		}
		return s.track(c, peer, true), nil
	case <-s.ctx.Done():
		return nil, fmt.Errorf("raftnet: accept: %w", net.ErrClosed)
	}
}

// WaitInbound waits, up to timeout, until every accepted connection has
// been closed by its user, and reports whether they all were. After Close
// (which closes them under their users), it tells when Raft's
// per-connection handlers have returned: hashicorp/raft answers
// heartbeats on those goroutines, writing the current term to its stable
// store, and panics if that store was closed under it. Close the store
// only after this.
func (s *StreamLayer) WaitInbound(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for s.inbound.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// Close stops accepting, aborts pending handshakes and waits for the
// goroutines the StreamLayer started. It is safe to call more than once.
func (s *StreamLayer) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.lnErr = s.ln.Close()
		s.wg.Wait()
		s.connsMu.Lock()
		for c := range s.conns {
			_ = c.Conn.Close()
		}
		s.conns, s.closed = nil, true
		s.connsMu.Unlock()
		s.handlers.Wait()
	})
	return s.lnErr
}

// trackedConn removes itself from its StreamLayer's set when closed.
type trackedConn struct {
	net.Conn
	s       *StreamLayer
	peer    string // the peer's coordinator id
	inbound bool   // accepted: counted in s.inbound until closed
	once    sync.Once
}

// Write delays as the peer's Fault says.
func (c *trackedConn) Write(p []byte) (int, error) {
	f := c.s.faultFor(c.peer)
	if f.Drop {
		_ = c.Close()
		return 0, fmt.Errorf("raftnet: write to %s: %w", c.peer, ErrDropped)
	}
	if f.Delay > 0 {
		time.Sleep(f.Delay)
	}
	return c.Conn.Write(p)
}

func (c *trackedConn) Close() error {
	c.s.connsMu.Lock()
	delete(c.s.conns, c)
	c.s.connsMu.Unlock()
	err := c.Conn.Close()
	if c.inbound {
		c.once.Do(func() { c.s.inbound.Add(-1) })
	}
	return err
}

// track registers c for closing by Close; after Close it closes c at once.
// An inbound connection is counted until its user closes it.
func (s *StreamLayer) track(c net.Conn, peer string, inbound bool) net.Conn {
	tc := &trackedConn{Conn: c, s: s, peer: peer, inbound: inbound}
	if inbound {
		s.inbound.Add(1)
	}
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.closed {
		_ = c.Close()
		return tc
	}
	if s.conns == nil {
		s.conns = make(map[*trackedConn]struct{})
	}
	s.conns[tc] = struct{}{}
	return tc
}

// Addr returns the address peers dial to reach this node: Config.Advertise
// or the listener's address.
func (s *StreamLayer) Addr() net.Addr { return s.addr }

// Dial connects to a peer and completes the TLS handshake within timeout
// (0 means Config.HandshakeTimeout). Close aborts pending dials. The
// server name verified against the peer's certificate is the host of
// address.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	limit := s.handshakeTimeout
	if timeout > 0 {
		limit = timeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return s.dial(ctx, string(address), "")
}

// DialProtocol connects to a peer for one of the Config.Protocols (by
// ALPN); the peer must serve it. ctx bounds the dial and handshake.
func (s *StreamLayer) DialProtocol(ctx context.Context, address, alpn string) (net.Conn, error) {
	return s.dial(ctx, address, alpn)
}

func (s *StreamLayer) dial(ctx context.Context, address, alpn string) (net.Conn, error) {
	if s.ctx.Err() != nil {
		return nil, fmt.Errorf("raftnet: dial %s: %w", address, net.ErrClosed)
	}
	cfg := s.client.Clone()
	cfg.ServerName = pki.ServerNameFor(address)
	if alpn != "" {
		cfg.NextProtos = []string{alpn}
	}
	want := ""
	if len(cfg.NextProtos) > 0 {
		want = cfg.NextProtos[0]
	}
	ctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("raftnet: dial %s: %w", address, err)
	}
	tc := c.(*tls.Conn)
	if want != "" && tc.ConnectionState().NegotiatedProtocol != want {
		_ = c.Close()
		return nil, fmt.Errorf("raftnet: dial %s: the peer does not serve %s", address, want)
	}
	peer := ""
	if id, err := pki.PeerIdentity(tc.ConnectionState()); err == nil {
		peer = id.ID
	}
	if s.faultFor(peer).Drop {
		_ = c.Close()
		return nil, fmt.Errorf("raftnet: dial %s (%s): %w", address, peer, ErrDropped)
	}
	return s.track(c, peer, false), nil
}

// ErrDropped: SetFault drops the traffic with this peer.
var ErrDropped = errors.New("dropped by an injected fault")

// SetFault makes the stream layer drop or delay the traffic with peers (by
// coordinator id), for fault-injection tests: fn is asked at every
// connection and every write; nil removes all faults. Connections with
// peers that fn now drops are closed at once.
func (s *StreamLayer) SetFault(fn func(peer string) Fault) {
	if fn == nil {
		s.fault.Store(nil)
		return
	}
	s.fault.Store(&fn)
	s.connsMu.Lock()
	var drop []*trackedConn
	for c := range s.conns {
		if fn(c.peer).Drop {
			drop = append(drop, c)
		}
	}
	s.connsMu.Unlock()
	for _, c := range drop {
		_ = c.Close()
	}
}

func (s *StreamLayer) faultFor(peer string) Fault {
	fn := s.fault.Load()
	if fn == nil {
		return Fault{}
	}
	return (*fn)(peer)
}

// advertiseAddr is a configured advertise address.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }
