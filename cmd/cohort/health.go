package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const healthUsage = `Usage: cohort health [--timeout D] URL

Asks a Cohort process's plain-HTTP status endpoint whether it is healthy and
exits 0 if it answers 2xx, 1 otherwise. It is the health check of the
container images, which have no shell or curl:

  cohort health http://127.0.0.1:7402/readyz     a coordinator (status_addr)
  cohort health http://127.0.0.1:9464/healthz    an agent (metrics_addr)

Only http URLs: the status and metrics listeners are plain HTTP on a
loopback or cluster-internal address.

Flags:
`

// runHealth implements `cohort health`.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this `duration`")
	fs.Usage = func() { fmt.Fprint(stderr, healthUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("health: give one URL")
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("health: %q is not an http://HOST:PORT/PATH URL", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health: %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("health: %s answered %s: %s", u.Redacted(), resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s: %s\n", u.Redacted(), resp.Status)
	return nil
}
