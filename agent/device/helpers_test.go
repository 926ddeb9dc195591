package device

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// countingSink records every observation it is handed, by id. It
// optionally forwards to another sink (a real store).
type countingSink struct {
	next ObservationSink

	mu     sync.Mutex
	writes map[string]int
	obs    map[string]fhir.Observation
	total  int
}

func newCountingSink(next ObservationSink) *countingSink {
	return &countingSink{next: next, writes: map[string]int{}, obs: map[string]fhir.Observation{}}
}

func (s *countingSink) Observation(o fhir.Observation) error {
	if s.next != nil {
		if err := s.next.Observation(o); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes[o.ID]++
	s.obs[o.ID] = o
	s.total++
	return nil
}

// Flush forwards to the next sink when it buffers.
func (s *countingSink) Flush() error {
	if f, ok := s.next.(Flusher); ok {
		return f.Flush()
	}
	return nil
}

// counts returns the number of distinct ids and of writes.
func (s *countingSink) counts() (distinct, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes), s.total
}

func (s *countingSink) get(id string) (fhir.Observation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.obs[id]
	return o, ok
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// neverWithin fails if cond becomes true within d.
func neverWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			t.Fatalf("%s", what)
		}
		select {
		case <-end.C:
			return
		case <-tick.C:
		}
	}
}

// testReading is reading number i of device dev, a minute-ish before testNow.
func testReading(dev, patient string, i int) Reading {
	return Reading{DeviceID: dev, Patient: patient, Time: testNow.Add(-time.Hour).Add(time.Duration(i) * time.Millisecond),
		LOINC: "8867-4", Value: float64(60 + i%50), Unit: "/min"}
}

func testPayload(r Reading) []byte {
	p := fmt.Sprintf(`{"device_id":%q,"time":%q,"loinc":%q,"value":%v,"unit":%q`,
		r.DeviceID, r.Time.Format(time.RFC3339Nano), r.LOINC, r.Value, r.Unit)
	if r.Patient != "" {
		p += fmt.Sprintf(`,"patient":"Patient/%s"`, r.Patient)
	}
	return []byte(p + "}")
}

// testConfig returns a subscriber config for tests: fast reconnects, the
// fixed test clock, directories in t.TempDir.
func testConfig(t testing.TB, broker, clientID string) Config {
	cfg := DefaultConfig()
	cfg.Broker = broker
	cfg.ClientID = clientID
	cfg.Site = "site-a"
	dir := t.TempDir()
	cfg.StoreDir = filepath.Join(dir, "mqtt")
	cfg.StoreKey = testStoreKey(7)
	cfg.QuarantineDir = filepath.Join(dir, "quarantine")
	cfg.ConnectTimeout = 5 * time.Second
	cfg.ConnectRetryInterval = 50 * time.Millisecond
	cfg.MaxReconnectInterval = 200 * time.Millisecond
	cfg.WriteRetryInterval = 20 * time.Millisecond
	cfg.Now = func() time.Time { return testNow }
	return cfg
}

// testStoreKey returns a StoreKeySize-byte key made from b.
func testStoreKey(b byte) []byte {
	k := make([]byte, StoreKeySize)
	for i := range k {
		k[i] = b ^ byte(i*31)
	}
	return k
}

// runSubscriber starts Run in a goroutine, waits until it has subscribed,
// and closes it when the test ends. The returned stop closes it now and
// checks Run's result.
func runSubscriber(t testing.TB, cfg Config, reg *Registry, sink ObservationSink) (*Subscriber, func()) {
	t.Helper()
	return runSubscriberWith(t, cfg, reg, sink, nil)
}

// runSubscriberWith is runSubscriber with a function that prepares the
// Subscriber before Run (nil: none).
func runSubscriberWith(t testing.TB, cfg Config, reg *Registry, sink ObservationSink, prepare func(*Subscriber)) (*Subscriber, func()) {
	t.Helper()
	s, err := New(cfg, reg, sink)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	errC := make(chan error, 1)
	go func() { errC <- s.Run(context.Background()) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := <-errC; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	subscribes := func() bool { return s.Stats().Subscribes >= 1 }
	waitFor(t, 10*time.Second, "the subscriber to subscribe", subscribes)
	return s, stop
}

// newPublisher connects a device-gateway-like publisher: QoS 1, persistent
// session, its own file store, reconnecting on its own.
func newPublisher(t testing.TB, broker, clientID string) mqtt.Client {
	t.Helper()
	return connectPublisher(t, broker, clientID, mqtt.NewFileStore(filepath.Join(t.TempDir(), "pubstore")))
}

// connectPublisher is newPublisher with a given paho store.
func connectPublisher(t testing.TB, broker, clientID string, st mqtt.Store) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(clientID).
		SetCleanSession(false).
		SetStore(st).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(50 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(10 * time.Second)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// mustPublishAll is publishAll for the test goroutine.
func mustPublishAll(t testing.TB, c mqtt.Client, msgs []message, window int, timeout time.Duration) {
	t.Helper()
	if err := publishAll(c, msgs, window, timeout); err != nil {
		t.Fatal(err)
	}
}

// publishAll publishes payloads to their topics at QoS 1 with at most
// window unacked, and waits for every PUBACK (republishing a message
// whose token failed).
func publishAll(c mqtt.Client, msgs []message, window int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	errC := make(chan error, 1)
	for _, m := range msgs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for {
				tok := c.Publish(m.topic, 1, false, m.payload)
				if tok.WaitTimeout(time.Until(deadline)) && tok.Error() == nil {
					return
				}
				if time.Now().After(deadline) {
					select {
					case errC <- fmt.Errorf("publish not acked by the deadline: %v", tok.Error()):
					default:
					}
					return
				}
				waitConnected(c, deadline)
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errC:
		return err
	default:
		return nil
	}
}

type message struct {
	topic   string
	payload []byte
}

// waitConnected waits until c's connection is open or the deadline passes.
func waitConnected(c mqtt.Client, deadline time.Time) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !c.IsConnectionOpen() && time.Now().Before(deadline) {
		<-tick.C
	}
}

func dialTCP(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }

// logBuffer is a concurrency-safe log destination.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
