package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newTestCA creates a CA in a fresh temporary directory and loads it.
func newTestCA(t *testing.T, name string, now time.Time) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if err := InitCA(dir, name, now); err != nil {
		t.Fatalf("InitCA: %v", err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return ca, dir
}

func parseLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return cert
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInitCA(t *testing.T) {
	now := time.Now()
	ca, dir := newTestCA(t, "Test CA", now)

	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("dir mode = %04o, want 0700", got)
	}
	if got := fileMode(t, filepath.Join(dir, CAKeyFile)); got != 0o600 {
		t.Errorf("key mode = %04o, want 0600", got)
	}
	c := ca.Certificate()
	if !c.IsCA || c.Subject.CommonName != "Test CA" {
		t.Errorf("CA cert: IsCA=%v CN=%q", c.IsCA, c.Subject.CommonName)
	}
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("CA key type %T, want ECDSA", c.PublicKey)
	}
	if got := c.NotAfter.Sub(now); got < CAValidity-time.Minute || got > CAValidity+time.Minute {
		t.Errorf("CA validity %v, want %v", got, CAValidity)
	}
	if len(ca.CertPEM()) == 0 || !strings.Contains(string(ca.CertPEM()), "BEGIN CERTIFICATE") {
		t.Errorf("CertPEM = %q", ca.CertPEM())
	}

	keyBefore, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	err := InitCA(dir, "Other", now)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second InitCA error = %v, want ErrExists", err)
	}
	keyAfter, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if string(keyBefore) != string(keyAfter) {
		t.Fatal("second InitCA changed ca.key")
	}
}

func TestLoadCAErrors(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		wantErr error
	}{
		{
			name: "key readable by others",
			mutate: func(t *testing.T, dir string) {
				if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrKeyPermissions,
		},
		{
			name: "key from another CA",
			mutate: func(t *testing.T, dir string) {
				_, other := newTestCA(t, "other", now)
				data, err := os.ReadFile(filepath.Join(other, CAKeyFile))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, CAKeyFile), data, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrKeyMismatch,
		},
		{
			name: "certificate is not a CA",
			mutate: func(t *testing.T, dir string) {
				ca, err := LoadCA(dir)
				if err != nil {
					t.Fatal(err)
				}
				certPEM, _, err := ca.Issue(IssueRequest{Role: RoleSite, ID: "s1"}, now)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrNotCA,
		},
		{
			name: "empty certificate file",
			mutate: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, CACertFile), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrNoCertificates,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir := newTestCA(t, "", now)
			tt.mutate(t, dir)
			_, err := LoadCA(dir)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("LoadCA error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestIssueValidation(t *testing.T) {
	ca, _ := newTestCA(t, "", time.Now())
	tests := []struct {
		name    string
		req     IssueRequest
		wantErr error
	}{
		{"uppercase id", IssueRequest{Role: RoleSite, ID: "StMarys"}, ErrInvalidID},
		{"empty id", IssueRequest{Role: RoleSite, ID: ""}, ErrInvalidID},
		{"leading dash", IssueRequest{Role: RoleSite, ID: "-a"}, ErrInvalidID},
		{"leading dot", IssueRequest{Role: RoleSite, ID: ".."}, ErrInvalidID},
		{"slash", IssueRequest{Role: RoleSite, ID: "a/b"}, ErrInvalidID},
		{"too long", IssueRequest{Role: RoleSite, ID: strings.Repeat("a", 64)}, ErrInvalidID},
		{"unknown role", IssueRequest{Role: "admin", ID: "a"}, ErrInvalidRole},
		{"empty role", IssueRequest{Role: "", ID: "a"}, ErrInvalidRole},
		{"site with hosts", IssueRequest{Role: RoleSite, ID: "a", Hosts: []string{"a.example"}}, ErrHostsNotAllowed},
		{"coordinator without hosts", IssueRequest{Role: RoleCoordinator, ID: "c1"}, ErrNoHosts},
		{"host with port", IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"c1.example:7000"}}, ErrInvalidHost},
		{"host with space", IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"c1 example"}}, ErrInvalidHost},
		{"empty host", IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{""}}, ErrInvalidHost},
		{"negative validity", IssueRequest{Role: RoleSite, ID: "a", Validity: -time.Hour}, ErrInvalidValidity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ca.Issue(tt.req, time.Now())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Issue error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("longest id", func(t *testing.T) {
		if _, _, err := ca.Issue(IssueRequest{Role: RoleSite, ID: strings.Repeat("a", 63)}, time.Now()); err != nil {
			t.Fatalf("Issue: %v", err)
		}
	})
}

func TestIssue(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, "", now)
	tests := []struct {
		name         string
		req          IssueRequest
		wantValidity time.Duration
		wantEKU      []x509.ExtKeyUsage
		wantDNS      []string
		wantIPs      []string
	}{
		{
			name:         "coordinator defaults",
			req:          IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"C1.Example.org", "127.0.0.1", "::1", "[fe80::1]"}},
			wantValidity: DefaultCoordinatorValidity,
			wantEKU:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			wantDNS:      []string{"c1.example.org"},
			wantIPs:      []string{"127.0.0.1", "::1", "fe80::1"},
		},
		{
			name:         "site defaults",
			req:          IssueRequest{Role: RoleSite, ID: "st-marys"},
			wantValidity: DefaultSiteValidity,
			wantEKU:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:         "explicit validity",
			req:          IssueRequest{Role: RoleSite, ID: "s2", Validity: 720 * time.Hour},
			wantValidity: 720 * time.Hour,
			wantEKU:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
		{
			name:         "capped at CA expiry",
			req:          IssueRequest{Role: RoleSite, ID: "s3", Validity: 2 * CAValidity},
			wantValidity: CAValidity,
			wantEKU:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.Issue(tt.req, now)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			cert := parseLeaf(t, certPEM)
			key, err := parseKeyPEM(keyPEM)
			if err != nil {
				t.Fatalf("parse key: %v", err)
			}
			if !key.PublicKey.Equal(cert.PublicKey) {
				t.Error("key does not match certificate")
			}
			if cert.IsCA {
				t.Error("leaf is a CA")
			}
			if got := cert.NotAfter.Sub(now); got < tt.wantValidity-time.Second || got > tt.wantValidity+time.Second {
				t.Errorf("validity = %v, want %v", got, tt.wantValidity)
			}
			if got := now.Sub(cert.NotBefore); got < Backdate-time.Second || got > Backdate+time.Second {
				t.Errorf("NotBefore = now-%v, want now-%v", got, Backdate)
			}
			if !equal(cert.ExtKeyUsage, tt.wantEKU) {
				t.Errorf("ExtKeyUsage = %v, want %v", cert.ExtKeyUsage, tt.wantEKU)
			}
			if !equal(cert.DNSNames, tt.wantDNS) {
				t.Errorf("DNSNames = %v, want %v", cert.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !equal(ips, tt.wantIPs) {
				t.Errorf("IPAddresses = %v, want %v", ips, tt.wantIPs)
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != "cohort:"+tt.req.Role+"/"+tt.req.ID {
				t.Errorf("URIs = %v", cert.URIs)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: poolOf(ca), CurrentTime: now, KeyUsages: tt.wantEKU}); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func poolOf(ca *CA) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	return pool
}

func TestIdentityOf(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, "", now)

	t.Run("round trip", func(t *testing.T) {
		for _, req := range []IssueRequest{
			{Role: RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}},
			{Role: RoleSite, ID: "st-marys.icu_2"},
		} {
			certPEM, _, err := ca.Issue(req, now)
			if err != nil {
				t.Fatal(err)
			}
			got, err := IdentityOf(parseLeaf(t, certPEM))
			if err != nil {
				t.Fatalf("IdentityOf: %v", err)
			}
			if want := (Identity{Role: req.Role, ID: req.ID}); got != want {
				t.Errorf("IdentityOf = %+v, want %+v", got, want)
			}
			if got.String() != "cohort:"+req.Role+"/"+req.ID {
				t.Errorf("String = %q", got.String())
			}
		}
	})

	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name string
		cn   string
		ou   []string
		uris []*url.URL
	}{
		{"no URI", "s1", []string{"site"}, nil},
		{"other URI scheme only", "s1", []string{"site"}, []*url.URL{uri("spiffe://cohort/site/s1")}},
		{"two identity URIs", "s1", []string{"site"}, []*url.URL{uri("cohort:site/s1"), uri("cohort:site/s2")}},
		{"common name mismatch", "s2", []string{"site"}, []*url.URL{uri("cohort:site/s1")}},
		{"OU mismatch", "s1", []string{"coordinator"}, []*url.URL{uri("cohort:site/s1")}},
		{"two OUs", "s1", []string{"site", "coordinator"}, []*url.URL{uri("cohort:site/s1")}},
		{"unknown role", "s1", []string{"admin"}, []*url.URL{uri("cohort:admin/s1")}},
		{"invalid id", "S1", []string{"site"}, []*url.URL{uri("cohort:site/S1")}},
		{"no slash", "s1", []string{"site"}, []*url.URL{uri("cohort:site")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			serial, _ := newSerial()
			tmpl := &x509.Certificate{
				SerialNumber: serial,
				Subject:      pkix.Name{CommonName: tt.cn, OrganizationalUnit: tt.ou},
				NotBefore:    now.Add(-time.Hour),
				NotAfter:     now.Add(time.Hour),
				URIs:         tt.uris,
				ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if id, err := IdentityOf(cert); !errors.Is(err, ErrNoIdentity) {
				t.Fatalf("IdentityOf = %+v, %v; want ErrNoIdentity", id, err)
			}
		})
	}
	t.Run("nil", func(t *testing.T) {
		if _, err := IdentityOf(nil); !errors.Is(err, ErrNoIdentity) {
			t.Fatalf("IdentityOf(nil) error = %v", err)
		}
	})
}

func TestSignCSR(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, "", now)

	makeCSR := func(t *testing.T, curve elliptic.Curve, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
		t.Helper()
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		return csr
	}
	evil, _ := url.Parse("cohort:coordinator/evil")
	greedy := &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "evil", OrganizationalUnit: []string{RoleCoordinator}},
		URIs:        []*url.URL{evil},
		DNSNames:    []string{"coordinator.example"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
	}

	t.Run("identity comes from arguments, not the request", func(t *testing.T) {
		certPEM, err := ca.SignCSR(makeCSR(t, elliptic.P256(), greedy), RoleSite, "s1", 0, now)
		if err != nil {
			t.Fatalf("SignCSR: %v", err)
		}
		cert := parseLeaf(t, certPEM)
		id, err := IdentityOf(cert)
		if err != nil || id != (Identity{Role: RoleSite, ID: "s1"}) {
			t.Fatalf("IdentityOf = %+v, %v", id, err)
		}
		if len(cert.URIs) != 1 || len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 {
			t.Errorf("site cert SANs: URIs=%v DNS=%v IPs=%v", cert.URIs, cert.DNSNames, cert.IPAddresses)
		}
	})
	t.Run("coordinator keeps DNS and IP SANs", func(t *testing.T) {
		certPEM, err := ca.SignCSR(makeCSR(t, elliptic.P256(), greedy), RoleCoordinator, "c1", 0, now)
		if err != nil {
			t.Fatalf("SignCSR: %v", err)
		}
		cert := parseLeaf(t, certPEM)
		if len(cert.DNSNames) != 1 || len(cert.IPAddresses) != 1 || len(cert.URIs) != 1 || cert.URIs[0].String() != "cohort:coordinator/c1" {
			t.Errorf("coordinator SANs: URIs=%v DNS=%v IPs=%v", cert.URIs, cert.DNSNames, cert.IPAddresses)
		}
	})

	tampered := makeCSR(t, elliptic.P256(), &x509.CertificateRequest{})
	tampered.Signature = append([]byte(nil), tampered.Signature...)
	tampered.Signature[len(tampered.Signature)-1] ^= 0xff
	tests := []struct {
		name    string
		csr     *x509.CertificateRequest
		role    string
		id      string
		wantErr error
	}{
		{"P-384 key", makeCSR(t, elliptic.P384(), &x509.CertificateRequest{}), RoleSite, "s1", ErrKeyType},
		{"bad signature", tampered, RoleSite, "s1", ErrInvalidCSR},
		{"nil request", nil, RoleSite, "s1", ErrInvalidCSR},
		{"bad id", makeCSR(t, elliptic.P256(), &x509.CertificateRequest{}), RoleSite, "S 1", ErrInvalidID},
		{"bad role", makeCSR(t, elliptic.P256(), &x509.CertificateRequest{}), "root", "s1", ErrInvalidRole},
		{"coordinator without SANs", makeCSR(t, elliptic.P256(), &x509.CertificateRequest{}), RoleCoordinator, "c1", ErrNoHosts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.SignCSR(tt.csr, tt.role, tt.id, 0, now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("SignCSR error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("expired CA", func(t *testing.T) {
		_, err := ca.SignCSR(makeCSR(t, elliptic.P256(), &x509.CertificateRequest{}), RoleSite, "s1", 0, now.Add(2*CAValidity))
		if !errors.Is(err, ErrCAExpired) {
			t.Fatalf("SignCSR error = %v, want ErrCAExpired", err)
		}
	})
}

func TestIssueToFiles(t *testing.T) {
	now := time.Now()
	ca, caDir := newTestCA(t, "", now)
	out := filepath.Join(t.TempDir(), "certs")

	certPath, keyPath, err := ca.IssueToFiles(out, IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}}, now)
	if err != nil {
		t.Fatalf("IssueToFiles: %v", err)
	}
	if certPath != filepath.Join(out, "c1.crt") || keyPath != filepath.Join(out, "c1.key") {
		t.Errorf("paths = %s, %s", certPath, keyPath)
	}
	if got := fileMode(t, keyPath); got != 0o600 {
		t.Errorf("key mode = %04o, want 0600", got)
	}
	pool, cert, err := Files{CA: filepath.Join(caDir, CACertFile), Cert: certPath, Key: keyPath}.Load()
	if err != nil {
		t.Fatalf("Files.Load: %v", err)
	}
	if id, err := IdentityOf(cert.Leaf); err != nil || id.ID != "c1" {
		t.Errorf("IdentityOf = %+v, %v", id, err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("Verify: %v", err)
	}

	t.Run("refuses to overwrite", func(t *testing.T) {
		before, _ := os.ReadFile(keyPath)
		_, _, err := ca.IssueToFiles(out, IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}}, now)
		if !errors.Is(err, ErrExists) {
			t.Fatalf("error = %v, want ErrExists", err)
		}
		after, _ := os.ReadFile(keyPath)
		if string(before) != string(after) {
			t.Fatal("key overwritten")
		}
	})
	t.Run("refuses the CA's own file names", func(t *testing.T) {
		caKey := filepath.Join(caDir, CAKeyFile)
		before, _ := os.ReadFile(caKey)
		_, _, err := ca.IssueToFiles(caDir, IssueRequest{Role: RoleSite, ID: "ca"}, now)
		if !errors.Is(err, ErrExists) {
			t.Fatalf("error = %v, want ErrExists", err)
		}
		after, _ := os.ReadFile(caKey)
		if string(before) != string(after) {
			t.Fatal("CA key overwritten")
		}
	})
	t.Run("invalid id writes nothing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "x")
		if _, _, err := ca.IssueToFiles(dir, IssueRequest{Role: RoleSite, ID: "../evil"}, now); !errors.Is(err, ErrInvalidID) {
			t.Fatalf("error = %v, want ErrInvalidID", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("output dir created: %v", err)
		}
	})
}

func TestLoadKeyPairPermissions(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, "", now)
	tests := []struct {
		mode    os.FileMode
		wantErr error
	}{
		{0o600, nil},
		{0o400, nil},
		{0o644, ErrKeyPermissions},
		{0o640, ErrKeyPermissions},
		{0o604, ErrKeyPermissions},
		{0o620, ErrKeyPermissions},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			certPath, keyPath, err := ca.IssueToFiles(t.TempDir(), IssueRequest{Role: RoleSite, ID: "s1"}, now)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(keyPath, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err = LoadKeyPair(certPath, keyPath)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("LoadKeyPair error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && (!strings.Contains(err.Error(), keyPath) || !strings.Contains(err.Error(), fmt.Sprintf("%04o", tt.mode))) {
				t.Errorf("error %q does not name the file and its mode", err)
			}
		})
	}
}

func TestLoadPool(t *testing.T) {
	_, caDir := newTestCA(t, "", time.Now())
	if _, err := LoadPool(filepath.Join(caDir, CACertFile)); err != nil {
		t.Fatalf("LoadPool: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.crt")
	if err := os.WriteFile(empty, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPool(empty); !errors.Is(err, ErrNoCertificates) {
		t.Fatalf("LoadPool(garbage) error = %v, want ErrNoCertificates", err)
	}
	if _, err := LoadPool(filepath.Join(t.TempDir(), "missing.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadPool(missing) error = %v, want ErrNotExist", err)
	}
}

// TestCheckIssued: CheckIssued keeps what IssueToFiles wrote for the same
// request and refuses, naming the reason, a certificate this CA signed
// with another identity, host or key usages.
func TestCheckIssued(t *testing.T) {
	now := time.Now()
	ca, _ := newTestCA(t, "", now)
	dir := t.TempDir()
	req := IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}}
	certPath, keyPath, err := ca.IssueToFiles(dir, req, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CheckIssued(certPath, keyPath, req, now); err != nil {
		t.Fatalf("the certificate just issued: %v", err)
	}
	for _, tt := range []struct {
		name string
		req  IssueRequest
		when time.Time
		want string
	}{
		{"another id", IssueRequest{Role: RoleCoordinator, ID: "c2", Hosts: req.Hosts}, now, "names cohort:coordinator/c1, not cohort:coordinator/c2"},
		{"another host", IssueRequest{Role: RoleCoordinator, ID: "c1", Hosts: []string{"10.0.0.9"}}, now, "does not name host 10.0.0.9"},
		{"expired", req, now.Add(DefaultCoordinatorValidity + time.Hour), "not now"},
	} {
		if _, err := ca.CheckIssued(certPath, keyPath, tt.req, tt.when); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one saying %q", tt.name, err, tt.want)
		}
	}

	// Signed by this CA for the right identity and host, but not with the
	// role's key usages: refused.
	pair, err := LoadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		edit func(*x509.Certificate)
	}{
		{"client only", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }},
		{"an extra usage", func(c *x509.Certificate) {
			c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageCodeSigning)
		}},
		{"any usage", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} }},
		{"certificate signing", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }},
		{"a CA", func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := *pair.Leaf
			tmpl.ExtKeyUsage = slices.Clone(tmpl.ExtKeyUsage)
			tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
			tt.edit(&tmpl)
			der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.cert, pair.Leaf.PublicKey, ca.key)
			if err != nil {
				t.Fatal(err)
			}
			odd := filepath.Join(t.TempDir(), "c1.crt")
			if err := os.WriteFile(odd, pemCert(der), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = ca.CheckIssued(odd, keyPath, req, now)
			if err == nil || !strings.Contains(err.Error(), "does not have the key usages of a coordinator certificate (digital signature; TLS server and TLS client)") {
				t.Fatalf("err = %v, want a refusal for its key usages", err)
			}
		})
	}
}
