package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
)

// LoadPool reads a PEM file of CA certificates (normally ca.crt) into a
// certificate pool.
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%w in %s", ErrNoCertificates, caFile)
	}
	return pool, nil
}

// LoadKeyPair loads a certificate and its private key from PEM files. It
// refuses, with ErrKeyPermissions, a key file that group or others may read
// or write. The returned certificate's Leaf is set.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if err := checkKeyPermissions(keyFile); err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: load key pair %s, %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("pki: parse %s: %w", certFile, err)
		}
		cert.Leaf = leaf
	}
	return cert, nil
}

// checkKeyPermissions refuses a private key file accessible by group or
// others. File modes mean nothing on Windows, where the check is skipped.
func checkKeyPermissions(keyFile string) error {
	fi, err := os.Stat(keyFile)
	if err != nil {
		return fmt.Errorf("pki: key file: %w", err)
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o, want 0600 or stricter (chmod 600 %s)", ErrKeyPermissions, keyFile, mode, keyFile)
	}
	return nil
}

// Files names the PEM files a node needs for mutual TLS.
type Files struct {
	// CA is the federation CA certificate (ca.crt).
	CA string
	// Cert is this node's certificate.
	Cert string
	// Key is this node's private key (mode 0600).
	Key string
}

// Load reads the CA pool and the key pair.
func (f Files) Load() (*x509.CertPool, tls.Certificate, error) {
	pool, err := LoadPool(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	cert, err := LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	return pool, cert, nil
}

// RoleError is returned by the VerifyConnection callbacks of ServerTLS and
// ClientTLS when the peer's role is not an allowed one. It matches
// ErrRoleNotAllowed with errors.Is.
type RoleError struct {
	// Got is the peer's role.
	Got string
	// Want are the roles this endpoint accepts.
	Want []string
}

func (e *RoleError) Error() string {
	return fmt.Sprintf("pki: peer certificate role %q not allowed here (want %s)", e.Got, strings.Join(e.Want, " or "))
}

// Unwrap returns ErrRoleNotAllowed.
func (e *RoleError) Unwrap() error { return ErrRoleNotAllowed }

// ServerTLS returns a TLS 1.3-only server configuration presenting cert,
// negotiating only alpn, requiring a client certificate that chains to pool
// and whose identity's role is one of allowRoles (none: every peer is
// refused). Peers that fail any check are refused during the handshake with
// an alert; the error (for example a *RoleError) is returned by the server's
// Handshake. In TLS 1.3 a refused client learns of it on its first read.
func ServerTLS(pool *x509.CertPool, cert tls.Certificate, alpn string, allowRoles ...string) *tls.Config {
	allow := slices.Clone(allowRoles)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   alpnList(alpn),
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs, alpn, allow)
		},
	}
}

// ClientTLS returns a TLS 1.3-only client configuration presenting cert,
// negotiating only alpn, verifying the server's chain against pool and its
// name against serverName (standard hostname verification against the
// coordinator's DNS/IP SANs), and requiring the server's identity role to
// be wantRole. A caller that dials several servers with one configuration
// sets ServerName on a Clone per dial (see ServerNameFor).
func ClientTLS(pool *x509.CertPool, cert tls.Certificate, alpn, serverName string, wantRole string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
		NextProtos:   alpnList(alpn),
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs, alpn, []string{wantRole})
		},
	}
}

func alpnList(alpn string) []string {
	if alpn == "" {
		return nil
	}
	return []string{alpn}
}

// verifyPeer checks the negotiated protocol and the peer's role.
func verifyPeer(cs tls.ConnectionState, alpn string, allow []string) error {
	if alpn != "" && cs.NegotiatedProtocol != alpn {
		return fmt.Errorf("%w: got %q, want %q", ErrALPN, cs.NegotiatedProtocol, alpn)
	}
	id, err := PeerIdentity(cs)
	if err != nil {
		return err
	}
	if !slices.Contains(allow, id.Role) {
		return &RoleError{Got: id.Role, Want: slices.Clone(allow)}
	}
	return nil
}

// ServerNameFor returns the host part of a "host:port" address, for use as
// tls.Config.ServerName. An address without a port is returned as is
// (without IPv6 brackets).
func ServerNameFor(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
}

// PeerIdentity returns the identity of the peer of a TLS connection: from
// the leaf of the first verified chain, or, when there is none, from the
// first peer certificate. Only call it on connections whose peer chain was
// verified, as the configurations from ServerTLS and ClientTLS ensure.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	switch {
	case len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0:
		return IdentityOf(cs.VerifiedChains[0][0])
	case len(cs.PeerCertificates) > 0:
		return IdentityOf(cs.PeerCertificates[0])
	}
	return Identity{}, fmt.Errorf("%w: peer sent no certificate", ErrNoIdentity)
}
