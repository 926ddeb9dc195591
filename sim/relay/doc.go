// Package relay is a lossy UDP relay for the simulator. `cohort sim` puts
// one Relay between the agents and each coordinator, so that the agents'
// QUIC connections cross a link whose conditions the simulation controls:
// packet loss, latency, jitter and outages (Down), set at any time with
// Relay.Set while traffic flows.
//
// A Relay listens on one UDP address and forwards every datagram it
// receives to one target address. Like a NAT, it opens one upstream socket
// per client address, so the target sees a distinct 5-tuple per client and
// replies are routed back to the client that sent the original; a session
// that has seen no datagram in either direction for
// Config.SessionIdleTimeout is forgotten and its socket closed, and the
// next datagram from that client opens a new one (a NAT rebinding, which
// QUIC survives by connection migration).
//
// Conditions apply independently in each direction (Direction), each with
// its own random stream seeded from Config.Seed: given the same Seed and
// the same sequence of datagrams in a direction, the same datagrams are
// dropped for loss, whatever the other settings (every datagram received
// consumes exactly one draw, even while the link is down).
//
// Delayed datagrams wait in a bounded FIFO queue per direction; a datagram
// that finds the queue full is dropped and counted, like a router's tail
// drop. Jitter adds a uniform random delay in [0, Jitter] to each datagram
// but never reorders a direction: a datagram leaves no earlier than the one
// before it, so a slow datagram also holds back those that follow (as on a
// real FIFO link). Down drops every datagram received and every queued
// datagram that falls due while the link is down: once Set returns with
// Down, nothing more is delivered in that direction.
//
// Limits: the relay models loss, delay and outages only. It has no
// bandwidth limit, does not duplicate, corrupt or reorder datagrams, does
// not emulate an MTU (datagrams up to 64 KiB pass whole) and does not carry
// ECN or TOS bits (QUIC falls back to no ECN). Changing Latency affects only
// datagrams received afterwards, and those still leave after the ones
// already queued. Delivery times come from the injected Clock; with the
// real clock they are as precise as Go timers, so sub-millisecond
// latencies are approximate. The relay is built for loopback simulations
// with tens to hundreds of sessions, each holding a socket and a 64 KiB
// read buffer; it is not a production proxy.
package relay
