package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// adminClient calls a coordinator's admin API: HTTPS, JSON under /v1, a
// bearer token on every request. Any node will do: followers forward to
// the leader.
type adminClient struct {
	// base is the server's URL, "https://host:port", without a path.
	base  string
	token string
	http  *http.Client
	// patience bounds how long a request is retried while the cluster
	// has no leader or rate-limits (0: until the context ends).
	patience time.Duration
}

// maxAnswer bounds a JSON answer (a page of 1000 audit entries is well
// below it).
const maxAnswer = 64 << 20

// newAdminClient checks the server URL and builds a client that trusts
// caFile (the federation CA certificate; "" means the system's roots).
func newAdminClient(server, caFile, token string) (*adminClient, error) {
	base, err := serverURL(server)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := pki.LoadPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		conf.RootCAs = pool
	}
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
	return &adminClient{base: base, token: token, http: &http.Client{Transport: tr}}, nil
}

// serverURL turns "host:port" or "https://host:port" into a base URL. The
// admin API is HTTPS only: a token sent in clear text would be exposed.
func serverURL(s string) (string, error) {
	if s == "" {
		return "", errors.New("no server: pass --server https://HOST:PORT (a coordinator's --admin-addr) or set COHORT_SERVER")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("--server %q: %w", s, err)
	case u.Scheme != "https":
		return "", fmt.Errorf("--server %q: the admin API is HTTPS only (https://HOST:PORT, a coordinator's --admin-addr)", s)
	case u.Host == "":
		return "", fmt.Errorf("--server %q: want https://HOST:PORT", s)
	case u.Path != "" && u.Path != "/":
		return "", fmt.Errorf("--server %q: give the server without a path", s)
	}
	return "https://" + u.Host, nil
}

// apiError is an error answer from the admin API (an RFC 9457 problem
// document).
type apiError struct {
	Status  int
	Problem coordinator.Problem
	// RetryAfter is the Retry-After header of a 429 or 503, if any.
	RetryAfter time.Duration
}

func (e *apiError) Error() string {
	title := e.Problem.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	msg := fmt.Sprintf("%d %s", e.Status, title)
	if e.Problem.Detail != "" {
		msg += ": " + e.Problem.Detail
	}
	switch e.Status {
	case http.StatusUnauthorized:
		msg += " (check the token: --token-file or COHORT_TOKEN; tokens expire, and an admin can make a new one with `cohort admin tokens create`)"
	case http.StatusForbidden:
		msg += " (ask an admin for a token with a role that may do this; `cohort admin whoami` shows yours)"
	}
	return msg
}

// request is one call of the admin API.
type request struct {
	method, path string
	// body is sent as JSON; []byte and an io.Reader are sent as they are,
	// with contentType.
	body        any
	contentType string
	// once: not retried on 502 or 503 (the request is not idempotent:
	// creating a token twice would leave a token nobody holds).
	once bool
}

// call sends req and returns the answer's body. While the cluster has no
// leader (503, or 502 when forwarding failed) an idempotent request is
// tried again until ctx ends; a rate-limited one (429) waits as told.
func (c *adminClient) call(ctx context.Context, req request) ([]byte, error) {
	retryCtx, cancel := c.retryContext(ctx)
	defer cancel()
	wait := 200 * time.Millisecond
	for {
		resp, err := c.send(ctx, req)
		if err == nil {
			defer resp.Body.Close()
			raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
			if err != nil {
				return nil, fmt.Errorf("%s: reading the answer: %w", c.base, err)
			}
			return raw, nil
		}
		var ae *apiError
		if !errors.As(err, &ae) {
			return nil, err
		}
		retry, delay := false, wait
		switch ae.Status {
		case http.StatusTooManyRequests:
			retry = true
			if ae.RetryAfter > 0 {
				delay = ae.RetryAfter
			}
		case http.StatusServiceUnavailable, http.StatusBadGateway:
			retry = !req.once
			wait = min(2*wait, 2*time.Second)
		}
		if !retry {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-retryCtx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// retryContext ends when ctx does or the client's patience runs out: it
// ends the waits between attempts, not the attempts themselves.
func (c *adminClient) retryContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.patience <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.patience)
}

// send makes one attempt. On a 2xx answer it returns the response with
// its body unread; otherwise an *apiError or a transport error naming the
// server.
func (c *adminClient) send(ctx context.Context, req request) (*http.Response, error) {
	var r io.Reader
	switch b := req.body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(j)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, c.base+req.path, r)
	if err != nil {
		return nil, err
	}
	if r != nil {
		ct := req.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, c.transportError(err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	ae := &apiError{Status: resp.StatusCode}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		ae.RetryAfter = time.Duration(min(s, 60)) * time.Second
	}
	if json.Unmarshal(raw, &ae.Problem) != nil || ae.Problem.Status == 0 {
		ae.Problem = coordinator.Problem{Title: http.StatusText(resp.StatusCode), Detail: strings.TrimSpace(string(raw))}
		if len(ae.Problem.Detail) > 200 {
			ae.Problem.Detail = ae.Problem.Detail[:200] + "…"
		}
	}
	return nil, ae
}

// transportError explains a failure to reach the server, naming it.
func (c *adminClient) transportError(err error) error {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("%s: the server's certificate is not from a CA this machine trusts; pass --ca with the federation CA certificate (ca.crt) or set COHORT_CA: %w", c.base, err)
	case errors.As(err, &he):
		return fmt.Errorf("%s: the server's certificate does not name this host; use the host the coordinator's certificate was issued for (cohort ca issue --host): %w", c.base, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no answer in time (--timeout): %w", c.base, err)
	}
	return fmt.Errorf("cannot reach %s: %w", c.base, err)
}

// errUnexpectedAnswer: a 2xx answer that does not decode as expected.
var errUnexpectedAnswer = errors.New("the answer is not what this client expects")

// do calls the API and decodes the JSON answer into out (if not nil). It
// returns the raw answer too, for --json.
func (c *adminClient) do(ctx context.Context, req request, out any) ([]byte, error) {
	raw, err := c.call(ctx, req)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("%s %s: %w: %w", req.method, req.path, errUnexpectedAnswer, err)
		}
	}
	return raw, nil
}

// get is do for a GET.
func (c *adminClient) get(ctx context.Context, path string, out any) ([]byte, error) {
	return c.do(ctx, request{method: http.MethodGet, path: path}, out)
}

// open sends a GET and returns the response of a 2xx answer, body unread,
// for answers too big to hold in memory (model weights). The caller
// closes the body.
func (c *adminClient) open(ctx context.Context, path string) (*http.Response, error) {
	retryCtx, cancel := c.retryContext(ctx)
	defer cancel()
	for {
		resp, err := c.send(ctx, request{method: http.MethodGet, path: path})
		if err == nil {
			return resp, nil
		}
		var ae *apiError
		if !errors.As(err, &ae) || (ae.Status != http.StatusServiceUnavailable && ae.Status != http.StatusTooManyRequests) {
			return nil, err
		}
		t := time.NewTimer(time.Second)
		select {
		case <-retryCtx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// listAll reads every page of a paginated list: the items under field,
// following next_page_token until it is empty.
func listAll[T any](ctx context.Context, c *adminClient, path, field string) ([]T, error) {
	out := []T{}
	token := ""
	for pages := 0; ; pages++ {
		if pages > 100000 {
			return nil, fmt.Errorf("GET %s: the server keeps sending pages", path)
		}
		p := withQuery(path, "page_size", "1000")
		if token != "" {
			p = withQuery(p, "page_token", token)
		}
		var page map[string]json.RawMessage
		if _, err := c.get(ctx, p, &page); err != nil {
			return nil, err
		}
		var items []T
		if raw, ok := page[field]; ok {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("GET %s: %s: %w", path, field, err)
			}
		}
		out = append(out, items...)
		var next string
		if raw, ok := page["next_page_token"]; ok {
			if err := json.Unmarshal(raw, &next); err != nil {
				return nil, fmt.Errorf("GET %s: next_page_token: %w", path, err)
			}
		}
		if next == "" || next == token {
			return out, nil
		}
		token = next
	}
}

// withQuery adds name=value to a path's query.
func withQuery(path, name, value string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + url.QueryEscape(name) + "=" + url.QueryEscape(value)
}
