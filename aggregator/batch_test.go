package aggregator

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
)

// packBatch encodes the updates for AddPackedBatch. With unaligned set,
// every other delta starts one byte into its buffer, so that it takes the
// decoding path.
func packBatch(ups []update, unaligned bool) ([][]byte, []uint64) {
	deltas := make([][]byte, len(ups))
	samples := make([]uint64, len(ups))
	for i, u := range ups {
		deltas[i] = protocol.EncodeF32(u.delta)
		if unaligned && i%2 == 1 {
			deltas[i] = append(make([]byte, 1, len(deltas[i])+1), deltas[i]...)[1:]
		}
		samples[i] = u.samples
	}
	return deltas, samples
}

func addBatch(t *testing.T, r Round, ups []update, unaligned bool) {
	t.Helper()
	deltas, samples := packBatch(ups, unaligned)
	if err := r.(BatchAdder).AddPackedBatch(deltas, samples); err != nil {
		t.Fatalf("AddPackedBatch: %v", err)
	}
}

// sums returns a copy of a streaming round's running sum and total (one
// shard).
func sums(t *testing.T, r Round) ([]float64, float64) {
	t.Helper()
	mr := r.(*meanRound)
	if len(mr.shards) != 1 {
		t.Fatalf("%d shards, want 1", len(mr.shards))
	}
	return slices.Clone(mr.shards[0].sum), mr.shards[0].total
}

func sameBits64(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) })
}

// sameBitsOrNaN64 is sameBits64 but lets two NaNs differ in sign and
// payload: when both operands of an add are NaN, which one's payload comes
// out depends on the order the compiler put them in (it differs under
// -race), and sums of several updates meet that case.
func sameBitsOrNaN64(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool {
		return math.Float64bits(x) == math.Float64bits(y) || math.IsNaN(x) && math.IsNaN(y)
	})
}

func TestFedAvgBatchHandComputed(t *testing.T) {
	tests := []struct {
		name    string
		global  []float32
		batches [][]update
		want    []float32
	}{
		{
			name:    "one batch of one",
			global:  []float32{1, 2, 3},
			batches: [][]update{{{[]float32{0.5, -1, 0}, 7}}},
			want:    []float32{1.5, 1, 3},
		},
		{
			name:   "weighted by samples",
			global: []float32{1, 2},
			batches: [][]update{{
				{[]float32{1, 0}, 1},
				{[]float32{0, 2}, 3},
			}},
			// sum = [1, 6], total = 4 -> delta [0.25, 1.5]
			want: []float32{1.25, 3.5},
		},
		{
			name:   "opposite deltas cancel",
			global: []float32{-4, 0.25, 1, 1, 1, 1, 1, 1, 1},
			batches: [][]update{{
				{[]float32{2, -8, 1, 2, 3, 4, 5, 6, 7}, 10},
				{[]float32{-2, 8, -1, -2, -3, -4, -5, -6, -7}, 10},
			}},
			want: []float32{-4, 0.25, 1, 1, 1, 1, 1, 1, 1},
		},
		{
			name:   "two batches and an empty one",
			global: []float32{0, 0, 0, 0, 0},
			batches: [][]update{
				{
					{[]float32{1, 1, 1, 1, 1}, 2},
					{[]float32{4, 0, -1, 2, 0}, 1},
				},
				{},
				{{[]float32{-2, 3, 0, 0, 5}, 1}},
			},
			// (2*[1,1,1,1,1] + [4,0,-1,2,0] + [-2,3,0,0,5]) / 4
			want: []float32{1, 1.25, 0.25, 1, 1.75},
		},
		{
			name:   "forty parameters, four sites",
			global: make([]float32, 40),
			batches: [][]update{{
				{slices.Repeat([]float32{1}, 40), 1},
				{slices.Repeat([]float32{2}, 40), 1},
				{slices.Repeat([]float32{3}, 40), 1},
				{slices.Repeat([]float32{-2}, 40), 5},
			}},
			// (1 + 2 + 3 - 10) / 8
			want: slices.Repeat([]float32{-0.5}, 40),
		},
	}
	kernelPaths(t, func(t *testing.T) {
		for _, tt := range tests {
			for _, unaligned := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/unaligned=%v", tt.name, unaligned), func(t *testing.T) {
					r := begin(t, tt.global)
					n := 0
					for _, b := range tt.batches {
						addBatch(t, r, b, unaligned)
						n += len(b)
					}
					if got := r.Count(); got != n {
						t.Errorf("Count = %d, want %d", got, n)
					}
					if got := finish(t, r); !equalBits(got, tt.want) {
						t.Errorf("Finish = %v, want %v", got, tt.want)
					}
				})
			}
		}
	})
}

// TestBatchEqualsSequential adds random updates one at a time to one round
// and in random batches to another: the running sums, totals and results
// must be the same bits, on every kernel path, for sizes around the blocks,
// the parallel chunks and the vector widths.
func TestBatchEqualsSequential(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 72))
	kernelPaths(t, func(t *testing.T) {
		for _, dim := range []int{1, 3, 4, 5, 8, 9, 31, 33, 64, 97, 250, 1000, 4099} {
			for trial := range 3 {
				global := randVec(rng, dim)
				ups := randUpdates(rng, 1+rng.IntN(12), dim)
				if trial == 2 { // sample counts too large for w·x to be exact
					for i := range ups {
						ups[i].samples = 1<<40 + rng.Uint64N(1<<40)
					}
				}
				seq, bat := begin(t, global), begin(t, global)
				for _, u := range ups {
					if err := seq.AddPacked(protocol.EncodeF32(u.delta), u.samples); err != nil {
						t.Fatal(err)
					}
				}
				for rest := ups; len(rest) > 0; {
					k := 1 + rng.IntN(len(rest))
					addBatch(t, bat, rest[:k], rng.IntN(2) == 0)
					rest = rest[k:]
				}
				ss, st := sums(t, seq)
				bs, bt := sums(t, bat)
				if !sameBits64(ss, bs) || st != bt {
					t.Fatalf("dim %d, %d updates: batched sum differs from sequential", dim, len(ups))
				}
				if seq.Count() != bat.Count() {
					t.Fatalf("dim %d: counts %d and %d", dim, seq.Count(), bat.Count())
				}
				if a, b := finish(t, seq), finish(t, bat); !equalBits(a, b) {
					t.Fatalf("dim %d: batched result differs from sequential", dim)
				}
			}
		}
	})
}

// TestBatchAllStreamingRules checks that every streaming rule, stateful or
// not, takes batches with the result of sequential adds, over two rounds,
// and that the buffering rules do not offer batches.
func TestBatchAllStreamingRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(73, 74))
	const dim = 300
	global := randVec(rng, dim)
	first, second := randUpdates(rng, 5, dim), randUpdates(rng, 7, dim)
	for _, rc := range allRules() {
		t.Run(rc.s.Name(), func(t *testing.T) {
			r := beginWith(t, rc.s, global, nil)
			if _, ok := r.(BatchAdder); !ok {
				if _, streaming := r.(*meanRound); streaming {
					t.Fatal("streaming round does not implement BatchAdder")
				}
				return
			}
			run := func(batched bool) Result {
				r := beginWith(t, rc.s, global, nil)
				var res Result
				for k, ups := range [][]update{first, second} {
					if k == 1 {
						r = beginWith(t, rc.s, res.Weights, res.State)
					}
					if batched {
						addBatch(t, r, ups[:3], false)
						addBatch(t, r, ups[3:], true)
					} else {
						for _, u := range ups {
							if err := r.AddPacked(protocol.EncodeF32(u.delta), u.samples); err != nil {
								t.Fatal(err)
							}
						}
					}
					res = finishResult(t, r)
				}
				return res
			}
			if !sameResult(t, run(true), run(false), true) {
				t.Error("batched result differs from sequential")
			}
		})
	}
}

// TestBatchRejectsAllOrNothing plants bad updates at various positions of
// a batch, with the bad value in various blocks: the sum must stay
// bit-for-bit as it was, the error must name exactly the bad positions, and
// the batch without them must then go in as if they had never been there.
func TestBatchRejectsAllOrNothing(t *testing.T) {
	const dim = 103 // several blocks and parallel chunks on the forced paths
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	type plant struct {
		pos     int     // in the batch
		elem    int     // the bad value's index; -1 for none
		val     float32 // the bad value
		samples uint64  // 0 for ErrNoSamples
		short   bool    // one value short: ErrShape
		want    error
	}
	tests := []struct {
		name   string
		size   int
		plants []plant
	}{
		{"NaN in the first update's first value", 4, []plant{{0, 0, nan, 1, false, ErrNotFinite}}},
		{"NaN in the last update's last value", 4, []plant{{3, dim - 1, nan, 1, false, ErrNotFinite}}},
		{"+Inf in a middle update's last block", 5, []plant{{2, dim - 2, inf, 1, false, ErrNotFinite}}},
		{"-Inf in a middle block", 3, []plant{{1, 50, -inf, 1, false, ErrNotFinite}}},
		{"two bad updates", 6, []plant{{1, 70, nan, 1, false, ErrNotFinite}, {4, 3, -inf, 1, false, ErrNotFinite}}},
		{"Inf and -Inf that would cancel to NaN", 3, []plant{{0, 9, inf, 1, false, ErrNotFinite}, {2, 9, -inf, 1, false, ErrNotFinite}}},
		{"every update bad", 2, []plant{{0, 10, nan, 1, false, ErrNotFinite}, {1, 100, nan, 1, false, ErrNotFinite}}},
		{"zero samples", 3, []plant{{1, -1, 0, 0, false, ErrNoSamples}}},
		{"short delta", 3, []plant{{2, -1, 0, 1, true, ErrShape}}},
		{"a batch of one", 1, []plant{{0, 40, nan, 1, false, ErrNotFinite}}},
	}
	rng := rand.New(rand.NewPCG(75, 76))
	kernelPaths(t, func(t *testing.T) {
		for _, tt := range tests {
			for _, unaligned := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/unaligned=%v", tt.name, unaligned), func(t *testing.T) {
					global := randVec(rng, dim)
					before := randUpdates(rng, 2, dim)
					batch := randUpdates(rng, tt.size, dim)
					bad := make([]error, tt.size)
					for _, p := range tt.plants {
						u := &batch[p.pos]
						u.delta = slices.Clone(u.delta)
						if p.elem >= 0 {
							u.delta[p.elem] = p.val
						}
						u.samples = p.samples
						if p.short {
							u.delta = u.delta[:dim-1]
						}
						bad[p.pos] = p.want
					}
					r := begin(t, global)
					addBatch(t, r, before, unaligned)
					sum, total := sums(t, r)

					deltas, samples := packBatch(batch, unaligned)
					err := r.(BatchAdder).AddPackedBatch(deltas, samples)
					var be *BatchError
					if !errors.As(err, &be) {
						t.Fatalf("err = %v, want a *BatchError", err)
					}
					if len(be.Errs) != tt.size {
						t.Fatalf("BatchError has %d entries, want %d", len(be.Errs), tt.size)
					}
					var good []update
					for i, want := range bad {
						if want == nil {
							if be.Errs[i] != nil {
								t.Errorf("update %d rejected: %v", i, be.Errs[i])
							}
							good = append(good, batch[i])
							continue
						}
						if !errors.Is(be.Errs[i], want) {
							t.Errorf("update %d: err %v, want %v", i, be.Errs[i], want)
						}
						if !errors.Is(err, want) {
							t.Errorf("errors.Is(%v, %v) = false", err, want)
						}
					}
					if got, gotTotal := sums(t, r); !sameBits64(got, sum) || gotTotal != total {
						t.Fatal("a rejected batch changed the sum")
					}
					if r.Count() != len(before) {
						t.Fatalf("Count = %d, want %d", r.Count(), len(before))
					}

					// Retried without the bad updates, the batch gives what
					// the good updates alone give.
					if len(good) > 0 {
						addBatch(t, r, good, unaligned)
					}
					want := begin(t, global)
					for _, u := range append(before, good...) {
						if err := want.Add(u.delta, u.samples); err != nil {
							t.Fatal(err)
						}
					}
					if a, b := finish(t, r), finish(t, want); !equalBits(a, b) {
						t.Error("retried batch differs from the good updates added one by one")
					}
				})
			}
		}
	})
}

func TestBatchErrors(t *testing.T) {
	r := begin(t, []float32{1, 2, 3})
	ba := r.(BatchAdder)
	good := protocol.EncodeF32([]float32{1, 1, 1})
	if err := ba.AddPackedBatch([][]byte{good, good}, []uint64{1}); !errors.Is(err, ErrShape) {
		t.Errorf("mismatched lengths: err = %v, want ErrShape", err)
	} else if be := (*BatchError)(nil); errors.As(err, &be) {
		t.Errorf("mismatched lengths: got a BatchError %v", err)
	}
	if err := ba.AddPackedBatch(nil, nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	if r.Count() != 0 {
		t.Errorf("Count = %d after rejected and empty batches", r.Count())
	}
	bad := protocol.EncodeF32([]float32{1, float32(math.NaN()), 1})
	err := ba.AddPackedBatch([][]byte{good, bad, good[:8]}, []uint64{1, 2, 3})
	var be *BatchError
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want a *BatchError", err)
	}
	// A shape error refuses the batch before the fold, and the others are
	// still checked, so that every bad update is named.
	if be.Errs[0] != nil || !errors.Is(be.Errs[1], ErrNotFinite) || !errors.Is(be.Errs[2], ErrShape) {
		t.Errorf("Errs = %v, want updates 1 (ErrNotFinite) and 2 (ErrShape) rejected", be.Errs)
	}
	if want := "batch rejected: update 1: fedavg: add: value is not finite: delta element 1; " +
		"update 2: fedavg: add: shape mismatch: got 8 bytes, want 12 (3 float32)"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	err = ba.AddPackedBatch([][]byte{bad, good, bad}, []uint64{1, 2, 3})
	if !errors.As(err, &be) || be.Errs[0] == nil || be.Errs[1] != nil || be.Errs[2] == nil {
		t.Fatalf("err = %v, want updates 0 and 2 rejected", err)
	}
	if want := "batch rejected: update 0: fedavg: add: value is not finite: delta element 1; update 2: fedavg: add: value is not finite: delta element 1"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	if err := ba.AddPackedBatch([][]byte{good, good}, []uint64{1, 3}); err != nil {
		t.Fatal(err)
	}
	if got := finish(t, r); !equalBits(got, []float32{2, 3, 4}) {
		t.Errorf("Finish = %v, want [2 3 4]", got)
	}
	if err := ba.AddPackedBatch([][]byte{good, good}, []uint64{1, 3}); !errors.Is(err, ErrFinished) {
		t.Errorf("after Finish: err = %v, want ErrFinished", err)
	}
}

// TestBatchConcurrent adds batches and single updates from several
// goroutines at once (each folds into its own shard): every update counts
// once and the result matches sequential adds within float64 rounding.
func TestBatchConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(77, 78))
	kernelPaths(t, func(t *testing.T) {
		const dim = 257
		global := randVec(rng, dim)
		ups := randUpdates(rng, 24, dim)
		seq, r := begin(t, global), begin(t, global)
		for _, u := range ups {
			if err := seq.Add(u.delta, u.samples); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for g := range 6 {
			part := ups[4*g : 4*g+4]
			wg.Go(func() {
				if g%3 == 0 {
					for _, u := range part {
						if err := r.Add(u.delta, u.samples); err != nil {
							t.Error(err)
						}
					}
					return
				}
				deltas, samples := packBatch(part, g%2 == 0)
				if err := r.(BatchAdder).AddPackedBatch(deltas, samples); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if r.Count() != len(ups) {
			t.Fatalf("Count = %d, want %d", r.Count(), len(ups))
		}
		if a, b := finish(t, r), finish(t, seq); !closeRel(a, b, 1e-6) {
			t.Error("concurrent batches differ from sequential adds")
		}
	})
}

// TestFoldToAliased checks that foldTo may write the buffer it reads
// (dst == src), as batches do for every update after a block's first: the
// assembly kernel and the Go loop must give the bits and the answer they
// give with separate buffers, at every length up to 130 and some long
// ones, at four alignments, with non-finite values planted.
func TestFoldToAliased(t *testing.T) {
	rng := rand.New(rand.NewPCG(79, 80))
	lengths := make([]int, 0, 140)
	for n := range 131 {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 255, 256, 257, 1000, 4099)
	for _, asm := range kernelImpls() {
		t.Run(implName(asm), func(t *testing.T) {
			saved := useAsm
			t.Cleanup(func() { useAsm = saved })
			useAsm = asm
			for _, in := range kernelInputs {
				for _, n := range lengths {
					for off := range 4 {
						x := make([]float32, off+n)
						src := make([]float64, off+n)
						for i := range x {
							x[i], src[i] = in.x(rng), in.src(rng)
						}
						if in.plant && n > 0 && rng.IntN(3) == 0 {
							x[off+rng.IntN(n)] = math.Float32frombits(pick(rng, nonFinite32...))
						}
						w := pick(rng, kernelWeights...)
						want := make([]float64, len(src))
						wantOK := foldTo(want[off:], src[off:], x[off:], w)
						got := slices.Clone(src)
						gotOK := foldTo(got[off:], got[off:], x[off:], w)
						if gotOK != wantOK {
							t.Fatalf("%s len %d off %d: aliased foldTo reports %v, separate %v", in.name, n, off, gotOK, wantOK)
						}
						if !sameBits64(got[off:], want[off:]) || !sameBits64(got[:off], src[:off]) {
							t.Fatalf("%s len %d off %d w %g: aliased foldTo differs from separate buffers", in.name, n, off, w)
						}
					}
				}
			}
		})
	}
}

// TestFoldKAsmMatchesGo checks that the assembly K-way fold gives the Go
// loops' bits (any NaN for a NaN) and answer, and writes nothing outside
// dst, for 1 to 9
// updates, every length up to 70 and some long ones, dst at every 8-byte
// alignment (so that non-temporal stores start after a peeled prefix), the
// updates read from various offsets, with and without non-temporal stores,
// on ordinary and extreme values and with non-finite values planted.
func TestFoldKAsmMatchesGo(t *testing.T) {
	if !haveAsm {
		t.Skip("no assembly kernels in this build or on this CPU")
	}
	saved := useAsm
	t.Cleanup(func() { useAsm = saved })
	rng := rand.New(rand.NewPCG(81, 82))
	lengths := make([]int, 0, 80)
	for n := range 71 {
		lengths = append(lengths, n)
	}
	lengths = append(lengths, 127, 128, 129, 1000, 4099)
	const pad = 5
	for _, in := range kernelInputs {
		t.Run(in.name, func(t *testing.T) {
			for _, n := range lengths {
				for trial := range 4 {
					k := 1 + rng.IntN(9)
					dOff, xOff := rng.IntN(4), rng.IntN(4)
					nt := trial%2 == 1
					src := make([]float64, dOff+n+pad)
					for i := range src {
						src[i] = in.src(rng)
					}
					xs := make([][]float32, k)
					ws := make([]float64, k)
					finite := true
					for j := range xs {
						xs[j] = make([]float32, xOff+n+pad)
						for i := range xs[j] {
							xs[j][i] = in.x(rng)
						}
						ws[j] = pick(rng, kernelWeights...)
						if in.plant && n > 0 && rng.IntN(4) == 0 {
							xs[j][xOff+rng.IntN(n)] = math.Float32frombits(pick(rng, nonFinite32...))
							finite = false
						}
					}
					run := func(asm bool) ([]float64, bool) {
						useAsm = asm
						dst := make([]float64, len(src))
						for i := range dst {
							dst[i] = canary
						}
						ok := foldK(dst[dOff:dOff+n], src[dOff:dOff+n], xs, ws, xOff, nt)
						return dst, ok
					}
					got, gotOK := run(true)
					want, wantOK := run(false)
					where := fmt.Sprintf("%d updates of %d values, dst at +%d, x at +%d, nt %v", k, n, dOff, xOff, nt)
					if gotOK != wantOK {
						t.Fatalf("%s: asm reports %v, Go %v", where, gotOK, wantOK)
					}
					if !sameBitsOrNaN64(got, want) {
						for i := range got {
							if !sameBitsOrNaN64(got[i:i+1], want[i:i+1]) {
								t.Errorf("%s: dst[%d] asm %v (%#x), Go %v (%#x)", where, i-dOff, got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]))
							}
						}
						t.FailNow()
					}
					if slices.Max(ws) <= 0x1p64 && wantOK != finite {
						t.Fatalf("%s: foldK = %v, want %v", where, wantOK, finite)
					}
				}
			}
		})
	}
}

// FuzzAddPackedBatch cuts arbitrary bytes into a batch of 1 to 4 deltas
// (the last one takes any leftover bytes, so it can have the wrong length):
// the batch must reject exactly the deltas AddPacked rejects, and when it
// accepts them give AddPacked's bits; the K-way kernel must give the Go
// loops' bits on the raw values, non-finite ones included.
func FuzzAddPackedBatch(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 128, 127, 0, 0, 0, 64}, uint8(1), uint64(3))
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64, 1}, uint8(1), uint64(3))
	rng := rand.New(rand.NewPCG(83, 84))
	for _, n := range []int{37, 70} {
		v := randVec(rng, 3*n)
		f.Add(protocol.EncodeF32(v), uint8(2), uint64(123456789012345))
		v[n+5] = float32(math.NaN())
		f.Add(protocol.EncodeF32(v), uint8(2), uint64(7))
	}
	f.Fuzz(func(t *testing.T, b []byte, k uint8, samples uint64) {
		size := 1 + int(k%4)
		dim := max(1, len(b)/4/size)
		deltas := make([][]byte, size)
		counts := make([]uint64, size)
		for j := range deltas {
			lo, hi := min(len(b), 4*dim*j), min(len(b), 4*dim*(j+1))
			if j == size-1 {
				hi = len(b)
			}
			deltas[j] = b[lo:hi]
			counts[j] = samples + uint64(j)
		}
		if haveAsm && len(b) >= 4*dim*size {
			xs := make([][]float32, size)
			ws := make([]float64, size)
			for j := range xs {
				xs[j] = decodeF32(make([]float32, dim), deltas[j])
				ws[j] = float64(max(1, counts[j]))
			}
			src := make([]float64, dim)
			for _, nt := range []bool{false, true} {
				got, want := make([]float64, dim), make([]float64, dim)
				okGot := foldK(got, src, xs, ws, 0, nt)
				saved := useAsm
				useAsm = false
				okWant := foldK(want, src, xs, ws, 0, nt)
				useAsm = saved
				if okGot != okWant || !sameBitsOrNaN64(got, want) {
					t.Fatalf("foldK (nt %v): asm %v %v, Go %v %v", nt, okGot, got, okWant, want)
				}
			}
		}
		global := make([]float32, dim)
		seq, bat := begin(t, global), begin(t, global)
		wantErrs := make([]error, size)
		for j, d := range deltas {
			wantErrs[j] = seq.AddPacked(d, counts[j])
		}
		err := bat.(BatchAdder).AddPackedBatch(deltas, counts)
		if errors.Join(wantErrs...) == nil {
			if err != nil {
				t.Fatalf("AddPackedBatch: %v", err)
			}
			if a, b := finish(t, seq), finish(t, bat); !equalBits(a, b) {
				t.Fatalf("batch %v != sequential %v", b, a)
			}
			return
		}
		var be *BatchError
		if !errors.As(err, &be) || len(be.Errs) != size {
			t.Fatalf("err = %v, want a BatchError of %d", err, size)
		}
		for j := range wantErrs {
			if (wantErrs[j] == nil) != (be.Errs[j] == nil) {
				t.Fatalf("update %d: AddPacked err %v, batch err %v", j, wantErrs[j], be.Errs[j])
			}
		}
		if bat.Count() != 0 {
			t.Fatalf("Count = %d after a rejected batch", bat.Count())
		}
	})
}
