package coordinator

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// bootstrapTokenFile makes the cluster's bootstrap admin token ahead of
// the cluster, as an operator would, so every node is configured with it
// and tests know it whichever node leads first.
func (tc *testCluster) bootstrapTokenFile(t testing.TB) string {
	t.Helper()
	tok, err := NewAdminToken()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bootstrap-admin.token")
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tc.token = tok
	return path
}

// clientTLS trusts the cluster's CA, as an admin workstation does.
func (tc *testCluster) clientTLS(t testing.TB) *tls.Config {
	t.Helper()
	pool, err := pki.LoadPool(filepath.Join(tc.ca.dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// adminHTTP is an HTTPS client for the admin API that does not follow
// redirects.
func (tc *testCluster) adminHTTP(t testing.TB) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc.clientTLS(t)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// api sends one admin request with the bootstrap token.
func (tc *testCluster) api(t testing.TB, method, addr, path string, body any, out any) (int, string) {
	t.Helper()
	return tc.apiAs(t, tc.token, method, addr, path, body, out)
}

// apiAs sends one admin request with token ("" sends none) and decodes a
// successful JSON answer into out (if not nil); it returns the status code
// and the raw body. Like the CLI, it sends the request again (for up to
// 5 s) while the answer is a 503 saying the leadership changed, which a
// loaded machine's short test election timeouts make happen.
func (tc *testCluster) apiAs(t testing.TB, token, method, addr, path string, body any, out any) (int, string) {
	t.Helper()
	for try := 0; ; try++ {
		code, raw := tc.apiOnce(t, token, method, addr, path, body, out)
		if code != http.StatusServiceUnavailable || !strings.Contains(raw, "retry") || try == 50 {
			return code, raw
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiOnce is apiAs without the retries.
func (tc *testCluster) apiOnce(t testing.TB, token, method, addr, path string, body any, out any) (int, string) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, "https://"+addr+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tc.adminHTTP(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s %s: error %d is not a problem document (%s)", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, string(raw)
}

// bodyReader encodes a request body: nil, a raw string, or JSON.
func bodyReader(t testing.TB, body any) io.Reader {
	t.Helper()
	switch b := body.(type) {
	case nil:
		return nil
	case string:
		return strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.NewReader(j)
	}
}
