package physionet

import (
	"container/heap"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/cohort-fl/cohort/clock"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Device telemetry contract (see package agent/device).
const (
	// TopicPrefix is the first level of every device topic.
	TopicPrefix = "cohort"
	// ReplayQoS is the QoS of every publish.
	ReplayQoS = 1
	// maxSiteLen is the longest site id.
	maxSiteLen = 128
)

// Topic returns the observation topic of a device:
// "cohort/<site>/devices/<device-id>/observations".
func Topic(site, deviceID string) string {
	return TopicPrefix + "/" + site + "/devices/" + deviceID + "/observations"
}

// DeviceID returns the bedside device id Replay uses for a stay:
// "icu<ICUType>-bed-<RecordID>" (ICU type 0 when missing or out of range).
func DeviceID(s *Stay) string {
	t := s.ICUType
	if t < 1 || t > 4 {
		t = 0
	}
	return "icu" + strconv.Itoa(t) + "-bed-" + strconv.Itoa(s.RecordID)
}

// Clock is the time source (see package clock); tests inject a fake.
type Clock = clock.Clock

// SystemClock returns the Clock backed by the time package; it is what a
// nil ReplayConfig.Clock means.
func SystemClock() Clock { return clock.System() }

// ReplayConfig configures Replay.
type ReplayConfig struct {
	// Broker is the MQTT broker URL, e.g. "tcp://127.0.0.1:1883"
	// (schemes tcp, mqtt, ssl, tls, mqtts, ws, wss).
	Broker string
	// ClientID is the MQTT client id. The session is persistent (clean
	// session off), so keep it stable across runs that share a StoreDir.
	ClientID string
	// Username and Password authenticate to the broker; empty for none.
	Username, Password string
	// TLS configures TLS for ssl/tls/mqtts/wss brokers; nil uses the
	// defaults.
	TLS *tls.Config
	// Site is the site id in the topic: 1 to 128 characters from
	// [A-Za-z0-9._:-].
	Site string
	// Speed is how many seconds of ICU time pass per second of replay:
	// 1 is real time, 3600 one hour per second; 0 publishes as fast as the
	// broker acknowledges.
	Speed float64
	// Params are the parameters published as device vitals; each must be a
	// mapped parameter. Default DefaultVitalParams().
	Params []string
	// MaxInflight bounds the publishes sent but not yet acknowledged by
	// the broker (PUBACK); Replay waits on the oldest one when the bound
	// is reached. Default 64.
	MaxInflight int
	// StoreDir, when set, is a directory (created with mode 0700) for
	// paho's file store: publishes not yet acknowledged survive a broker
	// restart and are re-sent on reconnect, and survive a crash of the
	// replay process (re-sent on its next connect with the same ClientID).
	// Empty keeps them in memory, which still covers a broker restart
	// while Replay runs.
	StoreDir string
	// ConnectTimeout bounds the first connection attempt. Default 10s.
	ConnectTimeout time.Duration
	// Clock paces the replay; nil means SystemClock().
	Clock Clock
	// Logger receives progress (counts only); nil discards.
	Logger *slog.Logger
}

// DefaultReplayConfig returns the defaults: client id
// "cohort-physionet-replay", Speed 3600, DefaultVitalParams(),
// MaxInflight 64, ConnectTimeout 10s. Broker and Site must be set.
func DefaultReplayConfig() ReplayConfig {
	return ReplayConfig{
		ClientID:       "cohort-physionet-replay",
		Speed:          3600,
		Params:         DefaultVitalParams(),
		MaxInflight:    64,
		ConnectTimeout: 10 * time.Second,
	}
}

// Validate reports the first problem with c, wrapping ErrConfig.
func (c ReplayConfig) Validate() error {
	u, err := url.Parse(c.Broker)
	switch {
	case c.Broker == "":
		return fmt.Errorf("%w: broker not set", ErrConfig)
	case err != nil || u.Host == "":
		return fmt.Errorf("%w: broker is not a URL with a host", ErrConfig)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return fmt.Errorf("%w: broker scheme not supported", ErrConfig)
	}
	if c.ClientID == "" || len(c.ClientID) > 65535 {
		return fmt.Errorf("%w: client id empty or too long", ErrConfig)
	}
	if !validTopicID(c.Site) {
		return fmt.Errorf("%w: site must be 1 to %d characters from [A-Za-z0-9._:-]", ErrConfig, maxSiteLen)
	}
	if math.IsNaN(c.Speed) || math.IsInf(c.Speed, 0) || c.Speed < 0 {
		return fmt.Errorf("%w: speed must be finite and not negative", ErrConfig)
	}
	if len(c.Params) == 0 {
		return fmt.Errorf("%w: no params", ErrConfig)
	}
	for i, name := range c.Params {
		if p, ok := Lookup(name); !ok || !p.Mapped() {
			return fmt.Errorf("%w: params[%d] is not a mapped parameter", ErrConfig, i)
		}
	}
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		return fmt.Errorf("%w: max inflight must be 1 to 65535", ErrConfig)
	}
	if c.ConnectTimeout <= 0 {
		return fmt.Errorf("%w: connect timeout must be positive", ErrConfig)
	}
	return nil
}

// validTopicID reports whether s is a valid site or device id.
func validTopicID(s string) bool {
	if len(s) == 0 || len(s) > maxSiteLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// ReplayStats counts what Replay published.
type ReplayStats struct {
	// Published counts readings the broker acknowledged, by parameter.
	Published map[string]int
	// Total is the sum of Published.
	Total int
	// Devices is the number of stays with at least one reading to publish.
	Devices int
	// First and Last are the earliest and latest reading times published
	// (ICU time, not wall time).
	First, Last time.Time
	// Waited is the total pacing wait requested from the Clock.
	Waited time.Duration
}

// payload is the device telemetry message.
type payload struct {
	DeviceID string  `json:"device_id"`
	Patient  string  `json:"patient"`
	Time     string  `json:"time"`
	LOINC    string  `json:"loinc"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
}

// publisher is the part of an MQTT client Replay uses.
type publisher interface {
	Publish(topic string, qos byte, retained bool, payload interface{}) mqtt.Token
}

// Replay publishes the vital-sign rows of stays as bedside-device telemetry
// over MQTT, as if each stay were a patient in a bed with its own monitor
// (device DeviceID(stay)), admitted at admit(RecordID) (nil: DefaultAdmit).
//
// Each reading goes to Topic(cfg.Site, device) at QoS 1 as
//
//	{"device_id":"icu4-bed-132539","patient":"physionet-132539",
//	 "time":"2012-01-01T00:07:00Z","loinc":"8867-4","value":73,"unit":"/min"}
//
// with time = admit + the row's minute, and the LOINC code and UCUM unit of
// the mapping table. Readings of all stays are merged into one stream in
// time order (ties by RecordID, then row order). The stream is paced on
// cfg.Clock: the reading at ICU time t is published (t - t0)/Speed after
// the start, t0 being the first reading's time; Speed 0 does not wait.
// Publishes are pipelined: at most cfg.MaxInflight wait for the broker's
// acknowledgement at once, and Replay waits on the oldest when the window
// is full, so a slow or restarting broker slows the replay instead of
// growing memory. A reading counts as published once acknowledged.
//
// The receiver refuses readings more than a few minutes in the future of
// its clock, so admit stays in the past, or use Speed 1 with admit near
// the start of the replay.
//
// Replay returns when every reading is acknowledged, or on the first
// failed publish (ErrPublish) or when ctx is done; the ReplayStats so far
// are returned with the error.
func Replay(ctx context.Context, cfg ReplayConfig, stays []*Stay, admit func(int) time.Time) (*ReplayStats, error) {
	rs := &ReplayStats{Published: map[string]int{}}
	if err := cfg.Validate(); err != nil {
		return rs, err
	}
	for i, s := range stays {
		if s == nil {
			return rs, fmt.Errorf("stay %d: %w", i, ErrNilStay)
		}
	}
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(cfg.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetKeepAlive(30 * time.Second).
		SetMaxResumePubInFlight(cfg.MaxInflight)
	if cfg.Username != "" {
		opts.SetUsername(cfg.Username).SetPassword(cfg.Password)
	}
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	if cfg.StoreDir != "" {
		if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
			return rs, fmt.Errorf("store dir: %w", err)
		}
		opts.SetStore(mqtt.NewFileStore(cfg.StoreDir))
	}
	client := mqtt.NewClient(opts)
	tok := client.Connect()
	select {
	case <-ctx.Done():
		client.Disconnect(0)
		return rs, ctx.Err()
	case <-tok.Done():
	}
	if err := tok.Error(); err != nil {
		return rs, fmt.Errorf("%w: %w", ErrConnect, err)
	}
	rs, err := replay(ctx, cfg, stays, admit, client)
	if err != nil {
		client.Disconnect(0)
		return rs, err
	}
	client.Disconnect(250)
	return rs, nil
}

// cursor walks one stay's readings.
type cursor struct {
	order           int // index in stays, for ties
	recordID        int
	admit           time.Time
	device, patient string
	rows            []Row
	i               int
}

func (c *cursor) at() time.Time { return c.admit.Add(time.Duration(c.rows[c.i].Minute) * time.Minute) }

// cursorHeap orders cursors by their next reading's time, then RecordID,
// then position in the input.
type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	a, b := h[i].at(), h[j].at()
	if !a.Equal(b) {
		return a.Before(b)
	}
	if h[i].recordID != h[j].recordID {
		return h[i].recordID < h[j].recordID
	}
	return h[i].order < h[j].order
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// pending is a publish awaiting its acknowledgement.
type pending struct {
	tok     mqtt.Token
	param   string
	at      time.Time
	topic   string
	payload []byte
}

// maxRepublish bounds how often one reading is published again after its
// publish failed (the connection broke under it, as when the broker
// restarts): paho queues the new publish until it has reconnected.
const maxRepublish = 10

// replay is Replay on a connected publisher. cfg is valid.
func replay(ctx context.Context, cfg ReplayConfig, stays []*Stay, admit func(int) time.Time, pub publisher) (*ReplayStats, error) {
	rs := &ReplayStats{Published: map[string]int{}}
	clock := cfg.Clock
	if clock == nil {
		clock = SystemClock()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if admit == nil {
		admit = DefaultAdmit
	}
	want := map[string]bool{}
	for _, p := range cfg.Params {
		want[p] = true
	}

	h := make(cursorHeap, 0, len(stays))
	readings := 0
	for i, s := range stays {
		var rows []Row
		for _, r := range s.Rows {
			if want[r.Param] && r.Minute >= 0 && r.Minute <= MaxMinute && !math.IsNaN(r.Value) && !math.IsInf(r.Value, 0) {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		slices.SortStableFunc(rows, func(a, b Row) int { return a.Minute - b.Minute })
		h = append(h, &cursor{
			order: i, recordID: s.RecordID, admit: admit(s.RecordID).UTC(),
			device: DeviceID(s), patient: PatientID(s.RecordID), rows: rows,
		})
		readings += len(rows)
	}
	heap.Init(&h)
	rs.Devices = len(h)
	log.Info("physionet replay starting", "stays", len(stays), "devices", rs.Devices, "readings", readings, "speed", cfg.Speed)

	window := make([]pending, 0, cfg.MaxInflight)
	await := func(p pending) error {
		for attempt := 0; ; attempt++ {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-p.tok.Done():
			}
			err := p.tok.Error()
			if err == nil {
				break
			}
			if attempt >= maxRepublish {
				return fmt.Errorf("%w: %w", ErrPublish, err)
			}
			// A duplicate is harmless: the subscriber keys a reading by
			// device, time and code.
			log.Debug("physionet replay: publish failed, publishing again", "attempt", attempt+1, "err", err)
			p.tok = pub.Publish(p.topic, ReplayQoS, false, p.payload)
		}
		rs.Published[p.param]++
		rs.Total++
		if rs.First.IsZero() || p.at.Before(rs.First) {
			rs.First = p.at
		}
		if p.at.After(rs.Last) {
			rs.Last = p.at
		}
		if rs.Total%10000 == 0 {
			log.Debug("physionet replay progress", "published", rs.Total, "of", readings)
		}
		return nil
	}

	var t0, start time.Time
	for len(h) > 0 {
		if err := ctx.Err(); err != nil {
			return rs, err
		}
		c := h[0]
		at := c.at()
		row := c.rows[c.i]
		c.i++
		if c.i < len(c.rows) {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}

		if t0.IsZero() {
			t0, start = at, clock.Now()
		}
		if cfg.Speed > 0 {
			target := time.Duration(float64(at.Sub(t0)) / cfg.Speed)
			if wait := target - clock.Now().Sub(start); wait > 0 {
				if err := clock.Sleep(ctx, wait); err != nil {
					return rs, err
				}
				rs.Waited += wait
			}
		}

		p, _ := Lookup(row.Param)
		b, err := json.Marshal(payload{
			DeviceID: c.device, Patient: c.patient, Time: at.Format(time.RFC3339),
			LOINC: p.LOINC, Value: row.Value, Unit: p.Unit,
		})
		if err != nil {
			return rs, fmt.Errorf("record %d: payload: %w", c.recordID, err)
		}
		if len(window) == cap(window) {
			if err := await(window[0]); err != nil {
				return rs, err
			}
			window = append(window[:0], window[1:]...)
		}
		topic := Topic(cfg.Site, c.device)
		window = append(window, pending{tok: pub.Publish(topic, ReplayQoS, false, b), param: row.Param, at: at, topic: topic, payload: b})
	}
	for _, p := range window {
		if err := await(p); err != nil {
			return rs, err
		}
	}
	log.Info("physionet replay done", "published", rs.Total, "devices", rs.Devices)
	return rs, nil
}
