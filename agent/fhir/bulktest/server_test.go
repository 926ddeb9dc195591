package bulktest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir/bulktest"
	"github.com/golang-jwt/jwt/v5"
)

const (
	clientID = "site-a"
	keyID    = "k1"
)

var start = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var (
	ecKey  = sync.OnceValue(func() *ecdsa.PrivateKey { return must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)) })
	rsaKey = sync.OnceValue(func() *rsa.PrivateKey { return must(rsa.GenerateKey(rand.Reader, 2048)) })
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

const data = `{"resourceType":"Patient","id":"p1"}
{"resourceType":"Patient","id":"p2","meta":{"lastUpdated":"2025-01-01T00:00:00Z"}}
{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"}}
{"resourceType":"Observation","id":"o2","subject":{"reference":"urn:uuid:p2"}}
{"resourceType":"Observation","id":"o3","subject":{"reference":"Group/g"}}
{"resourceType":"Organization","id":"org1"}
`

type env struct {
	srv   *bulktest.Server
	clock *bulktest.Clock
}

func newEnv(t *testing.T, mod func(*bulktest.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "all.ndjson"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := bulktest.NewClock(start)
	cfg := bulktest.DefaultConfig()
	cfg.Dir = dir
	cfg.Clock = clock
	cfg.Clients = []bulktest.RegisteredClient{
		{ID: clientID, KeyID: keyID, PublicKey: ecKey().Public()},
		{ID: clientID, KeyID: "rsa", PublicKey: rsaKey().Public()},
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := bulktest.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return &env{srv: srv, clock: clock}
}

// claims are the default valid assertion claims.
func (e *env) claims() jwt.MapClaims {
	now := e.clock.Now()
	return jwt.MapClaims{
		"iss": clientID, "sub": clientID, "aud": e.srv.TokenURL(),
		"exp": now.Add(4 * time.Minute).Unix(), "jti": must(randomHex()),
	}
}

func randomHex() (string, error) {
	b := make([]byte, 12)
	_, err := rand.Read(b)
	return hex.EncodeToString(b), err
}

func signed(t *testing.T, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = keyID
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) tokenRequest(t *testing.T, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(e.srv.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func form(assertion string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
		"scope":                 {"system/*.read"},
	}
}

func (e *env) token(t *testing.T) string {
	t.Helper()
	code, body := e.tokenRequest(t, form(signed(t, jwt.SigningMethodES384, ecKey(), nil, e.claims())))
	tok, _ := body["access_token"].(string)
	if code != 200 || tok == "" {
		t.Fatalf("token: %d %v", code, body)
	}
	return tok
}

func TestTokenEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := e.claims()
		mod(c)
		return c
	}
	replayed := signed(t, jwt.SigningMethodES384, ecKey(), nil, e.claims())
	for _, tc := range []struct {
		name   string
		form   url.Values
		code   int
		reason string
	}{
		{"valid ES384", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, e.claims())), 200, ""},
		{"valid RS384", form(signed(t, jwt.SigningMethodRS384, rsaKey(), map[string]any{"kid": "rsa"}, e.claims())), 200, ""},
		{"first use", form(replayed), 200, ""},
		{"jti replay", form(replayed), 401, "jti-reused"},
		{"alg none", form(signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil, e.claims())), 401, "bad-algorithm"},
		{"HS384", form(signed(t, jwt.SigningMethodHS384, []byte("secret"), nil, e.claims())), 401, "bad-algorithm"},
		{"ES256", form(signed(t, jwt.SigningMethodES256, p256, nil, e.claims())), 401, "bad-algorithm"},
		{"RS384 for an EC kid", form(signed(t, jwt.SigningMethodRS384, rsaKey(), nil, e.claims())), 401, "bad-algorithm"},
		{"PS384", form(signed(t, jwt.SigningMethodPS384, rsaKey(), map[string]any{"kid": "rsa"}, e.claims())), 401, "bad-algorithm"},
		{"no typ", form(signed(t, jwt.SigningMethodES384, ecKey(), map[string]any{"typ": nil}, e.claims())), 401, "bad-typ"},
		{"no kid", form(signed(t, jwt.SigningMethodES384, ecKey(), map[string]any{"kid": nil}, e.claims())), 401, "missing-kid"},
		{"unknown kid", form(signed(t, jwt.SigningMethodES384, ecKey(), map[string]any{"kid": "k9"}, e.claims())), 401, "unknown-kid"},
		{"other key", form(signed(t, jwt.SigningMethodES384, must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)), nil, e.claims())), 401, "bad-signature"},
		{"unknown client", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, with(func(c jwt.MapClaims) { c["iss"], c["sub"] = "x", "x" }))), 401, "unknown-client"},
		{"sub differs", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, with(func(c jwt.MapClaims) { c["sub"] = "x" }))), 401, "sub-mismatch"},
		{"wrong aud", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, with(func(c jwt.MapClaims) { c["aud"] = "https://elsewhere/token" }))), 401, "wrong-audience"},
		{"expired", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, with(func(c jwt.MapClaims) { c["exp"] = start.Add(-time.Second).Unix() }))), 401, "expired"},
		{"exp too far", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, with(func(c jwt.MapClaims) { c["exp"] = start.Add(10 * time.Minute).Unix() }))), 401, "lifetime-too-long"},
		{"no exp", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, with(func(c jwt.MapClaims) { delete(c, "exp") }))), 401, "missing-claim"},
		{"no jti", form(signed(t, jwt.SigningMethodES384, ecKey(), nil, with(func(c jwt.MapClaims) { delete(c, "jti") }))), 401, "missing-jti"},
		{"garbage", form("a.b.c"), 401, "malformed"},
		{"wrong grant", func() url.Values { f := form("x"); f.Set("grant_type", "password"); return f }(), 400, "grant-type"},
		{"wrong assertion type", func() url.Values { f := form("x"); f.Set("client_assertion_type", "x"); return f }(), 400, "assertion-type"},
		{"user scope", func() url.Values { f := form("x"); f.Set("scope", "user/*.read"); return f }(), 400, "scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.tokenRequest(t, tc.form)
			if code != tc.code {
				t.Fatalf("status %d (%v), want %d", code, body, tc.code)
			}
			if code == 200 {
				if body["token_type"] != "bearer" || body["expires_in"] != float64(300) || body["access_token"] == "" {
					t.Errorf("token response %v", body)
				}
				return
			}
			if got := e.srv.LastRefusal(); got != tc.reason {
				t.Errorf("refused for %q, want %q", got, tc.reason)
			}
			if body["error"] == nil {
				t.Errorf("no oauth error in %v", body)
			}
		})
	}
}

func TestSmartConfiguration(t *testing.T) {
	e := newEnv(t, nil)
	resp, err := http.Get(e.srv.BaseURL() + "/.well-known/smart-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&sc); err != nil {
		t.Fatal(err)
	}
	if sc["token_endpoint"] != e.srv.TokenURL() {
		t.Errorf("smart configuration %v", sc)
	}
}

// do sends a request with the given token ("" = none) and headers.
func do(t *testing.T, method, u, token string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

var kickHeaders = map[string]string{"Accept": "application/fhir+json", "Prefer": "respond-async"}

func TestBearerRequired(t *testing.T) {
	e := newEnv(t, func(c *bulktest.Config) { c.TokenLifetime = time.Minute })
	tok := e.token(t)
	if r := do(t, "GET", e.srv.BaseURL()+"/$export", "", kickHeaders); r.StatusCode != 401 || r.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d", r.StatusCode)
	}
	if r := do(t, "GET", e.srv.BaseURL()+"/$export", "forged", kickHeaders); r.StatusCode != 401 {
		t.Errorf("unknown token: %d", r.StatusCode)
	}
	r := do(t, "GET", e.srv.BaseURL()+"/$export", tok, kickHeaders)
	if r.StatusCode != 202 {
		t.Fatalf("valid token: %d", r.StatusCode)
	}
	status := r.Header.Get("Content-Location")
	e.clock.Advance(time.Minute)
	if r := do(t, "GET", status, tok, nil); r.StatusCode != 401 {
		t.Errorf("expired token: %d", r.StatusCode)
	}
	tok = e.token(t)
	e.srv.RevokeTokens()
	if r := do(t, "GET", status, tok, nil); r.StatusCode != 401 {
		t.Errorf("revoked token: %d", r.StatusCode)
	}
	if c := e.srv.Counters(); c.Unauthorized != 4 || c.TokensIssued != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestKickOffValidation(t *testing.T) {
	e := newEnv(t, func(c *bulktest.Config) { c.RejectUnknownTypes = true; c.GroupID = "g1" })
	tok := e.token(t)
	base := e.srv.BaseURL()
	for _, tc := range []struct {
		name string
		url  string
		hdr  map[string]string
		code int
	}{
		{"ok", base + "/$export", kickHeaders, 202},
		{"patient level", base + "/Patient/$export", kickHeaders, 202},
		{"group level", base + "/Group/g1/$export", kickHeaders, 202},
		{"unknown group", base + "/Group/g2/$export", kickHeaders, 404},
		{"no prefer", base + "/$export", map[string]string{"Accept": "application/fhir+json"}, 400},
		{"wrong accept", base + "/$export", map[string]string{"Accept": "application/json", "Prefer": "respond-async"}, 400},
		{"bad _since", base + "/$export?_since=yesterday", kickHeaders, 400},
		{"unsupported parameter", base + "/$export?_typeFilter=Patient%3Factive%3Dtrue", kickHeaders, 400},
		{"unsupported output format", base + "/$export?_outputFormat=text/csv", kickHeaders, 400},
		{"unknown type rejected", base + "/$export?_type=Device", kickHeaders, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "GET", tc.url, tok, tc.hdr)
			if r.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", r.StatusCode, tc.code)
			}
			if tc.code == 202 && !strings.HasPrefix(r.Header.Get("Content-Location"), base+"/_status/") {
				t.Errorf("Content-Location %q", r.Header.Get("Content-Location"))
			}
			if tc.code != 202 {
				var oo map[string]any
				if err := json.NewDecoder(r.Body).Decode(&oo); err != nil || oo["resourceType"] != "OperationOutcome" {
					t.Errorf("no OperationOutcome: %v %v", oo, err)
				}
			}
		})
	}
}

type manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	Output              []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"output"`
	Error []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"error"`
}

// run kicks off query at path, polls to completion and returns the
// manifest and the status URL.
func (e *env) run(t *testing.T, tok, path string) (manifest, string) {
	t.Helper()
	r := do(t, "GET", e.srv.BaseURL()+path, tok, kickHeaders)
	if r.StatusCode != 202 {
		t.Fatalf("kick-off %s: %d", path, r.StatusCode)
	}
	status := r.Header.Get("Content-Location")
	for i := 0; ; i++ {
		r := do(t, "GET", status, tok, nil)
		if r.StatusCode == 202 {
			if r.Header.Get("Retry-After") != "2" || r.Header.Get("X-Progress") == "" {
				t.Errorf("202 headers %v", r.Header)
			}
			if i > 5 {
				t.Fatal("never completes")
			}
			continue
		}
		if r.StatusCode != 200 {
			t.Fatalf("status: %d", r.StatusCode)
		}
		var m manifest
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m, status
	}
}

func counts(m manifest) map[string]int {
	out := map[string]int{}
	for _, f := range m.Output {
		out[f.Type] += f.Count
	}
	return out
}

func eq(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestExportFlow(t *testing.T) {
	e := newEnv(t, func(c *bulktest.Config) { c.Gzip = true; c.GroupID = "g"; c.GroupMembers = []string{"p2"} })
	tok := e.token(t)
	for _, tc := range []struct {
		name string
		path string
		want map[string]int
	}{
		{"system", "/$export", map[string]int{"Patient": 2, "Observation": 3, "Organization": 1}},
		{"patient", "/Patient/$export", map[string]int{"Patient": 2, "Observation": 2}},
		{"group", "/Group/g/$export", map[string]int{"Patient": 1, "Observation": 1}},
		{"_type", "/$export?_type=Organization,Patient", map[string]int{"Patient": 2, "Organization": 1}},
		{"_since before all", "/$export?_since=2024-12-31T00:00:00Z", map[string]int{"Patient": 2, "Observation": 3, "Organization": 1}},
		{"_since after p2", "/$export?_since=2025-01-15T00:00:00Z", map[string]int{"Patient": 1, "Observation": 3, "Organization": 1}},
		{"_since after all", "/$export?_since=2025-03-01T12:00:00Z", map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, status := e.run(t, tok, tc.path)
			if got := counts(m); !eq(got, tc.want) {
				t.Errorf("counts %v, want %v", got, tc.want)
			}
			if m.TransactionTime != "2025-03-01T12:00:00Z" || !m.RequiresAccessToken || !strings.HasSuffix(m.Request, tc.path) {
				t.Errorf("manifest %+v", m)
			}
			for _, f := range m.Output {
				if r := do(t, "GET", f.URL, "", nil); r.StatusCode != 401 {
					t.Errorf("file without token: %d", r.StatusCode)
				}
				r := do(t, "GET", f.URL, tok, map[string]string{"Accept-Encoding": "gzip"})
				if r.StatusCode != 200 || r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("Content-Type") != "application/fhir+ndjson" {
					t.Fatalf("file: %d %v", r.StatusCode, r.Header)
				}
				zr, err := gzip.NewReader(r.Body)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				if n := bytes.Count(b, []byte("\n")); n != f.Count || !bytes.Contains(b, []byte(`"resourceType":"`+f.Type+`"`)) {
					t.Errorf("file of %s has %d lines, manifest says %d", f.Type, n, f.Count)
				}
			}
			// DELETE removes the export and its files.
			if r := do(t, "DELETE", status, tok, nil); r.StatusCode != 202 {
				t.Errorf("delete: %d", r.StatusCode)
			}
			if r := do(t, "GET", status, tok, nil); r.StatusCode != 404 {
				t.Errorf("status after delete: %d", r.StatusCode)
			}
			for _, f := range m.Output {
				if r := do(t, "GET", f.URL, tok, nil); r.StatusCode != 404 {
					t.Errorf("file after delete: %d", r.StatusCode)
				}
			}
		})
	}
}

func TestTouchAndErrorFile(t *testing.T) {
	e := newEnv(t, nil)
	e.clock.Advance(time.Hour)
	tok := e.token(t)
	if n, err := e.srv.Touch("Observation", 2); n != 2 || err != nil {
		t.Fatalf("touch: %d %v", n, err)
	}
	if _, err := e.srv.Touch("Device", 1); !errors.Is(err, bulktest.ErrUnknownType) {
		t.Errorf("touch unknown type: %v", err)
	}
	m, _ := e.run(t, tok, "/$export?_since=2025-03-01T12:00:00Z&_type=Observation,Device")
	if got := counts(m); !eq(got, map[string]int{"Observation": 2}) {
		t.Errorf("counts %v", got)
	}
	if len(m.Error) != 1 || m.Error[0].Count != 1 || m.Error[0].Type != "OperationOutcome" {
		t.Fatalf("error entries %+v", m.Error)
	}
	r := do(t, "GET", m.Output[0].URL, tok, nil)
	b, _ := io.ReadAll(r.Body)
	if !bytes.Contains(b, []byte(`"lastUpdated":"2025-03-01T13:00:00Z"`)) {
		t.Errorf("touched resources not stamped: %s", b)
	}
}

func TestFaults(t *testing.T) {
	e := newEnv(t, func(c *bulktest.Config) {
		c.Faults = []bulktest.Fault{{Endpoint: bulktest.EndpointKickOff, Status: 429, RetryAfter: 3 * time.Second}}
	})
	tok := e.token(t)
	r := do(t, "GET", e.srv.BaseURL()+"/$export", tok, kickHeaders)
	if r.StatusCode != 429 || r.Header.Get("Retry-After") != "3" {
		t.Fatalf("first kick-off: %d %v", r.StatusCode, r.Header)
	}
	if r := do(t, "GET", e.srv.BaseURL()+"/$export", tok, kickHeaders); r.StatusCode != 202 {
		t.Fatalf("second kick-off: %d", r.StatusCode)
	}
	e.srv.Inject(bulktest.Fault{Endpoint: bulktest.EndpointToken, Status: 503, Times: 2})
	for range 2 {
		if code, _ := e.tokenRequest(t, form("x")); code != 503 {
			t.Errorf("token during fault: %d", code)
		}
	}
	e.token(t)
	if c := e.srv.Counters(); c.Faults != 3 || c.KickOffs != 1 || c.TokensIssued != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestRetryAfterDate(t *testing.T) {
	e := newEnv(t, func(c *bulktest.Config) { c.RetryAfterDate = true; c.RetryAfter = 90 * time.Second })
	tok := e.token(t)
	r := do(t, "GET", e.srv.BaseURL()+"/$export", tok, kickHeaders)
	r = do(t, "GET", r.Header.Get("Content-Location"), tok, nil)
	if got := r.Header.Get("Retry-After"); got != "Sat, 01 Mar 2025 12:01:30 GMT" {
		t.Errorf("Retry-After %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	for _, tc := range []struct {
		name string
		mod  func(*bulktest.Config)
		ok   bool
	}{
		{"valid", func(*bulktest.Config) {}, true},
		{"no dir", func(c *bulktest.Config) { c.Dir = "" }, false},
		{"P-256 client", func(c *bulktest.Config) {
			c.Clients = []bulktest.RegisteredClient{{ID: "a", KeyID: "k", PublicKey: p256.Public()}}
		}, false},
		{"client without kid", func(c *bulktest.Config) {
			c.Clients = []bulktest.RegisteredClient{{ID: "a", PublicKey: ecKey().Public()}}
		}, false},
		{"zero token lifetime", func(c *bulktest.Config) { c.TokenLifetime = 0 }, false},
		{"fault with 200", func(c *bulktest.Config) { c.Faults = []bulktest.Fault{{Status: 200}} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := bulktest.DefaultConfig()
			c.Dir = t.TempDir()
			c.Clients = []bulktest.RegisteredClient{{ID: "a", KeyID: "k", PublicKey: ecKey().Public()}}
			tc.mod(&c)
			err := c.Validate()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, bulktest.ErrInvalidConfig)) {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestClock(t *testing.T) {
	c := bulktest.NewClock(start)
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.Sleep(ctx, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Minute)
	cancel()
	if err := c.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("sleep after cancel: %v", err)
	}
	if got := c.Now(); !got.Equal(start.Add(time.Minute + 3*time.Second)) {
		t.Errorf("now %v", got)
	}
	if s := c.Sleeps(); len(s) != 1 || s[0] != 3*time.Second {
		t.Errorf("sleeps %v", s)
	}
}
