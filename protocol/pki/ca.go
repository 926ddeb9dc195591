package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside a CA directory.
const (
	// CACertFile is the CA certificate's file name inside the CA directory.
	CACertFile = "ca.crt"
	// CAKeyFile is the CA private key's file name inside the CA directory.
	CAKeyFile = "ca.key"
)

// Validity periods.
const (
	// CAValidity is how long a CA made by InitCA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// DefaultCoordinatorValidity is a coordinator certificate's validity when none is given.
	DefaultCoordinatorValidity = 365 * 24 * time.Hour
	// DefaultSiteValidity is a site certificate's validity when none is given.
	DefaultSiteValidity = 90 * 24 * time.Hour
	// Backdate is subtracted from "now" for NotBefore so that peers whose
	// clocks run a little behind accept a freshly issued certificate.
	Backdate = 5 * time.Minute
)

// DefaultCAName is the CA's CommonName when InitCA is given an empty name.
const DefaultCAName = "Cohort federation CA"

// CA is a loaded certificate authority: its certificate and private key.
// A CA is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// InitCA creates dir (mode 0700) holding a new self-signed CA: ca.crt and
// ca.key (mode 0600), an ECDSA P-256 key, valid for CAValidity from now.
// name is the CA's CommonName (DefaultCAName when empty). It refuses to
// overwrite an existing ca.key with ErrExists.
func InitCA(dir, name string, now time.Time) error {
	if name == "" {
		name = DefaultCAName
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: create CA directory: %w", err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	certPath := filepath.Join(dir, CACertFile)
	if _, err := os.Lstat(keyPath); err == nil {
		return fmt.Errorf("%w: %s (refusing to overwrite a CA key)", ErrExists, keyPath)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("pki: create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pemCert(der), 0o644); err != nil { // #nosec G306 -- a CA certificate is public (its key is written 0600 above)
		_ = os.Remove(keyPath)
		return fmt.Errorf("pki: write CA certificate: %w", err)
	}
	return nil
}

// LoadCA loads the CA in dir (ca.crt and ca.key). The key file must not be
// accessible by group or others (ErrKeyPermissions) and must match the
// certificate.
func LoadCA(dir string) (*CA, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA certificate: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("%w: %s", ErrNotCA, certPath)
	}
	if err := checkKeyPermissions(keyPath); err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA key: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key %s: %w", keyPath, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w: %s and %s", ErrKeyMismatch, keyPath, certPath)
	}
	return &CA{cert: cert, certPEM: pemCert(cert.Raw), key: key}, nil
}

// CertPEM returns the CA certificate, PEM encoded. Callers must not modify it.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Certificate returns the parsed CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// IssueRequest describes a certificate to issue with a fresh key.
type IssueRequest struct {
	// Role is RoleCoordinator or RoleSite.
	Role string
	// ID is the coordinator's node id or the site's id.
	ID string
	// Hosts are DNS names or IP addresses for the certificate's SANs:
	// the names agents and Raft peers dial. Coordinators only; at least one.
	Hosts []string
	// Validity is how long the certificate is valid; 0 means
	// DefaultCoordinatorValidity or DefaultSiteValidity by role.
	Validity time.Duration
}

// Issue creates a new ECDSA P-256 key and a certificate for it naming
// req.Role and req.ID, signed by the CA. It returns both PEM encoded.
func (ca *CA) Issue(req IssueRequest, now time.Time) (certPEM, keyPEM []byte, err error) {
	ident := Identity{Role: req.Role, ID: req.ID}
	if err := ident.validate(); err != nil {
		return nil, nil, err
	}
	if req.Validity < 0 {
		return nil, nil, fmt.Errorf("%w: %s", ErrInvalidValidity, req.Validity)
	}
	var dns []string
	var ips []net.IP
	switch req.Role {
	case RoleSite:
		if len(req.Hosts) > 0 {
			return nil, nil, ErrHostsNotAllowed
		}
	case RoleCoordinator:
		dns, ips, err = parseHosts(req.Hosts)
		if err != nil {
			return nil, nil, err
		}
		if len(dns)+len(ips) == 0 {
			return nil, nil, ErrNoHosts
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: req.ID, OrganizationalUnit: []string{req.Role}},
		DNSNames:    dns,
		IPAddresses: ips,
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create certificate request: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse certificate request: %w", err)
	}
	certPEM, err = ca.SignCSR(csr, req.Role, req.ID, req.Validity, now)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// SignCSR signs a certificate for the public key in csr naming role and id,
// and returns it PEM encoded. The identity comes only from role and id: the
// request's Subject and any URI or e-mail SANs are ignored. For coordinators
// the request's DNS and IP SANs are copied (at least one is required); for
// sites they are ignored. validity 0 means the role's default. The key must
// be ECDSA P-256 and the request's signature must verify. NotBefore is
// now-Backdate; NotAfter is capped at the CA's own NotAfter.
//
// This is how enrollment works: the private key never leaves the gateway,
// and the caller (the CA operator or the enrollment service) decides the
// role and id.
func (ca *CA) SignCSR(csr *x509.CertificateRequest, role, id string, validity time.Duration, now time.Time) ([]byte, error) {
	ident := Identity{Role: role, ID: id}
	if err := ident.validate(); err != nil {
		return nil, err
	}
	if csr == nil {
		return nil, fmt.Errorf("%w: nil request", ErrInvalidCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, ErrKeyType
	}
	switch {
	case validity < 0:
		return nil, fmt.Errorf("%w: %s", ErrInvalidValidity, validity)
	case validity == 0 && role == RoleCoordinator:
		validity = DefaultCoordinatorValidity
	case validity == 0:
		validity = DefaultSiteValidity
	}
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("%w: expired %s", ErrCAExpired, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id, OrganizationalUnit: []string{role}},
		NotBefore:    now.Add(-Backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         []*url.URL{ident.uri()},
		// BasicConstraints CA:false, so the leaf can never sign.
		BasicConstraintsValid: true,
	}
	if role == RoleCoordinator {
		dns, ips, err := parseHosts(csr.DNSNames)
		if err != nil {
			return nil, err
		}
		ips = append(ips, csr.IPAddresses...)
		if len(dns)+len(ips) == 0 {
			return nil, ErrNoHosts
		}
		tmpl.DNSNames, tmpl.IPAddresses = dns, ips
	}
	tmpl.ExtKeyUsage = roleExtKeyUsages(role)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate: %w", err)
	}
	return pemCert(der), nil
}

// IssueToFiles issues a certificate like Issue and writes it to
// <dir>/<id>.crt (mode 0644) and its key to <dir>/<id>.key (mode 0600),
// creating dir (mode 0700) if needed. It refuses to overwrite either file
// (ErrExists); remove old files first to re-issue.
func (ca *CA) IssueToFiles(dir string, req IssueRequest, now time.Time) (certPath, keyPath string, err error) {
	// Validate before touching the file system: the id becomes a file name.
	if err := (Identity{Role: req.Role, ID: req.ID}).validate(); err != nil {
		return "", "", err
	}
	certPath = filepath.Join(dir, req.ID+".crt")
	keyPath = filepath.Join(dir, req.ID+".key")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("%w: %s", ErrExists, p)
		}
	}
	certPEM, keyPEM, err := ca.Issue(req, now)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("pki: create output directory: %w", err)
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		_ = os.Remove(keyPath)
		return "", "", err
	}
	return certPath, keyPath, nil
}

// parseHosts splits hosts into DNS names and IP addresses.
func parseHosts(hosts []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("%w %q (want a DNS name or an IP address, without port)", ErrInvalidHost, h)
		}
		dns = append(dns, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	return dns, ips, nil
}

// validDNSName accepts host names made of labels of letters, digits, '-'
// and '_', with an optional leading "*." wildcard label.
func validDNSName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	h = strings.TrimPrefix(h, "*.")
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCertPEM returns the first certificate in data.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, ErrNoCertificates
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// parseKeyPEM returns the first ECDSA P-256 private key (PKCS #8 or SEC 1) in data.
func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, ErrNoKey
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		ec, ok := key.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, ErrKeyType
		}
		return ec, nil
	}
}

// writeNew writes data to a file that must not exist yet.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

// CheckIssued checks that the certificate and key at certPath and keyPath
// (as IssueToFiles writes them) are what req would issue now: a key pair
// that loads (owner-only key, matching certificate), signed by this CA,
// naming req's role and id and each of req's hosts, with the key usages
// of req's role and no others, and valid at now. It lets a setup script
// that runs twice keep what it made the first time.
func (ca *CA) CheckIssued(certPath, keyPath string, req IssueRequest, now time.Time) (*x509.Certificate, error) {
	pair, err := LoadKeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	leaf := pair.Leaf
	if err := leaf.CheckSignatureFrom(ca.cert); err != nil {
		return nil, fmt.Errorf("pki: %s is not signed by this CA: %w", certPath, err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", certPath, err)
	}
	if id.Role != req.Role || id.ID != req.ID {
		return nil, fmt.Errorf("pki: %s names %s, not %s", certPath, id, Identity{Role: req.Role, ID: req.ID})
	}
	if now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("pki: %s is valid from %s to %s, not now", certPath,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, h := range req.Hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			return nil, fmt.Errorf("pki: %s does not name host %s", certPath, h)
		}
	}
	want := roleExtKeyUsages(req.Role)
	sameEKU := len(leaf.ExtKeyUsage) == len(want) && len(leaf.UnknownExtKeyUsage) == 0
	for _, u := range want {
		sameEKU = sameEKU && slices.Contains(leaf.ExtKeyUsage, u)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || !sameEKU {
		return nil, fmt.Errorf("pki: %s does not have the key usages of a %s certificate (digital signature; %s)",
			certPath, req.Role, extKeyUsageNames(want))
	}
	return leaf, nil
}

// roleExtKeyUsages are the extended key usages of a role's certificates:
// coordinators are TLS servers (to agents, Raft peers and admin clients)
// and clients (to Raft peers); sites are clients only.
func roleExtKeyUsages(role string) []x509.ExtKeyUsage {
	if role == RoleCoordinator {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
}

// extKeyUsageNames names the TLS extended key usages for messages.
func extKeyUsageNames(us []x509.ExtKeyUsage) string {
	names := make([]string, 0, len(us))
	for _, u := range us {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			names = append(names, "TLS server")
		case x509.ExtKeyUsageClientAuth:
			names = append(names, "TLS client")
		default:
			names = append(names, fmt.Sprintf("usage %d", u))
		}
	}
	return strings.Join(names, " and ")
}
