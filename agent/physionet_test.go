package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir/bulktest"
	"github.com/cohort-fl/cohort/agent/physionet"
)

// All 4,000 PhysioNet stays, written as FHIR R4 NDJSON, ingest into an
// agent's encrypted store with exact counts, both from the files and
// through a Bulk Data export of the same files: every record written is
// either stored or rejected with a reason (the data's few physiologically
// impossible values), none lost, none doubled.
func TestAgentIngestsAllPhysioNetStays(t *testing.T) {
	if testing.Short() {
		t.Skip("ingests 1.7 million observations twice")
	}
	src := filepath.Join("..", "..", "shared", "data", "physionet2012")
	if _, err := os.Stat(src); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs the PhysioNet data: %v", err)
		}
		t.Skipf("PhysioNet data not present: %v", err)
	}
	ctx := context.Background()
	ndjson := t.TempDir()
	written, err := physionet.WriteNDJSON(ctx, src, ndjson, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if written.Stays != 4000 || written.Patients != 4000 || written.Encounters != 4000 {
		t.Fatalf("wrote %+v", written)
	}

	newAgent := func() *Agent {
		cfg := DefaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.Coordinators = []string{"127.0.0.1:1"}
		cfg.TLS = siteFiles(t, "icu")
		a, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	check := func(how string, a *Agent) {
		t.Helper()
		st := a.Stats().Ingest
		rejected := st.TotalRejected()
		if st.Resources["Patient"] != 4000 || st.Resources["Encounter"] != 4000 {
			t.Fatalf("%s: ingested %v", how, st.Resources)
		}
		if got := st.Resources["Observation"] + st.Rejected["impossible-value"]; got != written.Observations || rejected != st.Rejected["impossible-value"] {
			t.Fatalf("%s: %d observations ingested + %d rejected (%v) != %d written", how, st.Resources["Observation"], rejected, st.Rejected, written.Observations)
		}
		p, o, _, err := a.st.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if p != 4000 || o != st.Resources["Observation"] {
			t.Fatalf("%s: store holds %d patients and %d observations, the reader ingested %d", how, p, o, st.Resources["Observation"])
		}
		t.Logf("%s: %d observations stored, %d rejected as impossible values", how, o, rejected)
	}

	files := newAgent()
	if _, err := files.Ingest(ctx, ndjson); err != nil {
		t.Fatal(err)
	}
	check("files", files)

	scfg := bulktest.DefaultConfig()
	scfg.Dir = ndjson
	scfg.PollsBeforeReady = 1
	scfg.RetryAfter = 10 * time.Millisecond
	srv, err := bulktest.NewServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	viaBulk := newAgent()
	if err := viaBulk.BulkExport(ctx, &BulkConfig{BaseURL: srv.BaseURL()}); err != nil {
		t.Fatal(err)
	}
	check("bulk export", viaBulk)
}
