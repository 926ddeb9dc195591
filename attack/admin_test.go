package attack

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
)

// Admin API attacks, over HTTPS to the shared coordinator's admin address.
// Attacks on the limits kept per client address come from their own
// loopback address (127.0.0.2, 127.0.0.3), so they neither feel nor leave
// each other's refusals.

// adminReq sends one request with client: method, a raw request target
// (sent as is, escapes and dot segments included), headers and a body.
func (f *federation) adminReq(t *testing.T, client *http.Client, method, target string, hdr http.Header, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+f.adminAddr+"/", body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = target
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(b)
}

func bearerHeader(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// TestAttackAdminTokenGuessing: a client guesses bearer tokens (random ones
// of the right shape, the bootstrap token's id with a wrong secret,
// malformed ones). The first guesses are 401; past the per-address limit
// of failed authentications (20, then 2 a second) every guess is 429 with
// Retry-After at once. Each guess is counted (admin_denied_total,
// admin_rate_limited_total) and audited with its address; no guess
// authenticates, and a valid token still works, from there and from
// elsewhere.
func TestAttackAdminTokenGuessing(t *testing.T) {
	f := fed(t)
	const from = "127.0.0.2"
	attacker := f.adminClient(from)
	realID := strings.SplitN(strings.TrimPrefix(f.token, "cohort_"), "_", 2)[0]
	guess := func(i int) string {
		var id [5]byte
		var secret [32]byte
		rand.Read(id[:])
		rand.Read(secret[:])
		switch i % 4 {
		case 0:
			return "cohort_t" + hex.EncodeToString(id[:]) + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
		case 1:
			return "cohort_" + realID + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
		case 2:
			return f.token[:len(f.token)-1] + "A"
		}
		return "' OR 1=1 --"
	}
	denied, limited := f.count(t, "admin_denied_total"), f.count(t, "admin_rate_limited_total")
	auditFrom := f.auditSize(t)
	var n401, n429 int
	start := time.Now()
	for i := 0; i < 200 && n429 < 20; i++ {
		resp, body := f.adminReq(t, attacker, http.MethodGet, "/v1/whoami", bearerHeader(guess(i)), nil)
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			if !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer challenge: %v", resp.Header)
			}
			n401++
		case http.StatusTooManyRequests:
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("429 without a Retry-After: %v", resp.Header)
			}
			if !strings.Contains(body, "too many failed authentications") {
				t.Fatalf("429 does not say why: %s", body)
			}
			n429++
		default:
			t.Fatalf("guess %d answered %d: %s", i, resp.StatusCode, body)
		}
	}
	took := time.Since(start)
	t.Logf("%d guesses answered 401, then %d answered 429, in %v", n401, n429, took)
	// The limit: a burst of 20, refilled at 2 a second.
	if allowed := 20 + int(2*took.Seconds()) + 1; n429 == 0 || n401 > allowed {
		t.Fatalf("no rate limit: %d answers 401 (at most %d allowed in %v), %d 429", n401, allowed, took, n429)
	}
	denied.grew(t, float64(n401))
	limited.grew(t, float64(n429))
	isGuess := func(status int) func(auditEntry) bool {
		return func(e auditEntry) bool {
			host, _, _ := net.SplitHostPort(e.Remote)
			return host == from && e.Actor == "unauthenticated" && e.Outcome == "denied" && e.Status == status && e.Action == "GET /v1/whoami"
		}
	}
	f.audited(t, auditFrom, n401, "the 401 guesses", isGuess(http.StatusUnauthorized))
	f.audited(t, auditFrom, n429, "the rate-limited guesses", isGuess(http.StatusTooManyRequests))
	// The limit is on failed authentications: a valid token works from
	// the guessing address and from any other.
	for _, c := range []*http.Client{attacker, f.adminClient("")} {
		if resp, body := f.adminReq(t, c, http.MethodGet, "/v1/whoami", bearerHeader(f.token), nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("a valid token after the guessing: %d %s", resp.StatusCode, body)
		}
	}
	f.healthy(t)
}

// TestAttackAdminCSRF: the admin API takes the bearer token
// from the Authorization header only. A cross-site form POST (with the
// token in cookies, as a browser would send them), the token in the query
// string or in Basic credentials are all 401, counted and audited, and
// change nothing. No answer carries CORS headers for a foreign origin, so
// a page elsewhere cannot read the API with a token it got hold of, and a
// preflight is not granted.
func TestAttackAdminCSRF(t *testing.T) {
	f := fed(t)
	const from = "127.0.0.3"
	c := f.adminClient(from)
	const evil = "https://evil.example"
	form := func(v url.Values) io.Reader { return strings.NewReader(v.Encode()) }
	cookies := "cohort_token=" + f.token + "; token=" + f.token + "; Authorization=Bearer%20" + f.token
	attempts := []struct {
		name, method, target string
		hdr                  http.Header
		body                 io.Reader
	}{
		{"form POST with cookies", http.MethodPost, "/v1/tokens",
			http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Origin": {evil}, "Referer": {evil + "/"}, "Cookie": {cookies}},
			form(url.Values{"person": {"eve"}, "role": {"admin"}})},
		{"text/plain POST with cookies", http.MethodPost, "/v1/sites",
			http.Header{"Content-Type": {"text/plain"}, "Origin": {evil}, "Cookie": {cookies}}, strings.NewReader(`{"id":"evil-site"}`)},
		{"revoke with cookies", http.MethodPost, "/v1/sites/honest-a/revoke",
			http.Header{"Origin": {evil}, "Cookie": {cookies}}, nil},
		{"token in the query", http.MethodPost, "/v1/tokens?access_token=" + url.QueryEscape(f.token) + "&token=" + url.QueryEscape(f.token),
			http.Header{"Content-Type": {"application/json"}, "Origin": {evil}}, strings.NewReader(`{"person":"eve","role":"admin"}`)},
		{"token as Basic credentials", http.MethodPost, "/v1/tokens",
			http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+f.token))}, "Origin": {evil}},
			strings.NewReader(`{"person":"eve","role":"admin"}`)},
	}
	denied := f.count(t, "admin_denied_total")
	auditFrom := f.auditSize(t)
	for _, a := range attempts {
		resp, body := f.adminReq(t, c, a.method, a.target, a.hdr, a.body)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "no bearer token") {
			t.Fatalf("%s: answered %d %s, want 401", a.name, resp.StatusCode, body)
		}
		noCORS(t, a.name, resp)
	}
	denied.grew(t, float64(len(attempts)))
	f.audited(t, auditFrom, len(attempts), "the cross-site requests", func(e auditEntry) bool {
		host, _, _ := net.SplitHostPort(e.Remote)
		return host == from && e.Actor == "unauthenticated" && e.Outcome == "denied" && e.Status == http.StatusUnauthorized
	})

	// A preflight for a cross-origin request with the Authorization
	// header is not granted, and an authenticated answer read from a
	// foreign origin carries no CORS header either.
	resp, _ := f.adminReq(t, c, http.MethodOptions, "/v1/tokens", http.Header{"Origin": {evil},
		"Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization, content-type"}}, nil)
	if resp.StatusCode/100 == 2 {
		t.Fatalf("the preflight was answered %d", resp.StatusCode)
	}
	noCORS(t, "preflight", resp)
	hdr := bearerHeader(f.token)
	hdr.Set("Origin", evil)
	resp, _ = f.adminReq(t, c, http.MethodGet, "/v1/whoami", hdr, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("whoami: %d", resp.StatusCode)
	}
	noCORS(t, "an authenticated read", resp)

	// Nothing changed: no token for eve, no evil site, honest-a not
	// revoked.
	if _, body := f.api(t, http.MethodGet, "/v1/tokens", nil, nil); strings.Contains(body, `"eve"`) {
		t.Fatalf("a cross-site request created a token: %s", body)
	}
	if status, _ := f.api(t, http.MethodGet, "/v1/sites/evil-site", nil, nil); status != http.StatusNotFound {
		t.Fatalf("a cross-site request created a site (%d)", status)
	}
	if _, body := f.api(t, http.MethodGet, "/v1/sites/honest-a", nil, nil); strings.Contains(body, `"revoked"`) {
		t.Fatalf("a cross-site request revoked honest-a: %s", body)
	}
	f.healthy(t)
}

// noCORS fails the test if resp grants anything to another origin.
func noCORS(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	for k := range resp.Header {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Fatalf("%s: the answer carries %s: %v", what, k, resp.Header)
		}
	}
}

// TestAttackAdminScriptInjection: names the dashboard shows (site ids, job
// ids, feature names, people's names on tokens) holding markup are refused
// by validation at creation with a clear 400, counted and audited, and
// nothing holding them is listed afterwards. The dashboard itself is
// served with a strict Content-Security-Policy (scripts from its own
// origin only, no inline script, no framing) and holds no inline script.
func TestAttackAdminScriptInjection(t *testing.T) {
	f := fed(t)
	payloads := []string{`<script>alert(1)</script>`, `"><img src=x onerror=alert(1)>`, `x" onmouseover="alert(1)`, `</textarea><svg onload=alert(1)>`}
	bad := f.count(t, "admin_bad_requests_total")
	auditFrom := f.auditSize(t)
	refused := 0
	for _, p := range payloads {
		for _, c := range []struct {
			what, path string
			body       any
			word       string
		}{
			{"site id", "/v1/sites", map[string]string{"id": p}, "site id"},
			{"job id", "/v1/jobs", jobSpec(p, 1, nil), "job id"},
			{"feature name", "/v1/jobs", jobSpec("xss-feature", 1, map[string]any{"features": map[string]any{
				"features": []map[string]any{{"name": p, "kind": "age", "scale": 10}}, "label": map[string]any{"kind": "deceased"}}}), "name"},
			{"token person", "/v1/tokens", map[string]string{"person": p, "role": "viewer"}, "person"},
		} {
			status, body := f.api(t, http.MethodPost, c.path, c.body, nil)
			if status != http.StatusBadRequest || !strings.Contains(body, c.word) {
				t.Fatalf("%s %q: answered %d %s, want 400 naming the %s", c.what, p, status, body, c.word)
			}
			refused++
		}
	}
	bad.grew(t, float64(refused))
	f.audited(t, auditFrom, refused, "the refused creations", func(e auditEntry) bool {
		return e.Status == http.StatusBadRequest && e.Outcome == "error" &&
			(e.Action == "POST /v1/sites" || e.Action == "POST /v1/jobs" || e.Action == "POST /v1/tokens")
	})
	for _, list := range []string{"/v1/sites?page_size=1000", "/v1/jobs?page_size=1000", "/v1/tokens?page_size=1000"} {
		if _, body := f.api(t, http.MethodGet, list, nil, nil); strings.Contains(body, "alert(1)") {
			t.Fatalf("%s lists a payload: %s", list, body)
		}
	}

	resp, page := f.adminReq(t, f.adminClient(""), http.MethodGet, "/ui/", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the dashboard answered %d", resp.StatusCode)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Fatalf("the dashboard's Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	for _, never := range []string{"unsafe-inline", "unsafe-eval", "*"} {
		if strings.Contains(csp, never) {
			t.Fatalf("the dashboard's Content-Security-Policy %q allows %s", csp, never)
		}
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("the dashboard is served without X-Content-Type-Options: nosniff")
	}
	for _, tag := range strings.Split(strings.ToLower(page), "<script")[1:] {
		open, _, _ := strings.Cut(tag, ">")
		if !strings.Contains(open, "src=") {
			t.Fatalf("the dashboard holds an inline script: <script%s", tag[:min(len(tag), 80)])
		}
	}
	f.healthy(t)
}

// TestAttackAdminPathTraversal: model downloads whose digest climbs out of
// the blob store (dot segments, percent-encoded and double-encoded ones,
// absolute paths, backslashes), and a digest of a site's update that the
// blob store does hold, are answered 400 or 404 (after the path cleaning
// redirect, when there is one): never a file's bytes. The dashboard's
// static files refuse the same. Refusals are counted.
func TestAttackAdminPathTraversal(t *testing.T) {
	f := fed(t)
	// A site's update held in blobs/ while its round is open: only
	// committed models may be downloaded.
	j := newUpdateJob(t, f, "traversal", 1, nil)
	upd := protocol.EncodeF32(honestUpdates[0].delta)
	resp, err := j.honest["honest-a"].upload(j.header(upd, honestUpdates[0].samples), upd)
	acked(t, "honest-a's update", resp, err)
	updDigest := protocol.Digest(upd)

	targets := []string{
		"/v1/models/../../../../etc/passwd/weights",
		"/v1/models/..%2f..%2f..%2f..%2fetc%2fpasswd/weights",
		"/v1/models/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd/weights",
		"/v1/models/%2e%2e/%2e%2e/%2e%2e/etc/passwd/weights",
		"/v1/models/..%252f..%252f..%252fetc%252fpasswd/weights",
		"/v1/models/%2fetc%2fpasswd/weights",
		"/v1/models/..%5c..%5c..%5cetc%5cpasswd/weights",
		"/v1/models/....//....//etc/passwd/weights",
		"/v1/models/blobs%2f" + updDigest + "/weights",
		"/v1/models/" + updDigest + "%00/weights",
		"/v1/models/" + updDigest + "/weights",
		"/v1/models/" + updDigest,
		"/v1/jobs/traversal/models/..%2f..%2f..%2fetc%2fpasswd",
		"/v1/jobs/..%2f..%2f..%2fetc/models/" + updDigest,
		"/ui/../../../etc/passwd",
		"/ui/..%2f..%2f..%2fetc%2fpasswd",
		"/ui/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
	}
	bad := f.count(t, "admin_bad_requests_total")
	refused := 0
	c := f.adminClient("")
	for _, target := range targets {
		hops := 0
		for next := target; ; hops++ {
			resp, body := f.adminReq(t, c, http.MethodGet, next, bearerHeader(f.token), nil)
			if strings.Contains(body, "root:") || resp.Header.Get("Cohort-Model-Sha256") != "" ||
				resp.Header.Get("Content-Type") == "application/octet-stream" {
				t.Fatalf("GET %s (hop %d) served a file: %d %v %.200q", target, hops, resp.StatusCode, resp.Header, body)
			}
			switch {
			case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound:
				refused++
				t.Logf("GET %s: %d after %d redirects", target, resp.StatusCode, hops)
			case resp.StatusCode/100 == 3 && hops < 3:
				loc, err := url.Parse(resp.Header.Get("Location"))
				if err != nil || loc.Host != "" && loc.Host != f.adminAddr {
					t.Fatalf("GET %s redirects off the admin API: %q", target, resp.Header.Get("Location"))
				}
				next = loc.EscapedPath()
				continue
			default:
				t.Fatalf("GET %s answered %d: %.200q", target, resp.StatusCode, body)
			}
			break
		}
	}
	bad.grew(t, float64(refused))
	j.commitHonest(t)
	f.healthy(t)
}

// TestAttackAdminOversizedJSON: JSON bodies above the admin API's 1 MiB
// limit, with or without a Content-Length, are refused with 413 (the
// coordinator stops reading at the limit), counted, audited, and create
// nothing.
func TestAttackAdminOversizedJSON(t *testing.T) {
	f := fed(t)
	bad := f.count(t, "admin_bad_requests_total")
	auditFrom := f.auditSize(t)
	c := f.adminClient("")
	big := `{"id":"oversized","rounds":1,"padding":"` + strings.Repeat("A", 3<<20) + `"}`
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(body) // no length known: sent chunked
		}
		hdr := bearerHeader(f.token)
		hdr.Set("Content-Type", "application/json")
		start := time.Now()
		resp, text := f.adminReq(t, c, http.MethodPost, "/v1/jobs", hdr, body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(text, "above 1048576 bytes") {
			t.Fatalf("a 3 MiB body (chunked %v) answered %d %.200s, want 413", chunked, resp.StatusCode, text)
		}
		t.Logf("3 MiB body (chunked %v): 413 in %v", chunked, time.Since(start))
	}
	bad.grew(t, 2)
	f.audited(t, auditFrom, 2, "the oversized bodies", func(e auditEntry) bool {
		return e.Action == "POST /v1/jobs" && e.Status == http.StatusRequestEntityTooLarge
	})
	if status, _ := f.api(t, http.MethodGet, "/v1/jobs/oversized", nil, nil); status != http.StatusNotFound {
		t.Fatalf("the oversized request created a job (%d)", status)
	}
	f.healthy(t)
}

// TestAttackAdminDeeplyNestedJSON: 100,000 nested arrays or objects as a whole
// body, and 9,000 nested arrays inside a job's feature spec (below the
// JSON decoder's depth limit, so that they reach the feature spec's own
// YAML parser), are refused with 400 within seconds, counted and audited;
// the coordinator does not exhaust its stack and stays healthy.
func TestAttackAdminDeeplyNestedJSON(t *testing.T) {
	f := fed(t)
	bodies := map[string]string{
		"arrays":              strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000),
		"objects":             strings.Repeat(`{"a":`, 100_000) + "1" + strings.Repeat("}", 100_000),
		"unterminated":        strings.Repeat("[", 500_000),
		"arrays in the spec":  `{"id":"nested","features":` + strings.Repeat("[", 9_000) + strings.Repeat("]", 9_000) + `}`,
		"objects in the spec": `{"id":"nested","features":` + strings.Repeat(`{"a":`, 9_000) + "1" + strings.Repeat("}", 9_000) + `}`,
	}
	bad := f.count(t, "admin_bad_requests_total")
	auditFrom := f.auditSize(t)
	c := f.adminClient("")
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			hdr := bearerHeader(f.token)
			hdr.Set("Content-Type", "application/json")
			start := time.Now()
			resp, text := f.adminReq(t, c, http.MethodPost, "/v1/jobs", hdr, bytes.NewReader([]byte(body)))
			took := time.Since(start)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("answered %d %.300s, want 400", resp.StatusCode, text)
			}
			if took > 5*time.Second {
				t.Fatalf("refused after %v", took)
			}
			t.Logf("400 in %v: %.160s", took, text)
		})
	}
	bad.grew(t, float64(len(bodies)))
	f.audited(t, auditFrom, len(bodies), "the nested bodies", func(e auditEntry) bool {
		return e.Action == "POST /v1/jobs" && e.Status == http.StatusBadRequest
	})
	f.healthy(t)
}
