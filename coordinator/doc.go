// Package coordinator is the federation's control plane: a Raft-replicated
// state machine of sites, jobs, rounds and global models; the leader's round
// engine that opens rounds, collects site updates and aggregates them; and
// the QUIC server agents dial with mutual TLS.
//
// See DESIGN.md in this directory for how a round flows and what survives a
// leader's death.
package coordinator
