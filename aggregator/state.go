package aggregator

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Optimizer state encoding, version 1 (documented in DESIGN.md):
//
//	offset  size        field
//	0       4           magic "AGST"
//	4       1           format version, 1
//	5       1           bytes per element, 4 (IEEE 754 float32)
//	6       1           number of vectors k, 1..16
//	7       1           length L of the rule name, 1..32
//	8       8           dim, the model's length (uint64, little-endian)
//	16      L           rule name, [a-z0-9]
//	16+L    4·k·dim     the k vectors one after another, little-endian float32
//	end-4   4           CRC-32C (Castagnoli) of every byte before it, little-endian
const (
	stateMagic      = "AGST"
	stateVersion    = 1
	stateElemSize   = 4
	stateHeaderLen  = 16
	stateMaxVectors = 16
	stateMaxRuleLen = 32
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// State is the decoded optimizer state of a stateful rule: Result.State
// as a value. Rules that keep state encode it with Encode; Begin decodes and
// checks it. Callers only need State to inspect or debug stored state.
type State struct {
	// Rule is the name of the rule that wrote the state, such as "fedadam".
	Rule string
	// Vectors are the rule's per-parameter vectors, in the order the rule
	// documents (FedAdam: m, then v), each of the model's length.
	Vectors [][]float32
}

// Encode returns the version-1 encoding of s. Every vector must have the
// same non-zero length and finite values.
func (s State) Encode() ([]byte, error) {
	if len(s.Rule) == 0 || len(s.Rule) > stateMaxRuleLen || !validRuleName(s.Rule) {
		return nil, fmt.Errorf("encode state: %w: rule name %q", ErrState, s.Rule)
	}
	k := len(s.Vectors)
	if k == 0 || k > stateMaxVectors {
		return nil, fmt.Errorf("encode state: %w: %d vectors, want 1 to %d", ErrState, k, stateMaxVectors)
	}
	dim := len(s.Vectors[0])
	if dim == 0 {
		return nil, fmt.Errorf("encode state: %w: empty vectors", ErrState)
	}
	for j, v := range s.Vectors {
		if len(v) != dim {
			return nil, fmt.Errorf("encode state: %w: vector %d has %d values, vector 0 has %d", ErrState, j, len(v), dim)
		}
		if i := firstNonFinite(v); i >= 0 {
			return nil, fmt.Errorf("encode state: %w: vector %d value %d", ErrNotFinite, j, i)
		}
	}
	b := make([]byte, stateHeaderLen+len(s.Rule)+4*k*dim+4)
	copy(b, stateMagic)
	b[4] = stateVersion
	b[5] = stateElemSize
	b[6] = byte(k)
	b[7] = byte(len(s.Rule))
	binary.LittleEndian.PutUint64(b[8:], uint64(dim))
	p := stateHeaderLen + copy(b[stateHeaderLen:], s.Rule)
	for _, v := range s.Vectors {
		for _, x := range v {
			binary.LittleEndian.PutUint32(b[p:], math.Float32bits(x))
			p += 4
		}
	}
	binary.LittleEndian.PutUint32(b[p:], crc32.Checksum(b[:p], castagnoli))
	return b, nil
}

// DecodeState decodes optimizer state written by State.Encode. It checks
// the magic, version, element size, lengths and checksum, and that every
// value is finite; errors wrap ErrState. It never allocates more than the
// input's size implies.
func DecodeState(b []byte) (State, error) {
	if len(b) < stateHeaderLen+1+4 {
		return State{}, fmt.Errorf("decode state: %w: %d bytes is shorter than any state", ErrState, len(b))
	}
	if string(b[:4]) != stateMagic {
		return State{}, fmt.Errorf("decode state: %w: bad magic %q", ErrState, b[:4])
	}
	if b[4] != stateVersion {
		return State{}, fmt.Errorf("decode state: %w: encoding version %d, this build reads version %d", ErrState, b[4], stateVersion)
	}
	if b[5] != stateElemSize {
		return State{}, fmt.Errorf("decode state: %w: %d-byte elements, version %d has 4-byte float32", ErrState, b[5], stateVersion)
	}
	k, l := int(b[6]), int(b[7])
	if k == 0 || k > stateMaxVectors {
		return State{}, fmt.Errorf("decode state: %w: %d vectors, want 1 to %d", ErrState, k, stateMaxVectors)
	}
	if l == 0 || l > stateMaxRuleLen {
		return State{}, fmt.Errorf("decode state: %w: rule name of %d bytes", ErrState, l)
	}
	dim64 := binary.LittleEndian.Uint64(b[8:])
	// Compare against the bytes actually present before multiplying, so a
	// forged dim can neither overflow nor make us allocate.
	body := len(b) - stateHeaderLen - l - 4
	if dim64 == 0 || body < 0 || dim64 > uint64(body)/(4*uint64(k)) || 4*k*int(dim64) != body {
		return State{}, fmt.Errorf("decode state: %w: %d bytes do not hold %d vectors of %d float32", ErrState, len(b), k, dim64)
	}
	dim := int(dim64)
	end := len(b) - 4
	if got, want := crc32.Checksum(b[:end], castagnoli), binary.LittleEndian.Uint32(b[end:]); got != want {
		return State{}, fmt.Errorf("decode state: %w: checksum %08x, want %08x", ErrState, got, want)
	}
	rule := string(b[stateHeaderLen : stateHeaderLen+l])
	if !validRuleName(rule) {
		return State{}, fmt.Errorf("decode state: %w: rule name %q", ErrState, rule)
	}
	s := State{Rule: rule, Vectors: make([][]float32, k)}
	all := make([]float32, k*dim)
	decodeF32(all, b[stateHeaderLen+l:end])
	for j := range s.Vectors {
		s.Vectors[j] = all[j*dim : (j+1)*dim : (j+1)*dim]
		if i := firstNonFinite(s.Vectors[j]); i >= 0 {
			return State{}, fmt.Errorf("decode state: %w: vector %d value %d is not finite", ErrState, j, i)
		}
	}
	return s, nil
}

func validRuleName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// decodeStateFor decodes state for a rule that keeps k vectors of length
// dim. It returns nil vectors for empty state (the first round).
func decodeStateFor(rule string, state []byte, k, dim int) ([][]float32, error) {
	if len(state) == 0 {
		return nil, nil
	}
	s, err := DecodeState(state)
	if err != nil {
		return nil, fmt.Errorf("%s: begin: %w", rule, err)
	}
	if s.Rule != rule {
		return nil, fmt.Errorf("%s: begin: %w: the state was written by rule %q", rule, ErrState, s.Rule)
	}
	if len(s.Vectors) != k {
		return nil, fmt.Errorf("%s: begin: %w: %d state vectors, the rule keeps %d", rule, ErrState, len(s.Vectors), k)
	}
	if len(s.Vectors[0]) != dim {
		return nil, fmt.Errorf("%s: begin: %w: state for a model of %d parameters, the global model has %d", rule, ErrState, len(s.Vectors[0]), dim)
	}
	return s.Vectors, nil
}
