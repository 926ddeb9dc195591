package attack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/quic-go/quic-go"
)

// The harness: the cohort binary (built once), real processes on loopback,
// the shared federation every coordinator attack targets (one coordinator,
// its admin token and addresses), and the attacker's tools: site
// certificates, raw QUIC clients, and readers of the coordinator's metrics
// and audit log.

// built is the cohort binary, compiled at most once per test binary run
// and removed by TestMain.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// shared is the federation the coordinator attacks share; TestMain stops
// it.
var shared struct {
	once sync.Once
	fed  *federation
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if f := shared.fed; f != nil {
		if f.coord != nil {
			f.coord.kill()
			if code != 0 || os.Getenv("COHORT_TEST_VERBOSE") != "" {
				fmt.Fprintf(os.Stderr, "--- output of the shared coordinator ---\n%s\n", f.coord.out.String())
			}
		}
		os.RemoveAll(f.dir)
	}
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildBinary compiles cohort once per test binary run and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("attacks the cohort binary's own processes (built without the race detector): runs in the full suite, not under -short")
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "cohort-attack-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "cohort")
		cmd := exec.Command("go", "build", "-o", built.bin, "github.com/cohort-fl/cohort/cmd/cohort")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// givenPorts are the ports freeAddr returned, TCP and UDP alike.
var givenPorts sync.Map

// freeAddr returns a loopback address whose port was free for network
// ("tcp" or "udp") and was never returned before in this test binary.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	addr, err := pickAddr(network)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func pickAddr(network string) (string, error) {
	for {
		var addr string
		if network == "tcp" {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", err
			}
			addr = l.Addr().String()
			l.Close()
		} else {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return "", err
			}
			addr = c.LocalAddr().String()
			c.Close()
		}
		_, port, _ := net.SplitHostPort(addr)
		if _, dup := givenPorts.LoadOrStore(port, true); !dup {
			return addr, nil
		}
	}
}

// proc is one running cohort process, its output kept for diagnosis.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *syncBuffer
	exitedC chan struct{} // closed when the process has exited
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc runs bin with args; the caller stops it (kill).
func startProc(name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: new(syncBuffer), exitedC: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exitedC)
	}()
	return p, nil
}

// start runs bin with args for one test: the process is killed when the
// test ends, and its output logged if the test failed.
func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p, err := startProc(name, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() || os.Getenv("COHORT_TEST_VERBOSE") != "" {
			t.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.exitedC:
		return false
	default:
		return true
	}
}

func (p *proc) kill() {
	if p.running() {
		p.cmd.Process.Kill()
	}
	<-p.exitedC
}

// checkAlive fails the test if the process exited or panicked.
func (p *proc) checkAlive(t *testing.T) {
	t.Helper()
	if !p.running() {
		t.Fatalf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, p.out.String())
	}
	if out := p.out.String(); strings.Contains(out, "panic:") || strings.Contains(out, "fatal error:") {
		t.Fatalf("%s panicked:\n%s", p.name, out)
	}
}

func runOK(bin string, args ...string) error {
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("cohort %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// waitFor polls cond every 50 ms until it holds, and fails the test with
// what and cond's last detail if timeout passes first.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// federation is a coordinator process under attack, with the PKI it was
// given and the bootstrap admin token.
type federation struct {
	bin     string
	dir     string
	pki     string // the CA directory (ca.crt, ca.key)
	dataDir string
	token   string
	coord   *proc
	// The coordinator's addresses: agents (QUIC), status (HTTP:
	// /healthz, /metrics, /v1/status) and admin (HTTPS).
	agentAddr, statusAddr, adminAddr string
	pool                             *x509.CertPool
	ca                               *pki.CA
	// admin is the client of the suite's own admin calls.
	admin *http.Client
}

// plainHTTP bounds every request to a status or metrics address.
var plainHTTP = &http.Client{Timeout: 5 * time.Second}

// enrolledSites are the sites the shared coordinator enrolls from its
// config: two honest ones and the attacker's.
var enrolledSites = []string{"honest-a", "honest-b", "mallory"}

// fed returns the shared federation, starting it on first use.
func fed(t *testing.T) *federation {
	t.Helper()
	if testing.Short() {
		t.Skip("attacks the cohort binary's own processes (built without the race detector): runs in the full suite, not under -short")
	}
	shared.once.Do(func() {
		shared.fed, shared.err = startFederation(buildBinary(t))
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	f := shared.fed
	f.coord.checkAlive(t)
	return f
}

// startFederation writes a CA, a coordinator certificate, the bootstrap
// admin token and a config, and starts one coordinator that bootstraps a
// cluster of itself. Its failed-authentication limits are the defaults
// (what token guessing meets); the per-token limit is raised so the
// suite's own admin calls, with one token, are never throttled.
func startFederation(bin string) (*federation, error) {
	dir, err := os.MkdirTemp("", "cohort-attack-fed-")
	if err != nil {
		return nil, err
	}
	f := &federation{bin: bin, dir: dir, pki: filepath.Join(dir, "pki"), dataDir: filepath.Join(dir, "c1")}
	tokenFile := filepath.Join(dir, "bootstrap-admin.token")
	if err := runOK(bin, "ca", "init", "--dir", f.pki); err != nil {
		return f, err
	}
	if err := runOK(bin, "ca", "issue", "--dir", f.pki, "--role", "coordinator", "--id", "c1", "--host", "127.0.0.1"); err != nil {
		return f, err
	}
	if err := runOK(bin, "admin", "token", "new", "-o", tokenFile); err != nil {
		return f, err
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return f, err
	}
	f.token = strings.TrimSpace(string(tok))
	if f.pool, err = pki.LoadPool(filepath.Join(f.pki, "ca.crt")); err != nil {
		return f, err
	}
	if f.ca, err = pki.LoadCA(f.pki); err != nil {
		return f, err
	}
	f.admin = f.adminClient("")
	cfg, err := json.Marshal(map[string]any{
		"sites":     enrolledSites,
		"log_level": "info",
		"auth":      map[string]any{"rate_per_second": 1000, "burst": 2000},
	})
	if err != nil {
		return f, err
	}
	cfgFile := filepath.Join(dir, "coordinator.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		return f, err
	}
	var addrs [4]string
	for i, network := range []string{"tcp", "udp", "tcp", "tcp"} {
		if addrs[i], err = pickAddr(network); err != nil {
			return f, err
		}
	}
	raftAddr := addrs[0]
	f.agentAddr, f.statusAddr, f.adminAddr = addrs[1], addrs[2], addrs[3]
	f.coord, err = startProc("coordinator c1", bin, "coordinator", "--config", cfgFile, "--id", "c1",
		"--data-dir", f.dataDir, "--raft-addr", raftAddr, "--agent-addr", f.agentAddr,
		"--status-addr", f.statusAddr, "--admin-addr", f.adminAddr, "--bootstrap-token-file", tokenFile,
		"--ca", filepath.Join(f.pki, "ca.crt"), "--cert", filepath.Join(f.pki, "c1.crt"), "--key", filepath.Join(f.pki, "c1.key"),
		"--bootstrap", "--peer", "c1="+raftAddr)
	if err != nil {
		return f, err
	}
	// Ready: the admin API answers with the bootstrap token (the leader
	// is set up) and the configured sites are enrolled.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var sites struct {
			Sites []struct{ ID string } `json:"sites"`
		}
		status, _, err := f.do(http.MethodGet, "/v1/sites", nil, &sites)
		if err == nil && status == http.StatusOK && len(sites.Sites) >= len(enrolledSites) {
			return f, nil
		}
		if !f.coord.running() || time.Now().After(deadline) {
			f.coord.kill()
			return f, fmt.Errorf("the coordinator did not get ready (last: %d %v):\n%s", status, err, f.coord.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// adminClient reaches the admin API, trusting the federation CA. Requests
// may come from another loopback address than 127.0.0.1 (local), so that
// limits kept per client address do not mix between attacks.
func (f *federation) adminClient(local string) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	if local != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
		tr.DialContext = d.DialContext
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// do sends an admin request with the bootstrap token; a non-nil out is
// decoded from a 2xx answer.
func (f *federation) do(method, path string, body any, out any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+f.adminAddr+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.admin.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, b, err
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, b, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, b, nil
}

// api is do for a test: a transport error fails it.
func (f *federation) api(t *testing.T, method, path string, body any, out any) (int, string) {
	t.Helper()
	status, b, err := f.do(method, path, body, out)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, string(b)
}

// healthy fails the test unless the coordinator runs, has not panicked,
// and answers /healthz.
func (f *federation) healthy(t *testing.T) {
	t.Helper()
	f.coord.checkAlive(t)
	resp, err := plainHTTP.Get("http://" + f.statusAddr + "/healthz")
	if err != nil {
		t.Fatalf("coordinator /healthz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("coordinator /healthz answered %d %q", resp.StatusCode, b)
	}
}

// metric is the value of a Prometheus counter or gauge at addr's /metrics
// (summed over its series whose labels include the given pairs); 0 when
// a labelled family has no such series yet. A family without labels must
// be there.
func metric(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := plainHTTP.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", addr, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	fam, ok := fams[name]
	if !ok && len(labels) == 0 {
		t.Fatalf("%s exports no metric %s", addr, name)
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum
}

// counter follows one coordinator counter across an attack.
type counter struct {
	f      *federation
	name   string
	before float64
}

// count starts following cohort_coordinator_<name>.
func (f *federation) count(t *testing.T, name string) *counter {
	t.Helper()
	full := "cohort_coordinator_" + name
	return &counter{f: f, name: full, before: metric(t, f.statusAddr, full)}
}

// grew waits up to 5 s until the counter has grown by at least n since
// count.
func (c *counter) grew(t *testing.T, n float64) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%s to grow by %v", c.name, n), func() (bool, string) {
		v := metric(t, c.f.statusAddr, c.name)
		return v >= c.before+n, fmt.Sprintf("%v (was %v)", v, c.before)
	})
}

// auditSize is the audit log's current size.
func (f *federation) auditSize(t *testing.T) uint64 {
	t.Helper()
	var out coordinator.AuditEntries
	if status, body := f.api(t, http.MethodGet, "/v1/audit/entries?limit=0", nil, &out); status != http.StatusOK {
		t.Fatalf("audit size: %d %s", status, body)
	}
	return out.Size
}

// auditSince returns the audit leaves from index from on.
func (f *federation) auditSince(t *testing.T, from uint64) []coordinator.AuditEntry {
	t.Helper()
	var all []coordinator.AuditEntry
	for {
		var page coordinator.AuditEntries
		path := fmt.Sprintf("/v1/audit/entries?start=%d&limit=1000", from)
		if status, body := f.api(t, http.MethodGet, path, nil, &page); status != http.StatusOK {
			t.Fatalf("audit entries: %d %s", status, body)
		}
		for _, raw := range page.Entries {
			var e coordinator.AuditEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatalf("audit entry %s: %v", raw, err)
			}
			all = append(all, e)
		}
		from += uint64(len(page.Entries))
		if len(page.Entries) == 0 || from >= page.Size {
			return all
		}
	}
}

// audited waits up to 5 s for n leaves after from that match, and returns
// them.
func (f *federation) audited(t *testing.T, from uint64, n int, what string, match func(coordinator.AuditEntry) bool) []coordinator.AuditEntry {
	t.Helper()
	var got []coordinator.AuditEntry
	waitFor(t, 5*time.Second, fmt.Sprintf("%d audit leaves for %s", n, what), func() (bool, string) {
		got = got[:0]
		for _, e := range f.auditSince(t, from) {
			if match(e) {
				got = append(got, e)
			}
		}
		return len(got) >= n, fmt.Sprintf("%d found", len(got))
	})
	return got
}

// status is the coordinator's /v1/status.
func (f *federation) status(t *testing.T) coordinator.Status {
	t.Helper()
	resp, err := plainHTTP.Get("http://" + f.statusAddr + "/v1/status")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	defer resp.Body.Close()
	var st coordinator.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// siteCert issues a certificate of the federation CA for role and id,
// valid from notBefore-ish (the CA backdates) for validity.
func (f *federation) siteCert(t *testing.T, role, id string, now time.Time, validity time.Duration) tls.Certificate {
	t.Helper()
	var hosts []string
	if role == pki.RoleCoordinator {
		hosts = []string{"127.0.0.1"}
	}
	certPEM, keyPEM, err := f.ca.Issue(pki.IssueRequest{Role: role, ID: id, Hosts: hosts, Validity: validity}, now)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair(t, certPEM, keyPEM)
}

// keyPair parses a PEM certificate and key.
func keyPair(t *testing.T, certPEM, keyPEM []byte) tls.Certificate {
	t.Helper()
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// auditEntry is one leaf of the coordinator's audit log.
type auditEntry = coordinator.AuditEntry

// site is a valid, current site certificate of the federation.
func (f *federation) site(t *testing.T, id string) tls.Certificate {
	t.Helper()
	return f.siteCert(t, pki.RoleSite, id, time.Now(), time.Hour)
}

// client is the attacker's (or an honest site's) raw QUIC connection to a
// coordinator: its control stream, and blob streams on demand.
type client struct {
	conn *quic.Conn
	ctrl *quic.Stream
}

// clientTLS is what an agent dials with: cert, the federation CA as root,
// the coordinator's role required, and alpn.
func clientTLS(pool *x509.CertPool, cert tls.Certificate, alpn string) *tls.Config {
	c := pki.ClientTLS(pool, cert, alpn, "127.0.0.1", pki.RoleCoordinator)
	if alpn != protocol.ALPN {
		// pki.ClientTLS checks the negotiated protocol; a client that
		// asks for another one checks nothing of the kind.
		c.VerifyConnection = nil
	}
	return c
}

// dial connects to addr with tlsConf and opens the control stream. In TLS
// 1.3 a refusal of the client's certificate shows only on first use.
func dial(t *testing.T, addr string, tlsConf *tls.Config, qc *quic.Config) (*client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if qc == nil {
		qc = &quic.Config{HandshakeIdleTimeout: 3 * time.Second, MaxIdleTimeout: 10 * time.Second}
	}
	conn, err := quic.DialAddr(ctx, addr, tlsConf, qc)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &client{conn: conn, ctrl: ctrl}, nil
}

// connect dials the federation as site with a valid certificate and says
// hello; the test fails unless it is welcomed.
func (f *federation) connect(t *testing.T, site string) *client {
	t.Helper()
	c, err := dial(t, f.agentAddr, clientTLS(f.pool, f.site(t, site), protocol.ALPN), nil)
	if err != nil {
		t.Fatalf("dial as %s: %v", site, err)
	}
	resp, err := c.call(helloEnv(protocol.MinVersion, protocol.Version))
	if err != nil || resp.GetWelcome().GetSiteId() != site {
		t.Fatalf("hello as %s: %v %v", site, resp, err)
	}
	return c
}

func helloEnv(minV, maxV uint32) *pb.Envelope {
	return &pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{MinProtocolVersion: minV, ProtocolVersion: maxV, AgentVersion: "attack"}}}
}

// call sends one frame on the control stream and reads the answer.
func (c *client) call(env *pb.Envelope) (*pb.Envelope, error) {
	c.ctrl.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.ctrl.SetDeadline(time.Time{})
	if err := protocol.WriteFrame(c.ctrl, env); err != nil {
		return nil, err
	}
	return protocol.ReadFrame(c.ctrl, 0)
}

// stream opens a stream, writes raw bytes (and, with fin, ends its side)
// and reads one answer frame.
func (c *client) stream(raw []byte, fin bool) (*pb.Envelope, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	defer s.CancelRead(0)
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(raw); err != nil {
		return nil, err
	}
	if fin {
		s.Close()
	}
	return protocol.ReadFrame(s, 0)
}

// upload sends an update header and body on a new stream and reads the
// answer.
func (c *client) upload(hdr *pb.UpdateUpload, body []byte) (*pb.Envelope, error) {
	var buf bytes.Buffer
	if err := protocol.WriteFrame(&buf, &pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: hdr}}); err != nil {
		return nil, err
	}
	buf.Write(body)
	return c.stream(buf.Bytes(), true)
}

// download fetches a model of job by digest.
func (c *client) download(job, digest string) ([]float32, error) {
	var buf bytes.Buffer
	if err := protocol.WriteFrame(&buf, &pb.Envelope{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{JobId: job, Sha256: digest}}}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	defer s.CancelRead(0)
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	s.Close()
	hdr, err := protocol.ReadFrame(s, 0)
	if err != nil {
		return nil, err
	}
	if err := protocol.AsError(hdr); err != nil {
		return nil, err
	}
	body := make([]byte, hdr.GetBlobHeader().GetBlob().GetSize())
	if _, err := io.ReadFull(s, body); err != nil {
		return nil, err
	}
	if protocol.Digest(body) != digest {
		return nil, errors.New("model digest mismatch")
	}
	return protocol.DecodeF32(body)
}

// remoteError is the typed error an answer carries, or nil.
func remoteError(env *pb.Envelope) *protocol.RemoteError {
	var re *protocol.RemoteError
	if errors.As(protocol.AsError(env), &re) {
		return re
	}
	return nil
}

// wantRefusal fails the test unless resp is an error frame with code
// whose message contains every one of words (a clear error).
func wantRefusal(t *testing.T, what string, resp *pb.Envelope, err error, code pb.ErrorCode, words ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: no answer: %v", what, err)
	}
	re := remoteError(resp)
	if re == nil || re.Code != code {
		t.Fatalf("%s: answered %v, want error %s", what, resp, code)
	}
	for _, w := range words {
		if !strings.Contains(re.Message, w) {
			t.Fatalf("%s: error %q does not say %q", what, re.Message, w)
		}
	}
	t.Logf("%s: refused: %s %s", what, re.Code, re.Message)
}
