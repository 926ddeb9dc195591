package aggregator

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
)

// FedAvg is federated averaging (McMahan et al., 2017): the new global model
// is global + Σ nᵢ·Δᵢ / Σ nᵢ, where Δᵢ is site i's weight delta and nᵢ its
// sample count.
//
// Its rounds stream: they keep one running float64 weighted sum of the
// model's length, so memory does not grow with the number of updates.
type FedAvg struct{}

var _ Strategy = FedAvg{}

// Name returns "fedavg".
func (FedAvg) Name() string { return "fedavg" }

// Begin starts a FedAvg round from global, which must be non-empty and
// finite.
func (FedAvg) Begin(global []float32) (Round, error) {
	if len(global) == 0 {
		return nil, fmt.Errorf("fedavg: begin: %w: empty global model", ErrShape)
	}
	if i := firstNonFinite(global); i >= 0 {
		return nil, fmt.Errorf("fedavg: begin: %w: global weight %d", ErrNotFinite, i)
	}
	g := make([]float32, len(global))
	copy(g, global)
	return &fedAvgRound{global: g, sum: make([]float64, len(global))}, nil
}

// fedAvgRound is the running state of one FedAvg round.
type fedAvgRound struct {
	global []float32 // immutable after Begin

	mu     sync.Mutex // guards the fields below
	sum    []float64  // Σ nᵢ·Δᵢ
	total  float64    // Σ nᵢ
	count  int
	result []float32 // set by a successful Finish
}

// AddPacked implements Round.
func (r *fedAvgRound) AddPacked(delta []byte, samples uint64) error {
	if len(delta) != 4*len(r.global) {
		return fmt.Errorf("fedavg: add: %w: got %d bytes, want %d (%d float32)", ErrShape, len(delta), 4*len(r.global), len(r.global))
	}
	if samples == 0 {
		return fmt.Errorf("fedavg: add: %w", ErrNoSamples)
	}
	// Validate the whole update before touching the sum, outside the lock
	// so concurrent submitters validate in parallel.
	if !packedFinite(delta) {
		return fmt.Errorf("fedavg: add: %w: delta element %d", ErrNotFinite, firstNonFinitePacked(delta))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.result != nil {
		return fmt.Errorf("fedavg: add: %w", ErrFinished)
	}
	foldPacked(r.sum, delta, float64(samples))
	r.total += float64(samples)
	r.count++
	return nil
}

// Add implements Round.
func (r *fedAvgRound) Add(delta []float32, samples uint64) error {
	if len(delta) != len(r.global) {
		return fmt.Errorf("fedavg: add: %w: got %d values, want %d", ErrShape, len(delta), len(r.global))
	}
	if samples == 0 {
		return fmt.Errorf("fedavg: add: %w", ErrNoSamples)
	}
	if i := firstNonFinite(delta); i >= 0 {
		return fmt.Errorf("fedavg: add: %w: delta element %d", ErrNotFinite, i)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.result != nil {
		return fmt.Errorf("fedavg: add: %w", ErrFinished)
	}
	fold(r.sum, delta, float64(samples))
	r.total += float64(samples)
	r.count++
	return nil
}

// Count implements Round.
func (r *fedAvgRound) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// Finish implements Round. It fails with ErrEmpty when no update was added
// and with ErrNotFinite when a new weight overflows float32; in both cases
// the round stays open.
func (r *fedAvgRound) Finish() ([]float32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.result == nil {
		if r.count == 0 {
			return nil, fmt.Errorf("fedavg: finish: %w", ErrEmpty)
		}
		out := make([]float32, len(r.global))
		for i, s := range r.sum {
			v := float32(float64(r.global[i]) + s/r.total)
			if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
				return nil, fmt.Errorf("fedavg: finish: %w: new weight %d overflows float32", ErrNotFinite, i)
			}
			out[i] = v
		}
		r.result = out
	}
	res := make([]float32, len(r.result))
	copy(res, r.result)
	return res, nil
}

// fold adds w·delta to sum; len(delta) == len(sum).
func fold(sum []float64, delta []float32, w float64) {
	delta = delta[:len(sum)]
	for i, x := range delta {
		sum[i] += w * float64(x)
	}
}

// foldPacked adds w·decode(b) to sum, decoding the little-endian float32s
// in place; len(b) == 4*len(sum).
func foldPacked(sum []float64, b []byte, w float64) {
	n := len(sum)
	b = b[:4*n]
	i := 0
	// Blocks of 4: the re-sliced windows have constant length, so the
	// constant indices below need no bounds checks.
	for ; i+4 <= n; i += 4 {
		s := sum[i : i+4 : i+4]
		p := b[4*i : 4*i+16 : 4*i+16]
		s[0] += w * float64(math.Float32frombits(binary.LittleEndian.Uint32(p[0:4])))
		s[1] += w * float64(math.Float32frombits(binary.LittleEndian.Uint32(p[4:8])))
		s[2] += w * float64(math.Float32frombits(binary.LittleEndian.Uint32(p[8:12])))
		s[3] += w * float64(math.Float32frombits(binary.LittleEndian.Uint32(p[12:16])))
	}
	for ; i < n; i++ {
		sum[i] += w * float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
}

// Finite check on raw bits: a float32 is NaN or infinite exactly when its
// eight exponent bits are all ones. Masking the exponent of each 32-bit lane
// and adding 1 to its lowest exponent bit carries into the lane's top bit
// only for an all-ones exponent, and never crosses into the next lane, so
// two float32s are checked per uint64 without branches.
const (
	expMask2 = 0x7f800000_7f800000
	expOne2  = 0x00800000_00800000
	topBits2 = 0x80000000_80000000
)

// packedFinite reports whether every little-endian float32 in b (whose
// length is a multiple of 4) is finite.
func packedFinite(b []byte) bool {
	var acc uint64
	for len(b) >= 32 {
		p := b[:32:32]
		u0 := binary.LittleEndian.Uint64(p[0:8])
		u1 := binary.LittleEndian.Uint64(p[8:16])
		u2 := binary.LittleEndian.Uint64(p[16:24])
		u3 := binary.LittleEndian.Uint64(p[24:32])
		acc |= (u0&expMask2 + expOne2) | (u1&expMask2 + expOne2) |
			(u2&expMask2 + expOne2) | (u3&expMask2 + expOne2)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc |= binary.LittleEndian.Uint64(b)&expMask2 + expOne2
		b = b[8:]
	}
	if len(b) >= 4 {
		acc |= uint64(binary.LittleEndian.Uint32(b))&expMask2 + expOne2
	}
	return acc&topBits2 == 0
}

// firstNonFinitePacked returns the index of the first NaN or infinite
// float32 in b, or -1.
func firstNonFinitePacked(b []byte) int {
	for i := 0; 4*i+4 <= len(b); i++ {
		if binary.LittleEndian.Uint32(b[4*i:])&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}

// firstNonFinite returns the index of the first NaN or infinite value in v,
// or -1.
func firstNonFinite(v []float32) int {
	for i, x := range v {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			return i
		}
	}
	return -1
}
