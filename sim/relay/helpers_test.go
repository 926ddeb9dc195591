package relay_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cohort-fl/cohort/sim/relay"
)

// TestMain fails the package if any test leaves a goroutine running: Run
// and Close must wait for everything the relay started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait for a condition; it is a guard against a
// hung test, not a performance assertion.
const waitTimeout = 15 * time.Second

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// startRelay creates a relay from cfg and runs it until the test ends,
// checking that Run then returns nil.
func startRelay(t *testing.T, cfg relay.Config) *relay.Relay {
	t.Helper()
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	errC := make(chan error, 1)
	go func() { errC <- r.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-errC; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// datagram is one datagram received by a peer.
type datagram struct {
	from netip.AddrPort
	data string
}

// peer is a UDP socket on loopback that records what it receives and, if
// it echoes, answers each datagram with "echo:" and its payload.
type peer struct {
	conn  *net.UDPConn
	recvC chan datagram
}

func newPeer(t *testing.T, echo bool) *peer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &peer{conn: conn, recvC: make(chan datagram, 4096)}
	var wg sync.WaitGroup
	doneC := make(chan struct{})
	wg.Go(func() {
		buf := make([]byte, relay.MaxDatagramSize)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			if echo {
				_, _ = conn.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
			}
			select {
			case p.recvC <- datagram{from: from, data: string(buf[:n])}:
			case <-doneC:
				return
			}
		}
	})
	t.Cleanup(func() {
		close(doneC)
		conn.Close()
		wg.Wait()
	})
	return p
}

func (p *peer) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *peer) send(t *testing.T, to *net.UDPAddr, data string) {
	t.Helper()
	if _, err := p.conn.WriteToUDP([]byte(data), to); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// next returns the next datagram received.
func (p *peer) next(t *testing.T) datagram {
	t.Helper()
	select {
	case d := <-p.recvC:
		return d
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a datagram")
		return datagram{}
	}
}

// fakeClock is a Clock whose time moves only by Advance. Sleep blocks
// until Advance reaches its deadline or ctx ends.
type fakeClock struct {
	mu       sync.Mutex
	now      time.Time
	sleepers []*sleeper
	calls    int // Sleep calls with d > 0
}

type sleeper struct {
	until time.Time
	d     time.Duration
	wakeC chan struct{}
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	c.mu.Lock()
	s := &sleeper{until: c.now.Add(d), d: d, wakeC: make(chan struct{})}
	c.sleepers = append(c.sleepers, s)
	c.calls++
	c.mu.Unlock()
	select {
	case <-s.wakeC:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		c.sleepers = slices.DeleteFunc(c.sleepers, func(o *sleeper) bool { return o == s })
		c.mu.Unlock()
		return ctx.Err()
	}
}

// Advance moves the clock by d and wakes the sleepers whose deadline has
// come.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.sleepers = slices.DeleteFunc(c.sleepers, func(s *sleeper) bool {
		if s.until.After(c.now) {
			return false
		}
		close(s.wakeC)
		return true
	})
}

// sleeping returns the durations asked for by the current sleepers.
func (c *fakeClock) sleeping() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	for _, s := range c.sleepers {
		ds = append(ds, s.d)
	}
	return ds
}

// sleepCalls returns the number of Sleep calls that had to wait.
func (c *fakeClock) sleepCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}
