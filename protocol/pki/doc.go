// Package pki is the federation's public-key infrastructure: a small
// certificate authority (created by `cohort ca init`), certificate issuance
// for coordinators and sites, loading of certificates and keys from PEM
// files, and the mutual-TLS configurations that every Cohort connection uses
// (agent↔coordinator over QUIC, coordinator↔coordinator for Raft over TCP).
//
// All keys are ECDSA P-256. Certificates and keys are PEM files; private keys
// are PKCS #8 and must not be readable or writable by group or others.
//
// # Identity scheme
//
// Every leaf certificate names exactly one peer, a (role, id) pair, in three
// places that must agree:
//
//   - Subject CommonName = id
//   - Subject OrganizationalUnit = [role]
//   - one URI subject alternative name "cohort:<role>/<id>",
//     for example "cohort:site/st-marys" or "cohort:coordinator/c1"
//
// The role is RoleCoordinator or RoleSite. An id matches
// ^[a-z0-9][a-z0-9._-]{0,62}$, so it is safe as a file name and a log field.
// IdentityOf reads the pair back and refuses a certificate where the three
// disagree; it is the URI SAN that is authoritative, the Subject fields are
// kept for humans and tools that only show the Subject.
//
// Coordinator certificates carry ExtKeyUsage ServerAuth and ClientAuth (Raft
// peers dial each other) and DNS/IP SANs for the names agents and peers use
// to reach them; clients verify those names with standard hostname
// verification. Site certificates carry ClientAuth only: a site never serves.
//
// ServerTLS and ClientTLS build TLS 1.3-only configurations that require a
// certificate from the federation CA on both ends, pin the ALPN protocol and
// refuse a peer whose role is not the one expected.
package pki
