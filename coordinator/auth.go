package coordinator

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// People reach the admin API with opaque bearer tokens. A token is
// "cohort_<id>_<secret>": the id names it in listings and audit entries;
// the replicated state keeps only the SHA-256 of the whole string, so a
// copy of a node's data directory does not hold a usable token. Each token
// is bound to one person and one role, and expires.

// Role is what a token may do.
type Role string

// Roles, from most to least powerful. BreakGlass may do what Admin may,
// for emergencies: every request made with it is flagged in the audit log.
const (
	RoleAdmin      Role = "admin"
	RoleBreakGlass Role = "break-glass"
	RoleOperator   Role = "operator"
	RoleAuditor    Role = "auditor"
	RoleViewer     Role = "viewer"
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleBreakGlass, RoleOperator, RoleAuditor, RoleViewer}

func (r Role) valid() bool { _, ok := rolePerms[r]; return ok }

// perm is one permission a route requires.
type perm string

const (
	permNone           perm = ""                // no bearer token: the handler authenticates
	permSelf           perm = "self"            // whoami
	permClusterRead    perm = "cluster.read"    // members, leader
	permClusterWrite   perm = "cluster.write"   // join, remove
	permSitesRead      perm = "sites.read"      // list, show
	permSitesWrite     perm = "sites.write"     // create, revoke, enrollment tokens
	permJobsRead       perm = "jobs.read"       // jobs, rounds
	permJobsWrite      perm = "jobs.write"      // create, pause, resume, cancel
	permModelsRead     perm = "models.read"     // list, show
	permModelsDownload perm = "models.download" // weights
	permModelsWrite    perm = "models.write"    // registry stages, rollback
	permTokensRead     perm = "tokens.read"     // list
	permTokensWrite    perm = "tokens.write"    // create, revoke
	permAuditRead      perm = "audit.read"      // entries, checkpoints, proofs
)

// rolePerms is the authorization table. Every route names one permission;
// TestAuthorizationTable checks every route with every role.
var rolePerms = func() map[Role]map[perm]bool {
	all := []perm{permSelf, permClusterRead, permClusterWrite, permSitesRead, permSitesWrite, permJobsRead, permJobsWrite,
		permModelsRead, permModelsDownload, permModelsWrite, permTokensRead, permTokensWrite, permAuditRead}
	set := func(ps ...perm) map[perm]bool {
		m := make(map[perm]bool, len(ps))
		for _, p := range ps {
			m[p] = true
		}
		return m
	}
	return map[Role]map[perm]bool{
		RoleAdmin:      set(all...),
		RoleBreakGlass: set(all...),
		// Operators run the federation: sites and jobs, not membership,
		// people or the audit log.
		RoleOperator: set(permSelf, permClusterRead, permSitesRead, permSitesWrite, permJobsRead, permJobsWrite, permModelsRead, permModelsDownload, permModelsWrite),
		// Auditors read everything that is not model weights, and the
		// audit log; they change nothing.
		RoleAuditor: set(permSelf, permClusterRead, permSitesRead, permJobsRead, permModelsRead, permTokensRead, permAuditRead),
		RoleViewer:  set(permSelf, permClusterRead, permSitesRead, permJobsRead, permModelsRead),
	}
}()

// can reports whether role r holds permission p.
func (r Role) can(p perm) bool { return rolePerms[r][p] }

// Token is an admin bearer token as the replicated state keeps it.
type Token struct {
	ID      string    `json:"id"`
	Hash    string    `json:"hash"` // hex SHA-256 of the whole token string
	Person  string    `json:"person"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Revoked time.Time `json:"revoked,omitzero"`
	// CreatedBy is the id of the token that created it ("" at bootstrap).
	CreatedBy string `json:"created_by,omitempty"`
}

// TokenView is a token as the admin API shows it (never the hash).
type TokenView struct {
	ID        string    `json:"id"`
	Person    string    `json:"person"`
	Role      Role      `json:"role"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	Revoked   time.Time `json:"revoked,omitzero"`
	CreatedBy string    `json:"created_by,omitempty"`
	// Token is the secret, shown once, in the answer that creates it.
	Token string `json:"token,omitempty"`
}

func (t *Token) view() TokenView {
	return TokenView{ID: t.ID, Person: t.Person, Role: t.Role, Created: t.Created, Expires: t.Expires, Revoked: t.Revoked, CreatedBy: t.CreatedBy}
}

const (
	tokenPrefix = "cohort_"
	// DefaultTokenTTL is a token's lifetime when its creator names none.
	DefaultTokenTTL = time.Hour
	// MaxTokenTTL bounds a token's lifetime.
	MaxTokenTTL = 90 * 24 * time.Hour
)

// newToken makes a token string and its id.
func newToken() (id, secret string, err error) { return newSecret(tokenPrefix, 't') }

// tokenID returns the id part of a token string, or false if the string
// is not shaped like a token.
func tokenID(s string) (string, bool) { return secretID(tokenPrefix, 't', s) }

// newSecret makes "<prefix><id>_<secret>", where the id is kind and ten
// hex digits and the secret 32 random bytes in base64url.
func newSecret(prefix string, kind byte) (id, secret string, err error) {
	var idb [5]byte
	var sb [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", err
	}
	if _, err := rand.Read(sb[:]); err != nil {
		return "", "", err
	}
	id = string(kind) + hex.EncodeToString(idb[:])
	return id, prefix + id + "_" + base64.RawURLEncoding.EncodeToString(sb[:]), nil
}

// secretID returns the id of a string shaped like newSecret's, or false.
func secretID(prefix string, kind byte, s string) (string, bool) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || len(s) > 200 {
		return "", false
	}
	id, sec, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 11 || id[0] != kind || sec == "" {
		return "", false
	}
	if _, err := hex.DecodeString(id[1:]); err != nil {
		return "", false
	}
	return id, true
}

// hashToken is what the state keeps of a token string.
func hashToken(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// hashMatches compares a secret's hash with want in constant time; an
// empty want (no such id) never matches, after the same work.
func hashMatches(secret, want string) bool {
	w := want
	if w == "" {
		w = strings.Repeat("0", 64)
	}
	return subtle.ConstantTimeCompare([]byte(hashToken(secret)), []byte(w)) == 1 && want != ""
}

// validPerson checks a person's name: 1-64 printable characters without
// control characters (an email address, a staff id or a name).
func validPerson(p string) bool {
	if p == "" || len(p) > 64 || !utf8.ValidString(p) {
		return false
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Authentication failures, as the admin API answers them (401).
var (
	errNoToken      = errors.New("no bearer token: send Authorization: Bearer <token>")
	errBadToken     = errors.New("the token is not valid")
	errTokenExpired = errors.New("the token has expired")
	errTokenRevoked = errors.New("the token has been revoked")
)

// authenticate finds the token a request carries. It answers the same
// error for an unknown id and a wrong secret, and compares hashes in
// constant time.
func (st *state) authenticate(header string, now time.Time) (*Token, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || raw == "" {
		return nil, errNoToken
	}
	id, ok := tokenID(strings.TrimSpace(raw))
	if !ok {
		return nil, errBadToken
	}
	t := st.Tokens[id]
	var want string
	if t != nil {
		want = t.Hash
	}
	if !hashMatches(strings.TrimSpace(raw), want) {
		return nil, errBadToken
	}
	switch {
	case !t.Revoked.IsZero():
		return nil, errTokenRevoked
	case !now.Before(t.Expires):
		return nil, errTokenExpired
	}
	c := *t
	return &c, nil
}

// limiters rate-limits requests per key (a token id, or a remote address
// for requests that fail to authenticate). Idle limiters are dropped.
type limiters struct {
	rate  rate.Limit
	burst int

	mu   sync.Mutex
	m    map[string]*limiterEntry
	seen int
}

type limiterEntry struct {
	l    *rate.Limiter
	last time.Time
}

func newLimiters(perSecond float64, burst int) *limiters {
	return &limiters{rate: rate.Limit(perSecond), burst: burst, m: make(map[string]*limiterEntry)}
}

// allow takes one request for key; when refused, it returns how long to
// wait.
func (l *limiters) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[key]
	if e == nil {
		e = &limiterEntry{l: rate.NewLimiter(l.rate, l.burst)}
		l.m[key] = e
	}
	e.last = now
	if l.seen++; l.seen%1024 == 0 {
		for k, v := range l.m {
			if now.Sub(v.last) > 10*time.Minute {
				delete(l.m, k)
			}
		}
	}
	r := e.l.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// blocked reports whether key has no request left, without taking one.
func (l *limiters) blocked(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[key]
	return e != nil && e.l.TokensAt(now) < 1
}

// bearer returns the request's Authorization header, for authenticate.
func bearer(req *http.Request) string { return req.Header.Get("Authorization") }

// tokenSpec is the body of POST /v1/tokens.
type tokenSpec struct {
	Person string   `json:"person"`
	Role   Role     `json:"role"`
	TTL    Duration `json:"ttl,omitempty"`
}

func (s *tokenSpec) validate() error {
	switch {
	case !validPerson(s.Person):
		return fmt.Errorf("%w: person: 1-64 printable characters, no <>\"\\", ErrInvalidToken)
	case !s.Role.valid():
		return fmt.Errorf("%w: role %q: one of admin, break-glass, operator, auditor, viewer", ErrInvalidToken, s.Role)
	case s.TTL < 0 || time.Duration(s.TTL) > MaxTokenTTL:
		return fmt.Errorf("%w: ttl: between 1s and %s (default %s)", ErrInvalidToken, MaxTokenTTL, DefaultTokenTTL)
	}
	if s.TTL == 0 {
		s.TTL = Duration(DefaultTokenTTL)
	}
	return nil
}
