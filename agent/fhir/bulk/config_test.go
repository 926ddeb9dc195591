package bulk_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir/bulk"
)

func TestConfigValidate(t *testing.T) {
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	valid := func() bulk.Config {
		c := bulk.DefaultConfig()
		c.BaseURL = "https://ehr.example.org/fhir"
		c.ClientID = "site"
		c.PrivateKey = ecKey()
		return c
	}
	for _, tc := range []struct {
		name string
		mod  func(*bulk.Config)
		ok   bool
	}{
		{"valid", func(*bulk.Config) {}, true},
		{"valid rsa", func(c *bulk.Config) { c.PrivateKey = rsaKey() }, true},
		{"valid loopback http", func(c *bulk.Config) { c.BaseURL = "http://127.0.0.1:8080/fhir" }, true},
		{"valid anonymous", func(c *bulk.Config) { c.ClientID = ""; c.PrivateKey = nil }, true},
		{"zero durations take defaults", func(c *bulk.Config) { c.PollMin, c.PollMax, c.MaxWait, c.AssertionLifetime = 0, 0, 0, 0 }, true},
		{"no base url", func(c *bulk.Config) { c.BaseURL = "" }, false},
		{"http off loopback", func(c *bulk.Config) { c.BaseURL = "http://ehr.example.org/fhir" }, false},
		{"relative base url", func(c *bulk.Config) { c.BaseURL = "/fhir" }, false},
		{"credentials in url", func(c *bulk.Config) { c.BaseURL = "https://u:p@ehr.example.org/fhir" }, false},
		{"ftp", func(c *bulk.Config) { c.BaseURL = "ftp://ehr.example.org/fhir" }, false},
		{"unknown level", func(c *bulk.Config) { c.Level = "hospital" }, false},
		{"group without id", func(c *bulk.Config) { c.Level = bulk.LevelGroup }, false},
		{"group with bad id", func(c *bulk.Config) { c.Level = bulk.LevelGroup; c.GroupID = "a/b" }, false},
		{"bad type", func(c *bulk.Config) { c.Types = []string{"Patient", "observation"} }, false},
		{"client id without key", func(c *bulk.Config) { c.PrivateKey = nil }, false},
		{"key without client id", func(c *bulk.Config) { c.ClientID = "" }, false},
		{"P-256 key", func(c *bulk.Config) { c.PrivateKey = p256 }, false},
		{"insecure token url", func(c *bulk.Config) { c.TokenURL = "http://auth.example.org/token" }, false},
		{"assertion lifetime above 5m", func(c *bulk.Config) { c.AssertionLifetime = 6 * time.Minute }, false},
		{"poll max below min", func(c *bulk.Config) { c.PollMin, c.PollMax = time.Minute, time.Second }, false},
		{"negative retries", func(c *bulk.Config) { c.MaxRetries = -1 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mod(&c)
			err := c.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.ok && !errors.Is(err, bulk.ErrInvalidConfig) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
			}
			if _, err := bulk.New(c); (err == nil) != tc.ok {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestLoadPrivateKey(t *testing.T) {
	dir := t.TempDir()
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	ec := ecKey()
	ecSEC1 := must(x509.MarshalECPrivateKey(ec))
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	rsaShort := must(rsa.GenerateKey(rand.Reader, 1024))
	ecParams := pemOf("EC PARAMETERS", []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22})
	for _, tc := range []struct {
		name    string
		data    []byte
		mode    os.FileMode
		wantAlg string
		wantErr error
	}{
		{"pkcs8 ec", pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(ec))), 0o600, bulk.AlgES384, nil},
		{"sec1 ec after ec parameters", append(ecParams, pemOf("EC PRIVATE KEY", ecSEC1)...), 0o400, bulk.AlgES384, nil},
		{"pkcs1 rsa", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey())), 0o600, bulk.AlgRS384, nil},
		{"pkcs8 rsa", pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(rsaKey()))), 0o600, bulk.AlgRS384, nil},
		{"group readable", pemOf("EC PRIVATE KEY", ecSEC1), 0o640, "", bulk.ErrKeyPermissions},
		{"world readable", pemOf("EC PRIVATE KEY", ecSEC1), 0o604, "", bulk.ErrKeyPermissions},
		{"P-256", pemOf("PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(p256))), 0o600, "", bulk.ErrUnsupportedKey},
		{"rsa 1024", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaShort)), 0o600, "", bulk.ErrUnsupportedKey},
		{"encrypted pkcs8", pemOf("ENCRYPTED PRIVATE KEY", []byte{1, 2, 3}), 0o600, "", bulk.ErrUnsupportedKey},
		{"garbage block", pemOf("PRIVATE KEY", []byte("not der")), 0o600, "", bulk.ErrBadKeyFile},
		{"no pem", []byte("hello"), 0o600, "", bulk.ErrBadKeyFile},
		{"certificate only", pemOf("CERTIFICATE", []byte{1}), 0o600, "", bulk.ErrBadKeyFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".pem")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			key, err := bulk.LoadPrivateKey(path)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			jwks, err := bulk.PublicJWKS(key, "")
			if err != nil {
				t.Fatal(err)
			}
			var set struct {
				Keys []map[string]string `json:"keys"`
			}
			if err := json.Unmarshal(jwks, &set); err != nil || len(set.Keys) != 1 {
				t.Fatalf("jwks %s: %v", jwks, err)
			}
			kid, err := bulk.KeyThumbprint(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if k := set.Keys[0]; k["alg"] != tc.wantAlg || k["kid"] != kid || k["use"] != "sig" {
				t.Errorf("jwk %v, want alg %s kid %s", k, tc.wantAlg, kid)
			}
		})
	}
	if _, err := bulk.LoadPrivateKey(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("missing file loaded")
	}
}

// TestThumbprintRFC7638 checks the thumbprint against the RSA example of
// RFC 7638 section 3.1.
func TestThumbprintRFC7638(t *testing.T) {
	n := "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	e := "AQAB"
	pub := &rsa.PublicKey{N: b64int(t, n), E: int(b64int(t, e).Int64())}
	got, err := bulk.KeyThumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("thumbprint %s, want %s", got, want)
	}
}

func b64int(t *testing.T, s string) *big.Int {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return new(big.Int).SetBytes(b)
}
