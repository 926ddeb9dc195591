package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/agent/device"
	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/ingest"
	"github.com/cohort-fl/cohort/agent/store"
)

// MQTTConfig connects the agent to bedside-device telemetry.
type MQTTConfig struct {
	// Broker is the MQTT broker URL (tcp://host:1883 or ssl://...). Empty
	// starts an embedded broker on Embedded (the zero-setup default).
	Broker string `json:"broker,omitempty"`
	// Embedded is the loopback address of the embedded broker (default
	// 127.0.0.1:1883) when Broker is empty.
	Embedded string `json:"embedded,omitempty"`
	// ClientID is the agent's stable MQTT client id (default
	// cohort-agent-<site>): the persistent session is keyed by it.
	ClientID string `json:"client_id,omitempty"`
	// Username and Password authenticate to the broker, if it asks.
	// PasswordFile (owner-only) is the better place for the password: the
	// agent refuses a config file holding Password that others may read.
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	// Registry is a JSON file mapping device ids to patients over time
	// (see agent/device); readings without a patient field need it.
	Registry string `json:"registry,omitempty"`
	// QueueSize bounds readings decoded but not yet stored.
	QueueSize int `json:"queue_size,omitempty"`
	// AlertTopic, if set, is where the agent publishes an alert (JSON,
	// QoS 1, to AlertTopic/JOB) when streaming scoring of the telemetry
	// puts a patient at or above a deployed job's alert threshold.
	AlertTopic string `json:"alert_topic,omitempty"`
}

// mqttClientID is the agent's MQTT client id.
func (a *Agent) mqttClientID(mc *MQTTConfig) string {
	if mc.ClientID != "" {
		return mc.ClientID
	}
	return "cohort-agent-" + a.site
}

// quarantineDir holds the raw bytes of rejected input, on the gateway only.
func (a *Agent) quarantineDir() string { return filepath.Join(a.cfg.DataDir, "quarantine") }

// readOptions are the FHIR reader's checks for this agent: units,
// plausibility, duplicates, timestamps in the future by the agent's clock,
// and quarantine of every rejected resource.
func (a *Agent) readOptions() fhir.Options {
	o := fhir.DefaultOptions()
	o.Now = a.now
	o.Quarantine = a.quarantine
	return o
}

// quarantine writes one rejected resource with its reason to the
// quarantine directory (mode 0600, inside the data directory, like the
// store: it may hold PHI, and it never leaves the gateway).
func (a *Agent) quarantine(reason string, raw []byte) {
	if err := os.MkdirAll(a.quarantineDir(), 0o700); err != nil {
		a.log.Warn("quarantine", "err", err)
		return
	}
	sum := sha256.Sum256(raw)
	name := fmt.Sprintf("%s-%s-%s.json", a.now().UTC().Format("20060102T150405Z"), hex.EncodeToString(sum[:6]), reason)
	if err := os.WriteFile(filepath.Join(a.quarantineDir(), name), raw, 0o600); err != nil {
		a.log.Warn("quarantine", "err", err)
	}
}

// storeSink writes to the store in batches and marks cached datasets stale
// after every flush. It satisfies fhir.Sink and device.Flusher.
type storeSink struct {
	*store.Batch
	a *Agent
}

func (s storeSink) Flush() error {
	err := s.Batch.Flush()
	s.a.dataChanged()
	return err
}

// runDropDir watches DropDir and ingests each complete file once.
func (a *Agent) runDropDir(ctx context.Context) error {
	cfg := ingest.DefaultConfig()
	cfg.Dir = a.cfg.DropDir
	cfg.Logger = a.log.With("component", "drop-dir")
	cfg.ReadOptions = a.readOptions()
	// The watcher quarantines rejected records itself, beside the files
	// they came from (DropDir/quarantine/records).
	cfg.ReadOptions.Quarantine = nil
	// The watcher flushes through its sink per file; a store write per
	// record keeps that simple and every record durable once read.
	w, err := ingest.New(cfg, &changeSink{Sink: a.st, a: a})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.drop = w
	a.mu.Unlock()
	defer w.Close()
	return w.Run(ctx)
}

// changeSink marks the store changed after each record it passes on.
type changeSink struct {
	fhir.Sink
	a *Agent
}

func (s *changeSink) Observation(o fhir.Observation) error {
	defer s.a.dataChanged()
	return s.Sink.Observation(o)
}
func (s *changeSink) Patient(p fhir.Patient) error { defer s.a.dataChanged(); return s.Sink.Patient(p) }
func (s *changeSink) Condition(c fhir.Condition) error {
	defer s.a.dataChanged()
	return s.Sink.Condition(c)
}
func (s *changeSink) Encounter(e fhir.Encounter) error {
	defer s.a.dataChanged()
	return s.Sink.Encounter(e)
}

// runMQTT subscribes to the site's device telemetry (starting the embedded
// broker when no broker is configured) and stores every valid reading.
func (a *Agent) runMQTT(ctx context.Context, mc *MQTTConfig) error {
	broker := mc.Broker
	if broker == "" {
		addr := mc.Embedded
		if addr == "" {
			addr = "127.0.0.1:1883"
		}
		b, err := device.StartEmbeddedBroker(ctx, addr, a.log.With("component", "mqtt-broker"))
		if err != nil {
			return fmt.Errorf("embedded mqtt broker: %w", err)
		}
		defer b.Close()
		broker = b.URL()
		a.log.Info("embedded MQTT broker started", "addr", b.Addr())
	}
	var reg *device.Registry
	if mc.Registry != "" {
		r, err := device.LoadRegistry(mc.Registry)
		if err != nil {
			return err
		}
		reg = r
	}
	cfg := device.DefaultConfig()
	cfg.Broker = broker
	cfg.Site = a.site
	cfg.ClientID = a.mqttClientID(mc)
	cfg.Username, cfg.Password = mc.Username, mc.Password
	if mc.QueueSize > 0 {
		cfg.QueueSize = mc.QueueSize
	}
	cfg.QuarantineDir = filepath.Join(a.quarantineDir(), "mqtt")
	// The persistent session's in-flight messages live in an encrypted
	// file store (device.SealedStore, key derived from the master key).
	cfg.StoreDir = filepath.Join(a.cfg.DataDir, "mqtt")
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return fmt.Errorf("mqtt store dir: %w", err)
	}
	a.mu.Lock()
	cfg.StoreKey = a.masterKey
	a.mu.Unlock()
	cfg.Logger = a.log.With("component", "mqtt")
	cfg.Now = a.now
	var sink device.ObservationSink = storeSink{Batch: a.st.NewBatch(0), a: a}
	if len(a.cfg.Deploy) > 0 {
		// Score the patients whose readings arrive with the deployed
		// models (score.go).
		sink = &scoringSink{storeSink: storeSink{Batch: a.st.NewBatch(0), a: a}, touched: map[string]struct{}{}}
		a.startAlerts(ctx, mc, broker)
	}
	sub, err := device.New(cfg, reg, sink)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.mqtt = sub
	a.mu.Unlock()
	defer sub.Close()
	return sub.Run(ctx)
}

// DeviceStats returns the MQTT subscriber's counters, if it runs.
func (a *Agent) DeviceStats() (device.Stats, bool) {
	a.mu.Lock()
	sub := a.mqtt
	a.mu.Unlock()
	if sub == nil {
		return device.Stats{}, false
	}
	return sub.Stats(), true
}

// statusEvery is how often a running agent with live sources rewrites its
// status file.
const statusEvery = 10 * time.Second
