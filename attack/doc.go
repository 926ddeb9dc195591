// Package attack is Cohort's attack suite. Its tests build the cohort
// binary once, run it as real coordinator and agent processes on loopback,
// and attack them from test code that speaks raw QUIC, TLS, HTTP and the
// protocol's frames. Every attack is one test function, named
// TestAttack<Surface><Attack> so that the threat model
// (docs/threat-model.md) can point at it. Each asserts that the attack is
// refused with a clear error, counted by a Prometheus counter of the
// process attacked, audited where the audit log must show it, that nothing
// an attacker sent reaches an aggregate, and that the process is still
// healthy afterwards (no panic, /healthz OK).
//
// Surfaces:
//
//   - transport (transport_test.go): a certificate from another CA, an
//     expired certificate, a revoked site, a coordinator certificate
//     presented by a site, a wrong ALPN, a protocol version below the
//     minimum, oversized frames, more streams than allowed, connections
//     that never speak.
//   - updates (updates_test.go): replays, closed and future rounds, wrong
//     shapes, NaN and Inf values, absurd norms, lying sample counts.
//   - admin API (admin_test.go): token guessing, cross-site requests,
//     script injection through names, path traversal in downloads,
//     oversized and deeply nested JSON.
//   - agent (agent_test.go): a feature spec that would read identifying
//     fields, a tampered model download, local inference without
//     credentials; against a real agent process and a scripted coordinator.
//
// The suite is bounded: every attack sends at most a few hundred requests
// and waits seconds, not minutes. go test -short skips the waits on the
// coordinator's connection timeouts.
package attack
