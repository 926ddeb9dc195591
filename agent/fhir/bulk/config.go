package bulk

import (
	"crypto"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/clock"
)

// Level is the scope of an export.
type Level string

// Export levels.
const (
	// LevelSystem exports everything: GET [base]/$export.
	LevelSystem Level = "system"
	// LevelPatient exports the data of all patients: GET [base]/Patient/$export.
	LevelPatient Level = "patient"
	// LevelGroup exports the data of a group's members:
	// GET [base]/Group/[id]/$export.
	LevelGroup Level = "group"
)

// Clock is the time source (see package clock); tests inject a fake.
type Clock = clock.Clock

// SystemClock returns the Clock backed by the time package; it is what a
// nil Config.Clock means.
func SystemClock() Clock { return clock.System() }

// DefaultScope is the scope requested when Config.Scope is empty.
const DefaultScope = "system/*.read"

// MaxAssertionLifetime is the longest lifetime SMART Backend Services
// allows for a client assertion (exp at most five minutes ahead).
const MaxAssertionLifetime = 5 * time.Minute

// Config configures a Client.
type Config struct {
	// BaseURL is the FHIR server's base URL, e.g.
	// "https://ehr.example.org/fhir". It must be https, except on a
	// loopback host (127.0.0.1, ::1, localhost), where http is allowed.
	BaseURL string
	// Level is the export level; default LevelSystem.
	Level Level
	// GroupID is the Group resource id for LevelGroup; ignored otherwise.
	GroupID string
	// Types restricts the export to these resource types (the _type
	// parameter); empty means every type the server offers.
	Types []string
	// Since, when not zero, asks only for resources changed after it (the
	// _since parameter). Set it to the TransactionTime of the previous
	// export for an incremental export.
	Since time.Time

	// ClientID is the client id registered with the server's authorization
	// server. Empty, together with a nil PrivateKey, means the server needs
	// no authorization and no token is requested.
	ClientID string
	// PrivateKey signs the client assertion: an ECDSA P-384 key (ES384) or
	// an RSA key of at least 2048 bits (RS384). LoadPrivateKey reads one
	// from a PEM file.
	PrivateKey crypto.Signer
	// KeyID is the kid of PrivateKey's public key as registered with the
	// server. Empty means the RFC 7638 JWK thumbprint of the public key.
	KeyID string
	// TokenURL is the token endpoint. Empty means discover it from
	// BaseURL/.well-known/smart-configuration (token_endpoint).
	TokenURL string
	// Scope is the scope requested with the token; default DefaultScope.
	Scope string
	// AssertionLifetime is how far ahead a client assertion's exp is set;
	// at most MaxAssertionLifetime. The default (4 minutes) leaves room
	// for a server clock that lags the client's.
	AssertionLifetime time.Duration
	// TokenRefreshBefore is how long before its expiry a cached access
	// token is replaced (capped at half the token's lifetime).
	TokenRefreshBefore time.Duration

	// PollMin is the first wait between status polls when the server sends
	// no Retry-After, and the shortest wait the client ever makes between
	// two polls.
	PollMin time.Duration
	// PollMax caps the exponential backoff between polls and retries. A
	// Retry-After from the server is honoured even when longer.
	PollMax time.Duration
	// MaxWait is the longest the client waits for an export to complete,
	// measured on Clock from the kick-off; when it would be exceeded the
	// client cancels the export (DELETE) and returns ErrTimeout.
	MaxWait time.Duration
	// KeepFiles leaves a completed export's files on the server. By
	// default Export deletes them (DELETE on the status URL) once every
	// file is downloaded, so copies of the data do not linger there.
	KeepFiles bool
	// MaxRetries is how many times one request is retried after a 429 or
	// 503 response or (for requests that are safe to repeat) a transport
	// error, before the client gives up; 0 means never (DefaultConfig
	// sets 5). A kick-off is not repeated after a transport error, which
	// could have started an export.
	MaxRetries int

	// HTTPClient sends every request; nil means a new http.Client with no
	// overall timeout (downloads can be long; use ctx to bound them).
	HTTPClient *http.Client
	// Logger receives progress at Info and Debug level; nil discards.
	Logger *slog.Logger
	// Clock is the time source for waits, assertion and token expiry;
	// nil means SystemClock().
	Clock Clock
}

// DefaultConfig returns a Config with every default filled in. BaseURL,
// ClientID and PrivateKey still have to be set.
func DefaultConfig() Config {
	return Config{
		Level:              LevelSystem,
		Scope:              DefaultScope,
		AssertionLifetime:  4 * time.Minute,
		TokenRefreshBefore: 30 * time.Second,
		PollMin:            time.Second,
		PollMax:            time.Minute,
		MaxWait:            6 * time.Hour,
		MaxRetries:         5,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Level == "" {
		c.Level = d.Level
	}
	if c.Scope == "" && c.PrivateKey != nil {
		c.Scope = d.Scope
	}
	if c.AssertionLifetime == 0 {
		c.AssertionLifetime = d.AssertionLifetime
	}
	if c.TokenRefreshBefore == 0 {
		c.TokenRefreshBefore = d.TokenRefreshBefore
	}
	if c.PollMin == 0 {
		c.PollMin = d.PollMin
	}
	if c.PollMax == 0 {
		c.PollMax = max(d.PollMax, c.PollMin)
	}
	if c.MaxWait == 0 {
		c.MaxWait = d.MaxWait
	}
	return c
}

// Validate reports the first problem with c, wrapping ErrInvalidConfig.
// Zero durations, an empty Level and an empty Scope are allowed: New
// replaces them by their defaults.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	if c.BaseURL == "" {
		return bad("base url is empty")
	}
	if err := checkEndpoint(c.BaseURL); err != nil {
		return bad("base url: %v", err)
	}
	switch c.Level {
	case "", LevelSystem, LevelPatient:
	case LevelGroup:
		if !validID(c.GroupID) {
			return bad("group level needs a valid group id")
		}
	default:
		return bad("unknown level %q", c.Level)
	}
	for i, t := range c.Types {
		if !validTypeName(t) {
			return bad("type %d is not a resource type name", i+1)
		}
	}
	switch {
	case c.ClientID == "" && c.PrivateKey == nil:
		// No authorization.
	case c.ClientID == "":
		return bad("private key set without a client id")
	case c.PrivateKey == nil:
		return bad("client id set without a private key")
	default:
		if _, err := algorithm(c.PrivateKey); err != nil {
			return bad("private key: %v", err)
		}
	}
	if c.TokenURL != "" {
		if err := checkEndpoint(c.TokenURL); err != nil {
			return bad("token url: %v", err)
		}
	}
	if strings.ContainsAny(c.Scope, "\"\\") {
		return bad("scope contains a quote or backslash")
	}
	if c.AssertionLifetime < 0 || c.AssertionLifetime > MaxAssertionLifetime {
		return bad("assertion lifetime must be between 0 and %v", MaxAssertionLifetime)
	}
	if c.AssertionLifetime > 0 && c.AssertionLifetime < 10*time.Second {
		return bad("assertion lifetime below 10s")
	}
	if c.TokenRefreshBefore < 0 {
		return bad("negative token refresh margin")
	}
	if c.PollMin < 0 || c.PollMax < 0 || c.MaxWait < 0 || c.MaxRetries < 0 {
		return bad("negative poll interval, max wait or retry count")
	}
	if c.PollMin > 0 && c.PollMax > 0 && c.PollMax < c.PollMin {
		return bad("poll max below poll min")
	}
	return nil
}

// checkEndpoint accepts an absolute https URL, or an http URL on a
// loopback host.
func checkEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: does not parse", ErrInsecureURL)
	}
	return checkURL(u)
}

func checkURL(u *url.URL) error {
	if u.Host == "" || u.User != nil {
		return fmt.Errorf("%w: not an absolute url without credentials", ErrInsecureURL)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%w: http is allowed on loopback hosts only", ErrInsecureURL)
	default:
		return fmt.Errorf("%w: scheme %q", ErrInsecureURL, u.Scheme)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validID reports whether s is a FHIR id: [A-Za-z0-9-.]{1,64}.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// validTypeName reports whether s looks like a FHIR resource type name.
func validTypeName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
