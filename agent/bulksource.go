package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir/bulk"
)

// BulkConfig points the agent at the hospital's FHIR server for Bulk Data
// exports ($export), authorized with SMART Backend Services.
type BulkConfig struct {
	// BaseURL is the FHIR server's base (https; http only on loopback).
	BaseURL string `json:"base_url"`
	// Level is system, patient or group (default patient).
	Level string `json:"level,omitempty"`
	// GroupID is the Group to export at group level.
	GroupID string `json:"group_id,omitempty"`
	// Types limits the export (_type); default Patient, Encounter,
	// Observation, Condition.
	Types []string `json:"types,omitempty"`
	// ClientID is the agent's registered SMART client id; empty for a
	// server that needs no authorization.
	ClientID string `json:"client_id,omitempty"`
	// KeyFile is the PEM private key (P-384 for ES384 or RSA for RS384)
	// registered with the server; it must be owner-only.
	KeyFile string `json:"key_file,omitempty"`
	// KeyID is the key's kid (default: its RFC 7638 thumbprint).
	KeyID string `json:"key_id,omitempty"`
	// TokenURL overrides the token endpoint discovered from the server's
	// .well-known/smart-configuration.
	TokenURL string `json:"token_url,omitempty"`
	// Interval between incremental exports (default 24h); each one asks
	// for what changed since the last export's transactionTime.
	Interval Duration `json:"interval,omitempty"`
}

// bulkState is what the agent remembers between exports.
type bulkState struct {
	// Since is the transactionTime of the last complete export.
	Since time.Time `json:"since"`
}

func (a *Agent) bulkStatePath() string { return filepath.Join(a.cfg.DataDir, "bulk-state.json") }

// runBulk exports at once and then every Interval until ctx ends. A failed
// export is logged and retried at the next interval; it never stops the
// agent.
func (a *Agent) runBulk(ctx context.Context, bc *BulkConfig) {
	interval := time.Duration(bc.Interval)
	if interval <= 0 {
		interval = 24 * time.Hour
	}
	for {
		if err := a.BulkExport(ctx, bc); err != nil && ctx.Err() == nil {
			a.log.Warn("bulk export failed; will retry", "err", err, "next_in", interval)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// BulkExport runs one (incremental) export into the store.
func (a *Agent) BulkExport(ctx context.Context, bc *BulkConfig) error {
	if err := a.Open(); err != nil {
		return err
	}
	cfg := bulk.DefaultConfig()
	cfg.BaseURL = bc.BaseURL
	if bc.Level != "" {
		cfg.Level = bulk.Level(bc.Level)
	}
	cfg.GroupID = bc.GroupID
	cfg.Types = bc.Types
	if len(cfg.Types) == 0 {
		cfg.Types = []string{"Patient", "Encounter", "Observation", "Condition"}
	}
	cfg.ClientID, cfg.KeyID, cfg.TokenURL = bc.ClientID, bc.KeyID, bc.TokenURL
	cfg.Logger = a.log.With("component", "bulk")
	if bc.KeyFile != "" {
		key, err := bulk.LoadPrivateKey(bc.KeyFile)
		if err != nil {
			return err
		}
		cfg.PrivateKey = key
	}
	var state bulkState
	if b, err := os.ReadFile(a.bulkStatePath()); err == nil {
		if err := json.Unmarshal(b, &state); err != nil {
			return fmt.Errorf("bulk state %s: %w", a.bulkStatePath(), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bulk state: %w", err)
	}
	cfg.Since = state.Since
	client, err := bulk.New(cfg)
	if err != nil {
		return err
	}
	defer a.dataChanged()
	batch := a.st.NewBatch(0)
	res, err := client.Export(ctx, batch)
	if err == nil {
		err = batch.Flush()
	}
	if err != nil {
		return fmt.Errorf("bulk export: %w", err)
	}
	a.mu.Lock()
	if res.Stats != nil {
		if a.stats.Ingest == nil {
			a.stats.Ingest = res.Stats
		} else {
			a.stats.Ingest.Add(res.Stats)
		}
	}
	a.mu.Unlock()
	b, err := json.Marshal(bulkState{Since: res.TransactionTime})
	if err != nil {
		return err
	}
	if err := os.WriteFile(a.bulkStatePath(), b, 0o600); err != nil {
		return fmt.Errorf("bulk state: %w", err)
	}
	a.log.Info("bulk export ingested", "since", state.Since, "transaction_time", res.TransactionTime, "counts", res.Counts)
	a.writeStatus()
	return nil
}
