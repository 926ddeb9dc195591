package bulk_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/fhir/bulk"
	"github.com/cohort-fl/cohort/agent/fhir/bulktest"
)

const (
	testClientID = "cohort-site-1"
	testKeyID    = "site-1-key"
	// canary appears in every resource of the small dataset; it must
	// never show up in an error or a log line.
	canary = "Zqxcanary"
)

var testStart = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Keys are expensive (RSA); make each once per test binary.
var (
	ecKey  = sync.OnceValue(func() *ecdsa.PrivateKey { return must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)) })
	ecKey2 = sync.OnceValue(func() *ecdsa.PrivateKey { return must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)) })
	rsaKey = sync.OnceValue(func() *rsa.PrivateKey { return must(rsa.GenerateKey(rand.Reader, 2048)) })
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Small dataset: 3 Patients, 5 Observations (one without a numeric value),
// 2 Conditions, 2 Encounters, 1 Organization. Ids are fake; every resource
// carries the canary.
var smallData = map[string][]string{
	"a.ndjson": {
		`{"resourceType":"Patient","id":"p1","name":[{"family":"` + canary + `"}],"gender":"female","birthDate":"1970-01-01"}`,
		`{"resourceType":"Patient","id":"p2","name":[{"family":"` + canary + `"}],"gender":"male","birthDate":"1980-05-05"}`,
		`{"resourceType":"Patient","id":"p3","name":[{"family":"` + canary + `"}],"gender":"other","birthDate":"1990"}`,
		`{"resourceType":"Organization","id":"org1","name":"` + canary + ` Hospital"}`,
	},
	"b.ndjson.gz": {
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}],"text":"` + canary + `"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-01-01T00:00:00Z","valueQuantity":{"value":70,"unit":"/min"}}`,
		`{"resourceType":"Observation","id":"o2","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}],"text":"` + canary + `"},"subject":{"reference":"urn:uuid:p2"},"effectiveDateTime":"2020-01-02T00:00:00Z","valueQuantity":{"value":37.2,"unit":"Cel"}}`,
		`{"resourceType":"Observation","id":"o3","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}],"text":"` + canary + `"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-01-03T00:00:00Z","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":120,"unit":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80,"unit":"mm[Hg]"}}]}`,
		`{"resourceType":"Observation","id":"o4","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72166-2"}],"text":"` + canary + `"},"subject":{"reference":"Patient/p3"},"effectiveDateTime":"2020-01-04T00:00:00Z","valueCodeableConcept":{"text":"` + canary + `"}}`,
		`{"resourceType":"Observation","id":"o5","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}],"text":"` + canary + `"},"subject":{"reference":"Patient/p2"},"effectiveDateTime":"2020-01-05T00:00:00Z","valueQuantity":{"value":80.5,"unit":"kg"}}`,
		`{"resourceType":"Condition","id":"c1","code":{"coding":[{"system":"http://snomed.info/sct","code":"44054006"}],"text":"` + canary + `"},"subject":{"reference":"Patient/p1"},"onsetDateTime":"2015-01-01"}`,
		`{"resourceType":"Condition","id":"c2","code":{"coding":[{"system":"http://snomed.info/sct","code":"38341003"}],"text":"` + canary + `"},"subject":{"reference":"Patient/p3"},"onsetDateTime":"2016-01-01"}`,
		`{"resourceType":"Encounter","id":"e1","status":"finished","subject":{"reference":"Patient/p1"},"reasonCode":[{"text":"` + canary + `"}]}`,
		`{"resourceType":"Encounter","id":"e2","status":"finished","subject":{"reference":"Patient/p2"},"reasonCode":[{"text":"` + canary + `"}]}`,
	},
}

// smallCounts is the dataset's resources by type.
var smallCounts = map[string]int{"Patient": 3, "Organization": 1, "Observation": 5, "Condition": 2, "Encounter": 2}

// writeSmallData writes the small dataset to a new temp dir.
func writeSmallData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, lines := range smallData {
		data := []byte(strings.Join(lines, "\n") + "\n")
		if strings.HasSuffix(name, ".gz") {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			if _, err := zw.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			data = b.Bytes()
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fixture is a test server and the pieces to build clients for it.
type fixture struct {
	srv   *bulktest.Server
	clock *bulktest.Clock
	key   crypto.Signer
}

// newFixture starts a server over dir with the client key registered.
// srvMod edits the server config (nil = defaults).
func newFixture(t *testing.T, dir string, key crypto.Signer, srvMod func(*bulktest.Config)) *fixture {
	t.Helper()
	clock := bulktest.NewClock(testStart)
	cfg := bulktest.DefaultConfig()
	cfg.Dir = dir
	cfg.Clock = clock
	cfg.Clients = []bulktest.RegisteredClient{{ID: testClientID, KeyID: testKeyID, PublicKey: key.Public()}}
	if srvMod != nil {
		srvMod(&cfg)
	}
	srv, err := bulktest.NewServer(cfg)
	if err != nil {
		t.Fatalf("test server: %v", err)
	}
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, clock: clock, key: key}
}

// config returns a client config for the fixture.
func (f *fixture) config() bulk.Config {
	cfg := bulk.DefaultConfig()
	cfg.BaseURL = f.srv.BaseURL()
	cfg.ClientID = testClientID
	cfg.PrivateKey = f.key
	cfg.KeyID = testKeyID
	cfg.Clock = f.clock
	cfg.HTTPClient = f.srv.Client()
	return cfg
}

// client builds a client; mod edits its config (nil = defaults).
func (f *fixture) client(t *testing.T, mod func(*bulk.Config)) *bulk.Client {
	t.Helper()
	cfg := f.config()
	if mod != nil {
		mod(&cfg)
	}
	c, err := bulk.New(cfg)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}

// export runs one export into a fresh Collector.
func export(t *testing.T, c *bulk.Client) (*bulk.Result, *fhir.Collector, error) {
	t.Helper()
	var col fhir.Collector
	res, err := c.Export(context.Background(), &col)
	return res, &col, err
}

// checkCounts compares two count maps, treating missing keys as zero.
func checkCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s[%s] = %d, want %d (got %v)", what, k, got[k], v, got)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok && v != 0 {
			t.Errorf("%s[%s] = %d, want none", what, k, v)
		}
	}
}

// oracle reads dir directly with fhir.ReadDir: what an export of all of
// it must ingest.
func oracle(t *testing.T, dir string) (*fhir.Stats, []fhir.PatientData) {
	t.Helper()
	var col fhir.Collector
	st, err := fhir.ReadDir(context.Background(), dir, &col)
	if err != nil {
		t.Fatalf("oracle read: %v", err)
	}
	return st, col.Patients()
}

// checkStats compares two fhir.Stats.
func checkStats(t *testing.T, got, want *fhir.Stats) {
	t.Helper()
	checkCounts(t, "Stats.Resources", got.Resources, want.Resources)
	checkCounts(t, "Stats.Skipped", got.Skipped, want.Skipped)
	checkCounts(t, "Stats.Rejected", got.Rejected, want.Rejected)
}

// hookClock runs onSleep before each wait of the wrapped Clock.
type hookClock struct {
	*bulktest.Clock
	mu      sync.Mutex
	n       int
	onSleep func(n int)
}

func (h *hookClock) Sleep(ctx context.Context, d time.Duration) error {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	if h.onSleep != nil {
		h.onSleep(n)
	}
	return h.Clock.Sleep(ctx, d)
}

func sum(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}
