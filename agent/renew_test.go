package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/quic-go/quic-go"
)

// stepClock is a clock.Clock whose Sleep records the wait and moves Now
// forward by it at once. onSleep, if set, runs inside Sleep with the
// number of the call (from 1) and the wait; an error it returns is
// Sleep's.
type stepClock struct {
	mu      sync.Mutex
	now     time.Time
	sleeps  []time.Duration
	onSleep func(n int, d time.Duration) error
}

// newStepClock starts at the current time, on a whole second (the times
// in certificates have no fraction), so that the servers' real-time
// checks of the first certificates agree with it.
func newStepClock() *stepClock { return &stepClock{now: time.Now().Truncate(time.Second)} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	if d > 0 {
		c.now = c.now.Add(d)
	}
	n, hook := len(c.sleeps), c.onSleep
	c.mu.Unlock()
	if hook != nil {
		if err := hook(n, d); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (c *stepClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// testPKI is a federation CA in a temporary directory.
type testPKI struct {
	dir    string
	ca     *pki.CA
	caFile string
	pool   *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, ca: ca, caFile: filepath.Join(dir, pki.CACertFile), pool: x509.NewCertPool()}
	p.pool.AddCert(ca.Certificate())
	return p
}

// enrolled writes a site certificate valid for validity from now, and the
// CA, where `cohort agent enroll` would: DefaultTLSFiles(dataDir).
func (p *testPKI) enrolled(t *testing.T, dataDir, site string, validity time.Duration, now time.Time) pki.Files {
	t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(pki.IssueRequest{Role: pki.RoleSite, ID: site, Validity: validity}, now)
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultTLSFiles(dataDir)
	if err := os.MkdirAll(filepath.Dir(f.Key), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{f.CA, p.ca.CertPEM(), 0o644}, {f.Cert, certPEM, 0o644}, {f.Key, keyPEM, 0o600}} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// coordinatorCert is a coordinator certificate for 127.0.0.1.
func (p *testPKI) coordinatorCert(t *testing.T) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(pki.IssueRequest{Role: pki.RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// fakeAdmin is the coordinators' admin API as far as enrollment and
// renewal go: POST /v1/enroll with the token "good-token" (once) and
// POST /v1/renew with a site certificate. Its TLS checks run on the
// test's clock.
type fakeAdmin struct {
	t   *testing.T
	pki *testPKI
	clk func() time.Time
	ttl time.Duration
	srv *httptest.Server

	mu sync.Mutex
	// answers are statuses answered, in order, before renewals succeed.
	answers []int
	// presented are the serials of the client certificates renewals came with.
	presented []*big.Int
	// issued are the serials of the certificates issued.
	issued    []*big.Int
	tokenUsed bool
	// otherKey issues certificates for a key that is not the requester's.
	otherKey bool
}

func newFakeAdmin(t *testing.T, p *testPKI, clk func() time.Time, ttl time.Duration) *fakeAdmin {
	f := &fakeAdmin{t: t, pki: p, clk: clk, ttl: ttl}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", f.enroll)
	mux.HandleFunc("POST /v1/renew", f.renew)
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{p.coordinatorCert(t)},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.pool,
		Time:         clk,
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAdmin) problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"title": http.StatusText(status), "status": status, "detail": detail})
}

func (f *fakeAdmin) issue(w http.ResponseWriter, body issueRequest, site string, status int) {
	f.mu.Lock()
	other := f.otherKey
	f.mu.Unlock()
	if other {
		_, body.CSR, _ = newKeyAndCSR()
	}
	block, _ := pem.Decode([]byte(body.CSR))
	if block == nil {
		f.problem(w, http.StatusBadRequest, "no csr")
		return
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		f.problem(w, http.StatusBadRequest, err.Error())
		return
	}
	certPEM, err := f.pki.ca.SignCSR(csr, pki.RoleSite, site, f.ttl, f.clk())
	if err != nil {
		f.problem(w, http.StatusBadRequest, err.Error())
		return
	}
	b, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(b.Bytes)
	f.mu.Lock()
	f.issued = append(f.issued, cert.SerialNumber)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(issueResponse{Site: site, Certificate: string(certPEM), CA: string(f.pki.ca.CertPEM()), NotAfter: cert.NotAfter})
}

func (f *fakeAdmin) enroll(w http.ResponseWriter, req *http.Request) {
	var body issueRequest
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		f.problem(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	ok := body.Token == "good-token" && !f.tokenUsed
	f.tokenUsed = f.tokenUsed || ok
	f.mu.Unlock()
	if !ok {
		f.problem(w, http.StatusUnauthorized, "enrollment token refused: already used")
		return
	}
	f.issue(w, body, "st-new", http.StatusCreated)
}

func (f *fakeAdmin) renew(w http.ResponseWriter, req *http.Request) {
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 {
		f.problem(w, http.StatusUnauthorized, "renewal needs the site's current certificate (mutual TLS)")
		return
	}
	leaf := req.TLS.VerifiedChains[0][0]
	id, err := pki.IdentityOf(leaf)
	if err != nil || id.Role != pki.RoleSite {
		f.problem(w, http.StatusUnauthorized, "not a site")
		return
	}
	f.mu.Lock()
	f.presented = append(f.presented, leaf.SerialNumber)
	status := 0
	if len(f.answers) > 0 {
		status, f.answers = f.answers[0], f.answers[1:]
	}
	f.mu.Unlock()
	if status != 0 {
		f.problem(w, status, fmt.Sprintf("scripted %d", status))
		return
	}
	var body issueRequest
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		f.problem(w, http.StatusBadRequest, err.Error())
		return
	}
	f.issue(w, body, id.ID, http.StatusOK)
}

// Ways a quicCoordinator treats a revoked site.
const (
	// notRevoked: welcome the site.
	notRevoked = iota
	// revokedClose: close every connection at once with the code for a
	// revoked site.
	revokedClose
	// revokedRefuse: welcome the site, then refuse its requests as a
	// coordinator does a site revoked while it was connected.
	revokedRefuse
)

// quicCoordinator welcomes sites over QUIC and records the serial of the
// certificate each connection came with; revoked is one of the modes
// above.
type quicCoordinator struct {
	addr    string
	revoked int

	mu      sync.Mutex
	serials []*big.Int
}

func startQUICCoordinator(t *testing.T, p *testPKI, clk func() time.Time, revoked int) *quicCoordinator {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	conf := pki.ServerTLS(p.pool, p.coordinatorCert(t), protocol.ALPN, pki.RoleSite)
	conf.Time = clk
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(conf, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := &quicCoordinator{addr: udp.LocalAddr().String(), revoked: revoked}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		tr.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			cs := conn.ConnectionState().TLS
			c.mu.Lock()
			c.serials = append(c.serials, cs.PeerCertificates[0].SerialNumber)
			c.mu.Unlock()
			if c.revoked == revokedClose {
				conn.CloseWithError(closeRevoked, "site revoked")
				continue
			}
			id, _ := pki.PeerIdentity(cs)
			wg.Go(func() {
				defer conn.CloseWithError(0, "")
				for {
					s, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Go(func() {
						defer s.Close()
						for {
							env, err := protocol.ReadFrame(s, 0)
							if err != nil {
								return
							}
							resp := protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "unexpected")
							if c.revoked == revokedRefuse {
								resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_REFUSED, "site %q has been revoked", id.ID)
							}
							if env.GetHello() != nil {
								resp = &pb.Envelope{Body: &pb.Envelope_Welcome{Welcome: &pb.Welcome{ProtocolVersion: protocol.Version, NodeId: "c1", SiteId: id.ID}}}
							}
							if protocol.WriteFrame(s, resp) != nil {
								return
							}
						}
					})
				}
			})
		}
	})
	return c
}

// lockedBuffer collects logs written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (c *quicCoordinator) seen() []*big.Int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*big.Int(nil), c.serials...)
}

// newRenewingAgent is an agent of site st-new whose certificate is valid
// for ttl, renewing at admin, on clk.
func newRenewingAgent(t *testing.T, p *testPKI, clk *stepClock, ttl time.Duration, admin, coord string) *Agent {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	p.enrolled(t, cfg.DataDir, "st-new", ttl, clk.Now())
	cfg.Coordinators = []string{coord}
	cfg.Renew.Server = admin
	cfg.Clock = clk
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRenewSchedule(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name     string
		loadedAt time.Time
		notAfter time.Time
		want     time.Time
	}{
		{"fresh 7-day certificate", t0, t0.Add(7 * 24 * time.Hour), t0.Add(112 * time.Hour)},
		{"30 s certificate", t0, t0.Add(30 * time.Second), t0.Add(20 * time.Second)},
		{"loaded with 3 h left", t0, t0.Add(3 * time.Hour), t0.Add(2 * time.Hour)},
		{"already expired", t0, t0.Add(-time.Hour), t0},
		{"expires as loaded", t0, t0, t0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := renewAt(tt.loadedAt, tt.notAfter); !got.Equal(tt.want) {
				t.Errorf("renewAt = %s, want %s", got, tt.want)
			}
		})
	}
	for n, want := range map[int]time.Duration{0: 5 * time.Second, 1: 10 * time.Second, 3: 40 * time.Second, 7: renewRetryMax, 60: renewRetryMax} {
		for range 20 {
			if got := retryDelay(n); got < want || got > want+want/10 {
				t.Fatalf("retryDelay(%d) = %s, want %s plus at most 10%%", n, got, want)
			}
		}
	}
}

// TestRenewSwapsCertificate: at two thirds of the certificate's life the
// agent renews it with a new key, presenting the old certificate; the new
// one is on disk (key owner-only, no leftovers) and in the status; new
// QUIC connections present it while the open one carries on.
func TestRenewSwapsCertificate(t *testing.T) {
	p := newTestPKI(t)
	clk := newStepClock()
	admin := newFakeAdmin(t, p, clk.Now, time.Hour)
	coord := startQUICCoordinator(t, p, clk.Now, notRevoked)
	a := newRenewingAgent(t, p, clk, time.Hour, admin.srv.URL, coord.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	first := a.cert.Load().tls.Leaf
	old, err := a.dial(ctx, coord.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.close()
	oldKey, _ := os.ReadFile(a.cfg.TLS.Key)

	// The loop sleeps until the renewal is due, renews, then sleeps
	// until the next one is due: stop it there.
	stop := errors.New("stop")
	clk.onSleep = func(n int, d time.Duration) error {
		if n == 2 {
			return stop
		}
		return nil
	}
	a.renewLoop(ctx)
	if ctx.Err() != nil {
		t.Fatal(ctx.Err())
	}
	sleeps := clk.Sleeps()
	if len(sleeps) != 2 || sleeps[0] != 40*time.Minute || sleeps[1] != 40*time.Minute {
		t.Fatalf("sleeps %v, want [40m 40m] (two thirds of an hour, twice)", sleeps)
	}

	cur := a.cert.Load()
	if cur.tls.Leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the certificate was not swapped")
	}
	if !cur.loadedAt.Equal(clk.now.Add(-40*time.Minute)) || !cur.tls.Leaf.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate loaded %s, not after %s (old %s)", cur.loadedAt, cur.tls.Leaf.NotAfter, first.NotAfter)
	}
	admin.mu.Lock()
	presented, issued := admin.presented, admin.issued
	admin.mu.Unlock()
	if len(presented) != 1 || presented[0].Cmp(first.SerialNumber) != 0 || len(issued) != 1 || issued[0].Cmp(cur.tls.Leaf.SerialNumber) != 0 {
		t.Fatalf("renewal presented %v and got %v; want the old certificate %v and the new %v", presented, issued, first.SerialNumber, cur.tls.Leaf.SerialNumber)
	}

	// On disk: the new certificate with a new key, the key owner-only.
	if onDisk := readCert(t, a.cfg.TLS.Cert); onDisk.SerialNumber.Cmp(cur.tls.Leaf.SerialNumber) != 0 {
		t.Errorf("%s holds serial %v, want %v", a.cfg.TLS.Cert, onDisk.SerialNumber, cur.tls.Leaf.SerialNumber)
	}
	if newKey, _ := os.ReadFile(a.cfg.TLS.Key); string(newKey) == string(oldKey) {
		t.Error("the key was not replaced")
	}
	if _, err := pki.LoadKeyPair(a.cfg.TLS.Cert, a.cfg.TLS.Key); err != nil {
		t.Errorf("the files on disk do not make a key pair: %v", err)
	}
	if fi, err := os.Stat(a.cfg.TLS.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(filepath.Dir(a.cfg.TLS.Key))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || strings.HasSuffix(e.Name(), renewSuffix) {
			t.Errorf("leftover %s in the tls directory", e.Name())
		}
	}

	// A new connection presents the new certificate; the old one lives.
	fresh, err := a.dial(ctx, coord.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.close()
	seen := coord.seen()
	if len(seen) != 2 || seen[0].Cmp(first.SerialNumber) != 0 || seen[1].Cmp(cur.tls.Leaf.SerialNumber) != 0 {
		t.Fatalf("the coordinator saw %v, want %v then %v", seen, first.SerialNumber, cur.tls.Leaf.SerialNumber)
	}
	if _, err := a.request(old, &pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{ProtocolVersion: protocol.Version}}}); err != nil {
		t.Fatalf("the connection opened before the renewal broke: %v", err)
	}

	st, err := ReadStatus(a.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if st.CertRenewals != 1 || st.CertRenewalFailures != 0 || !st.CertExpires.Equal(cur.tls.Leaf.NotAfter) || !st.NextRenewal.Equal(renewAt(cur.loadedAt, cur.tls.Leaf.NotAfter)) {
		t.Errorf("status after the renewal: renewals %d, failures %d, expires %s, next %s", st.CertRenewals, st.CertRenewalFailures, st.CertExpires, st.NextRenewal)
	}
}

// TestRenewRetriesThenStopsWhenRevoked: failed renewals are retried with
// a doubling wait and counted; a 403 ends renewal and marks the site
// revoked.
func TestRenewRetriesThenStopsWhenRevoked(t *testing.T) {
	p := newTestPKI(t)
	clk := newStepClock()
	admin := newFakeAdmin(t, p, clk.Now, time.Hour)
	admin.answers = []int{http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusForbidden}
	a := newRenewingAgent(t, p, clk, 3*time.Hour, admin.srv.URL, "127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a.renewLoop(ctx) // returns by itself on the 403
	if ctx.Err() != nil {
		t.Fatal(ctx.Err())
	}
	sleeps := clk.Sleeps()
	if len(sleeps) != 3 || sleeps[0] != 2*time.Hour {
		t.Fatalf("sleeps %v, want the 2h schedule and two retries", sleeps)
	}
	if sleeps[1] < 5*time.Second || sleeps[1] > 5500*time.Millisecond || sleeps[2] < 10*time.Second || sleeps[2] > 11*time.Second {
		t.Errorf("retry waits %v, want about 5s then 10s", sleeps[1:])
	}
	s := a.Stats()
	if s.CertRenewals != 0 || s.CertRenewalFailures != 2 || !strings.Contains(s.LastRenewalError, "502") {
		t.Errorf("stats %+v, want 2 failures, the last a 502", s)
	}
	if state, _ := a.session.get(); state != SessionRevoked {
		t.Errorf("session %q, want revoked", state)
	}
	if ready, why := a.readiness(); ready || !strings.Contains(why, "revoked") {
		t.Errorf("readiness %v %q, want not ready: revoked", ready, why)
	}
	st, err := ReadStatus(a.cfg.DataDir)
	if err != nil || st.Session != SessionRevoked || st.CertRenewalFailures != 2 || !st.NextRenewal.IsZero() {
		t.Errorf("status %+v %v, want revoked with 2 failures and no next renewal", st, err)
	}
}

// TestRenewInterruptedIsFinished: a crash between the renames of a
// renewal leaves files the next start completes or discards, so the key
// always matches the certificate.
func TestRenewInterruptedIsFinished(t *testing.T) {
	p := newTestPKI(t)
	now := time.Now()
	for _, tt := range []struct {
		name string
		// leave is which .new files the crash left: "key", "cert" (the
		// key was renamed already) or "both".
		leave   string
		wantNew bool
	}{
		{"crash after writing the new key", "key", false},
		{"crash before the first rename", "both", false},
		{"crash between the renames", "cert", true},
		{"no crash", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := p.enrolled(t, t.TempDir(), "st-new", time.Hour, now)
			oldCert, _ := os.ReadFile(f.Cert)
			certPEM, keyPEM, err := p.ca.Issue(pki.IssueRequest{Role: pki.RoleSite, ID: "st-new", Validity: 2 * time.Hour}, now)
			if err != nil {
				t.Fatal(err)
			}
			switch tt.leave {
			case "key":
				os.WriteFile(f.Key+renewSuffix, keyPEM, 0o600)
			case "both":
				os.WriteFile(f.Key+renewSuffix, keyPEM, 0o600)
				os.WriteFile(f.Cert+renewSuffix, certPEM, 0o644)
			case "cert":
				os.WriteFile(f.Key, keyPEM, 0o600)
				os.WriteFile(f.Cert+renewSuffix, certPEM, 0o644)
			}
			if err := finishRenewal(f); err != nil {
				t.Fatal(err)
			}
			if _, err := pki.LoadKeyPair(f.Cert, f.Key); err != nil {
				t.Fatalf("key and certificate do not match after finishRenewal: %v", err)
			}
			got, _ := os.ReadFile(f.Cert)
			if isNew := string(got) == string(certPEM); isNew != tt.wantNew || !isNew && string(got) != string(oldCert) {
				t.Errorf("certificate is the new one: %v, want %v", isNew, tt.wantNew)
			}
			for _, leftover := range []string{f.Key + renewSuffix, f.Cert + renewSuffix} {
				if _, err := os.Stat(leftover); err == nil {
					t.Errorf("%s left behind", leftover)
				}
			}
		})
	}
}

// TestRevokedSiteBacksOff: a coordinator that closes the connection with
// the revoked code, or refuses the site's requests, gets one error log
// and a long wait, not a reconnect loop; the status and /readyz say
// revoked.
func TestRevokedSiteBacksOff(t *testing.T) {
	for _, tt := range []struct {
		name string
		mode int
	}{
		{"connection closed with the revoked code", revokedClose},
		{"requests refused", revokedRefuse},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPKI(t)
			clk := newStepClock()
			coord := startQUICCoordinator(t, p, clk.Now, tt.mode)
			cfg := DefaultConfig()
			cfg.DataDir = t.TempDir()
			p.enrolled(t, cfg.DataDir, "st-new", time.Hour, clk.Now())
			cfg.Coordinators = []string{coord.addr}
			cfg.Clock = clk
			logs := &lockedBuffer{}
			cfg.Logger = newTestLogger(logs)
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if err := a.Open(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var waits int
			clk.onSleep = func(n int, d time.Duration) error {
				if d != revokedRetry {
					return nil
				}
				waits++
				if state, _ := a.session.get(); state != SessionRevoked {
					t.Errorf("session %q while waiting, want revoked", state)
				}
				if waits == 2 {
					cancel()
				}
				return nil
			}
			if err := a.loop(ctx); err != nil {
				t.Fatalf("loop: %v", err)
			}
			if waits != 2 || len(coord.seen()) != 2 {
				t.Errorf("%d long waits and %d connections, want 2 and 2 (one each time)", waits, len(coord.seen()))
			}
			if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "revoked") {
				t.Errorf("%d error logs, want one that says revoked:\n%s", n, logs.String())
			}
			st, err := ReadStatus(cfg.DataDir)
			if err != nil || st.Session != SessionRevoked {
				t.Errorf("status %+v %v, want session revoked", st, err)
			}
			if ready, why := a.readiness(); ready || !strings.Contains(why, "revoked") {
				t.Errorf("readiness %v %q, want not ready: revoked", ready, why)
			}
		})
	}
}
