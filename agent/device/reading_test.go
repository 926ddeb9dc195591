package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const testTopic = "cohort/site-a/devices/MX450-0042/observations"

func TestDecode(t *testing.T) {
	valid := `{"device_id":"MX450-0042","patient":"Patient/p-1","time":"2025-03-01T11:59:00Z","loinc":"8867-4","value":72,"unit":"/min"}`
	tests := []struct {
		name    string
		topic   string
		payload string
		limits  *Limits
		want    Reading
		reason  string
	}{
		{name: "valid", payload: valid, want: Reading{DeviceID: "MX450-0042", Patient: "p-1",
			Time: testNow.Add(-time.Minute), LOINC: "8867-4", Value: 72, Unit: "/min"}},
		{name: "valid no patient, offset time, exponent",
			payload: `{"device_id":"MX450-0042","time":"2025-03-01T13:00:00.5+02:00","loinc":"2339-0","value":-1.5e2,"unit":"mg/dL"}`,
			want: Reading{DeviceID: "MX450-0042", Time: time.Date(2025, 3, 1, 11, 0, 0, 5e8, time.UTC),
				LOINC: "2339-0", Value: -150, Unit: "mg/dL"}},
		{name: "valid urn patient", payload: strings.Replace(valid, "Patient/p-1", "urn:uuid:0f3c-9a", 1),
			want: Reading{DeviceID: "MX450-0042", Patient: "0f3c-9a", Time: testNow.Add(-time.Minute), LOINC: "8867-4", Value: 72, Unit: "/min"}},
		{name: "valid absolute patient url", payload: strings.Replace(valid, "Patient/p-1", "https://ehr.example/fhir/Patient/p-1/_history/3", 1),
			want: Reading{DeviceID: "MX450-0042", Patient: "p-1", Time: testNow.Add(-time.Minute), LOINC: "8867-4", Value: 72, Unit: "/min"}},
		{name: "skew allowed", payload: strings.Replace(valid, "11:59:00Z", "12:04:59Z", 1),
			want: Reading{DeviceID: "MX450-0042", Patient: "p-1", Time: testNow.Add(5*time.Minute - time.Second), LOINC: "8867-4", Value: 72, Unit: "/min"}},

		{name: "oversized", payload: `{"device_id":"` + strings.Repeat("x", 100) + `"}`, limits: &Limits{MaxPayload: 64, MaxFutureSkew: time.Minute}, reason: "oversized"},
		{name: "malformed", payload: `{"device_id":`, reason: "malformed-json"},
		{name: "empty payload", payload: ``, reason: "malformed-json"},
		{name: "trailing data", payload: valid + `{}`, reason: "malformed-json"},
		{name: "invalid utf-8", payload: strings.Replace(valid, "/min", "/m\xffin", 1), reason: "malformed-json"},
		{name: "not an object", payload: `[1,2]`, reason: "wrong-type"},
		{name: "scalar", payload: `72`, reason: "wrong-type"},
		{name: "value is a string", payload: strings.Replace(valid, `"value":72`, `"value":"72"`, 1), reason: "wrong-type"},
		{name: "value is null", payload: strings.Replace(valid, `"value":72`, `"value":null`, 1), reason: "wrong-type"},
		{name: "unit is a number", payload: strings.Replace(valid, `"unit":"/min"`, `"unit":1`, 1), reason: "wrong-type"},
		{name: "patient is null", payload: strings.Replace(valid, `"Patient/p-1"`, `null`, 1), reason: "wrong-type"},
		{name: "unknown field", payload: strings.Replace(valid, `"unit"`, `"name":"x","unit"`, 1), reason: "unknown-field"},
		{name: "field name case", payload: strings.Replace(valid, `"unit"`, `"Unit"`, 1), reason: "unknown-field"},
		{name: "duplicate field", payload: strings.Replace(valid, `"unit":"/min"`, `"unit":"/min","unit":"/s"`, 1), reason: "duplicate-field"},
		{name: "duplicate field escaped", payload: strings.Replace(valid, `"unit":"/min"`, `"unit":"/min","un\u0069t":"/s"`, 1), reason: "duplicate-field"},
		{name: "missing unit", payload: strings.Replace(valid, `,"unit":"/min"`, ``, 1), reason: "missing-field"},
		{name: "missing value", payload: strings.Replace(valid, `"value":72,`, ``, 1), reason: "missing-field"},
		{name: "missing device", payload: strings.Replace(valid, `"device_id":"MX450-0042",`, ``, 1), reason: "missing-field"},
		{name: "bad topic layout", topic: "cohort/site-a/devices/MX450-0042", payload: valid, reason: "bad-topic"},
		{name: "bad topic prefix", topic: "other/site-a/devices/MX450-0042/observations", payload: valid, reason: "bad-topic"},
		{name: "bad device id in topic", topic: "cohort/site-a/devices/MX 450/observations", payload: valid, reason: "bad-topic"},
		{name: "device mismatch", payload: strings.Replace(valid, `"MX450-0042"`, `"MX450-0043"`, 1), reason: "device-mismatch"},
		{name: "loinc syntax", payload: strings.Replace(valid, "8867-4", "8867", 1), reason: "bad-loinc"},
		{name: "loinc letters", payload: strings.Replace(valid, "8867-4", "88a7-4", 1), reason: "bad-loinc"},
		{name: "loinc check digit", payload: strings.Replace(valid, "8867-4", "8867-5", 1), reason: "bad-loinc"},
		{name: "loinc too long", payload: strings.Replace(valid, "8867-4", "12345678-2", 1), reason: "bad-loinc"},
		{name: "value overflow", payload: strings.Replace(valid, `"value":72`, `"value":1e400`, 1), reason: "not-finite"},
		{name: "value negative overflow", payload: strings.Replace(valid, `"value":72`, `"value":-1e309`, 1), reason: "not-finite"},
		{name: "NaN literal", payload: strings.Replace(valid, `"value":72`, `"value":NaN`, 1), reason: "malformed-json"},
		{name: "empty unit", payload: strings.Replace(valid, `"unit":"/min"`, `"unit":""`, 1), reason: "bad-unit"},
		{name: "long unit", payload: strings.Replace(valid, `"unit":"/min"`, `"unit":"`+strings.Repeat("m", MaxUnitLen+1)+`"`, 1), reason: "bad-unit"},
		{name: "time not rfc3339", payload: strings.Replace(valid, "2025-03-01T11:59:00Z", "01/03/2025 11:59", 1), reason: "bad-time"},
		{name: "time without zone", payload: strings.Replace(valid, "2025-03-01T11:59:00Z", "2025-03-01T11:59:00", 1), reason: "bad-time"},
		{name: "time year too small", payload: strings.Replace(valid, "2025-03-01T11:59:00Z", "1899-12-31T23:59:59Z", 1), reason: "bad-time"},
		{name: "future time", payload: strings.Replace(valid, "11:59:00Z", "12:05:01Z", 1), reason: "future-time"},
		{name: "future time zero skew", payload: strings.Replace(valid, "11:59:00Z", "12:00:01Z", 1), limits: &Limits{MaxPayload: 1 << 10}, reason: "future-time"},
		{name: "bad patient reference", payload: strings.Replace(valid, "Patient/p-1", "Practitioner/p-1", 1), reason: "bad-patient"},
		{name: "empty patient", payload: strings.Replace(valid, "Patient/p-1", "", 1), reason: "bad-patient"},
		{name: "patient with spaces", payload: strings.Replace(valid, "Patient/p-1", "John Smith", 1), reason: "bad-patient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := tt.topic
			if topic == "" {
				topic = testTopic
			}
			l := DefaultLimits()
			if tt.limits != nil {
				l = *tt.limits
			}
			got, err := l.Decode(topic, []byte(tt.payload), testNow)
			if tt.reason != "" {
				if err == nil {
					t.Fatalf("Decode accepted the payload: %+v", got)
				}
				if r := Reason(err); r != tt.reason {
					t.Fatalf("Reason = %q (err %v), want %q", r, err, tt.reason)
				}
				// Errors never quote the payload.
				for _, secret := range []string{"p-1", "John Smith", "/min", "MX450-0043"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q quotes the payload (%q)", err, secret)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v (reason %s)", err, Reason(err))
			}
			if got != tt.want {
				t.Fatalf("Decode = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReasonsCoverEverySentinel(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("reason %q listed twice", r)
		}
		seen[r] = true
	}
	if got := Reason(nil); got != "" {
		t.Errorf("Reason(nil) = %q", got)
	}
	if got := Reason(errors.New("x")); got != "other" {
		t.Errorf("Reason(other) = %q", got)
	}
	if got := Reason(fmt.Errorf("wrapped: %w", ErrBadLOINC)); got != "bad-loinc" {
		t.Errorf("Reason(wrapped) = %q", got)
	}
}

func TestValidLOINC(t *testing.T) {
	tests := []struct {
		code string
		ok   bool
	}{
		{"8867-4", true},  // heart rate
		{"2339-0", true},  // glucose
		{"8480-6", true},  // systolic BP
		{"59408-5", true}, // SpO2 by pulse oximetry
		{"8310-5", true},  // body temperature
		{"9279-1", true},  // respiratory rate
		{"8867-3", false},
		{"-4", false},
		{"8867-", false},
		{"8867-44", false},
		{"8867_4", false},
		{"", false},
		{"12345678-9", false},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			if got := ValidLOINC(tt.code); got != tt.ok {
				t.Errorf("ValidLOINC(%q) = %v, want %v", tt.code, got, tt.ok)
			}
		})
	}
}

func TestObservationIDIdempotent(t *testing.T) {
	base := Reading{DeviceID: "MX450-0042", Patient: "p-1", Time: testNow, LOINC: "8867-4", Value: 72, Unit: "/min"}
	id := base.ObservationID()
	if !strings.HasPrefix(id, "dev-") || len(id) != 4+32 {
		t.Fatalf("id %q: want dev- and 32 hex digits", id)
	}
	tests := []struct {
		name string
		r    Reading
		same bool
	}{
		{"identical", base, true},
		{"other value (a corrected reading replaces the first)", func() Reading { r := base; r.Value = 80; return r }(), true},
		{"other patient field", func() Reading { r := base; r.Patient = ""; return r }(), true},
		{"same instant in another zone", func() Reading { r := base; r.Time = testNow.In(time.FixedZone("x", 3600)); return r }(), true},
		{"other device", func() Reading { r := base; r.DeviceID = "MX450-0043"; return r }(), false},
		{"other time", func() Reading { r := base; r.Time = testNow.Add(time.Nanosecond); return r }(), false},
		{"other code", func() Reading { r := base; r.LOINC = "2339-0"; return r }(), false},
		{"field boundary shift", Reading{DeviceID: "MX450-004", Time: testNow, LOINC: "8867-4"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.ObservationID() == id; got != tt.same {
				t.Errorf("same id = %v, want %v", got, tt.same)
			}
		})
	}
	// Decoding the same payload twice (a redelivery) yields the same id.
	p := []byte(`{"device_id":"MX450-0042","time":"2025-03-01T11:59:00Z","loinc":"8867-4","value":72,"unit":"/min"}`)
	a, err1 := Decode(testTopic, p, testNow)
	b, err2 := Decode(testTopic, p, testNow.Add(time.Hour))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if a.Observation("p").ID != b.Observation("p").ID {
		t.Error("redelivered payload got another id")
	}
}

func TestTopic(t *testing.T) {
	if got := TopicFilter("site-a"); got != "cohort/site-a/devices/+/observations" {
		t.Errorf("TopicFilter = %q", got)
	}
	site, dev, err := ParseTopic(Topic("site-a", "MX450-0042"))
	if err != nil || site != "site-a" || dev != "MX450-0042" {
		t.Errorf("ParseTopic = %q %q %v", site, dev, err)
	}
}

func TestReadingJSONTags(t *testing.T) {
	b, err := json.Marshal(Reading{DeviceID: "d", Time: testNow, LOINC: "8867-4", Value: 1, Unit: "u"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"device_id":"d","time":"2025-03-01T12:00:00Z","loinc":"8867-4","value":1,"unit":"u"}`
	if string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
}
