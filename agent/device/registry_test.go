package device

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRegistryLookup(t *testing.T) {
	file := `[
	  {"device_id": "MX450-0042", "patient": "Patient/p-1", "from": "2025-03-01T00:00:00Z", "to": "2025-03-01T12:00:00Z"},
	  {"device_id": "MX450-0042", "patient": "p-2", "from": "2025-03-01T15:00:00+02:00"},
	  {"device_id": "MX450-0043", "patient": "urn:uuid:p-3", "from": "2025-02-01T00:00:00Z", "to": "2025-02-02T00:00:00Z"}
	]`
	path := filepath.Join(t.TempDir(), "devices.json")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	reg, err := LoadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Len() != 3 {
		t.Fatalf("Len = %d", reg.Len())
	}
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name, device, time string
		want               string
	}{
		{"before first", "MX450-0042", "2025-02-28T23:59:59Z", ""},
		{"start inclusive", "MX450-0042", "2025-03-01T00:00:00Z", "p-1"},
		{"inside", "MX450-0042", "2025-03-01T11:59:59.999Z", "p-1"},
		{"end exclusive", "MX450-0042", "2025-03-01T12:00:00Z", ""},
		{"gap between patients", "MX450-0042", "2025-03-01T11:30:00-01:00", ""},
		{"second patient start (zone)", "MX450-0042", "2025-03-01T13:00:00Z", "p-2"},
		{"just before second", "MX450-0042", "2025-03-01T12:59:59Z", ""},
		{"open-ended far future", "MX450-0042", "2030-01-01T00:00:00Z", "p-2"},
		{"other device", "MX450-0043", "2025-02-01T10:00:00Z", "p-3"},
		{"other device after", "MX450-0043", "2025-03-01T10:00:00Z", ""},
		{"unknown device", "MX450-9999", "2025-03-01T10:00:00Z", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := reg.Lookup(tt.device, at(tt.time))
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("Lookup = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
	var nilReg *Registry
	if _, ok := nilReg.Lookup("MX450-0042", at("2025-03-01T10:00:00Z")); ok {
		t.Error("nil registry found a patient")
	}
}

func TestRegistryInvalid(t *testing.T) {
	tests := []struct {
		name, file string
	}{
		{"not json", `{`},
		{"not an array", `{"device_id":"d"}`},
		{"unknown field", `[{"device_id":"d","patient":"p","from":"2025-01-01T00:00:00Z","bed":"3"}]`},
		{"missing from", `[{"device_id":"d","patient":"p"}]`},
		{"bad time", `[{"device_id":"d","patient":"p","from":"yesterday"}]`},
		{"bad device", `[{"device_id":"d 1","patient":"p","from":"2025-01-01T00:00:00Z"}]`},
		{"bad patient", `[{"device_id":"d","patient":"Secret Name","from":"2025-01-01T00:00:00Z"}]`},
		{"empty interval", `[{"device_id":"d","patient":"p","from":"2025-01-01T00:00:00Z","to":"2025-01-01T00:00:00Z"}]`},
		{"overlap", `[{"device_id":"d","patient":"p","from":"2025-01-01T00:00:00Z","to":"2025-01-03T00:00:00Z"},
		              {"device_id":"d","patient":"q","from":"2025-01-02T00:00:00Z"}]`},
		{"overlap open-ended", `[{"device_id":"d","patient":"p","from":"2025-01-01T00:00:00Z"},
		              {"device_id":"d","patient":"q","from":"2025-01-02T00:00:00Z","to":"2025-01-03T00:00:00Z"}]`},
		{"trailing data", `[] []`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRegistry([]byte(tt.file))
			if !errors.Is(err, ErrInvalidRegistry) {
				t.Fatalf("err = %v, want ErrInvalidRegistry", err)
			}
			if strings.Contains(err.Error(), "Secret") {
				t.Errorf("error quotes a patient: %v", err)
			}
		})
	}
	// Back-to-back intervals are fine.
	_, err := ParseRegistry([]byte(`[{"device_id":"d","patient":"p","from":"2025-01-01T00:00:00Z","to":"2025-01-02T00:00:00Z"},
		{"device_id":"d","patient":"q","from":"2025-01-02T00:00:00Z"}]`))
	if err != nil {
		t.Errorf("adjacent intervals: %v", err)
	}
}
