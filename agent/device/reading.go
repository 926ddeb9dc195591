package device

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// Topic layout.
const (
	// TopicPrefix is the first topic level of every device topic.
	TopicPrefix = "cohort"
	// TopicSuffix is the last topic level of a device's observation topic.
	TopicSuffix = "observations"
	// MaxIDLen is the longest site or device id.
	MaxIDLen = 128
	// MaxUnitLen is the longest unit string.
	MaxUnitLen = 64
	// DefaultMaxPayload is the default largest payload (64 KiB).
	DefaultMaxPayload = 64 << 10
	// DefaultMaxFutureSkew is how far ahead of the receiver's clock a
	// reading's time may be by default.
	DefaultMaxFutureSkew = 5 * time.Minute

	maxPatientIDLen = 64
	minYear         = 1900
	maxYear         = 9999
)

// reasons maps each rejection sentinel to its Reason string.
var reasons = []struct {
	err    error
	reason string
}{
	{ErrOversized, "oversized"},
	{ErrMalformedJSON, "malformed-json"},
	{ErrWrongType, "wrong-type"},
	{ErrUnknownField, "unknown-field"},
	{ErrDuplicateField, "duplicate-field"},
	{ErrMissingField, "missing-field"},
	{ErrBadTopic, "bad-topic"},
	{ErrDeviceMismatch, "device-mismatch"},
	{ErrBadLOINC, "bad-loinc"},
	{ErrNotFinite, "not-finite"},
	{ErrBadUnit, "bad-unit"},
	{ErrBadTime, "bad-time"},
	{ErrFutureTime, "future-time"},
	{ErrBadPatient, "bad-patient"},
	{ErrUnknownDevice, "unknown-device"},
}

// Reason returns the short reason string for a rejection error ("bad-loinc",
// "future-time", ...), "" for nil, and "other" for an error that is none of
// the rejection sentinels.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// Reasons returns every reason string Reason can return for a rejection,
// in a fixed order.
func Reasons() []string {
	out := make([]string, len(reasons))
	for i, r := range reasons {
		out[i] = r.reason
	}
	return out
}

// Reading is one device measurement as published. After Decode, Patient is
// the bare patient id ("" when the payload names none) and Time is UTC.
type Reading struct {
	// DeviceID is the device's id (an equipment serial).
	DeviceID string `json:"device_id"`
	// Patient is the patient id, when the device knows it.
	Patient string `json:"patient,omitempty"`
	// Time is when the measurement was taken.
	Time time.Time `json:"time"`
	// LOINC is the measurement's LOINC code, e.g. "8867-4" (heart rate).
	LOINC string `json:"loinc"`
	// Value is the measured value.
	Value float64 `json:"value"`
	// Unit is the value's unit, e.g. "/min".
	Unit string `json:"unit"`
}

// ObservationID returns the reading's observation id, derived from the
// device id, the time and the LOINC code only: a redelivered or republished
// reading gets the same id, so storing it again overwrites the same record.
func (r Reading) ObservationID() string {
	h := sha256.New()
	for _, part := range []string{"cohort-device-observation", r.DeviceID, r.Time.UTC().Format(time.RFC3339Nano), r.LOINC} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(part))))
		h.Write([]byte(part))
	}
	return "dev-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// Observation returns the reading as a normalized observation about the
// patient with the given id.
func (r Reading) Observation(patientID string) fhir.Observation {
	return fhir.Observation{
		ID:        r.ObservationID(),
		PatientID: patientID,
		Code:      r.LOINC,
		Unit:      r.Unit,
		Value:     r.Value,
		Time:      r.Time.UTC(),
	}
}

// Topic returns the observation topic of a device at a site.
func Topic(site, deviceID string) string {
	return TopicPrefix + "/" + site + "/devices/" + deviceID + "/" + TopicSuffix
}

// TopicFilter returns the filter the agent subscribes to for a site.
func TopicFilter(site string) string { return Topic(site, "+") }

// ParseTopic returns the site and device id of an observation topic.
func ParseTopic(topic string) (site, deviceID string, err error) {
	parts := strings.Split(topic, "/")
	if len(parts) != 5 || parts[0] != TopicPrefix || parts[2] != "devices" || parts[4] != TopicSuffix {
		return "", "", fmt.Errorf("%w: not %s", ErrBadTopic, Topic("<site>", "<device-id>"))
	}
	if !ValidID(parts[1]) {
		return "", "", fmt.Errorf("%w: bad site id", ErrBadTopic)
	}
	if !ValidID(parts[3]) {
		return "", "", fmt.Errorf("%w: bad device id", ErrBadTopic)
	}
	return parts[1], parts[3], nil
}

// ValidID reports whether s is a valid site or device id: 1 to MaxIDLen
// characters from [A-Za-z0-9._:-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// Limits are the bounds Decode enforces.
type Limits struct {
	// MaxPayload is the largest payload accepted, in bytes.
	MaxPayload int
	// MaxFutureSkew is how far ahead of the receiver's clock a reading's
	// time may be (device clocks drift).
	MaxFutureSkew time.Duration
}

// DefaultLimits returns the default limits: 64 KiB, 5 minutes.
func DefaultLimits() Limits {
	return Limits{MaxPayload: DefaultMaxPayload, MaxFutureSkew: DefaultMaxFutureSkew}
}

// Decode decodes and validates one payload received on topic, at time now,
// with DefaultLimits.
func Decode(topic string, payload []byte, now time.Time) (Reading, error) {
	return DefaultLimits().Decode(topic, payload, now)
}

// field bits, for presence and duplicate checks.
const (
	fDevice = 1 << iota
	fPatient
	fTime
	fLOINC
	fValue
	fUnit
)

var fieldBits = map[string]int{
	"device_id": fDevice,
	"patient":   fPatient,
	"time":      fTime,
	"loinc":     fLOINC,
	"value":     fValue,
	"unit":      fUnit,
}

// Decode decodes and validates one payload received on topic, at time now.
// The error wraps exactly one rejection sentinel (see Reason).
func (l Limits) Decode(topic string, payload []byte, now time.Time) (Reading, error) {
	var r Reading
	if len(payload) > l.MaxPayload {
		return r, fmt.Errorf("%w: %d bytes, limit %d", ErrOversized, len(payload), l.MaxPayload)
	}
	_, topicDevice, err := ParseTopic(topic)
	if err != nil {
		return r, err
	}
	if !utf8.Valid(payload) {
		return r, fmt.Errorf("%w: not utf-8", ErrMalformedJSON)
	}
	if !json.Valid(payload) {
		return r, fmt.Errorf("%w: syntax", ErrMalformedJSON)
	}

	// The payload is valid JSON from here on: walk the object's members.
	dec := json.NewDecoder(bytes.NewReader(payload))
	tok, err := dec.Token()
	if err != nil {
		return r, fmt.Errorf("%w: syntax", ErrMalformedJSON)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return r, fmt.Errorf("%w: payload is not an object", ErrWrongType)
	}
	var seen int
	var rawTime string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return r, fmt.Errorf("%w: syntax", ErrMalformedJSON)
		}
		key, _ := tok.(string)
		bit, ok := fieldBits[key]
		if !ok {
			return r, ErrUnknownField
		}
		if seen&bit != 0 {
			return r, fmt.Errorf("%w: %s", ErrDuplicateField, key)
		}
		seen |= bit
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return r, fmt.Errorf("%w: syntax", ErrMalformedJSON)
		}
		if bit == fValue {
			if r.Value, err = decodeNumber(raw); err != nil {
				return r, err
			}
			continue
		}
		s, err := decodeString(key, raw)
		if err != nil {
			return r, err
		}
		switch bit {
		case fDevice:
			r.DeviceID = s
		case fPatient:
			r.Patient = s
		case fTime:
			rawTime = s
		case fLOINC:
			r.LOINC = s
		case fUnit:
			r.Unit = s
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return r, fmt.Errorf("%w: syntax", ErrMalformedJSON)
	}
	if _, err := dec.Token(); err != io.EOF {
		return r, fmt.Errorf("%w: trailing data", ErrMalformedJSON)
	}

	for _, f := range []struct {
		bit  int
		name string
	}{{fDevice, "device_id"}, {fTime, "time"}, {fLOINC, "loinc"}, {fValue, "value"}, {fUnit, "unit"}} {
		if seen&f.bit == 0 {
			return r, fmt.Errorf("%w: %s", ErrMissingField, f.name)
		}
	}
	if r.DeviceID != topicDevice {
		return r, ErrDeviceMismatch
	}
	if !ValidLOINC(r.LOINC) {
		return r, ErrBadLOINC
	}
	if r.Unit == "" || len(r.Unit) > MaxUnitLen {
		return r, fmt.Errorf("%w: want 1 to %d bytes", ErrBadUnit, MaxUnitLen)
	}
	if r.Time, err = parseTime(rawTime); err != nil {
		return r, err
	}
	if r.Time.After(now.Add(l.MaxFutureSkew)) {
		return r, fmt.Errorf("%w: more than %s ahead", ErrFutureTime, l.MaxFutureSkew)
	}
	if seen&fPatient != 0 {
		if r.Patient, err = PatientID(r.Patient); err != nil {
			return r, err
		}
	}
	return r, nil
}

// decodeString decodes a JSON string member.
func decodeString(name string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("%w: %s must be a string", ErrWrongType, name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: syntax", ErrMalformedJSON)
	}
	return s, nil
}

// decodeNumber decodes a JSON number member into a finite float64.
func decodeNumber(raw json.RawMessage) (float64, error) {
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		return 0, fmt.Errorf("%w: value must be a number", ErrWrongType)
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, ErrNotFinite
	}
	return v, nil
}

// parseTime parses an RFC 3339 time into UTC.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: not rfc 3339", ErrBadTime)
	}
	t = t.UTC()
	if y := t.Year(); y < minYear || y > maxYear {
		return time.Time{}, fmt.Errorf("%w: year out of range", ErrBadTime)
	}
	return t, nil
}

// ValidLOINC reports whether code is a LOINC code: 1 to 7 digits, a dash,
// and the mod-10 check digit of the digits before the dash.
func ValidLOINC(code string) bool {
	base, check, ok := strings.Cut(code, "-")
	if !ok || len(base) == 0 || len(base) > 7 || len(check) != 1 {
		return false
	}
	sum := 0
	for i := 0; i < len(base); i++ {
		c := base[len(base)-1-i]
		if c < '0' || c > '9' {
			return false
		}
		d := int(c - '0')
		if i%2 == 0 { // rightmost digit, then every second one, is doubled
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	c := check[0]
	return c >= '0' && c <= '9' && int(c-'0') == (10-sum%10)%10
}

// PatientID reduces a patient id or reference to the bare id: "<id>",
// "Patient/<id>", an absolute URL ending in "Patient/<id>" (optionally with
// "/_history/<version>"), or "urn:uuid:<id>". The id must be a FHIR id
// ([A-Za-z0-9.-]{1,64}). The error does not quote the input.
func PatientID(ref string) (string, error) {
	id := ref
	if rest, ok := strings.CutPrefix(ref, "urn:uuid:"); ok {
		id = rest
	} else if strings.Contains(ref, "/") {
		s := ref
		if i := strings.Index(s, "/_history/"); i >= 0 {
			s = s[:i]
		}
		parts := strings.Split(s, "/")
		if len(parts) < 2 || parts[len(parts)-2] != "Patient" {
			return "", fmt.Errorf("%w: not a patient reference", ErrBadPatient)
		}
		id = parts[len(parts)-1]
	}
	if !validPatientID(id) {
		return "", fmt.Errorf("%w: not a fhir id", ErrBadPatient)
	}
	return id, nil
}

func validPatientID(s string) bool {
	if len(s) == 0 || len(s) > maxPatientIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}
