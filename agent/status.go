package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"
)

// StatusFile is the name, in the data directory, of the status the agent
// writes for `cohort agent status`. It holds counts and reasons only.
const StatusFile = "status.json"

// Status is the agent's state as written to StatusFile.
type Status struct {
	Site    string    `json:"site"`
	Updated time.Time `json:"updated"`
	// Ingested, Skipped and Rejected count FHIR resources: ingested by
	// type, skipped and rejected by type or reason.
	Ingested map[string]int `json:"ingested"`
	Skipped  map[string]int `json:"skipped"`
	Rejected map[string]int `json:"rejected"`
	// Rounds are the training rounds this site trained, and the updates the
	// coordinator acknowledged.
	RoundsTrained int `json:"rounds_trained"`
	UpdatesAcked  int `json:"updates_acked"`
	UpdatesResent int `json:"updates_resent"`
	// UploadsResumed and DownloadsResumed count transfers continued from
	// the byte an interrupted one reached.
	UploadsResumed   int    `json:"uploads_resumed"`
	DownloadsResumed int    `json:"downloads_resumed"`
	Reconnects       int    `json:"reconnects"`
	LastRoundError   string `json:"last_round_error,omitempty"`
	BytesSent        int64  `json:"bytes_sent"`
	// Devices counts MQTT telemetry, when the agent subscribes to it.
	Devices *DeviceStatus `json:"devices,omitempty"`
}

// DeviceStatus counts device readings.
type DeviceStatus struct {
	Received int64             `json:"received"`
	Stored   int64             `json:"stored"`
	Rejected map[string]uint64 `json:"rejected"`
	Queue    int               `json:"queue"`
}

// status snapshots the counters. The agent's lock is released before the
// sources' own Stats are read: their writers take the agent's lock (to mark
// the store changed) while holding theirs.
func (a *Agent) status() Status {
	a.mu.Lock()
	st := Status{Site: a.site, Updated: a.now().UTC(), RoundsTrained: a.stats.RoundsTrained,
		UpdatesAcked: a.stats.UpdatesAcked, UpdatesResent: a.stats.UpdatesResent,
		UploadsResumed: a.stats.UploadsResumed, DownloadsResumed: a.stats.DownloadsResumed, Reconnects: a.stats.Reconnects,
		LastRoundError: a.stats.LastRoundError, Ingested: map[string]int{}, Skipped: map[string]int{}, Rejected: map[string]int{}}
	merge := func(dst, src map[string]int) {
		for k, v := range src {
			dst[k] += v
		}
	}
	if in := a.stats.Ingest; in != nil {
		merge(st.Ingested, in.Resources)
		merge(st.Skipped, in.Skipped)
		merge(st.Rejected, in.Rejected)
	}
	guard, sub, drop := a.guard, a.mqtt, a.drop
	a.mu.Unlock()

	if guard != nil {
		st.BytesSent = guard.BytesSent()
	}
	if drop != nil {
		r := drop.Stats().Read
		merge(st.Ingested, r.Resources)
		merge(st.Skipped, r.Skipped)
		merge(st.Rejected, r.Rejected)
	}
	if sub != nil {
		ds := sub.Stats()
		st.Devices = &DeviceStatus{Received: int64(ds.Received), Stored: int64(ds.Stored), Rejected: maps.Clone(ds.Rejected), Queue: ds.QueueDepth}
	}
	return st
}

// writeStatus replaces StatusFile atomically. Failures are logged, not
// fatal: the status is for people, the work goes on.
func (a *Agent) writeStatus() {
	b, err := json.MarshalIndent(a.status(), "", "  ")
	if err != nil {
		a.log.Warn("status", "err", err)
		return
	}
	path := filepath.Join(a.cfg.DataDir, StatusFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		a.log.Warn("status", "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		a.log.Warn("status", "err", err)
	}
}

// ReadStatus reads the status an agent wrote in dataDir.
func ReadStatus(dataDir string) (*Status, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, StatusFile))
	if err != nil {
		return nil, fmt.Errorf("agent status: %w (has the agent run with this data dir?)", err)
	}
	st := new(Status)
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("agent status %s: %w", filepath.Join(dataDir, StatusFile), err)
	}
	return st, nil
}
