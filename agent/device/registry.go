package device

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// MaxRegistryFile is the largest registry file LoadRegistry reads.
const MaxRegistryFile = 64 << 20

// Assignment attaches a device to a patient for a time interval.
type Assignment struct {
	// DeviceID is the device's id.
	DeviceID string
	// Patient is the patient id (a reference is reduced to its id).
	Patient string
	// From is when the device was attached (inclusive).
	From time.Time
	// To is when it was detached (exclusive); zero while still attached.
	To time.Time
}

// Registry maps devices to the patients they were attached to over time (a
// device moves between beds and patients). It is immutable and safe for
// concurrent use; a nil *Registry knows no device.
//
// Its file names patients: it is PHI and lives in the agent's data
// directory.
type Registry struct {
	byDevice map[string][]Assignment // sorted by From, non-overlapping
}

// registryEntry is one element of a registry file.
type registryEntry struct {
	DeviceID string     `json:"device_id"`
	Patient  string     `json:"patient"`
	From     *time.Time `json:"from"`
	To       *time.Time `json:"to"`
}

// LoadRegistry reads a registry file: a JSON array of
// {"device_id", "patient", "from", "to"} objects, times in RFC 3339, "to"
// optional (still attached). Unknown fields are refused.
func LoadRegistry(path string) (*Registry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxRegistryFile+1))
	if err != nil {
		return nil, fmt.Errorf("read registry: %w", err)
	}
	if len(b) > MaxRegistryFile {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrInvalidRegistry, MaxRegistryFile)
	}
	return ParseRegistry(b)
}

// ParseRegistry parses the contents of a registry file (see LoadRegistry).
func ParseRegistry(b []byte) (*Registry, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var entries []registryEntry
	if err := dec.Decode(&entries); err != nil {
		// The decoder's message may quote input; keep only the kind.
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%w: wrong type for %s", ErrInvalidRegistry, te.Field)
		}
		return nil, fmt.Errorf("%w: not a JSON array of entries", ErrInvalidRegistry)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", ErrInvalidRegistry)
	}
	as := make([]Assignment, len(entries))
	for i, e := range entries {
		if e.From == nil {
			return nil, fmt.Errorf("%w: entry %d: from is required", ErrInvalidRegistry, i)
		}
		as[i] = Assignment{DeviceID: e.DeviceID, Patient: e.Patient, From: *e.From}
		if e.To != nil {
			as[i].To = *e.To
		}
	}
	return NewRegistry(as)
}

// NewRegistry builds a registry. Every device id must be valid, every
// patient a valid id or reference, every interval non-empty (From before
// To), and a device's intervals must not overlap.
func NewRegistry(as []Assignment) (*Registry, error) {
	type indexed struct {
		Assignment
		n int
	}
	byDevice := make(map[string][]indexed)
	for i, a := range as {
		if !ValidID(a.DeviceID) {
			return nil, fmt.Errorf("%w: entry %d: bad device id", ErrInvalidRegistry, i)
		}
		id, err := PatientID(a.Patient)
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: bad patient", ErrInvalidRegistry, i)
		}
		a.Patient = id
		a.From = a.From.UTC()
		if !a.To.IsZero() {
			a.To = a.To.UTC()
			if !a.From.Before(a.To) {
				return nil, fmt.Errorf("%w: entry %d: from is not before to", ErrInvalidRegistry, i)
			}
		}
		byDevice[a.DeviceID] = append(byDevice[a.DeviceID], indexed{a, i})
	}
	r := &Registry{byDevice: make(map[string][]Assignment, len(byDevice))}
	for dev, list := range byDevice {
		sort.Slice(list, func(i, j int) bool { return list[i].From.Before(list[j].From) })
		out := make([]Assignment, len(list))
		for i, a := range list {
			if i > 0 {
				prev := list[i-1]
				if prev.To.IsZero() || prev.To.After(a.From) {
					return nil, fmt.Errorf("%w: entries %d and %d overlap", ErrInvalidRegistry, prev.n, a.n)
				}
			}
			out[i] = a.Assignment
		}
		r.byDevice[dev] = out
	}
	return r, nil
}

// Lookup returns the patient the device was attached to at time t.
func (r *Registry) Lookup(deviceID string, t time.Time) (patient string, ok bool) {
	if r == nil {
		return "", false
	}
	list := r.byDevice[deviceID]
	// The last interval starting at or before t.
	i := sort.Search(len(list), func(i int) bool { return list[i].From.After(t) }) - 1
	if i < 0 {
		return "", false
	}
	if a := list[i]; a.To.IsZero() || t.Before(a.To) {
		return a.Patient, true
	}
	return "", false
}

// Len returns the number of assignments.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	n := 0
	for _, l := range r.byDevice {
		n += len(l)
	}
	return n
}
