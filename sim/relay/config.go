package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/cohort-fl/cohort/clock"
)

// Sentinel errors.
var (
	// ErrInvalidConfig: the Config fails validation.
	ErrInvalidConfig = errors.New("invalid relay config")
	// ErrInvalidLink: a Link fails validation, or names no Direction.
	ErrInvalidLink = errors.New("invalid link")
	// ErrRunning: Run was called while the Relay is already running.
	ErrRunning = errors.New("relay already running")
	// ErrClosed: Run was called after Close, or after an earlier Run
	// returned.
	ErrClosed = errors.New("relay closed")
)

// Defaults used by DefaultConfig and for zero Config fields.
const (
	// DefaultListen is the default Config.Listen: an ephemeral loopback
	// port.
	DefaultListen = "127.0.0.1:0"
	// DefaultQueueLen is the default Config.QueueLen.
	DefaultQueueLen = 4096
	// DefaultSessionIdleTimeout is the default Config.SessionIdleTimeout.
	DefaultSessionIdleTimeout = 60 * time.Second
)

// MaxDatagramSize is the largest datagram relayed whole: every UDP
// datagram fits.
const MaxDatagramSize = 64 << 10

// Clock is the time source (see package clock); tests inject a fake. Its
// Sleep must block until the clock has advanced by d (or ctx ends): a fake
// whose Sleep returns at once makes the session-expiry loop spin.
type Clock = clock.Clock

// Link is the condition of one direction of the relayed link. The zero
// Link is a clean link: nothing lost, no delay.
type Link struct {
	// Loss is the probability, in [0, 1], that a datagram is dropped.
	Loss float64
	// Latency is the one-way delay added to every datagram; not negative.
	Latency time.Duration
	// Jitter is the bound of a uniform random delay in [0, Jitter] added to
	// each datagram on top of Latency; not negative. It does not reorder
	// datagrams (see the package comment).
	Jitter time.Duration
	// Down drops every datagram: an outage or a partition.
	Down bool
}

// Validate reports why l cannot be applied, as an error wrapping
// ErrInvalidLink, or nil.
func (l Link) Validate() error {
	switch {
	case math.IsNaN(l.Loss) || l.Loss < 0 || l.Loss > 1:
		return fmt.Errorf("%w: loss %v is outside [0, 1]", ErrInvalidLink, l.Loss)
	case l.Latency < 0:
		return fmt.Errorf("%w: latency %v is negative", ErrInvalidLink, l.Latency)
	case l.Jitter < 0:
		return fmt.Errorf("%w: jitter %v is negative", ErrInvalidLink, l.Jitter)
	case l.Latency > math.MaxInt64-l.Jitter:
		return fmt.Errorf("%w: latency %v plus jitter %v overflows", ErrInvalidLink, l.Latency, l.Jitter)
	}
	return nil
}

// Config configures a Relay.
type Config struct {
	// Listen is the local UDP address the clients send to, host:port; port
	// 0 picks a free one (see Relay.Addr). Empty means DefaultListen.
	Listen string
	// Target is the UDP address, host:port, every datagram is forwarded
	// to. It is resolved once, by New. Required.
	Target string
	// Link is the initial condition of both directions; the zero Link is a
	// clean link.
	Link Link
	// Seed seeds the random streams that decide loss and jitter, so that a
	// run can be reproduced.
	Seed uint64
	// QueueLen is the number of datagrams that may wait for delivery in
	// each direction; a datagram that finds the queue full is dropped.
	// Zero means DefaultQueueLen; negative is invalid.
	QueueLen int
	// SessionIdleTimeout is how long a client session may see no datagram,
	// in either direction, before its upstream socket is closed. Sessions
	// are checked every quarter of it. Zero means
	// DefaultSessionIdleTimeout; negative is invalid.
	SessionIdleTimeout time.Duration
	// Clock is the time source for delivery times and session expiry; nil
	// means clock.System().
	Clock Clock
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default filled in and no
// Target.
func DefaultConfig() Config {
	return Config{
		Listen:             DefaultListen,
		QueueLen:           DefaultQueueLen,
		SessionIdleTimeout: DefaultSessionIdleTimeout,
	}
}

// Validate reports the first problem with c, as an error wrapping
// ErrInvalidConfig, or nil. It checks the syntax of the addresses but does
// not resolve them.
func (c Config) Validate() error {
	if c.Target == "" {
		return fmt.Errorf("%w: target is empty", ErrInvalidConfig)
	}
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		return fmt.Errorf("%w: target: %w", ErrInvalidConfig, err)
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("%w: listen: %w", ErrInvalidConfig, err)
		}
	}
	if err := c.Link.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.QueueLen < 0 {
		return fmt.Errorf("%w: queue length %d is negative", ErrInvalidConfig, c.QueueLen)
	}
	if c.SessionIdleTimeout < 0 {
		return fmt.Errorf("%w: session idle timeout %v is negative", ErrInvalidConfig, c.SessionIdleTimeout)
	}
	return nil
}
