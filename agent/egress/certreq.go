package egress

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"

	"github.com/cohort-fl/cohort/protocol"
)

// Enrollment and renewal leave the site too, over HTTPS to the
// coordinators' admin address rather than over QUIC: their bodies pass the
// guard like every other message. A body may hold only a certificate
// request for a new key that names nothing (the coordinator decides the
// identity) and, for enrollment, the one-time token.

// CertRequest checks the JSON body of an enrollment (kind KindEnroll) or
// a renewal (KindRenew) request, records it in the egress log, and returns
// it for the caller to send.
func (g *Guard) CertRequest(kind string, body []byte) ([]byte, error) {
	if kind != KindEnroll && kind != KindRenew {
		return nil, fmt.Errorf("%w: %q is not a certificate request", ErrForbidden, kind)
	}
	var req struct {
		Token string `json:"token,omitempty"`
		CSR   string `json:"csr"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("%w: %s body: %w", ErrPayload, kind, err)
	}
	if dec.Decode(new(json.RawMessage)) != io.EOF {
		return nil, fmt.Errorf("%w: %s body: data after the JSON object", ErrPayload, kind)
	}
	if (kind == KindRenew) != (req.Token == "") || len(req.Token) > 200 {
		return nil, fmt.Errorf("%w: %s body: a token goes with enrollment only", ErrPayload, kind)
	}
	block, rest := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: %s body: csr is not one PEM certificate request", ErrPayload, kind)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s body: %w", ErrPayload, kind, err)
	}
	if len(csr.Subject.Names) > 0 || len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses)+len(csr.URIs) > 0 || len(csr.Extensions) > 0 {
		return nil, fmt.Errorf("%w: %s body: the certificate request must name nothing (the coordinators decide the site's identity)", ErrPayload, kind)
	}
	if g.cfg.Tap != nil {
		g.cfg.Tap(body)
	}
	g.bytes.Add(int64(len(body)))
	if err := g.record(Record{Kind: kind, Time: g.now().UTC(), Bytes: len(body), SHA256: protocol.Digest(body)}); err != nil {
		return nil, err
	}
	return body, nil
}
