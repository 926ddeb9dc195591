package bulk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Assertion and grant constants of SMART Backend Services.
const (
	grantClientCredentials = "client_credentials"
	assertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" // #nosec G101 -- an OAuth assertion type URN (RFC 7523), not a credential
)

// untimedTokenLifetime is how long a token whose response has no
// expires_in is used.
const untimedTokenLifetime = time.Minute

// maxSmallBody bounds JSON bodies that are read whole (discovery, token,
// OperationOutcome).
const maxSmallBody = 1 << 20

// smartConfig is the part of .well-known/smart-configuration the client
// reads.
type smartConfig struct {
	TokenEndpoint string   `json:"token_endpoint"`
	SigningAlgs   []string `json:"token_endpoint_auth_signing_alg_values_supported"`
}

// tokenResponse is an OAuth 2.0 access token response.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   *int64 `json:"expires_in"`
}

// accessToken returns a valid access token, fetching one when none is
// cached or the cached one is within its refresh margin.
func (c *Client) accessToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	if c.token != "" && now.Before(c.refreshAt) {
		return c.token, nil
	}
	tokenURL, err := c.tokenEndpoint(ctx)
	if err != nil {
		return "", err
	}
	tok, lifetime, err := c.fetchToken(ctx, tokenURL)
	if err != nil {
		return "", err
	}
	margin := min(c.cfg.TokenRefreshBefore, lifetime/2)
	c.token = tok
	c.refreshAt = now.Add(lifetime - margin)
	c.tokens++
	c.log.Debug("bulk: access token issued", "token_url", tokenURL, "expires_in", lifetime)
	return tok, nil
}

// dropToken forgets tok if it is still the cached token, so the next
// request fetches a new one.
func (c *Client) dropToken(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == tok {
		c.token = ""
	}
}

// tokenEndpoint returns the configured or discovered token URL. c.mu is
// held.
func (c *Client) tokenEndpoint(ctx context.Context) (string, error) {
	if c.tokenURL != "" {
		return c.tokenURL, nil
	}
	wellKnown := c.base + "/.well-known/smart-configuration"
	resp, err := c.call(ctx, request{op: "discovery", method: http.MethodGet, url: wellKnown,
		accept: "application/json", idempotent: true})
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return "", statusError(resp, "discovery", ErrDiscovery)
	}
	var sc smartConfig
	if err := readJSON(resp.Body, &sc); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrDiscovery, wellKnown, err)
	}
	if sc.TokenEndpoint == "" {
		return "", fmt.Errorf("%w: %s names no token_endpoint", ErrDiscovery, wellKnown)
	}
	u, err := resp.Request.URL.Parse(sc.TokenEndpoint)
	if err != nil {
		return "", fmt.Errorf("%w: token_endpoint does not parse", ErrDiscovery)
	}
	if err := checkURL(u); err != nil {
		return "", fmt.Errorf("%w: token_endpoint: %w", ErrDiscovery, err)
	}
	if len(sc.SigningAlgs) > 0 && !slices.Contains(sc.SigningAlgs, c.alg) {
		return "", fmt.Errorf("%w: server does not accept %s client assertions", ErrDiscovery, c.alg)
	}
	c.tokenURL = u.String()
	c.log.Info("bulk: discovered token endpoint", "token_url", c.tokenURL)
	return c.tokenURL, nil
}

// fetchToken exchanges a fresh client assertion for an access token.
func (c *Client) fetchToken(ctx context.Context, tokenURL string) (string, time.Duration, error) {
	body := func() ([]byte, error) {
		a, err := c.assertion(tokenURL)
		if err != nil {
			return nil, err
		}
		form := url.Values{
			"grant_type":            {grantClientCredentials},
			"client_assertion_type": {assertionTypeJWTBearer},
			"client_assertion":      {a},
			"scope":                 {c.cfg.Scope},
		}
		return []byte(form.Encode()), nil
	}
	resp, err := c.call(ctx, request{op: "token", method: http.MethodPost, url: tokenURL,
		accept: "application/json", body: body, contentType: "application/x-www-form-urlencoded",
		idempotent: true})
	if err != nil {
		return "", 0, err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return "", 0, oauthError(resp)
	}
	var tr tokenResponse
	if err := readJSON(resp.Body, &tr); err != nil {
		return "", 0, fmt.Errorf("%w: token response: %w", ErrAuth, err)
	}
	if tr.AccessToken == "" || strings.ContainsAny(tr.AccessToken, " \t\r\n") {
		return "", 0, fmt.Errorf("%w: token response has no usable access_token", ErrAuth)
	}
	if !strings.EqualFold(tr.TokenType, "bearer") {
		return "", 0, fmt.Errorf("%w: token type is not bearer", ErrAuth)
	}
	lifetime := untimedTokenLifetime
	if tr.ExpiresIn != nil {
		if *tr.ExpiresIn <= 0 || *tr.ExpiresIn > 366*24*3600 {
			return "", 0, fmt.Errorf("%w: expires_in %d out of range", ErrAuth, *tr.ExpiresIn)
		}
		lifetime = time.Duration(*tr.ExpiresIn) * time.Second
	}
	return tr.AccessToken, lifetime, nil
}

// assertion returns a signed JWT client assertion for the token endpoint
// aud.
func (c *Client) assertion(aud string) (string, error) {
	now := c.clock.Now()
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("assertion jti: %w", err)
	}
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{c.alg, c.kid, "JWT"})
	if err != nil {
		return "", fmt.Errorf("assertion header: %w", err)
	}
	claims, err := json.Marshal(struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Aud string `json:"aud"`
		Exp int64  `json:"exp"`
		Iat int64  `json:"iat"`
		Jti string `json:"jti"`
	}{c.cfg.ClientID, c.cfg.ClientID, aud, now.Add(c.cfg.AssertionLifetime).Unix(), now.Unix(), hex.EncodeToString(jti[:])})
	if err != nil {
		return "", fmt.Errorf("assertion claims: %w", err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sig, err := sign(c.cfg.PrivateKey, c.alg, []byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + enc.EncodeToString(sig), nil
}

// oauthError builds the error for a refused token request, keeping the
// OAuth error code.
func oauthError(resp *http.Response) error {
	e := &StatusError{Op: "token", Method: resp.Request.Method, URL: redact(resp.Request.URL),
		StatusCode: resp.StatusCode, Err: ErrAuth}
	var body struct {
		Error string `json:"error"`
	}
	if readJSON(resp.Body, &body) == nil {
		if code, ok := safeCode(body.Error); ok {
			e.Issues = []string{code}
		}
	}
	return e
}

// readJSON decodes one JSON value of at most maxSmallBody bytes from r.
func readJSON(r io.Reader, v any) error {
	return readJSONLimit(r, v, maxSmallBody)
}

// readJSONLimit decodes one JSON value of at most limit bytes from r.
func readJSONLimit(r io.Reader, v any, limit int64) error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("body larger than %d bytes", limit)
	}
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(v); err != nil {
		// encoding/json errors can quote input; keep only the kind.
		return errNotJSON
	}
	return nil
}
