package aggregator

import (
	"encoding/binary"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// This file holds the inner loops of the streaming weighted sum, in Go;
// kernel_amd64.s has AVX2 versions of the four hot ones (foldTo, foldIn,
// finite32, and foldK for batches), used when the CPU has AVX2 unless the
// purego build tag is set. See "Streaming mean", "Batches" and
// "Throughput" in DESIGN.md for how they were chosen and measured.

// Tunables, variables so that tests can force every path on small inputs.
var (
	// pingPongMax is the largest model (in parameters) whose running sum
	// is double-buffered: an update is then validated and folded in one
	// pass, writing sum+w·Δ into the spare buffer, and the buffers swap
	// only when every value was finite. Above it the write to the spare
	// buffer (and the cache the second buffer takes) costs more than
	// reading the update twice, so an update is validated in one pass and
	// folded in place in a second. With the AVX2 kernels the validation
	// pass runs at memory speed, which moved the crossover down from 1M
	// parameters (Go loops): measured on the benchmark VM, ping-pong was
	// ~15% faster at 640K parameters and in place ~10% faster from 768K
	// (both buffers 12 MiB; the 32 MiB last-level cache is shared with
	// the neighbours).
	pingPongMax = 640 << 10
	// parallelChunk is the unit of work, in parameters, when an update is
	// split across cores (a multiple of 8, so that no two goroutines write
	// the same cache line of a float64 sum). An update is split from
	// parallelMin parameters and four chunks up, with at least two chunks
	// per goroutine. Small chunks let the goroutines even out a late
	// start: measured, 128K-parameter chunks were slower than 32K ones at
	// 512K parameters on two cores.
	parallelChunk = 32 << 10
	// parallelMin is the smallest update, in parameters, that is split
	// across cores. A helper goroutine costs a wake-up of its core (about
	// 100 µs on the benchmark VM, a few µs on bare metal); with the AVX2
	// kernels one core folds 256K parameters (1 MiB of update) in about
	// that time, and measured, splitting them was 10–20% slower than not,
	// while from 512K parameters up it is as fast or faster (up to twice
	// at 1M when the other core is idle). With the Go loops, three times
	// slower, the split paid from 128K (four chunks).
	parallelMin = 512 << 10
	// batchBlock is the block of the sum, in parameters, that a batch
	// folds all its updates into before it moves on (see addPackedBatch):
	// the Go loops fold one update at a time into the block of the spare
	// sum, which must stay in L1 meanwhile (16 KiB, plus 8 KiB of each
	// update). The assembly kernel keeps the block's sums in registers and
	// is indifferent to it: measured, 1K to 32K parameters were within
	// the noise of the benchmark VM.
	batchBlock = 2 << 10
	// ntMin is the smallest model, in parameters, whose batches write the
	// new sum with non-temporal stores (assembly kernel only), so that the
	// write costs no read for ownership. Only for sums that live in
	// memory anyway: measured, at 16M parameters (two 128 MB sums) they
	// made batches of 4 about 20% faster (7.2–7.7 against 5.2–6.5 GB/s of
	// update data), and at 1M (two 8 MB sums) they gained nothing.
	ntMin = 4 << 20
	// maxWorkers caps the goroutines one update is split across (at most
	// 16); a few cores already saturate the memory bus on common servers.
	maxWorkers = 8
	// gomaxprocs is runtime.GOMAXPROCS(0), replaceable by tests.
	gomaxprocs = func() int { return runtime.GOMAXPROCS(0) }
	// nativeLE reports whether packed little-endian float32 can be read in
	// place as []float32 (false forces the portable decoding path).
	nativeLE = binary.NativeEndian.Uint16([]byte{1, 0}) == 1
	// useAsm selects the assembly kernels (AVX2 on amd64) for foldTo,
	// foldIn and finite32; false forces the Go loops. It starts as
	// haveAsm, and tests may set it only where haveAsm is true.
	useAsm = haveAsm
)

// The assembly kernels process whole blocks of this many values; the Go
// loops do the rest.
const (
	foldBlock   = 4 // foldTo, foldIn: one vector of four float64
	finiteBlock = 8 // finite32: one vector of eight float32
)

// workers is the number of goroutines an n-parameter update is split
// across.
func workers(n int) int { return batchWorkers(n, 1) }

// batchWorkers is the number of goroutines a batch of k updates of n
// parameters each is split across: as many as k·n parameters of one update
// would be, but never fewer than two chunks each.
func batchWorkers(n, k int) int {
	if n*k < parallelMin || n < 4*parallelChunk {
		return 1 // without asking the scheduler, which takes a lock
	}
	return max(1, min(gomaxprocs(), maxWorkers, n/(2*parallelChunk)))
}

// parallel runs f over [0, n) split into w contiguous ranges of whole
// chunks (parallelChunk parameters), one per goroutine: the caller's and
// w-1 helpers. Each goroutine claims the chunks of its own range in order,
// so that across updates every core keeps working on the same part of the
// sum (still in its cache), and then claims what is left of the others': a
// helper that starts late, because its core is busy elsewhere, leaves its
// share to the others rather than holding them up, as a fixed split would.
// It reports whether every call returned true; after a false the remaining
// chunks are skipped.
func parallel(n, w int, f func(lo, hi int) bool) bool {
	chunks := (n + parallelChunk - 1) / parallelChunk
	var next, end [16]atomic.Int64 // next chunk and end of each range
	w = min(w, chunks, len(next))
	for r := range w {
		next[r].Store(int64(r * chunks / w))
		end[r].Store(int64((r + 1) * chunks / w))
	}
	var bad atomic.Bool
	work := func(home int) {
		for k := range w {
			r := (home + k) % w
			for !bad.Load() {
				c := next[r].Add(1) - 1
				if c >= end[r].Load() {
					break
				}
				lo := int(c) * parallelChunk
				if !f(lo, min(lo+parallelChunk, n)) {
					bad.Store(true)
				}
			}
		}
	}
	var wg sync.WaitGroup
	for r := 1; r < w; r++ {
		wg.Go(func() { work(r) })
	}
	work(0)
	wg.Wait()
	return !bad.Load()
}

// f32view returns the packed little-endian float32s in b as a []float32
// aliasing b, when the host is little-endian and b is 4-byte aligned
// (network and file buffers are); otherwise ok is false and the caller
// decodes.
func f32view(b []byte) (v []float32, ok bool) {
	if !nativeLE || len(b) < 4 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 { // #nosec G103 -- reads a []byte as []float32 only when the host is little-endian and the data 4-byte aligned (checked here); see f32view's comment
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4), true // #nosec G103 -- length len(b)/4 within b's bounds; alignment and byte order checked above
}

// foldTo sets dst = src + w·x and reports whether every x was finite (when
// it is not, dst holds garbage and the caller discards it). The three
// slices have the same length; w is positive and finite. The assembly
// kernel, when there is one, gives the same bits and the same answer as
// foldToGo, and so do foldIn and finite32 (TestKernelAsmMatchesGo).
func foldTo(dst, src []float64, x []float32, w float64) bool {
	if !useAsm {
		return foldToGo(dst, src, x, w)
	}
	n := len(dst)
	m := n &^ (foldBlock - 1)
	ok := foldToAVX2(dst[:m], src[:m], x[:m], w)
	return foldToGo(dst[m:], src[m:n], x[m:n], w) && ok
}

// foldIn adds w·x to sum in place; x must already be known finite.
func foldIn(sum []float64, x []float32, w float64) {
	if !useAsm {
		foldInGo(sum, x, w)
		return
	}
	n := len(sum)
	m := n &^ (foldBlock - 1)
	foldInAVX2(sum[:m], x[:m], w)
	foldInGo(sum[m:], x[m:n], w)
}

// finite32 reports whether every value in x is finite.
func finite32(x []float32) bool {
	if !useAsm {
		return finite32Go(x)
	}
	m := len(x) &^ (finiteBlock - 1)
	return finite32AVX2(x[:m]) && finite32Go(x[m:])
}

// foldToGo is foldTo in Go.
//
// Here and wherever a product is added, the explicit float64 conversion
// rounds the product and so forbids fusing it into a multiply-add (which
// Go does by default on arm64 and with GOAMD64=v3): results are the same
// bits on every architecture and build.
//
// The finiteness check rides on the float multiplier: c starts at 0 and
// c·o stays ±0 for a finite new sum o, but becomes NaN (and stays NaN) once
// o is infinite or NaN, which happens exactly when w·x is (src is finite,
// and |o| <= count·2^64·2^128 stays far below the float64 range). That
// keeps the check off the adder, which the float32 to float64 conversions
// already load (see DESIGN.md).
func foldToGo(dst, src []float64, x []float32, w float64) bool {
	n := len(dst)
	src = src[:n]
	x = x[:n]
	var c0, c1, c2, c3 float64
	i := 0
	for ; i <= n-8; i += 8 {
		d := dst[i : i+8 : i+8]
		s := src[i : i+8 : i+8]
		p := x[i : i+8 : i+8]
		// Each product has one use, its add, so the add can read s
		// straight from memory; the check multiplies the sums, which are
		// finite exactly when the products are (|sum| stays far below
		// the float64 range).
		o0 := float64(w*float64(p[0])) + s[0]
		o1 := float64(w*float64(p[1])) + s[1]
		o2 := float64(w*float64(p[2])) + s[2]
		o3 := float64(w*float64(p[3])) + s[3]
		o4 := float64(w*float64(p[4])) + s[4]
		o5 := float64(w*float64(p[5])) + s[5]
		o6 := float64(w*float64(p[6])) + s[6]
		o7 := float64(w*float64(p[7])) + s[7]
		d[0], d[1], d[2], d[3] = o0, o1, o2, o3
		d[4], d[5], d[6], d[7] = o4, o5, o6, o7
		c0 = c0 * o0 * o4
		c1 = c1 * o1 * o5
		c2 = c2 * o2 * o6
		c3 = c3 * o3 * o7
	}
	for ; i < n; i++ {
		o := float64(w*float64(x[i])) + src[i]
		dst[i] = o
		c0 *= o
	}
	return (c0*c1)*(c2*c3) == 0
}

// foldInGo is foldIn in Go.
func foldInGo(sum []float64, x []float32, w float64) {
	n := len(sum)
	x = x[:n]
	i := 0
	for ; i <= n-8; i += 8 {
		d := sum[i : i+8 : i+8]
		p := x[i : i+8 : i+8]
		d[0] += float64(w * float64(p[0]))
		d[1] += float64(w * float64(p[1]))
		d[2] += float64(w * float64(p[2]))
		d[3] += float64(w * float64(p[3]))
		d[4] += float64(w * float64(p[4]))
		d[5] += float64(w * float64(p[5]))
		d[6] += float64(w * float64(p[6]))
		d[7] += float64(w * float64(p[7]))
	}
	for ; i < n; i++ {
		sum[i] += float64(w * float64(x[i]))
	}
}

// finite32Go is finite32 in Go, with the same multiplier trick as foldToGo
// (0·x is ±0 for finite x, NaN otherwise).
func finite32Go(x []float32) bool {
	var c0, c1, c2, c3 float32
	i := 0
	for ; i <= len(x)-8; i += 8 {
		p := x[i : i+8 : i+8]
		c0 = c0 * p[0] * p[4]
		c1 = c1 * p[1] * p[5]
		c2 = c2 * p[2] * p[6]
		c3 = c3 * p[3] * p[7]
	}
	for ; i < len(x); i++ {
		c0 *= x[i]
	}
	return (c0*c1)*(c2*c3) == 0
}

// decodeChunk is the number of float32s the portable path decodes at a
// time into a stack buffer.
const decodeChunk = 512

// foldToPacked is foldTo reading x as packed little-endian bytes
// (len(b) == 4·len(dst)), for big-endian hosts and unaligned buffers.
func foldToPacked(dst, src []float64, b []byte, w float64) bool {
	var buf [decodeChunk]float32
	ok := true
	for lo := 0; lo < len(dst); lo += decodeChunk {
		hi := min(lo+decodeChunk, len(dst))
		x := decodeF32(buf[:hi-lo], b[4*lo:4*hi])
		ok = foldTo(dst[lo:hi], src[lo:hi], x, w) && ok
	}
	return ok
}

// foldInPacked is foldIn reading x as packed little-endian bytes.
func foldInPacked(sum []float64, b []byte, w float64) {
	var buf [decodeChunk]float32
	for lo := 0; lo < len(sum); lo += decodeChunk {
		hi := min(lo+decodeChunk, len(sum))
		foldIn(sum[lo:hi], decodeF32(buf[:hi-lo], b[4*lo:4*hi]), w)
	}
}

// decodeF32 decodes len(dst) little-endian float32s from b into dst and
// returns dst.
func decodeF32(dst []float32, b []byte) []float32 {
	b = b[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return dst
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
// length is a multiple of 4) is finite. It reads b as bytes, so it works on
// any host and alignment.
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

// meanAcc is the running sample-weighted sum Σ nᵢ·Δᵢ of a round, shared by
// every rule that aggregates the weighted mean delta (FedAvg, FedProx,
// FedAvgM, FedAdam, FedYogi, FedAdagrad). It is not safe for concurrent
// use; its owner serializes calls.
type meanAcc struct {
	sum []float64 // Σ nᵢ·Δᵢ
	// spare is the double buffer: allocated up front when single adds are
	// double-buffered (pingPong), by the first batch otherwise.
	spare    []float64
	pingPong bool    // single adds fold into spare and swap (up to pingPongMax)
	batch    batch   // addPackedBatch's scratch, kept to spare allocations
	total    float64 // Σ nᵢ
	count    int
}

func newMeanAcc(dim int) meanAcc {
	a := meanAcc{sum: make([]float64, dim), pingPong: dim <= pingPongMax}
	if a.pingPong {
		a.spare = make([]float64, dim)
	}
	return a
}

// add folds w·x into the sum (len(x) == len(sum)) and reports whether it
// did; when x holds a NaN or infinity it returns false and the sum is
// bit-for-bit unchanged.
func (a *meanAcc) add(x []float32, w float64) bool {
	n := len(a.sum)
	var ok bool
	switch nw := workers(n); {
	case a.pingPong && nw == 1:
		ok = foldTo(a.spare, a.sum, x, w)
	case a.pingPong:
		dst, src := a.spare, a.sum
		ok = parallel(n, nw, func(lo, hi int) bool { return foldTo(dst[lo:hi], src[lo:hi], x[lo:hi], w) })
	case nw == 1:
		if ok = finite32(x); ok {
			foldIn(a.sum, x, w)
		}
	default:
		sum := a.sum
		if ok = parallel(n, nw, func(lo, hi int) bool { return finite32(x[lo:hi]) }); ok {
			parallel(n, nw, func(lo, hi int) bool { foldIn(sum[lo:hi], x[lo:hi], w); return true })
		}
	}
	if !ok {
		return false
	}
	if a.pingPong {
		a.sum, a.spare = a.spare, a.sum
	}
	a.total += w
	a.count++
	return true
}

// addPacked is add for packed little-endian float32 (len(b) == 4·len(sum)).
func (a *meanAcc) addPacked(b []byte, w float64) bool {
	if x, ok := f32view(b); ok {
		return a.add(x, w)
	}
	n := len(a.sum)
	var ok bool
	switch nw := workers(n); {
	case a.pingPong && nw == 1:
		ok = foldToPacked(a.spare, a.sum, b, w)
	case a.pingPong:
		dst, src := a.spare, a.sum
		ok = parallel(n, nw, func(lo, hi int) bool { return foldToPacked(dst[lo:hi], src[lo:hi], b[4*lo:4*hi], w) })
	case nw == 1:
		if ok = packedFinite(b); ok {
			foldInPacked(a.sum, b, w)
		}
	default:
		sum := a.sum
		if ok = parallel(n, nw, func(lo, hi int) bool { return packedFinite(b[4*lo : 4*hi]) }); ok {
			parallel(n, nw, func(lo, hi int) bool { foldInPacked(sum[lo:hi], b[4*lo:4*hi], w); return true })
		}
	}
	if !ok {
		return false
	}
	if a.pingPong {
		a.sum, a.spare = a.spare, a.sum
	}
	a.total += w
	a.count++
	return true
}

// batch is the updates of one addPackedBatch call: bs[j] is update j's packed
// bytes and ws[j] its weight; xs[j] is its values read in place, when
// every update of the batch can be (xs is nil otherwise).
type batch struct {
	xs [][]float32
	bs [][]byte
	ws []float64
}

// fold sets dst[lo:hi] = src[lo:hi] + Σⱼ ws[j]·(update j)[lo:hi], added in
// order of j, and reports whether every value was finite.
func (b *batch) fold(dst, src []float64, lo, hi int, nt bool) bool {
	if b.xs != nil {
		return foldK(dst[lo:hi], src[lo:hi], b.xs, b.ws, lo, nt)
	}
	// foldTo reads each value of src before it writes that value of dst,
	// so dst may be src (TestFoldToAliased).
	ok := foldToPacked(dst[lo:hi], src[lo:hi], b.bs[0][4*lo:4*hi], b.ws[0])
	for j := 1; ok && j < len(b.bs); j++ {
		ok = foldToPacked(dst[lo:hi], dst[lo:hi], b.bs[j][4*lo:4*hi], b.ws[j])
	}
	return ok
}

// foldK sets dst = src + ws[0]·xs[0][off:] + ws[1]·xs[1][off:] + ... (the
// len(dst) values from off of each, added in order of j; len(xs) >= 1 and
// len(ws) >= len(xs)) and reports whether every x was finite (when not,
// dst holds garbage). The result is
// the bits of foldTo(dst, src, xs[0][off:], ws[0]) followed by
// foldTo(dst, dst, xs[j][off:], ws[j]) for every other j, which is what
// the Go loops do; the assembly kernel keeps the sums in registers until
// the last update is added and writes dst once, with non-temporal stores
// when nt is set.
func foldK(dst, src []float64, xs [][]float32, ws []float64, off int, nt bool) bool {
	n := len(dst)
	src = src[:n]
	if !useAsm {
		return foldKGo(dst, src, xs, ws, off)
	}
	for _, x := range xs {
		_ = x[off : off+n] // the kernel reads this much of each
	}
	_ = ws[len(xs)-1]
	p := 0 // values before the first 32-byte aligned one of dst
	if nt {
		p = min(n, int(-uintptr(unsafe.Pointer(unsafe.SliceData(dst)))%32/8)) // #nosec G103 -- the address is only read to count values up to 32-byte alignment; no pointer is made from it
	}
	m := p + (n-p)&^(foldBlock-1)
	ok := foldKAVX2(dst[p:m], src[p:m], xs, ws, off+p, nt)
	if p > 0 {
		ok = foldKGo(dst[:p], src[:p], xs, ws, off) && ok
	}
	if m < n {
		ok = foldKGo(dst[m:], src[m:], xs, ws, off+m) && ok
	}
	return ok
}

// foldKGo is foldK with the Go loops: one foldToGo per update, into dst
// from the second on.
func foldKGo(dst, src []float64, xs [][]float32, ws []float64, off int) bool {
	n := len(dst)
	ok := foldToGo(dst, src, xs[0][off:off+n], ws[0])
	for j := 1; j < len(xs); j++ {
		ok = foldToGo(dst, dst, xs[j][off:off+n], ws[j]) && ok
	}
	return ok
}

// addPackedBatch folds packed little-endian float32 deltas
// (len(deltas[j]) == 4·len(sum)), weighted by their sample counts, into the
// sum in order, and reports whether it did; when any delta holds a NaN or
// infinity it returns false and the sum is bit-for-bit unchanged. The
// result is the same bits as adding the deltas one after another: each
// coordinate sees the same additions in the same order.
//
// It is one pass over the sum, double-buffered: block by block (batchBlock
// parameters), spare = sum + Σⱼ wⱼ·Δⱼ, adding the updates in order; the
// buffers swap only when every value was finite. So the sum is read and
// written once per batch instead of once per update. With the assembly
// kernel (foldK) the block's new sums stay in registers until the last
// update is added; with the Go loops, the block of spare stays in cache
// while each update is folded into it in turn. A batch of one is a single
// add, which needs no spare buffer above pingPongMax.
func (a *meanAcc) addPackedBatch(deltas [][]byte, samples []uint64) bool {
	if len(deltas) == 1 {
		return a.addPacked(deltas[0], float64(samples[0]))
	}
	b := &a.batch
	b.bs, b.ws = deltas, b.ws[:0]
	for _, s := range samples {
		b.ws = append(b.ws, float64(s))
	}
	b.xs = b.xs[:0]
	for _, d := range deltas {
		x, ok := f32view(d)
		if !ok {
			b.xs = nil
			break
		}
		b.xs = append(b.xs, x)
	}
	defer func() {
		// Hold no reference to the caller's deltas.
		clear(b.xs)
		b.xs, b.bs = b.xs[:0], nil
	}()

	n := len(a.sum)
	if a.spare == nil {
		a.spare = make([]float64, n)
	}
	dst, src, nt := a.spare, a.sum, n >= ntMin
	fold := func(lo, hi int) bool {
		for blo := lo; blo < hi; blo += batchBlock {
			if !b.fold(dst, src, blo, min(blo+batchBlock, hi), nt) {
				return false
			}
		}
		return true
	}
	var ok bool
	if nw := batchWorkers(n, len(deltas)); nw == 1 {
		ok = fold(0, n)
	} else {
		ok = parallel(n, nw, fold)
	}
	if !ok {
		return false
	}
	a.sum, a.spare = a.spare, a.sum
	for _, w := range b.ws {
		a.total += w
	}
	a.count += len(deltas)
	return true
}
