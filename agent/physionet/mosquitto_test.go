package physionet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// mosquitto is a real Mosquitto broker on 127.0.0.1, started by the test.
type mosquitto struct {
	t      *testing.T
	bin    string
	conf   string
	port   int
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *strings.Builder
}

// startMosquitto starts Mosquitto on a free loopback port with a config in
// a temp dir. persist keeps sessions and queued messages across restarts
// (persistence on, in the temp dir). Without Mosquitto the test is skipped,
// unless env CI is set.
func startMosquitto(t *testing.T, persist bool) *mosquitto {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		if p, err := exec.LookPath("mosquitto"); err == nil {
			bin = p
		} else {
			if os.Getenv("CI") != "" {
				t.Fatal("CI is set but mosquitto is not installed (apt-get install mosquitto)")
			}
			t.Skip("mosquitto not installed (apt-get install mosquitto); skipping the real-broker test")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	dir := t.TempDir()
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"allow_anonymous true",
		"max_queued_messages 0", // no limit: a slow subscriber must not lose messages
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
	}
	if os.Geteuid() == 0 {
		conf = append(conf, "user root") // keep access to the temp dir
	}
	if persist {
		conf = append(conf, "persistence true", "persistence_location "+dir+string(filepath.Separator), "autosave_interval 0")
	} else {
		conf = append(conf, "persistence false")
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{t: t, bin: bin, conf: confPath, port: port}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mosquitto) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.port) }

// start runs the broker and returns once it logs that it is running.
func (m *mosquitto) start() {
	m.t.Helper()
	cmd := exec.Command(m.bin, "-c", m.conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	log := &strings.Builder{}
	var logMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if strings.Contains(sc.Text(), " running") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case <-ready:
	case <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		m.t.Fatalf("mosquitto exited at start:\n%s", log)
	case <-timer.C:
		_ = cmd.Process.Kill()
		m.t.Fatal("mosquitto did not start within 20s")
	}
	m.mu.Lock()
	m.cmd, m.exited, m.log = cmd, exited, log
	m.mu.Unlock()
}

// stop terminates the broker (SIGTERM, so it saves its persistence file)
// and waits for it to exit.
func (m *mosquitto) stop() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-exited
	}
}

// key is one reading as the subscriber sees it.
type key struct {
	topic string
	r     reading
}

// subscriber is a plain paho client counting what arrives.
type subscriber struct {
	mu       sync.Mutex
	got      map[key]int
	order    []time.Time
	bad      int
	distinct int
	total    int
	want     int // distinct readings expected
	wantAll  int // readings expected, duplicates included
	doneC    chan struct{}
	once     sync.Once
	client   mqtt.Client
}

func subscribe(t *testing.T, brokerURL, site, clientID string, persistent bool, want map[key]int) *subscriber {
	t.Helper()
	s := &subscriber{got: map[key]int{}, want: len(want), doneC: make(chan struct{})}
	for _, n := range want {
		s.wantAll += n
	}
	topic := TopicPrefix + "/" + site + "/devices/+/observations"
	handler := func(_ mqtt.Client, m mqtt.Message) {
		r, err := decodeReading(m.Payload())
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.bad++
			return
		}
		k := key{m.Topic(), r}
		if s.got[k] == 0 {
			s.distinct++
		}
		s.got[k]++
		s.total++
		s.order = append(s.order, r.Time)
		if s.distinct >= s.want && s.total >= s.wantAll {
			s.once.Do(func() { close(s.doneC) })
		}
	}
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(clientID).
		SetCleanSession(!persistent).SetAutoReconnect(persistent).SetConnectTimeout(10 * time.Second).
		SetOnConnectHandler(func(c mqtt.Client) {
			c.Subscribe(topic, 1, handler) // (re)subscribe; the token is waited on below for the first time
		})
	s.client = mqtt.NewClient(opts)
	if tok := s.client.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if tok := s.client.Subscribe(topic, 1, handler); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	return s
}

// wait waits until every expected reading arrived, or fails after a
// deadline.
func (s *subscriber) wait(t *testing.T, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-s.doneC:
	case <-timer.C:
		s.mu.Lock()
		defer s.mu.Unlock()
		t.Fatalf("received %d of %d distinct readings within %v", s.distinct, s.want, d)
	}
}

// firstStays reads the first n stays of set A.
func firstStays(t *testing.T, n int) []*Stay {
	t.Helper()
	dir := dataDir(t)
	errEnough := errors.New("enough")
	var stays []*Stay
	_, err := ReadStays(context.Background(), filepath.Join(dir, SetAArchive), filepath.Join(dir, SetAOutcomes), func(s *Stay) error {
		stays = append(stays, s)
		if len(stays) == n {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("reading stays: %v", err)
	}
	return stays
}

// expectedReadings computes, independently of Replay, what the subscriber
// must receive for stays admitted at admit.
func expectedReadings(stays []*Stay, site string, admit func(int) time.Time) (want map[key]int, byParam map[string]int, devices int) {
	vital := map[string]bool{}
	for _, p := range DefaultVitalParams() {
		vital[p] = true
	}
	want, byParam = map[key]int{}, map[string]int{}
	for _, s := range stays {
		dev := fmt.Sprintf("icu%d-bed-%d", s.ICUType, s.RecordID)
		has := false
		for _, r := range s.Rows {
			if !vital[r.Param] {
				continue
			}
			has = true
			p, _ := Lookup(r.Param)
			k := key{
				topic: "cohort/" + site + "/devices/" + dev + "/observations",
				r: reading{dev, fmt.Sprintf("physionet-%d", s.RecordID), admit(s.RecordID).Add(time.Duration(r.Minute) * time.Minute).UTC(),
					p.LOINC, r.Value, p.Unit},
			}
			want[k]++
			byParam[r.Param]++
		}
		if has {
			devices++
		}
	}
	return want, byParam, devices
}

func TestReplayMosquitto(t *testing.T) {
	t.Parallel()
	stays := firstStays(t, 50)
	broker := startMosquitto(t, false)
	const site = "test-site"
	// Stays admitted an hour apart, so that their readings interleave.
	admit := func(id int) time.Time { return DefaultAdmit(id).Add(time.Duration(id%50) * time.Hour) }
	want, byParam, devices := expectedReadings(stays, site, admit)
	total := 0
	for _, n := range want {
		total += n
	}
	sub := subscribe(t, broker.url(), site, "physionet-test-sub", false, want)

	cfg := DefaultReplayConfig()
	cfg.Broker, cfg.Site, cfg.ClientID = broker.url(), site, "physionet-test-replay"
	cfg.Speed, cfg.MaxInflight = 3600, 32
	cfg.StoreDir = filepath.Join(t.TempDir(), "store")
	clock := newFakeClock()
	cfg.Clock = clock
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs, err := Replay(ctx, cfg, stays, admit)
	if err != nil {
		t.Fatal(err)
	}
	sub.wait(t, time.Minute)

	if rs.Total != total || rs.Devices != devices {
		t.Errorf("published %d readings from %d devices, want %d from %d", rs.Total, rs.Devices, total, devices)
	}
	for p, n := range byParam {
		if rs.Published[p] != n {
			t.Errorf("%s: published %d, want %d", p, rs.Published[p], n)
		}
	}
	if want := time.Duration(float64(rs.Last.Sub(rs.First)) / cfg.Speed); rs.Waited != want {
		t.Errorf("waited %v on the clock, want %v ((last - first) / speed)", rs.Waited, want)
	}

	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.bad != 0 {
		t.Errorf("%d payloads did not decode under the contract", sub.bad)
	}
	for k, n := range want {
		if sub.got[k] != n {
			t.Errorf("reading %s at %v %s: received %d, want %d", k.r.DeviceID, k.r.Time, k.r.LOINC, sub.got[k], n)
		}
	}
	if len(sub.got) != len(want) {
		t.Errorf("received %d distinct readings, want %d", len(sub.got), len(want))
	}
	for i := 1; i < len(sub.order); i++ {
		if sub.order[i].Before(sub.order[i-1]) {
			t.Errorf("reading %d arrived out of time order", i)
			break
		}
	}
	t.Logf("%d stays (%d with vitals): %d readings published and received (%v), %d clock waits totalling %v", len(stays), devices, rs.Total, rs.Published, len(clock.Waits()), rs.Waited)
}

// TestReplayMosquittoRestart restarts the broker in the middle of a
// replay: publishes not yet acknowledged are kept in the file store and
// re-sent on reconnect, so every reading still arrives (at least once:
// QoS 1 may deliver twice).
func TestReplayMosquittoRestart(t *testing.T) {
	t.Parallel()
	stays := firstStays(t, 10)
	broker := startMosquitto(t, true)
	const site = "restart-site"
	want, _, _ := expectedReadings(stays, site, DefaultAdmit)
	total := 0
	for _, n := range want {
		total += n
	}
	sub := subscribe(t, broker.url(), site, "physionet-restart-sub", true, want)

	cfg := DefaultReplayConfig()
	cfg.Broker, cfg.Site, cfg.ClientID = broker.url(), site, "physionet-restart-replay"
	cfg.Speed, cfg.MaxInflight = 3600, 16
	cfg.StoreDir = filepath.Join(t.TempDir(), "store")
	clock := newFakeClock()
	restarted := false
	clock.hook = func(n int) {
		if n == 40 {
			broker.stop()
			broker.start()
			restarted = true
		}
	}
	cfg.Clock = clock
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs, err := Replay(ctx, cfg, stays, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !restarted {
		t.Fatal("the broker was not restarted during the replay")
	}
	sub.wait(t, time.Minute)
	if rs.Total != total {
		t.Errorf("published %d, want %d", rs.Total, total)
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	dups := 0
	for k, n := range want {
		if sub.got[k] < n {
			t.Errorf("reading %s at %v %s: received %d, want at least %d", k.r.DeviceID, k.r.Time, k.r.LOINC, sub.got[k], n)
		}
		dups += sub.got[k] - n
	}
	t.Logf("restart after clock wait 40: %d readings published, all received, %d duplicates", rs.Total, dups)
}
