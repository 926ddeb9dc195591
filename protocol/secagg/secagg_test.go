package secagg

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestMaskedSumEqualsPlainSum(t *testing.T) {
	tests := []struct {
		n, t, length int
		scale        float64
	}{
		{2, 2, 1, 1 << 16},
		{3, 2, 1, 1 << 16},
		{3, 3, 5, 1 << 10},
		{5, 3, 3, 1 << 16},
		{5, 5, 4097, 1 << 16}, // one word past a PRG chunk
		{7, 4, 4095, 1 << 20},
		{10, 6, 1000, 1 << 16},
		{10, 10, 17, 1 << 8},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("n=%d/t=%d/len=%d", tc.n, tc.t, tc.length), func(t *testing.T) {
			cfg := testConfig(tc.n, tc.length)
			cfg.Threshold, cfg.Scale = tc.t, tc.scale
			o := scenario{n: tc.n, cfg: cfg, seed: uint64(tc.n*1000 + tc.length), wire: true}.run(t)
			checkSum(t, cfg, o)
			if o.res.Count != tc.n {
				t.Fatalf("count %d, want %d", o.res.Count, tc.n)
			}
		})
	}
}

func TestDropouts(t *testing.T) {
	const n, th = 7, 4 // tolerates n−t = 3 dropouts
	tests := []struct {
		name string
		drop map[Phase][]int
	}{
		{"none", nil},
		{"before AdvertiseKeys", map[Phase][]int{PhaseAdvertiseKeys: {0, 3, 6}}},
		{"after AdvertiseKeys", map[Phase][]int{PhaseShareKeys: {1, 2, 5}}},
		{"after ShareKeys", map[Phase][]int{PhaseMaskedInput: {0, 4, 6}}},
		{"after MaskedInput", map[Phase][]int{PhaseUnmasking: {2, 3, 5}}},
		{"one per phase", map[Phase][]int{PhaseAdvertiseKeys: {6}, PhaseShareKeys: {0}, PhaseMaskedInput: {3}}},
		{"spread with unmasking", map[Phase][]int{PhaseShareKeys: {1}, PhaseMaskedInput: {4}, PhaseUnmasking: {2}}},
		{"lowest indices after ShareKeys", map[Phase][]int{PhaseMaskedInput: {0, 1, 2}}},
		{"highest indices after ShareKeys", map[Phase][]int{PhaseMaskedInput: {4, 5, 6}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(n, 33)
			cfg.Threshold = th
			o := scenario{n: n, cfg: cfg, seed: 11, drop: tc.drop}.run(t)
			checkSum(t, cfg, o)
		})
	}
}

func TestTooManyDropoutsFailNamingThePhase(t *testing.T) {
	const n, th = 6, 4 // tolerates 2
	tests := []struct {
		phase Phase
		drop  map[Phase][]int
	}{
		{PhaseAdvertiseKeys, map[Phase][]int{PhaseAdvertiseKeys: {0, 1, 2}}},
		{PhaseShareKeys, map[Phase][]int{PhaseShareKeys: {3, 4, 5}}},
		{PhaseMaskedInput, map[Phase][]int{PhaseMaskedInput: {0, 2, 4}}},
		{PhaseUnmasking, map[Phase][]int{PhaseUnmasking: {1, 3, 5}}},
		{PhaseMaskedInput, map[Phase][]int{PhaseShareKeys: {0}, PhaseMaskedInput: {1, 2}}},
		{PhaseUnmasking, map[Phase][]int{PhaseAdvertiseKeys: {5}, PhaseMaskedInput: {4}, PhaseUnmasking: {3}}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.phase, tc.drop), func(t *testing.T) {
			cfg := testConfig(n, 9)
			cfg.Threshold = th
			o := scenario{n: n, cfg: cfg, seed: 5, drop: tc.drop}.run(t)
			var pe *PhaseError
			if !errors.As(o.err, &pe) || pe.Phase != tc.phase || !errors.Is(o.err, ErrTooFewClients) {
				t.Fatalf("err = %v, want a PhaseError in %s wrapping ErrTooFewClients", o.err, tc.phase)
			}
			if o.server.Phase() != PhaseFailed || !errors.Is(o.server.Err(), ErrTooFewClients) {
				t.Fatalf("server phase %s, Err %v", o.server.Phase(), o.server.Err())
			}
			if _, err := o.server.Result(); !errors.Is(err, ErrTooFewClients) {
				t.Fatalf("Result after failure: %v", err)
			}
			if err := o.server.Advance(); !errors.As(err, &pe) || pe.Phase != tc.phase {
				t.Fatalf("Advance after failure: %v", err)
			}
			if !strings.Contains(o.err.Error(), tc.phase.String()+" phase") {
				t.Fatalf("error %q does not name the phase", o.err)
			}
		})
	}
}

func TestFailoverBetweenEveryStep(t *testing.T) {
	tests := []struct {
		name string
		n    int
		drop map[Phase][]int
	}{
		{"no dropouts", 5, nil},
		{"dropouts at every phase", 9, map[Phase][]int{PhaseAdvertiseKeys: {8}, PhaseShareKeys: {0}, PhaseMaskedInput: {4}, PhaseUnmasking: {2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(tc.n, 300)
			base := scenario{n: tc.n, cfg: cfg, seed: 3, drop: tc.drop}
			want := base.run(t)
			checkSum(t, cfg, want)
			fo := base
			fo.failover, fo.wire = true, true
			got := fo.run(t)
			checkSum(t, cfg, got)
			if !slices.Equal(got.res.Sum, want.res.Sum) || !slices.Equal(got.res.Contributors, want.res.Contributors) {
				t.Fatal("a run with a failover at every step gives another result")
			}
			// The restored server's JSON is stable: marshal, restore, marshal.
			a, _ := json.Marshal(got.server)
			var again Server
			if err := json.Unmarshal(a, &again); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(&again)
			if string(a) != string(b) {
				t.Fatal("server JSON is not stable across a restore")
			}
		})
	}
}

// TestServerNeverHoldsAnUnmaskedUpdate records every vector the server
// holds and checks that none but the final sum is close to any client's
// encoded update, and that each looks uniformly random.
func TestServerNeverHoldsAnUnmaskedUpdate(t *testing.T) {
	const n, length = 6, 4096
	for _, drop := range []map[Phase][]int{nil, {PhaseMaskedInput: {1, 4}}, {PhaseShareKeys: {0}, PhaseUnmasking: {3}}} {
		t.Run(fmt.Sprint(drop), func(t *testing.T) {
			cfg := testConfig(n, length)
			type held struct {
				label string
				v     []uint32
			}
			var seen []held
			o := scenario{n: n, cfg: cfg, seed: 21, drop: drop, failover: true, observe: func(label string, v []uint32) {
				seen = append(seen, held{label, slices.Clone(v)})
			}}.run(t)
			checkSum(t, cfg, o)
			encoded := make([][]uint32, n)
			for i, u := range o.updates {
				e, err := cfg.Encode(u)
				if err != nil {
					t.Fatal(err)
				}
				encoded[i] = e
			}
			results := 0
			for _, h := range seen {
				if h.label == "result" {
					results++
					continue
				}
				for i, e := range encoded {
					// A masked vector agrees with an update on about
					// length/2^32 coordinates; anything close is a leak.
					same, near := 0, 0
					for j := range e {
						d := int32(h.v[j] - e[j])
						if d == 0 {
							same++
						}
						if d > -1<<20 && d < 1<<20 {
							near++
						}
					}
					if same > 2 || near > length/100 {
						t.Fatalf("%q: %d coordinates equal and %d near client %d's update", h.label, same, near, i)
					}
				}
				if chi := chiSquare16(h.v); chi > 60 {
					t.Fatalf("%q does not look uniform: χ² = %.1f over 16 buckets", h.label, chi)
				}
			}
			if results != 1 || len(seen) < 2*len(o.inputs) {
				t.Fatalf("observer saw %d vectors, %d results", len(seen), results)
			}
		})
	}
}

// chiSquare16 is Pearson's χ² of the top 4 bits of v against uniform
// (15 degrees of freedom: 60 is far beyond the 1e-6 quantile).
func chiSquare16(v []uint32) float64 {
	var c [16]float64
	for _, x := range v {
		c[x>>28]++
	}
	e := float64(len(v)) / 16
	var chi float64
	for _, o := range c {
		chi += (o - e) * (o - e) / e
	}
	return chi
}

func TestSparseGraph(t *testing.T) {
	tests := []struct {
		n, degree, t int
		drop         map[Phase][]int
	}{
		{10, 4, 3, nil},
		{10, 4, 3, map[Phase][]int{PhaseShareKeys: {2}, PhaseMaskedInput: {7}}},
		{12, 6, 4, map[Phase][]int{PhaseAdvertiseKeys: {0}, PhaseMaskedInput: {5}, PhaseUnmasking: {9}}},
		{5, 6, 3, nil}, // degree ≥ n−1: the full graph
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("n=%d/k=%d/t=%d/%v", tc.n, tc.degree, tc.t, tc.drop), func(t *testing.T) {
			cfg := testConfig(tc.n, 64)
			cfg.Degree, cfg.Threshold = tc.degree, tc.t
			o := scenario{n: tc.n, cfg: cfg, seed: 8, drop: tc.drop, wire: true}.run(t)
			checkSum(t, cfg, o)
		})
	}
}

func TestTopologyIsRegularAndSymmetric(t *testing.T) {
	cfg := Config{Degree: 4}
	u1 := []int{1, 2, 3, 5, 6, 8, 9, 10, 11}
	topo := newTopology(cfg, Header{JobID: "j", Round: 1}, u1)
	for _, u := range u1 {
		nb := topo.of(u)
		if len(nb) != cfg.Degree+1 || !slices.Contains(nb, u) {
			t.Fatalf("neighbourhood of %d: %v", u, nb)
		}
		for _, v := range nb {
			if !topo.adjacent(v, u) {
				t.Fatalf("%d ~ %d but not %d ~ %d", u, v, v, u)
			}
		}
	}
	again := newTopology(cfg, Header{JobID: "j", Round: 1}, u1)
	other := newTopology(cfg, Header{JobID: "j", Round: 2}, u1)
	same := true
	for _, u := range u1 {
		if !slices.Equal(topo.of(u), again.of(u)) {
			t.Fatal("graph is not deterministic")
		}
		same = same && slices.Equal(topo.of(u), other.of(u))
	}
	if same {
		t.Fatal("graph does not depend on the round")
	}
	if topo.of(4) != nil {
		t.Fatal("non-member has a neighbourhood")
	}
}

func TestEncodeRoundTripAndClipping(t *testing.T) {
	cfg := testConfig(4, 8)
	cfg.ClipRange, cfg.Scale = 2, 1000
	tests := []struct {
		name string
		in   []float32
		want []float64
	}{
		{"in range", []float32{0, 1.2345, -1.9999, 0.0004, 0.0006, -0.0005, 2, -2}, []float64{0, 1.2345, -1.9999, 0.0004, 0.0006, -0.0005, 2, -2}},
		{"clipped", []float32{3, -3, 2.5, -100, float32(math.Inf(1)), float32(math.Inf(-1)), 1e30, -1e30}, []float64{2, -2, 2, -2, 2, -2, 2, -2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := cfg.Encode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.Decode(e)
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 0.5/cfg.Scale+1e-9 {
					t.Fatalf("value %d: %v decodes to %v, want %v within %v", i, tc.in[i], got[i], tc.want[i], 1/cfg.Scale)
				}
			}
		})
	}
	if _, err := cfg.Encode([]float32{0, 0, 0, 0, 0, 0, 0, float32(math.NaN())}); !errors.Is(err, ErrNotFinite) {
		t.Fatalf("NaN: %v", err)
	}
	if _, err := cfg.Encode([]float32{1}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("wrong length: %v", err)
	}
	// The extreme sum of n clipped updates does not wrap.
	n := 4
	big := testConfig(n, 1)
	big.Scale = math.Floor(math.MaxInt32 / float64(n))
	if err := big.ValidateFor(n); err != nil {
		t.Fatal(err)
	}
	for _, x := range []float32{1, -1} {
		e, _ := big.Encode([]float32{x})
		var s uint32
		for range n {
			s += e[0]
		}
		if got := big.Decode([]uint32{s})[0]; math.Abs(got-float64(n)*float64(x)) > float64(n)/big.Scale {
			t.Fatalf("sum of %d × %v decodes to %v", n, x, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Threshold: 6, ClipRange: 1, Scale: 1 << 16, VectorLength: 10}
	tests := []struct {
		name   string
		mod    func(*Config)
		n      int
		errSub string
	}{
		{"valid", func(*Config) {}, 10, ""},
		{"valid sparse", func(c *Config) { c.Degree, c.Threshold = 6, 4 }, 100, ""},
		{"threshold 1", func(c *Config) { c.Threshold = 1 }, 1, "at least 2"},
		{"threshold above n", func(c *Config) { c.Threshold = 11 }, 10, "exceeds"},
		{"threshold half", func(c *Config) { c.Threshold = 5 }, 10, "more than half"},
		{"empty vector", func(c *Config) { c.VectorLength = 0 }, 10, "vector length"},
		{"huge vector", func(c *Config) { c.VectorLength = MaxVectorLength + 1 }, 10, "vector length"},
		{"negative clip", func(c *Config) { c.ClipRange = -1 }, 10, "clip range"},
		{"NaN clip", func(c *Config) { c.ClipRange = math.NaN() }, 10, "clip range"},
		{"zero scale", func(c *Config) { c.Scale = 0 }, 10, "scale"},
		{"infinite scale", func(c *Config) { c.Scale = math.Inf(1) }, 10, "scale"},
		{"too coarse", func(c *Config) { c.Scale = 0.1 }, 10, "rounds to 0"},
		{"sum wraps", func(c *Config) { c.Scale = 1 << 28 }, 10, "could wrap"},
		{"sum wraps with many clients", func(c *Config) { c.Threshold = 20000 / 2 }, 20000, "clients"},
		{"5000 clients fit", func(c *Config) { c.Threshold = 3000 }, 5000, ""},
		{"one client", func(*Config) {}, 1, "clients"},
		{"odd degree", func(c *Config) { c.Degree = 3 }, 10, "even"},
		{"threshold above neighbourhood", func(c *Config) { c.Degree = 4 }, 10, "neighbourhood"},
		{"sparse threshold half", func(c *Config) { c.Degree, c.Threshold = 6, 3 }, 100, "more than half"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			err := c.ValidateFor(tc.n)
			if tc.errSub == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.errSub) {
				t.Fatalf("err = %v, want ErrConfig mentioning %q", err, tc.errSub)
			}
		})
	}
	if err := (Session{JobID: "j", Clients: []string{"a", "a"}}).Validate(); !errors.Is(err, ErrConfig) {
		t.Fatalf("duplicate client: %v", err)
	}
	if _, err := NewServer(ok, sessionFor(3, 1)); !errors.Is(err, ErrConfig) {
		t.Fatalf("NewServer with t > n: %v", err)
	}
	if got := MajorityThreshold(10, 0); got != 6 {
		t.Fatalf("MajorityThreshold(10, 0) = %d", got)
	}
	if got := MajorityThreshold(100, 4); got != 3 {
		t.Fatalf("MajorityThreshold(100, 4) = %d", got)
	}
}
