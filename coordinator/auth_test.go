package coordinator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// routeSample is how the authorization table calls one route: a path for
// its pattern and a body. The answers it gets from allowed roles are not
// checked beyond "not 401 or 403": the other tests check the handlers.
var routeSamples = map[string]struct {
	path string
	body any
}{
	"GET /v1/whoami":                              {path: "/v1/whoami"},
	"GET /v1/cluster":                             {path: "/v1/cluster"},
	"POST /v1/cluster/nodes":                      {path: "/v1/cluster/nodes", body: map[string]string{"id": "Bad Id", "raft_addr": "x"}},
	"DELETE /v1/cluster/nodes/{id}":               {path: "/v1/cluster/nodes/c9"},
	"GET /v1/cluster/backup":                      {path: "/v1/cluster/backup"},
	"POST /v1/cluster/restore":                    {path: "/v1/cluster/restore"},
	"GET /v1/sites":                               {path: "/v1/sites"},
	"POST /v1/sites":                              {path: "/v1/sites", body: map[string]string{"id": "st-new"}},
	"GET /v1/sites/{id}":                          {path: "/v1/sites/st-a"},
	"POST /v1/sites/{id}/revoke":                  {path: "/v1/sites/nowhere/revoke"},
	"POST /v1/sites/{id}/enrollment-tokens":       {path: "/v1/sites/nowhere/enrollment-tokens"},
	"POST /v1/enroll":                             {path: "/v1/enroll", body: map[string]string{"token": "cohortenroll_e0000000000_x", "csr": "x"}},
	"POST /v1/renew":                              {path: "/v1/renew", body: map[string]string{"csr": "x"}},
	"GET /v1/jobs":                                {path: "/v1/jobs"},
	"POST /v1/jobs":                               {path: "/v1/jobs", body: map[string]any{"id": "j-bad", "rounds": 0}},
	"GET /v1/jobs/{id}":                           {path: "/v1/jobs/j1"},
	"POST /v1/jobs/{id}/pause":                    {path: "/v1/jobs/nowhere/pause"},
	"POST /v1/jobs/{id}/resume":                   {path: "/v1/jobs/nowhere/resume"},
	"POST /v1/jobs/{id}/cancel":                   {path: "/v1/jobs/nowhere/cancel"},
	"GET /v1/jobs/{id}/rounds":                    {path: "/v1/jobs/j1/rounds"},
	"GET /v1/jobs/{id}/results":                   {path: "/v1/jobs/j1/results"},
	"GET /v1/jobs/{id}/models":                    {path: "/v1/jobs/j1/models"},
	"GET /v1/jobs/{id}/models/{digest}":           {path: "/v1/jobs/j1/models/" + strings.Repeat("0", 64)},
	"GET /v1/jobs/{id}/models/{digest}/card":      {path: "/v1/jobs/j1/models/" + strings.Repeat("0", 64) + "/card"},
	"POST /v1/jobs/{id}/models/{digest}/stage":    {path: "/v1/jobs/j1/models/" + strings.Repeat("0", 64) + "/stage", body: map[string]string{"stage": "staging"}},
	"POST /v1/jobs/{id}/models/{digest}/evaluate": {path: "/v1/jobs/j1/models/" + strings.Repeat("0", 64) + "/evaluate"},
	"POST /v1/jobs/{id}/rollback":                 {path: "/v1/jobs/nowhere/rollback"},
	"GET /v1/models":                              {path: "/v1/models"},
	"GET /v1/models/{digest}":                     {path: "/v1/models/" + strings.Repeat("0", 64)},
	"GET /v1/models/{digest}/weights":             {path: "/v1/models/" + strings.Repeat("0", 64) + "/weights"},
	"GET /v1/tokens":                              {path: "/v1/tokens"},
	"POST /v1/tokens":                             {path: "/v1/tokens", body: map[string]string{"person": "zed", "role": "viewer"}},
	"DELETE /v1/tokens/{id}":                      {path: "/v1/tokens/tffffffffff"},
	"GET /v1/audit/entries":                       {path: "/v1/audit/entries?limit=1"},
	"GET /v1/audit/checkpoint":                    {path: "/v1/audit/checkpoint"},
	"GET /v1/audit/proofs/inclusion":              {path: "/v1/audit/proofs/inclusion?index=0&size=1"},
	"GET /v1/audit/proofs/consistency":            {path: "/v1/audit/proofs/consistency?from=1&to=2"},
}

// fakeClock is a node clock that tests move forward.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// makeToken creates a token through the API with the bootstrap token.
func (tc *testCluster) makeToken(t *testing.T, addr, person string, role Role, ttl time.Duration) TokenView {
	t.Helper()
	var v TokenView
	body := map[string]any{"person": person, "role": role}
	if ttl > 0 {
		body["ttl"] = ttl.String()
	}
	if code, raw := tc.api(t, "POST", addr, "/v1/tokens", body, &v); code != http.StatusCreated || v.Token == "" {
		t.Fatalf("create %s token: %d %s", role, code, raw)
	}
	return v
}

// TestAuthorizationTable calls every route of the admin API with every
// role, with no token, a wrong token, an expired and a revoked one.
func TestAuthorizationTable(t *testing.T) {
	clock := new(fakeClock)
	tc := startClusterWith(t, 1, []string{"st-a"}, []JobSpec{testJob("j1", 2, 1)}, func(c *Config) {
		c.Now = clock.now
		c.Auth.RatePerSecond, c.Auth.Burst = 1e6, 1e6
		c.Auth.FailedPerSecond, c.Auth.FailedBurst = 1e6, 1e6
	})
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()

	tokens := map[string]string{}
	for _, r := range Roles {
		tokens[string(r)] = tc.makeToken(t, addr, "person-"+string(r), r, 48*time.Hour).Token
	}
	expiring := tc.makeToken(t, addr, "short", RoleAdmin, time.Hour)
	revoked := tc.makeToken(t, addr, "gone", RoleAdmin, 48*time.Hour)
	if code, raw := tc.api(t, "DELETE", addr, "/v1/tokens/"+revoked.ID, nil, nil); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, raw)
	}
	clock.advance(2 * time.Hour) // expiring has expired; the others have not
	id, _ := tokenID(tokens["admin"])
	unauthenticated := map[string]string{
		"no token":         "",
		"garbage":          "not-a-token",
		"wrong secret":     tokenPrefix + id + "_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"unknown id":       tokenPrefix + "t0000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"expired":          expiring.Token,
		"revoked":          revoked.Token,
		"bootstrap+suffix": tc.token + "x",
	}

	routes := leader.adminRoutes()
	for _, rt := range routes {
		key := rt.method + " " + rt.pattern
		sample, ok := routeSamples[key]
		if !ok {
			t.Errorf("route %s has no sample in routeSamples: add one", key)
			continue
		}
		t.Run(strings.ReplaceAll(key, "/", "_"), func(t *testing.T) {
			if rt.perm == permNone {
				// Gateways' routes take no bearer token: the enrollment
				// token or the site certificate (absent here) is refused
				// whoever asks.
				for name, tok := range unauthenticated {
					tokens[name] = tok
				}
				for name, tok := range tokens {
					if code, raw := tc.apiAs(t, tok, rt.method, addr, sample.path, sample.body, nil); code != http.StatusUnauthorized {
						t.Errorf("%s: %d %s, want 401", name, code, raw)
					}
				}
				return
			}
			for name, tok := range unauthenticated {
				code, raw := tc.apiAs(t, tok, rt.method, addr, sample.path, sample.body, nil)
				if code != http.StatusUnauthorized {
					t.Errorf("%s: %d %s, want 401", name, code, raw)
				}
			}
			for _, r := range Roles {
				code, raw := tc.apiAs(t, tokens[string(r)], rt.method, addr, sample.path, sample.body, nil)
				switch allowed := r.can(rt.perm); {
				case allowed && (code == http.StatusUnauthorized || code == http.StatusForbidden):
					t.Errorf("role %s (allowed): %d %s", r, code, raw)
				case !allowed && code != http.StatusForbidden:
					t.Errorf("role %s (not allowed): %d %s, want 403", r, code, raw)
				}
			}
		})
	}
	for key := range routeSamples {
		if !slices.ContainsFunc(routes, func(rt adminRoute) bool { return rt.method+" "+rt.pattern == key }) {
			t.Errorf("routeSamples has %s, which is no route", key)
		}
	}
}

// TestOpenAPICoversRoutes checks that the OpenAPI document names every
// route, with the permission the route needs, and nothing else.
func TestOpenAPICoversRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Perm string `json:"x-cohort-permission"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	n := &Node{}
	seen := map[string]bool{}
	for _, rt := range n.adminRoutes() {
		op, ok := doc.Paths[rt.pattern][strings.ToLower(rt.method)]
		switch {
		case !ok:
			t.Errorf("openapi.json lacks %s %s", rt.method, rt.pattern)
		case op.Perm != string(rt.perm):
			t.Errorf("openapi.json: %s %s needs %q, the route %q", rt.method, rt.pattern, op.Perm, rt.perm)
		}
		seen[rt.method+" "+rt.pattern] = true
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if !seen[strings.ToUpper(m)+" "+p] {
				t.Errorf("openapi.json documents %s %s, which is no route", m, p)
			}
		}
	}
}

// TestAuditCountsEveryRequest makes hundreds of mixed admin requests
// through the leader and the followers (reads, writes, refusals, errors)
// and checks the audit log grew by exactly that many admin entries, each
// naming its request.
func TestAuditCountsEveryRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of requests")
	}
	tc := startClusterWith(t, 3, []string{"st-a"}, nil, func(c *Config) {
		c.Auth.RatePerSecond, c.Auth.Burst = 1e6, 1e6
		c.Auth.FailedPerSecond, c.Auth.FailedBurst = 1e6, 1e6
	})
	leader, followers := tc.leader(t)
	addrs := []string{leader.AdminAddr(), followers[0].AdminAddr(), followers[1].AdminAddr()}
	viewer := tc.makeToken(t, addrs[0], "vera", RoleViewer, 0).Token
	operator := tc.makeToken(t, addrs[0], "otto", RoleOperator, 0).Token

	var before AuditEntries
	if code, raw := tc.api(t, "GET", addrs[0], "/v1/audit/entries?limit=0", nil, &before); code != http.StatusOK {
		t.Fatalf("%d %s", code, raw)
	}
	type call struct {
		token, method, path string
		body                any
	}
	calls := []call{
		{tc.token, "GET", "/v1/cluster", nil},
		{viewer, "GET", "/v1/sites", nil},
		{viewer, "GET", "/v1/sites/st-a", nil},
		{viewer, "GET", "/v1/sites/nowhere", nil},
		{viewer, "POST", "/v1/sites", map[string]string{"id": "st-v"}},
		{operator, "POST", "/v1/sites", map[string]string{"id": "st-o"}},
		{operator, "POST", "/v1/sites", map[string]string{"id": "Not Valid"}},
		{operator, "GET", "/v1/tokens", nil},
		{tc.token, "GET", "/v1/tokens?page_size=1", nil},
		{"", "GET", "/v1/jobs", nil},
		{"cohort_tdeadbeef00_x", "GET", "/v1/jobs", nil},
		{operator, "GET", "/v1/jobs", nil},
		{operator, "POST", "/v1/jobs/nowhere/pause", nil},
		{tc.token, "GET", "/v1/audit/checkpoint", nil},
		{viewer, "GET", "/v1/whoami", nil},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	const total = 300
	ids := map[string]bool{}
	for i := range total {
		c := calls[rng.IntN(len(calls))]
		// A 503 (leadership changed while the request ran, as it may on a
		// loaded machine) records nothing; a client sends it again.
		var resp *http.Response
		for try := 0; ; try++ {
			req, _ := http.NewRequest(c.method, "https://"+addrs[i%3]+c.path, bodyReader(t, c.body))
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			var err error
			if resp, err = tc.adminHTTP(t).Do(req); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || try == 20 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		rid := resp.Header.Get(RequestIDHeader)
		if rid == "" || ids[rid] {
			t.Fatalf("request %d (%s %s): request id %q missing or repeated (status %d)", i, c.method, c.path, rid, resp.StatusCode)
		}
		ids[rid] = true
	}
	var after AuditEntries
	if code, raw := tc.api(t, "GET", addrs[0], "/v1/audit/entries?limit=0", nil, &after); code != http.StatusOK {
		t.Fatalf("%d %s", code, raw)
	}
	// The first listing's own entry, then one per request.
	if got := after.Size - before.Size; got != total+1 {
		t.Fatalf("the log grew by %d entries for %d requests (+1 listing)", got, total)
	}
	found := 0
	for start := before.Size; start < after.Size; start += 1000 {
		var page AuditEntries
		tc.api(t, "GET", addrs[0], fmt.Sprintf("/v1/audit/entries?start=%d&limit=1000", start), nil, &page)
		for _, raw := range page.Entries {
			var e AuditEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			if e.Kind != "admin" {
				t.Errorf("entry %d is %q, want only admin entries: %s", e.Index, e.Kind, raw)
			}
			if ids[e.RequestID] {
				found++
				delete(ids, e.RequestID)
			}
		}
	}
	if found != total {
		t.Fatalf("%d of %d requests found in the log", found, total)
	}
}

var tokenPattern = regexp.MustCompile(`cohort_t[0-9a-f]{10}_[A-Za-z0-9_-]{20,}`)

// TestTokenLifecycle creates, uses, lists and revokes tokens; secrets
// appear only in the answer that creates them, never in listings or the
// audit log; break-glass use is flagged.
func TestTokenLifecycle(t *testing.T) {
	tc := startCluster(t, 1, nil, nil)
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()
	for _, bad := range []map[string]any{
		{"person": "", "role": "viewer"},
		{"person": "p", "role": "root"},
		{"person": "p", "role": "viewer", "ttl": "-1h"},
		{"person": "p", "role": "viewer", "ttl": "100000h"},
		{"person": "<script>", "role": "viewer"},
		{"person": "p", "role": "viewer", "extra": 1},
	} {
		if code, raw := tc.api(t, "POST", addr, "/v1/tokens", bad, nil); code != http.StatusBadRequest {
			t.Errorf("%v: %d %s, want 400", bad, code, raw)
		}
	}
	v := tc.makeToken(t, addr, "alice@example.org", RoleViewer, 0)
	if d := time.Until(v.Expires); d < 55*time.Minute || d > 61*time.Minute {
		t.Errorf("default expiry in %s, want 1h", d)
	}
	var who Whoami
	if code, raw := tc.apiAs(t, v.Token, "GET", addr, "/v1/whoami", nil, &who); code != http.StatusOK || who.Person != "alice@example.org" || who.Role != RoleViewer {
		t.Fatalf("whoami: %d %s", code, raw)
	}
	bg := tc.makeToken(t, addr, "oncall", RoleBreakGlass, 0)
	if code, raw := tc.apiAs(t, bg.Token, "GET", addr, "/v1/sites", nil, nil); code != http.StatusOK {
		t.Fatalf("break-glass: %d %s", code, raw)
	}
	if code, raw := tc.api(t, "DELETE", addr, "/v1/tokens/"+v.ID, nil, nil); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, raw)
	}
	if code, _ := tc.apiAs(t, v.Token, "GET", addr, "/v1/whoami", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d", code)
	}
	_, list := tc.api(t, "GET", addr, "/v1/tokens", nil, nil)
	_, entries := tc.api(t, "GET", addr, "/v1/audit/entries?limit=1000", nil, nil)
	for name, s := range map[string]string{"token list": list, "audit log": entries} {
		if m := tokenPattern.FindString(s); m != "" {
			t.Errorf("%s holds a token secret: %s", name, m)
		}
		if strings.Contains(s, `"hash"`) {
			t.Errorf("%s shows token hashes", name)
		}
	}
	var page AuditEntries
	json.Unmarshal([]byte(entries), &page)
	flagged := 0
	for _, raw := range page.Entries {
		var e AuditEntry
		json.Unmarshal(raw, &e)
		if e.BreakGlass {
			flagged++
			if e.TokenID != bg.ID || e.Role != RoleBreakGlass {
				t.Errorf("flagged entry %s", raw)
			}
		}
	}
	if flagged != 1 {
		t.Errorf("%d break-glass entries, want 1", flagged)
	}
}

// TestRateLimitPerToken: a token past its burst gets 429 with
// Retry-After; another token is not affected.
func TestRateLimitPerToken(t *testing.T) {
	tc := startClusterWith(t, 1, nil, nil, func(c *Config) { c.Auth.RatePerSecond, c.Auth.Burst = 0.001, 5 })
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()
	// The bootstrap token makes the other one, then is spent.
	other := tc.makeToken(t, addr, "other", RoleViewer, 0)
	limited := 0
	for range 8 {
		if code, _ := tc.api(t, "GET", addr, "/v1/whoami", nil, nil); code == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 3 {
		t.Fatalf("%d of 8 requests limited, want at least 3 past a burst of 5", limited)
	}
	if code, raw := tc.apiAs(t, other.Token, "GET", addr, "/v1/whoami", nil, nil); code != http.StatusOK {
		t.Fatalf("another token: %d %s", code, raw)
	}
}

// TestRateLimitedRefusalsAreAudited: a client guessing tokens past the
// per-address limit gets 429 at once, and every one of its requests is
// still one leaf of the log (written in batches).
func TestRateLimitedRefusalsAreAudited(t *testing.T) {
	tc := startClusterWith(t, 1, nil, nil, func(c *Config) { c.Auth.FailedPerSecond, c.Auth.FailedBurst = 0.001, 5 })
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()
	ids := map[string]int{}
	limited := 0
	for i := range 40 {
		req, _ := http.NewRequest("GET", "https://"+addr+"/v1/jobs", nil)
		req.Header.Set("Authorization", fmt.Sprintf("Bearer cohort_t%010d_guess%d", i, i))
		resp, err := tc.adminHTTP(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
		rid := resp.Header.Get(RequestIDHeader)
		if rid == "" {
			t.Fatalf("request %d (%d) has no request id", i, resp.StatusCode)
		}
		ids[rid] = resp.StatusCode
	}
	if limited < 30 {
		t.Fatalf("%d of 40 guesses rate limited, want at least 30", limited)
	}
	waitFor(t, leader, "every guess in the audit log", func() bool {
		leaves, err := leader.audit.log.Entries(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, raw := range leaves {
			var e AuditEntry
			json.Unmarshal(raw, &e)
			if code, ok := ids[e.RequestID]; ok && e.Status == code && e.Outcome == "denied" {
				found++
			}
		}
		return found == len(ids)
	})
	if d := leader.Stats().AuditDropped.Load(); d != 0 {
		t.Errorf("%d refusals dropped", d)
	}
}
