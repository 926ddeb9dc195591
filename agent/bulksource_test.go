package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/fhir/bulk"
	"github.com/cohort-fl/cohort/agent/fhir/bulktest"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// siteFiles makes a federation CA and a site certificate.
func siteFiles(t *testing.T, site string) pki.Files {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueToFiles(dir, pki.IssueRequest{Role: pki.RoleSite, ID: site}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: cert, Key: key}
}

func syntheaNDJSON(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "data", "synthea-r4", "ndjson")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs the test data: %v", err)
		}
		t.Skipf("real test data not present: %v", err)
	}
	return dir
}

// The agent exports the Synthea set from a Bulk Data server (SMART
// Backend Services, ES384) into its encrypted store, with the same records
// as reading the files directly; a second, incremental export adds nothing.
func TestAgentBulkExportIntoStore(t *testing.T) {
	data := syntheaNDJSON(t)
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "smart.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	kid, err := bulk.KeyThumbprint(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	scfg := bulktest.DefaultConfig()
	scfg.Dir = data
	scfg.Clients = []bulktest.RegisteredClient{{ID: "cohort-agent", KeyID: kid, PublicKey: key.Public()}}
	scfg.PollsBeforeReady = 1
	scfg.RetryAfter = 10 * time.Millisecond
	srv, err := bulktest.NewServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Coordinators = []string{"127.0.0.1:1"} // never dialled here
	cfg.TLS = siteFiles(t, "st-mary")
	bc := &BulkConfig{BaseURL: srv.BaseURL(), ClientID: "cohort-agent", KeyFile: keyFile}
	cfg.Bulk = bc
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if err := a.BulkExport(ctx, bc); err != nil {
		t.Fatal(err)
	}
	var direct fhir.Collector
	if _, err := fhir.ReadDir(ctx, data, &direct); err != nil {
		t.Fatal(err)
	}
	wantP, wantO, wantC := 0, 0, 0
	for _, p := range direct.Patients() {
		if !p.Patient.BirthDate.IsZero() || p.Patient.Gender != "" {
			wantP++
		}
		wantO += len(p.Observations)
		wantC += len(p.Conditions)
	}
	check := func(when string) {
		p, o, c, err := a.st.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if p != wantP || o != wantO || c != wantC || wantP != 100 {
			t.Fatalf("%s: store holds %d patients, %d observations, %d conditions; files give %d, %d, %d",
				when, p, o, c, wantP, wantO, wantC)
		}
	}
	check("after the export")
	st, err := ReadStatus(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ingested["Patient"] != 100 || st.Ingested["Condition"] != 639 {
		t.Fatalf("status = %+v", st.Ingested)
	}
	if err := a.BulkExport(ctx, bc); err != nil {
		t.Fatal(err)
	}
	check("after an incremental export")
	if n := srv.Counters().TokensIssued; n < 1 {
		t.Fatalf("tokens issued = %d", n)
	}
}
