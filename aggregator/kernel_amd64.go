//go:build !purego

package aggregator

import "golang.org/x/sys/cpu"

// haveAsm reports whether the AVX2 kernels below can run here (the
// purego build tag leaves them out).
var haveAsm = cpu.X86.HasAVX2

// The AVX2 kernels are in kernel_amd64.s. Each takes slices of equal
// length, processes the first whole blocks (foldBlock or finiteBlock
// values) and leaves the rest to the Go loop.

// foldToAVX2 is foldToGo on the first len(dst)&^(foldBlock-1) values.
//
//go:noescape
func foldToAVX2(dst, src []float64, x []float32, w float64) bool

// foldInAVX2 is foldInGo on the first len(sum)&^(foldBlock-1) values.
//
//go:noescape
func foldInAVX2(sum []float64, x []float32, w float64)

// finite32AVX2 is finite32Go on the first len(x)&^(finiteBlock-1) values.
//
//go:noescape
func finite32AVX2(x []float32) bool

// foldKAVX2 folds every xs[j][off:off+len(dst)&^(foldBlock-1)], weighted
// by ws[j] (len(ws) == len(xs) >= 1), into dst = src + Σ, in order of j; see
// foldK. With nt, dst must be 32-byte aligned.
//
//go:noescape
func foldKAVX2(dst, src []float64, xs [][]float32, ws []float64, off int, nt bool) bool
