package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// Site enrollment, the gateway's side. The federation operator creates the
// site and a one-time enrollment token, and gives the hospital the token,
// the federation CA certificate and the coordinators' admin URL. Enroll
// makes an ECDSA P-256 key on the gateway (it never leaves), sends a
// certificate request with the token to POST /v1/enroll, checks the
// certificate it gets (it chains to the CA the operator gave, names a site,
// holds our key) and writes the key and certificate into DATA_DIR/tls.
// The running agent renews the certificate at POST /v1/renew before it
// expires (see renew.go), authenticating with the certificate itself.

// Errors of enrollment and renewal.
var (
	// ErrTokenRefused: the coordinator refused the enrollment token
	// (unknown, already used, expired, or its site was revoked).
	ErrTokenRefused = errors.New("the enrollment token was refused")
	// ErrEnrolled: the gateway already has a key or certificate; enrolling
	// again would replace them.
	ErrEnrolled = errors.New("this gateway is already enrolled")
	// ErrRevoked: the federation operator revoked this site.
	ErrRevoked = errors.New("this site has been revoked by the federation operator")
	// ErrBadIssue: the coordinator's answer is not a certificate this
	// gateway can use.
	ErrBadIssue = errors.New("the issued certificate is not usable")
)

// TLS file names inside DATA_DIR/tls, as enrollment writes them.
const (
	tlsDirName   = "tls"
	siteKeyName  = "site.key"
	siteCertName = "site.crt"
	caCertName   = "ca.crt"
)

// DefaultTLSFiles are the files `cohort agent enroll` writes in dataDir:
// DATA_DIR/tls/ca.crt, site.crt and site.key. An agent whose Config names
// no TLS files uses these.
func DefaultTLSFiles(dataDir string) pki.Files {
	dir := filepath.Join(dataDir, tlsDirName)
	return pki.Files{CA: filepath.Join(dir, caCertName), Cert: filepath.Join(dir, siteCertName), Key: filepath.Join(dir, siteKeyName)}
}

// issueRequest is the body of POST /v1/enroll and POST /v1/renew (the
// coordinator's EnrollRequest).
type issueRequest struct {
	Token string `json:"token,omitempty"`
	// CSR is a PEM "CERTIFICATE REQUEST" for an ECDSA P-256 key.
	CSR string `json:"csr"`
}

// issueResponse is the coordinator's EnrollResponse.
type issueResponse struct {
	Site        string    `json:"site"`
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	NotAfter    time.Time `json:"not_after"`
}

// problem is an RFC 9457 problem document, as the admin API answers errors.
type problem struct {
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// HTTPError is an error answer from the coordinator's admin API.
type HTTPError struct {
	// Server is the URL asked.
	Server string
	// Status is the HTTP status code.
	Status int
	// Detail is the problem's detail, or the start of the body.
	Detail string
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s answered %d %s", e.Server, e.Status, http.StatusText(e.Status))
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// maxIssueAnswer bounds an answer of /v1/enroll or /v1/renew.
const maxIssueAnswer = 1 << 20

// ServerURL checks an admin API address, "https://host:port" or
// "host:port", and returns it as "https://host:port". The admin API is
// HTTPS only.
func ServerURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("no server: give the coordinators' admin URL, https://HOST:PORT")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("server %q: %w", s, err)
	case u.Scheme != "https":
		return "", fmt.Errorf("server %q: the admin API is HTTPS only (https://HOST:PORT)", s)
	case u.Host == "":
		return "", fmt.Errorf("server %q: want https://HOST:PORT", s)
	case u.Path != "" && u.Path != "/":
		return "", fmt.Errorf("server %q: give the server without a path", s)
	}
	return "https://" + u.Host, nil
}

// issueClient is an HTTPS client for the admin API that trusts only pool
// and accepts only a coordinator's certificate. cert, if set, supplies the
// client certificate of each new connection (renewal). Keep-alives are off:
// each renewal authenticates afresh with the certificate current then.
func issueClient(pool *x509.CertPool, now func() time.Time, cert func() *tls.Certificate) *http.Client {
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		Time:       now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := pki.PeerIdentity(cs)
			if err == nil && id.Role != pki.RoleCoordinator {
				err = &pki.RoleError{Got: id.Role, Want: []string{pki.RoleCoordinator}}
			}
			return err
		},
	}
	if cert != nil {
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert(), nil }
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true, TLSHandshakeTimeout: 10 * time.Second,
			ForceAttemptHTTP2: true, Proxy: http.ProxyFromEnvironment},
	}
}

// postIssue posts body to server+path and decodes the certificate answer.
// An error answer is an *HTTPError; a connection error names the server.
//
// The body passes the egress guard g (kind egress.KindEnroll or KindRenew),
// which checks it and records it in the egress log.
func postIssue(ctx context.Context, client *http.Client, g *egress.Guard, kind, server, path string, body issueRequest) (*issueResponse, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if b, err = g.CertRequest(kind, b); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	var cve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &cve), errors.Is(err, pki.ErrRoleNotAllowed), errors.Is(err, pki.ErrNoIdentity):
		return nil, fmt.Errorf("the server at %s is not a coordinator of this federation: its certificate does not chain to the federation CA given, or is not a coordinator's (check the server address and the CA certificate): %w", server, err)
	case err != nil:
		return nil, fmt.Errorf("cannot reach the coordinators' admin API at %s (is outbound TCP to it open, and is it a coordinator's --admin-addr?): %w", server, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxIssueAnswer))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s%s: %w", server, path, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		he := &HTTPError{Server: server + path, Status: resp.StatusCode}
		var p problem
		if json.Unmarshal(raw, &p) == nil && p.Detail != "" {
			he.Detail = p.Detail
		} else {
			he.Detail = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
		}
		return nil, he
	}
	out := new(issueResponse)
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("%w: the answer of %s%s does not decode: %w", ErrBadIssue, server, path, err)
	}
	return out, nil
}

// newKeyAndCSR makes an ECDSA P-256 key and a certificate request for it.
// The coordinator decides the identity; the request names none.
func newKeyAndCSR() (*ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, "", fmt.Errorf("certificate request: %w", err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// checkIssued verifies an issued certificate: it chains to pool at now,
// is for client authentication, names a site (site, when not empty) and
// holds pub. It returns the parsed certificate and the PEM to keep.
func checkIssued(r *issueResponse, pool *x509.CertPool, pub crypto.PublicKey, site string, now time.Time) (*x509.Certificate, []byte, error) {
	block, _ := pem.Decode([]byte(r.Certificate))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%w: the answer holds no PEM certificate", ErrBadIssue)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadIssue, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("%w: it does not chain to the federation CA: %w", ErrBadIssue, err)
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadIssue, err)
	}
	if id.Role != pki.RoleSite {
		return nil, nil, fmt.Errorf("%w: it is a %s certificate, not a site certificate", ErrBadIssue, id.Role)
	}
	if site != "" && id.ID != site {
		return nil, nil, fmt.Errorf("%w: it is for site %q, this gateway is %q", ErrBadIssue, id.ID, site)
	}
	if r.Site != "" && r.Site != id.ID {
		return nil, nil, fmt.Errorf("%w: the answer says site %q, the certificate %q", ErrBadIssue, r.Site, id.ID)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := cert.PublicKey.(equaler); !ok || !k.Equal(pub) {
		return nil, nil, fmt.Errorf("%w: it does not hold this gateway's key", ErrBadIssue)
	}
	return cert, pem.EncodeToMemory(block), nil
}

// encodeKey is the PEM (PKCS #8) of a private key.
func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeAtomic writes data to path through a temporary file in the same
// directory (fsynced, then renamed over path).
func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// EnrollConfig is what `cohort agent enroll` needs.
type EnrollConfig struct {
	// Server is the coordinators' admin API, https://host:port (any node).
	Server string
	// CA is the federation CA certificate file the operator gave; the
	// server's certificate and the issued one must chain to it. It is
	// copied to DATA_DIR/tls/ca.crt.
	CA string
	// Token is the one-time enrollment token.
	Token string
	// DataDir is the agent's data directory; the files go to DataDir/tls.
	DataDir string
	// Force replaces an existing key and certificate.
	Force bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Enrolled is the outcome of Enroll.
type Enrolled struct {
	// Site is the site id the certificate names.
	Site string
	// NotAfter is when the certificate expires.
	NotAfter time.Time
	// Files are the CA, certificate and key written.
	Files pki.Files
}

// Enroll enrolls this gateway: see EnrollConfig. The new key is written
// (mode 0600, directory 0700) before the request is sent, under a
// temporary name that replaces DATA_DIR/tls/site.key only once the
// certificate for it has been received and checked; a failed enrollment
// leaves the existing files as they were.
func Enroll(ctx context.Context, cfg EnrollConfig) (*Enrolled, error) {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	server, err := ServerURL(cfg.Server)
	if err != nil {
		return nil, err
	}
	token := strings.TrimSpace(cfg.Token)
	switch {
	case cfg.CA == "":
		return nil, errors.New("the federation CA certificate is required (the operator gives it with the token), to know the coordinator is the federation's")
	case token == "":
		return nil, errors.New("no enrollment token")
	case cfg.DataDir == "":
		return nil, errors.New("no data directory")
	}
	caPEM, err := os.ReadFile(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("federation CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("federation CA %s: %w", cfg.CA, pki.ErrNoCertificates)
	}
	files := DefaultTLSFiles(cfg.DataDir)
	if !cfg.Force {
		for _, p := range []string{files.Cert, files.Key} {
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%w: %s exists (pass --force to replace the key and certificate; the running agent must then be restarted)", ErrEnrolled, p)
			}
		}
	}
	dir := filepath.Dir(files.Key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // #nosec G302 -- a directory: 0700 is owner-only (the x bit lets the owner enter it)
		return nil, fmt.Errorf("tls directory: %w", err)
	}

	key, csr, err := newKeyAndCSR()
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	// The key is on disk (owner-only) before the token is spent.
	pendingKey := files.Key + ".enroll"
	if err := writeAtomic(pendingKey, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write the new key: %w", err)
	}
	defer os.Remove(pendingKey)

	guard, err := egress.New(egress.Config{LogPath: filepath.Join(cfg.DataDir, egress.LogFile), Now: now})
	if err != nil {
		return nil, fmt.Errorf("egress log: %w", err)
	}
	defer guard.Close()
	resp, err := postIssue(ctx, issueClient(pool, now, nil), guard, egress.KindEnroll, server, "/v1/enroll", issueRequest{Token: token, CSR: csr})
	var he *HTTPError
	switch {
	case errors.As(err, &he) && he.Status == http.StatusUnauthorized:
		return nil, fmt.Errorf("%w (it is used, expired, unknown, or its site was revoked; ask the federation operator for a new one): %w", ErrTokenRefused, err)
	case errors.As(err, &he) && he.Status == http.StatusNotImplemented:
		return nil, fmt.Errorf("the coordinators do not issue certificates (the operator must set enroll.ca_dir): %w", err)
	case err != nil:
		return nil, err
	}
	cert, certPEM, err := checkIssued(resp, pool, key.Public(), "", now())
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(files.CA, caPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", files.CA, err)
	}
	if err := os.Rename(pendingKey, files.Key); err != nil {
		return nil, fmt.Errorf("write %s: %w", files.Key, err)
	}
	if err := writeAtomic(files.Cert, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", files.Cert, err)
	}
	id, _ := pki.IdentityOf(cert)
	return &Enrolled{Site: id.ID, NotAfter: cert.NotAfter, Files: files}, nil
}
