package device

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// ObservationSink receives decoded readings as observations. A nil error
// means the observation is durable (for a sink that is also a Flusher: once
// Flush has returned nil). *store.Store and *store.Batch satisfy it.
type ObservationSink interface {
	// Observation stores (upserts) one observation.
	Observation(fhir.Observation) error
}

// Flusher is implemented by sinks that buffer (such as *store.Batch): the
// Subscriber calls Flush after handing over each batch, and acks the batch's
// messages only once Flush has returned nil.
type Flusher interface {
	// Flush makes every observation handed over so far durable.
	Flush() error
}

// Config configures a Subscriber.
type Config struct {
	// Broker is the broker URL: tcp://host:port (or mqtt://), or
	// ssl://host:port (or tls://, mqtts://) with TLS.
	Broker string
	// ClientID identifies the agent to the broker. It must stay the same
	// across restarts of the gateway: the broker keeps the persistent
	// session (subscription and queued messages) under it. Two agents must
	// never share one.
	ClientID string
	// Site is this site's id, the second level of the device topics.
	Site string
	// StoreDir holds paho's in-flight store on disk: one SealedStore file,
	// StoreFile, with the messages received and not yet acked and the
	// agent's own in-flight packets, each encrypted under StoreKey
	// (payloads are PHI; nothing is written in plaintext). It must be
	// inside the agent's data directory; it is created with mode 0700 and
	// refused if group or others can access it. Files left in it by
	// paho's plaintext FileStore (earlier versions) are deleted by Run.
	//
	// Empty means paho's in-memory store. For this QoS 1 subscriber that
	// loses nothing: paho discards stored inbound QoS 1 messages when it
	// resumes a session, redelivery comes from the broker's session, and
	// the subscription is renewed on every connection.
	StoreDir string
	// StoreKey (StoreKeySize bytes) encrypts the store in StoreDir, and is
	// required with it: paho's plaintext file store is never used. It may
	// be a key of its own or the agent's master key (see NewSealedStore).
	// It must stay the same across restarts only to read back the
	// previous run's entries, which the broker redelivers anyway: with
	// another key they are dropped as corrupt.
	StoreKey []byte
	// QuarantineDir receives rejected payloads, one file each (plaintext,
	// so possibly PHI; mode 0600). It must be inside the agent's data
	// directory; created with mode 0700 and refused if group or others can
	// access it. Empty means rejected payloads are only counted.
	QuarantineDir string
	// MaxQuarantineFiles caps the files in QuarantineDir; beyond it
	// rejected payloads are only counted (a broken device cannot fill the
	// disk).
	MaxQuarantineFiles int
	// QueueSize is the number of decoded readings that may wait for the
	// writer. When it is full, message handlers wait (unacked), which
	// holds the broker at its in-flight window.
	QueueSize int
	// MaxBatch is the most readings the writer hands to the sink before
	// one Flush and the acks.
	MaxBatch int
	// Username and Password authenticate to the broker; both optional.
	// The password is never logged.
	Username, Password string
	// TLS configures ssl:// brokers; nil uses the system roots.
	TLS *tls.Config
	// ConnectTimeout bounds one connection attempt and one subscribe.
	ConnectTimeout time.Duration
	// ConnectRetryInterval is the wait between attempts of the first
	// connection.
	ConnectRetryInterval time.Duration
	// MaxReconnectInterval caps the exponential backoff between reconnect
	// attempts after a connection is lost.
	MaxReconnectInterval time.Duration
	// KeepAlive is the MQTT keep-alive interval.
	KeepAlive time.Duration
	// WriteRetryInterval is the wait before retrying a batch the sink
	// failed to store. Until it succeeds the batch stays unacked.
	WriteRetryInterval time.Duration
	// MaxPayload is the largest payload accepted, in bytes.
	MaxPayload int
	// MaxFutureSkew is how far ahead of Now a reading's time may be.
	MaxFutureSkew time.Duration
	// Logger receives connection events and counts, never payloads or
	// patient references; nil discards them.
	Logger *slog.Logger
	// Now is the clock (future-time checks, quarantine names); nil means
	// time.Now.
	Now func() time.Time
}

// DefaultConfig returns a Config with every default set; Broker, ClientID,
// Site, StoreDir, StoreKey and QuarantineDir remain to be filled in.
func DefaultConfig() Config {
	return Config{
		MaxQuarantineFiles:   10000,
		QueueSize:            1024,
		MaxBatch:             256,
		ConnectTimeout:       10 * time.Second,
		ConnectRetryInterval: time.Second,
		MaxReconnectInterval: 30 * time.Second,
		KeepAlive:            30 * time.Second,
		WriteRetryInterval:   time.Second,
		MaxPayload:           DefaultMaxPayload,
		MaxFutureSkew:        DefaultMaxFutureSkew,
	}
}

// Validate reports the first problem with the config.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if err := validBrokerURL(c.Broker); err != nil {
		return bad("broker: %v", err)
	}
	switch {
	case !ValidID(c.ClientID):
		return bad("client id must be 1 to %d characters from [A-Za-z0-9._:-]", MaxIDLen)
	case !ValidID(c.Site):
		return bad("site must be 1 to %d characters from [A-Za-z0-9._:-]", MaxIDLen)
	case c.StoreDir != "" && len(c.StoreKey) == 0:
		return bad("store dir needs a store key: in-flight messages are PHI and are only written encrypted")
	case c.StoreDir != "" && len(c.StoreKey) != StoreKeySize:
		return bad("store key is %d bytes, want %d", len(c.StoreKey), StoreKeySize)
	case c.StoreDir == "" && len(c.StoreKey) != 0:
		return bad("store key without a store dir")
	case c.QuarantineDir != "" && c.MaxQuarantineFiles <= 0:
		return bad("max quarantine files must be positive")
	case c.QueueSize <= 0:
		return bad("queue size must be positive")
	case c.MaxBatch <= 0:
		return bad("max batch must be positive")
	case c.ConnectTimeout <= 0 || c.ConnectRetryInterval <= 0 || c.MaxReconnectInterval <= 0:
		return bad("connect timeout, connect retry interval and max reconnect interval must be positive")
	case c.KeepAlive < time.Second:
		return bad("keep-alive must be at least 1s")
	case c.WriteRetryInterval <= 0:
		return bad("write retry interval must be positive")
	case c.MaxPayload <= 0:
		return bad("max payload must be positive")
	case c.MaxFutureSkew < 0:
		return bad("max future skew must not be negative")
	case c.Password != "" && c.Username == "":
		return bad("password without username")
	}
	return nil
}

// isPlaintextStoreFile reports whether name is a file of paho's FileStore:
// "i.<id>" or "o.<id>" (a 16-bit message id) with .msg, .tmp or .CORRUPT.
func isPlaintextStoreFile(name string) bool {
	stem, ok := "", false
	for _, ext := range []string{".msg", ".tmp", ".CORRUPT"} {
		if stem, ok = strings.CutSuffix(name, ext); ok {
			break
		}
	}
	if !ok || (!strings.HasPrefix(stem, "i.") && !strings.HasPrefix(stem, "o.")) {
		return false
	}
	_, err := strconv.ParseUint(stem[2:], 10, 16)
	return err == nil
}

// removePlaintextStore deletes the files paho's FileStore left in dir
// (earlier versions used it; they hold payloads in plaintext) and returns
// how many it deleted. Their messages are not lost: paho discards stored
// inbound messages when it resumes a session, and the broker redelivers
// every unacked one.
func removePlaintextStore(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !isPlaintextStoreFile(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func validBrokerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts":
	default:
		return errors.New("scheme must be tcp, mqtt, ssl, tls or mqtts")
	}
	if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
		return errors.New("want scheme://host:port")
	}
	return nil
}

// Stats are a Subscriber's counters. They hold no PHI.
type Stats struct {
	// Received counts messages delivered by the broker, redeliveries
	// included.
	Received uint64
	// Stored counts readings written to the sink and acked (a redelivered
	// reading is counted again; the store keeps one record).
	Stored uint64
	// Rejected counts rejected payloads by reason (see Reason).
	Rejected map[string]uint64
	// Quarantined counts quarantine files written.
	Quarantined uint64
	// QuarantineErrors counts rejected payloads that could not be
	// quarantined (disk error, or quarantine full); they are still acked.
	QuarantineErrors uint64
	// WriteErrors counts failed attempts to store a batch (each is
	// retried).
	WriteErrors uint64
	// QueueDepth is the number of readings waiting for the writer; at most
	// QueueSize.
	QueueDepth int
	// Waiting is the number of message handlers waiting for room in the
	// queue.
	Waiting int
	// Unacked is the number of messages received and not yet acked or
	// given up (at shutdown): the part of the broker's in-flight window
	// the agent holds.
	Unacked int
	// Connected reports whether the connection to the broker is up.
	Connected bool
	// Connects counts successful connections.
	Connects uint64
	// Reconnects counts connections after the first one.
	Reconnects uint64
	// Subscribes counts successful subscriptions (one per connection).
	Subscribes uint64
}

// item is one decoded reading and the message to ack once it is stored.
type item struct {
	obs fhir.Observation
	msg mqtt.Message
}

// Subscriber receives device readings from an MQTT broker and writes them
// to a sink. New starts nothing; Run connects and blocks; Close stops Run
// and waits for everything it started.
type Subscriber struct {
	cfg    Config
	limits Limits
	reg    *Registry
	sink   ObservationSink
	log    *slog.Logger
	now    func() time.Time
	filter string

	queueC chan item     // decoded readings for the writer
	stopC  chan struct{} // closed when Run begins shutting down
	closeC chan struct{} // closed by Close
	doneC  chan struct{} // closed when Run returns

	// mu guards started, closed and stopping, and orders active.Add
	// against active.Wait. No other lock is taken while it is held.
	mu       sync.Mutex
	started  bool
	closed   bool
	stopping bool
	active   sync.WaitGroup // message handlers and OnConnect handlers

	closeOnce sync.Once
	quar      *quarantine // nil when QuarantineDir is empty; set in Run
	// pahoStore, when set (tests only), replaces the store Run would
	// choose from the config.
	pahoStore func() mqtt.Store

	received, stored, quarantined, quarErrs, writeErrs atomic.Uint64
	connects, subscribes                               atomic.Uint64
	waiting, unacked                                   atomic.Int64
	connected                                          atomic.Bool
	rejMu                                              sync.Mutex // guards rejected
	rejected                                           map[string]uint64
}

// New returns a Subscriber that writes readings to sink, resolving patients
// with reg (nil: only readings that name their patient are accepted). It
// starts nothing.
func New(cfg Config, reg *Registry, sink ObservationSink) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, fmt.Errorf("%w: sink is nil", ErrInvalidConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.StoreKey = slices.Clone(cfg.StoreKey)
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Subscriber{
		cfg:      cfg,
		limits:   Limits{MaxPayload: cfg.MaxPayload, MaxFutureSkew: cfg.MaxFutureSkew},
		reg:      reg,
		sink:     sink,
		log:      log.With("component", "device"),
		now:      now,
		filter:   TopicFilter(cfg.Site),
		queueC:   make(chan item, cfg.QueueSize),
		stopC:    make(chan struct{}),
		closeC:   make(chan struct{}),
		doneC:    make(chan struct{}),
		rejected: make(map[string]uint64),
	}, nil
}

// Run prepares StoreDir (opening the SealedStore in it) and QuarantineDir,
// connects to the broker (retrying until it succeeds), subscribes on every
// connection, and writes readings to the sink until ctx ends or Close is
// called. It returns nil after a clean stop. Run may be called once.
func (s *Subscriber) Run(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.started:
		s.mu.Unlock()
		return ErrAlreadyStarted
	}
	s.started = true
	s.mu.Unlock()
	defer close(s.doneC)

	var pstore mqtt.Store
	switch {
	case s.pahoStore != nil:
		pstore = s.pahoStore()
	case s.cfg.StoreDir != "":
		if err := securePrivateDir(s.cfg.StoreDir); err != nil {
			return fmt.Errorf("store dir: %w", err)
		}
		if n, err := removePlaintextStore(s.cfg.StoreDir); err != nil {
			return fmt.Errorf("store dir: %w", err)
		} else if n > 0 {
			s.log.Warn("deleted the plaintext paho file store left in the store dir", "files", n)
		}
		ss, err := NewSealedStore(filepath.Join(s.cfg.StoreDir, StoreFile), s.cfg.StoreKey, s.log)
		if err != nil {
			return fmt.Errorf("store dir: %w", err)
		}
		// paho closes it on Disconnect, unless it never connected; late
		// calls from paho's goroutines find it closed and do nothing.
		defer ss.Close()
		pstore = ss
	default:
		pstore = mqtt.NewMemoryStore()
	}
	if s.cfg.QuarantineDir != "" {
		q, err := openQuarantine(s.cfg.QuarantineDir, s.cfg.MaxQuarantineFiles, s.cfg.MaxPayload)
		if err != nil {
			return err
		}
		s.quar = q
	}

	client := mqtt.NewClient(s.clientOptions(pstore))
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		s.writeLoop()
	}()

	// With ConnectRetry the token completes only once connected (or when
	// Disconnect cancels it); OnConnect subscribes.
	client.Connect()
	s.log.Info("device subscriber started", "topic_filter", s.filter, "queue_size", s.cfg.QueueSize)

	select {
	case <-ctx.Done():
	case <-s.closeC:
	}

	// Stop taking messages, let the writer finish (and ack) the batch in
	// hand, then disconnect. Whatever is left unacked is redelivered by the
	// broker in the next session.
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	close(s.stopC)
	s.active.Wait()
	writer.Wait()
	client.Disconnect(250)
	s.connected.Store(false)
	st := s.Stats()
	s.log.Info("device subscriber stopped", "received", st.Received, "stored", st.Stored, "rejected", sum(st.Rejected))
	return nil
}

// Close stops Run and waits for it to return. It is idempotent; calling it
// before Run makes Run return ErrClosed. If a sink call is in progress,
// Close waits for it.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closeC)
	})
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		<-s.doneC
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Subscriber) Stats() Stats {
	st := Stats{
		Received:         s.received.Load(),
		Stored:           s.stored.Load(),
		Quarantined:      s.quarantined.Load(),
		QuarantineErrors: s.quarErrs.Load(),
		WriteErrors:      s.writeErrs.Load(),
		QueueDepth:       len(s.queueC),
		Waiting:          int(s.waiting.Load()),
		Unacked:          int(s.unacked.Load()),
		Connected:        s.connected.Load(),
		Connects:         s.connects.Load(),
		Subscribes:       s.subscribes.Load(),
		Rejected:         make(map[string]uint64),
	}
	if st.Connects > 0 {
		st.Reconnects = st.Connects - 1
	}
	s.rejMu.Lock()
	for k, v := range s.rejected {
		st.Rejected[k] = v
	}
	s.rejMu.Unlock()
	return st
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func (s *Subscriber) clientOptions(store mqtt.Store) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(s.cfg.Broker).
		SetClientID(s.cfg.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(s.cfg.ConnectRetryInterval).
		SetMaxReconnectInterval(s.cfg.MaxReconnectInterval).
		SetConnectTimeout(s.cfg.ConnectTimeout).
		SetKeepAlive(s.cfg.KeepAlive).
		SetOrderMatters(false).
		SetAutoAckDisabled(true).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(s.onConnectionLost).
		// After a restart the broker may deliver the session's queued
		// messages before OnConnect has subscribed again (and so before
		// paho has a route for them): the default handler takes those.
		SetDefaultPublishHandler(s.handle)
	o.SetStore(store)
	if s.cfg.Username != "" {
		o.SetUsername(s.cfg.Username).SetPassword(s.cfg.Password)
	}
	if s.cfg.TLS != nil {
		o.SetTLSConfig(s.cfg.TLS)
	}
	return o
}

// enter registers a handler goroutine; false once Run is stopping.
func (s *Subscriber) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.active.Add(1)
	return true
}

// onConnect runs (in its own goroutine) after every successful connection
// and subscribes, so the subscription is restored even if the broker lost
// the session.
func (s *Subscriber) onConnect(c mqtt.Client) {
	if !s.enter() {
		return
	}
	defer s.active.Done()
	n := s.connects.Add(1)
	s.connected.Store(true)
	s.log.Info("mqtt connected", "connects", n)
	for {
		err := s.subscribe(c)
		if err == nil {
			s.subscribes.Add(1)
			s.log.Info("mqtt subscribed", "topic_filter", s.filter, "qos", 1)
			return
		}
		s.log.Warn("mqtt subscribe failed; retrying", "topic_filter", s.filter, "err", err)
		t := time.NewTimer(s.cfg.ConnectRetryInterval)
		select {
		case <-s.stopC:
			t.Stop()
			return
		case <-t.C:
		}
		if !c.IsConnectionOpen() {
			return // the next OnConnect subscribes
		}
	}
}

func (s *Subscriber) subscribe(c mqtt.Client) error {
	tok := c.Subscribe(s.filter, 1, s.handle)
	t := time.NewTimer(s.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-t.C:
		return errors.New("subscribe timed out")
	case <-s.stopC:
		return errors.New("stopping")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if q, ok := st.Result()[s.filter]; ok && q > 1 {
			return fmt.Errorf("broker refused the subscription (code %#x)", q)
		}
	}
	return nil
}

func (s *Subscriber) onConnectionLost(_ mqtt.Client, err error) {
	s.connected.Store(false)
	s.log.Warn("mqtt connection lost; reconnecting", "err", err)
}

// handle is paho's message handler. Order does not matter, so paho runs it
// in a goroutine of its own per message: it may wait for queue room without
// holding up paho's router.
func (s *Subscriber) handle(_ mqtt.Client, m mqtt.Message) {
	if !s.enter() {
		return // unacked: the broker redelivers it in the next session
	}
	defer s.active.Done()
	s.received.Add(1)
	s.unacked.Add(1)

	now := s.now()
	obs, err := s.decode(m.Topic(), m.Payload(), now)
	if err != nil {
		s.reject(m, err, now)
		m.Ack() // it will never become valid
		s.unacked.Add(-1)
		return
	}
	it := item{obs: obs, msg: m}
	select {
	case s.queueC <- it:
		return
	default:
	}
	// Queue full: wait without acking. The broker stops sending once its
	// in-flight window to us is full of such messages: back-pressure.
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	select {
	case s.queueC <- it:
	case <-s.stopC:
		s.unacked.Add(-1) // given up: redelivered in the next session
	}
}

// decode turns one message into an observation.
func (s *Subscriber) decode(topic string, payload []byte, now time.Time) (fhir.Observation, error) {
	r, err := s.limits.Decode(topic, payload, now)
	if err != nil {
		return fhir.Observation{}, err
	}
	if site, _, _ := ParseTopic(topic); site != s.cfg.Site {
		return fhir.Observation{}, fmt.Errorf("%w: another site", ErrBadTopic)
	}
	patient := r.Patient
	if patient == "" {
		var ok bool
		if patient, ok = s.reg.Lookup(r.DeviceID, r.Time); !ok {
			return fhir.Observation{}, ErrUnknownDevice
		}
	}
	return r.Observation(patient), nil
}

// reject counts and quarantines a rejected payload.
func (s *Subscriber) reject(m mqtt.Message, err error, now time.Time) {
	reason := Reason(err)
	s.rejMu.Lock()
	s.rejected[reason]++
	s.rejMu.Unlock()
	// Only a well-formed device id (an equipment serial) is logged.
	attrs := []any{"reason", reason}
	if _, dev, terr := ParseTopic(m.Topic()); terr == nil {
		attrs = append(attrs, "device", dev)
	}
	if s.quar == nil {
		s.log.Debug("device payload rejected", attrs...)
		return
	}
	if _, qerr := s.quar.write(reason, m.Topic(), m.Payload(), now); qerr != nil {
		s.quarErrs.Add(1)
		s.log.Warn("device payload rejected; not quarantined", append(attrs, "err", qerr)...)
		return
	}
	s.quarantined.Add(1)
	s.log.Debug("device payload rejected and quarantined", attrs...)
}

// writeLoop is the single writer: it drains the queue in batches into the
// sink and acks each batch's messages once the batch is durable.
func (s *Subscriber) writeLoop() {
	batch := make([]item, 0, s.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case it := <-s.queueC:
			batch = append(batch, it)
		case <-s.stopC:
			s.abandonQueued()
			return
		}
	fill:
		for len(batch) < s.cfg.MaxBatch {
			select {
			case it := <-s.queueC:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		if !s.writeBatch(batch) {
			s.unacked.Add(-int64(len(batch)))
			s.abandonQueued()
			return
		}
		for _, it := range batch {
			it.msg.Ack()
		}
		s.stored.Add(uint64(len(batch)))
		s.unacked.Add(-int64(len(batch)))
	}
}

// abandonQueued drops the queue's readings at shutdown; their messages
// stay unacked and are redelivered in the next session.
func (s *Subscriber) abandonQueued() {
	for {
		select {
		case <-s.queueC:
			s.unacked.Add(-1)
		default:
			return
		}
	}
}

// writeBatch stores a batch, retrying until it succeeds (true) or Run
// stops (false). Records are upserts, so a retry that repeats part of a
// batch is harmless.
func (s *Subscriber) writeBatch(batch []item) bool {
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(batch)
		if err == nil {
			return true
		}
		s.writeErrs.Add(1)
		s.log.Warn("device readings not stored; will retry", "readings", len(batch), "attempt", attempt, "err", err)
		t := time.NewTimer(s.cfg.WriteRetryInterval)
		select {
		case <-t.C:
		case <-s.stopC:
			t.Stop()
			return false
		}
	}
}

func (s *Subscriber) writeOnce(batch []item) error {
	for _, it := range batch {
		if err := s.sink.Observation(it.obs); err != nil {
			return fmt.Errorf("store observation: %w", err)
		}
	}
	if f, ok := s.sink.(Flusher); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("flush observations: %w", err)
		}
	}
	return nil
}
