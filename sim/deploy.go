package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Deployment in a testbed (Config.Deploy): every agent follows the
// training job's production version and runs its own MQTT broker for
// bedside telemetry. Once training is done the final model is promoted to
// production; the run waits until every site runs it, then replays each
// site's synthetic device telemetry to its broker and collects what local
// inference produced: the FHIR RiskAssessments in each agent's outbox and
// the alerts on each broker's alert topic, each of which must name the
// promoted version.

// DeploySpec configures the deployment step.
type DeploySpec struct {
	// AlertThreshold is the job's alert threshold on the risk (default
	// 0.3).
	AlertThreshold float64 `json:"alert_threshold,omitempty"`
	// Readings is how many telemetry messages are replayed per site
	// (default 200).
	Readings int `json:"readings,omitempty"`
}

func (d *DeploySpec) threshold() float64 {
	if d.AlertThreshold == 0 {
		return 0.3
	}
	return d.AlertThreshold
}

func (d *DeploySpec) readings() int {
	if d.Readings == 0 {
		return 200
	}
	return d.Readings
}

// DeployReport is what the deployment step saw.
type DeployReport struct {
	Model string `json:"model"`
	Round uint64 `json:"round"`
	// SitesReached run the promoted version.
	SitesReached int `json:"sites_reached"`
	Readings     int `json:"readings_replayed"`
	// RiskAssessments in the agents' outboxes, and how many name the
	// promoted version; likewise the alerts received on the brokers.
	RiskAssessments       int `json:"risk_assessments"`
	RiskAssessmentsNaming int `json:"risk_assessments_naming_model"`
	Alerts                int `json:"alerts"`
	AlertsNaming          int `json:"alerts_naming_model"`
}

// alertTopic is where the testbed's agents publish alerts.
const alertTopic = "cohort/alerts"

// deployBrokers picks a loopback address for each site's embedded broker.
func deployBrokers(sites []string) (map[string]string, error) {
	out := make(map[string]string, len(sites))
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for _, s := range sites {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out[s] = l.Addr().String()
	}
	return out, nil
}

// deployAgentEdit makes an agent follow job and run a broker at broker.
func deployAgentEdit(job string, brokers map[string]string) func(string, *agent.Config) {
	return func(site string, c *agent.Config) {
		c.Deploy = []string{job}
		c.DeployPoll = agent.Duration(200 * time.Millisecond)
		c.MQTT = &agent.MQTTConfig{Embedded: brokers[site], AlertTopic: alertTopic}
	}
}

// deployAndScore promotes job's final model, waits until every site runs
// it, replays telemetry and collects the RiskAssessments and alerts.
func deployAndScore(ctx context.Context, fed *federation, job, dataDir string, spec *DeploySpec, brokers map[string]string) (*DeployReport, error) {
	leader, err := fed.leader(ctx)
	if err != nil {
		return nil, err
	}
	j, ok := leader.Job(job)
	if !ok || j.Global == nil {
		return nil, fmt.Errorf("job %s has no model to deploy", job)
	}
	rep := &DeployReport{Model: j.Global.Digest, Round: j.Global.Round}
	if err := leader.SetStage(job, rep.Model, coordinator.StageProduction); err != nil {
		return nil, fmt.Errorf("promote: %w", err)
	}
	agents := fed.runningAgents()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep.SitesReached = 0
		for _, a := range agents {
			if d, _, ok := a.Deployed(job); ok && d == rep.Model {
				rep.SitesReached++
			}
		}
		if rep.SitesReached == len(agents) || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	// Alerts, from every site's broker.
	var (
		mu     sync.Mutex
		alerts []agent.Alert
	)
	var clients []mqtt.Client
	defer func() {
		for _, c := range clients {
			c.Disconnect(100)
		}
	}()
	for site, addr := range brokers {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sim-" + site).SetConnectTimeout(5 * time.Second))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("site %s broker: %v", site, tok.Error())
		}
		clients = append(clients, c)
		if tok := c.Subscribe(alertTopic+"/#", 1, func(_ mqtt.Client, m mqtt.Message) {
			var al agent.Alert
			if json.Unmarshal(m.Payload(), &al) == nil {
				mu.Lock()
				alerts = append(alerts, al)
				mu.Unlock()
			}
		}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("site %s alert topic: %v", site, tok.Error())
		}
		n, err := replayTelemetry(c, filepath.Join(dataDir, site), spec.readings())
		if err != nil {
			return nil, fmt.Errorf("site %s telemetry: %w", site, err)
		}
		rep.Readings += n
	}
	// Wait until every replayed reading is stored (and so its flush
	// scored), then until the scores stop coming.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		var stored, rejected uint64
		for _, a := range agents {
			if st, ok := a.DeviceStats(); ok {
				stored += st.Stored
				for _, n := range st.Rejected {
					rejected += n
				}
			}
		}
		if stored+rejected >= uint64(rep.Readings) {
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	var last, stable int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && stable < 5; {
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
		n := 0
		for _, a := range agents {
			n += a.Stats().Scored
		}
		if n == last && n > 0 {
			stable++
		} else {
			stable, last = 0, n
		}
	}
	for _, a := range agents {
		dir := a.RiskOutbox()
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			rep.RiskAssessments++
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && strings.Contains(string(b), rep.Model) {
				rep.RiskAssessmentsNaming++
			}
		}
	}
	mu.Lock()
	for _, al := range alerts {
		rep.Alerts++
		if al.Model == rep.Model {
			rep.AlertsNaming++
		}
	}
	mu.Unlock()
	return rep, nil
}

// replayTelemetry publishes up to n messages of a site's synthetic
// telemetry file, as its bedside monitors would (QoS 1).
func replayTelemetry(c mqtt.Client, siteDir string, n int) (int, error) {
	f, err := os.Open(synth.TelemetryPath(siteDir))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := 0
	for sent < n && sc.Scan() {
		var m synth.Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return sent, err
		}
		if tok := c.Publish(m.Topic, 1, false, []byte(m.Payload)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return sent, errors.Join(errors.New("publish timed out"), tok.Error())
		}
		sent++
	}
	return sent, sc.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runningAgents are the in-process agents running now, in site order.
func (f *federation) runningAgents() []*agent.Agent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*agent.Agent
	for _, s := range slices.Sorted(maps.Keys(f.running)) {
		out = append(out, f.running[s].agent)
	}
	return out
}
