package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

const testALPN = "cohort-test/1"

// issuePair issues a certificate and returns it as a tls.Certificate.
func issuePair(t *testing.T, ca *CA, req IssueRequest, now time.Time) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(req, now)
	if err != nil {
		t.Fatalf("Issue %+v: %v", req, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("X509KeyPair: %v", err)
	}
	return cert
}

type handshakeResult struct {
	serverErr, clientErr     error
	serverState, clientState tls.ConnectionState
}

// handshake runs one TLS connection over loopback TCP. The server writes one
// byte after its handshake and the client reads it: in TLS 1.3 the client's
// handshake finishes before the server has checked the client certificate,
// so a refusal only shows on the client's first read.
func handshake(t *testing.T, server, client *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)

	type serverResult struct {
		err   error
		state tls.ConnectionState
	}
	serverC := make(chan serverResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serverC <- serverResult{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			serverC <- serverResult{err: err}
			return
		}
		_, err = tc.Write([]byte{'k'})
		serverC <- serverResult{err: err, state: tc.ConnectionState()}
	}()

	var res handshakeResult
	raw, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(deadline)
	tc := tls.Client(raw, client)
	res.clientErr = tc.Handshake()
	if res.clientErr == nil {
		res.clientState = tc.ConnectionState()
		var b [1]byte
		_, res.clientErr = io.ReadFull(tc, b[:])
	}
	_ = tc.Close()
	s := <-serverC
	res.serverErr, res.serverState = s.err, s.state
	return res
}

func TestHandshake(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, "Federation", now)
	other, _ := newTestCA(t, "Impostor", now)
	pool, otherPool := poolOf(ca), poolOf(other)

	coord := issuePair(t, ca, IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1", "c1.cohort.test"}}, now)
	coord2 := issuePair(t, ca, IssueRequest{Role: RoleCoordinator, ID: "c2", Hosts: []string{"127.0.0.2"}}, now)
	site := issuePair(t, ca, IssueRequest{Role: RoleSite, ID: "st-marys"}, now)
	expiredSite := issuePair(t, ca, IssueRequest{Role: RoleSite, ID: "old-site"}, now.AddDate(-1, 0, 0))
	foreignSite := issuePair(t, other, IssueRequest{Role: RoleSite, ID: "st-marys"}, now)
	foreignCoord := issuePair(t, other, IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}}, now)

	isUnknownAuthority := func(err error) bool {
		var e x509.UnknownAuthorityError
		return errors.As(err, &e)
	}
	isExpired := func(err error) bool {
		var e x509.CertificateInvalidError
		return errors.As(err, &e) && e.Reason == x509.Expired
	}
	isRoleError := func(msg string) func(error) bool {
		return func(err error) bool {
			var e *RoleError
			return errors.Is(err, ErrRoleNotAllowed) && errors.As(err, &e) && e.Error() == msg
		}
	}
	isHostnameError := func(err error) bool {
		var e x509.HostnameError
		return errors.As(err, &e)
	}
	// A site certificate has no SANs and no ServerAuth usage; either refuses it.
	isVerificationError := func(err error) bool {
		var e *tls.CertificateVerificationError
		return errors.As(err, &e)
	}
	isALPN := func(err error) bool { return errors.Is(err, ErrALPN) }
	anyErr := func(err error) bool { return err != nil }

	tests := []struct {
		name      string
		server    *tls.Config
		client    *tls.Config
		serverErr func(error) bool // nil: the server must succeed
		clientErr func(error) bool // nil: the client must succeed
		wantPeer  Identity         // the client identity the server sees on success
	}{
		{
			name:     "site client, coordinator server",
			server:   ServerTLS(pool, coord, testALPN, RoleSite, RoleCoordinator),
			client:   ClientTLS(pool, site, testALPN, "127.0.0.1", RoleCoordinator),
			wantPeer: Identity{Role: RoleSite, ID: "st-marys"},
		},
		{
			name:     "coordinator peer by DNS name",
			server:   ServerTLS(pool, coord, testALPN, RoleCoordinator),
			client:   ClientTLS(pool, coord2, testALPN, "c1.cohort.test", RoleCoordinator),
			wantPeer: Identity{Role: RoleCoordinator, ID: "c2"},
		},
		{
			// A well-behaved client sees the server's acceptable CAs and
			// sends no certificate at all.
			name:      "client certificate from another CA",
			server:    ServerTLS(pool, coord, testALPN, RoleSite),
			client:    ClientTLS(pool, foreignSite, testALPN, "127.0.0.1", RoleCoordinator),
			serverErr: anyErr,
			clientErr: anyErr,
		},
		{
			// An impostor ignores the hint and sends its certificate anyway.
			name:   "client certificate from another CA, sent anyway",
			server: ServerTLS(pool, coord, testALPN, RoleSite),
			client: func() *tls.Config {
				c := ClientTLS(pool, foreignSite, testALPN, "127.0.0.1", RoleCoordinator)
				c.Certificates = nil
				c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreignSite, nil }
				return c
			}(),
			serverErr: isUnknownAuthority,
			clientErr: anyErr,
		},
		{
			name:      "server certificate from another CA",
			server:    ServerTLS(pool, foreignCoord, testALPN, RoleSite),
			client:    ClientTLS(pool, site, testALPN, "127.0.0.1", RoleCoordinator),
			serverErr: anyErr,
			clientErr: isUnknownAuthority,
		},
		{
			name:      "site where only coordinators are allowed",
			server:    ServerTLS(pool, coord, testALPN, RoleCoordinator),
			client:    ClientTLS(pool, site, testALPN, "127.0.0.1", RoleCoordinator),
			serverErr: isRoleError(`pki: peer certificate role "site" not allowed here (want coordinator)`),
			clientErr: anyErr,
		},
		{
			name:      "client wants a different server role",
			server:    ServerTLS(pool, coord, testALPN, RoleSite),
			client:    ClientTLS(pool, site, testALPN, "127.0.0.1", RoleSite),
			serverErr: anyErr,
			clientErr: isRoleError(`pki: peer certificate role "coordinator" not allowed here (want site)`),
		},
		{
			name:      "expired client certificate",
			server:    ServerTLS(pool, coord, testALPN, RoleSite),
			client:    ClientTLS(pool, expiredSite, testALPN, "127.0.0.1", RoleCoordinator),
			serverErr: isExpired,
			clientErr: anyErr,
		},
		{
			name:      "server name not in coordinator SANs",
			server:    ServerTLS(pool, coord, testALPN, RoleSite),
			client:    ClientTLS(pool, site, testALPN, "c9.cohort.test", RoleCoordinator),
			serverErr: anyErr,
			clientErr: isHostnameError,
		},
		{
			name:      "site certificate cannot serve",
			server:    ServerTLS(pool, site, testALPN, RoleSite),
			client:    ClientTLS(pool, coord, testALPN, "127.0.0.1", RoleSite),
			serverErr: anyErr,
			clientErr: isVerificationError,
		},
		{
			name:      "different ALPN",
			server:    ServerTLS(pool, coord, testALPN, RoleSite),
			client:    ClientTLS(pool, site, "other/1", "127.0.0.1", RoleCoordinator),
			serverErr: anyErr,
			clientErr: anyErr,
		},
		{
			name:   "client offers no ALPN",
			server: ServerTLS(pool, coord, testALPN, RoleSite),
			client: func() *tls.Config {
				c := ClientTLS(pool, site, "", "127.0.0.1", RoleCoordinator)
				return c
			}(),
			serverErr: isALPN,
			clientErr: anyErr,
		},
		{
			name:      "client trusts another CA",
			server:    ServerTLS(pool, coord, testALPN, RoleSite),
			client:    ClientTLS(otherPool, site, testALPN, "127.0.0.1", RoleCoordinator),
			serverErr: anyErr,
			clientErr: isUnknownAuthority,
		},
		{
			name:   "TLS 1.2 client",
			server: ServerTLS(pool, coord, testALPN, RoleSite),
			client: func() *tls.Config {
				c := ClientTLS(pool, site, testALPN, "127.0.0.1", RoleCoordinator)
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
				return c
			}(),
			serverErr: anyErr,
			clientErr: anyErr,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := handshake(t, tt.server, tt.client)
			switch {
			case tt.serverErr == nil && res.serverErr != nil:
				t.Errorf("server error: %v", res.serverErr)
			case tt.serverErr != nil && !tt.serverErr(res.serverErr):
				t.Errorf("server error = %v (%T), not the expected refusal", res.serverErr, res.serverErr)
			}
			switch {
			case tt.clientErr == nil && res.clientErr != nil:
				t.Errorf("client error: %v", res.clientErr)
			case tt.clientErr != nil && !tt.clientErr(res.clientErr):
				t.Errorf("client error = %v (%T), not the expected refusal", res.clientErr, res.clientErr)
			}
			if tt.serverErr != nil || res.serverErr != nil {
				return
			}
			if res.serverState.Version != tls.VersionTLS13 || res.serverState.NegotiatedProtocol != testALPN {
				t.Errorf("version %x, ALPN %q", res.serverState.Version, res.serverState.NegotiatedProtocol)
			}
			got, err := PeerIdentity(res.serverState)
			if err != nil || got != tt.wantPeer {
				t.Errorf("server PeerIdentity = %+v, %v; want %+v", got, err, tt.wantPeer)
			}
			got, err = PeerIdentity(res.clientState)
			if err != nil || got != (Identity{Role: RoleCoordinator, ID: "c1"}) {
				t.Errorf("client PeerIdentity = %+v, %v; want coordinator c1", got, err)
			}
		})
	}
}

func TestPeerIdentityNoCertificate(t *testing.T) {
	if _, err := PeerIdentity(tls.ConnectionState{}); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("PeerIdentity error = %v, want ErrNoIdentity", err)
	}
}

func TestServerNameFor(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"c1.cohort.test:7000", "c1.cohort.test"},
		{"127.0.0.1:7000", "127.0.0.1"},
		{"[::1]:7000", "::1"},
		{"c1.cohort.test", "c1.cohort.test"},
		{"[::1]", "::1"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := ServerNameFor(tt.addr); got != tt.want {
				t.Errorf("ServerNameFor(%q) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}
