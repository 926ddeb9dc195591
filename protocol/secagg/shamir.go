package secagg

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"slices"
)

// Shamir secret sharing of 32-byte secrets over the prime field GF(p),
// p = 2^61 − 1 (a Mersenne prime, so reduction is two shifts and an add).
// A secret is cut into five chunks of at most 7 bytes (56 bits, below p),
// and each chunk is shared with its own random polynomial of degree t−1:
// t shares determine the chunk by Lagrange interpolation at 0, and any
// t−1 shares are uniformly distributed whatever the chunk, so they reveal
// nothing about it. Because chunks are under 2^56 (the last under 2^32),
// interpolating shares that do not belong together yields an out-of-range
// chunk with probability about 1 − 2^-49: Combine reports that as
// ErrInconsistentShares.

const (
	// SecretSize is the size of a shared secret (an X25519 private key or
	// a self-mask seed).
	SecretSize = 32
	// ShareSize is the encoded size of a Share.
	ShareSize = 4 + 8*shareChunks

	p61         = 1<<61 - 1
	chunkBytes  = 7
	shareChunks = (SecretSize + chunkBytes - 1) / chunkBytes // 5
)

// field is GF(p) for a prime p < 2^63. The production field is f61; tests
// also use small primes to check the sharing exhaustively.
type field struct{ p uint64 }

var f61 = field{p: p61}

func (f field) add(a, b uint64) uint64 {
	s := a + b
	if s >= f.p {
		s -= f.p
	}
	return s
}

func (f field) sub(a, b uint64) uint64 {
	if a >= b {
		return a - b
	}
	return a + f.p - b
}

func (f field) mul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if f.p == p61 {
		// a·b < 2^122 = hi·2^64 + lo; x mod (2^61−1) = (x mod 2^61) + (x >> 61).
		s := (lo & p61) + (lo>>61 | hi<<3)
		if s >= p61 {
			s -= p61
		}
		if s >= p61 {
			s -= p61
		}
		return s
	}
	return bits.Rem64(hi, lo, f.p)
}

func (f field) pow(a, e uint64) uint64 {
	r := uint64(1)
	for ; e > 0; e >>= 1 {
		if e&1 == 1 {
			r = f.mul(r, a)
		}
		a = f.mul(a, a)
	}
	return r
}

// inv returns a^-1 for a ≠ 0 (Fermat).
func (f field) inv(a uint64) uint64 { return f.pow(a, f.p-2) }

// random returns a uniform element, by rejection.
func (f field) random(rnd io.Reader) (uint64, error) {
	mask := uint64(1)<<bits.Len64(f.p) - 1
	var b [8]byte
	for {
		if _, err := io.ReadFull(rnd, b[:]); err != nil {
			return 0, fmt.Errorf("secagg: randomness: %w", err)
		}
		if v := binary.LittleEndian.Uint64(b[:]) & mask; v < f.p {
			return v, nil
		}
	}
}

// shareElement shares secret (< p) t-of-len(xs): it draws a random
// polynomial f of degree t−1 with f(0) = secret and returns f(x) for each x
// (non-zero, distinct, < p).
func (f field) shareElement(secret uint64, t int, xs []uint64, rnd io.Reader) ([]uint64, error) {
	coef := make([]uint64, t)
	coef[0] = secret
	for i := 1; i < t; i++ {
		c, err := f.random(rnd)
		if err != nil {
			return nil, err
		}
		coef[i] = c
	}
	ys := make([]uint64, len(xs))
	for j, x := range xs {
		ys[j] = f.eval(coef, x)
	}
	clear(coef)
	return ys, nil
}

// eval evaluates a polynomial (lowest coefficient first) by Horner's rule.
func (f field) eval(coef []uint64, x uint64) uint64 {
	var y uint64
	for i := len(coef) - 1; i >= 0; i-- {
		y = f.add(f.mul(y, x), coef[i])
	}
	return y
}

// lagrange returns the coefficients λ_i with f(0) = Σ λ_i·f(x_i) for any
// polynomial of degree < len(xs); the xs must be distinct and non-zero.
func (f field) lagrange(xs []uint64) []uint64 {
	lam := make([]uint64, len(xs))
	for i, xi := range xs {
		num, den := uint64(1), uint64(1)
		for j, xj := range xs {
			if j == i {
				continue
			}
			num = f.mul(num, xj)
			den = f.mul(den, f.sub(xj, xi))
		}
		lam[i] = f.mul(num, f.inv(den))
	}
	return lam
}

// interpolate returns f(0) from points (xs[i], ys[i]) given lagrange(xs).
func (f field) interpolate(lam, ys []uint64) uint64 {
	var s uint64
	for i, l := range lam {
		s = f.add(s, f.mul(l, ys[i]))
	}
	return s
}

// Share is one holder's share of a 32-byte secret: the holder's index X
// (1-based, its position in the Session) and the five chunk polynomials
// evaluated at X.
type Share struct {
	X uint32
	Y [shareChunks]uint64
}

// MarshalBinary encodes the share as X (4 bytes) and the five field
// elements (8 bytes each), little-endian: ShareSize bytes.
func (s Share) MarshalBinary() ([]byte, error) {
	return s.appendBinary(make([]byte, 0, ShareSize)), nil
}

func (s Share) appendBinary(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, s.X)
	for _, y := range s.Y {
		b = binary.LittleEndian.AppendUint64(b, y)
	}
	return b
}

// MarshalText encodes the share as base64 of MarshalBinary, so that JSON
// carries no integers beyond 2^53.
func (s Share) MarshalText() ([]byte, error) {
	b, _ := s.MarshalBinary()
	return base64.StdEncoding.AppendEncode(nil, b), nil
}

// UnmarshalText decodes MarshalText's output.
func (s *Share) UnmarshalText(text []byte) error {
	b, err := base64.StdEncoding.AppendDecode(nil, text)
	if err != nil {
		return fmt.Errorf("%w: share: %v", ErrMalformed, err)
	}
	return s.UnmarshalBinary(b)
}

// UnmarshalBinary decodes ShareSize bytes, refusing X = 0, X > MaxClients
// and elements outside the field.
func (s *Share) UnmarshalBinary(b []byte) error {
	if len(b) != ShareSize {
		return fmt.Errorf("%w: share of %d bytes, want %d", ErrMalformed, len(b), ShareSize)
	}
	var v Share
	v.X = binary.LittleEndian.Uint32(b)
	if v.X == 0 || v.X > MaxClients {
		return fmt.Errorf("%w: share index %d out of range", ErrMalformed, v.X)
	}
	for i := range v.Y {
		v.Y[i] = binary.LittleEndian.Uint64(b[4+8*i:])
		if v.Y[i] >= p61 {
			return fmt.Errorf("%w: share element out of the field", ErrMalformed)
		}
	}
	*s = v
	return nil
}

// chunk returns chunk i of a secret as a field element (little-endian).
func chunk(secret []byte, i int) uint64 {
	var b [8]byte
	copy(b[:], secret[i*chunkBytes:min(len(secret), (i+1)*chunkBytes)])
	return binary.LittleEndian.Uint64(b[:])
}

// Split shares a 32-byte secret t-of-len(holders): holders are the
// holders' distinct 1-based indices, and share i goes to holders[i].
// Randomness comes from rnd (nil means crypto/rand.Reader).
func Split(secret []byte, t int, holders []int, rnd io.Reader) ([]Share, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if len(secret) != SecretSize {
		return nil, fmt.Errorf("%w: secret of %d bytes, want %d", ErrConfig, len(secret), SecretSize)
	}
	if t < 1 || t > len(holders) {
		return nil, fmt.Errorf("%w: threshold %d with %d holders", ErrConfig, t, len(holders))
	}
	xs := make([]uint64, len(holders))
	for i, h := range holders {
		if h < 1 || h > MaxClients || slices.Contains(holders[:i], h) {
			return nil, fmt.Errorf("%w: holder index %d invalid or repeated", ErrConfig, h)
		}
		xs[i] = uint64(h)
	}
	shares := make([]Share, len(holders))
	for i := range shares {
		shares[i].X = uint32(holders[i])
	}
	for c := range shareChunks {
		ys, err := f61.shareElement(chunk(secret, c), t, xs, rnd)
		if err != nil {
			return nil, err
		}
		for i, y := range ys {
			shares[i].Y[c] = y
		}
	}
	return shares, nil
}

// Combine reconstructs a secret from at least t shares with distinct
// indices. It uses the t shares with the lowest indices; fewer than t
// distinct shares give ErrTooFewShares, shares that do not interpolate to
// a well-formed secret give ErrInconsistentShares.
func Combine(shares []Share, t int) ([]byte, error) {
	use, err := pickShares(shares, t)
	if err != nil {
		return nil, err
	}
	xs := make([]uint64, len(use))
	for i, s := range use {
		xs[i] = uint64(s.X)
	}
	return combineWith(use, f61.lagrange(xs))
}

// pickShares sorts and deduplicates shares and returns the first t. The
// same index with different values is ErrInconsistentShares.
func pickShares(shares []Share, t int) ([]Share, error) {
	if t < 1 {
		return nil, fmt.Errorf("%w: threshold %d", ErrConfig, t)
	}
	s := slices.Clone(shares)
	slices.SortFunc(s, func(a, b Share) int { return int(a.X) - int(b.X) })
	out := s[:0]
	for i, v := range s {
		if v.X == 0 || v.X > MaxClients {
			return nil, fmt.Errorf("%w: share index %d out of range", ErrMalformed, v.X)
		}
		if i > 0 && v.X == s[i-1].X {
			if v.Y != s[i-1].Y {
				return nil, fmt.Errorf("%w: two different shares at index %d", ErrInconsistentShares, v.X)
			}
			continue
		}
		out = append(out, v)
	}
	if len(out) < t {
		return nil, fmt.Errorf("%w: %d of %d", ErrTooFewShares, len(out), t)
	}
	return out[:t], nil
}

// combineWith interpolates the secret from shares whose indices gave lam.
func combineWith(shares []Share, lam []uint64) ([]byte, error) {
	secret := make([]byte, shareChunks*8)
	ys := make([]uint64, len(shares))
	for c := range shareChunks {
		for i, s := range shares {
			if s.Y[c] >= p61 {
				return nil, fmt.Errorf("%w: share element out of the field", ErrMalformed)
			}
			ys[i] = s.Y[c]
		}
		v := f61.interpolate(lam, ys)
		n := min(chunkBytes, SecretSize-c*chunkBytes)
		if v>>(8*n) != 0 {
			return nil, fmt.Errorf("%w: reconstructed value out of range", ErrInconsistentShares)
		}
		binary.LittleEndian.PutUint64(secret[c*chunkBytes:], v)
	}
	return secret[:SecretSize], nil
}
