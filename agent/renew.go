package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// Certificate renewal. A site certificate is short-lived (7 days by
// default). At two thirds of its remaining life, measured from when the
// agent loaded it, the agent makes a new key, asks the coordinators'
// admin API for a certificate (POST /v1/renew, authenticated by the
// current certificate over mutual TLS), checks the answer like
// enrollment does, writes key and certificate, and swaps them into the
// QUIC client's TLS configuration: new connections present the new
// certificate, open ones carry on. A failed renewal is retried with
// backoff; a 403 (the site was revoked) ends renewal.

// RenewConfig configures automatic certificate renewal.
type RenewConfig struct {
	// Server is the coordinators' admin API, https://host:port (any node;
	// followers forward). Empty turns renewal off: the agent then warns
	// when its certificate has less than a week left, and the operator
	// must enroll the gateway again before it expires.
	Server string `json:"server,omitempty"`
	// CA is the CA certificate file the admin API's certificate must
	// chain to; empty means tls.ca.
	CA string `json:"ca,omitempty"`
}

const (
	// renewRetryMin and renewRetryMax bound the wait between failed
	// renewal attempts (doubling, with up to 10% jitter).
	renewRetryMin = 5 * time.Second
	renewRetryMax = 10 * time.Minute
	// expiryWarning is how long before its expiry a certificate that will
	// not be renewed is warned about.
	expiryWarning = 7 * 24 * time.Hour
)

// siteCert is the certificate the agent presents, and when it was loaded
// (read at start, or received by a renewal).
type siteCert struct {
	tls      tls.Certificate
	loadedAt time.Time
}

// notAfter is the certificate's expiry.
func (c *siteCert) notAfter() time.Time { return c.tls.Leaf.NotAfter }

// clientCert is the QUIC client's tls.Config.GetClientCertificate: the
// certificate current when a connection is made.
func (a *Agent) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return &a.cert.Load().tls, nil
}

// CertExpires is when the certificate the agent presents expires.
func (a *Agent) CertExpires() time.Time { return a.cert.Load().notAfter() }

// renewAt is when a certificate loaded at loadedAt and valid until
// notAfter is renewed: two thirds of the way from loadedAt to notAfter.
// (Not from its NotBefore, which the CA backdates.)
func renewAt(loadedAt, notAfter time.Time) time.Time {
	if !notAfter.After(loadedAt) {
		return loadedAt
	}
	return loadedAt.Add(notAfter.Sub(loadedAt) / 3 * 2)
}

// retryDelay is the wait after the n-th (from 0) failed attempt in a row:
// renewRetryMin doubling up to renewRetryMax, plus up to 10% jitter so
// that gateways cut off together do not all come back at once.
func retryDelay(n int) time.Duration {
	d := renewRetryMax
	if n < 20 {
		d = min(renewRetryMin<<n, renewRetryMax)
	}
	return d + rand.N(d/10+1) // #nosec G404 -- jitter of a renewal time; not a secret
}

// renewLoop renews the certificate until ctx ends or the site is revoked.
// With renewal off it only warns as the certificate nears its expiry.
func (a *Agent) renewLoop(ctx context.Context) {
	if a.renewServer == "" {
		a.watchExpiry(ctx)
		return
	}
	for {
		cur := a.cert.Load()
		at := renewAt(cur.loadedAt, cur.notAfter())
		a.mu.Lock()
		a.nextRenewal = at
		a.mu.Unlock()
		if a.clock.Sleep(ctx, at.Sub(a.clock.Now())) != nil {
			return
		}
		if state, _ := a.session.get(); state == SessionRevoked {
			a.log.Info("not renewing the certificate of a revoked site")
			return
		}
		for failures := 0; ; failures++ {
			err := a.renewOnce(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrRevoked) {
				a.mu.Lock()
				a.nextRenewal = time.Time{}
				a.mu.Unlock()
				a.markRevoked(err)
				return
			}
			delay := retryDelay(failures)
			a.renewFailed(err, delay)
			if a.clock.Sleep(ctx, delay) != nil {
				return
			}
		}
	}
}

// watchExpiry warns, with renewal off, a week before the certificate
// expires and again when it has expired.
func (a *Agent) watchExpiry(ctx context.Context) {
	notAfter := a.cert.Load().notAfter()
	if a.clock.Sleep(ctx, notAfter.Add(-expiryWarning).Sub(a.clock.Now())) != nil {
		return
	}
	a.log.Warn("the site certificate expires soon and will not be renewed (renew.server is not set): set renew.server to the coordinators' admin URL, or enroll the gateway again",
		"cert", a.cfg.TLS.Cert, "not_after", notAfter)
	if a.clock.Sleep(ctx, notAfter.Sub(a.clock.Now())) != nil {
		return
	}
	a.log.Error("the site certificate has expired: the coordinators will refuse this gateway until it is enrolled again (cohort agent enroll --force with a new token)",
		"cert", a.cfg.TLS.Cert, "not_after", notAfter)
}

// renewFailed counts and logs a failed renewal.
func (a *Agent) renewFailed(err error, retry time.Duration) {
	a.mu.Lock()
	a.stats.CertRenewalFailures++
	a.stats.LastRenewalError = err.Error()
	a.mu.Unlock()
	notAfter := a.cert.Load().notAfter()
	if !a.clock.Now().Before(notAfter) {
		a.log.Error("certificate renewal failed and the certificate has expired: it can no longer renew itself; enroll the gateway again with a new token (cohort agent enroll --force)",
			"err", err, "not_after", notAfter, "retry_in", retry)
	} else {
		a.log.Warn("certificate renewal failed; retrying", "err", err, "not_after", notAfter, "retry_in", retry)
	}
	a.writeStatus()
}

// renewOnce makes a new key, gets a certificate for it and, once both are
// on disk, swaps them in.
func (a *Agent) renewOnce(ctx context.Context) error {
	key, csr, err := newKeyAndCSR()
	if err != nil {
		return err
	}
	if a.guard == nil {
		return errors.New("renewal: the agent is not open (no egress guard)")
	}
	resp, err := postIssue(ctx, a.renewClient, a.guard, egress.KindRenew, a.renewServer, "/v1/renew", issueRequest{CSR: csr})
	var he *HTTPError
	switch {
	case errors.As(err, &he) && he.Status == http.StatusForbidden:
		return fmt.Errorf("%w: %w", ErrRevoked, err)
	case errors.As(err, &he) && he.Status == http.StatusUnauthorized:
		return fmt.Errorf("the coordinator did not accept this gateway's certificate %s (expired, or not from the federation CA?): %w", a.cfg.TLS.Cert, err)
	case err != nil:
		return err
	}
	cert, certPEM, err := checkIssued(resp, a.pool, key.Public(), a.site, a.clock.Now())
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := saveKeyPair(a.cfg.TLS, certPEM, keyPEM); err != nil {
		return fmt.Errorf("keep the renewed certificate: %w", err)
	}
	old := a.cert.Load().notAfter()
	loaded := a.clock.Now()
	a.cert.Store(&siteCert{
		tls:      tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert},
		loadedAt: loaded,
	})
	a.mu.Lock()
	a.nextRenewal = renewAt(loaded, cert.NotAfter)
	a.stats.CertRenewals++
	a.stats.LastRenewalError = ""
	a.mu.Unlock()
	a.log.Info("site certificate renewed", "not_after", cert.NotAfter, "previous_not_after", old)
	a.writeStatus()
	return nil
}

// Renewed files are written as <name>.new first. saveKeyPair writes
// key.new then cert.new, then renames key.new over the key and cert.new
// over the certificate. finishRenewal, at start, completes or undoes a
// renewal a crash interrupted: a lone cert.new is the second rename not
// done (its key is in place); any other leftover means the old pair is
// still whole.
const renewSuffix = ".new"

// saveKeyPair replaces the key and certificate files of f.
func saveKeyPair(f pki.Files, certPEM, keyPEM []byte) error {
	keyNew, certNew := f.Key+renewSuffix, f.Cert+renewSuffix
	if err := writeAtomic(keyNew, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeAtomic(certNew, certPEM, 0o644); err != nil {
		os.Remove(keyNew)
		return err
	}
	if err := os.Rename(keyNew, f.Key); err != nil {
		os.Remove(keyNew)
		os.Remove(certNew)
		return err
	}
	return os.Rename(certNew, f.Cert)
}

// finishRenewal completes or undoes an interrupted saveKeyPair.
func finishRenewal(f pki.Files) error {
	keyNew, certNew := f.Key+renewSuffix, f.Cert+renewSuffix
	_, kerr := os.Lstat(keyNew)
	_, cerr := os.Lstat(certNew)
	switch {
	case cerr == nil && errors.Is(kerr, os.ErrNotExist):
		return os.Rename(certNew, f.Cert)
	case kerr == nil:
		os.Remove(certNew)
		return os.Remove(keyNew)
	}
	return nil
}
