package agent

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/device"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// A running agent ingests files dropped into its drop directory and
// bedside telemetry published to its embedded MQTT broker into the
// encrypted store, and quarantines what it rejects.
func TestAgentLiveSources(t *testing.T) {
	brokerAddr := freeLoopback(t)
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Coordinators = []string{"127.0.0.1:1"} // unreachable: sources work without a coordinator
	cfg.TLS = siteFiles(t, "st-mary")
	cfg.DropDir = filepath.Join(t.TempDir(), "drop")
	cfg.MQTT = &MQTTConfig{Embedded: brokerAddr}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
		a.Close()
	}()
	counts := func() (int, int) {
		a.mu.Lock()
		st := a.st
		a.mu.Unlock()
		if st == nil {
			return 0, 0
		}
		p, o, _, err := st.Counts()
		if err != nil {
			t.Fatal(err)
		}
		return p, o
	}

	// A file dropped the way integration engines should: written under a
	// temporary name, then renamed.
	eventually(t, "the drop directory", func() bool { _, err := os.Stat(cfg.DropDir); return err == nil })
	ndjson := `{"resourceType":"Patient","id":"p1","gender":"female","birthDate":"1950-01-01"}
{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2025-06-01T10:00:00Z","valueQuantity":{"value":88,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}
{"resourceType":"Observation","id":"o2","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2025-06-01T11:00:00Z","valueQuantity":{"value":900,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}
`
	tmp := filepath.Join(cfg.DropDir, ".export.tmp")
	if err := os.WriteFile(tmp, []byte(ndjson), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cfg.DropDir, "export.ndjson")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dropped file's records", func() bool { p, o := counts(); return p == 1 && o == 1 })
	eventually(t, "the file moved to done/", func() bool {
		_, err := os.Stat(filepath.Join(cfg.DropDir, "done", "export.ndjson"))
		return err == nil
	})

	// Device telemetry through the embedded broker.
	eventually(t, "the MQTT subscriber", func() bool { st, ok := a.DeviceStats(); return ok && st.Connected })
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("bedside-monitor-7"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	for i := range 20 {
		b, _ := json.Marshal(device.Reading{DeviceID: "mon-7", Patient: "p1", Time: time.Now().Add(-time.Duration(i) * time.Minute).UTC(),
			LOINC: "8867-4", Value: float64(60 + i), Unit: "/min"})
		if tok := c.Publish(device.Topic("st-mary", "mon-7"), 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	if tok := c.Publish(device.Topic("st-mary", "mon-7"), 1, false, []byte(`{"device_id":"mon-7","value":"high"}`)); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("publish timed out")
	}
	eventually(t, "the readings in the store", func() bool { _, o := counts(); return o == 21 })
	eventually(t, "the bad payload counted", func() bool {
		st, _ := a.DeviceStats()
		n := uint64(0)
		for _, v := range st.Rejected {
			n += v
		}
		return n == 1
	})
	// The implausible heart rate (900/min) from the file and the bad
	// payload are quarantined on the gateway.
	count := func(dir string) int {
		n := 0
		filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				n++
			}
			return nil
		})
		return n
	}
	if n := count(filepath.Join(cfg.DataDir, "quarantine", "mqtt")); n != 1 {
		t.Errorf("MQTT quarantine holds %d files, want the bad payload", n)
	}
	if n := count(filepath.Join(cfg.DropDir, "quarantine", "records")); n != 1 {
		t.Errorf("drop-dir quarantine holds %d records, want the implausible heart rate", n)
	}
}

// The metrics endpoint exposes the same counts as the status, by reason.
func TestAgentMetrics(t *testing.T) {
	addr := freeLoopback(t)
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Coordinators = []string{"127.0.0.1:1"}
	cfg.TLS = siteFiles(t, "st-mary")
	cfg.MetricsAddr = addr
	cfg.FHIRDir = t.TempDir()
	bad := `{"resourceType":"Patient","id":"p1"}
{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2025-06-01T10:00:00Z","valueQuantity":{"value":72,"unit":"furlongs"}}
not json
`
	if err := os.WriteFile(filepath.Join(cfg.FHIRDir, "x.ndjson"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.Run(ctx) })
	defer func() { cancel(); wg.Wait(); a.Close() }()
	var body string
	eventually(t, "the metrics endpoint", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `cohort_agent_resources_rejected_total{reason="malformed-json"} 1`)
	})
	for _, want := range []string{
		`cohort_agent_resources_ingested_total{type="Patient"} 1`,
		`cohort_agent_resources_rejected_total{reason="unknown-unit"} 1`,
		"# TYPE cohort_agent_bytes_sent_total counter",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "p1") {
		t.Error("a patient id reached the metrics")
	}
}
