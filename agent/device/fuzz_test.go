package device

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzDecode: Decode never panics, every error has a known reason, and an
// accepted Reading re-encodes to a payload that decodes to the same Reading.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"device_id":"MX450-0042","patient":"Patient/p-1","time":"2025-03-01T11:59:00Z","loinc":"8867-4","value":72,"unit":"/min"}`,
		`{"device_id":"MX450-0042","time":"2025-03-01T13:00:00.123456789+02:00","loinc":"2339-0","value":-1.5e-300,"unit":"mg/dL"}`,
		`{"device_id":"MX450-0042","patient":"urn:uuid:abc","time":"1900-01-01T00:00:00Z","loinc":"59408-5","value":0,"unit":"\u2028%"}`,
		`{"device_id":"MX450-0042","value":"72"}`,
		`{"device_id":"MX450-0042","unit":"a","unit":"b"}`,
		`[]`, `null`, `{}`, `{"value":1e400}`, ``, "\xff",
	}
	for _, s := range seeds {
		f.Add(testTopic, []byte(s))
	}
	f.Add("cohort/s/devices/d/observations", []byte(`{"device_id":"d","time":"2025-03-01T11:59:00Z","loinc":"8867-4","value":1,"unit":"x"}`))
	known := map[string]bool{}
	for _, r := range Reasons() {
		known[r] = true
	}
	// Generous limits for the re-decode: Go's encoder may escape what the
	// input carried raw (U+2028), growing the payload.
	relaxed := Limits{MaxPayload: 1 << 30, MaxFutureSkew: DefaultMaxFutureSkew}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		r, err := Decode(topic, payload, now)
		if err != nil {
			if !known[Reason(err)] {
				t.Fatalf("error without a known reason: %v", err)
			}
			return
		}
		if r.Time.Location() != time.UTC {
			t.Fatalf("time not UTC: %v", r.Time)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			t.Fatalf("re-encode %+v: %v", r, err)
		}
		r2, err := relaxed.Decode(topic, bytes.TrimSpace(buf.Bytes()), now)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", buf.Bytes(), err)
		}
		if r2 != r {
			t.Fatalf("round trip: %+v != %+v", r2, r)
		}
		if r2.ObservationID() != r.ObservationID() {
			t.Fatal("round trip changed the observation id")
		}
	})
}
