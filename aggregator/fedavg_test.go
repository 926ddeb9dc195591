package aggregator

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
)

type update struct {
	delta   []float32
	samples uint64
}

func begin(t testing.TB, global []float32) Round {
	t.Helper()
	return beginWith(t, FedAvg{}, global, nil)
}

func beginWith(t testing.TB, s Strategy, global []float32, state []byte) Round {
	t.Helper()
	r, err := s.Begin(global, state)
	if err != nil {
		t.Fatalf("%s Begin: %v", s.Name(), err)
	}
	return r
}

func finish(t testing.TB, r Round) []float32 {
	t.Helper()
	return finishResult(t, r).Weights
}

func finishResult(t testing.TB, r Round) Result {
	t.Helper()
	got, err := r.Finish()
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	return got
}

// kernelPaths runs f once per way meanAcc can fold an update: double
// buffered or in place, on one goroutine or split, reading packed bytes in
// place or decoding them, each with the assembly kernels (where this build
// and CPU have them) and with the Go loops; batches also in blocks of a few
// parameters, so that they have many blocks and ragged ends, and with
// non-temporal stores. The tunables are restored afterwards.
func kernelPaths(t *testing.T, f func(t *testing.T)) {
	type tun struct {
		name                           string
		pingPong, chunk, minSplit, max int
		le                             bool
		block, nt                      int
	}
	for _, c := range []tun{
		{"default", pingPongMax, parallelChunk, parallelMin, maxWorkers, nativeLE, batchBlock, ntMin},
		{"in-place", 0, parallelChunk, parallelMin, maxWorkers, nativeLE, batchBlock, ntMin},
		{"blocks-nt", pingPongMax, parallelChunk, parallelMin, maxWorkers, nativeLE, 37, 0},
		{"parallel-nt", pingPongMax, 8, 0, 3, nativeLE, 3, 0},
		{"parallel-in-place", 0, 8, 0, 3, nativeLE, 8, ntMin},
		{"portable", pingPongMax, parallelChunk, parallelMin, maxWorkers, false, batchBlock, ntMin},
		{"portable-in-place-parallel", 0, 8, 0, 3, false, 5, 0},
	} {
		for _, asm := range kernelImpls() {
			t.Run(c.name+"/"+implName(asm), func(t *testing.T) {
				saved := []int{pingPongMax, parallelChunk, parallelMin, maxWorkers, batchBlock, ntMin}
				savedLE, savedProcs, savedAsm := nativeLE, gomaxprocs, useAsm
				t.Cleanup(func() {
					pingPongMax, parallelChunk, parallelMin, maxWorkers = saved[0], saved[1], saved[2], saved[3]
					batchBlock, ntMin = saved[4], saved[5]
					nativeLE, gomaxprocs, useAsm = savedLE, savedProcs, savedAsm
				})
				pingPongMax, parallelChunk, parallelMin, maxWorkers, nativeLE = c.pingPong, c.chunk, c.minSplit, c.max, c.le
				batchBlock, ntMin = c.block, c.nt
				gomaxprocs = func() int { return 3 }
				useAsm = asm
				f(t)
			})
		}
	}
}

// kernelImpls returns the values of useAsm to test: true (when this build
// and CPU have assembly kernels) and false.
func kernelImpls() []bool {
	if haveAsm {
		return []bool{true, false}
	}
	return []bool{false}
}

func implName(asm bool) string {
	if asm {
		return "asm"
	}
	return "go"
}

func randVec(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func TestFedAvgHandComputed(t *testing.T) {
	tests := []struct {
		name    string
		global  []float32
		updates []update
		want    []float32
	}{
		{
			name:    "single update applies its delta",
			global:  []float32{1, 2, 3},
			updates: []update{{[]float32{0.5, -1, 0}, 7}},
			want:    []float32{1.5, 1, 3},
		},
		{
			name:   "weighted by samples",
			global: []float32{1, 2},
			updates: []update{
				{[]float32{1, 0}, 1},
				{[]float32{0, 2}, 3},
			},
			// sum = [1, 6], total = 4 -> delta [0.25, 1.5]
			want: []float32{1.25, 3.5},
		},
		{
			name:   "opposite deltas with equal weight cancel",
			global: []float32{-4, 0.25},
			updates: []update{
				{[]float32{2, -8}, 10},
				{[]float32{-2, 8}, 10},
			},
			want: []float32{-4, 0.25},
		},
		{
			name:   "three sites",
			global: []float32{0, 0, 0, 0, 0},
			updates: []update{
				{[]float32{1, 1, 1, 1, 1}, 2},
				{[]float32{4, 0, -1, 2, 0}, 1},
				{[]float32{-2, 3, 0, 0, 5}, 1},
			},
			// (2*[1,1,1,1,1] + [4,0,-1,2,0] + [-2,3,0,0,5]) / 4
			want: []float32{1, 1.25, 0.25, 1, 1.75},
		},
	}
	kernelPaths(t, func(t *testing.T) {
		for _, tt := range tests {
			for _, packed := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/packed=%v", tt.name, packed), func(t *testing.T) {
					r := begin(t, tt.global)
					for _, u := range tt.updates {
						var err error
						if packed {
							err = r.AddPacked(protocol.EncodeF32(u.delta), u.samples)
						} else {
							err = r.Add(u.delta, u.samples)
						}
						if err != nil {
							t.Fatalf("Add: %v", err)
						}
					}
					if got := r.Count(); got != len(tt.updates) {
						t.Errorf("Count = %d, want %d", got, len(tt.updates))
					}
					res := finishResult(t, r)
					if !equalBits(res.Weights, tt.want) {
						t.Errorf("Finish = %v, want %v", res.Weights, tt.want)
					}
					if res.State != nil {
						t.Errorf("FedAvg returned state %x", res.State)
					}
				})
			}
		}
	})
}

func TestFedAvgIdenticalUpdates(t *testing.T) {
	kernelPaths(t, testFedAvgIdenticalUpdates)
}

func testFedAvgIdenticalUpdates(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dim := range []int{1, 3, 17, 1000} {
		for _, sites := range []int{1, 2, 5, 40} {
			global := randVec(rng, dim)
			delta := randVec(rng, dim)
			r := begin(t, global)
			for range sites {
				if err := r.Add(delta, 1+rng.Uint64N(5000)); err != nil {
					t.Fatalf("Add: %v", err)
				}
			}
			got := finish(t, r)
			for i := range got {
				want := float32(float64(global[i]) + float64(delta[i]))
				if got[i] != want {
					t.Fatalf("dim %d sites %d: weight %d = %v, want %v", dim, sites, i, got[i], want)
				}
			}
		}
	}
}

func TestFedAvgPermutationInvariance(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const dim, sites = 257, 30
	global := randVec(rng, dim)
	updates := make([]update, sites)
	for i := range updates {
		updates[i] = update{randVec(rng, dim), 1 + rng.Uint64N(100000)}
	}
	run := func(order []int) []float32 {
		r := begin(t, global)
		for _, i := range order {
			if err := r.Add(updates[i].delta, updates[i].samples); err != nil {
				t.Fatalf("Add: %v", err)
			}
		}
		return finish(t, r)
	}
	base := run(rng.Perm(sites))
	for trial := range 10 {
		got := run(rng.Perm(sites))
		for i := range got {
			if d := math.Abs(float64(got[i] - base[i])); d > 1e-6*(1+math.Abs(float64(base[i]))) {
				t.Fatalf("trial %d: weight %d = %v, want %v", trial, i, got[i], base[i])
			}
		}
	}
}

func TestFedAvgAddPackedEqualsAdd(t *testing.T) {
	kernelPaths(t, testFedAvgAddPackedEqualsAdd)
}

func testFedAvgAddPackedEqualsAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, dim := range []int{1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200, 1001} {
		global := randVec(rng, dim)
		a, p := begin(t, global), begin(t, global)
		for k := range 4 {
			d := randVec(rng, dim)
			n := 1 + rng.Uint64N(1000)
			if err := a.Add(d, n); err != nil {
				t.Fatalf("Add: %v", err)
			}
			b := protocol.EncodeF32(d)
			if k%2 == 1 { // an unaligned buffer takes the decoding path
				b = append(make([]byte, 1, len(b)+1), b...)[1:]
			}
			if err := p.AddPacked(b, n); err != nil {
				t.Fatalf("AddPacked: %v", err)
			}
		}
		if ga, gp := finish(t, a), finish(t, p); !equalBits(ga, gp) {
			t.Errorf("dim %d: AddPacked result %v differs from Add result %v", dim, gp, ga)
		}
	}
}

func TestFedAvgRejectedUpdateLeavesSumUnchanged(t *testing.T) {
	kernelPaths(t, testFedAvgRejectedUpdateLeavesSumUnchanged)
}

func testFedAvgRejectedUpdateLeavesSumUnchanged(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	good := update{[]float32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 3}
	tests := []struct {
		name    string
		delta   []float32
		samples uint64
		short   bool // drop the last byte when packed
		wantErr error
	}{
		{"NaN at end", []float32{1, 1, 1, 1, 1, 1, 1, 1, nan}, 1, false, ErrNotFinite},
		{"NaN at start", []float32{nan, 1, 1, 1, 1, 1, 1, 1, 1}, 1, false, ErrNotFinite},
		{"+Inf in middle", []float32{1, 1, 1, 1, inf, 1, 1, 1, 1}, 1, false, ErrNotFinite},
		{"-Inf", []float32{1, 1, 1, 1, 1, -inf, 1, 1, 1}, 1, false, ErrNotFinite},
		{"zero samples", []float32{1, 1, 1, 1, 1, 1, 1, 1, 1}, 0, false, ErrNoSamples},
		{"too short", []float32{1, 1, 1, 1, 1, 1, 1, 1}, 1, false, ErrShape},
		{"too long", []float32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 1, false, ErrShape},
		{"packed length not a multiple of 4", []float32{1, 1, 1, 1, 1, 1, 1, 1, 1}, 1, true, ErrShape},
	}
	for _, tt := range tests {
		for _, packed := range []bool{false, true} {
			if tt.short && !packed {
				continue
			}
			name := tt.name + "/slice"
			if packed {
				name = tt.name + "/packed"
			}
			t.Run(name, func(t *testing.T) {
				global := make([]float32, len(good.delta))
				r := begin(t, global)
				if err := r.Add(good.delta, good.samples); err != nil {
					t.Fatalf("Add good: %v", err)
				}
				fr := r.(*meanRound)
				before := append([]float64(nil), fr.shards[0].sum...)
				total := fr.shards[0].total

				var err error
				if packed {
					b := protocol.EncodeF32(tt.delta)
					if tt.short {
						b = b[:len(b)-1]
					}
					err = r.AddPacked(b, tt.samples)
				} else {
					err = r.Add(tt.delta, tt.samples)
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				for i := range before {
					if math.Float64bits(before[i]) != math.Float64bits(fr.shards[0].sum[i]) {
						t.Fatalf("sum[%d] changed from %v to %v", i, before[i], fr.shards[0].sum[i])
					}
				}
				if fr.shards[0].total != total || r.Count() != 1 {
					t.Fatalf("total %v count %d, want %v and 1", fr.shards[0].total, r.Count(), total)
				}
				if got := finish(t, r); !equalBits(got, good.delta) {
					t.Errorf("Finish = %v, want %v", got, good.delta)
				}
			})
		}
	}
}

func TestFedAvgLifecycleErrors(t *testing.T) {
	t.Run("begin empty", func(t *testing.T) {
		if _, err := (FedAvg{}).Begin(nil, nil); !errors.Is(err, ErrShape) {
			t.Errorf("err = %v, want ErrShape", err)
		}
	})
	t.Run("begin non-finite", func(t *testing.T) {
		if _, err := (FedAvg{}).Begin([]float32{0, float32(math.Inf(-1))}, nil); !errors.Is(err, ErrNotFinite) {
			t.Errorf("err = %v, want ErrNotFinite", err)
		}
	})
	t.Run("finish empty", func(t *testing.T) {
		r := begin(t, []float32{1})
		if _, err := r.Finish(); !errors.Is(err, ErrEmpty) {
			t.Errorf("err = %v, want ErrEmpty", err)
		}
		// The round stays usable.
		if err := r.Add([]float32{1}, 1); err != nil {
			t.Fatalf("Add after empty Finish: %v", err)
		}
		if got := finish(t, r); got[0] != 2 {
			t.Errorf("Finish = %v, want [2]", got)
		}
	})
	t.Run("add after finish", func(t *testing.T) {
		r := begin(t, []float32{1})
		if err := r.Add([]float32{1}, 1); err != nil {
			t.Fatal(err)
		}
		first := finish(t, r)
		if err := r.Add([]float32{1}, 1); !errors.Is(err, ErrFinished) {
			t.Errorf("Add err = %v, want ErrFinished", err)
		}
		if err := r.AddPacked(protocol.EncodeF32([]float32{1}), 1); !errors.Is(err, ErrFinished) {
			t.Errorf("AddPacked err = %v, want ErrFinished", err)
		}
		first[0] = 99 // callers own what Finish returns
		if again := finish(t, r); again[0] != 2 {
			t.Errorf("second Finish = %v, want [2]", again)
		}
	})
	t.Run("overflow on finish", func(t *testing.T) {
		r := begin(t, []float32{math.MaxFloat32})
		if err := r.Add([]float32{math.MaxFloat32}, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Finish(); !errors.Is(err, ErrNotFinite) {
			t.Errorf("err = %v, want ErrNotFinite", err)
		}
	})
	t.Run("begin copies global", func(t *testing.T) {
		g := []float32{1, 1}
		r := begin(t, g)
		g[0] = 100
		if err := r.Add([]float32{0, 0}, 1); err != nil {
			t.Fatal(err)
		}
		if got := finish(t, r); got[0] != 1 {
			t.Errorf("Finish = %v, want [1 1]", got)
		}
	})
	t.Run("begin with state", func(t *testing.T) {
		st, err := State{Rule: "fedavg", Vectors: [][]float32{{1}}}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (FedAvg{}).Begin([]float32{1}, st); !errors.Is(err, ErrState) {
			t.Errorf("err = %v, want ErrState", err)
		}
		if _, err := (FedAvg{}).Begin([]float32{1}, []byte{}); err != nil {
			t.Errorf("empty state: %v", err)
		}
	})
	t.Run("name", func(t *testing.T) {
		if got := (FedAvg{}).Name(); got != "fedavg" {
			t.Errorf("Name = %q", got)
		}
	})
}

func TestFedAvgConcurrentAdds(t *testing.T) {
	kernelPaths(t, testFedAvgConcurrentAdds)
}

func testFedAvgConcurrentAdds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const dim, sites = 100, 16
	global := randVec(rng, dim)
	updates := make([]update, sites)
	for i := range updates {
		updates[i] = update{randVec(rng, dim), 1 + rng.Uint64N(100)}
	}
	seq := begin(t, global)
	for _, u := range updates {
		if err := seq.Add(u.delta, u.samples); err != nil {
			t.Fatal(err)
		}
	}
	want := finish(t, seq)

	r := begin(t, global)
	var wg sync.WaitGroup
	errs := make([]error, sites)
	for i, u := range updates {
		wg.Go(func() {
			if i%2 == 0 {
				errs[i] = r.Add(u.delta, u.samples)
			} else {
				errs[i] = r.AddPacked(protocol.EncodeF32(u.delta), u.samples)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	got := finish(t, r)
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-6*(1+math.Abs(float64(want[i]))) {
			t.Fatalf("weight %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestPackedFinite(t *testing.T) {
	specials := []struct {
		name   string
		bits   uint32
		finite bool
	}{
		{"+Inf", 0x7f800000, false},
		{"-Inf", 0xff800000, false},
		{"quiet NaN", 0x7fc00000, false},
		{"signalling NaN", 0x7f800001, false},
		{"negative NaN", 0xffffffff, false},
		{"max float", 0x7f7fffff, true},
		{"-max float", 0xff7fffff, true},
		{"-0", 0x80000000, true},
		{"smallest subnormal", 0x00000001, true},
		{"largest subnormal", 0x007fffff, true},
		{"one", 0x3f800000, true},
	}
	for _, sp := range specials {
		for _, n := range []int{1, 2, 3, 7, 8, 9, 16, 17} {
			for pos := range n {
				t.Run(sp.name, func(t *testing.T) {
					v := make([]float32, n)
					for i := range v {
						v[i] = 1.5
					}
					v[pos] = math.Float32frombits(sp.bits)
					b := protocol.EncodeF32(v)
					if got := packedFinite(b); got != sp.finite {
						t.Fatalf("n=%d pos=%d: packedFinite = %v, want %v", n, pos, got, sp.finite)
					}
					wantIdx := -1
					if !sp.finite {
						wantIdx = pos
					}
					if got := firstNonFinitePacked(b); got != wantIdx {
						t.Fatalf("n=%d pos=%d: firstNonFinitePacked = %d, want %d", n, pos, got, wantIdx)
					}
					if got := firstNonFinite(v); got != wantIdx {
						t.Fatalf("n=%d pos=%d: firstNonFinite = %d, want %d", n, pos, got, wantIdx)
					}
				})
			}
		}
	}
}

// FuzzAddPacked checks that AddPacked accepts exactly what
// protocol.DecodeF32 accepts and then agrees bit for bit with Add. AddPacked
// runs the default kernels (the assembly ones where this CPU has them) and
// Add the Go loops; where there are assembly kernels, they are also
// compared with the Go loops on the raw values (checkKernels).
func FuzzAddPacked(f *testing.F) {
	f.Add([]byte{0, 0, 128, 63, 0, 0, 0, 64}, uint64(3))
	f.Add([]byte{0, 0, 128, 127, 0, 0, 0, 64}, uint64(1))
	f.Add([]byte{0, 0, 192, 255, 1, 2, 3, 4}, uint64(0))
	f.Add([]byte{1, 2, 3}, uint64(1))
	// Long enough for the assembly kernels' unrolled loops and tails.
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{37, 70} {
		v := randVec(rng, n)
		f.Add(protocol.EncodeF32(v), uint64(123456789012345))
		v[n-3] = float32(math.Inf(-1))
		f.Add(protocol.EncodeF32(v), uint64(7))
	}
	f.Fuzz(func(t *testing.T, b []byte, samples uint64) {
		if haveAsm && len(b)%4 == 0 && samples > 0 {
			// The kernels on the raw values, non-finite ones included,
			// with a finite running sum.
			x := decodeF32(make([]float32, len(b)/4), b)
			src := make([]float64, len(x))
			for i := range src {
				if y := float64(x[len(x)-1-i]); !math.IsNaN(y) && !math.IsInf(y, 0) {
					src[i] = y
				}
			}
			checkKernels(t, src, x, 0, len(x), float64(samples))
		}
		dim := len(b) / 4
		if dim == 0 {
			dim = 1
		}
		global := make([]float32, dim)
		p := begin(t, global)
		errP := p.AddPacked(b, samples)
		v, errD := protocol.DecodeF32(b)
		if errD != nil || len(b) == 0 || samples == 0 {
			if errP == nil {
				t.Fatalf("AddPacked accepted %x (samples %d); DecodeF32 err %v", b, samples, errD)
			}
			return
		}
		if errP != nil {
			t.Fatalf("AddPacked: %v", errP)
		}
		saved := useAsm
		useAsm = false
		defer func() { useAsm = saved }()
		a := begin(t, global)
		if err := a.Add(v, samples); err != nil {
			t.Fatalf("Add: %v", err)
		}
		if ga, gp := finish(t, a), finish(t, p); !equalBits(ga, gp) {
			t.Fatalf("AddPacked %v != Add %v", gp, ga)
		}
	})
}

func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
