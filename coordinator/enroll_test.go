package coordinator

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// gateway is a site's key, as `cohort agent enroll` makes it.
type gateway struct {
	key *ecdsa.PrivateKey
	dir string
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &gateway{key: key, dir: t.TempDir()}
}

func (g *gateway) csr(t *testing.T) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, g.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// files writes the issued certificate and the key for pki.Files.Load.
func (g *gateway) files(t *testing.T, r EnrollResponse) pki.Files {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(g.key)
	if err != nil {
		t.Fatal(err)
	}
	f := pki.Files{CA: filepath.Join(g.dir, "ca.crt"), Cert: filepath.Join(g.dir, "site.crt"), Key: filepath.Join(g.dir, "site.key")}
	os.WriteFile(f.CA, []byte(r.CA), 0o644)
	os.WriteFile(f.Cert, []byte(r.Certificate), 0o644)
	os.WriteFile(f.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	return f
}

// renew posts a renewal with the site's certificate as the client's.
func (tc *testCluster) renew(t *testing.T, addr string, f pki.Files, csr string) (int, EnrollResponse, string) {
	t.Helper()
	_, cert, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	conf := tc.clientTLS(t)
	conf.Certificates = []tls.Certificate{cert}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	body, _ := json.Marshal(EnrollRequest{CSR: csr})
	resp, err := client.Post("https://"+addr+"/v1/renew", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out EnrollResponse
	if resp.StatusCode == http.StatusOK {
		json.Unmarshal(raw, &out)
	}
	return resp.StatusCode, out, string(raw)
}

// TestEnrollRenewRevoke: an operator creates a site and an enrollment
// token; a gateway enrolls with its own key and connects; the token
// cannot be used again, nor once expired; the site renews with its
// certificate (through a follower, which vouches for it); revoking the
// site closes its connection and refuses it and its renewals.
func TestEnrollRenewRevoke(t *testing.T) {
	clock := new(fakeClock)
	var caDir string
	tc := startClusterWith(t, 3, nil, nil, func(c *Config) {
		c.Now = clock.now
		caDir = filepath.Dir(c.TLS.CA)
		c.Enroll.CADir = caDir
		c.Enroll.CertTTL = Duration(time.Hour)
	})
	leader, followers := tc.leader(t)
	addr := leader.AdminAddr()
	if code, raw := tc.api(t, "POST", addr, "/v1/sites", map[string]string{"id": "st-new"}, nil); code != http.StatusCreated {
		t.Fatalf("create site: %d %s", code, raw)
	}
	var et EnrollTokenView
	if code, raw := tc.api(t, "POST", addr, "/v1/sites/st-new/enrollment-tokens", nil, &et); code != http.StatusCreated || !strings.HasPrefix(et.Token, enrollPrefix) {
		t.Fatalf("enrollment token: %d %s", code, raw)
	}
	if code, _ := tc.api(t, "POST", addr, "/v1/sites/nowhere/enrollment-tokens", nil, nil); code != http.StatusNotFound {
		t.Errorf("token for an unknown site: %d, want 404", code)
	}

	gw := newGateway(t)
	var got EnrollResponse
	for _, c := range []struct {
		name string
		body EnrollRequest
		want int
	}{
		{"garbage token", EnrollRequest{Token: "nope", CSR: gw.csr(t)}, http.StatusUnauthorized},
		{"bad csr", EnrollRequest{Token: et.Token, CSR: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, http.StatusBadRequest},
		{"enroll", EnrollRequest{Token: et.Token, CSR: gw.csr(t)}, http.StatusCreated},
		{"token reused", EnrollRequest{Token: et.Token, CSR: gw.csr(t)}, http.StatusUnauthorized},
	} {
		var out EnrollResponse
		code, raw := tc.apiAs(t, "", "POST", followers[0].AdminAddr(), "/v1/enroll", c.body, &out)
		if code != c.want {
			t.Fatalf("%s: %d %s, want %d", c.name, code, raw, c.want)
		}
		if code == http.StatusCreated {
			got = out
		}
	}
	block, _ := pem.Decode([]byte(got.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := pki.IdentityOf(cert); err != nil || id.ID != "st-new" || id.Role != pki.RoleSite {
		t.Fatalf("issued identity %v %v", id, err)
	}
	if d := time.Until(cert.NotAfter); d > time.Hour+time.Minute || d < 50*time.Minute {
		t.Errorf("certificate lifetime %s, want 1h", d)
	}
	var sv SiteView
	tc.api(t, "GET", addr, "/v1/sites/st-new", nil, &sv)
	if !sv.CertExpires.Equal(cert.NotAfter.UTC()) {
		t.Errorf("site shows cert expiry %s, want %s", sv.CertExpires, cert.NotAfter)
	}
	files := gw.files(t, got)
	a, err := dialRaw(t, leader.AgentAddr(), files)
	if err != nil {
		t.Fatal(err)
	}
	if w := a.call(t, hello()).GetWelcome(); w.GetSiteId() != "st-new" {
		t.Fatalf("the enrolled gateway was not welcomed: %v", w)
	}

	// An expired token.
	var et2 EnrollTokenView
	tc.api(t, "POST", addr, "/v1/sites/st-new/enrollment-tokens", map[string]string{"ttl": "1h"}, &et2)
	clock.advance(2 * time.Hour)
	if code, raw := tc.apiAs(t, "", "POST", addr, "/v1/enroll", EnrollRequest{Token: et2.Token, CSR: gw.csr(t)}, nil); code != http.StatusUnauthorized || !strings.Contains(raw, "expired") {
		t.Fatalf("expired token: %d %s", code, raw)
	}
	clock.advance(-2 * time.Hour)

	// Renewal with the certificate, through a follower and at the leader.
	gw2 := newGateway(t) // a new key at renewal
	for _, at := range []string{followers[1].AdminAddr(), addr} {
		code, r, raw := tc.renew(t, at, files, gw2.csr(t))
		if code != http.StatusOK || r.Site != "st-new" {
			t.Fatalf("renew via %s: %d %s", at, code, raw)
		}
	}
	// Without a certificate: refused.
	if code, _ := tc.apiAs(t, tc.token, "POST", addr, "/v1/renew", EnrollRequest{CSR: gw2.csr(t)}, nil); code != http.StatusUnauthorized {
		t.Errorf("renew without a certificate: %d, want 401", code)
	}

	// Revocation closes the connection at once and refuses the rest.
	if code, raw := tc.api(t, "POST", addr, "/v1/sites/st-new/revoke", nil, &sv); code != http.StatusOK || sv.Revoked.IsZero() {
		t.Fatalf("revoke: %d %s", code, raw)
	}
	select {
	case <-a.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked site's connection is still open")
	}
	if b, err := dialRaw(t, leader.AgentAddr(), files); err == nil {
		s, err := b.conn.OpenStreamSync(t.Context())
		if err == nil {
			resp, _ := readHello(s)
			if resp.GetWelcome() != nil {
				t.Fatal("a revoked site was welcomed")
			}
		}
	}
	if code, _, raw := tc.renew(t, addr, files, gw2.csr(t)); code != http.StatusForbidden {
		t.Fatalf("renew after revocation: %d %s", code, raw)
	}
	if code, _ := tc.api(t, "POST", addr, "/v1/sites/st-new/enrollment-tokens", nil, nil); code != http.StatusForbidden {
		t.Errorf("enrollment token for a revoked site: %d, want 403", code)
	}
	if got := leader.Stats().SitesRevokedRefused.Load(); got == 0 {
		t.Error("refusals of the revoked site were not counted")
	}
}

// readHello sends hello on s and reads the answer (an error if the
// connection was closed).
func readHello(s io.ReadWriter) (*pb.Envelope, error) {
	if err := protocol.WriteFrame(s, hello()); err != nil {
		return nil, err
	}
	return protocol.ReadFrame(s, 0)
}
