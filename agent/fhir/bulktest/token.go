package bulktest

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SMART Backend Services constants.
const (
	grantClientCredentials = "client_credentials"
	assertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" // #nosec G101 -- an OAuth assertion type URN (RFC 7523), not a credential
)

// refusal is a token request refused for a reason.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

func refuse(reason string) error { return &refusal{reason} }

// discovery serves .well-known/smart-configuration.
func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counters.Discovery++
	s.mu.Unlock()
	if len(s.cfg.Clients) == 0 {
		outcome(w, http.StatusNotFound, "not-found", "no authorization configured")
		return
	}
	writeJSON(w, http.StatusOK, "application/json", map[string]any{
		"token_endpoint":                                   s.TokenURL(),
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"ES384", "RS384"},
		"grant_types_supported":                            []string{grantClientCredentials},
		"scopes_supported":                                 []string{"system/*.read", "system/*.rs"},
		"capabilities":                                     []string{"client-confidential-asymmetric"},
	})
}

// token is the token endpoint.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		s.refused(w, http.StatusBadRequest, "invalid_request", "not-a-form")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.refused(w, http.StatusBadRequest, "invalid_request", "not-a-form")
		return
	}
	if r.PostForm.Get("grant_type") != grantClientCredentials {
		s.refused(w, http.StatusBadRequest, "unsupported_grant_type", "grant-type")
		return
	}
	if r.PostForm.Get("client_assertion_type") != assertionTypeJWTBearer {
		s.refused(w, http.StatusBadRequest, "invalid_request", "assertion-type")
		return
	}
	scope := r.PostForm.Get("scope")
	if scope == "" {
		s.refused(w, http.StatusBadRequest, "invalid_scope", "no-scope")
		return
	}
	for _, sc := range strings.Fields(scope) {
		if !strings.HasPrefix(sc, "system/") {
			s.refused(w, http.StatusBadRequest, "invalid_scope", "scope")
			return
		}
	}
	if err := s.verifyAssertion(r.PostForm.Get("client_assertion")); err != nil {
		reason := "invalid"
		var rf *refusal
		if errors.As(err, &rf) {
			reason = rf.reason
		}
		s.refused(w, http.StatusUnauthorized, "invalid_client", reason)
		return
	}
	tok := randomID() + randomID()
	s.mu.Lock()
	s.tokens[tok] = s.clock.Now().Add(s.cfg.TokenLifetime)
	s.counters.TokensIssued++
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, "application/json", map[string]any{
		"access_token": tok,
		"token_type":   "bearer",
		"expires_in":   int64(s.cfg.TokenLifetime / time.Second),
		"scope":        scope,
	})
}

// refused counts and answers a refused token request.
func (s *Server) refused(w http.ResponseWriter, status int, code, reason string) {
	s.mu.Lock()
	s.counters.TokensRefused++
	s.lastRefusal = reason
	s.mu.Unlock()
	oauthError(w, status, code)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, "application/json", map[string]string{"error": code})
}

// verifyAssertion checks a SMART Backend Services client assertion: typ
// JWT, alg ES384 or RS384, kid of a key registered for iss, iss = sub = a
// registered client id, aud = this token endpoint, exp in the future and
// no further than MaxAssertionLifetime, a jti not seen before, and the
// signature.
func (s *Server) verifyAssertion(assertion string) error {
	header, _, ok := strings.Cut(assertion, ".")
	if !ok {
		return refuse("malformed")
	}
	hb, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return refuse("malformed")
	}
	var h struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid"`
	}
	if json.Unmarshal(hb, &h) != nil {
		return refuse("malformed")
	}
	if h.Alg != "ES384" && h.Alg != "RS384" {
		return refuse("bad-algorithm")
	}
	if h.Typ != "JWT" {
		return refuse("bad-typ")
	}
	if h.Kid == "" {
		return refuse("missing-kid")
	}

	now := s.clock.Now()
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"ES384", "RS384"}),
		jwt.WithAudience(s.TokenURL()),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	var claims jwt.RegisteredClaims
	_, err = parser.ParseWithClaims(assertion, &claims, func(t *jwt.Token) (any, error) {
		c, ok := t.Claims.(*jwt.RegisteredClaims)
		if !ok {
			return nil, refuse("malformed")
		}
		clients, ok := s.clients[c.Issuer]
		if !ok {
			return nil, refuse("unknown-client")
		}
		if c.Subject != c.Issuer {
			return nil, refuse("sub-mismatch")
		}
		for _, rc := range clients {
			if rc.KeyID != h.Kid {
				continue
			}
			switch rc.PublicKey.(type) {
			case *ecdsa.PublicKey:
				if h.Alg != "ES384" {
					return nil, refuse("bad-algorithm")
				}
			case *rsa.PublicKey:
				if h.Alg != "RS384" {
					return nil, refuse("bad-algorithm")
				}
			}
			return rc.PublicKey, nil
		}
		return nil, refuse("unknown-kid")
	})
	var rf *refusal
	switch {
	case err == nil:
	case errors.As(err, &rf):
		return rf
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return refuse("bad-signature")
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse("expired")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refuse("wrong-audience")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return refuse("missing-claim")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return refuse("not-yet-valid")
	default:
		return refuse("invalid")
	}
	exp := claims.ExpiresAt.Time
	if exp.Sub(now) > s.cfg.MaxAssertionLifetime {
		return refuse("lifetime-too-long")
	}
	if claims.ID == "" {
		return refuse("missing-jti")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for jti, e := range s.jtis {
		if !e.After(now) {
			delete(s.jtis, jti)
		}
	}
	key := claims.Issuer + "\x00" + claims.ID
	if _, used := s.jtis[key]; used {
		return refuse("jti-reused")
	}
	s.jtis[key] = exp
	return nil
}

// authorized reports whether r carries a valid, unexpired access token,
// counting a 401 when not.
func (s *Server) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		if exp, known := s.tokens[tok]; known {
			if s.clock.Now().Before(exp) {
				return true
			}
			delete(s.tokens, tok)
		}
	}
	s.counters.Unauthorized++
	return false
}
