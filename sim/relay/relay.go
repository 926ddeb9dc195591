package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/clock"
)

// Direction is one direction of the relayed link.
type Direction int

// The two directions.
const (
	// ToTarget is from the clients to the target.
	ToTarget Direction = iota
	// ToClient is from the target back to a client.
	ToClient
)

func (d Direction) String() string {
	switch d {
	case ToTarget:
		return "to-target"
	case ToClient:
		return "to-client"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

func (d Direction) valid() bool { return d == ToTarget || d == ToClient }

// DirStats counts the datagrams of one direction since New.
type DirStats struct {
	// Forwarded is the number of datagrams delivered, and Bytes their
	// total payload size.
	Forwarded, Bytes uint64
	// DroppedLoss is the number of datagrams dropped by Link.Loss.
	DroppedLoss uint64
	// DroppedDown is the number of datagrams dropped because the link was
	// down, when they arrived or when they fell due.
	DroppedDown uint64
	// DroppedOverflow is the number of datagrams dropped because the
	// queue was full.
	DroppedOverflow uint64
	// SendErrors is the number of datagrams whose final write failed, for
	// example because their session had just expired.
	SendErrors uint64
	// Queued is the number of datagrams waiting for delivery now.
	Queued int
}

// Stats is a snapshot of a Relay's counters.
type Stats struct {
	// ToTarget and ToClient count each direction.
	ToTarget, ToClient DirStats
	// SessionsOpen is the number of client sessions, each with its
	// upstream socket, open now.
	SessionsOpen int
	// SessionsExpired is the number of sessions closed for idleness.
	SessionsExpired uint64
}

// Relay forwards datagrams between its clients and a target over a
// simulated link. Create it with New, start it with Run, stop it with
// Close (or by cancelling Run's context). Its methods are safe for
// concurrent use.
//
// Locks: linkMu may be held while taking nothing else. direction.mu and
// sessMu are never held together.
type Relay struct {
	cfg    Config
	clock  Clock
	log    *slog.Logger
	conn   *net.UDPConn // the clients' side
	target *net.UDPAddr
	dirs   [2]*direction

	// linkMu guards links. Delivery holds it for reading while it checks
	// Down and writes, so that Set(Down) waits for a write in progress and
	// nothing is delivered after it returns.
	linkMu sync.RWMutex
	links  [2]Link

	// sessMu guards sessions and sessClosed.
	sessMu     sync.Mutex
	sessions   map[netip.AddrPort]*session
	sessClosed bool // set by closeSockets: no new session may open
	expired    atomic.Uint64

	wg sync.WaitGroup // every goroutine Run starts

	closeOnce sync.Once
	closeC    chan struct{} // closed by Close
	doneC     chan struct{} // closed when Run returns
	sockOnce  sync.Once
	sockErr   error // from closing conn, set in sockOnce

	// mu guards started and closed.
	mu      sync.Mutex
	started bool
	closed  bool
}

// direction is the state of one direction of the link.
type direction struct {
	d      Direction
	readyC chan struct{} // capacity 1: a token when the queue may have become non-empty

	// mu guards the fields below; it is held while a datagram is admitted,
	// so that queue order and due times agree.
	mu      sync.Mutex
	queue   []packet   // ring buffer of the datagrams waiting, len QueueLen
	head, n int        // index of the oldest datagram, number waiting
	loss    *rand.Rand // one draw per datagram received
	jitter  *rand.Rand // one draw per datagram queued with Jitter > 0
	lastDue time.Time  // due time of the last datagram queued

	forwarded, bytes, droppedLoss, droppedDown, droppedOverflow, sendErrors atomic.Uint64
}

// push queues p, reporting false if the queue is full. d.mu must be held.
func (d *direction) push(p packet) bool {
	if d.n == len(d.queue) {
		return false
	}
	d.queue[(d.head+d.n)%len(d.queue)] = p
	d.n++
	select {
	case d.readyC <- struct{}{}:
	default:
	}
	return true
}

// peek returns the oldest datagram waiting. Only the delivery goroutine
// removes datagrams, so it stays the oldest until that goroutine pops it.
func (d *direction) peek() (packet, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == 0 {
		return packet{}, false
	}
	return d.queue[d.head], true
}

// pop removes the oldest datagram.
func (d *direction) pop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queue[d.head] = packet{} // release the buffer
	d.head = (d.head + 1) % len(d.queue)
	d.n--
}

// packet is a datagram waiting for delivery.
type packet struct {
	data []byte
	due  time.Time
	sess *session // its socket sends ToTarget; its client address receives ToClient
}

// session is a client address and its upstream socket.
type session struct {
	client netip.AddrPort
	conn   *net.UDPConn // connected to the target
	last   atomic.Int64 // Unix nanoseconds of the last datagram, by the Clock
}

func (s *session) touch(now time.Time) { s.last.Store(now.UnixNano()) }

// New checks cfg, resolves the target and binds the listening socket, so
// that Addr is known; it starts nothing. Close releases the socket.
func New(cfg Config) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.SessionIdleTimeout == 0 {
		cfg.SessionIdleTimeout = DefaultSessionIdleTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	target, err := net.ResolveUDPAddr("udp", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("resolve target %q: %w", cfg.Target, err)
	}
	laddr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("resolve listen address %q: %w", cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", cfg.Listen, err)
	}
	// Bursts from QUIC's congestion window should not overflow the
	// kernel's buffer before the relay reads them; best effort.
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)

	r := &Relay{
		cfg:      cfg,
		clock:    cfg.Clock,
		conn:     conn,
		target:   target,
		links:    [2]Link{cfg.Link, cfg.Link},
		sessions: map[netip.AddrPort]*session{},
		closeC:   make(chan struct{}),
		doneC:    make(chan struct{}),
	}
	r.log = log.With("component", "relay", "listen", conn.LocalAddr().String(), "target", target.String())
	for _, d := range []Direction{ToTarget, ToClient} {
		// Distinct streams per direction and purpose, all from Seed.
		k := 2 * uint64(d)
		r.dirs[d] = &direction{
			d:      d,
			readyC: make(chan struct{}, 1),
			queue:  make([]packet, cfg.QueueLen),
			loss:   rand.New(rand.NewPCG(cfg.Seed, streamKey(k))),   // #nosec G404 -- seeded simulated packet loss, reproducible from the scenario's seed
			jitter: rand.New(rand.NewPCG(cfg.Seed, streamKey(k+1))), // #nosec G404 -- seeded simulated jitter, reproducible from the scenario's seed
		}
	}
	return r, nil
}

// streamKey spreads small stream numbers over the PCG's second seed word.
func streamKey(k uint64) uint64 { return (k + 1) * 0x9e3779b97f4a7c15 }

// Addr returns the address the clients must send to.
func (r *Relay) Addr() *net.UDPAddr {
	return r.conn.LocalAddr().(*net.UDPAddr)
}

// Target returns the resolved target address.
func (r *Relay) Target() *net.UDPAddr { return r.target }

// Set applies l to both directions, at once; datagrams already queued keep
// their due time. It returns an error wrapping ErrInvalidLink if l is
// invalid, and then changes nothing.
func (r *Relay) Set(l Link) error {
	if err := l.Validate(); err != nil {
		return err
	}
	r.linkMu.Lock()
	r.links = [2]Link{l, l}
	r.linkMu.Unlock()
	r.log.Debug("link set", "loss", l.Loss, "latency", l.Latency, "jitter", l.Jitter, "down", l.Down)
	return nil
}

// SetDirection applies l to direction d only, for asymmetric links and
// one-way partitions.
func (r *Relay) SetDirection(d Direction, l Link) error {
	if !d.valid() {
		return fmt.Errorf("%w: unknown direction %v", ErrInvalidLink, d)
	}
	if err := l.Validate(); err != nil {
		return err
	}
	r.linkMu.Lock()
	r.links[d] = l
	r.linkMu.Unlock()
	r.log.Debug("link set", "direction", d, "loss", l.Loss, "latency", l.Latency, "jitter", l.Jitter, "down", l.Down)
	return nil
}

// Link returns the current condition of direction d (the zero Link for an
// unknown direction).
func (r *Relay) Link(d Direction) Link {
	if !d.valid() {
		return Link{}
	}
	r.linkMu.RLock()
	defer r.linkMu.RUnlock()
	return r.links[d]
}

// Stats returns a snapshot of the counters. The fields are read one by
// one, so a snapshot taken while traffic flows need not be consistent
// across fields.
func (r *Relay) Stats() Stats {
	r.sessMu.Lock()
	open := len(r.sessions)
	r.sessMu.Unlock()
	return Stats{
		ToTarget:        r.dirs[ToTarget].stats(),
		ToClient:        r.dirs[ToClient].stats(),
		SessionsOpen:    open,
		SessionsExpired: r.expired.Load(),
	}
}

func (d *direction) stats() DirStats {
	d.mu.Lock()
	queued := d.n
	d.mu.Unlock()
	return DirStats{
		Forwarded:       d.forwarded.Load(),
		Bytes:           d.bytes.Load(),
		DroppedLoss:     d.droppedLoss.Load(),
		DroppedDown:     d.droppedDown.Load(),
		DroppedOverflow: d.droppedOverflow.Load(),
		SendErrors:      d.sendErrors.Load(),
		Queued:          queued,
	}
}

// Run relays datagrams until ctx ends or Close is called, then closes the
// sockets, drops the queued datagrams, waits for every goroutine it
// started and returns nil. Run may be called once: a second call returns
// ErrRunning while the first runs and ErrClosed after it, as does a call
// after Close.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case r.started:
		r.mu.Unlock()
		return ErrRunning
	}
	r.started = true
	r.mu.Unlock()
	defer close(r.doneC)
	defer func() {
		r.mu.Lock()
		r.closed = true // the sockets are gone: the Relay cannot run again
		r.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.log.Info("relay running")
	r.wg.Go(func() {
		select {
		case <-r.closeC:
			cancel()
		case <-ctx.Done():
		}
	})
	r.wg.Go(func() { r.readClients(ctx) })
	r.wg.Go(func() { r.deliver(ctx, r.dirs[ToTarget]) })
	r.wg.Go(func() { r.deliver(ctx, r.dirs[ToClient]) })
	r.wg.Go(func() { r.expireSessions(ctx) })

	<-ctx.Done()
	r.closeSockets() // unblocks the readers
	r.wg.Wait()
	st := r.Stats()
	r.log.Info("relay stopped",
		"to_target", st.ToTarget.Forwarded, "to_client", st.ToClient.Forwarded,
		"dropped_loss", st.ToTarget.DroppedLoss+st.ToClient.DroppedLoss,
		"dropped_down", st.ToTarget.DroppedDown+st.ToClient.DroppedDown,
		"dropped_overflow", st.ToTarget.DroppedOverflow+st.ToClient.DroppedOverflow)
	return nil
}

// Close stops Run, waits for it to return and releases the sockets. It is
// idempotent and may be called before, during or after Run; calling it
// before Run makes Run return ErrClosed.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.closeC)
	})
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	if started {
		<-r.doneC
	}
	r.closeSockets()
	if r.sockErr != nil {
		return fmt.Errorf("close relay socket: %w", r.sockErr)
	}
	return nil
}

// closeSockets closes the listening socket and every session's socket,
// and stops new sessions from opening. It is idempotent.
func (r *Relay) closeSockets() {
	r.sockOnce.Do(func() {
		r.sockErr = r.conn.Close()
		r.sessMu.Lock()
		defer r.sessMu.Unlock()
		r.sessClosed = true
		for addr, s := range r.sessions {
			s.conn.Close()
			delete(r.sessions, addr)
		}
	})
}

// readClients reads the datagrams of every client until the listening
// socket is closed.
func (r *Relay) readClients(ctx context.Context) {
	buf := make([]byte, MaxDatagramSize)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			r.log.Debug("read from clients", "err", err)
			continue
		}
		now := r.clock.Now()
		s, err := r.session(ctx, from, now)
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				r.log.Warn("datagram dropped", "client", from, "err", err)
			}
			continue
		}
		r.admit(r.dirs[ToTarget], s, buf[:n], now)
	}
}

// session returns the session of client from, opening it if needed.
func (r *Relay) session(ctx context.Context, from netip.AddrPort, now time.Time) (*session, error) {
	r.sessMu.Lock()
	defer r.sessMu.Unlock()
	if s := r.sessions[from]; s != nil {
		return s, nil
	}
	if r.sessClosed {
		return nil, ErrClosed
	}
	conn, err := net.DialUDP("udp", nil, r.target)
	if err != nil {
		return nil, fmt.Errorf("open upstream socket: %w", err)
	}
	_ = conn.SetReadBuffer(1 << 20)
	s := &session{client: from, conn: conn}
	s.touch(now)
	r.sessions[from] = s
	r.log.Debug("session opened", "client", from, "upstream", conn.LocalAddr().String())
	// The caller, readClients, is counted in wg, so wg cannot be at zero.
	r.wg.Go(func() { r.readTarget(ctx, s) })
	return s, nil
}

// readTarget reads the target's replies to session s until its socket is
// closed.
func (r *Relay) readTarget(ctx context.Context, s *session) {
	buf := make([]byte, MaxDatagramSize)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// A connected UDP socket reports an ICMP error (the target
			// not listening yet) on the next read; keep reading.
			r.log.Debug("read from target", "client", s.client, "err", err)
			continue
		}
		r.admit(r.dirs[ToClient], s, buf[:n], r.clock.Now())
	}
}

// admit applies the link of direction d to a datagram received at now:
// drops it or queues a copy for delivery.
func (r *Relay) admit(d *direction, s *session, b []byte, now time.Time) {
	s.touch(now)
	r.linkMu.RLock()
	l := r.links[d.d]
	r.linkMu.RUnlock()

	d.mu.Lock()
	defer d.mu.Unlock()
	lost := d.loss.Float64() < l.Loss // drawn even when down: see Seed
	switch {
	case l.Down:
		d.droppedDown.Add(1)
		return
	case lost:
		d.droppedLoss.Add(1)
		return
	}
	delay := l.Latency
	if l.Jitter > 0 {
		delay += time.Duration(d.jitter.Int64N(int64(l.Jitter) + 1))
	}
	due := now.Add(delay)
	if due.Before(d.lastDue) {
		due = d.lastDue // FIFO: never before the previous datagram
	}
	if !d.push(packet{data: bytes.Clone(b), due: due, sess: s}) {
		d.droppedOverflow.Add(1)
		return
	}
	d.lastDue = due
}

// deliver sends the datagrams of direction d as they fall due, until ctx
// ends.
func (r *Relay) deliver(ctx context.Context, d *direction) {
	for ctx.Err() == nil {
		p, ok := d.peek()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-d.readyC:
			}
			continue
		}
		if wait := p.due.Sub(r.clock.Now()); wait > 0 {
			if err := r.clock.Sleep(ctx, wait); err != nil {
				return
			}
		}
		r.send(d, p)
		d.pop()
	}
}

// send writes p unless direction d is down.
func (r *Relay) send(d *direction, p packet) {
	r.linkMu.RLock()
	defer r.linkMu.RUnlock()
	if r.links[d.d].Down {
		d.droppedDown.Add(1)
		return
	}
	var err error
	if d.d == ToTarget {
		_, err = p.sess.conn.Write(p.data)
	} else {
		_, err = r.conn.WriteToUDPAddrPort(p.data, p.sess.client)
	}
	if err != nil {
		d.sendErrors.Add(1)
		r.log.Debug("send", "direction", d.d, "client", p.sess.client, "err", err)
		return
	}
	d.forwarded.Add(1)
	d.bytes.Add(uint64(len(p.data)))
}

// expireSessions closes the sessions idle for longer than
// SessionIdleTimeout, checking every quarter of it, until ctx ends.
func (r *Relay) expireSessions(ctx context.Context) {
	timeout := r.cfg.SessionIdleTimeout
	every := max(timeout/4, time.Millisecond)
	for r.clock.Sleep(ctx, every) == nil {
		cutoff := r.clock.Now().Add(-timeout).UnixNano()
		r.sessMu.Lock()
		for addr, s := range r.sessions {
			if s.last.Load() < cutoff {
				s.conn.Close()
				delete(r.sessions, addr)
				r.expired.Add(1)
				r.log.Debug("session expired", "client", addr)
			}
		}
		r.sessMu.Unlock()
	}
}
