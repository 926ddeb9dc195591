package aggregator

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
)

// memBytes is the size of the buffer the memory-bandwidth baseline reads,
// and the least size of the pool of distinct updates the aggregation
// benchmarks cycle through: more than the last-level cache (4× the 32 MiB
// of the first benchmark machine; more than its share of the host's cache
// for the current VM), so that both read from DRAM rather than from cache.
// See DESIGN.md.
const memBytes = 128 << 20

var (
	poolMu  sync.Mutex
	poolRNG = rand.New(rand.NewPCG(1, 2))
	pool    []byte
)

// updatePool returns size bytes (at least memBytes) of packed
// little-endian float32 drawn from a normal distribution, built once per
// process and extended when a larger pool is asked for.
func updatePool(size int) []byte {
	poolMu.Lock()
	defer poolMu.Unlock()
	size = max(size, memBytes)
	if len(pool) < size {
		p := make([]byte, size)
		i := copy(p, pool)
		for ; i < len(p); i += 4 {
			binary.LittleEndian.PutUint32(p[i:], math.Float32bits(float32(poolRNG.NormFloat64())))
		}
		pool = p
	}
	return pool[:size:size]
}

// poolUpdates cuts a pool into distinct packed updates of n parameters:
// as many as fit in memBytes, and at least 2·k (k at least 1), so that
// consecutive batches of k updates share none.
func poolUpdates(n, k int) [][]byte {
	p := updatePool(2 * k * 4 * n)
	ups := make([][]byte, max(2*k, memBytes/(4*n)))
	for i := range ups {
		ups[i] = p[i*4*n : (i+1)*4*n : (i+1)*4*n]
	}
	return ups
}

var benchSizes = []int{1_000, 100_000, 1_000_000, 16_000_000}

// BenchmarkFedAvgAddPacked measures folding packed updates into a FedAvg
// round one at a time; MB/s is update bytes consumed per second. Each
// iteration folds the next of a pool of distinct updates that together
// exceed the last-level cache, as the updates of a real round arrive in
// distinct buffers, so the update bytes come from memory. Two adds before
// the clock starts allocate the round's sums and have every page of them
// mapped, and the setup's garbage is collected and returned to the OS
// before it starts too (otherwise the runtime does that in the background,
// on the one core of -cpu 1). Run with -cpu 1,2 to see the
// split across cores (models of 512K parameters and more).
func BenchmarkFedAvgAddPacked(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("params=%d", n), func(b *testing.B) {
			ups := poolUpdates(n, 1)
			r, err := FedAvg{}.Begin(make([]float32, n), nil)
			if err != nil {
				b.Fatal(err)
			}
			i := 0
			add := func() {
				if err := r.AddPacked(ups[i%len(ups)], 100); err != nil {
					b.Fatal(err)
				}
				i++
			}
			add() // allocate the sums and have the OS map their pages
			add()
			// Collect the setup's garbage and return it to the OS now, not
			// while the clock runs.
			debug.FreeOSMemory()
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				add()
			}
		})
	}
}

// benchBatch is the number of updates of n parameters that
// BenchmarkFedAvgAddPackedBatch folds per call: what the coordinator
// passes (coordinator/rounds.go: up to 8 updates, at most 256 MiB of them).
func benchBatch(n int) int { return max(1, min(8, (256<<20)/(4*n))) }

// BenchmarkFedAvgAddPackedBatch is BenchmarkFedAvgAddPacked with the
// updates folded benchBatch(n) at a time (AddPackedBatch), as the
// coordinator folds a round's bodies; MB/s is still update bytes per
// second. The pool holds at least two batches of distinct updates, so no
// batch reads an update the previous one read. Two batches before the
// clock starts allocate the round's sums, as for BenchmarkFedAvgAddPacked.
func BenchmarkFedAvgAddPackedBatch(b *testing.B) {
	for _, n := range benchSizes {
		k := benchBatch(n)
		b.Run(fmt.Sprintf("params=%d/batch=%d", n, k), func(b *testing.B) {
			ups := poolUpdates(n, k)
			r, err := FedAvg{}.Begin(make([]float32, n), nil)
			if err != nil {
				b.Fatal(err)
			}
			ba := r.(BatchAdder)
			samples := make([]uint64, k)
			for j := range samples {
				samples[j] = 100
			}
			batch := make([][]byte, k)
			i := 0
			add := func() {
				for j := range batch {
					batch[j] = ups[i%len(ups)]
					i++
				}
				if err := ba.AddPackedBatch(batch, samples); err != nil {
					b.Fatal(err)
				}
			}
			add() // allocate the sums and have the OS map their pages
			add()
			debug.FreeOSMemory()
			b.SetBytes(int64(4 * n * k))
			b.ReportAllocs()
			for b.Loop() {
				add()
			}
		})
	}
}

// BenchmarkFedAvgConcurrent adds single updates to one round from
// GOMAXPROCS goroutines at once, each folding into its own shard, as the
// coordinator did with a round's bodies before it passed them in batches
// (and still does for rules without batches). Compare it with the memory read split across
// as many readers (BenchmarkMemoryBandwidth/.../readers=2 on 2 cores).
func BenchmarkFedAvgConcurrent(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("params=%d", n), func(b *testing.B) {
			ups := poolUpdates(n, 1)
			r, err := FedAvg{}.Begin(make([]float32, n), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1))
					if err := r.AddPacked(ups[i%len(ups)], 100); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkMemoryBandwidth is the in-run baseline for the aggregation
// benchmarks: it reads a buffer and sums it as uint64 with eight
// accumulators (integer adds, so the loop itself can go faster than memory
// and the figure is what the memory system delivers to one core).
// bytes=128MiB reads from DRAM and is the baseline; bytes=4MiB fits in
// cache and shows how much a cache-sized baseline would overstate it;
// readers=2 splits the read across two goroutines. loop=float32 is the
// previous baseline's loop (float32 sums, eight accumulators) over the same
// 128 MiB, for reference: the float adder, not memory, limits it.
func BenchmarkMemoryBandwidth(b *testing.B) {
	p := updatePool(memBytes)
	for _, size := range []int{4 << 20, memBytes} {
		u := make([]uint64, size/8)
		for i := range u {
			u[i] = binary.LittleEndian.Uint64(p[8*i%len(p):])
		}
		for _, readers := range []int{1, 2} {
			if size != memBytes && readers != 1 {
				continue
			}
			b.Run(fmt.Sprintf("bytes=%dMiB/readers=%d", size>>20, readers), func(b *testing.B) {
				b.SetBytes(int64(size))
				var sink [2]uint64
				for b.Loop() {
					if readers == 1 {
						sink[0] += sum8(u)
						continue
					}
					var wg sync.WaitGroup
					h := len(u) / 2
					wg.Go(func() { sink[1] += sum8(u[h:]) })
					sink[0] += sum8(u[:h])
					wg.Wait()
				}
				_ = sink
			})
		}
	}
	b.Run(fmt.Sprintf("bytes=%dMiB/loop=float32", memBytes>>20), func(b *testing.B) {
		v, _ := f32view(p)
		if v == nil {
			b.Skip("needs a little-endian host")
		}
		b.SetBytes(memBytes)
		var sink float32
		for b.Loop() {
			sink += sum8(v)
		}
		_ = sink
	})
}

// sum8 sums v with eight accumulators, so the loop is limited by what
// feeds it (memory, or for float32 the adder), not by one add's latency.
func sum8[T float32 | uint64](v []T) T {
	var s0, s1, s2, s3, s4, s5, s6, s7 T
	for len(v) >= 8 {
		p := v[:8:8]
		s0 += p[0]
		s1 += p[1]
		s2 += p[2]
		s3 += p[3]
		s4 += p[4]
		s5 += p[5]
		s6 += p[6]
		s7 += p[7]
		v = v[8:]
	}
	for _, x := range v {
		s0 += x
	}
	return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7
}

// BenchmarkRobust measures whole rounds of the buffering rules: Begin,
// AddPacked of every update, Finish. MB/s is update bytes per second, as
// for FedAvg.
func BenchmarkRobust(b *testing.B) {
	const n = 100_000
	ups := poolUpdates(n, 1)
	for _, s := range []Strategy{Median{}, TrimmedMean{Beta: 0.1}, Krum{F: 1}} {
		for _, sites := range []int{10, 50} {
			b.Run(fmt.Sprintf("rule=%s/sites=%d/params=%d", s.Name(), sites, n), func(b *testing.B) {
				b.SetBytes(int64(4 * n * sites))
				i := 0
				for b.Loop() {
					r, err := s.Begin(make([]float32, n), nil)
					if err != nil {
						b.Fatal(err)
					}
					for range sites {
						if err := r.AddPacked(ups[i%len(ups)], 100); err != nil {
							b.Fatal(err)
						}
						i++
					}
					if _, err := r.Finish(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkFedAvgMemory runs whole FedAvg rounds of a 1M-parameter model
// with 10 and with 1,000 updates, added one at a time and (batch=k) in
// batches of benchBatch updates, and reports the peak growth of the heap
// during a round (sampled after every add; peak-heap-B) and the bytes
// allocated per round (B/op). Neither may grow with the number of updates.
func BenchmarkFedAvgMemory(b *testing.B) {
	const n = 1_000_000
	ups := poolUpdates(n, 1)
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() int64 {
		metrics.Read(sample)
		return int64(sample[0].Value.Uint64())
	}
	for _, k := range []int{1, benchBatch(n)} {
		samples := make([]uint64, k)
		for j := range samples {
			samples[j] = 100
		}
		for _, count := range []int{10, 1000} {
			name := fmt.Sprintf("updates=%d/params=%d", count, n)
			if k > 1 {
				name += fmt.Sprintf("/batch=%d", k)
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				var peak int64
				batch := make([][]byte, 0, k)
				for b.Loop() {
					b.StopTimer()
					runtime.GC()
					base := heap()
					b.StartTimer()
					r, err := FedAvg{}.Begin(make([]float32, n), nil)
					if err != nil {
						b.Fatal(err)
					}
					for i := range count {
						batch = append(batch, ups[i%len(ups)])
						if len(batch) < k && i < count-1 {
							continue
						}
						if k == 1 {
							err = r.AddPacked(batch[0], 100)
						} else {
							err = r.(BatchAdder).AddPackedBatch(batch, samples[:len(batch)])
						}
						if err != nil {
							b.Fatal(err)
						}
						batch = batch[:0]
						peak = max(peak, heap()-base)
					}
					if _, err := r.Finish(); err != nil {
						b.Fatal(err)
					}
					peak = max(peak, heap()-base)
				}
				b.ReportMetric(float64(peak), "peak-heap-B")
			})
		}
	}
}

// BenchmarkFoldKernel measures the inner loops on one 4096-parameter update
// that stays in L1 cache, to separate compute from memory: "fused" is the
// double-buffered validate-and-fold pass, "two-pass" validates and then
// folds in place (the path above pingPongMax, and the previous design).
func BenchmarkFoldKernel(b *testing.B) {
	const n = 4096
	x := randVec(rand.New(rand.NewPCG(3, 4)), n)
	sum, spare := make([]float64, n), make([]float64, n)
	b.Run("path=fused", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			if !foldTo(spare, sum, x, 3) {
				b.Fatal("not finite")
			}
			sum, spare = spare, sum
		}
	})
	b.Run("path=two-pass", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			if !finite32(x) {
				b.Fatal("not finite")
			}
			foldIn(sum, x, 3)
		}
	})
}
