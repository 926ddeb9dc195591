package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// canary returns a recognisable random secret.
func canary(kind string) string {
	b := make([]byte, 12)
	rand.Read(b)
	return "CANARY" + kind + hex.EncodeToString(b)
}

// TestSecretsStayOutOfEverything runs a coordinator and an agent as real
// processes at debug log level with canary secrets (the admin token, the
// agent's MQTT password and local inference token), runs a job, sends
// requests with wrong canary tokens, and then makes both processes dump
// their goroutines (SIGQUIT, as a crash would): no secret, right or
// wrong, appears in any log line, error answer, metrics, status, audit
// entry or the crash output. It also shows that the agent refuses a
// config file others may read that holds a password, and says why
// without the password.
func TestSecretsStayOutOfEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	job := coordinator.JobSpec{ID: "sec-job", Rounds: 2, MinSites: 1, RoundTimeout: coordinator.Duration(time.Minute)}
	c := newCluster(t, 1, 1, job)
	// Debug logs: the most a process ever writes.
	cfg, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.cfg, []byte(strings.Replace(string(cfg), `"log_level":"info"`, `"log_level":"debug"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	tokBytes, err := os.ReadFile(c.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"admin token":               strings.TrimSpace(string(tokBytes)),
		"mqtt password":             canary("mqtt"),
		"local inference token":     canary("predict"),
		"wrong admin token sent":    "cohort_" + canary("wrongadmin"),
		"wrong inference token":     canary("wrongpredict"),
		"password in an open file":  canary("openfile"),
		"enrollment token in a URL": canary("urltoken"),
	}
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	site := c.sites[0].Name
	predictAddr, metricsAddr, brokerAddr := freeAddr(t, "tcp"), freeAddr(t, "tcp"), freeAddr(t, "tcp")
	agentCfg, _ := json.Marshal(map[string]any{
		"mqtt":               map[string]any{"embedded": brokerAddr, "username": "gateway", "password_file": write("mqtt.pw", secrets["mqtt password"], 0o600)},
		"predict_addr":       predictAddr,
		"predict_token_file": write("predict.token", secrets["local inference token"], 0o600),
		"metrics_addr":       metricsAddr,
	})
	args := []string{"agent", "--config", write("agent.json", string(agentCfg), 0o600), "--log-level", "debug",
		"--data-dir", filepath.Join(c.dir, "agent-"+site), "--fhir-dir", filepath.Join(c.dir, "data", site),
		"--ca", filepath.Join(c.pki, "ca.crt"), "--cert", filepath.Join(c.pki, site+".crt"), "--key", filepath.Join(c.pki, site+".key"),
		"--coordinator", c.nodes[0].agent}

	// A config file others may read that holds a password is refused.
	openCfg, _ := json.Marshal(map[string]any{"mqtt": map[string]any{"username": "gateway", "password": secrets["password in an open file"]}})
	openArgs := append([]string{}, args...)
	openArgs[2] = write("open.json", string(openCfg), 0o644)
	out, err := exec.Command(c.bin, openArgs...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "chmod 600") || !strings.Contains(string(out), "password_file") {
		t.Fatalf("an open config file with a password: %v\n%s", err, out)
	}
	var seen []string // every byte a secret must not be in
	seen = append(seen, string(out))

	c.startCoordinator(0)
	agentProc := start(t, "agent-"+site, c.bin, args...)
	if js := c.waitDoneEverywhere(2*time.Minute, job.ID); js.State != coordinator.JobDone {
		t.Fatalf("job %s ended %s", job.ID, js.State)
	}

	get := func(method, url, token string) string {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(`{"features":[1,2,3]}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		client := http.DefaultClient
		if strings.HasPrefix(url, "https://") {
			client = adminHTTPClient(t, filepath.Join(c.pki, "ca.crt"))
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		// The answer only: the request itself holds the secrets sent.
		return fmt.Sprintf("%d %s %v", resp.StatusCode, b, resp.Header)
	}
	admin := "https://" + c.nodes[0].admin
	for range 3 {
		seen = append(seen,
			get("GET", admin+"/v1/jobs", secrets["wrong admin token sent"]),
			get("POST", "http://"+predictAddr+"/v1/predict", secrets["wrong inference token"]),
			get("GET", admin+"/v1/enroll?token="+secrets["enrollment token in a URL"], ""),
		)
	}
	seen = append(seen,
		get("GET", admin+"/v1/audit/entries?limit=1000", secrets["admin token"]),
		get("GET", admin+"/v1/tokens", secrets["admin token"]),
		get("GET", admin+"/v1/cluster", secrets["admin token"]),
		get("GET", "http://"+c.nodes[0].status+"/metrics", ""),
		get("GET", "http://"+c.nodes[0].status+"/v1/status", ""),
		get("GET", "http://"+metricsAddr+"/metrics", ""),
		get("POST", "http://"+predictAddr+"/v1/predict", secrets["local inference token"]),
	)
	if strings.HasPrefix(seen[len(seen)-1], "401 ") {
		t.Fatalf("the right inference token was not accepted: %s", seen[len(seen)-1])
	}

	// A crash's output: SIGQUIT makes the Go runtime dump every
	// goroutine's stack and exit.
	for _, p := range []*proc{agentProc, c.nodes[0].proc} {
		p.signal(t, syscall.SIGQUIT)
		if err := p.wait(t, 30*time.Second); err == nil {
			t.Fatalf("%s exited cleanly after SIGQUIT", p.name)
		}
		if !strings.Contains(p.out.String(), "goroutine ") {
			t.Fatalf("%s: no goroutine dump in its output", p.name)
		}
		seen = append(seen, p.out.String())
	}
	for name, s := range secrets {
		for _, text := range seen {
			if i := strings.Index(text, s); i >= 0 {
				t.Errorf("the %s appears in output: …%s…", name, text[max(0, i-200):min(len(text), i+len(s)+50)])
			}
		}
		// The admin token's secret part alone, too.
		if name == "admin token" {
			if _, sec, ok := strings.Cut(s, "_"); ok && len(sec) > 8 {
				for _, text := range seen {
					if strings.Contains(text, sec[len(sec)-16:]) {
						t.Errorf("part of the admin token appears in output")
					}
				}
			}
		}
	}
}

// adminHTTPClient trusts the federation CA in caFile.
func adminHTTPClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pool, err := pki.LoadPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}
