package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/sim/relay"
)

func TestValidate(t *testing.T) {
	valid := relay.DefaultConfig()
	valid.Target = "127.0.0.1:4242"
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name     string
		change   func(*relay.Config)
		wantLink bool   // the error also wraps ErrInvalidLink
		wantText string // part of the message
	}{
		{"empty target", func(c *relay.Config) { c.Target = "" }, false, "target is empty"},
		{"target without port", func(c *relay.Config) { c.Target = "127.0.0.1" }, false, "target"},
		{"bad listen", func(c *relay.Config) { c.Listen = "nope" }, false, "listen"},
		{"negative loss", func(c *relay.Config) { c.Link.Loss = -0.1 }, true, "loss -0.1 is outside [0, 1]"},
		{"loss above one", func(c *relay.Config) { c.Link.Loss = 1.5 }, true, "loss 1.5 is outside [0, 1]"},
		{"NaN loss", func(c *relay.Config) { c.Link.Loss = math.NaN() }, true, "loss NaN"},
		{"negative latency", func(c *relay.Config) { c.Link.Latency = -time.Millisecond }, true, "latency -1ms is negative"},
		{"negative jitter", func(c *relay.Config) { c.Link.Jitter = -time.Millisecond }, true, "jitter -1ms is negative"},
		{"overflowing delay", func(c *relay.Config) { c.Link.Latency, c.Link.Jitter = math.MaxInt64, 1 }, true, "overflows"},
		{"negative queue", func(c *relay.Config) { c.QueueLen = -1 }, false, "queue length -1"},
		{"negative idle timeout", func(c *relay.Config) { c.SessionIdleTimeout = -time.Second }, false, "session idle timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.change(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, relay.ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			if errors.Is(err, relay.ErrInvalidLink) != tt.wantLink {
				t.Errorf("Validate = %v: wraps ErrInvalidLink = %v, want %v", err, !tt.wantLink, tt.wantLink)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Validate = %q, want it to mention %q", err, tt.wantText)
			}
			if _, err := relay.New(cfg); !errors.Is(err, relay.ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestSetRejectsInvalidLink(t *testing.T) {
	r, err := relay.New(relay.Config{Target: "127.0.0.1:4242"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	good := relay.Link{Loss: 0.25, Latency: time.Millisecond}
	if err := r.Set(good); err != nil {
		t.Fatalf("Set(%+v) = %v", good, err)
	}
	if err := r.Set(relay.Link{Loss: 2}); !errors.Is(err, relay.ErrInvalidLink) {
		t.Errorf("Set(loss 2) = %v, want ErrInvalidLink", err)
	}
	if err := r.SetDirection(relay.ToClient, relay.Link{Jitter: -1}); !errors.Is(err, relay.ErrInvalidLink) {
		t.Errorf("SetDirection(negative jitter) = %v, want ErrInvalidLink", err)
	}
	if err := r.SetDirection(relay.Direction(7), relay.Link{}); !errors.Is(err, relay.ErrInvalidLink) {
		t.Errorf("SetDirection(unknown direction) = %v, want ErrInvalidLink", err)
	}
	for _, d := range []relay.Direction{relay.ToTarget, relay.ToClient} {
		if got := r.Link(d); got != good {
			t.Errorf("Link(%v) = %+v after rejected changes, want %+v", d, got, good)
		}
	}
}

func TestLifecycle(t *testing.T) {
	t.Run("Addr is known before Run and Close releases it", func(t *testing.T) {
		r, err := relay.New(relay.Config{Target: "127.0.0.1:4242"})
		if err != nil {
			t.Fatal(err)
		}
		addr := r.Addr()
		if addr.Port == 0 || !addr.IP.IsLoopback() {
			t.Fatalf("Addr = %v, want a loopback address with a port", addr)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := r.Run(context.Background()); !errors.Is(err, relay.ErrClosed) {
			t.Fatalf("Run after Close = %v, want ErrClosed", err)
		}
		c, err := net.ListenUDP("udp", addr)
		if err != nil {
			t.Fatalf("the relay's port is still bound after Close: %v", err)
		}
		c.Close()
	})
	t.Run("second Run fails and context ends the first", func(t *testing.T) {
		r, err := relay.New(relay.Config{Target: "127.0.0.1:4242"})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithCancel(context.Background())
		errC := make(chan error, 2)
		go func() { errC <- r.Run(ctx) }()
		go func() { errC <- r.Run(ctx) }()
		if err := <-errC; !errors.Is(err, relay.ErrRunning) {
			t.Fatalf("one of two concurrent Runs = %v, want ErrRunning", err)
		}
		cancel()
		if err := <-errC; err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
		if err := r.Run(context.Background()); !errors.Is(err, relay.ErrClosed) {
			t.Fatalf("Run after Run returned = %v, want ErrClosed", err)
		}
	})
	t.Run("New fails on a bound address", func(t *testing.T) {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = relay.New(relay.Config{Listen: c.LocalAddr().String(), Target: "127.0.0.1:4242"})
		if err == nil || !strings.Contains(err.Error(), "listen on") {
			t.Fatalf("New on a bound address = %v, want a listen error", err)
		}
	})
}

// TestForwardsPerClientSessions checks that each client gets its own
// upstream socket, that replies go back to the right client, and the
// counters of a clean link.
func TestForwardsPerClientSessions(t *testing.T) {
	target := newPeer(t, true)
	r := startRelay(t, relay.Config{Target: target.addr().String()})
	a, b := newPeer(t, false), newPeer(t, false)

	a.send(t, r.Addr(), "from-a")
	got := target.next(t)
	if got.data != "from-a" {
		t.Fatalf("target got %q, want from-a", got.data)
	}
	fromA := got.from
	b.send(t, r.Addr(), "from-b")
	got = target.next(t)
	if got.data != "from-b" {
		t.Fatalf("target got %q, want from-b", got.data)
	}
	if got.from == fromA {
		t.Fatalf("both clients reach the target from %v, want one upstream socket each", fromA)
	}
	if reply := a.next(t); reply.data != "echo:from-a" {
		t.Errorf("client a got %q, want echo:from-a", reply.data)
	}
	if reply := b.next(t); reply.data != "echo:from-b" {
		t.Errorf("client b got %q, want echo:from-b", reply.data)
	}
	a.send(t, r.Addr(), "again-a")
	if got := target.next(t); got.from != fromA {
		t.Errorf("client a's second datagram came from %v, want its session's %v", got.from, fromA)
	}
	if reply := a.next(t); reply.data != "echo:again-a" {
		t.Errorf("client a got %q, want echo:again-a", reply.data)
	}

	// A datagram is counted just after it is written, so the counters may
	// lag what the peers saw.
	wantUp := relay.DirStats{Forwarded: 3, Bytes: uint64(len("from-a") + len("from-b") + len("again-a"))}
	wantDown := relay.DirStats{Forwarded: 3, Bytes: wantUp.Bytes + 3*uint64(len("echo:"))}
	waitFor(t, "the counters to catch up", func() bool { return r.Stats().ToClient.Forwarded == 3 && r.Stats().ToTarget.Forwarded == 3 })
	if st := r.Stats(); st.ToTarget != wantUp || st.ToClient != wantDown || st.SessionsOpen != 2 {
		t.Errorf("Stats = %+v, want to-target %+v, to-client %+v, 2 sessions", st, wantUp, wantDown)
	}
}

// TestDropsAreCounted checks that loss and outages drop datagrams, in the
// direction they are set on, and are counted.
func TestDropsAreCounted(t *testing.T) {
	const n = 20
	tests := []struct {
		name     string
		dir      relay.Direction
		link     relay.Link
		wantDrop func(relay.DirStats) uint64
	}{
		{"loss to target", relay.ToTarget, relay.Link{Loss: 1}, func(s relay.DirStats) uint64 { return s.DroppedLoss }},
		{"down to target", relay.ToTarget, relay.Link{Down: true}, func(s relay.DirStats) uint64 { return s.DroppedDown }},
		{"loss to client", relay.ToClient, relay.Link{Loss: 1}, func(s relay.DirStats) uint64 { return s.DroppedLoss }},
		{"down to client", relay.ToClient, relay.Link{Down: true}, func(s relay.DirStats) uint64 { return s.DroppedDown }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := newPeer(t, true)
			r := startRelay(t, relay.Config{Target: target.addr().String()})
			if err := r.SetDirection(tt.dir, tt.link); err != nil {
				t.Fatal(err)
			}
			client := newPeer(t, false)
			for i := range n {
				client.send(t, r.Addr(), strconv.Itoa(i))
			}
			dir := func(s relay.Stats) relay.DirStats {
				if tt.dir == relay.ToTarget {
					return s.ToTarget
				}
				return s.ToClient
			}
			waitFor(t, fmt.Sprintf("%d drops", n), func() bool { return tt.wantDrop(dir(r.Stats())) == n })
			if tt.dir == relay.ToClient { // only this direction is lossy
				waitFor(t, "the datagrams to the target counted", func() bool { return r.Stats().ToTarget.Forwarded == n })
			}
			if d := dir(r.Stats()); d.Forwarded != 0 || d.Bytes != 0 {
				t.Errorf("%v: %+v, want nothing forwarded", tt.dir, d)
			}
			if len(client.recvC) != 0 {
				t.Errorf("the client received %d datagrams, want none", len(client.recvC))
			}
		})
	}
}

// TestSeedReproducesLoss sends the same datagrams through relays with a
// lossy link: the same seed drops the same ones, another seed others.
func TestSeedReproducesLoss(t *testing.T) {
	const n, batch = 200, 25
	arrived := func(seed uint64) []int {
		target := newPeer(t, false)
		r := startRelay(t, relay.Config{Target: target.addr().String(), Seed: seed, Link: relay.Link{Loss: 0.5}})
		client := newPeer(t, false)
		for i := range n {
			client.send(t, r.Addr(), strconv.Itoa(i))
			if (i+1)%batch == 0 { // keep the socket buffers from overflowing
				waitFor(t, "the relay to read a batch", func() bool {
					st := r.Stats().ToTarget
					return st.Forwarded+st.DroppedLoss == uint64(i+1)
				})
			}
		}
		forwarded := int(r.Stats().ToTarget.Forwarded)
		var got []int
		for range forwarded {
			i, err := strconv.Atoi(target.next(t).data)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, i)
		}
		return got
	}
	first, again, other := arrived(7), arrived(7), arrived(8)
	if len(first) == 0 || len(first) == n {
		t.Fatalf("%d of %d datagrams arrived with loss 0.5", len(first), n)
	}
	if !slices.Equal(first, again) {
		t.Errorf("seed 7 delivered %v, then %v", first, again)
	}
	if slices.Equal(first, other) {
		t.Errorf("seeds 7 and 8 delivered the same datagrams %v", first)
	}
}

// TestQueueBound fills a small queue behind a long latency: the datagrams
// that find it full are dropped and counted.
func TestQueueBound(t *testing.T) {
	const queueLen, n = 4, 10
	target := newPeer(t, false)
	r := startRelay(t, relay.Config{
		Target:   target.addr().String(),
		QueueLen: queueLen,
		Link:     relay.Link{Latency: time.Hour},
	})
	client := newPeer(t, false)
	for i := range n {
		client.send(t, r.Addr(), strconv.Itoa(i))
	}
	waitFor(t, "every datagram queued or dropped", func() bool {
		st := r.Stats().ToTarget
		return uint64(st.Queued)+st.DroppedOverflow == n
	})
	if st := r.Stats().ToTarget; st.Queued != queueLen || st.DroppedOverflow != n-queueLen || st.Forwarded != 0 {
		t.Errorf("to-target %+v, want %d queued, %d dropped for overflow, none forwarded", st, queueLen, n-queueLen)
	}
}

// TestLatencyAndJitter checks on a fake clock that a datagram waits
// Latency plus at most Jitter, and that jitter does not reorder.
func TestLatencyAndJitter(t *testing.T) {
	const n = 20
	const latency, jitter = 10 * time.Second, 5 * time.Second
	clk := newFakeClock()
	target := newPeer(t, false)
	r := startRelay(t, relay.Config{
		Target:             target.addr().String(),
		Link:               relay.Link{Latency: latency, Jitter: jitter},
		SessionIdleTimeout: time.Hour, // its check sleeps 15m: not a delivery wait
		Clock:              clk,
	})
	client := newPeer(t, false)
	for i := range n {
		client.send(t, r.Addr(), strconv.Itoa(i))
	}
	delivering := func() bool {
		return slices.ContainsFunc(clk.sleeping(), func(d time.Duration) bool { return d >= latency && d <= latency+jitter })
	}
	waitFor(t, "all datagrams queued and the first one waiting", func() bool {
		return r.Stats().ToTarget.Queued == n && delivering()
	})
	if st := r.Stats().ToTarget; st.Forwarded != 0 {
		t.Fatalf("%d datagrams forwarded before the latency elapsed", st.Forwarded)
	}
	clk.Advance(latency + jitter)
	for i := range n {
		if got := target.next(t).data; got != strconv.Itoa(i) {
			t.Fatalf("datagram %d arrived as %s: jitter reordered the link", i, got)
		}
	}
}

// TestSessionExpiry checks on a fake clock that an idle session's
// upstream socket is closed, that traffic keeps a session alive, and that
// the client gets a new session afterwards.
func TestSessionExpiry(t *testing.T) {
	const idle = time.Minute
	clk := newFakeClock()
	target := newPeer(t, true)
	r := startRelay(t, relay.Config{Target: target.addr().String(), SessionIdleTimeout: idle, Clock: clk})
	client := newPeer(t, false)

	roundTrip := func(msg string) datagram {
		t.Helper()
		client.send(t, r.Addr(), msg)
		got := target.next(t)
		if reply := client.next(t); reply.data != "echo:"+msg {
			t.Fatalf("client got %q, want echo:%s", reply.data, msg)
		}
		return got
	}
	// sweep advances the clock by d and waits for the expiry check it
	// triggers to finish (the checker's next Sleep).
	sweep := func(d time.Duration) {
		t.Helper()
		calls := clk.sleepCalls()
		clk.Advance(d)
		waitFor(t, "an expiry check", func() bool { return clk.sleepCalls() > calls })
	}

	upstream := roundTrip("a").from
	waitFor(t, "the expiry checker to sleep", func() bool { return clk.sleepCalls() == 1 })
	sweep(idle / 2)
	if got := roundTrip("b").from; got != upstream {
		t.Fatalf("second datagram from %v, want the same session's %v", got, upstream)
	}
	sweep(idle/2 + idle/4) // 75s since the first datagram, 45s since the last
	if st := r.Stats(); st.SessionsOpen != 1 || st.SessionsExpired != 0 {
		t.Fatalf("an active session expired: %+v", st)
	}
	sweep(idle)
	if st := r.Stats(); st.SessionsOpen != 0 || st.SessionsExpired != 1 {
		t.Fatalf("after %v idle: %+v, want the session expired", idle, st)
	}
	// Binding the session's port succeeds only if its socket is closed.
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(upstream))
	if err != nil {
		t.Fatalf("the expired session's socket %v is still open: %v", upstream, err)
	}
	c.Close()

	roundTrip("c")
	if st := r.Stats(); st.SessionsOpen != 1 {
		t.Fatalf("after new traffic: %+v, want a new session", st)
	}
}

// TestDownDropsQueued checks on a fake clock that datagrams queued before
// an outage are dropped if they fall due while the link is down, and that
// the link carries traffic again once it is back up.
func TestDownDropsQueued(t *testing.T) {
	const n, latency = 5, 10 * time.Second
	clk := newFakeClock()
	target := newPeer(t, false)
	r := startRelay(t, relay.Config{
		Target:             target.addr().String(),
		Link:               relay.Link{Latency: latency},
		SessionIdleTimeout: time.Hour,
		Clock:              clk,
	})
	client := newPeer(t, false)
	for i := range n {
		client.send(t, r.Addr(), strconv.Itoa(i))
	}
	waitFor(t, "all datagrams queued and the first one waiting", func() bool {
		return r.Stats().ToTarget.Queued == n && slices.Contains(clk.sleeping(), latency)
	})
	if err := r.Set(relay.Link{Latency: latency, Down: true}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(latency)
	waitFor(t, "the queued datagrams dropped", func() bool {
		st := r.Stats().ToTarget
		return st.DroppedDown == n && st.Queued == 0
	})
	if st := r.Stats().ToTarget; st.Forwarded != 0 {
		t.Fatalf("%d datagrams crossed a down link", st.Forwarded)
	}
	if err := r.Set(relay.Link{}); err != nil {
		t.Fatal(err)
	}
	client.send(t, r.Addr(), "up")
	if got := target.next(t).data; got != "up" {
		t.Fatalf("target got %q after the outage, want up", got)
	}
}
