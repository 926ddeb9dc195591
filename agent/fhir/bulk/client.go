package bulk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// abandonTimeout bounds the DELETE sent when the client gives up on an
// export whose context is already cancelled.
const abandonTimeout = 30 * time.Second

// maxRetryAfter caps a Retry-After value in seconds (a week), so that a
// huge value cannot overflow a Duration.
const maxRetryAfter = 7 * 24 * time.Hour

// Client runs Bulk Data exports against one FHIR server. It is safe for
// concurrent use; concurrent exports share one cached access token.
type Client struct {
	cfg    Config
	base   string   // BaseURL without a trailing slash
	origin *url.URL // BaseURL parsed, for same-origin checks
	auth   bool     // whether requests carry an access token
	alg    string   // JWS algorithm of cfg.PrivateKey
	kid    string   // key id sent in the assertion header
	http   *http.Client
	log    *slog.Logger
	clock  Clock

	// mu guards the fields below. It is held while a token is fetched
	// (a network call), so concurrent callers wait for one fetch rather
	// than each asking for a token. Nothing else is locked while it is
	// held.
	mu        sync.Mutex
	tokenURL  string    // configured or discovered token endpoint
	token     string    // cached access token; "" when none
	refreshAt time.Time // when the cached token is replaced
	tokens    int       // access tokens obtained so far
}

// New returns a Client for cfg. Zero fields take their DefaultConfig
// values. It makes no request: the token endpoint is discovered and the
// first token fetched on the first export.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	origin, err := url.Parse(strings.TrimSuffix(cfg.BaseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("%w: base url does not parse", ErrInvalidConfig)
	}
	c := &Client{
		cfg:      cfg,
		base:     strings.TrimSuffix(cfg.BaseURL, "/"),
		origin:   origin,
		auth:     cfg.PrivateKey != nil,
		http:     cfg.HTTPClient,
		log:      cfg.Logger,
		clock:    cfg.Clock,
		tokenURL: cfg.TokenURL,
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = SystemClock()
	}
	if c.auth {
		if c.alg, err = algorithm(cfg.PrivateKey); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		c.kid = cfg.KeyID
		if c.kid == "" {
			if c.kid, err = KeyThumbprint(cfg.PrivateKey.Public()); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
			}
		}
	}
	return c, nil
}

// TokensIssued returns how many access tokens the client has obtained.
func (c *Client) TokensIssued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens
}

// Result is the outcome of an export.
type Result struct {
	// TransactionTime is the manifest's transactionTime: the server's time
	// when the export ran. Use it as Config.Since of the next export.
	TransactionTime time.Time
	// Request is the kick-off URL as the manifest echoes it.
	Request string
	// StatusURL is the export's status endpoint.
	StatusURL string
	// Counts are the manifest's output counts, summed by resource type
	// (files whose entry has no count are left out).
	Counts map[string]int
	// Received counts the resources (non-blank NDJSON lines) read from the
	// output files, by the type the manifest gives each file.
	Received map[string]int
	// Files is the number of output files downloaded.
	Files int
	// ErrorFiles is the number of error files downloaded.
	ErrorFiles int
	// ErrorResources is the number of OperationOutcome resources in the
	// error files. They are counted, never ingested.
	ErrorResources int
	// Deleted lists the manifest's deleted entries (Bundles of resources
	// deleted since Config.Since). They are not downloaded.
	Deleted []File
	// Stats is what fhir.ReadNDJSON made of the output files.
	Stats *fhir.Stats
}

// Export runs one export: kick-off, polling until the manifest is ready,
// and the download of every output file into sink. If the export does not
// complete within Config.MaxWait, or ctx is cancelled while waiting, the
// client cancels it on the server (DELETE) before returning. Unless
// Config.KeepFiles is set, a fully downloaded export is deleted from the
// server afterwards. On a download error the partial Result is returned
// with the error.
func (c *Client) Export(ctx context.Context, sink fhir.Sink) (*Result, error) {
	if sink == nil {
		return nil, fmt.Errorf("export: %w", fhir.ErrNilSink)
	}
	deadline := c.clock.Now().Add(c.cfg.MaxWait)
	statusURL, err := c.start(ctx, deadline)
	if err != nil {
		return nil, err
	}
	m, err := c.wait(ctx, statusURL, deadline)
	if err != nil {
		if errors.Is(err, ErrTimeout) || ctx.Err() != nil {
			c.abandon(ctx, statusURL)
		}
		return nil, err
	}
	res, err := c.Download(ctx, m, sink)
	if res != nil {
		res.StatusURL = statusURL
	}
	if err != nil {
		return res, err
	}
	if !c.cfg.KeepFiles {
		if err := c.Cancel(ctx, statusURL); err != nil {
			c.log.Warn("bulk: could not delete the completed export", "status_url", statusURL, "err", err)
		}
	}
	return res, nil
}

// Start sends the kick-off request and returns the status URL.
func (c *Client) Start(ctx context.Context) (statusURL string, err error) {
	return c.start(ctx, c.clock.Now().Add(c.cfg.MaxWait))
}

func (c *Client) start(ctx context.Context, deadline time.Time) (string, error) {
	kick := c.kickOffURL()
	c.log.Info("bulk: export kick-off", "url", kick, "level", string(c.cfg.Level),
		"types", len(c.cfg.Types), "incremental", !c.cfg.Since.IsZero())
	resp, err := c.call(ctx, request{
		op: "kick-off", method: http.MethodGet, url: kick,
		accept: "application/fhir+json", header: http.Header{"Prefer": {"respond-async"}},
		auth: true, deadline: deadline,
	})
	if err != nil {
		return "", err
	}
	defer drain(resp)
	switch {
	case resp.StatusCode == http.StatusAccepted:
	case resp.StatusCode >= 400:
		return "", statusError(resp, "kick-off", ErrKickOff)
	default:
		return "", statusError(resp, "kick-off", ErrProtocol)
	}
	loc := resp.Header.Get("Content-Location")
	if loc == "" {
		return "", fmt.Errorf("kick-off: %w: 202 without Content-Location", ErrProtocol)
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("kick-off: %w: Content-Location does not parse", ErrProtocol)
	}
	if err := c.checkServerURL(u, c.auth); err != nil {
		return "", fmt.Errorf("kick-off: status url: %w", err)
	}
	c.log.Info("bulk: export accepted", "status_url", u.String())
	return u.String(), nil
}

// kickOffURL builds the $export URL for the configured level, types and
// since.
func (c *Client) kickOffURL() string {
	var u string
	switch c.cfg.Level {
	case LevelPatient:
		u = c.base + "/Patient/$export"
	case LevelGroup:
		u = c.base + "/Group/" + url.PathEscape(c.cfg.GroupID) + "/$export"
	default:
		u = c.base + "/$export"
	}
	q := url.Values{}
	if len(c.cfg.Types) > 0 {
		q.Set("_type", strings.Join(c.cfg.Types, ","))
	}
	if !c.cfg.Since.IsZero() {
		q.Set("_since", c.cfg.Since.UTC().Format(time.RFC3339Nano))
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// Wait polls statusURL until the export completes and returns its
// manifest. It gives up with ErrTimeout when Config.MaxWait (from now)
// would be exceeded; unlike Export it does not cancel the export then.
func (c *Client) Wait(ctx context.Context, statusURL string) (*Manifest, error) {
	u, err := url.Parse(statusURL)
	if err != nil {
		return nil, fmt.Errorf("status: %w: does not parse", ErrInsecureURL)
	}
	if err := c.checkServerURL(u, c.auth); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return c.wait(ctx, u.String(), c.clock.Now().Add(c.cfg.MaxWait))
}

func (c *Client) wait(ctx context.Context, statusURL string, deadline time.Time) (*Manifest, error) {
	bo := c.backoff()
	for polls := 1; ; polls++ {
		resp, err := c.call(ctx, request{
			op: "status", method: http.MethodGet, url: statusURL,
			accept: "application/json", auth: true, idempotent: true,
			deadline: deadline,
		})
		if err != nil {
			return nil, err
		}
		switch resp.StatusCode {
		case http.StatusAccepted:
			wait, ok := retryAfter(resp.Header.Get("Retry-After"), c.clock.Now())
			if !ok {
				wait = bo.next()
			}
			progress := printable(resp.Header.Get("X-Progress"), 100)
			drain(resp)
			c.log.Info("bulk: export in progress", "status_url", statusURL, "poll", polls,
				"progress", progress, "next_poll_in", wait)
			if err := c.pause(ctx, deadline, wait); err != nil {
				return nil, fmt.Errorf("status: %w", err)
			}
		case http.StatusOK:
			m, err := parseManifest(resp, c)
			drain(resp)
			if err != nil {
				return nil, err
			}
			c.log.Info("bulk: export complete", "status_url", statusURL, "polls", polls,
				"output_files", len(m.Output), "error_files", len(m.Error),
				"transaction_time", m.TransactionTime)
			return m, nil
		default:
			err := statusError(resp, "status", ErrExportFailed)
			drain(resp)
			if resp.StatusCode < 400 {
				err.Err = ErrProtocol
			}
			return nil, err
		}
	}
}

// Cancel asks the server to cancel the export at statusURL, or to delete
// the files of a completed one (DELETE on the status URL).
func (c *Client) Cancel(ctx context.Context, statusURL string) error {
	u, err := url.Parse(statusURL)
	if err != nil {
		return fmt.Errorf("cancel: %w: does not parse", ErrInsecureURL)
	}
	if err := c.checkServerURL(u, c.auth); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	resp, err := c.call(ctx, request{
		op: "cancel", method: http.MethodDelete, url: u.String(),
		accept: "application/fhir+json", auth: true, idempotent: true,
	})
	if err != nil {
		return err
	}
	defer drain(resp)
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent:
		c.log.Info("bulk: export cancelled", "status_url", u.String())
		return nil
	default:
		return statusError(resp, "cancel", ErrCancel)
	}
}

// abandon cancels an export the client gives up on, even when ctx is
// already cancelled. Failure is only logged.
func (c *Client) abandon(ctx context.Context, statusURL string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abandonTimeout)
	defer cancel()
	if err := c.Cancel(ctx, statusURL); err != nil {
		c.log.Warn("bulk: could not cancel the abandoned export", "status_url", statusURL, "err", err)
	}
}

// request is one logical HTTP request for call.
type request struct {
	op          string                 // operation name for errors and logs
	method, url string                 // what to send where
	accept      string                 // Accept header
	header      http.Header            // extra headers
	body        func() ([]byte, error) // builds the body for each attempt; nil = none
	contentType string                 // Content-Type of the body
	auth        bool                   // send the access token (when the client has a key)
	idempotent  bool                   // transport errors may be retried
	deadline    time.Time              // retry waits must end before it; zero = none
}

// call sends r. It retries a 429 or 503 response (after its Retry-After,
// else the backoff) and, for idempotent requests, a transport error, at
// most Config.MaxRetries times; on a 401 to a request carrying a token it
// drops the token, fetches a new one and retries once. Any other response
// is returned for the caller to read and close.
func (c *Client) call(ctx context.Context, r request) (*http.Response, error) {
	target, err := url.Parse(r.url)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: url does not parse", r.op, ErrInsecureURL)
	}
	auth := r.auth && c.auth
	if err := c.checkServerURL(target, auth); err != nil {
		return nil, fmt.Errorf("%s: %w", r.op, err)
	}
	where := r.method + " " + redact(target)
	bo := c.backoff()
	refreshed := false
	for retries := 0; ; {
		var tok string
		if auth {
			if tok, err = c.accessToken(ctx); err != nil {
				return nil, err
			}
		}
		var body io.Reader
		if r.body != nil {
			b, err := r.body()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.op, err)
			}
			body = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %s", r.op, ErrInsecureURL, where)
		}
		for k, v := range r.header {
			req.Header[k] = v
		}
		if r.accept != "" {
			req.Header.Set("Accept", r.accept)
		}
		if r.contentType != "" {
			req.Header.Set("Content-Type", r.contentType)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, fmt.Errorf("%s: %s: %w", r.op, where, ctxErr)
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // its message repeats the full url, query included
			}
			if !r.idempotent || retries >= c.cfg.MaxRetries {
				if retries > 0 {
					return nil, fmt.Errorf("%s: %w: %w after %d retries: %s: %w", r.op, ErrUnreachable, ErrTooManyRetries, retries, where, err)
				}
				return nil, fmt.Errorf("%s: %w: %s: %w", r.op, ErrUnreachable, where, err)
			}
			retries++
			wait := bo.next()
			c.log.Warn("bulk: request failed, retrying", "op", r.op, "url", redact(target), "retry", retries, "in", wait, "err", err)
			if err := c.pause(ctx, r.deadline, wait); err != nil {
				return nil, fmt.Errorf("%s: %w", r.op, err)
			}
			continue
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			if !auth {
				return resp, nil
			}
			if refreshed {
				e := statusError(resp, r.op, ErrUnauthorized)
				drain(resp)
				return nil, e
			}
			drain(resp)
			refreshed = true
			c.dropToken(tok)
			c.log.Info("bulk: 401, refreshing the access token", "op", r.op, "url", redact(target))
			continue
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if retries >= c.cfg.MaxRetries {
				e := statusError(resp, r.op, ErrTooManyRetries)
				drain(resp)
				return nil, e
			}
			retries++
			wait, ok := retryAfter(resp.Header.Get("Retry-After"), c.clock.Now())
			if !ok {
				wait = bo.next()
			}
			drain(resp)
			c.log.Warn("bulk: server busy, retrying", "op", r.op, "url", redact(target),
				"status", resp.StatusCode, "retry", retries, "in", wait)
			if err := c.pause(ctx, r.deadline, wait); err != nil {
				return nil, fmt.Errorf("%s: %w", r.op, err)
			}
			continue
		}
		return resp, nil
	}
}

// pause waits d (at least Config.PollMin) on the clock, failing with
// ErrTimeout instead when the wait would end after deadline.
func (c *Client) pause(ctx context.Context, deadline time.Time, d time.Duration) error {
	d = max(d, c.cfg.PollMin)
	if !deadline.IsZero() && c.clock.Now().Add(d).After(deadline) {
		return fmt.Errorf("%w: next attempt in %v would pass the max wait of %v", ErrTimeout, d, c.cfg.MaxWait)
	}
	return c.clock.Sleep(ctx, d)
}

// checkServerURL checks that u is an acceptable URL and, when withToken,
// that it is on the FHIR server's origin, the only place the access token
// goes.
func (c *Client) checkServerURL(u *url.URL, withToken bool) error {
	if err := checkURL(u); err != nil {
		return err
	}
	if withToken && !sameOrigin(u, c.origin) {
		return fmt.Errorf("%w: %s", ErrForeignURL, redact(u))
	}
	return nil
}

// sameOrigin reports whether a and b have the same scheme, host and port.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) &&
		strings.EqualFold(a.Hostname(), b.Hostname()) &&
		port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// redact returns u without its query and fragment, which may carry
// signatures (pre-signed download URLs).
func redact(u *url.URL) string {
	v := *u
	v.RawQuery, v.ForceQuery, v.Fragment, v.RawFragment, v.User = "", false, "", "", nil
	return v.String()
}

// backoff yields PollMin, then doubles up to PollMax.
type backoff struct {
	cur, min, max time.Duration
}

func (c *Client) backoff() *backoff {
	return &backoff{min: c.cfg.PollMin, max: c.cfg.PollMax}
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return maxRetryAfter, true
			}
			return 0, false
		}
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfter), true
}

// statusError builds a StatusError from resp, reading the OperationOutcome
// in its body if there is one. It does not close the body.
func statusError(resp *http.Response, op string, sentinel error) *StatusError {
	e := &StatusError{Op: op, StatusCode: resp.StatusCode, Err: sentinel}
	if resp.Request != nil {
		e.Method = resp.Request.Method
		e.URL = redact(resp.Request.URL)
	}
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Code string `json:"code"`
		} `json:"issue"`
	}
	if readJSON(resp.Body, &oo) == nil && oo.ResourceType == "OperationOutcome" {
		seen := map[string]bool{}
		for _, is := range oo.Issue {
			if code, ok := safeCode(is.Code); ok && !seen[code] {
				seen[code] = true
				e.Issues = append(e.Issues, code)
			}
		}
	}
	return e
}

// drain reads a little of what is left of resp's body, so the connection
// can be reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// printable keeps the printable ASCII of s, at most n bytes: for server
// text such as X-Progress that goes to the log.
func printable(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return b.String()
}
