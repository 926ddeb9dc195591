package synth

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cohort-fl/cohort/agent/device"
)

// Device telemetry written by WriteSite when Site.TelemetryMinutes is set.
const (
	// DeviceDir is the subdirectory of a site's directory that holds its
	// device telemetry. FHIR directory readers skip subdirectories, so the
	// site's directory can still be read as FHIR input.
	DeviceDir = "device"
	// TelemetryFile, in DeviceDir, holds one Message per line.
	TelemetryFile = "telemetry.ndjson"
)

const (
	// monitorTurnover is the least time between two patients on one
	// bedside monitor.
	monitorTurnover = 15 * time.Minute
	// maxTelemetryLine bounds a line ReadTelemetry accepts (the agent
	// takes payloads up to 64 KiB).
	maxTelemetryLine = 1 << 20
)

// TelemetryPath returns the path of the telemetry file of a site written
// to dir.
func TelemetryPath(dir string) string { return filepath.Join(dir, DeviceDir, TelemetryFile) }

// Message is one line of a telemetry file: a reading as a bedside monitor
// publishes it over MQTT (QoS 1) to the site's agent, in the format of
// package agent/device.
type Message struct {
	// Topic is the MQTT topic,
	// "cohort/<Site.Name>/devices/<device id>/observations".
	Topic string `json:"topic"`
	// Payload is the MQTT payload, a JSON object the agent decodes:
	// {"device_id", "patient", "time", "loinc", "value", "unit"}. It is
	// stored in the file as a JSON value, not a string; these are its
	// exact bytes, to be published as they are.
	Payload json.RawMessage `json:"payload"`
}

// reading is the payload of a device message (agent/device.Reading on the
// wire). Struct fields keep the byte order fixed.
type reading struct {
	DeviceID string  `json:"device_id"`
	Patient  string  `json:"patient"`
	Time     string  `json:"time"`
	LOINC    string  `json:"loinc"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
}

// telemetryLine is a Message as WriteSite writes it.
type telemetryLine struct {
	Topic   string  `json:"topic"`
	Payload reading `json:"payload"`
}

// monitorID is the equipment serial of monitor number n (from 0) at the
// site with the given index.
func monitorID(index, n int) string { return fmt.Sprintf("BM-%d-%04d", index, n+1) }

// end is the end of the patient's monitoring: the last charted vitals.
func (r *Record) end() time.Time { return r.visits[len(r.visits)-1].at }

// assignMonitors gives each record, taken in order, the lowest-numbered
// bedside monitor free at the start of its encounter; a monitor is free
// again monitorTurnover after its patient's monitoring ended. It returns
// each record's monitor number and the number of monitors.
func assignMonitors(recs []Record, order []int) (monitor []int, n int) {
	monitor = make([]int, len(recs))
	var freeAt []time.Time
	for _, i := range order {
		start := recs[i].start
		m := slices.IndexFunc(freeAt, func(t time.Time) bool { return !t.After(start) })
		if m < 0 {
			m = len(freeAt)
			freeAt = append(freeAt, time.Time{})
		}
		freeAt[m] = recs[i].end().Add(monitorTurnover)
		monitor[i] = m
	}
	return monitor, len(freeAt)
}

// cursor is one patient's position in the telemetry stream.
type cursor struct {
	rec    *Record
	device string
	r      *rand.Rand
	at     time.Time // time of the next round of readings
}

// cursorHeap orders cursors by the time of their next readings, then by
// patient number.
type cursorHeap []*cursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	if c := h[i].at.Compare(h[j].at); c != 0 {
		return c < 0
	}
	return h[i].rec.num < h[j].rec.num
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return c
}

// writeTelemetry writes the bedside-monitor readings of recs to w in time
// order and records the monitors and the message count in m.
//
// Every patient is on a monitor from the start of the encounter until,
// not including, the time of the last charted vitals, so the charted
// values stay the last observed ones. Every site.TelemetryMinutes the
// monitor reads heart rate, respiratory rate, blood pressure (systolic and
// diastolic together), temperature and SpO2, each missing with the
// patient's site's missingness, each with the ordinary measurement error,
// the site's calibration offset and its extra noise. Draws come from each
// patient's telemetry stream, so the file depends only on the site.
func writeTelemetry(w io.Writer, recs []Record, site Site, m *Manifest) error {
	order := make([]int, len(recs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return recs[a].start.Compare(recs[b].start) })
	monitor, n := assignMonitors(recs, order)
	m.Devices = make([]string, n)
	for k := range m.Devices {
		m.Devices[k] = monitorID(site.Index, k)
	}
	every := time.Duration(site.TelemetryMinutes) * time.Minute

	var h cursorHeap
	next := 0
	for {
		// Admit every patient whose monitoring starts no later than the
		// earliest pending round: then h[0] is the earliest of all.
		for next < len(order) && (len(h) == 0 || !recs[order[next]].start.After(h[0].at)) {
			i := order[next]
			heap.Push(&h, &cursor{
				rec:    &recs[i],
				device: m.Devices[monitor[i]],
				r:      stream(site.Seed, recs[i].num, saltTelemetry),
				at:     recs[i].start,
			})
			next++
		}
		if len(h) == 0 {
			return nil
		}
		c := h[0]
		if err := c.emit(w, site.Name, m); err != nil {
			return err
		}
		if c.at = c.at.Add(every); c.at.Before(c.rec.end()) {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
}

// emit writes the cursor's round of readings at c.at.
func (c *cursor) emit(w io.Writer, site string, m *Manifest) error {
	rec := c.rec
	state := rec.Profile.state()
	topic := device.Topic(site, c.device)
	at := c.at.UTC().Format(time.RFC3339)
	var have [numVitals]bool
	for k := range numVitals {
		v := vital(k)
		switch v {
		case vBMI:
			continue
		case vDiastolic:
			have[k] = have[vSystolic] // one cuff reading gives both
		default:
			have[k] = c.r.Float64() >= rec.meas.missing
		}
		value := rec.meas.measure(v, state[k]+vitals[k].sd*c.r.NormFloat64(), c.r.NormFloat64())
		if !have[k] {
			continue
		}
		err := writeLine(w, telemetryLine{Topic: topic, Payload: reading{
			DeviceID: c.device,
			Patient:  patientRefPrefix + rec.ID,
			Time:     at,
			LOINC:    vitals[k].loinc,
			Value:    value,
			Unit:     vitals[k].unit,
		}})
		if err != nil {
			return err
		}
		m.Telemetry++
	}
	return nil
}

// ReadTelemetry reads a telemetry file (see TelemetryPath) into memory.
// For a large file, Replay streams instead. Errors about the content wrap
// ErrTelemetry and name the line, never quote it (payloads name
// patients).
func ReadTelemetry(path string) ([]Message, error) {
	var out []Message
	_, err := scanTelemetry(context.Background(), path, func(m Message) error {
		out = append(out, m)
		return nil
	})
	return out, err
}

// Replay reads the telemetry file at path and calls publish with each
// message's topic and payload, in file order (reading time order), until
// the file ends, publish fails or ctx is done. It returns how many
// messages were published. Pacing, QoS and the MQTT client are the
// caller's: publish should send at QoS 1, as monitors do.
func Replay(ctx context.Context, path string, publish func(topic string, payload []byte) error) (int, error) {
	return scanTelemetry(ctx, path, func(m Message) error {
		return publish(m.Topic, m.Payload)
	})
}

// scanTelemetry decodes the telemetry file at path line by line and calls
// fn with each message; it returns the number of calls that succeeded.
func scanTelemetry(ctx context.Context, path string, fn func(Message) error) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("synth: open telemetry: %w", err)
	}
	defer f.Close()
	return decodeTelemetry(ctx, f, fn)
}

// decodeTelemetry is scanTelemetry on a reader.
func decodeTelemetry(ctx context.Context, r io.Reader, fn func(Message) error) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxTelemetryLine)
	done := 0
	for line := 1; sc.Scan(); line++ {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		m, err := parseMessage(b)
		if err != nil {
			return done, fmt.Errorf("%w: line %d: %w", ErrTelemetry, line, err)
		}
		if err := fn(m); err != nil {
			return done, fmt.Errorf("synth: telemetry line %d: %w", line, err)
		}
		done++
	}
	if err := sc.Err(); err != nil {
		return done, fmt.Errorf("%w: %w", ErrTelemetry, err)
	}
	return done, nil
}

// parseMessage decodes one line: an object with exactly a non-empty string
// "topic" and an object "payload". Its errors do not quote the input.
func parseMessage(b []byte) (Message, error) {
	var raw struct {
		Topic   *string         `json:"topic"`
		Payload json.RawMessage `json:"payload"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Message{}, errNotMessage
	}
	if _, err := dec.Token(); err != io.EOF {
		return Message{}, errNotMessage
	}
	if raw.Topic == nil || *raw.Topic == "" {
		return Message{}, errNoTopic
	}
	if len(raw.Payload) == 0 || raw.Payload[0] != '{' {
		return Message{}, errNoPayload
	}
	return Message{Topic: *raw.Topic, Payload: raw.Payload}, nil
}

// Details of ErrTelemetry.
var (
	errNotMessage = errors.New("not a JSON object with exactly a topic and a payload")
	errNoTopic    = errors.New("no topic")
	errNoPayload  = errors.New("payload is not a JSON object")
)
