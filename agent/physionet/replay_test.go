package physionet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// fakeToken completes when Done is first called, so the number of
// publishes not yet awaited is observable.
type fakeToken struct {
	once   sync.Once
	done   chan struct{}
	err    error
	onDone func()
}

func (t *fakeToken) Done() <-chan struct{} {
	t.once.Do(func() {
		if t.onDone != nil {
			t.onDone()
		}
		close(t.done)
	})
	return t.done
}
func (t *fakeToken) Wait() bool                     { <-t.Done(); return true }
func (t *fakeToken) WaitTimeout(time.Duration) bool { <-t.Done(); return true }
func (t *fakeToken) Error() error                   { return t.err }

type fakeMsg struct {
	topic    string
	qos      byte
	retained bool
	payload  []byte
}

// fakePub records publishes and tracks how many are outstanding.
type fakePub struct {
	mu             sync.Mutex
	msgs           []fakeMsg
	outstanding    int
	maxOutstanding int
	failAt         int  // 1-based publish whose token fails; 0: none
	failFrom       bool // every publish from failAt on fails
}

func (p *fakePub) Publish(topic string, qos byte, retained bool, payload interface{}) mqtt.Token {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, _ := payload.([]byte)
	p.msgs = append(p.msgs, fakeMsg{topic, qos, retained, append([]byte(nil), b...)})
	p.outstanding++
	p.maxOutstanding = max(p.maxOutstanding, p.outstanding)
	tok := &fakeToken{done: make(chan struct{})}
	if len(p.msgs) == p.failAt || p.failFrom && p.failAt > 0 && len(p.msgs) >= p.failAt {
		tok.err = errors.New("refused")
	}
	tok.onDone = func() {
		p.mu.Lock()
		p.outstanding--
		p.mu.Unlock()
	}
	return tok
}

// reading is the device contract, decoded strictly.
type reading struct {
	DeviceID string
	Patient  string
	Time     time.Time
	LOINC    string
	Value    float64
	Unit     string
}

// decodeReading decodes a payload under the contract: exactly the six
// fields, of the right JSON types, time RFC 3339, LOINC with a valid check
// digit.
func decodeReading(b []byte) (reading, error) {
	var raw struct {
		DeviceID *string  `json:"device_id"`
		Patient  *string  `json:"patient"`
		Time     *string  `json:"time"`
		LOINC    *string  `json:"loinc"`
		Value    *float64 `json:"value"`
		Unit     *string  `json:"unit"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return reading{}, err
	}
	if dec.More() {
		return reading{}, errors.New("trailing data")
	}
	if raw.DeviceID == nil || raw.Patient == nil || raw.Time == nil || raw.LOINC == nil || raw.Value == nil || raw.Unit == nil {
		return reading{}, errors.New("missing field")
	}
	tm, err := time.Parse(time.RFC3339, *raw.Time)
	if err != nil {
		return reading{}, err
	}
	if !loincCheckDigitOK(*raw.LOINC) {
		return reading{}, errors.New("bad loinc")
	}
	if *raw.Unit == "" || math.IsNaN(*raw.Value) || !validTopicID(*raw.DeviceID) {
		return reading{}, errors.New("bad unit, value or device")
	}
	return reading{*raw.DeviceID, *raw.Patient, tm, *raw.LOINC, *raw.Value, *raw.Unit}, nil
}

// testStays are two stays whose readings interleave.
func testStays() []*Stay {
	return []*Stay{
		{RecordID: 2, ICUType: 3, Rows: []Row{
			{0, "HR", 80}, {7, "HR", 82}, {7, "Temp", 37.2}, {7, "GCS", 15}, {10, "MechVent", 1}, {37, "SysABP", 120},
		}},
		{RecordID: 1, ICUType: 4, Rows: []Row{{7, "HR", 70}, {5, "RespRate", 18}}}, // not sorted
	}
}

func testAdmit(id int) time.Time {
	t := DefaultAdmit(id)
	if id == 1 {
		t = t.Add(time.Minute)
	}
	return t
}

func TestReplayPacingAndPayloads(t *testing.T) {
	epoch := DefaultAdmit(0)
	type want struct {
		topic string
		r     reading
	}
	r := func(dev, pat string, minute int, loinc string, v float64, unit string) reading {
		return reading{dev, pat, epoch.Add(time.Duration(minute) * time.Minute), loinc, v, unit}
	}
	wantMsgs := []want{
		{"cohort/site-a/devices/icu3-bed-2/observations", r("icu3-bed-2", "physionet-2", 0, "8867-4", 80, "/min")},
		{"cohort/site-a/devices/icu4-bed-1/observations", r("icu4-bed-1", "physionet-1", 6, "9279-1", 18, "/min")},
		{"cohort/site-a/devices/icu3-bed-2/observations", r("icu3-bed-2", "physionet-2", 7, "8867-4", 82, "/min")},
		{"cohort/site-a/devices/icu3-bed-2/observations", r("icu3-bed-2", "physionet-2", 7, "8310-5", 37.2, "Cel")},
		{"cohort/site-a/devices/icu4-bed-1/observations", r("icu4-bed-1", "physionet-1", 8, "8867-4", 70, "/min")},
		{"cohort/site-a/devices/icu3-bed-2/observations", r("icu3-bed-2", "physionet-2", 37, "76215-3", 120, "mm[Hg]")},
	}
	tests := []struct {
		name  string
		speed float64
		waits []time.Duration
	}{
		{"one minute per second", 60, []time.Duration{6 * time.Second, time.Second, time.Second, 29 * time.Second}},
		{"one hour per second", 3600, []time.Duration{100 * time.Millisecond, 16666666, 16666667, 483333333}},
		{"as fast as possible", 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultReplayConfig()
			cfg.Broker, cfg.Site, cfg.Speed = "tcp://127.0.0.1:1883", "site-a", tc.speed
			clock := newFakeClock()
			cfg.Clock = clock
			pub := &fakePub{}
			rs, err := replay(context.Background(), cfg, testStays(), testAdmit, pub)
			if err != nil {
				t.Fatal(err)
			}
			if got := clock.Waits(); !reflect.DeepEqual(got, tc.waits) {
				t.Errorf("waits = %v, want %v", got, tc.waits)
			}
			if len(pub.msgs) != len(wantMsgs) {
				t.Fatalf("%d messages, want %d", len(pub.msgs), len(wantMsgs))
			}
			for i, m := range pub.msgs {
				got, err := decodeReading(m.payload)
				if err != nil {
					t.Fatalf("message %d: %v: %s", i, err, m.payload)
				}
				if m.topic != wantMsgs[i].topic || got != wantMsgs[i].r || m.qos != 1 || m.retained {
					t.Errorf("message %d = %s %+v (qos %d), want %s %+v", i, m.topic, got, m.qos, wantMsgs[i].topic, wantMsgs[i].r)
				}
			}
			var waited time.Duration
			for _, w := range tc.waits {
				waited += w
			}
			wantStats := &ReplayStats{
				Published: map[string]int{"HR": 3, "RespRate": 1, "Temp": 1, "SysABP": 1},
				Total:     6, Devices: 2,
				First: epoch, Last: epoch.Add(37 * time.Minute), Waited: waited,
			}
			if !reflect.DeepEqual(rs, wantStats) {
				t.Errorf("stats = %+v, want %+v", rs, wantStats)
			}
		})
	}
}

func TestReplayInflightBound(t *testing.T) {
	s := &Stay{RecordID: 5, ICUType: 2}
	for i := 0; i < 200; i++ {
		s.Rows = append(s.Rows, Row{i, "HR", float64(60 + i%40)})
	}
	for _, n := range []int{1, 8, 64, 500} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			cfg := DefaultReplayConfig()
			cfg.Broker, cfg.Site, cfg.Speed, cfg.MaxInflight = "tcp://127.0.0.1:1883", "s", 0, n
			pub := &fakePub{}
			rs, err := replay(context.Background(), cfg, []*Stay{s}, nil, pub)
			if err != nil {
				t.Fatal(err)
			}
			if want := min(n, 200); pub.maxOutstanding != want {
				t.Errorf("max outstanding publishes = %d, want %d", pub.maxOutstanding, want)
			}
			if rs.Total != 200 || pub.outstanding != 0 {
				t.Errorf("total %d, outstanding at the end %d", rs.Total, pub.outstanding)
			}
		})
	}
}

func TestReplayFailures(t *testing.T) {
	cfg := DefaultReplayConfig()
	cfg.Broker, cfg.Site, cfg.Speed = "tcp://127.0.0.1:1883", "s", 60

	t.Run("a failed publish is published again", func(t *testing.T) {
		c := cfg
		c.Clock = newFakeClock()
		pub := &fakePub{failAt: 3}
		all, err := replay(context.Background(), c, testStays(), testAdmit, &fakePub{})
		if err != nil {
			t.Fatal(err)
		}
		c.Clock = newFakeClock()
		rs, err := replay(context.Background(), c, testStays(), testAdmit, pub)
		if err != nil {
			t.Fatal(err)
		}
		if rs.Total != all.Total || len(pub.msgs) != all.Total+1 {
			t.Errorf("published %d readings in %d publishes; without the failure %d", rs.Total, len(pub.msgs), all.Total)
		}
		n := 0
		for _, m := range pub.msgs {
			if string(m.payload) == string(pub.msgs[2].payload) {
				n++
			}
		}
		if n != 2 {
			t.Errorf("the failed reading was published %d times, want 2", n)
		}
	})
	t.Run("publish refused for good", func(t *testing.T) {
		c := cfg
		c.Clock = newFakeClock()
		rs, err := replay(context.Background(), c, testStays(), testAdmit, &fakePub{failAt: 3, failFrom: true})
		if !errors.Is(err, ErrPublish) {
			t.Fatalf("err = %v, want ErrPublish", err)
		}
		if rs.Total != 2 {
			t.Errorf("published %d before the failure, want 2", rs.Total)
		}
	})
	t.Run("cancelled while pacing", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		clock := newFakeClock()
		clock.hook = func(n int) {
			if n == 2 {
				cancel()
			}
		}
		c := cfg
		c.Clock = clock
		_, err := replay(ctx, c, testStays(), testAdmit, &fakePub{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if len(clock.Waits()) != 2 {
			t.Errorf("%d waits after cancel, want 2", len(clock.Waits()))
		}
	})
	t.Run("nothing to publish", func(t *testing.T) {
		c := cfg
		c.Clock = newFakeClock()
		rs, err := replay(context.Background(), c, []*Stay{{RecordID: 9, Rows: []Row{{1, "GCS", 3}}}}, nil, &fakePub{})
		if err != nil || rs.Total != 0 || rs.Devices != 0 {
			t.Fatalf("rs = %+v, err = %v", rs, err)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		c := cfg
		c.Site = "a/b"
		if _, err := Replay(context.Background(), c, testStays(), nil); !errors.Is(err, ErrConfig) {
			t.Fatalf("err = %v, want ErrConfig", err)
		}
	})
	t.Run("nil stay", func(t *testing.T) {
		if _, err := Replay(context.Background(), cfg, []*Stay{nil}, nil); !errors.Is(err, ErrNilStay) {
			t.Fatalf("err = %v, want ErrNilStay", err)
		}
	})
	t.Run("broker unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		c := cfg
		c.Broker, c.ConnectTimeout = "tcp://"+addr, 5*time.Second
		if _, err := Replay(context.Background(), c, testStays(), nil); !errors.Is(err, ErrConnect) {
			t.Fatalf("err = %v, want ErrConnect", err)
		}
	})
}

func TestReplayConfigValidate(t *testing.T) {
	base := DefaultReplayConfig()
	base.Broker, base.Site = "tcp://127.0.0.1:1883", "hospital-a"
	tests := []struct {
		name   string
		modify func(*ReplayConfig)
		ok     bool
	}{
		{"defaults with broker and site", func(*ReplayConfig) {}, true},
		{"ssl broker", func(c *ReplayConfig) { c.Broker = "ssl://mqtt.example.org:8883" }, true},
		{"speed zero", func(c *ReplayConfig) { c.Speed = 0 }, true},
		{"all mapped params", func(c *ReplayConfig) { c.Params = []string{"pH", "Urine"} }, true},
		{"no broker", func(c *ReplayConfig) { c.Broker = "" }, false},
		{"broker without host", func(c *ReplayConfig) { c.Broker = "tcp://" }, false},
		{"broker bad scheme", func(c *ReplayConfig) { c.Broker = "http://127.0.0.1:1883" }, false},
		{"broker not a url", func(c *ReplayConfig) { c.Broker = "::" }, false},
		{"no client id", func(c *ReplayConfig) { c.ClientID = "" }, false},
		{"no site", func(c *ReplayConfig) { c.Site = "" }, false},
		{"site with slash", func(c *ReplayConfig) { c.Site = "a/b" }, false},
		{"site with wildcard", func(c *ReplayConfig) { c.Site = "a+" }, false},
		{"site too long", func(c *ReplayConfig) { c.Site = strings.Repeat("a", 129) }, false},
		{"negative speed", func(c *ReplayConfig) { c.Speed = -1 }, false},
		{"NaN speed", func(c *ReplayConfig) { c.Speed = math.NaN() }, false},
		{"infinite speed", func(c *ReplayConfig) { c.Speed = math.Inf(1) }, false},
		{"no params", func(c *ReplayConfig) { c.Params = nil }, false},
		{"unknown param", func(c *ReplayConfig) { c.Params = []string{"SpO2"} }, false},
		{"unmapped param", func(c *ReplayConfig) { c.Params = []string{"MechVent"} }, false},
		{"zero inflight", func(c *ReplayConfig) { c.MaxInflight = 0 }, false},
		{"zero connect timeout", func(c *ReplayConfig) { c.ConnectTimeout = 0 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Params = append([]string(nil), base.Params...)
			tc.modify(&c)
			err := c.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("error does not wrap ErrConfig: %v", err)
			}
		})
	}
}

func TestDeviceIDAndTopic(t *testing.T) {
	tests := []struct {
		stay *Stay
		want string
	}{
		{&Stay{RecordID: 132539, ICUType: 4}, "icu4-bed-132539"},
		{&Stay{RecordID: 1, ICUType: 1}, "icu1-bed-1"},
		{&Stay{RecordID: 1, ICUType: -1}, "icu0-bed-1"},
		{&Stay{RecordID: 1, ICUType: 9}, "icu0-bed-1"},
	}
	for _, tc := range tests {
		if got := DeviceID(tc.stay); got != tc.want || !validTopicID(got) {
			t.Errorf("DeviceID = %q, want %q", got, tc.want)
		}
	}
	if got := Topic("site-a", "icu4-bed-1"); got != "cohort/site-a/devices/icu4-bed-1/observations" {
		t.Errorf("Topic = %q", got)
	}
}
