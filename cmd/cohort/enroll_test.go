package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// enrollAPI calls a coordinator's admin API over HTTPS, trusting only the
// federation CA, with the bootstrap admin token (or none).
type enrollAPI struct {
	t      *testing.T
	base   string
	token  string
	client *http.Client
}

func newEnrollAPI(t *testing.T, addr, caFile, token string, cert *tls.Certificate) *enrollAPI {
	t.Helper()
	pool, err := pki.LoadPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return &enrollAPI{t: t, base: "https://" + addr, token: token,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}}}
}

// do sends a JSON request and decodes a 2xx answer into out. It returns
// the status (0 when the request failed) and the body or the error.
func (c *enrollAPI) do(method, path string, body, out any) (int, string) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 && out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

// coordinatorMetric reads one unlabelled series from a coordinator's
// /metrics (-1 when absent or unreachable).
func coordinatorMetric(statusAddr, name string) float64 {
	resp, err := statusClient.Get("http://" + statusAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// siteSerial is the serial of the gateway's certificate on disk, or ""
// when the key and certificate do not match (a renewal caught between
// its two renames: the caller polls again).
func siteSerial(f pki.Files) string {
	c, err := pki.LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		return ""
	}
	return c.Leaf.SerialNumber.Text(16)
}

// TestEnrollRenewRevokeProcesses: a coordinator process issues site
// certificates (30 s lifetime); the operator creates a site and a
// one-time token through the admin API; `cohort agent enroll` (its own
// process) gets the gateway a certificate; `cohort agent` connects with
// it and renews it, without a restart, before it expires; the token
// cannot be used again; revoking the site closes the agent's connection,
// the agent says it is revoked (status, /readyz, one error log) and waits
// instead of reconnecting, and the coordinator counts the refusals.
func TestEnrollRenewRevokeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as separate processes; about 30 s")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	caFile := filepath.Join(pkiDir, "ca.crt")
	runOK(t, bin, "ca", "init", "--dir", pkiDir)
	runOK(t, bin, "ca", "issue", "--dir", pkiDir, "--role", "coordinator", "--id", "c1", "--host", "127.0.0.1")
	tokenFile := filepath.Join(dir, "bootstrap-admin.token")
	runOK(t, bin, "admin", "token", "new", "-o", tokenFile)
	adminToken, err := coordinator.ReadTokenFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}

	const ttl = 30 * time.Second
	cfgPath := filepath.Join(dir, "coordinator.json")
	cfg, _ := json.Marshal(map[string]any{
		"enroll":    map[string]any{"ca_dir": pkiDir, "cert_ttl": ttl.String()},
		"auth":      map[string]any{"rate_per_second": 1000, "burst": 1000},
		"log_level": "info",
		// A fast election for a test on one machine.
		"heartbeat_timeout": "300ms", "election_timeout": "300ms", "leader_lease_timeout": "200ms",
	})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	raftAddr, agentAddr, statusAddr, adminAddr := freeAddr(t, "tcp"), freeAddr(t, "udp"), freeAddr(t, "tcp"), freeAddr(t, "tcp")
	coord := start(t, "c1", bin, "coordinator", "--config", cfgPath, "--id", "c1", "--data-dir", filepath.Join(dir, "c1"),
		"--raft-addr", raftAddr, "--agent-addr", agentAddr, "--status-addr", statusAddr, "--admin-addr", adminAddr,
		"--bootstrap-token-file", tokenFile, "--ca", caFile,
		"--cert", filepath.Join(pkiDir, "c1.crt"), "--key", filepath.Join(pkiDir, "c1.key"),
		"--bootstrap", "--peer", "c1="+raftAddr)
	api := newEnrollAPI(t, adminAddr, caFile, adminToken, nil)
	const site = "st-enroll"
	waitFor(t, 20*time.Second, "the admin API to create the site", func() (bool, string) {
		code, body := api.do("POST", "/v1/sites", map[string]string{"id": site}, nil)
		return code == http.StatusCreated, fmt.Sprint(code, " ", body)
	})
	var et coordinator.EnrollTokenView
	if code, body := api.do("POST", "/v1/sites/"+site+"/enrollment-tokens", nil, &et); code != http.StatusCreated || et.Token == "" {
		t.Fatalf("enrollment token: %d %s", code, body)
	}
	enrollToken := filepath.Join(dir, "enroll.token")
	if err := os.WriteFile(enrollToken, []byte(et.Token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	server := "https://" + adminAddr
	dataDir := filepath.Join(dir, "gateway")
	enroll := func(dataDir string) (string, error) {
		out, err := exec.Command(bin, "agent", "enroll", "--server", server, "--ca", caFile, "--token-file", enrollToken, "--data-dir", dataDir).CombinedOutput()
		return string(out), err
	}

	// A token file others can read is refused before anything is sent.
	if out, err := enroll(dataDir); err == nil || !strings.Contains(out, "readable by its owner only") {
		t.Fatalf("enroll with a 0644 token file: %v\n%s", err, out)
	}
	os.Chmod(enrollToken, 0o600)
	enrollStart := time.Now()
	out, err := enroll(dataDir)
	if err != nil {
		t.Fatalf("cohort agent enroll: %v\n%s", err, out)
	}
	enrollEnd := time.Now()
	files := agent.DefaultTLSFiles(dataDir)
	for _, want := range []string{`enrolled site "st-enroll"`, files.Key, `"renew": {"server": "` + server + `"}`} {
		if !strings.Contains(out, want) {
			t.Errorf("enroll output lacks %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(files.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key %s: %v %v, want mode 0600", files.Key, fi.Mode().Perm(), err)
	}
	firstSerial := siteSerial(files)
	var sv coordinator.SiteView
	if code, body := api.do("GET", "/v1/sites/"+site, nil, &sv); code != http.StatusOK || sv.CertExpires.IsZero() {
		t.Fatalf("site after enrollment: %d %s", code, body)
	}
	firstExpiry := sv.CertExpires
	// Issued while the enroll command ran (however long a loaded machine
	// made that), for ttl; times in the API are whole seconds.
	if firstExpiry.Before(enrollStart.Add(ttl-time.Second)) || firstExpiry.After(enrollEnd.Add(ttl+time.Second)) {
		t.Errorf("the certificate expires at %s; issued between %s and %s for %s, it should expire between %s and %s",
			firstExpiry, enrollStart, enrollEnd, ttl, enrollStart.Add(ttl), enrollEnd.Add(ttl))
	}

	// The gateway's agent: only the data directory and the renewal server.
	metricsAddr := freeAddr(t, "tcp")
	gw := start(t, "agent", bin, "agent", "--data-dir", dataDir, "--coordinator", agentAddr,
		"--renew-server", server, "--metrics-addr", metricsAddr)
	waitFor(t, 15*time.Second, "the agent to connect", func() (bool, string) {
		var sv coordinator.SiteView
		code, body := api.do("GET", "/v1/sites/"+site, nil, &sv)
		return code == http.StatusOK && sv.Online, body
	})

	// Renewal, at two thirds of the certificate's remaining life: the
	// coordinator records a later expiry and the certificate on disk
	// changes, while the agent keeps running.
	waitFor(t, 35*time.Second, "the agent to renew its certificate", func() (bool, string) {
		var sv coordinator.SiteView
		api.do("GET", "/v1/sites/"+site, nil, &sv)
		serial := siteSerial(files)
		st, _ := agent.ReadStatus(dataDir)
		renewals := 0
		if st != nil {
			renewals = st.CertRenewals
		}
		return sv.CertExpires.After(firstExpiry) && serial != "" && serial != firstSerial && renewals >= 1,
			fmt.Sprintf("cert_expires %s (first %s), serial %s (first %s), renewals %d", sv.CertExpires, firstExpiry, serial, firstSerial, renewals)
	})
	if !gw.running() {
		t.Fatal("the agent exited")
	}
	if st, err := agent.ReadStatus(dataDir); err != nil || st.CertRenewalFailures != 0 || !st.CertExpires.After(firstExpiry) {
		t.Errorf("agent status after renewal: %+v %v", st, err)
	}
	if fi, err := os.Stat(files.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("renewed key mode %v %v, want 0600", fi.Mode().Perm(), err)
	}

	// The enrollment token works once.
	if out, err := enroll(filepath.Join(dir, "another-gateway")); err == nil || !strings.Contains(out, "token was refused") || !strings.Contains(out, "401") {
		t.Errorf("enroll again with the used token: %v\n%s", err, out)
	}

	// Revocation: the connection is closed at once and the agent says so.
	if code, body := api.do("POST", "/v1/sites/"+site+"/revoke", nil, &sv); code != http.StatusOK || sv.Revoked.IsZero() {
		t.Fatalf("revoke: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the agent to report the revocation", func() (bool, string) {
		st, err := agent.ReadStatus(dataDir)
		if err != nil {
			return false, err.Error()
		}
		return st.Session == agent.SessionRevoked, "session " + st.Session
	})
	if !strings.Contains(coord.out.String(), "closed the connections of a revoked site") {
		t.Error("the coordinator did not close the revoked site's connection")
	}
	resp, err := statusClient.Get("http://" + metricsAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "revoked") {
		t.Errorf("agent /readyz: %d %s, want 503 revoked", resp.StatusCode, body)
	}
	statusOut, err := exec.Command(bin, "agent", "status", "--data-dir", dataDir).CombinedOutput()
	if err != nil || !strings.Contains(string(statusOut), "REVOKED") || !strings.Contains(string(statusOut), "site certificate expires") {
		t.Errorf("cohort agent status: %v\n%s", err, statusOut)
	}

	// Its certificate no longer renews, and the coordinator counts that.
	pair, err := pki.LoadKeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	siteAPI := newEnrollAPI(t, adminAddr, caFile, "", &pair)
	if code, body := siteAPI.do("POST", "/v1/renew", map[string]string{"csr": "x"}, nil); code != http.StatusForbidden {
		t.Errorf("renewal of a revoked site: %d %s, want 403", code, body)
	}
	waitFor(t, 5*time.Second, "the coordinator to count the refusal", func() (bool, string) {
		v := coordinatorMetric(statusAddr, "cohort_coordinator_sites_revoked_refused_total")
		return v >= 1, fmt.Sprint("sites_revoked_refused ", v)
	})

	// No reconnect loop: the agent waits (an hour) and stays up.
	holdsFor(t, 2*time.Second, "the agent waiting quietly", func() (bool, string) {
		return gw.running(), "exited"
	})
	logs := gw.out.String()
	if n := strings.Count(logs, "has been revoked by the federation operator"); n != 1 {
		t.Errorf("the agent logged the revocation %d times, want once:\n%s", n, logs)
	}
	if n := strings.Count(logs, "connected to coordinator"); n != 1 {
		t.Errorf("the agent connected %d times, want once (no reconnect after the revocation):\n%s", n, logs)
	}
	gw.stop(t)
	coord.stop(t)
}

// TestAgentEnrollFlags: what `cohort agent enroll` refuses before it
// sends anything, and its help.
func TestAgentEnrollFlags(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.token")
	os.WriteFile(open, []byte("cohortenroll_x\n"), 0o644)
	private := filepath.Join(dir, "private.token")
	os.WriteFile(private, []byte("\n"), 0o600)
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, []byte("not a certificate"), 0o644)
	base := []string{"agent", "enroll", "--server", "https://127.0.0.1:1", "--data-dir", filepath.Join(dir, "gw")}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no server", []string{"agent", "enroll", "--ca", ca, "--token", "t", "--data-dir", dir}, "--server is required"},
		{"no CA", append(base[:len(base):len(base)], "--token", "t"), "--ca is required"},
		{"no token", append(base[:len(base):len(base)], "--ca", ca), "--token-file (or --token) is required"},
		{"both tokens", append(base[:len(base):len(base)], "--ca", ca, "--token", "t", "--token-file", private), "not both"},
		{"open token file", append(base[:len(base):len(base)], "--ca", ca, "--token-file", open), "readable by its owner only"},
		{"empty token file", append(base[:len(base):len(base)], "--ca", ca, "--token-file", private), "is empty"},
		{"plain http", []string{"agent", "enroll", "--server", "http://127.0.0.1:1", "--ca", ca, "--token", "t", "--data-dir", dir}, "HTTPS only"},
		{"bad CA file", append(base[:len(base):len(base)], "--ca", ca, "--token", "t"), "no certificate found"},
		{"no data dir", []string{"agent", "enroll", "--server", "https://127.0.0.1:1", "--ca", ca, "--token", "t"}, "--data-dir (or --config with data_dir) is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
	var help bytes.Buffer
	if err := run(t.Context(), []string{"agent", "enroll", "--help"}, io.Discard, &help); err == nil || !strings.Contains(help.String(), "one-time enrollment token") || !strings.Contains(help.String(), "--force") {
		t.Fatalf("help: %v\n%s", err, help.String())
	}
}
