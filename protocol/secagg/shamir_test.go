package secagg

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

func randomSecret(r *rand.Rand) []byte {
	s := make([]byte, SecretSize)
	for i := range s {
		s[i] = byte(r.Uint32())
	}
	return s
}

func TestShamirRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct{ t, n int }{{1, 1}, {2, 2}, {2, 3}, {3, 5}, {5, 5}, {6, 10}, {51, 100}}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d-of-%d", tc.t, tc.n), func(t *testing.T) {
			secrets := [][]byte{randomSecret(r), bytes.Repeat([]byte{0xff}, SecretSize), make([]byte, SecretSize)}
			for _, secret := range secrets {
				holders := r.Perm(MaxClients)[:tc.n]
				for i := range holders {
					holders[i]++
				}
				shares, err := Split(secret, tc.t, holders, rand.NewChaCha8([32]byte{1}))
				if err != nil {
					t.Fatal(err)
				}
				for i, s := range shares {
					if int(s.X) != holders[i] {
						t.Fatalf("share %d has index %d, holder %d", i, s.X, holders[i])
					}
				}
				// Any t shares, in any order, reconstruct; so do all n.
				for range 5 {
					sub := slices.Clone(shares)
					r.Shuffle(len(sub), func(i, j int) { sub[i], sub[j] = sub[j], sub[i] })
					for _, k := range []int{tc.t, tc.n} {
						got, err := Combine(sub[:k], tc.t)
						if err != nil || !bytes.Equal(got, secret) {
							t.Fatalf("Combine(%d shares) = %x, %v; want %x", k, got, err, secret)
						}
					}
				}
			}
		})
	}
}

func TestShamirFewerThanThresholdShares(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ t, n int }{{2, 3}, {3, 5}, {6, 10}, {51, 100}} {
		t.Run(fmt.Sprintf("%d-of-%d", tc.t, tc.n), func(t *testing.T) {
			secret := randomSecret(r)
			holders := make([]int, tc.n)
			for i := range holders {
				holders[i] = i + 1
			}
			shares, err := Split(secret, tc.t, holders, rand.NewChaCha8([32]byte{2}))
			if err != nil {
				t.Fatal(err)
			}
			few := shares[:tc.t-1]
			if _, err := Combine(few, tc.t); !errors.Is(err, ErrTooFewShares) {
				t.Fatalf("Combine with t−1 shares: %v, want ErrTooFewShares", err)
			}
			// Duplicates do not count twice.
			if _, err := Combine(append(slices.Clone(few), few[0]), tc.t); !errors.Is(err, ErrTooFewShares) {
				t.Fatalf("Combine with a repeated share: %v", err)
			}
			// Interpolating t−1 shares as if they were enough does not
			// give the secret (and is almost always detected).
			if tc.t > 1 {
				got, err := Combine(few, tc.t-1)
				if err == nil && bytes.Equal(got, secret) {
					t.Fatal("t−1 shares reconstructed the secret")
				}
			}
		})
	}
}

// TestShamirPerfectSecrecy checks, exhaustively in a small field, that t−1
// shares are uniformly distributed whatever the secret: every tuple of t−1
// share values arises from exactly p coefficient choices for every
// secret, so the shares are independent of it (information-theoretic
// secrecy). It also checks that t shares determine the secret.
func TestShamirPerfectSecrecy(t *testing.T) {
	for _, tc := range []struct {
		p    uint64
		t    int
		xs   []uint64
		full []uint64
	}{
		{p: 31, t: 2, xs: []uint64{5}, full: []uint64{5, 9}},
		{p: 31, t: 3, xs: []uint64{1, 2}, full: []uint64{1, 2, 30}},
		{p: 17, t: 4, xs: []uint64{3, 7, 11}, full: []uint64{3, 7, 11, 16}},
	} {
		t.Run(fmt.Sprintf("p=%d/t=%d", tc.p, tc.t), func(t *testing.T) {
			f := field{p: tc.p}
			lam := f.lagrange(tc.full)
			var ref map[string]int
			for secret := range tc.p {
				counts := map[string]int{}
				coef := make([]uint64, tc.t)
				coef[0] = secret
				var enumerate func(i int)
				enumerate = func(i int) {
					if i == tc.t {
						var key []uint64
						for _, x := range tc.xs {
							key = append(key, f.eval(coef, x))
						}
						counts[fmt.Sprint(key)]++
						ys := make([]uint64, len(tc.full))
						for j, x := range tc.full {
							ys[j] = f.eval(coef, x)
						}
						if got := f.interpolate(lam, ys); got != secret {
							t.Fatalf("t shares interpolate to %d, secret %d", got, secret)
						}
						return
					}
					for c := range tc.p {
						coef[i] = c
						enumerate(i + 1)
					}
				}
				enumerate(1)
				// p^(t-1) polynomials over p^(t-1) share tuples.
				if want := pow(tc.p, tc.t-1); uint64(len(counts)) != want {
					t.Fatalf("secret %d: %d distinct share tuples, want all %d", secret, len(counts), want)
				}
				for k, c := range counts {
					if c != 1 {
						t.Fatalf("secret %d: tuple %s arises %d times", secret, k, c)
					}
				}
				if ref == nil {
					ref = counts
				} else if fmt.Sprint(ref) != fmt.Sprint(counts) {
					t.Fatalf("secret %d: share distribution differs from secret 0's", secret)
				}
			}
		})
	}
}

func pow(b uint64, e int) uint64 {
	r := uint64(1)
	for range e {
		r *= b
	}
	return r
}

func TestShamirInconsistentShares(t *testing.T) {
	holders := []int{1, 2, 3, 4}
	a, _ := Split(bytes.Repeat([]byte{1}, SecretSize), 3, holders, rand.NewChaCha8([32]byte{3}))
	b, _ := Split(bytes.Repeat([]byte{2}, SecretSize), 3, holders, rand.NewChaCha8([32]byte{4}))
	if _, err := Combine([]Share{a[0], a[1], b[2]}, 3); !errors.Is(err, ErrInconsistentShares) {
		t.Fatalf("mixed shares: %v", err)
	}
	if _, err := Combine([]Share{a[0], b[0], a[1], a[2]}, 3); !errors.Is(err, ErrInconsistentShares) {
		t.Fatalf("two values at one index: %v", err)
	}
	if _, err := Split(make([]byte, 31), 2, holders, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := Split(make([]byte, SecretSize), 2, []int{1, 1}, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("repeated holder: %v", err)
	}
	if _, err := Split(make([]byte, SecretSize), 3, []int{1, 2}, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("t > holders: %v", err)
	}
}

func TestShareEncoding(t *testing.T) {
	s, _ := Split(bytes.Repeat([]byte{9}, SecretSize), 2, []int{7, 300}, rand.NewChaCha8([32]byte{5}))
	for _, sh := range s {
		b, _ := sh.MarshalBinary()
		var got Share
		if err := got.UnmarshalBinary(b); err != nil || got != sh {
			t.Fatalf("round trip: %v, %v", got, err)
		}
	}
	bad := func(mod func([]byte) []byte) error {
		b, _ := s[0].MarshalBinary()
		var got Share
		return got.UnmarshalBinary(mod(b))
	}
	for name, mod := range map[string]func([]byte) []byte{
		"short":        func(b []byte) []byte { return b[:ShareSize-1] },
		"long":         func(b []byte) []byte { return append(b, 0) },
		"zero index":   func(b []byte) []byte { b[0], b[1], b[2], b[3] = 0, 0, 0, 0; return b },
		"out of field": func(b []byte) []byte { b[4+7] = 0xff; return b },
	} {
		if err := bad(mod); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestFieldArithmetic(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		a, b := r.Uint64N(p61), r.Uint64N(p61)
		// Compare the Mersenne fast path with generic reduction.
		hi, lo := mulFull(a, b)
		if got, want := f61.mul(a, b), remFull(hi, lo, p61); got != want {
			t.Fatalf("%d·%d = %d, want %d", a, b, got, want)
		}
		if a != 0 && f61.mul(a, f61.inv(a)) != 1 {
			t.Fatalf("inverse of %d", a)
		}
		if f61.add(f61.sub(a, b), b) != a {
			t.Fatalf("sub/add %d %d", a, b)
		}
	}
	for _, a := range []uint64{0, 1, p61 - 1} {
		for _, b := range []uint64{0, 1, p61 - 1} {
			hi, lo := mulFull(a, b)
			if got, want := f61.mul(a, b), remFull(hi, lo, p61); got != want {
				t.Fatalf("%d·%d = %d, want %d", a, b, got, want)
			}
		}
	}
}

func mulFull(a, b uint64) (uint64, uint64) { return bits.Mul64(a, b) }

func remFull(hi, lo, p uint64) uint64 { return bits.Rem64(hi, lo, p) }
