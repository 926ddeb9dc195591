package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Roles a certificate can carry.
const (
	// RoleCoordinator is a member of the coordinator cluster.
	RoleCoordinator = "coordinator"
	// RoleSite is a hospital's site agent.
	RoleSite = "site"
)

// uriScheme is the scheme of the identity URI SAN ("cohort:<role>/<id>").
const uriScheme = "cohort"

var (
	// ErrExists: a file that would be overwritten (a CA key, an issued key) already exists.
	ErrExists = errors.New("pki: file already exists")
	// ErrInvalidRole: a role other than RoleCoordinator or RoleSite.
	ErrInvalidRole = errors.New("pki: invalid role")
	// ErrInvalidID: an id that does not match ^[a-z0-9][a-z0-9._-]{0,62}$.
	ErrInvalidID = errors.New("pki: invalid id")
	// ErrInvalidHost: a host that is neither an IP address nor a DNS name.
	ErrInvalidHost = errors.New("pki: invalid host")
	// ErrHostsNotAllowed: hosts (SANs) were requested for a site certificate.
	ErrHostsNotAllowed = errors.New("pki: hosts are only allowed in coordinator certificates")
	// ErrNoHosts: a coordinator certificate without any DNS or IP SAN.
	ErrNoHosts = errors.New("pki: coordinator certificate needs at least one host")
	// ErrInvalidValidity: a negative validity period.
	ErrInvalidValidity = errors.New("pki: invalid validity")
	// ErrInvalidCSR: a missing certificate request or one whose signature does not verify.
	ErrInvalidCSR = errors.New("pki: invalid certificate request")
	// ErrKeyType: a key that is not ECDSA P-256.
	ErrKeyType = errors.New("pki: key is not ECDSA P-256")
	// ErrKeyMismatch: a private key that does not belong to its certificate.
	ErrKeyMismatch = errors.New("pki: private key does not match certificate")
	// ErrNotCA: the CA certificate is not a CA certificate.
	ErrNotCA = errors.New("pki: certificate is not a CA")
	// ErrCAExpired: the CA certificate has expired.
	ErrCAExpired = errors.New("pki: CA certificate has expired")
	// ErrNoCertificates: a PEM file without any certificate.
	ErrNoCertificates = errors.New("pki: no certificate found")
	// ErrNoKey: a PEM file without a private key.
	ErrNoKey = errors.New("pki: no private key found")
	// ErrKeyPermissions: a private key file readable or writable by group or others.
	ErrKeyPermissions = errors.New("pki: private key file permissions too open")
	// ErrNoIdentity: a certificate without a consistent Cohort identity.
	ErrNoIdentity = errors.New("pki: certificate has no cohort identity")
	// ErrRoleNotAllowed: a peer's role is not one this endpoint accepts (see RoleError).
	ErrRoleNotAllowed = errors.New("pki: peer role not allowed")
	// ErrALPN: the peer did not negotiate the expected application protocol.
	ErrALPN = errors.New("pki: application protocol not negotiated")
)

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Identity is who a certificate names: a role and an id within that role.
type Identity struct {
	// Role is RoleCoordinator or RoleSite.
	Role string
	// ID is the coordinator's node id or the site's id.
	ID string
}

// String returns the identity in its URI form, "cohort:<role>/<id>".
func (id Identity) String() string {
	return uriScheme + ":" + id.Role + "/" + id.ID
}

func (id Identity) uri() *url.URL {
	return &url.URL{Scheme: uriScheme, Opaque: id.Role + "/" + id.ID}
}

// validate checks the role and the id.
func (id Identity) validate() error {
	if err := ValidateRole(id.Role); err != nil {
		return err
	}
	return ValidateID(id.ID)
}

// ValidateRole returns ErrInvalidRole unless role is RoleCoordinator or RoleSite.
func ValidateRole(role string) error {
	switch role {
	case RoleCoordinator, RoleSite:
		return nil
	}
	return fmt.Errorf("%w %q (want %s or %s)", ErrInvalidRole, role, RoleCoordinator, RoleSite)
}

// ValidateID returns ErrInvalidID unless id matches ^[a-z0-9][a-z0-9._-]{0,62}$.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w %q (want lowercase letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters)", ErrInvalidID, id)
	}
	return nil
}

// IdentityOf returns the identity a certificate names. It returns
// ErrNoIdentity when the certificate has no "cohort:" URI SAN, more than one,
// a malformed one, or one that disagrees with the Subject's CommonName and
// OrganizationalUnit.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrNoIdentity)
	}
	var found []Identity
	for _, u := range cert.URIs {
		if u == nil || !strings.EqualFold(u.Scheme, uriScheme) {
			continue
		}
		role, id, ok := strings.Cut(u.Opaque, "/")
		if !ok {
			return Identity{}, fmt.Errorf("%w: malformed identity URI %q", ErrNoIdentity, u.String())
		}
		found = append(found, Identity{Role: role, ID: id})
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("%w: no %s: URI SAN", ErrNoIdentity, uriScheme)
	case 1:
	default:
		return Identity{}, fmt.Errorf("%w: %d identity URIs", ErrNoIdentity, len(found))
	}
	ident := found[0]
	if err := ident.validate(); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrNoIdentity, err)
	}
	if cert.Subject.CommonName != ident.ID {
		return Identity{}, fmt.Errorf("%w: common name %q does not match id %q", ErrNoIdentity, cert.Subject.CommonName, ident.ID)
	}
	if ou := cert.Subject.OrganizationalUnit; len(ou) != 1 || ou[0] != ident.Role {
		return Identity{}, fmt.Errorf("%w: organizational unit %q does not match role %q", ErrNoIdentity, ou, ident.Role)
	}
	return ident, nil
}
