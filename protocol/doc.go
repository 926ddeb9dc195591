// Package protocol is the contract between a Cohort site agent and the
// coordinator: the Protocol Buffers schema (cohort.proto, generated into
// package pb), length-prefixed framing on QUIC streams, protocol version and
// ALPN, the mutual-TLS configuration, typed errors and the tensor encoding.
//
// Both sides import this package; neither imports the other.
package protocol

//go:generate ../scripts/genproto.sh
