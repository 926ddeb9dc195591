package bulk_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/fhir/bulk"
	"github.com/cohort-fl/cohort/agent/fhir/bulktest"
)

func TestExportSmall(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		srv  func(*bulktest.Config)
	}{
		{"ES384", ecKey(), nil},
		{"RS384", rsaKey(), nil},
		{"ES384 gzip split files", ecKey(), func(c *bulktest.Config) { c.Gzip = true; c.ResourcesPerFile = 2 }},
		{"ES384 files without token", ecKey(), func(c *bulktest.Config) { c.RequiresAccessToken = false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeSmallData(t)
			wantStats, wantRecords := oracle(t, dir)
			if wantStats.Resources["Patient"] != 3 || wantStats.Resources["Condition"] != 2 {
				t.Fatalf("oracle: %+v", wantStats)
			}
			f := newFixture(t, dir, tc.key, tc.srv)
			c := f.client(t, nil)
			res, col, err := export(t, c)
			if err != nil {
				t.Fatalf("export: %v", err)
			}
			checkCounts(t, "Counts", res.Counts, smallCounts)
			checkCounts(t, "Received", res.Received, smallCounts)
			checkStats(t, res.Stats, wantStats)
			if got := col.Patients(); !reflect.DeepEqual(got, wantRecords) {
				t.Errorf("records differ from reading the files directly:\n got %+v\nwant %+v", got, wantRecords)
			}
			if !res.TransactionTime.Equal(testStart) {
				t.Errorf("transaction time %v, want %v", res.TransactionTime, testStart)
			}
			if res.ErrorFiles != 0 || res.ErrorResources != 0 {
				t.Errorf("error files %d, error resources %d", res.ErrorFiles, res.ErrorResources)
			}
			cn := f.srv.Counters()
			if cn.TokensIssued != 1 || c.TokensIssued() != 1 {
				t.Errorf("tokens issued: server %d, client %d, want 1", cn.TokensIssued, c.TokensIssued())
			}
			if cn.KickOffs != 1 || cn.Polls != 3 || cn.Downloads != res.Files || cn.Cancels != 1 || cn.Unauthorized != 0 {
				t.Errorf("counters %+v, files %d", cn, res.Files)
			}
			// Two 202s with Retry-After: 2 each.
			if got := f.clock.Sleeps(); !reflect.DeepEqual(got, []time.Duration{2 * time.Second, 2 * time.Second}) {
				t.Errorf("sleeps %v", got)
			}
		})
	}
}

func TestLevelsAndTypes(t *testing.T) {
	dir := writeSmallData(t)
	for _, tc := range []struct {
		name      string
		srv       func(*bulktest.Config)
		cli       func(*bulk.Config)
		wantQuery string
		want      map[string]int
	}{
		{"system _type", nil, func(c *bulk.Config) { c.Types = []string{"Patient", "Condition"} },
			"Patient,Condition", map[string]int{"Patient": 3, "Condition": 2}},
		{"patient level", nil, func(c *bulk.Config) { c.Level = bulk.LevelPatient },
			"", map[string]int{"Patient": 3, "Observation": 5, "Condition": 2, "Encounter": 2}},
		{"group level", func(c *bulktest.Config) { c.GroupID = "g1"; c.GroupMembers = []string{"p1", "p3"} },
			func(c *bulk.Config) { c.Level = bulk.LevelGroup; c.GroupID = "g1" },
			"", map[string]int{"Patient": 2, "Observation": 3, "Condition": 2, "Encounter": 1}},
		{"group level _type", func(c *bulktest.Config) { c.GroupID = "g1"; c.GroupMembers = []string{"p2"} },
			func(c *bulk.Config) {
				c.Level = bulk.LevelGroup
				c.GroupID = "g1"
				c.Types = []string{"Observation"}
			},
			"Observation", map[string]int{"Observation": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, dir, ecKey(), tc.srv)
			res, _, err := export(t, f.client(t, tc.cli))
			if err != nil {
				t.Fatalf("export: %v", err)
			}
			checkCounts(t, "Counts", res.Counts, tc.want)
			checkCounts(t, "Received", res.Received, tc.want)
			if got := f.srv.LastKickOff().Get("_type"); got != tc.wantQuery {
				t.Errorf("_type sent %q, want %q", got, tc.wantQuery)
			}
		})
	}
}

func TestUnknownGroup(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) { c.GroupID = "g1" })
	_, _, err := export(t, f.client(t, func(c *bulk.Config) { c.Level = bulk.LevelGroup; c.GroupID = "nope" }))
	var se *bulk.StatusError
	if !errors.Is(err, bulk.ErrKickOff) || !errors.As(err, &se) || se.StatusCode != 404 {
		t.Fatalf("err = %v, want ErrKickOff with 404", err)
	}
}

func TestAuthRefused(t *testing.T) {
	dir := writeSmallData(t)
	for _, tc := range []struct {
		name       string
		registered crypto.Signer // key the server knows
		cli        func(*bulk.Config)
		reason     string
	}{
		{"wrong key", ecKey2(), nil, "bad-signature"},
		{"wrong client id", ecKey(), func(c *bulk.Config) { c.ClientID = "someone-else" }, "unknown-client"},
		{"wrong key id", ecKey(), func(c *bulk.Config) { c.KeyID = "other-kid" }, "unknown-kid"},
		{"rsa key for an ec registration", ecKey(), func(c *bulk.Config) { c.PrivateKey = rsaKey() }, "bad-algorithm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, dir, tc.registered, nil)
			f.key = ecKey()
			res, _, err := export(t, f.client(t, tc.cli))
			if err == nil {
				t.Fatalf("export succeeded: %+v", res)
			}
			var se *bulk.StatusError
			if !errors.Is(err, bulk.ErrAuth) || !errors.As(err, &se) {
				t.Fatalf("err = %v, want ErrAuth StatusError", err)
			}
			if se.StatusCode != http.StatusUnauthorized || !reflect.DeepEqual(se.Issues, []string{"invalid_client"}) {
				t.Errorf("status %d issues %v, want 401 [invalid_client]", se.StatusCode, se.Issues)
			}
			if !strings.Contains(err.Error(), "status 401") || !strings.Contains(err.Error(), "invalid_client") {
				t.Errorf("error not clear: %v", err)
			}
			if got := f.srv.LastRefusal(); got != tc.reason {
				t.Errorf("server refused for %q, want %q", got, tc.reason)
			}
			if cn := f.srv.Counters(); cn.KickOffs != 0 || cn.TokensIssued != 0 {
				t.Errorf("counters %+v", cn)
			}
		})
	}
}

func TestTokenRefreshOnExpiry(t *testing.T) {
	// Tokens live 60s; the client refreshes 30s before expiry. Polls come
	// every 20s for 200s (t = 0, 20, ..., 200): tokens are fetched at
	// t = 0, 40, 80, 120, 160 and 200, and none is ever refused.
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) {
		c.TokenLifetime = time.Minute
		c.PollsBeforeReady = 10
		c.RetryAfter = 20 * time.Second
	})
	c := f.client(t, nil)
	if _, _, err := export(t, c); err != nil {
		t.Fatalf("export: %v", err)
	}
	cn := f.srv.Counters()
	if cn.TokensIssued != 6 || cn.Unauthorized != 0 || cn.Polls != 11 {
		t.Errorf("counters %+v; want 6 tokens, 0 unauthorized, 11 polls", cn)
	}
}

func TestTokenExpiresOnServer(t *testing.T) {
	// The client refreshes only 1s before expiry; the server's clock
	// moves on between polls, so every other poll needs a new token.
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) {
		c.TokenLifetime = 10 * time.Second
		c.PollsBeforeReady = 3
		c.RetryAfter = 10 * time.Second
	})
	c := f.client(t, func(c *bulk.Config) { c.TokenRefreshBefore = time.Second })
	if _, _, err := export(t, c); err != nil {
		t.Fatalf("export: %v", err)
	}
	// Polls at t = 0, 10, 20, 30: each finds the previous token 1s from
	// (or past) expiry, so four tokens; no request is refused.
	if cn := f.srv.Counters(); cn.TokensIssued != 4 || cn.Unauthorized != 0 {
		t.Errorf("counters %+v; want 4 tokens, 0 unauthorized", cn)
	}
}

func TestRefreshOn401(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	hc := &hookClock{Clock: f.clock}
	hc.onSleep = func(n int) {
		if n == 1 {
			f.srv.RevokeTokens() // e.g. the EHR restarted
		}
	}
	c := f.client(t, func(c *bulk.Config) { c.Clock = hc })
	if _, _, err := export(t, c); err != nil {
		t.Fatalf("export: %v", err)
	}
	if cn := f.srv.Counters(); cn.TokensIssued != 2 || cn.Unauthorized != 1 {
		t.Errorf("counters %+v; want 2 tokens, 1 unauthorized", cn)
	}
}

func TestPersistent401(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) {
		c.Faults = []bulktest.Fault{{Endpoint: bulktest.EndpointStatus, Status: 401, Code: "login", Times: -1}}
	})
	_, _, err := export(t, f.client(t, nil))
	var se *bulk.StatusError
	if !errors.Is(err, bulk.ErrUnauthorized) || !errors.As(err, &se) || se.StatusCode != 401 {
		t.Fatalf("err = %v, want ErrUnauthorized 401", err)
	}
	// One retry with a fresh token, then give up.
	if cn := f.srv.Counters(); cn.TokensIssued != 2 || cn.Faults != 2 {
		t.Errorf("counters %+v; want 2 tokens, 2 faults", cn)
	}
}

func TestRetryAfter(t *testing.T) {
	dir := writeSmallData(t)
	for _, tc := range []struct {
		name string
		srv  func(*bulktest.Config)
		cli  func(*bulk.Config)
		want []time.Duration
	}{
		{"seconds", func(c *bulktest.Config) { c.RetryAfter = 3 * time.Second }, nil,
			[]time.Duration{3 * time.Second, 3 * time.Second}},
		{"http date", func(c *bulktest.Config) { c.RetryAfter = 5 * time.Second; c.RetryAfterDate = true }, nil,
			[]time.Duration{5 * time.Second, 5 * time.Second}},
		{"long retry-after beyond poll max", func(c *bulktest.Config) { c.RetryAfter = 5 * time.Minute }, nil,
			[]time.Duration{5 * time.Minute, 5 * time.Minute}},
		{"no retry-after: backoff", func(c *bulktest.Config) { c.RetryAfter = 0; c.PollsBeforeReady = 5 },
			func(c *bulk.Config) { c.PollMin = time.Second; c.PollMax = 5 * time.Second },
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		{"poll min floors retry-after", func(c *bulktest.Config) { c.RetryAfter = time.Second },
			func(c *bulk.Config) { c.PollMin = 4 * time.Second },
			[]time.Duration{4 * time.Second, 4 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, dir, ecKey(), tc.srv)
			if _, _, err := export(t, f.client(t, tc.cli)); err != nil {
				t.Fatalf("export: %v", err)
			}
			if got := f.clock.Sleeps(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("sleeps %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTransientErrorsRetried(t *testing.T) {
	dir := writeSmallData(t)
	for _, ep := range []bulktest.Endpoint{
		bulktest.EndpointDiscovery, bulktest.EndpointToken, bulktest.EndpointKickOff,
		bulktest.EndpointStatus, bulktest.EndpointFile,
	} {
		for _, status := range []int{429, 503} {
			t.Run(string(ep)+" "+http.StatusText(status), func(t *testing.T) {
				f := newFixture(t, dir, ecKey(), func(c *bulktest.Config) {
					c.PollsBeforeReady = 0
					c.Faults = []bulktest.Fault{{Endpoint: ep, Status: status, RetryAfter: 7 * time.Second}}
				})
				res, _, err := export(t, f.client(t, nil))
				if err != nil {
					t.Fatalf("export: %v", err)
				}
				checkCounts(t, "Received", res.Received, smallCounts)
				if got := f.clock.Sleeps(); !reflect.DeepEqual(got, []time.Duration{7 * time.Second}) {
					t.Errorf("sleeps %v, want [7s]", got)
				}
				if cn := f.srv.Counters(); cn.Faults != 1 {
					t.Errorf("faults %d, want 1", cn.Faults)
				}
			})
		}
	}
}

func TestTooManyRetries(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) {
		c.Faults = []bulktest.Fault{{Endpoint: bulktest.EndpointKickOff, Status: 503, RetryAfter: time.Second, Times: -1}}
	})
	_, _, err := export(t, f.client(t, func(c *bulk.Config) { c.MaxRetries = 3 }))
	var se *bulk.StatusError
	if !errors.Is(err, bulk.ErrTooManyRetries) || !errors.As(err, &se) || se.StatusCode != 503 {
		t.Fatalf("err = %v, want ErrTooManyRetries 503", err)
	}
	if cn := f.srv.Counters(); cn.Faults != 4 || len(f.clock.Sleeps()) != 3 {
		t.Errorf("faults %d sleeps %v; want 4 and 3", cn.Faults, f.clock.Sleeps())
	}
}

func TestExportFailure(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) {
		c.PollsBeforeReady = 1
		c.Faults = []bulktest.Fault{{Endpoint: bulktest.EndpointStatus, Status: 500, Code: "too-costly", Times: -1}}
	})
	_, _, err := export(t, f.client(t, nil))
	var se *bulk.StatusError
	if !errors.Is(err, bulk.ErrExportFailed) || !errors.As(err, &se) {
		t.Fatalf("err = %v, want ErrExportFailed", err)
	}
	if se.StatusCode != 500 || !reflect.DeepEqual(se.Issues, []string{"too-costly"}) || se.Op != "status" {
		t.Errorf("status error %+v", se)
	}
	msg := err.Error()
	if !strings.Contains(msg, "status 500") || !strings.Contains(msg, "too-costly") || strings.Contains(msg, "injected") {
		t.Errorf("message %q: want status and issue code, no diagnostics", msg)
	}
}

func TestKickOffRefused(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) { c.RejectUnknownTypes = true })
	_, _, err := export(t, f.client(t, func(c *bulk.Config) { c.Types = []string{"Patient", "Device"} }))
	var se *bulk.StatusError
	if !errors.Is(err, bulk.ErrKickOff) || !errors.As(err, &se) || se.StatusCode != 400 ||
		!reflect.DeepEqual(se.Issues, []string{"not-supported"}) {
		t.Fatalf("err = %v, want ErrKickOff 400 not-supported", err)
	}
}

func TestErrorFileCounted(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	res, _, err := export(t, f.client(t, func(c *bulk.Config) { c.Types = []string{"Patient", "Device", "Specimen"} }))
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if res.ErrorFiles != 1 || res.ErrorResources != 2 {
		t.Errorf("error files %d resources %d, want 1 and 2", res.ErrorFiles, res.ErrorResources)
	}
	checkCounts(t, "Received", res.Received, map[string]int{"Patient": 3})
	checkCounts(t, "Stats.Resources", res.Stats.Resources, map[string]int{"Patient": 3})
	checkCounts(t, "Stats.Skipped", res.Stats.Skipped, nil)
	checkCounts(t, "Stats.Rejected", res.Stats.Rejected, nil)
}

func TestCancel(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	c := f.client(t, nil)
	ctx := context.Background()
	statusURL, err := c.Start(ctx)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if !strings.HasPrefix(statusURL, f.srv.BaseURL()+"/") {
		t.Errorf("status url %q not on the server", statusURL)
	}
	if err := c.Cancel(ctx, statusURL); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if cn := f.srv.Counters(); cn.Cancels != 1 {
		t.Errorf("cancels %d, want 1", cn.Cancels)
	}
	// A cancelled export is gone: polling gives 404, cancelling again too.
	_, err = c.Wait(ctx, statusURL)
	var se *bulk.StatusError
	if !errors.Is(err, bulk.ErrExportFailed) || !errors.As(err, &se) || se.StatusCode != 404 {
		t.Errorf("wait after cancel: %v, want ErrExportFailed 404", err)
	}
	if err := c.Cancel(ctx, statusURL); !errors.Is(err, bulk.ErrCancel) {
		t.Errorf("second cancel: %v, want ErrCancel", err)
	}
}

func TestMaxWait(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) {
		c.PollsBeforeReady = 1000
		c.RetryAfter = 10 * time.Second
	})
	_, _, err := export(t, f.client(t, func(c *bulk.Config) { c.MaxWait = time.Minute }))
	if !errors.Is(err, bulk.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if s := sum(f.clock.Sleeps()); s != time.Minute {
		t.Errorf("waited %v, want 1m", s)
	}
	if cn := f.srv.Counters(); cn.Cancels != 1 || cn.Polls != 7 {
		t.Errorf("counters %+v; want the abandoned export cancelled after 7 polls", cn)
	}
}

func TestContextCancelledWhileWaiting(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hc := &hookClock{Clock: f.clock, onSleep: func(int) { cancel() }}
	c := f.client(t, func(c *bulk.Config) { c.Clock = hc })
	var col fhir.Collector
	_, err := c.Export(ctx, &col)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if cn := f.srv.Counters(); cn.Cancels != 1 {
		t.Errorf("cancels %d, want the abandoned export cancelled", cn.Cancels)
	}
}

func TestKeepFiles(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	if _, _, err := export(t, f.client(t, func(c *bulk.Config) { c.KeepFiles = true })); err != nil {
		t.Fatalf("export: %v", err)
	}
	if cn := f.srv.Counters(); cn.Cancels != 0 {
		t.Errorf("cancels %d, want 0 with KeepFiles", cn.Cancels)
	}
}

func TestIncremental(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	first, _, err := export(t, f.client(t, nil))
	if err != nil {
		t.Fatalf("first export: %v", err)
	}
	checkCounts(t, "first Counts", first.Counts, smallCounts)

	f.clock.Advance(time.Hour)
	for typ, n := range map[string]int{"Observation": 2, "Patient": 1} {
		if got, err := f.srv.Touch(typ, n); err != nil || got != n {
			t.Fatalf("touch %s: %d, %v", typ, got, err)
		}
	}
	second, col, err := export(t, f.client(t, func(c *bulk.Config) { c.Since = first.TransactionTime }))
	if err != nil {
		t.Fatalf("incremental export: %v", err)
	}
	if got := f.srv.LastKickOff().Get("_since"); got != first.TransactionTime.UTC().Format(time.RFC3339Nano) {
		t.Errorf("_since sent %q", got)
	}
	want := map[string]int{"Observation": 2, "Patient": 1}
	checkCounts(t, "second Counts", second.Counts, want)
	checkCounts(t, "second Received", second.Received, want)
	checkCounts(t, "second Stats.Resources", second.Stats.Resources, map[string]int{"Patient": 1, "Observation": 2})
	// Touched: Patient p1, Observations o1 (of p1) and o2 (of p2).
	ps := col.Patients()
	if len(ps) != 2 || ps[0].Patient.ID != "p1" || ps[0].Patient.Gender == "" ||
		len(ps[0].Observations) != 1 || ps[1].Patient.ID != "p2" || len(ps[1].Observations) != 1 {
		t.Errorf("incremental records: %+v", ps)
	}
	if !second.TransactionTime.After(first.TransactionTime) {
		t.Errorf("transaction time did not advance: %v then %v", first.TransactionTime, second.TransactionTime)
	}

	third, _, err := export(t, f.client(t, func(c *bulk.Config) { c.Since = second.TransactionTime }))
	if err != nil {
		t.Fatalf("third export: %v", err)
	}
	if len(third.Counts) != 0 || third.Files != 0 {
		t.Errorf("nothing changed, yet got %v in %d files", third.Counts, third.Files)
	}
}

func TestAnonymousServer(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) { c.Clients = nil })
	c := f.client(t, func(c *bulk.Config) { c.ClientID = ""; c.PrivateKey = nil; c.KeyID = "" })
	res, _, err := export(t, c)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	checkCounts(t, "Received", res.Received, smallCounts)
	if cn := f.srv.Counters(); cn.TokensIssued != 0 || cn.Discovery != 0 {
		t.Errorf("counters %+v", cn)
	}
}

func TestConfiguredTokenURLSkipsDiscovery(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	if _, _, err := export(t, f.client(t, func(c *bulk.Config) { c.TokenURL = f.srv.TokenURL() })); err != nil {
		t.Fatalf("export: %v", err)
	}
	if cn := f.srv.Counters(); cn.Discovery != 0 || cn.TokensIssued != 1 {
		t.Errorf("counters %+v", cn)
	}
}

// TestNoPHIInLogsOrErrors runs exports that succeed and fail with debug
// logging and checks that no resource content reaches a log line or an
// error.
func TestNoPHIInLogsOrErrors(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, writeSmallData(t), ecKey(), func(c *bulktest.Config) {
		c.Faults = []bulktest.Fault{{Endpoint: bulktest.EndpointFile, Status: 503, RetryAfter: time.Second}}
	})
	var errs []error
	c := f.client(t, func(c *bulk.Config) { c.Logger = logger })
	if _, _, err := export(t, c); err != nil {
		t.Fatalf("export: %v", err)
	}
	f.srv.Inject(bulktest.Fault{Endpoint: bulktest.EndpointStatus, Status: 500, Times: 1})
	_, _, err := export(t, c)
	errs = append(errs, err)
	_, err = c.Export(context.Background(), failingSink{&fhir.Collector{}})
	errs = append(errs, err)
	if logs.Len() == 0 {
		t.Fatal("no log output")
	}
	for _, secret := range []string{canary, "p1", "p2", "o1", "1970-01-01"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log contains %q:\n%s", secret, logs.String())
		}
		for _, e := range errs {
			if e == nil {
				t.Fatal("expected an error")
			}
			if strings.Contains(e.Error(), secret) {
				t.Errorf("error contains %q: %v", secret, e)
			}
		}
	}
}

// failingSink refuses patients, observations and conditions with a
// message free of their content (other record kinds go to the Collector).
type failingSink struct{ *fhir.Collector }

var errSinkFull = errors.New("sink full")

func (failingSink) Patient(fhir.Patient) error         { return errSinkFull }
func (failingSink) Observation(fhir.Observation) error { return errSinkFull }
func (failingSink) Condition(fhir.Condition) error     { return errSinkFull }

func TestSinkErrorStops(t *testing.T) {
	f := newFixture(t, writeSmallData(t), ecKey(), nil)
	res, err := f.client(t, nil).Export(context.Background(), failingSink{&fhir.Collector{}})
	if !errors.Is(err, bulk.ErrDownload) || !errors.Is(err, errSinkFull) {
		t.Fatalf("err = %v, want ErrDownload wrapping the sink error", err)
	}
	if res == nil || res.Files != 0 {
		t.Errorf("partial result %+v", res)
	}
	// A failed download leaves the export on the server for a retry.
	if cn := f.srv.Counters(); cn.Cancels != 0 {
		t.Errorf("cancels %d, want 0", cn.Cancels)
	}
}

// TestManifestChecks serves hand-made manifests from a stub server.
func TestManifestChecks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		manifest string
		wantErr  error
	}{
		{"foreign file url with token", `{"transactionTime":"2025-03-01T12:00:00Z","request":"x","requiresAccessToken":true,
			"output":[{"type":"Patient","url":"https://files.example.org/p.ndjson"}]}`, bulk.ErrForeignURL},
		{"http file url off loopback", `{"transactionTime":"2025-03-01T12:00:00Z","request":"x","requiresAccessToken":false,
			"output":[{"type":"Patient","url":"http://files.example.org/p.ndjson"}]}`, bulk.ErrInsecureURL},
		{"bad transaction time", `{"transactionTime":"yesterday","request":"x","output":[]}`, bulk.ErrManifest},
		{"bad type", `{"transactionTime":"2025-03-01T12:00:00Z","output":[{"type":"patient; drop","url":"/f"}]}`, bulk.ErrManifest},
		{"negative count", `{"transactionTime":"2025-03-01T12:00:00Z","output":[{"type":"Patient","url":"/f","count":-1}]}`, bulk.ErrManifest},
		{"not json", `<html>`, bulk.ErrManifest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/token":
					_, _ = w.Write([]byte(`{"access_token":"t0k","token_type":"Bearer","expires_in":300}`))
				case "/fhir/status":
					_, _ = w.Write([]byte(tc.manifest))
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			c, err := bulk.New(bulk.Config{BaseURL: srv.URL + "/fhir", Clock: bulktest.NewClock(testStart),
				ClientID: testClientID, PrivateKey: ecKey(), TokenURL: srv.URL + "/token"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Wait(context.Background(), srv.URL+"/fhir/status")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/fhir"
	srv.Close() // nothing listens there any more
	for _, tc := range []struct {
		name      string
		run       func(*bulk.Client) error
		wantRetry bool
		sleeps    []time.Duration
	}{
		{"kick-off is not repeated", func(c *bulk.Client) error { _, err := c.Start(context.Background()); return err },
			false, nil},
		{"cancel is retried", func(c *bulk.Client) error { return c.Cancel(context.Background(), base+"/_status/1") },
			true, []time.Duration{time.Second, 2 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := bulktest.NewClock(testStart)
			c, err := bulk.New(bulk.Config{BaseURL: base, Clock: clock, MaxRetries: 2})
			if err != nil {
				t.Fatal(err)
			}
			err = tc.run(c)
			if !errors.Is(err, bulk.ErrUnreachable) || errors.Is(err, bulk.ErrTooManyRetries) != tc.wantRetry {
				t.Fatalf("err = %v", err)
			}
			if got := clock.Sleeps(); !reflect.DeepEqual(got, tc.sleeps) {
				t.Errorf("sleeps %v, want %v", got, tc.sleeps)
			}
		})
	}
}
