// Package mosquittotest runs a real Mosquitto broker for tests: on a free
// 127.0.0.1 port, with persistence in the test's temporary directory, and
// with Stop, Kill and Restart on the same port and the same persistence
// file, so tests can exercise broker restarts.
//
// Start skips the test when Mosquitto is not installed, and fails it
// instead when the environment variable CI is set (CI installs the Debian
// package mosquitto). The binary is $COHORT_MOSQUITTO, else
// /usr/sbin/mosquitto, else mosquitto on PATH.
package mosquittotest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configure the broker. Zero values keep Mosquitto's defaults
// except where noted.
type Options struct {
	// MaxInflight is max_inflight_messages: the QoS 1 messages the broker
	// sends a client before it must ack (Mosquitto's default is 20).
	MaxInflight int
	// MaxQueued is max_queued_messages per client beyond the in-flight
	// ones; 0 here means 1,000,000 (Mosquitto's default of 1000 would drop
	// messages in long tests).
	MaxQueued int
	// AutosaveInterval is autosave_interval in seconds; 0 means 1.
	AutosaveInterval int
	// Extra is appended to the configuration file verbatim.
	Extra string
	// StartTimeout bounds each start; 0 means 10s.
	StartTimeout time.Duration
}

// Broker is a running (or stopped) Mosquitto process.
type Broker struct {
	t       testing.TB
	bin     string
	dir     string
	conf    string
	logPath string
	port    int
	timeout time.Duration

	mu      sync.Mutex // guards cmd and exitedC
	cmd     *exec.Cmd
	exitedC chan struct{}
}

// Binary returns the Mosquitto binary to use, or "" if none is installed
// (or $COHORT_MOSQUITTO names a file that does not exist).
func Binary() string {
	if p := os.Getenv("COHORT_MOSQUITTO"); p != "" {
		if _, err := os.Stat(p); err != nil { // #nosec G703 -- test helper: checks for the mosquitto binary at fixed install paths
			return ""
		}
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return ""
}

// Require returns the Mosquitto binary, skipping the test if it is not
// installed, or failing it if the environment variable CI is set.
func Require(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "mosquitto is not installed (apt-get install -y mosquitto, or set COHORT_MOSQUITTO)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI must install it")
		}
		t.Skip(msg)
	}
	return bin
}

// Start starts Mosquitto on a free 127.0.0.1 port with persistence in a
// new t.TempDir, waits until it accepts connections, and stops it when the
// test ends.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	bin := Require(t)
	if opts.MaxQueued == 0 {
		opts.MaxQueued = 1000000
	}
	if opts.AutosaveInterval == 0 {
		opts.AutosaveInterval = 1
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	b := &Broker{t: t, bin: bin, dir: t.TempDir(), timeout: opts.StartTimeout}
	b.port = freePort(t)
	b.logPath = filepath.Join(b.dir, "mosquitto.log")
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	var conf bytes.Buffer
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\n", b.port)
	conf.WriteString("allow_anonymous true\n")
	conf.WriteString("persistence true\n")
	fmt.Fprintf(&conf, "persistence_location %s/\n", b.dir)
	conf.WriteString("persistence_file mosquitto.db\n")
	fmt.Fprintf(&conf, "autosave_interval %d\n", opts.AutosaveInterval)
	fmt.Fprintf(&conf, "max_queued_messages %d\n", opts.MaxQueued)
	if opts.MaxInflight > 0 {
		fmt.Fprintf(&conf, "max_inflight_messages %d\n", opts.MaxInflight)
	}
	fmt.Fprintf(&conf, "log_dest file %s\n", b.logPath)
	conf.WriteString("log_type error\nlog_type warning\nlog_type notice\n")
	if os.Geteuid() == 0 {
		// As root, Mosquitto would switch to the mosquitto user, which
		// cannot write to the test's temporary directory.
		conf.WriteString("user root\n")
	}
	conf.WriteString(opts.Extra)
	conf.WriteString("\n")
	if err := os.WriteFile(b.conf, conf.Bytes(), 0o600); err != nil {
		t.Fatalf("mosquittotest: write config: %v", err)
	}
	if err := b.start(); err != nil {
		t.Fatalf("mosquittotest: %v\n%s", err, b.Log())
	}
	t.Cleanup(func() { b.stop(syscall.SIGTERM) })
	return b
}

// freePort returns a 127.0.0.1 port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mosquittotest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr returns the broker's host:port.
func (b *Broker) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// URL returns the broker's URL: tcp://127.0.0.1:port.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Dir returns the broker's directory (configuration, log, persistence).
func (b *Broker) Dir() string { return b.dir }

// Log returns the broker's log so far.
func (b *Broker) Log() string {
	out, _ := os.ReadFile(b.logPath)
	return string(out)
}

func (b *Broker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return errors.New("already running")
	}
	cmd := exec.Command(b.bin, "-c", b.conf) // #nosec G204 -- test helper: runs the mosquitto binary the test found, with its generated config
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.bin, err)
	}
	exitedC := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exitedC)
	}()
	deadline := time.Now().Add(b.timeout)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exitedC:
			return fmt.Errorf("mosquitto exited during start: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exitedC
			return fmt.Errorf("mosquitto did not accept connections on %s within %s: %s", b.Addr(), b.timeout, stderr.String())
		}
		// Poll: a refused dial returns at once, so wait a little first.
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-exitedC:
			t.Stop()
			return fmt.Errorf("mosquitto exited during start: %s", stderr.String())
		case <-t.C:
		}
	}
	b.cmd, b.exitedC = cmd, exitedC
	return nil
}

// stop signals the broker and waits for it to exit; false if it was not
// running.
func (b *Broker) stop(sig syscall.Signal) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return false
	}
	_ = b.cmd.Process.Signal(sig)
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case <-b.exitedC:
	case <-t.C:
		_ = b.cmd.Process.Kill()
		<-b.exitedC
	}
	b.cmd, b.exitedC = nil, nil
	return true
}

// Stop stops the broker gracefully (SIGTERM): it saves its persistence
// file (sessions, subscriptions, queued and in-flight messages) and exits.
func (b *Broker) Stop() {
	b.t.Helper()
	if !b.stop(syscall.SIGTERM) {
		b.t.Fatal("mosquittotest: Stop: not running")
	}
}

// Kill kills the broker (SIGKILL), as a crash would: what it accepted
// since its last autosave is lost.
func (b *Broker) Kill() {
	b.t.Helper()
	if !b.stop(syscall.SIGKILL) {
		b.t.Fatal("mosquittotest: Kill: not running")
	}
}

// Restart starts a stopped broker again on the same port with the same
// persistence file. Called on a running broker it stops it first (SIGTERM).
func (b *Broker) Restart() {
	b.t.Helper()
	b.stop(syscall.SIGTERM)
	if err := b.start(); err != nil {
		b.t.Fatalf("mosquittotest: restart: %v\n%s", err, b.Log())
	}
}
