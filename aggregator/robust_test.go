package aggregator

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
)

func TestRobustHandComputed(t *testing.T) {
	tests := []struct {
		name    string
		s       Strategy
		global  []float32
		updates []update
		want    []float32
	}{
		{
			name:   "median odd, sample counts ignored",
			s:      Median{},
			global: []float32{0, 10},
			updates: []update{
				{[]float32{1, -1}, 1000}, {[]float32{5, 2}, 1}, {[]float32{3, 100}, 1},
			},
			want: []float32{3, 12},
		},
		{
			name:   "median even takes the mean of the middle two",
			s:      Median{},
			global: []float32{0, 10},
			updates: []update{
				{[]float32{1, -1}, 1}, {[]float32{5, 2}, 1}, {[]float32{3, 100}, 1}, {[]float32{2, 0}, 1},
			},
			want: []float32{2.5, 11},
		},
		{
			name:   "trimmed mean drops one from each end of five at beta 0.2",
			s:      TrimmedMean{Beta: 0.2},
			global: []float32{1, 1},
			updates: []update{
				{[]float32{1, -50}, 1}, {[]float32{100, 0}, 9}, {[]float32{3, 1}, 1}, {[]float32{2, 3}, 1}, {[]float32{4, 2}, 1},
			},
			// [1 2 3 4 100] → mean(2,3,4) = 3; [-50 0 1 2 3] → mean(0,1,2) = 1
			want: []float32{4, 2},
		},
		{
			name:   "trimmed mean at beta 0 is the unweighted mean",
			s:      TrimmedMean{Beta: 0},
			global: []float32{0},
			updates: []update{
				{[]float32{1}, 1}, {[]float32{2}, 100}, {[]float32{6}, 3},
			},
			want: []float32{3},
		},
		{
			name:   "trimmed mean trims floor(beta n): nothing of four at 0.2",
			s:      TrimmedMean{Beta: 0.2},
			global: []float32{0},
			updates: []update{
				{[]float32{1}, 1}, {[]float32{2}, 1}, {[]float32{3}, 1}, {[]float32{10}, 1},
			},
			want: []float32{4},
		},
		{
			// Scores with f = 1 (sum of the n-f-2 = 2 smallest squared
			// distances): 0 → 1+4 = 5; 1 → 1+1 = 2; 2 → 1+2.25 = 3.25;
			// 3.5 → 2.25+6.25 = 8.5; 100 → 96.5²+97² (large).
			name:   "krum picks the most central update",
			s:      Krum{F: 1},
			global: []float32{10},
			updates: []update{
				{[]float32{100}, 1000}, {[]float32{0}, 1}, {[]float32{2}, 1}, {[]float32{1}, 1}, {[]float32{3.5}, 1},
			},
			want: []float32{11},
		},
		{
			name:   "multikrum averages the m best",
			s:      MultiKrum{F: 1, M: 2},
			global: []float32{10},
			updates: []update{
				{[]float32{100}, 1}, {[]float32{0}, 1}, {[]float32{2}, 1}, {[]float32{1}, 1}, {[]float32{3.5}, 1},
			},
			want: []float32{11.5},
		},
		{
			name:   "multikrum m = 0 averages all but the f worst",
			s:      MultiKrum{F: 1},
			global: []float32{10},
			updates: []update{
				{[]float32{100}, 1}, {[]float32{0}, 1}, {[]float32{2}, 1}, {[]float32{1}, 1}, {[]float32{3.5}, 1},
			},
			want: []float32{11.625},
		},
		{
			// 2-D: three clustered points and two far ones; f = 1.
			name:   "krum in two dimensions",
			s:      Krum{F: 1},
			global: []float32{0, 0},
			updates: []update{
				{[]float32{1, 1}, 1}, {[]float32{1, 2}, 1}, {[]float32{2, 1}, 1}, {[]float32{-30, 40}, 1}, {[]float32{50, 50}, 1},
			},
			// scores: (1,1) → 1+1 = 2; (1,2) → 1+2 = 3; (2,1) → 1+2 = 3.
			want: []float32{1, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, packed := range []bool{false, true} {
				r := beginWith(t, tt.s, tt.global, nil)
				for _, u := range tt.updates {
					if err := addUpdate(r, u, packed); err != nil {
						t.Fatal(err)
					}
				}
				res := finishResult(t, r)
				if !equalBits(res.Weights, tt.want) {
					t.Errorf("packed=%v: Finish = %v, want %v", packed, res.Weights, tt.want)
				}
				if res.State != nil {
					t.Errorf("stateless rule returned state")
				}
			}
		})
	}
}

func addUpdate(r Round, u update, packed bool) error {
	if packed {
		return r.AddPacked(protocol.EncodeF32(u.delta), u.samples)
	}
	return r.Add(u.delta, u.samples)
}

func TestKrumRefusesTooFewUpdates(t *testing.T) {
	for _, s := range []Strategy{Krum{F: 1}, MultiKrum{F: 1}, Krum{F: 2}, MultiKrum{F: 1, M: 4}} {
		t.Run(fmt.Sprintf("%#v", s), func(t *testing.T) {
			need := MinUpdates(s)
			r := beginWith(t, s, []float32{0, 0}, nil)
			for i := range need - 1 {
				if err := r.Add([]float32{float32(i), 1}, 1); err != nil {
					t.Fatal(err)
				}
				_, err := r.Finish()
				if !errors.Is(err, ErrTooFew) {
					t.Fatalf("%d updates: err = %v, want ErrTooFew", i+1, err)
				}
			}
			if err := r.Add([]float32{0, 1}, 1); err != nil {
				t.Fatalf("Add after refused Finish: %v", err)
			}
			finish(t, r)
			if err := CheckByzantine(s, need-1); !errors.Is(err, ErrParams) {
				t.Errorf("CheckByzantine(%d) = %v, want ErrParams", need-1, err)
			}
			if err := CheckByzantine(s, need); err != nil {
				t.Errorf("CheckByzantine(%d) = %v", need, err)
			}
		})
	}
	if got := MinUpdates(Krum{F: 1}); got != 5 {
		t.Errorf("MinUpdates(krum f=1) = %d, want 5 (n > 2f+2)", got)
	}
	if got := MinUpdates(MultiKrum{F: 1, M: 6}); got != 7 {
		t.Errorf("MinUpdates(multikrum f=1 m=6) = %d, want 7", got)
	}
	if got := MinUpdates(NormBound{Rule: Krum{F: 3}, Bound: 1}); got != 9 {
		t.Errorf("MinUpdates(normbound(krum f=3)) = %d, want 9", got)
	}
	for _, s := range []Strategy{FedAvg{}, Median{}, TrimmedMean{Beta: 0.4}} {
		if err := CheckByzantine(s, 1); err != nil {
			t.Errorf("CheckByzantine(%s, 1) = %v", s.Name(), err)
		}
		if err := CheckByzantine(s, 0); !errors.Is(err, ErrParams) {
			t.Errorf("CheckByzantine(%s, 0) = %v, want ErrParams", s.Name(), err)
		}
	}
	if err := CheckByzantine(Krum{F: -1}, 10); !errors.Is(err, ErrParams) {
		t.Errorf("CheckByzantine(krum f=-1) = %v, want ErrParams", err)
	}
	if err := CheckByzantine(nil, 10); !errors.Is(err, ErrParams) {
		t.Errorf("CheckByzantine(nil) = %v, want ErrParams", err)
	}
}

// TestRobustRulesIgnoreOutliers: 4 honest sites send the true delta plus
// small noise, 1 hostile site sends it sign-flipped and ×100. The robust
// rules stay near the true delta; FedAvg does not.
func TestRobustRulesIgnoreOutliers(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const dim = 64
	truth := randVec(rng, dim)
	var ups []update
	for range 4 {
		d := make([]float32, dim)
		for i := range d {
			d[i] = truth[i] + float32(0.01*rng.NormFloat64())
		}
		ups = append(ups, update{d, 100})
	}
	evil := make([]float32, dim)
	for i := range evil {
		evil[i] = -100 * truth[i]
	}
	ups = append(ups, update{evil, 100})
	dist := func(got []float32) float64 {
		var s, n float64
		for i := range got {
			d := float64(got[i] - truth[i])
			s += d * d
			n += float64(truth[i]) * float64(truth[i])
		}
		return math.Sqrt(s / n)
	}
	for _, s := range []Strategy{Median{}, TrimmedMean{Beta: 0.2}, Krum{F: 1}, MultiKrum{F: 1}, NormBound{Rule: Median{}, Bound: 10}} {
		for k := range ups {
			// The hostile update in every position.
			order := append(slices.Clone(ups[k:]), ups[:k]...)
			r := beginWith(t, s, make([]float32, dim), nil)
			for _, u := range order {
				if err := r.Add(u.delta, u.samples); err != nil {
					t.Fatal(err)
				}
			}
			if d := dist(finish(t, r)); d > 0.05 {
				t.Errorf("%s (outlier at %d): relative error %.3f, want <= 0.05", s.Name(), k, d)
			}
		}
	}
	r := begin(t, make([]float32, dim))
	for _, u := range ups {
		if err := r.Add(u.delta, u.samples); err != nil {
			t.Fatal(err)
		}
	}
	if d := dist(finish(t, r)); d < 10 {
		t.Errorf("FedAvg relative error %.3f; the attack should move it far", d)
	}
}

func TestSortingNetwork(t *testing.T) {
	// 0-1 principle: a comparator network sorts every input iff it sorts
	// every input of zeros and ones.
	for n := 1; n <= 16; n++ {
		net := batcher(n)
		for bits := range 1 << n {
			v := make([]int32, n)
			for i := range v {
				v[i] = int32(bits >> i & 1)
			}
			for _, p := range net {
				if p[0] >= p[1] || p[1] >= n {
					t.Fatalf("n=%d: bad comparator %v", n, p)
				}
				v[p[0]], v[p[1]] = min(v[p[0]], v[p[1]]), max(v[p[0]], v[p[1]])
			}
			if !slices.IsSorted(v) {
				t.Fatalf("n=%d: input %b not sorted: %v", n, bits, v)
			}
			// The pruned networks still put the right values at the
			// positions they keep.
			for _, keep := range [][2]int{{(n - 1) / 2, n/2 + 1}, {n / 4, n - n/4}} {
				w := make([]int32, n)
				for i := range w {
					w[i] = int32(bits >> i & 1)
				}
				for _, p := range pruneNet(net, n, keep[0], keep[1]) {
					w[p[0]], w[p[1]] = min(w[p[0]], w[p[1]]), max(w[p[0]], w[p[1]])
				}
				if !slices.Equal(w[keep[0]:keep[1]], v[keep[0]:keep[1]]) {
					t.Fatalf("n=%d keep %v: input %b gives %v, want %v", n, keep, bits, w, v)
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(31, 32))
	for _, n := range []int{17, 33, 50, netMax} {
		net := batcher(n)
		for range 200 {
			v := make([]int32, n)
			for i := range v {
				v[i] = int32(rng.IntN(7))
			}
			for _, p := range net {
				v[p[0]], v[p[1]] = min(v[p[0]], v[p[1]]), max(v[p[0]], v[p[1]])
			}
			if !slices.IsSorted(v) {
				t.Fatalf("n=%d: not sorted: %v", n, v)
			}
		}
	}
}

func TestF32Key(t *testing.T) {
	vals := []float32{float32(math.Inf(-1)), -math.MaxFloat32, -1, -math.SmallestNonzeroFloat32, float32(math.Copysign(0, -1)), 0,
		math.SmallestNonzeroFloat32, 1, math.MaxFloat32, float32(math.Inf(1))}
	for i, x := range vals {
		if back := keyF32(f32key(x)); math.Float32bits(back) != math.Float32bits(x) {
			t.Errorf("%v round-trips to %v", x, back)
		}
		if i > 0 && f32key(vals[i-1]) >= f32key(x) {
			t.Errorf("key(%v) >= key(%v)", vals[i-1], x)
		}
	}
	rng := rand.New(rand.NewPCG(33, 34))
	for range 10000 {
		a, b := math.Float32frombits(rng.Uint32()), math.Float32frombits(rng.Uint32())
		if a != a || b != b {
			continue
		}
		if (a < b) != (f32key(a) < f32key(b)) && !(a == 0 && b == 0) {
			t.Fatalf("order of %v, %v not kept", a, b)
		}
	}
}

// TestRobustManyUpdates checks the coordinate-wise rules against sorting
// each column, over more coordinates than a block, with update counts that
// take the sorting network (odd and even) and the per-column sort.
func TestRobustManyUpdates(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	const dim = 1024 + 37
	for _, n := range []int{45, 46, netMax + 7} {
		ups := make([][]float32, n)
		for i := range ups {
			ups[i] = randVec(rng, dim)
			if i%5 == 0 {
				ups[i][3] = float32(math.Copysign(0, -1))
			}
		}
		k := n / 10
		for _, tc := range []struct {
			s   Strategy
			ref func(col []float64) float64
		}{
			{Median{}, func(c []float64) float64 {
				if n%2 == 1 {
					return c[n/2]
				}
				return (c[n/2-1] + c[n/2]) / 2
			}},
			{TrimmedMean{Beta: 0.1}, func(c []float64) float64 {
				var s float64
				for _, x := range c[k : n-k] {
					s += x
				}
				return s / float64(n-2*k)
			}},
		} {
			r := beginWith(t, tc.s, make([]float32, dim), nil)
			for _, u := range ups {
				if err := r.Add(u, 1); err != nil {
					t.Fatal(err)
				}
			}
			got := finish(t, r)
			for j := range dim {
				col := make([]float64, n)
				for i := range ups {
					col[i] = float64(ups[i][j])
				}
				slices.Sort(col)
				if want := float32(tc.ref(col)); math.Abs(float64(got[j]-want)) > 1e-6 {
					t.Fatalf("%s n=%d: coordinate %d = %v, want %v", tc.s.Name(), n, j, got[j], want)
				}
			}
		}
	}
}

func TestRobustParamsValidatedAtBegin(t *testing.T) {
	for _, s := range []Strategy{TrimmedMean{Beta: 0.5}, TrimmedMean{Beta: -0.1}, TrimmedMean{Beta: math.NaN()}, Krum{F: -1}, MultiKrum{F: -1}, MultiKrum{F: 1, M: -2}} {
		if _, err := s.Begin([]float32{1}, nil); !errors.Is(err, ErrParams) {
			t.Errorf("%#v: err = %v, want ErrParams", s, err)
		}
	}
}
