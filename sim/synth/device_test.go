package synth

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/device"
)

// telemetrySite is a quick site with device telemetry.
func telemetrySite(seed uint64) Site {
	s := smallSite(seed)
	s.Patients = 40
	s.TelemetryMinutes = 10
	return s
}

// writeTelemetrySite writes site and returns its manifest, records and
// telemetry messages.
func writeTelemetrySite(t *testing.T, site Site) (string, *Manifest, []Record, []Message) {
	t.Helper()
	dir := t.TempDir()
	m, err := WriteSite(dir, site, DefaultTruth())
	if err != nil {
		t.Fatalf("WriteSite: %v", err)
	}
	recs, err := Generate(site, DefaultTruth())
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ReadTelemetry(TelemetryPath(dir))
	if err != nil {
		t.Fatalf("ReadTelemetry: %v", err)
	}
	return dir, m, recs, msgs
}

// TestTelemetryAcceptedByAgent decodes every message with the agent's own
// decoder and checks the stream against the generated patients.
func TestTelemetryAcceptedByAgent(t *testing.T) {
	t.Parallel()
	site := telemetrySite(2)
	site.Missing = 0.1
	site.Calibration = map[string]float64{"heart_rate": 5}
	dir, m, recs, msgs := writeTelemetrySite(t, site)
	if len(msgs) == 0 || len(msgs) != m.Telemetry {
		t.Fatalf("%d messages, manifest says %d", len(msgs), m.Telemetry)
	}
	if len(m.Devices) == 0 || len(m.Devices) >= site.Patients {
		t.Errorf("%d monitors for %d patients: monitors should be shared", len(m.Devices), site.Patients)
	}
	byID := map[string]*Record{}
	for i := range recs {
		byID[recs[i].ID] = &recs[i]
	}
	now := baseTime().AddDate(2, 0, 0)
	type stay struct{ first, last time.Time }
	stays := map[string]map[string]*stay{} // device -> patient -> readings' span
	obsIDs := map[string]bool{}
	perPatient := map[string]int{}
	var prev time.Time
	units := map[string]string{}
	for _, v := range vitals {
		units[v.loinc] = v.unit
	}
	for i, msg := range msgs {
		r, err := device.Decode(msg.Topic, msg.Payload, now)
		if err != nil {
			t.Fatalf("message %d: agent refuses it: %v (%s)", i, err, device.Reason(err))
		}
		topicSite, dev, err := device.ParseTopic(msg.Topic)
		if err != nil || topicSite != site.Name || msg.Topic != device.Topic(site.Name, r.DeviceID) {
			t.Fatalf("message %d: topic %q (site %q, device %q, %v)", i, msg.Topic, topicSite, dev, err)
		}
		if !slices.Contains(m.Devices, r.DeviceID) {
			t.Fatalf("message %d: device %q not in the manifest", i, r.DeviceID)
		}
		rec := byID[r.Patient]
		if rec == nil || !slices.Contains(m.PatientIDs, r.Patient) {
			t.Fatalf("message %d: unknown patient", i)
		}
		if r.Time.Before(prev) {
			t.Fatalf("message %d: time %v before the previous %v", i, r.Time, prev)
		}
		prev = r.Time
		if r.Time.Before(rec.start) || !r.Time.Before(rec.end()) {
			t.Errorf("message %d: time %v outside the monitoring window [%v, %v)", i, r.Time, rec.start, rec.end())
		}
		if units[r.LOINC] != r.Unit || r.LOINC == vitals[vBMI].loinc {
			t.Errorf("message %d: loinc %s unit %s", i, r.LOINC, r.Unit)
		}
		if id := r.ObservationID(); obsIDs[id] {
			t.Errorf("message %d: observation id repeats: the agent would overwrite a reading", i)
		} else {
			obsIDs[id] = true
		}
		perPatient[r.Patient]++
		if stays[r.DeviceID] == nil {
			stays[r.DeviceID] = map[string]*stay{}
		}
		if s := stays[r.DeviceID][r.Patient]; s == nil {
			stays[r.DeviceID][r.Patient] = &stay{r.Time, r.Time}
		} else {
			s.last = r.Time
		}
	}
	if len(perPatient) != site.Patients {
		t.Errorf("telemetry for %d patients, want all %d", len(perPatient), site.Patients)
	}
	// A monitor serves one patient at a time.
	for dev, ps := range stays {
		var spans []stay
		for _, s := range ps {
			spans = append(spans, *s)
		}
		slices.SortFunc(spans, func(a, b stay) int { return a.first.Compare(b.first) })
		for i := 1; i < len(spans); i++ {
			if !spans[i-1].last.Before(spans[i].first) {
				t.Errorf("monitor %s: two patients at once", dev)
			}
		}
	}

	// No direct identifier is in the stream; the patient ids it carries
	// are the manifest's canaries.
	raw, err := os.ReadFile(TelemetryPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, list := range [][]string{m.Names, families(m.Names), m.MRNs, m.Phones, m.Emails, m.Addresses, m.BirthDates} {
		for _, v := range list {
			if bytes.Contains(raw, []byte(v)) {
				t.Fatalf("telemetry holds the identifier %q", v)
			}
		}
	}
	for _, id := range m.PatientIDs {
		if !bytes.Contains(raw, []byte(id)) {
			t.Fatalf("patient %s has no telemetry", id)
		}
	}
}

// decodeAll decodes messages with the agent's decoder.
func decodeAll(t *testing.T, msgs []Message) []device.Reading {
	t.Helper()
	out := make([]device.Reading, len(msgs))
	for i, msg := range msgs {
		r, err := device.Decode(msg.Topic, msg.Payload, baseTime().AddDate(2, 0, 0))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = r
	}
	return out
}

func TestTelemetryKnobs(t *testing.T) {
	if testing.Short() {
		t.Skip("generates whole sites; the race run gains nothing (the generator starts no goroutines)")
	}
	t.Parallel()
	base := telemetrySite(4)
	base.Patients = 150
	base.Missing = 0
	cal := base
	cal.Calibration = map[string]float64{"heart_rate": 12, "spo2": -3}
	noisy := base
	noisy.Noise = 1
	var readings [3][]device.Reading
	for i, s := range []Site{base, cal, noisy} {
		_, _, _, msgs := writeTelemetrySite(t, s)
		readings[i] = decodeAll(t, msgs)
	}
	plain := readings[0]

	// The knobs change values, not which readings there are, nor their
	// order: compare them reading by reading.
	diffs := func(other []device.Reading, loinc string) []float64 {
		t.Helper()
		if len(other) != len(plain) {
			t.Fatalf("%d readings, want %d", len(other), len(plain))
		}
		var d []float64
		for i, r := range plain {
			if r.ObservationID() != other[i].ObservationID() {
				t.Fatalf("reading %d: the knob changed which readings there are", i)
			}
			if r.LOINC == loinc {
				d = append(d, other[i].Value-r.Value)
			}
		}
		return d
	}
	hr, spo2, temp := vitals[vHeartRate].loinc, vitals[vSpO2].loinc, vitals[vTemperature].loinc
	if d := mean(diffs(readings[1], hr)); math.Abs(d-12) > 0.1 {
		t.Errorf("heart rate calibration shifted the stream by %.3f, want 12", d)
	}
	if d := mean(diffs(readings[1], spo2)); d > -2 || d < -3.01 { // clamped at 100%
		t.Errorf("SpO2 calibration shifted the stream by %.3f, want about -3", d)
	}
	if d := diffs(readings[1], temp); slices.ContainsFunc(d, func(x float64) bool { return x != 0 }) {
		t.Error("uncalibrated temperature changed")
	}
	d := diffs(readings[2], hr)
	for i := range d {
		d[i] *= d[i]
	}
	// Extra noise of 1 scale, 15/min, on each reading.
	if rms := math.Sqrt(mean(d)); rms < 13 || rms > 17 {
		t.Errorf("noise moved heart rate readings by %.2f/min RMS, want about 15", rms)
	}
}

func TestTelemetryDeterministic(t *testing.T) {
	t.Parallel()
	read := func(site Site) []byte {
		dir := t.TempDir()
		if _, err := WriteSite(dir, site, DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(TelemetryPath(dir))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, other := read(telemetrySite(5)), read(telemetrySite(5)), read(telemetrySite(6))
	if !bytes.Equal(a, b) {
		t.Error("same seed gave different telemetry")
	}
	if bytes.Equal(a, other) {
		t.Error("different seed gave the same telemetry")
	}
	denser := telemetrySite(5)
	denser.TelemetryMinutes = 5
	if d := read(denser); len(d) < len(a)*3/2 {
		t.Errorf("readings every 5 minutes gave %d bytes, every 10 %d", len(d), len(a))
	}
}

func TestWriteSiteRemovesStaleTelemetry(t *testing.T) {
	dir := t.TempDir()
	site := telemetrySite(1)
	if _, err := WriteSite(dir, site, DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	site.TelemetryMinutes = 0
	m, err := WriteSite(dir, site, DefaultTruth())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(TelemetryPath(dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale telemetry file left behind (stat: %v)", err)
	}
	if m.Telemetry != 0 || m.Devices != nil {
		t.Errorf("manifest telemetry %d devices %v, want none", m.Telemetry, m.Devices)
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	dir, m, _, msgs := writeTelemetrySite(t, telemetrySite(3))
	path := TelemetryPath(dir)

	var got []Message
	n, err := Replay(context.Background(), path, func(topic string, payload []byte) error {
		got = append(got, Message{topic, bytes.Clone(payload)})
		return nil
	})
	if err != nil || n != m.Telemetry {
		t.Fatalf("Replay = %d, %v; want %d", n, err, m.Telemetry)
	}
	if !slices.EqualFunc(got, msgs, func(a, b Message) bool { return a.Topic == b.Topic && bytes.Equal(a.Payload, b.Payload) }) {
		t.Error("Replay published other messages than ReadTelemetry returns")
	}
	// The payload is published byte for byte as written.
	raw, _ := os.ReadFile(path)
	first, _, _ := bytes.Cut(raw, []byte("\n"))
	if !bytes.Contains(first, got[0].Payload) || !bytes.HasPrefix(got[0].Payload, []byte(`{"device_id":`)) {
		t.Errorf("payload %s is not the file's %s", got[0].Payload, first)
	}

	errBroker := errors.New("broker down")
	calls := 0
	n, err = Replay(context.Background(), path, func(string, []byte) error {
		if calls++; calls == 3 {
			return errBroker
		}
		return nil
	})
	if n != 2 || !errors.Is(err, errBroker) {
		t.Errorf("Replay with a failing publish = %d, %v; want 2, the publish error", n, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	n, err = Replay(ctx, path, func(string, []byte) error {
		cancel()
		return nil
	})
	if n != 1 || !errors.Is(err, context.Canceled) {
		t.Errorf("Replay after cancel = %d, %v; want 1, context.Canceled", n, err)
	}

	if _, err := Replay(context.Background(), filepath.Join(dir, "none"), nil); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Replay of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestReadTelemetryRejects(t *testing.T) {
	good := `{"topic":"cohort/a/devices/d/observations","payload":{"device_id":"d"}}`
	tests := []struct {
		name    string
		content string
		ok      int // messages before the bad line
	}{
		{"not json", good + "\n{\"topic\":", 1},
		{"no topic", `{"payload":{}}`, 0},
		{"empty topic", `{"topic":"","payload":{}}`, 0},
		{"topic not a string", `{"topic":1,"payload":{}}`, 0},
		{"payload a string", `{"topic":"t","payload":"{}"}`, 0},
		{"payload null", `{"topic":"t","payload":null}`, 0},
		{"no payload", `{"topic":"t"}`, 0},
		{"unknown field", `{"topic":"t","payload":{},"qos":1}`, 0},
		{"trailing data", good + ` {}`, 0},
		{"array", `[]`, 0},
		{"line too long", `{"topic":"t","payload":{"x":"` + strings.Repeat("a", maxTelemetryLine) + `"}}`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := decodeTelemetry(context.Background(), strings.NewReader(tc.content), func(Message) error { return nil })
			if !errors.Is(err, ErrTelemetry) || n != tc.ok {
				t.Errorf("decode = %d, %v; want %d, ErrTelemetry", n, err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), `{"`) {
				t.Errorf("error quotes the input: %v", err)
			}
		})
	}
	n, err := decodeTelemetry(context.Background(), strings.NewReader("\n"+good+"\n\n"+good+"\n"), func(Message) error { return nil })
	if n != 2 || err != nil {
		t.Errorf("blank lines: %d, %v", n, err)
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(`{"topic":"cohort/a/devices/d/observations","payload":{"device_id":"d","value":1}}`))
	f.Add([]byte(`{"topic":"t","payload":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			if m.Topic != "" || m.Payload != nil {
				t.Fatalf("error %v with a message", err)
			}
			return
		}
		if m.Topic == "" || len(m.Payload) == 0 || m.Payload[0] != '{' {
			t.Fatalf("accepted %q as %+v", b, m)
		}
	})
}
