package egress

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
)

func csrPEM(t *testing.T, tmpl *x509.CertificateRequest) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestCertRequestsPassTheGuard: enrollment and renewal bodies are checked
// (a request that names anything, or carries other fields, is refused)
// and recorded in the egress log.
func TestCertRequestsPassTheGuard(t *testing.T) {
	g, logPath, tapped := newGuard(t)
	plain := csrPEM(t, &x509.CertificateRequest{})
	named := csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "Jane Doe"}})
	withSAN := csrPEM(t, &x509.CertificateRequest{EmailAddresses: []string{"jane@example.org"}})
	body := func(v map[string]string) []byte { b, _ := json.Marshal(v); return b }
	for _, c := range []struct {
		name string
		kind string
		body []byte
		ok   bool
	}{
		{"enroll", KindEnroll, body(map[string]string{"token": "cohortenroll_e0123456789_x", "csr": plain}), true},
		{"renew", KindRenew, body(map[string]string{"csr": plain}), true},
		{"renew with a token", KindRenew, body(map[string]string{"token": "x", "csr": plain}), false},
		{"enroll without a token", KindEnroll, body(map[string]string{"csr": plain}), false},
		{"a name in the request", KindRenew, body(map[string]string{"csr": named}), false},
		{"an email in the request", KindRenew, body(map[string]string{"csr": withSAN}), false},
		{"another field", KindRenew, body(map[string]string{"csr": plain, "patient": "x"}), false},
		{"not a CSR", KindRenew, body(map[string]string{"csr": "hello"}), false},
		{"trailing data", KindRenew, append(body(map[string]string{"csr": plain}), []byte("{}")...), false},
		{"not a request kind", KindStats, body(map[string]string{"csr": plain}), false},
	} {
		_, err := g.CertRequest(c.kind, c.body)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
		if err != nil && !errors.Is(err, ErrPayload) && !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: %v is neither ErrPayload nor ErrForbidden", c.name, err)
		}
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "\n"); n != 2 || !strings.Contains(string(log), `"kind":"enroll"`) || !strings.Contains(string(log), `"kind":"renew"`) {
		t.Fatalf("egress log:\n%s", log)
	}
	if strings.Contains(tapped.String(), "Jane") {
		t.Fatal("a refused request reached the tap")
	}
}
