package bulk_test

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir/bulk"
	"github.com/cohort-fl/cohort/agent/fhir/bulktest"
	"github.com/golang-jwt/jwt/v5"
)

// tokenStub is a token endpoint that records the forms it receives and
// answers with fixed tokens.
type tokenStub struct {
	mu    sync.Mutex
	forms []url.Values
	reply string // response body; "" = a valid token
	code  int    // response status; 0 = 200
}

func (s *tokenStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusAccepted) // any other endpoint: accept
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.forms = append(s.forms, r.PostForm)
	reply, code := s.reply, s.code
	s.mu.Unlock()
	if reply == "" {
		reply = `{"access_token":"abc","token_type":"Bearer","expires_in":300}`
	}
	if code == 0 {
		code = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(reply))
}

// TestAssertion checks the client assertion against SMART Backend
// Services with an independent JWT implementation (golang-jwt).
func TestAssertion(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  string
	}{
		{"ES384", ecKey(), "ES384"},
		{"RS384", rsaKey(), "RS384"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &tokenStub{}
			srv := httptest.NewServer(stub)
			defer srv.Close()
			clock := bulktest.NewClock(testStart)
			tokenURL := srv.URL + "/auth/token"
			c, err := bulk.New(bulk.Config{
				BaseURL: srv.URL + "/fhir", ClientID: testClientID, PrivateKey: tc.key, KeyID: testKeyID,
				TokenURL: tokenURL, Clock: clock, Scope: "system/Patient.rs system/Observation.rs",
			})
			if err != nil {
				t.Fatal(err)
			}
			// Two exports' worth of tokens: the second after expiry.
			ctx := context.Background()
			for range 2 {
				if err := c.Cancel(ctx, srv.URL+"/fhir/_status/x"); err != nil {
					t.Fatal(err)
				}
				clock.Advance(10 * time.Minute)
			}
			stub.mu.Lock()
			forms := stub.forms
			stub.mu.Unlock()
			if len(forms) != 2 {
				t.Fatalf("%d token requests, want 2", len(forms))
			}
			jtis := map[string]bool{}
			for i, form := range forms {
				if form.Get("grant_type") != "client_credentials" ||
					form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" ||
					form.Get("scope") != "system/Patient.rs system/Observation.rs" {
					t.Errorf("form %v", form)
				}
				assertion := form.Get("client_assertion")
				hdr, _, _ := strings.Cut(assertion, ".")
				var h map[string]any
				if b, err := base64.RawURLEncoding.DecodeString(hdr); err != nil || json.Unmarshal(b, &h) != nil {
					t.Fatalf("header does not decode: %v", err)
				}
				if h["alg"] != tc.alg || h["kid"] != testKeyID || h["typ"] != "JWT" || len(h) != 3 {
					t.Errorf("header %v", h)
				}
				now := testStart.Add(time.Duration(i) * 10 * time.Minute)
				var claims jwt.RegisteredClaims
				_, err := jwt.NewParser(
					jwt.WithValidMethods([]string{tc.alg}),
					jwt.WithAudience(tokenURL),
					jwt.WithIssuer(testClientID),
					jwt.WithSubject(testClientID),
					jwt.WithExpirationRequired(),
					jwt.WithTimeFunc(func() time.Time { return now }),
				).ParseWithClaims(assertion, &claims, func(*jwt.Token) (any, error) { return tc.key.Public(), nil })
				if err != nil {
					t.Fatalf("assertion does not verify: %v", err)
				}
				if life := claims.ExpiresAt.Sub(now); life <= 0 || life > 5*time.Minute {
					t.Errorf("assertion lifetime %v", life)
				}
				if claims.ID == "" || jtis[claims.ID] {
					t.Errorf("jti %q empty or reused", claims.ID)
				}
				jtis[claims.ID] = true
			}
		})
	}
}

func TestTokenResponses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		reply  string
		issues []string
	}{
		{"invalid_client", 400, `{"error":"invalid_client","error_description":"Zqxcanary"}`, []string{"invalid_client"}},
		{"server error without json", 500, `oops`, nil},
		{"unsafe error code dropped", 400, `{"error":"<script>"}`, nil},
		{"no access token", 200, `{"token_type":"bearer","expires_in":300}`, nil},
		{"not bearer", 200, `{"access_token":"x","token_type":"mac","expires_in":300}`, nil},
		{"negative expiry", 200, `{"access_token":"x","token_type":"bearer","expires_in":-5}`, nil},
		{"not json", 200, `<html>`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &tokenStub{reply: tc.reply, code: tc.code}
			srv := httptest.NewServer(stub)
			defer srv.Close()
			c, err := bulk.New(bulk.Config{
				BaseURL: srv.URL + "/fhir", ClientID: testClientID, PrivateKey: ecKey(),
				TokenURL: srv.URL + "/token", Clock: bulktest.NewClock(testStart), MaxRetries: 1,
			})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Cancel(context.Background(), srv.URL+"/fhir/_status/x")
			if !errors.Is(err, bulk.ErrAuth) {
				t.Fatalf("err = %v, want ErrAuth", err)
			}
			if strings.Contains(err.Error(), canary) || strings.Contains(err.Error(), "<") {
				t.Errorf("error carries server text: %v", err)
			}
			var se *bulk.StatusError
			if tc.code != 200 {
				if !errors.As(err, &se) || se.StatusCode != tc.code || strings.Join(se.Issues, ",") != strings.Join(tc.issues, ",") {
					t.Errorf("err = %#v", err)
				}
			}
		})
	}
}

func TestDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		code    int
		wantErr error
	}{
		{"relative token endpoint", `{"token_endpoint":"/auth/token"}`, 200, nil},
		{"alg list without ours", `{"token_endpoint":"/auth/token","token_endpoint_auth_signing_alg_values_supported":["RS384"]}`, 200, bulk.ErrDiscovery},
		{"no token endpoint", `{}`, 200, bulk.ErrDiscovery},
		{"insecure token endpoint", `{"token_endpoint":"http://auth.example.org/token"}`, 200, bulk.ErrDiscovery},
		{"404", `{}`, 404, bulk.ErrDiscovery},
		{"not json", `<html>`, 200, bulk.ErrDiscovery},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &tokenStub{}
			mux := http.NewServeMux()
			mux.Handle("/auth/token", stub)
			mux.HandleFunc("/fhir/.well-known/smart-configuration", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				_, _ = w.Write([]byte(tc.body))
			})
			mux.HandleFunc("/fhir/_status/x", func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer abc" {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.WriteHeader(http.StatusAccepted)
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			c, err := bulk.New(bulk.Config{
				BaseURL: srv.URL + "/fhir/", ClientID: testClientID, PrivateKey: ecKey(),
				Clock: bulktest.NewClock(testStart),
			})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Cancel(context.Background(), srv.URL+"/fhir/_status/x")
			if tc.wantErr == nil && err != nil {
				t.Fatalf("cancel: %v", err)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
