// Package secagg implements secure aggregation after Bonawitz et al.,
// "Practical Secure Aggregation for Privacy-Preserving Machine Learning"
// (CCS 2017), with the k-regular communication graph of SecAgg+ (Bell et
// al., CCS 2020) as an option. The coordinator learns the sum of the sites'
// clipped updates and nothing else about any one of them, and the protocol
// completes as long as at least t sites remain at every step.
//
// The package is pure: no I/O, no goroutines, no clocks, no logging.
// Messages go in, messages come out. The agent drives a [Client], the
// coordinator a [Server]; the simulator can drive both. It imports no other
// Cohort package.
//
// # Protocol
//
// A run is one [Session] (job id, round, the ordered candidate clients U0;
// a client's index is its position plus one) with one [Config]
// (threshold t, clip range c, fixed-point scale, vector length, graph
// degree). Every message carries the job and round and is refused in any
// other session or phase.
//
//	client u                                    server
//	── round 0: AdvertiseKeys ───────────────────────────────────────────────
//	make X25519 key pairs c_u, s_u
//	AdvertiseKeys{c_u^pk, s_u^pk}          ──▶  collect; Advance: U1 (≥ t)
//	                                       ◀──  KeyList{U1 and their keys}
//	── round 1: ShareKeys ───────────────────────────────────────────────────
//	check U1 (≥ t, own keys, all distinct)
//	draw self-mask seed b_u (32 bytes)
//	Shamir-share s_u^sk and b_u t-of-m over
//	its neighbourhood N(u) ⊆ U1 (all of U1 by
//	default), encrypt v's two shares for v
//	ShareKeys{one ciphertext per v ∈ N(u)} ──▶  collect; Advance: U2 (≥ t)
//	                                       ◀──  RoutedShares{ciphertexts to u}
//	── round 2: MaskedInput ─────────────────────────────────────────────────
//	decrypt (AEAD), check ≥ t remain
//	y_u = Encode(clip(x_u)) + PRG(b_u)
//	    + Σ_{v ∈ U2∩N(u), v≠u} ±PRG(s_{u,v})
//	      (+ if u < v, − if u > v), mod 2^32
//	MaskedInput{y_u}                       ──▶  sum += y_u; Advance: U3 (≥ t)
//	                                       ◀──  UnmaskRequest{U3, U2\U3}
//	── round 3: Unmasking ───────────────────────────────────────────────────
//	refuse v in both lists, refuse a second,
//	different request; send for v ∈ U3 its
//	share of b_v, for v ∈ U2\U3 its share of
//	s_v^sk (neighbours only)
//	UnmaskResponse                         ──▶  collect; Advance (≥ t answers):
//	                                            rebuild s_v^sk of the dropped →
//	                                            remove their pairwise masks with
//	                                            U3; rebuild b_u of U3 → remove
//	                                            self masks; decode → Result
//
// Pairwise masks of two clients that both sent inputs cancel in the sum;
// those a dropped client v would have cancelled are recomputed from its
// reconstructed s key; self masks are removed with the reconstructed b_u.
// The server uses Handle for every client message, Ready (everyone
// answered) or a deadline to decide when to Advance, and KeyList,
// RoutedShares(to), UnmaskRequest and Result for its outputs; Participants
// and Pending say who is in the current step. Advance with fewer than t
// messages fails the run with a [*PhaseError] naming the phase and wrapping
// [ErrTooFewClients]; the coordinator then starts a new round (a new
// Session: keys, seeds and masks are never reused across sessions).
//
// # Threat model
//
// Honest-but-curious server, and up to t−1 clients colluding with it: the
// server follows the protocol but tries to learn from what it sees. The
// joint view of the server and fewer than t clients reveals nothing about
// the other clients' updates beyond the sum of those in U3. The server sees
// public keys, ciphertexts it cannot open, masked inputs (uniformly random
// individually: every masked input and every partial sum carries at least
// one mask it cannot remove), and, per client, shares of either its
// self-mask seed (if its input arrived) or its mask key (if it dropped),
// never both. The test hook ([Server.SetObserver]) records every vector the
// server holds; the tests check none is an individual update. Threshold
// t ≥ 2, so the sum is never one client's update.
//
// A malicious (active) server can make a run fail or produce a wrong sum
// (drop or corrupt messages, declare clients dropped, route inconsistently),
// and it chooses U1, U2 and U3. With this design it cannot:
//   - read or forge the shares clients exchange (AEAD with associated data
//     binding job, round, sender and receiver; keys from X25519 + HKDF);
//   - replay a message into another round, job or phase;
//   - obtain both secrets of one client through one client: a client
//     refuses a request naming the same client as survivor and dropped
//     ([ErrBothShares]) and any second, different request
//     ([ErrConflictingRequest]), also across a restart of the agent;
//   - obtain both secrets of one client by telling different clients
//     different stories, because t is more than half of the share holders
//     (Config.ValidateFor): two disjoint groups cannot both reach t.
//
// It CAN learn an individual update by substituting public keys: the key
// advertisements are not signed (mTLS authenticates each site to the
// server, not to the other sites), so a server that hands client u a
// KeyList of keys it made itself receives all of u's shares. Security
// against an active server needs each AdvertiseKeys signed with the site's
// certificate key and checked by the other clients, plus the paper's
// ConsistencyCheck round; neither is implemented (see below).
//
// # Parameters
//
//   - Threshold t: 2 ≤ t ≤ m and 2t > m, m the number of share holders (n,
//     or Degree+1 with a sparse graph). Larger t tolerates fewer dropouts
//     (n−t per step) but needs more collusion to break. [MajorityThreshold]
//     gives the smallest accepted value.
//   - ClipRange c and Scale: coordinates are clipped to [-c, c] and encoded
//     as round(x·Scale) in two's complement mod 2^32; per-coordinate error
//     ≤ 0.5/Scale, so the sum of m updates errs by ≤ m·0.5/Scale.
//     ValidateFor requires n·round(c·Scale) ≤ 2^31−1 so the sum cannot
//     wrap. The default (c = 1, Scale = 2^16) allows 32767 clients.
//   - VectorLength: 1 to 2^26 coordinates.
//   - Degree: 0 for the full graph (each client shares with and masks
//     against every other: O(n) work per client, O(n²) ciphertexts at the
//     server). An even k ≥ 2 places U1 on a ring shuffled by a permutation
//     derived from the session and links each client to the k/2 on either
//     side (a k-regular Harary graph): O(k) work per client. Privacy then
//     also depends on the graph: a client's neighbourhood must not be
//     dominated by colluders, which SecAgg+ argues holds with high
//     probability for k = O(log n) and random placement; here the placement
//     is derived from public session data, which an honest-but-curious
//     server does not bias.
//
// # Choices
//
//   - Key agreement: X25519 (crypto/ecdh), two key pairs per client and
//     session: c for share encryption, s for pairwise masks.
//   - KDF: HKDF-SHA256 (crypto/hkdf); every derived key binds a purpose
//     label, the protocol version, job id, round and the client indices.
//   - AEAD: AES-256-GCM, a key per direction and session, random 96-bit
//     nonce; associated data binds job, round, sender and receiver.
//   - PRG: AES-256-CTR keystream from a zero IV under a per-vector seed
//     (each seed is used for exactly one vector), read as little-endian
//     uint32 words; works for any length (no block alignment needed).
//   - Secret sharing: Shamir over GF(2^61−1). A 32-byte secret is cut into
//     five chunks of at most 56 bits, each shared with its own random
//     polynomial; a holder's share is its index X and five field elements
//     (44 bytes). t−1 shares are uniformly distributed whatever the secret
//     (checked exhaustively in a small field by the tests); reconstruction
//     with fewer than t distinct shares is [ErrTooFewShares], and shares
//     that do not belong together are detected as [ErrInconsistentShares]
//     with probability ≈ 1 − 2^-49 (chunks must come out below 2^56); a
//     reconstructed mask key must also match the advertised public key.
//   - Fixed point: two's complement mod 2^32 (see Parameters).
//   - Only the standard library.
//
// # State and replication
//
// The [Server] is deterministic (no randomness, no clocks, no map-order
// dependence): replaying the same accepted messages and Advance calls gives
// the same state, and [Server.MarshalJSON] gives the same bytes. A
// coordinator can replicate it by logging each accepted message and each
// Advance through Raft, or by snapshotting its JSON; a new leader restores
// it with UnmarshalJSON and continues (the tests serialize the server, and
// every client, between every step). The state holds public keys, the
// routed ciphertexts (n·(m−1)·116 bytes until MaskedInput closes: about
// 1.1 MiB for n = 100 with the full graph, so log the ShareKeys messages
// rather than snapshots at that size), the running sum of masked inputs
// (4·VectorLength bytes), the unmasking shares and the final sum: nothing
// secret from the server's point of view.
//
// A [Client] holds secrets (private keys, b_u, shares entrusted by others).
// [Client.MarshalBinary] exports them for an agent that must survive a
// restart; that export must be stored encrypted and deleted after the
// round. The private keys and b_u are erased once the masked input is
// computed.
//
// Wire encodings: every message has MarshalBinary/UnmarshalBinary and
// [Decode] reads any of them; decoders bound every count by the bytes
// present and refuse trailing bytes (fuzzed).
//
// # Not done
//
//   - Active security: signed key advertisements and the ConsistencyCheck
//     round of the paper.
//   - Per-client DP noise and weighting: the caller scales updates (e.g. by
//     sample count, within the clip range) before Encode; the sum is of
//     what clients send.
//   - The sparse graph's placement is derived from the session, not from
//     public randomness the server cannot influence.
package secagg
