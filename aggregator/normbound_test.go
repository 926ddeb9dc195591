package aggregator

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
)

func norm(x []float32) float64 { return math.Sqrt(sumSquares(x)) }

func TestNormBoundHandComputed(t *testing.T) {
	// Bound 5: [3, 4] has norm 5 and passes; [6, 8] (norm 10) is halved to
	// [3, 4]; [0, 1] passes. FedAvg weights 1, 1, 2:
	// ([3,4] + [3,4] + 2·[0,1]) / 4 = [1.5, 2.5].
	for _, packed := range []bool{false, true} {
		r := beginWith(t, NormBound{Rule: FedAvg{}, Bound: 5}, []float32{0, 0}, nil)
		for _, u := range []update{{[]float32{3, 4}, 1}, {[]float32{6, 8}, 1}, {[]float32{0, 1}, 2}} {
			if err := addUpdate(r, u, packed); err != nil {
				t.Fatal(err)
			}
		}
		got := finish(t, r)
		if !closeTo(got, []float32{1.5, 2.5}, 1e-6) {
			t.Errorf("packed=%v: %v, want [1.5 2.5]", packed, got)
		}
	}
}

// TestNormBoundClips checks, through Median of a single update (which
// returns that update), that a clipped delta keeps its direction and has
// norm at most the bound, and that small deltas pass bit-for-bit.
func TestNormBoundClips(t *testing.T) {
	rng := rand.New(rand.NewPCG(61, 62))
	for _, dim := range []int{1, 3, 100, 10000} {
		for _, scale := range []float64{1e-3, 1, 1e3, 1e30} {
			d := randVec(rng, dim)
			for i := range d {
				d[i] = float32(float64(d[i]) * scale)
			}
			n := norm(d)
			bound := n / (1 + rng.Float64()*3)
			for _, packed := range []bool{false, true} {
				for _, b := range []float64{bound, n * 2} {
					r := beginWith(t, NormBound{Rule: Median{}, Bound: b}, make([]float32, dim), nil)
					if err := addUpdate(r, update{d, 1}, packed); err != nil {
						t.Fatal(err)
					}
					got := finish(t, r)
					if b > n {
						if !equalBits(got, d) {
							t.Fatalf("dim %d: a delta within the bound changed", dim)
						}
						continue
					}
					if gn := norm(got); gn > b || gn < b*(1-1e-6) {
						t.Fatalf("dim %d scale %g: clipped norm %v, bound %v", dim, scale, gn, b)
					}
					for i := range got {
						want := float64(d[i]) * b / n
						if math.Abs(float64(got[i])-want) > 1e-6*math.Abs(want)+1e-45 {
							t.Fatalf("dim %d: element %d = %v, want %v", dim, i, got[i], want)
						}
					}
				}
			}
		}
	}
}

func TestNormBoundErrors(t *testing.T) {
	for _, s := range []NormBound{{Rule: FedAvg{}, Bound: 0}, {Rule: FedAvg{}, Bound: -1}, {Rule: FedAvg{}, Bound: math.NaN()}, {Rule: FedAvg{}, Bound: math.Inf(1)}, {Bound: 1}, {Rule: TrimmedMean{Beta: 0.7}, Bound: 1}} {
		if _, err := s.Begin([]float32{1}, nil); !errors.Is(err, ErrParams) {
			t.Errorf("%#v: Begin err = %v, want ErrParams", s, err)
		}
	}
	r := beginWith(t, NormBound{Rule: FedAvg{}, Bound: 1}, []float32{0, 0}, nil)
	for _, tc := range []struct {
		err  error
		want error
	}{
		{r.Add([]float32{1}, 1), ErrShape},
		{r.AddPacked([]byte{1, 2, 3}, 1), ErrShape},
		{r.Add([]float32{float32(math.NaN()), 1}, 1), ErrNotFinite},
		{r.AddPacked(protocol.EncodeF32([]float32{1, float32(math.Inf(1))}), 1), ErrNotFinite},
		{r.Add([]float32{100, 0}, 0), ErrNoSamples},
		{r.Add([]float32{0.1, 0}, 0), ErrNoSamples},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("err = %v, want %v", tc.err, tc.want)
		}
	}
	if r.Count() != 0 {
		t.Errorf("Count = %d after only rejected updates", r.Count())
	}
	if got := (NormBound{Rule: Krum{F: 1}, Bound: 1}).Name(); got != "krum" {
		t.Errorf("Name = %q", got)
	}
}
