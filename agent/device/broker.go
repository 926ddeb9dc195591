package device

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// EmbeddedBroker is an in-process MQTT broker (mochi-mqtt) for the
// zero-setup default and the simulator. It accepts any client (no
// authentication), so it listens on loopback only. It keeps sessions in
// memory: they survive client reconnects, not a restart of the process. It
// applies no in-flight window to MQTT 3.1.1 clients (see the package
// documentation). Production sites use a real broker such as Mosquitto.
type EmbeddedBroker struct {
	srv  *mochi.Server
	addr string

	closeOnce sync.Once
	closeC    chan struct{}
	wg        sync.WaitGroup // the ctx watcher
}

// StartEmbeddedBroker starts a broker listening on addr, a loopback
// host:port ("" means 127.0.0.1:0, a free port). It runs until ctx ends or
// Close is called. logger receives the broker's own logs (client ids and
// connection events, never payloads); nil discards them.
func StartEmbeddedBroker(ctx context.Context, addr string, logger *slog.Logger) (*EmbeddedBroker, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%w: %s", ErrNotLoopback, addr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := mochi.New(&mochi.Options{Logger: logger.With("component", "mqtt-broker")})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := srv.AddListener(l); err != nil { // binds the socket
		return nil, fmt.Errorf("embedded broker: listen: %w", err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	b := &EmbeddedBroker{srv: srv, addr: l.Address(), closeC: make(chan struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		select {
		case <-ctx.Done():
			b.shutdown()
		case <-b.closeC:
		}
	}()
	return b, nil
}

// Addr returns the host:port the broker listens on.
func (b *EmbeddedBroker) Addr() string { return b.addr }

// URL returns the broker's URL for Config.Broker: tcp://host:port.
func (b *EmbeddedBroker) URL() string { return "tcp://" + b.addr }

func (b *EmbeddedBroker) shutdown() {
	b.closeOnce.Do(func() {
		close(b.closeC)
		_ = b.srv.Close() // closes the listener and every client, and waits for them
	})
}

// Close stops the broker, disconnecting every client. It is idempotent.
func (b *EmbeddedBroker) Close() error {
	b.shutdown()
	b.wg.Wait()
	return nil
}

// allowAll lets every client connect and use every topic (the broker is
// reachable from the gateway itself only).
type allowAll struct{ mochi.HookBase }

// ID implements mochi.Hook.
func (*allowAll) ID() string { return "cohort-allow-all" }

// Provides implements mochi.Hook.
func (*allowAll) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

// OnConnectAuthenticate implements mochi.Hook.
func (*allowAll) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

// OnACLCheck implements mochi.Hook.
func (*allowAll) OnACLCheck(*mochi.Client, string, bool) bool { return true }
