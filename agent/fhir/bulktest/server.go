// Package bulktest is a FHIR Bulk Data Access (v2) server for tests,
// written to the specification (https://hl7.org/fhir/uv/bulkdata/) rather
// than to the client in package bulk.
//
// It serves the NDJSON files of a directory (such as the Synthea export in
// shared/data) at system, Patient and Group level, with _type and _since
// filtering, behind SMART Backend Services authorization: a
// .well-known/smart-configuration, a token endpoint that verifies signed
// client assertions (ES384 and RS384 only) and issues expiring bearer
// tokens, and a bearer check on every other endpoint. Kick-off answers 202
// with Content-Location; the status endpoint answers 202 with Retry-After
// for a configurable number of polls, then the completion manifest; DELETE
// cancels. Counters let tests assert what a client did, faults (a 429 or
// 503 with Retry-After, an export failure with an OperationOutcome) and
// token revocation let them exercise its error paths, and a fake Clock
// lets token expiry and Retry-After dates follow test time.
//
// The server listens on 127.0.0.1 only (net/http/httptest).
package bulktest

import (
	"compress/gzip"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sentinel errors.
var (
	// ErrInvalidConfig: Config.Validate refused the configuration.
	ErrInvalidConfig = errors.New("invalid config")
	// ErrUnknownType: Touch was asked for a type the server does not hold.
	ErrUnknownType = errors.New("unknown resource type")
)

// TimeSource tells the server the time. *Clock implements it.
type TimeSource interface {
	// Now returns the current time.
	Now() time.Time
}

type systemTime struct{}

func (systemTime) Now() time.Time { return time.Now() }

// RegisteredClient is a client registered with the server's authorization
// server.
type RegisteredClient struct {
	// ID is the client id (the assertion's iss and sub).
	ID string
	// KeyID is the kid of PublicKey; assertions must name it.
	KeyID string
	// PublicKey verifies the client's assertions: *ecdsa.PublicKey on
	// P-384 or *rsa.PublicKey.
	PublicKey crypto.PublicKey
}

// Endpoint names a server endpoint, for faults.
type Endpoint string

// Endpoints.
const (
	// EndpointDiscovery is .well-known/smart-configuration.
	EndpointDiscovery Endpoint = "discovery"
	// EndpointToken is the token endpoint.
	EndpointToken Endpoint = "token"
	// EndpointKickOff is any $export kick-off.
	EndpointKickOff Endpoint = "kick-off"
	// EndpointStatus is GET on a status URL.
	EndpointStatus Endpoint = "status"
	// EndpointCancel is DELETE on a status URL.
	EndpointCancel Endpoint = "cancel"
	// EndpointFile is an output or error file.
	EndpointFile Endpoint = "file"
)

// Fault makes the server answer requests to one endpoint with an error.
type Fault struct {
	// Endpoint is the endpoint that fails.
	Endpoint Endpoint
	// Status is the HTTP status answered (429, 503, 500, ...).
	Status int
	// RetryAfter, when positive, is sent as Retry-After (in seconds, or
	// as an HTTP date when Config.RetryAfterDate is set).
	RetryAfter time.Duration
	// Code is the OperationOutcome issue code in the body; default
	// "throttled" for 429, "transient" for 503, "exception" otherwise.
	Code string
	// Times is how many requests the fault answers; 0 means 1, negative
	// means every request.
	Times int
}

// Config configures a Server.
type Config struct {
	// Dir holds the data: every *.ndjson and *.ndjson.gz file in it is
	// loaded; a resource's type is its resourceType. For _since, a
	// resource without meta.lastUpdated counts as updated when the server
	// loaded it (see also Server.Touch).
	Dir string
	// Clients are the registered clients. Empty means no authorization at
	// all: every endpoint is open and the smart-configuration is absent.
	Clients []RegisteredClient
	// GroupID is the id of the one Group the server knows; "" means none.
	GroupID string
	// GroupMembers are the ids of the group's patients; empty means every
	// patient.
	GroupMembers []string
	// TokenLifetime is the lifetime of issued access tokens (expires_in).
	TokenLifetime time.Duration
	// MaxAssertionLifetime is how far in the future an assertion's exp may
	// be (SMART: five minutes).
	MaxAssertionLifetime time.Duration
	// PollsBeforeReady is how many status polls of a job are answered 202
	// before the manifest.
	PollsBeforeReady int
	// RetryAfter is the Retry-After sent with 202 status answers; 0 sends
	// none.
	RetryAfter time.Duration
	// RetryAfterDate sends Retry-After as an HTTP date instead of seconds.
	RetryAfterDate bool
	// ResourcesPerFile splits each type's output into files of at most
	// this many resources; 0 means one file per type.
	ResourcesPerFile int
	// Gzip serves files gzip-encoded (Content-Encoding: gzip) to clients
	// that accept it.
	Gzip bool
	// RequiresAccessToken is the manifest's requiresAccessToken: whether
	// file downloads need the bearer token.
	RequiresAccessToken bool
	// RejectUnknownTypes answers a kick-off whose _type names a type the
	// server does not hold with 400 and an OperationOutcome. When false,
	// the export runs and each such type is reported in the error file.
	RejectUnknownTypes bool
	// Faults are injected in order, each for Fault.Times requests.
	Faults []Fault
	// Clock is the server's time; nil means the system clock.
	Clock TimeSource
	// Logger receives one Debug line per request; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: 5-minute tokens and assertions, two
// 202 polls with Retry-After 2s, files requiring the token.
func DefaultConfig() Config {
	return Config{
		TokenLifetime:        5 * time.Minute,
		MaxAssertionLifetime: 5 * time.Minute,
		PollsBeforeReady:     2,
		RetryAfter:           2 * time.Second,
		RequiresAccessToken:  true,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	if c.Dir == "" {
		return bad("no data dir")
	}
	if len(c.Clients) > 0 && (c.TokenLifetime <= 0 || c.MaxAssertionLifetime <= 0) {
		return bad("token and assertion lifetimes must be positive")
	}
	if c.PollsBeforeReady < 0 || c.RetryAfter < 0 || c.ResourcesPerFile < 0 {
		return bad("negative polls, retry-after or resources per file")
	}
	for i, cl := range c.Clients {
		if cl.ID == "" || cl.KeyID == "" {
			return bad("client %d has no id or key id", i+1)
		}
		switch k := cl.PublicKey.(type) {
		case *ecdsa.PublicKey:
			if k.Curve == nil || k.Curve.Params().Name != "P-384" {
				return bad("client %d: ecdsa key not on P-384", i+1)
			}
		case *rsa.PublicKey:
			if k.N == nil || k.N.BitLen() < 2048 {
				return bad("client %d: rsa key shorter than 2048 bits", i+1)
			}
		default:
			return bad("client %d: key type %T", i+1, cl.PublicKey)
		}
	}
	for i, f := range c.Faults {
		if f.Status < 400 || f.Status > 599 {
			return bad("fault %d: status %d is not an error", i+1, f.Status)
		}
	}
	return nil
}

// Counters count what the server handled.
type Counters struct {
	// Requests is every request.
	Requests int
	// Discovery is smart-configuration requests.
	Discovery int
	// TokensIssued is access tokens issued.
	TokensIssued int
	// TokensRefused is token requests refused.
	TokensRefused int
	// KickOffs is accepted kick-off requests.
	KickOffs int
	// Polls is GETs of status URLs (202, manifest or error).
	Polls int
	// Downloads is file downloads served.
	Downloads int
	// Cancels is accepted DELETEs.
	Cancels int
	// Unauthorized is requests answered 401 (missing, unknown, expired or
	// revoked token).
	Unauthorized int
	// Faults is requests answered by an injected fault.
	Faults int
}

// job is one export.
type job struct {
	id              string
	transactionTime time.Time
	request         string
	polls           int
	deleted         bool
	output          []jobFile
	errors          []jobFile
}

// jobFile is one file of a job's output.
type jobFile struct {
	typ   string
	lines [][]byte
}

// Server is a Bulk Data server on 127.0.0.1. It is safe for concurrent
// use.
type Server struct {
	cfg      Config
	clock    TimeSource
	log      *slog.Logger
	http     *httptest.Server
	members  map[string]bool // group members; nil = every patient
	clients  map[string][]RegisteredClient
	closeOne sync.Once

	// mu guards everything below. No other lock is taken while it is held.
	mu          sync.Mutex
	data        *dataset
	tokens      map[string]time.Time // access token -> expiry
	jtis        map[string]time.Time // assertion jti -> its exp
	jobs        map[string]*job
	faults      []Fault
	counters    Counters
	lastRefusal string
	lastKickOff url.Values
}

// NewServer loads cfg.Dir and starts serving on 127.0.0.1.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		clock:   cfg.Clock,
		log:     cfg.Logger,
		clients: map[string][]RegisteredClient{},
		tokens:  map[string]time.Time{},
		jtis:    map[string]time.Time{},
		jobs:    map[string]*job{},
		faults:  append([]Fault(nil), cfg.Faults...),
	}
	if s.clock == nil {
		s.clock = systemTime{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, c := range cfg.Clients {
		s.clients[c.ID] = append(s.clients[c.ID], c)
	}
	if len(cfg.GroupMembers) > 0 {
		s.members = map[string]bool{}
		for _, id := range cfg.GroupMembers {
			s.members[id] = true
		}
	}
	data, err := loadDir(cfg.Dir, s.clock.Now())
	if err != nil {
		return nil, err
	}
	s.data = data
	s.http = httptest.NewServer(http.HandlerFunc(s.serve))
	return s, nil
}

// Close stops the server. It is idempotent.
func (s *Server) Close() {
	s.closeOne.Do(s.http.Close)
}

// URL returns the server's root URL (http://127.0.0.1:port).
func (s *Server) URL() string { return s.http.URL }

// BaseURL returns the FHIR base URL.
func (s *Server) BaseURL() string { return s.http.URL + "/fhir" }

// TokenURL returns the token endpoint.
func (s *Server) TokenURL() string { return s.http.URL + "/auth/token" }

// Client returns an http.Client for the server.
func (s *Server) Client() *http.Client { return s.http.Client() }

// Counters returns a snapshot of the counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

// LastRefusal returns why the last token request was refused, as a short
// reason such as "bad-signature", "unknown-client", "wrong-audience",
// "expired", "lifetime-too-long", "jti-reused", "bad-algorithm"; "" if
// none was.
func (s *Server) LastRefusal() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastRefusal
}

// LastKickOff returns the query parameters of the last accepted kick-off.
func (s *Server) LastKickOff() url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := url.Values{}
	for k, v := range s.lastKickOff {
		q[k] = append([]string(nil), v...)
	}
	return q
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// RevokeTokens invalidates every access token issued so far, as an
// authorization server does when a key is rotated or a session ends.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// Touch marks the first n resources of typ as updated now: their
// meta.lastUpdated is set to the server clock's time. It returns how many
// were touched.
func (s *Server) Touch(typ string, n int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list, ok := s.data.byType[typ]
	if !ok {
		return 0, fmt.Errorf("touch: %w", ErrUnknownType)
	}
	now := s.clock.Now()
	n = min(n, len(list))
	for _, r := range list[:n] {
		raw, err := stamp(r.raw, now)
		if err != nil {
			return 0, fmt.Errorf("touch: %w", err)
		}
		r.raw, r.updated = raw, now
	}
	return n, nil
}

// serve routes one request.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.counters.Requests++
	s.mu.Unlock()
	s.log.Debug("bulktest: request", "method", r.Method, "path", r.URL.Path)
	path := r.URL.Path
	switch {
	case path == "/fhir/.well-known/smart-configuration":
		s.handle(w, r, EndpointDiscovery, false, s.discovery)
	case path == "/auth/token":
		s.handle(w, r, EndpointToken, false, s.token)
	case path == "/fhir/$export":
		s.handle(w, r, EndpointKickOff, true, func(w http.ResponseWriter, r *http.Request) { s.kickOff(w, r, "system", "") })
	case path == "/fhir/Patient/$export":
		s.handle(w, r, EndpointKickOff, true, func(w http.ResponseWriter, r *http.Request) { s.kickOff(w, r, "patient", "") })
	case strings.HasPrefix(path, "/fhir/Group/") && strings.HasSuffix(path, "/$export"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/fhir/Group/"), "/$export")
		s.handle(w, r, EndpointKickOff, true, func(w http.ResponseWriter, r *http.Request) { s.kickOff(w, r, "group", id) })
	case strings.HasPrefix(path, "/fhir/_status/"):
		id := strings.TrimPrefix(path, "/fhir/_status/")
		ep := EndpointStatus
		if r.Method == http.MethodDelete {
			ep = EndpointCancel
		}
		s.handle(w, r, ep, true, func(w http.ResponseWriter, r *http.Request) { s.status(w, r, id) })
	case strings.HasPrefix(path, "/fhir/_files/"):
		rest := strings.TrimPrefix(path, "/fhir/_files/")
		s.handle(w, r, EndpointFile, s.cfg.RequiresAccessToken, func(w http.ResponseWriter, r *http.Request) { s.file(w, r, rest) })
	default:
		outcome(w, http.StatusNotFound, "not-found", "no such endpoint")
	}
}

// handle applies a pending fault for ep, then the bearer check when
// needsToken, then h.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, ep Endpoint, needsToken bool, h http.HandlerFunc) {
	if f, ok := s.takeFault(ep); ok {
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", s.retryAfter(f.RetryAfter))
		}
		code := f.Code
		if code == "" {
			switch f.Status {
			case http.StatusTooManyRequests:
				code = "throttled"
			case http.StatusServiceUnavailable:
				code = "transient"
			default:
				code = "exception"
			}
		}
		outcome(w, f.Status, code, "injected fault")
		return
	}
	if needsToken && len(s.cfg.Clients) > 0 && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		outcome(w, http.StatusUnauthorized, "login", "missing, invalid or expired access token")
		return
	}
	h(w, r)
}

// takeFault returns the first pending fault for ep and uses it up.
func (s *Server) takeFault(ep Endpoint) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Endpoint != ep {
			continue
		}
		switch {
		case f.Times < 0:
		case f.Times <= 1:
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		default:
			s.faults[i].Times--
		}
		s.counters.Faults++
		return f, true
	}
	return Fault{}, false
}

// retryAfter formats d as a Retry-After value.
func (s *Server) retryAfter(d time.Duration) string {
	if s.cfg.RetryAfterDate {
		return s.clock.Now().Add(d).UTC().Format(http.TimeFormat)
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// kickOff handles $export at level ("system", "patient", "group").
func (s *Server) kickOff(w http.ResponseWriter, r *http.Request, level, groupID string) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		outcome(w, http.StatusMethodNotAllowed, "not-supported", "kick-off by GET only")
		return
	}
	if r.Header.Get("Accept") != "application/fhir+json" {
		outcome(w, http.StatusBadRequest, "invalid", "Accept must be application/fhir+json")
		return
	}
	if !preferAsync(r.Header.Values("Prefer")) {
		outcome(w, http.StatusBadRequest, "invalid", "Prefer: respond-async is required")
		return
	}
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "_type", "_since", "_outputFormat":
		default:
			outcome(w, http.StatusBadRequest, "not-supported", "unsupported parameter "+k)
			return
		}
	}
	switch f := q.Get("_outputFormat"); f {
	case "", "application/fhir+ndjson", "application/ndjson", "ndjson":
	default:
		outcome(w, http.StatusBadRequest, "not-supported", "unsupported _outputFormat")
		return
	}
	var since time.Time
	if v := q.Get("_since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			outcome(w, http.StatusBadRequest, "invalid", "_since is not a FHIR instant")
			return
		}
		since = t
	}
	var members map[string]bool // nil: system level, no patient filter
	switch level {
	case "patient":
		members = s.allPatients()
	case "group":
		if s.cfg.GroupID == "" || groupID != s.cfg.GroupID {
			outcome(w, http.StatusNotFound, "not-found", "unknown group")
			return
		}
		members = s.members
		if members == nil {
			members = s.allPatients()
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var types, unknown []string
	if v := q.Get("_type"); v != "" {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if _, ok := s.data.byType[t]; ok {
				types = append(types, t)
			} else {
				unknown = append(unknown, t)
			}
		}
		if len(types)+len(unknown) == 0 {
			outcome(w, http.StatusBadRequest, "invalid", "empty _type")
			return
		}
	} else {
		for t := range s.data.byType {
			types = append(types, t)
		}
	}
	if len(unknown) > 0 && s.cfg.RejectUnknownTypes {
		outcome(w, http.StatusBadRequest, "not-supported", fmt.Sprintf("%d requested types are not supported", len(unknown)))
		return
	}
	sort.Strings(types)
	now := s.clock.Now()
	j := &job{id: randomID(), transactionTime: now, request: requestURL(r)}
	for _, t := range types {
		var lines [][]byte
		for _, res := range s.data.byType[t] {
			if members != nil && !members[res.patient] {
				continue
			}
			if !since.IsZero() && !res.updated.After(since) {
				continue
			}
			if res.updated.After(now) {
				continue
			}
			lines = append(lines, res.raw)
		}
		for len(lines) > 0 {
			n := len(lines)
			if s.cfg.ResourcesPerFile > 0 {
				n = min(n, s.cfg.ResourcesPerFile)
			}
			j.output = append(j.output, jobFile{typ: t, lines: lines[:n:n]})
			lines = lines[n:]
		}
	}
	if len(unknown) > 0 {
		var lines [][]byte
		for range unknown {
			lines = append(lines, outcomeJSON("not-supported", "requested resource type is not supported"))
		}
		j.errors = append(j.errors, jobFile{typ: "OperationOutcome", lines: lines})
	}
	s.jobs[j.id] = j
	s.counters.KickOffs++
	s.lastKickOff = q
	w.Header().Set("Content-Location", s.http.URL+"/fhir/_status/"+j.id)
	outcome(w, http.StatusAccepted, "informational", "export accepted")
}

func (s *Server) allPatients() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]bool, len(s.data.patients))
	for id := range s.data.patients {
		m[id] = true
	}
	return m
}

// preferAsync reports whether the Prefer headers include respond-async.
func preferAsync(values []string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

// requestURL reconstructs the absolute URL of r.
func requestURL(r *http.Request) string {
	return "http://" + r.Host + r.URL.RequestURI()
}

// status handles GET (poll) and DELETE (cancel) on a status URL.
func (s *Server) status(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[id]
	switch r.Method {
	case http.MethodGet:
		s.counters.Polls++
		if j == nil || j.deleted {
			outcome(w, http.StatusNotFound, "not-found", "no such export")
			return
		}
		j.polls++
		if j.polls <= s.cfg.PollsBeforeReady {
			if s.cfg.RetryAfter > 0 {
				w.Header().Set("Retry-After", s.retryAfter(s.cfg.RetryAfter))
			}
			w.Header().Set("X-Progress", fmt.Sprintf("in progress (%d of %d)", j.polls, s.cfg.PollsBeforeReady+1))
			w.WriteHeader(http.StatusAccepted)
			return
		}
		s.manifest(w, j)
	case http.MethodDelete:
		if j == nil || j.deleted {
			outcome(w, http.StatusNotFound, "not-found", "no such export")
			return
		}
		j.deleted = true
		s.counters.Cancels++
		outcome(w, http.StatusAccepted, "informational", "export cancelled")
	default:
		w.Header().Set("Allow", "GET, DELETE")
		outcome(w, http.StatusMethodNotAllowed, "not-supported", "GET or DELETE only")
	}
}

// manifest writes j's completion manifest. s.mu is held.
func (s *Server) manifest(w http.ResponseWriter, j *job) {
	type entry struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	}
	m := struct {
		TransactionTime     string  `json:"transactionTime"`
		Request             string  `json:"request"`
		RequiresAccessToken bool    `json:"requiresAccessToken"`
		Output              []entry `json:"output"`
		Error               []entry `json:"error"`
	}{
		TransactionTime:     j.transactionTime.UTC().Format(time.RFC3339Nano),
		Request:             j.request,
		RequiresAccessToken: s.cfg.RequiresAccessToken,
		Output:              []entry{},
		Error:               []entry{},
	}
	for i, f := range j.output {
		m.Output = append(m.Output, entry{f.typ, fmt.Sprintf("%s/fhir/_files/%s/%d.ndjson", s.http.URL, j.id, i), len(f.lines)})
	}
	for i, f := range j.errors {
		m.Error = append(m.Error, entry{f.typ, fmt.Sprintf("%s/fhir/_files/%s/e%d.ndjson", s.http.URL, j.id, i), len(f.lines)})
	}
	writeJSON(w, http.StatusOK, "application/json", m)
}

// file serves one output or error file: rest is "<job>/<n>.ndjson" or
// "<job>/e<n>.ndjson".
func (s *Server) file(w http.ResponseWriter, r *http.Request, rest string) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		outcome(w, http.StatusMethodNotAllowed, "not-supported", "GET only")
		return
	}
	id, name, _ := strings.Cut(rest, "/")
	name, ok := strings.CutSuffix(name, ".ndjson")
	s.mu.Lock()
	j := s.jobs[id]
	var f *jobFile
	if ok && j != nil && !j.deleted {
		list := j.output
		if n, isErr := strings.CutPrefix(name, "e"); isErr {
			list, name = j.errors, n
		}
		if i, err := strconv.Atoi(name); err == nil && i >= 0 && i < len(list) {
			f = &list[i]
		}
	}
	if f != nil {
		s.counters.Downloads++
	}
	s.mu.Unlock()
	if f == nil {
		outcome(w, http.StatusNotFound, "not-found", "no such file")
		return
	}
	w.Header().Set("Content-Type", "application/fhir+ndjson")
	var out interface {
		Write([]byte) (int, error)
	} = w
	if s.cfg.Gzip && acceptsGzip(r.Header.Values("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // valid level: no error
		defer zw.Close()
		out = zw
	}
	w.WriteHeader(http.StatusOK)
	for _, line := range f.lines {
		if _, err := out.Write(line); err != nil {
			return
		}
		if _, err := out.Write([]byte{'\n'}); err != nil {
			return
		}
	}
}

func acceptsGzip(values []string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			enc, _, _ := strings.Cut(strings.TrimSpace(p), ";")
			if strings.EqualFold(enc, "gzip") {
				return true
			}
		}
	}
	return false
}

// outcome writes an OperationOutcome with one issue.
func outcome(w http.ResponseWriter, status int, code, diagnostics string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	_, _ = w.Write(outcomeJSON(code, diagnostics))
}

func outcomeJSON(code, diagnostics string) []byte {
	severity := "error"
	if code == "informational" {
		severity = "information"
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "OperationOutcome",
		"issue": []any{map[string]string{
			"severity": severity, "code": code, "diagnostics": diagnostics,
		}},
	})
	return b
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		outcome(w, http.StatusInternalServerError, "exception", "encoding failed")
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// randomID returns 16 random bytes in hex.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
