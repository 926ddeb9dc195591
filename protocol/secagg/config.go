package secagg

import (
	"fmt"
	"math"
)

// Limits on the sizes a Config, Session or message may declare. They bound
// what a decoder allocates for bytes a peer sent.
const (
	// MaxClients is the largest number of clients in one protocol run.
	MaxClients = 1 << 14
	// MaxVectorLength is the largest number of coordinates in an update.
	MaxVectorLength = 1 << 26
	// MaxIDLength bounds a job id and a client id, in bytes.
	MaxIDLength = 255
	// maxSum is the largest magnitude the decoded sum may reach without
	// wrapping modulo 2^32 (the sum is read as a two's-complement int32).
	maxSum = math.MaxInt32
)

// Config holds a job's secure aggregation parameters. The coordinator sends
// the same Config to every client of a round; clients check it themselves.
type Config struct {
	// Threshold is t: the number of share holders that can reconstruct a
	// client's secrets, and the fewest clients that must remain at every
	// step. The server learns the sum once t clients answer the last
	// step, so up to n−t clients may drop at each phase. It must be at
	// least 2 and more than half of the neighbourhood size (n with the
	// full graph, Degree+1 with a sparse one) so that a server cannot split
	// the clients into two groups that each reveal different shares; and at
	// most that size.
	Threshold int `json:"threshold"`
	// ClipRange is c: every coordinate of an update is clipped to [-c, c]
	// before it is encoded. Must be finite and positive.
	ClipRange float64 `json:"clip_range"`
	// Scale is the fixed-point resolution: a coordinate x encodes as the
	// integer round(x·Scale) mod 2^32, so encoding errs by at most
	// 0.5/Scale per coordinate (and a sum of m updates by m·0.5/Scale).
	// n·round(c·Scale) must stay below 2^31 so the sum of n clipped
	// updates cannot wrap (see ValidateFor).
	Scale float64 `json:"scale"`
	// VectorLength is the number of coordinates of an update.
	VectorLength int `json:"vector_length"`
	// Degree selects the communication graph. 0 (the default) is the full
	// graph of Bonawitz et al.: every client shares its secrets with, and
	// masks against, every other client. An even Degree k ≥ 2 is the
	// SecAgg+ variant: clients are placed on a k-regular Harary graph
	// (a random ring derived from the session, each node linked to the k/2
	// nodes on either side) and only talk to their k neighbours; Threshold
	// then counts within a neighbourhood of k+1 clients (the client and
	// its neighbours). A Degree of n−1 or more is the full graph.
	Degree int `json:"degree,omitempty"`
}

// DefaultConfig returns the default clipping and resolution: updates
// clipped to [-1, 1] at a resolution of 2^-16, full graph. Threshold and
// VectorLength have no default; set them for the job (MajorityThreshold
// gives the smallest secure threshold).
func DefaultConfig() Config {
	return Config{ClipRange: 1, Scale: 1 << 16}
}

// MajorityThreshold returns the smallest threshold Validate accepts for n
// clients and the given Degree: ⌊m/2⌋+1 for a neighbourhood of m clients
// (at least 2).
func MajorityThreshold(n, degree int) int {
	m := neighbourhoodSize(n, degree)
	return max(2, m/2+1)
}

// neighbourhoodSize is the number of clients (itself included) a client
// shares its secrets with, out of n.
func neighbourhoodSize(n, degree int) int {
	if degree == 0 || degree+1 >= n {
		return n
	}
	return degree + 1
}

// maxMagnitude is the largest |q| of an encoded coordinate.
func (c Config) maxMagnitude() float64 { return math.Round(c.ClipRange * c.Scale) }

// Validate checks the parameters that do not depend on the number of
// clients. ValidateFor also checks those that do.
func (c Config) Validate() error {
	switch {
	case c.Threshold < 2:
		return fmt.Errorf("%w: threshold %d: must be at least 2 (the sum of one client is that client's update)", ErrConfig, c.Threshold)
	case c.VectorLength < 1 || c.VectorLength > MaxVectorLength:
		return fmt.Errorf("%w: vector length %d: must be in [1, %d]", ErrConfig, c.VectorLength, MaxVectorLength)
	case math.IsNaN(c.ClipRange) || math.IsInf(c.ClipRange, 0) || c.ClipRange <= 0:
		return fmt.Errorf("%w: clip range %v: must be finite and positive", ErrConfig, c.ClipRange)
	case math.IsNaN(c.Scale) || math.IsInf(c.Scale, 0) || c.Scale <= 0:
		return fmt.Errorf("%w: scale %v: must be finite and positive", ErrConfig, c.Scale)
	case c.Degree < 0 || c.Degree%2 != 0:
		return fmt.Errorf("%w: degree %d: must be 0 (full graph) or an even number ≥ 2", ErrConfig, c.Degree)
	case c.Degree > 0 && c.Threshold > c.Degree+1:
		return fmt.Errorf("%w: threshold %d exceeds the neighbourhood size degree+1 = %d", ErrConfig, c.Threshold, c.Degree+1)
	}
	r := c.maxMagnitude()
	if r < 1 {
		return fmt.Errorf("%w: clip range %v × scale %v rounds to 0: every value would encode as 0", ErrConfig, c.ClipRange, c.Scale)
	}
	if r > maxSum/2 {
		return fmt.Errorf("%w: clip range %v × scale %v = %v: even two clients' sum would wrap modulo 2^32", ErrConfig, c.ClipRange, c.Scale, r)
	}
	return nil
}

// ValidateFor checks the parameters for a run with n clients: Validate, and
//   - 2 ≤ n ≤ MaxClients;
//   - Threshold ≤ m and 2·Threshold > m, where m is the neighbourhood size
//     (n, or Degree+1 with a sparse graph);
//   - n·round(ClipRange·Scale) ≤ 2^31−1, so that the sum of n clipped,
//     encoded updates cannot wrap modulo 2^32.
func (c Config) ValidateFor(n int) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if n < 2 || n > MaxClients {
		return fmt.Errorf("%w: %d clients: must be in [2, %d]", ErrConfig, n, MaxClients)
	}
	m := neighbourhoodSize(n, c.Degree)
	if c.Threshold > m {
		return fmt.Errorf("%w: threshold %d exceeds the %d clients that hold shares", ErrConfig, c.Threshold, m)
	}
	if 2*c.Threshold <= m {
		return fmt.Errorf("%w: threshold %d is not more than half of %d share holders: a malicious server could split them and unmask a client (need ≥ %d)",
			ErrConfig, c.Threshold, m, m/2+1)
	}
	r := c.maxMagnitude()
	if float64(n)*r > maxSum {
		return fmt.Errorf("%w: %d clients × round(clip range %v × scale %v) = %v exceeds 2^31−1: the sum could wrap modulo 2^32; lower the scale to at most %v",
			ErrConfig, n, c.ClipRange, c.Scale, float64(n)*r, math.Floor(maxSum/float64(n))/c.ClipRange)
	}
	return nil
}

// Session identifies one run of the protocol: the job, the round, and the
// candidate clients U0 in a fixed order. A client's index is its position
// in Clients plus one; it is the x-coordinate of the Shamir shares that
// client holds and orders the pairwise masks. Every message carries the job
// and round, and is refused in any other session.
type Session struct {
	// JobID names the job; at most MaxIDLength bytes, not empty.
	JobID string `json:"job_id"`
	// Round is the job's round number.
	Round uint64 `json:"round"`
	// Clients are the candidate clients' ids (site ids, as the transport
	// authenticates them): distinct, non-empty, at most MaxIDLength bytes.
	Clients []string `json:"clients"`
}

// Validate checks the session's ids.
func (s Session) Validate() error {
	if s.JobID == "" || len(s.JobID) > MaxIDLength {
		return fmt.Errorf("%w: job id must have 1 to %d bytes", ErrConfig, MaxIDLength)
	}
	if len(s.Clients) > MaxClients {
		return fmt.Errorf("%w: %d clients: at most %d", ErrConfig, len(s.Clients), MaxClients)
	}
	seen := make(map[string]bool, len(s.Clients))
	for _, id := range s.Clients {
		if id == "" || len(id) > MaxIDLength {
			return fmt.Errorf("%w: client id %q must have 1 to %d bytes", ErrConfig, id, MaxIDLength)
		}
		if seen[id] {
			return fmt.Errorf("%w: client %q listed twice", ErrConfig, id)
		}
		seen[id] = true
	}
	return nil
}

// index returns id's 1-based index, or 0.
func (s Session) index(id string) int {
	for i, c := range s.Clients {
		if c == id {
			return i + 1
		}
	}
	return 0
}

// id returns the client id of a 1-based index.
func (s Session) id(index int) string { return s.Clients[index-1] }

func (s Session) header() Header { return Header{JobID: s.JobID, Round: s.Round} }

func validate(cfg Config, sess Session) error {
	if err := sess.Validate(); err != nil {
		return err
	}
	return cfg.ValidateFor(len(sess.Clients))
}

// Phase is a step of the protocol. The server's phase is the step whose
// messages it is collecting; a client's phase is the step it performs next.
type Phase int

const (
	// PhaseAdvertiseKeys (round 0): clients send their two public keys.
	PhaseAdvertiseKeys Phase = iota
	// PhaseShareKeys (round 1): clients send encrypted shares of their
	// secrets, which the server routes.
	PhaseShareKeys
	// PhaseMaskedInput (round 2): clients send their masked inputs.
	PhaseMaskedInput
	// PhaseUnmasking (round 3): surviving clients send the shares that
	// remove the masks.
	PhaseUnmasking
	// PhaseDone: the server holds the sum; the client has answered.
	PhaseDone
	// PhaseFailed: the run was abandoned (see the server's Failure).
	PhaseFailed
)

var phaseNames = [...]string{"AdvertiseKeys", "ShareKeys", "MaskedInput", "Unmasking", "Done", "Failed"}

func (p Phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// MarshalText encodes the phase by name.
func (p Phase) MarshalText() ([]byte, error) {
	if p < 0 || int(p) >= len(phaseNames) {
		return nil, fmt.Errorf("secagg: unknown phase %d", int(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText decodes a phase name.
func (p *Phase) UnmarshalText(b []byte) error {
	for i, n := range phaseNames {
		if string(b) == n {
			*p = Phase(i)
			return nil
		}
	}
	return fmt.Errorf("%w: unknown phase %q", ErrMalformed, b)
}
