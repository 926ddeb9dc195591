package aggregator

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
)

var benchSizes = []int{1_000, 100_000, 1_000_000}

// BenchmarkFedAvgAddPacked measures folding one packed update into a
// FedAvg round; MB/s is update bytes consumed per second.
func BenchmarkFedAvgAddPacked(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("params=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			delta := protocol.EncodeF32(randVec(rng, n))
			r, err := FedAvg{}.Begin(make([]float32, n))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(delta)))
			b.ReportAllocs()
			for b.Loop() {
				if err := r.AddPacked(delta, 100); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMemoryBandwidth is the in-run baseline for
// BenchmarkFedAvgAddPacked: it reads the same number of bytes, as a
// []float32 of the same length, and sums them. "plain" is the obvious loop
// (bound by the latency of its single accumulator); "unrolled8" uses eight
// accumulators and comes closer to what the memory system can deliver.
func BenchmarkMemoryBandwidth(b *testing.B) {
	for _, n := range benchSizes {
		v := randVec(rand.New(rand.NewPCG(2, uint64(n))), n)
		b.Run(fmt.Sprintf("plain/params=%d", n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			var sink float32
			for b.Loop() {
				var s float32
				for _, x := range v {
					s += x
				}
				sink += s
			}
			_ = sink
		})
		b.Run(fmt.Sprintf("unrolled8/params=%d", n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			var sink float32
			for b.Loop() {
				sink += sumUnrolled8(v)
			}
			_ = sink
		})
	}
}

func sumUnrolled8(v []float32) float32 {
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
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
