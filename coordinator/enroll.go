package coordinator

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// Site enrollment, after EST (RFC 7030) in spirit: an operator creates a
// site and a one-time enrollment token for it; the gateway makes its own
// private key, sends a certificate request with the token over HTTPS to
// POST /v1/enroll, and gets a short-lived site certificate signed by the
// federation CA, which the coordinators hold. Before two thirds of its
// life the agent renews it at POST /v1/renew, authenticating with the
// certificate itself. The token is consumed by the Raft entry that
// records the enrollment, so two gateways racing with one token cannot
// both win. Revoking a site (POST /v1/sites/{id}/revoke) closes its
// connections, refuses new ones and refuses its renewals.

// EnrollConfig configures site enrollment.
type EnrollConfig struct {
	// CADir is the federation CA's directory (ca.crt, ca.key, as made by
	// `cohort ca init`); empty turns enrollment off.
	CADir string `json:"ca_dir,omitempty"`
	// CertTTL is a site certificate's lifetime (default 7 days).
	CertTTL Duration `json:"cert_ttl,omitempty"`
	// TokenTTL is an enrollment token's lifetime when the operator names
	// none (default 24 hours).
	TokenTTL Duration `json:"token_ttl,omitempty"`
}

func (e EnrollConfig) withDefaults() EnrollConfig {
	if e.CertTTL == 0 {
		e.CertTTL = Duration(7 * 24 * time.Hour)
	}
	if e.TokenTTL == 0 {
		e.TokenTTL = Duration(24 * time.Hour)
	}
	return e
}

// EnrollToken is a one-time enrollment token as the state keeps it.
type EnrollToken struct {
	ID      string    `json:"id"`
	Hash    string    `json:"hash"`
	Site    string    `json:"site"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Used    time.Time `json:"used,omitzero"`
}

const enrollPrefix = "cohortenroll_"

// Errors of enrollment, answered as 401 (token) or 400.
var (
	ErrEnrollToken = errors.New("enrollment token refused")
	ErrEnrollOff   = errors.New("enrollment is not configured on this cluster (enroll.ca_dir)")
)

// newEnrollToken makes an enrollment token string and its id.
func newEnrollToken() (id, secret string, err error) { return newSecret(enrollPrefix, 'e') }

// enrollTokenID returns the id of an enrollment token string.
func enrollTokenID(s string) (string, bool) { return secretID(enrollPrefix, 'e', s) }

// checkEnrollToken finds the enrollment token a secret names and checks
// it may be used at now. Unknown, wrong, used and expired tokens all get
// ErrEnrollToken, with the reason.
func (st *state) checkEnrollToken(secret string, now time.Time) (*EnrollToken, error) {
	id, ok := enrollTokenID(secret)
	if !ok {
		return nil, fmt.Errorf("%w: not an enrollment token", ErrEnrollToken)
	}
	t := st.EnrollTokens[id]
	var want string
	if t != nil {
		want = t.Hash
	}
	if !hashMatches(secret, want) {
		return nil, fmt.Errorf("%w: unknown token", ErrEnrollToken)
	}
	switch s := st.Sites[t.Site]; {
	case !t.Used.IsZero():
		return nil, fmt.Errorf("%w: already used", ErrEnrollToken)
	case !now.Before(t.Expires):
		return nil, fmt.Errorf("%w: expired", ErrEnrollToken)
	case s == nil:
		return nil, fmt.Errorf("%w: its site no longer exists", ErrEnrollToken)
	case !s.Revoked.IsZero():
		return nil, fmt.Errorf("%w: its site was revoked", ErrEnrollToken)
	}
	c := *t
	return &c, nil
}

// enrollBody records an enrollment or a renewal.
type enrollBody struct {
	Token    string    `json:"token,omitempty"` // enrollment token id; empty for a renewal
	Site     string    `json:"site"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// applyEnroll applies cmdEnroll and cmdRenew.
func (st *state) applyEnroll(b enrollBody, at time.Time) error {
	s, ok := st.Sites[b.Site]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSite, b.Site)
	}
	if !s.Revoked.IsZero() {
		return fmt.Errorf("%w: %s", ErrSiteRevoked, b.Site)
	}
	if b.Token != "" {
		t := st.EnrollTokens[b.Token]
		switch {
		case t == nil || t.Site != b.Site:
			return fmt.Errorf("%w: unknown token", ErrEnrollToken)
		case !t.Used.IsZero():
			return fmt.Errorf("%w: already used", ErrEnrollToken)
		case !at.Before(t.Expires):
			return fmt.Errorf("%w: expired", ErrEnrollToken)
		}
		t.Used = at
	}
	s.CertSerial, s.CertExpires = b.Serial, b.NotAfter
	return nil
}

// EnrollRequest is the body of POST /v1/enroll and POST /v1/renew (no
// token).
type EnrollRequest struct {
	Token string `json:"token,omitempty"`
	// CSR is a PEM "CERTIFICATE REQUEST" for an ECDSA P-256 key.
	CSR string `json:"csr"`
}

// EnrollResponse is the certificate issued.
type EnrollResponse struct {
	Site        string    `json:"site"`
	Certificate string    `json:"certificate"` // PEM
	CA          string    `json:"ca"`          // PEM of the federation CA
	NotAfter    time.Time `json:"not_after"`
}

// EnrollTokenView is the answer to creating an enrollment token.
type EnrollTokenView struct {
	ID      string    `json:"id"`
	Site    string    `json:"site"`
	Expires time.Time `json:"expires"`
	Token   string    `json:"token"`
}

func parseCSR(s string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: not a PEM CERTIFICATE REQUEST")
	}
	return x509.ParseCertificateRequest(block.Bytes)
}

// issueSiteCert signs a site certificate for the request's key.
func (n *Node) issueSiteCert(site, csrPEM string) (certPEM []byte, cert *x509.Certificate, status int, err error) {
	if n.ca == nil {
		return nil, nil, http.StatusNotImplemented, ErrEnrollOff
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, nil, http.StatusBadRequest, err
	}
	certPEM, err = n.ca.SignCSR(csr, pki.RoleSite, site, time.Duration(n.enroll.CertTTL), n.now())
	if err != nil {
		return nil, nil, http.StatusBadRequest, err
	}
	block, _ := pem.Decode(certPEM)
	if cert, err = x509.ParseCertificate(block.Bytes); err != nil {
		return nil, nil, http.StatusInternalServerError, err
	}
	return certPEM, cert, 0, nil
}

func (n *Node) postEnrollToken(w http.ResponseWriter, req *http.Request) {
	site := req.PathValue("id")
	var b struct {
		TTL Duration `json:"ttl,omitempty"`
	}
	if req.ContentLength != 0 && !decodeBody(w, req, &b) {
		return
	}
	if b.TTL < 0 || time.Duration(b.TTL) > 30*24*time.Hour {
		writeProblem(w, http.StatusBadRequest, "ttl: at most 720h (default 24h)")
		return
	}
	if b.TTL == 0 {
		b.TTL = n.enroll.TokenTTL
	}
	id, secret, err := newEnrollToken()
	if err != nil {
		writeErr(w, err)
		return
	}
	t := EnrollToken{ID: id, Hash: hashToken(secret), Site: site, Expires: n.now().Add(time.Duration(b.TTL)).UTC()}
	if err := n.proposeFor(req, cmdCreateEnrollToken, t, http.StatusCreated); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, EnrollTokenView{ID: id, Site: site, Expires: t.Expires, Token: secret})
}

// postEnroll is POST /v1/enroll: no bearer token; the enrollment token in
// the body authenticates the gateway.
func (n *Node) postEnroll(w http.ResponseWriter, req *http.Request) {
	rs := stateOf(req)
	var b EnrollRequest
	if !decodeBody(w, req, &b) {
		return
	}
	var (
		t   *EnrollToken
		err error
	)
	n.fsm.view(func(st *state) { t, err = st.checkEnrollToken(strings.TrimSpace(b.Token), n.now()) })
	if err != nil {
		rs.entry.Outcome = "denied"
		writeProblem(w, http.StatusUnauthorized, err.Error())
		return
	}
	rs.entry.Actor, rs.entry.Target = t.Site, "site "+t.Site
	certPEM, cert, status, err := n.issueSiteCert(t.Site, b.CSR)
	if err != nil {
		writeProblem(w, status, err.Error())
		return
	}
	body := enrollBody{Token: t.ID, Site: t.Site, Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC()}
	if err := n.proposeFor(req, cmdEnroll, body, http.StatusCreated); err != nil {
		if errors.Is(err, ErrEnrollToken) {
			writeProblem(w, http.StatusUnauthorized, err.Error())
			return
		}
		writeErr(w, err)
		return
	}
	n.log.Info("site enrolled", "site", t.Site, "not_after", cert.NotAfter)
	writeJSON(w, http.StatusCreated, EnrollResponse{Site: t.Site, Certificate: string(certPEM), CA: string(n.ca.CertPEM()), NotAfter: cert.NotAfter.UTC()})
}

// clientSite returns the site a request comes from: its verified client
// certificate, or the forwarding coordinator's report of it.
func clientSite(req *http.Request) (string, bool) {
	if fromCoordinator(req) {
		s := req.Header.Get(clientSiteHeader)
		return s, s != ""
	}
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 {
		return "", false
	}
	id, err := pki.PeerIdentity(*req.TLS)
	if err != nil || id.Role != pki.RoleSite {
		return "", false
	}
	return id.ID, true
}

// postRenew is POST /v1/renew: the site authenticates with its current
// certificate (mutual TLS) and gets a new one for the request's key.
func (n *Node) postRenew(w http.ResponseWriter, req *http.Request) {
	rs := stateOf(req)
	site, ok := clientSite(req)
	if !ok {
		rs.entry.Outcome = "denied"
		writeProblem(w, http.StatusUnauthorized, "renewal needs the site's current certificate (mutual TLS)")
		return
	}
	rs.entry.Actor, rs.entry.Target = site, "site "+site
	if n.siteRevoked(site) {
		rs.entry.Outcome = "denied"
		n.stats.SitesRevokedRefused.Add(1)
		writeProblem(w, http.StatusForbidden, "the site has been revoked")
		return
	}
	var b EnrollRequest
	if !decodeBody(w, req, &b) {
		return
	}
	certPEM, cert, status, err := n.issueSiteCert(site, b.CSR)
	if err != nil {
		writeProblem(w, status, err.Error())
		return
	}
	if err := n.proposeFor(req, cmdRenew, enrollBody{Site: site, Serial: cert.SerialNumber.Text(16), NotAfter: cert.NotAfter.UTC()}, http.StatusOK); err != nil {
		writeErr(w, err)
		return
	}
	n.log.Info("site certificate renewed", "site", site, "not_after", cert.NotAfter)
	writeJSON(w, http.StatusOK, EnrollResponse{Site: site, Certificate: string(certPEM), CA: string(n.ca.CertPEM()), NotAfter: cert.NotAfter.UTC()})
}
