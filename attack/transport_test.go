package attack

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/quic-go/quic-go"
)

// QUIC application error codes the coordinator closes connections with
// (coordinator/agents.go).
const (
	closeBadProtocol quic.ApplicationErrorCode = 0x102
	closeRevoked     quic.ApplicationErrorCode = 0x103
)

// TLS alerts as QUIC CRYPTO_ERRORs (0x100 + the alert).
const (
	alertBadCertificate        = 0x100 + 42
	alertNoApplicationProtocol = 0x100 + 120
)

// wantHandshakeRefused dials with tlsConf and fails the test unless the
// coordinator refuses the connection with one of the TLS alerts, at the
// handshake or (TLS 1.3: the server checks the client certificate after
// the client finished) on the first frame.
func wantHandshakeRefused(t *testing.T, f *federation, tlsConf *tls.Config, alerts ...uint64) error {
	t.Helper()
	c, err := dial(t, f.agentAddr, tlsConf, nil)
	if err == nil {
		var resp *pb.Envelope
		if resp, err = c.call(helloEnv(protocol.MinVersion, protocol.Version)); err == nil {
			t.Fatalf("the coordinator accepted the connection and answered %v", resp)
		}
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.Remote || !te.ErrorCode.IsCryptoError() {
		t.Fatalf("refusal is not a TLS alert from the coordinator: %v", err)
	}
	for _, a := range alerts {
		if uint64(te.ErrorCode) == a {
			t.Logf("refused: %v", err)
			return err
		}
	}
	t.Fatalf("refused with %v, want one of the alerts %#x", err, alerts)
	return nil
}

// TestAttackTransportForeignCA: a site certificate from another CA (with
// the site id of an enrolled site) is refused in the TLS handshake, counted
// as a refused handshake, and an honest site still gets in.
func TestAttackTransportForeignCA(t *testing.T) {
	f := fed(t)
	rogueDir := filepath.Join(t.TempDir(), "rogue-ca")
	if err := runOK(f.bin, "ca", "init", "--dir", rogueDir, "--name", "Rogue CA"); err != nil {
		t.Fatal(err)
	}
	rogue, err := pki.LoadCA(rogueDir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := rogue.Issue(pki.IssueRequest{Role: pki.RoleSite, ID: "honest-a"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert := keyPair(t, certPEM, keyPEM)
	refused := f.count(t, "handshakes_refused_total")
	wantHandshakeRefused(t, f, clientTLS(f.pool, cert, protocol.ALPN), alertBadCertificate)
	refused.grew(t, 1)
	f.healthy(t)
	f.connect(t, "honest-a")
}

// TestAttackTransportExpiredCertificate: a certificate of the federation
// CA for an enrolled site, expired a day ago, is refused and counted.
func TestAttackTransportExpiredCertificate(t *testing.T) {
	f := fed(t)
	cert := f.siteCert(t, pki.RoleSite, "honest-a", time.Now().Add(-48*time.Hour), 24*time.Hour)
	if !cert.Leaf.NotAfter.Before(time.Now()) {
		t.Fatalf("the certificate is not expired: %v", cert.Leaf.NotAfter)
	}
	refused := f.count(t, "handshakes_refused_total")
	wantHandshakeRefused(t, f, clientTLS(f.pool, cert, protocol.ALPN), alertBadCertificate)
	refused.grew(t, 1)
	f.healthy(t)
	f.connect(t, "honest-a")
}

// TestAttackTransportRevokedSite: revoking a site closes its open
// connection at once, and a new connection with its (unexpired)
// certificate is closed as revoked; both are counted, and the revocation is
// in the audit log.
func TestAttackTransportRevokedSite(t *testing.T) {
	f := fed(t)
	const site = "revoked-1"
	if status, body := f.api(t, http.MethodPost, "/v1/sites", map[string]string{"id": site}, nil); status != http.StatusCreated {
		t.Fatalf("create site: %d %s", status, body)
	}
	cert := f.site(t, site)
	open := f.connect(t, site)
	refused := f.count(t, "sites_revoked_refused_total")
	from := f.auditSize(t)
	if status, body := f.api(t, http.MethodPost, "/v1/sites/"+site+"/revoke", nil, nil); status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	select {
	case <-open.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked site's open connection was not closed")
	}
	wantClosed(t, context.Cause(open.conn.Context()), closeRevoked)

	c, err := dial(t, f.agentAddr, clientTLS(f.pool, cert, protocol.ALPN), nil)
	if err == nil {
		var resp *pb.Envelope
		if resp, err = c.call(helloEnv(protocol.MinVersion, protocol.Version)); err == nil {
			t.Fatalf("a revoked site's new connection was answered %v", resp)
		}
	}
	wantClosed(t, err, closeRevoked)
	refused.grew(t, 1)
	f.audited(t, from, 1, "the revocation", func(e auditEntry) bool {
		return e.Action == "POST /v1/sites/{id}/revoke" && e.Target == "site "+site && e.Outcome == "ok"
	})
	f.healthy(t)
}

// wantClosed fails the test unless err is the coordinator closing the
// connection with code.
func wantClosed(t *testing.T, err error, code quic.ApplicationErrorCode) {
	t.Helper()
	var ae *quic.ApplicationError
	if !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != code {
		t.Fatalf("connection ended with %v, want the coordinator's close %#x", err, uint64(code))
	}
	t.Logf("closed: %v", ae)
}

// TestAttackTransportCoordinatorCertAsSite: a coordinator's certificate
// (same CA, valid) presented by a client on the agent port is refused for
// its role and counted.
func TestAttackTransportCoordinatorCertAsSite(t *testing.T) {
	f := fed(t)
	cert := f.siteCert(t, pki.RoleCoordinator, "c1", time.Now(), time.Hour)
	refused := f.count(t, "handshakes_refused_total")
	wantHandshakeRefused(t, f, clientTLS(f.pool, cert, protocol.ALPN), alertBadCertificate)
	refused.grew(t, 1)
	f.healthy(t)
}

// TestAttackTransportWrongALPN: a client with a valid site certificate
// that asks for another application protocol than cohort/1 is refused in
// the handshake (no_application_protocol) and counted.
func TestAttackTransportWrongALPN(t *testing.T) {
	f := fed(t)
	cert := f.site(t, "honest-a")
	for _, alpn := range []string{"h3", "cohort/0", "cohort/2"} {
		t.Run(alpn, func(t *testing.T) {
			refused := f.count(t, "handshakes_refused_total")
			wantHandshakeRefused(t, f, clientTLS(f.pool, cert, alpn), alertNoApplicationProtocol)
			refused.grew(t, 1)
		})
	}
	f.healthy(t)
	f.connect(t, "honest-a")
}

// TestAttackTransportOldProtocolVersion: a Hello whose protocol range is
// below protocol.MinVersion (or inverted) is answered with a VERSION error
// naming both ranges, and counted.
func TestAttackTransportOldProtocolVersion(t *testing.T) {
	f := fed(t)
	for _, r := range [][2]uint32{{0, protocol.MinVersion - 1}, {0, 0}, {protocol.Version + 1, protocol.MinVersion}} {
		t.Run(fmt.Sprintf("%d-%d", r[0], r[1]), func(t *testing.T) {
			c, err := dial(t, f.agentAddr, clientTLS(f.pool, f.site(t, "honest-a"), protocol.ALPN), nil)
			if err != nil {
				t.Fatal(err)
			}
			refused := f.count(t, "handshakes_refused_total")
			resp, err := c.call(helloEnv(r[0], r[1]))
			wantRefusal(t, "old hello", resp, err, pb.ErrorCode_ERROR_CODE_VERSION,
				fmt.Sprintf("agent speaks protocol %d-%d", r[0], r[1]),
				fmt.Sprintf("coordinator speaks %d-%d", protocol.MinVersion, protocol.Version))
			refused.grew(t, 1)
			// Nothing else is served on that connection: no hello was
			// accepted.
			resp, err = c.stream(frame(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{}}}), false)
			wantRefusal(t, "task request after a refused hello", resp, err, pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "hello first")
		})
	}
	f.healthy(t)
}

// TestAttackTransportOversizedFrame: frames that declare a body above
// protocol.DefaultMaxFrame are refused from their 4-byte header (the body
// is never read or allocated), counted, and the connection goes on.
func TestAttackTransportOversizedFrame(t *testing.T) {
	f := fed(t)
	c := f.connect(t, "honest-a")
	for _, n := range []uint32{protocol.DefaultMaxFrame + 1, 1 << 30, 0xffffffff} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rejected := f.count(t, "frames_rejected_total")
			raw := binary.BigEndian.AppendUint32(nil, n)
			raw = append(raw, bytes.Repeat([]byte{0x0a}, 1024)...)
			resp, err := c.stream(raw, false)
			wantRefusal(t, "oversized frame", resp, err, pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "frame too large", fmt.Sprint(n))
			rejected.grew(t, 1)
		})
	}
	if resp, err := c.call(helloEnv(protocol.MinVersion, protocol.Version)); err != nil || resp.GetWelcome() == nil {
		t.Fatalf("the connection no longer works after oversized frames: %v %v", resp, err)
	}
	f.healthy(t)
}

// TestAttackTransportTooManyStreams: the coordinator grants an agent 16
// concurrent streams (quic MaxIncomingStreams). A client holding them all
// cannot open another until one ends: the limit is QUIC stream credit, so
// a conforming stack cannot exceed it and a peer that tries is closed by
// the QUIC layer (STREAM_LIMIT_ERROR) before the application sees it,
// which is why no coordinator counter counts it.
func TestAttackTransportTooManyStreams(t *testing.T) {
	f := fed(t)
	c := f.connect(t, "honest-a") // the control stream is one
	held := []*quic.Stream{c.ctrl}
	for {
		s, err := c.conn.OpenStream()
		if err != nil {
			var limit *quic.StreamLimitReachedError
			if !errors.As(err, &limit) {
				t.Fatalf("opening stream %d: %v", len(held)+1, err)
			}
			break
		}
		// The coordinator sees a stream only once it carries data; a
		// hello keeps it busy and open.
		if err := protocol.WriteFrame(s, helloEnv(protocol.MinVersion, protocol.Version)); err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
		if len(held) > 64 {
			t.Fatal("the coordinator granted more than 64 streams")
		}
	}
	if len(held) != 16 {
		t.Fatalf("the coordinator granted %d concurrent streams, want 16", len(held))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := c.conn.OpenStreamSync(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a 17th stream: %v, want it to wait for credit", err)
	}
	// One stream ends: the coordinator grants one more.
	last := held[len(held)-1]
	if _, err := protocol.ReadFrame(last, 0); err != nil {
		t.Fatal(err)
	}
	last.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.conn.OpenStreamSync(ctx); err != nil {
		t.Fatalf("no stream granted after one ended: %v", err)
	}
	f.healthy(t)
	f.connect(t, "honest-b")
}

// TestAttackTransportSilentConnections: clients complete the handshake
// with a valid certificate and then never speak (keep-alives hold the
// QUIC idle timeout off). Each is closed once it has not said hello in
// time, counted, and the open-connection gauge returns to where it was; an
// honest site connects afterwards.
func TestAttackTransportSilentConnections(t *testing.T) {
	f := fed(t)
	const n = 8
	// The connections of earlier attacks close as their tests end.
	open := func() float64 { return metric(t, f.statusAddr, "cohort_coordinator_agent_connections") }
	waitFor(t, 5*time.Second, "no agent connection to be open", func() (bool, string) { return open() == 0, fmt.Sprint(open()) })
	timedOut := f.count(t, "hello_timeouts_total")
	cert := f.site(t, "honest-b")
	var conns []*quic.Conn
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := quic.DialAddr(ctx, f.agentAddr, clientTLS(f.pool, cert, protocol.ALPN),
			&quic.Config{KeepAlivePeriod: time.Second, MaxIdleTimeout: time.Minute})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseWithError(0, "") })
		conns = append(conns, conn)
	}
	waitFor(t, 5*time.Second, "the silent connections to be counted open", func() (bool, string) {
		return open() == n, fmt.Sprintf("%v open", open())
	})
	if testing.Short() {
		t.Log("-short: not waiting for the coordinator's hello timeout")
		return
	}
	for i, conn := range conns {
		select {
		case <-conn.Context().Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("silent connection %d is still open after 20 s", i)
		}
		wantClosed(t, context.Cause(conn.Context()), closeBadProtocol)
	}
	timedOut.grew(t, n)
	waitFor(t, 5*time.Second, "the open-connection gauge to come back", func() (bool, string) {
		return open() == 0, fmt.Sprintf("%v open", open())
	})
	f.healthy(t)
	f.connect(t, "honest-b")
}

// frame is env as one frame's bytes.
func frame(t *testing.T, env *pb.Envelope) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := protocol.WriteFrame(&b, env); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
