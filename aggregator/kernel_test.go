package aggregator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// kernelOut is what the three kernels did to one input.
type kernelOut struct {
	to   []float64 // the dst buffer after foldTo on [lo, hi), canaries around
	toOK bool      // what foldTo returned
	in   []float64 // a copy of src after foldIn on [lo, hi)
	fin  bool      // what finite32 returned
}

// canary fills dst outside the range foldTo writes; a kernel that writes
// past its slice changes it.
var canary = math.Float64frombits(0x7ff4_dead_beef_cafe)

// runKernels runs foldTo, foldIn and finite32 on src[lo:hi] and x[lo:hi]
// with the assembly kernels (asm) or the Go loops.
func runKernels(asm bool, src []float64, x []float32, lo, hi int, w float64) kernelOut {
	saved := useAsm
	defer func() { useAsm = saved }()
	useAsm = asm
	o := kernelOut{to: make([]float64, len(src)), in: append([]float64(nil), src...)}
	for i := range o.to {
		o.to[i] = canary
	}
	o.toOK = foldTo(o.to[lo:hi], src[lo:hi], x[lo:hi], w)
	foldIn(o.in[lo:hi], x[lo:hi], w)
	o.fin = finite32(x[lo:hi])
	return o
}

// checkKernels fails t unless the assembly kernels give the Go loops'
// bits and answers on src[lo:hi], x[lo:hi] and w. Where w·x cannot
// overflow, both must also report exactly whether x is finite.
func checkKernels(t *testing.T, src []float64, x []float32, lo, hi int, w float64) {
	t.Helper()
	a := runKernels(true, src, x, lo, hi, w)
	g := runKernels(false, src, x, lo, hi, w)
	where := func() string {
		return fmt.Sprintf("len %d at offset %d, w %g", hi-lo, lo, w)
	}
	if a.toOK != g.toOK {
		t.Fatalf("%s: foldTo asm reports %v, Go %v", where(), a.toOK, g.toOK)
	}
	if a.fin != g.fin {
		t.Fatalf("%s: finite32 asm reports %v, Go %v", where(), a.fin, g.fin)
	}
	for i := range a.to {
		if math.Float64bits(a.to[i]) != math.Float64bits(g.to[i]) {
			t.Fatalf("%s: foldTo dst[%d] asm %v (%#x), Go %v (%#x)", where(), i, a.to[i], math.Float64bits(a.to[i]), g.to[i], math.Float64bits(g.to[i]))
		}
		if math.Float64bits(a.in[i]) != math.Float64bits(g.in[i]) {
			t.Fatalf("%s: foldIn sum[%d] asm %v (%#x), Go %v (%#x)", where(), i, a.in[i], math.Float64bits(a.in[i]), g.in[i], math.Float64bits(g.in[i]))
		}
	}
	finite := firstNonFinite(x[lo:hi]) < 0
	if a.fin != finite {
		t.Fatalf("%s: finite32 = %v, want %v", where(), a.fin, finite)
	}
	if w <= 0x1p64 && a.toOK != finite {
		t.Fatalf("%s: foldTo = %v, want %v", where(), a.toOK, finite)
	}
}

// Non-finite float32s, planted into otherwise finite inputs; the first
// three at every position of the short ones.
var nonFinite32 = []uint32{
	0x7fc00000, // quiet NaN
	0x7f800000, // +Inf
	0xff800000, // -Inf
	0x7f800001, // signalling NaN
	0xffc0beef, // negative NaN with a payload
}

// finite32Gen and float64Gen draw a value of one kind.
type (
	finite32Gen func(*rand.Rand) float32
	float64Gen  func(*rand.Rand) float64
)

// kernelInputs are the kinds of update values the kernels are checked on:
// ordinary ones, and edge cases of rounding and of the finiteness check.
var kernelInputs = []struct {
	name  string
	plant bool // plant non-finite values at every position of short inputs
	x     finite32Gen
	src   float64Gen
}{
	{"normal", true, func(r *rand.Rand) float32 { return float32(r.NormFloat64()) },
		func(r *rand.Rand) float64 { return 100 * r.NormFloat64() }},
	{"zeros", false, func(r *rand.Rand) float32 { return pick(r, float32(0), float32(math.Copysign(0, -1))) },
		func(r *rand.Rand) float64 { return pick(r, 0, math.Copysign(0, -1)) }},
	{"subnormal", false, func(r *rand.Rand) float32 { return math.Float32frombits(r.Uint32() & 0x807fffff) },
		func(r *rand.Rand) float64 { return math.Float64frombits(r.Uint64() & 0x800fffff_ffffffff) }},
	{"huge", false, func(r *rand.Rand) float32 {
		return pick(r, float32(math.MaxFloat32), -math.MaxFloat32, math.Float32frombits(0x7f000000|r.Uint32()&0x807fffff))
	}, func(r *rand.Rand) float64 {
		return pick(r, 1e300, -1e300, math.MaxFloat64/2, r.NormFloat64()*1e290)
	}},
	{"any finite", false, func(r *rand.Rand) float32 {
		for {
			if v := math.Float32frombits(r.Uint32()); !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) {
				return v
			}
		}
	}, func(r *rand.Rand) float64 {
		for {
			if v := math.Float64frombits(r.Uint64()); !math.IsNaN(v) && !math.IsInf(v, 0) {
				return v
			}
		}
	}},
	{"mixed", true, func(r *rand.Rand) float32 {
		return pick(r, float32(r.NormFloat64()), 0, float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32,
			-math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32, 1, -1)
	}, func(r *rand.Rand) float64 {
		return pick(r, r.NormFloat64(), 0, math.Copysign(0, -1), math.SmallestNonzeroFloat64, 1e300, -1e300)
	}},
}

func pick[T any](r *rand.Rand, vs ...T) T { return vs[r.IntN(len(vs))] }

// kernelWeights are the sample weights tried: ordinary counts (w·x is
// then exact, so a fused multiply-add would round the same), counts with
// more significant bits than a float32 leaves room for (w·x is rounded,
// and fusing would change the sum), the extremes of a uint64 count, and
// (outside what a round passes) weights that make w·x underflow or
// overflow.
var kernelWeights = []float64{1, 3, 100, 12345, 0x1p53 - 1, 1234567890123456789, math.Pi, 0x1p63, 0x1p64, 1e300, 5e-324}

// TestKernelAsmMatchesGo checks that the assembly kernels give the Go
// loops' results bit for bit on every length from 0 to 130 and some large
// ones, at every alignment, for ordinary and extreme values, and with a
// NaN or infinity planted at every position of the short inputs.
func TestKernelAsmMatchesGo(t *testing.T) {
	if !haveAsm {
		t.Skip("no assembly kernels in this build or on this CPU")
	}
	rng := rand.New(rand.NewPCG(11, 12))
	lengths := make([]int, 0, 140)
	for n := range 131 {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 255, 256, 257, 1000, 4099, 1<<16+5)
	const pad = 5 // values around the slice, checked for stray writes
	for _, in := range kernelInputs {
		t.Run(in.name, func(t *testing.T) {
			for _, n := range lengths {
				if n > 1<<12 && !in.plant {
					continue // the longest only for two kinds, to keep -race fast
				}
				for off := range 4 { // slices starting off values into the buffers: unaligned
					x := make([]float32, off+n+pad)
					src := make([]float64, off+n+pad)
					for i := range x {
						x[i], src[i] = in.x(rng), in.src(rng)
					}
					for _, w := range kernelWeights {
						checkKernels(t, src, x, off, off+n, w)
					}
					// Non-finite values at every position of the short
					// inputs (aligned and not), and at the ends, the middle
					// and where the Go tail starts.
					few := []int{0, n / 2, n - 1, n &^ (foldBlock - 1), n &^ (finiteBlock - 1)}
					var every []int
					if in.plant && n <= 130 && (off == 0 || off == 3) {
						every = make([]int, n)
						for p := range every {
							every[p] = p
						}
					}
					for k, bits := range nonFinite32 {
						positions := few
						if k < 3 && every != nil {
							positions = every
						}
						for _, p := range positions {
							if p < 0 || p >= n {
								continue
							}
							saved := x[off+p]
							x[off+p] = math.Float32frombits(bits)
							checkKernels(t, src, x, off, off+n, pick(rng, kernelWeights...))
							x[off+p] = saved
						}
					}
				}
			}
		})
	}
}
