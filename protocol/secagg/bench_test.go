package secagg

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Benchmarks compare the protocol's costs with a plain sum of the same
// updates in the same run (what FedAvg without secure aggregation does
// with them):
//
//	BenchmarkPlainSum            n float32 updates summed into float64
//	BenchmarkServerSumMasked     the server folding in n masked inputs
//	BenchmarkClientMaskedInput   one client's round 2: decrypting the
//	                             routed shares, encoding, n−1 pairwise
//	                             masks and the self mask
//	BenchmarkServerUnmask        the server's final step: reconstructing
//	                             the secrets and removing every mask, with
//	                             no dropouts and with 10% dropped after
//	                             ShareKeys
const benchLength = 100_000

var benchSizes = []int{10, 100}

func benchConfig(n int) Config {
	cfg := testConfig(n, benchLength)
	return cfg
}

func benchUpdates(n int) [][]float32 {
	r := rand.New(rand.NewPCG(uint64(n), 3))
	u := make([][]float32, n)
	for i := range u {
		u[i] = randomUpdate(r, benchLength, 0.5)
	}
	return u
}

func BenchmarkPlainSum(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ups := benchUpdates(n)
			sum := make([]float64, benchLength)
			b.SetBytes(int64(4 * n * benchLength))
			for b.Loop() {
				clear(sum)
				for _, u := range ups {
					for j, x := range u {
						sum[j] += float64(x)
					}
				}
			}
		})
	}
}

func BenchmarkServerSumMasked(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ups := benchUpdates(n)
			cfg := benchConfig(n)
			ins := make([]*MaskedInput, n)
			for i, u := range ups {
				e, _ := cfg.Encode(u)
				ins[i] = &MaskedInput{Header: sessionFor(n, 7).header(), Vector: e}
			}
			b.SetBytes(int64(4 * n * benchLength))
			for b.Loop() {
				s := &Server{st: serverState{Config: cfg, Session: sessionFor(n, 7), Phase: PhaseMaskedInput}}
				for i, m := range ins {
					if err := s.handleMaskedInput(i+1, m); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkClientMaskedInput(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			f := buildFixture(b, benchConfig(n), n, PhaseMaskedInput)
			snap, err := f.clients[0].MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			update := benchUpdates(1)[0]
			for b.Loop() {
				b.StopTimer()
				c, err := RestoreClient(snap, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := c.MaskedInput(f.rs[0], update); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkServerUnmask(b *testing.B) {
	for _, n := range benchSizes {
		for _, dropPct := range []int{0, 10} {
			b.Run(fmt.Sprintf("n=%d/dropped=%d%%", n, dropPct), func(b *testing.B) {
				srv := unmaskingServer(b, n, n*dropPct/100)
				b.ResetTimer()
				for b.Loop() {
					if _, _, err := srv.unmask(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// unmaskingServer runs n clients to the end of the Unmasking phase, the
// last `dropped` of them dropping after ShareKeys, and returns the server
// holding every unmasking response.
func unmaskingServer(b *testing.B, n, dropped int) *Server {
	b.Helper()
	f := buildFixture(b, benchConfig(n), n, PhaseMaskedInput)
	ups := benchUpdates(n)
	for i := range n - dropped {
		m, err := f.clients[i].MaskedInput(f.rs[i], ups[i])
		if err != nil {
			b.Fatal(err)
		}
		if err := f.srv.Handle(f.sess.Clients[i], m); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.srv.Advance(); err != nil {
		b.Fatal(err)
	}
	req, err := f.srv.UnmaskRequest()
	if err != nil {
		b.Fatal(err)
	}
	for i := range n - dropped {
		r, err := f.clients[i].Unmask(req)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.srv.Handle(f.sess.Clients[i], r); err != nil {
			b.Fatal(err)
		}
	}
	return f.srv
}
