package mlpspec

import (
	"errors"
	"go/build"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestNumParamsAndLayers(t *testing.T) {
	tests := []struct {
		f      int
		hidden []int
		want   int
	}{
		{3, []int{2}, 3*2 + 2 + 2*1 + 1},
		{10, []int{16, 8}, 10*16 + 16 + 16*8 + 8 + 8*1 + 1},
		{1, []int{1, 1, 1, 1, 1, 1, 1, 1}, 1 + 1 + 7*(1+1) + 1 + 1},
		{MaxFeatures, []int{8}, MaxFeatures*8 + 8 + 8 + 1},
	}
	for _, tt := range tests {
		n, err := NumParams(tt.f, tt.hidden)
		if err != nil || n != tt.want {
			t.Errorf("NumParams(%d, %v) = %d, %v; want %d", tt.f, tt.hidden, n, err, tt.want)
		}
		ls, err := Layers(tt.f, tt.hidden)
		if err != nil {
			t.Fatal(err)
		}
		off, in := 0, tt.f
		for i, l := range ls {
			out := 1
			if i < len(tt.hidden) {
				out = tt.hidden[i]
			}
			want := Layer{In: in, Out: out, Weights: off, Biases: off + in*out}
			if l != want {
				t.Errorf("layer %d = %+v, want %+v", i, l, want)
			}
			off, in = l.End(), out
		}
		if len(ls) != len(tt.hidden)+1 || off != tt.want {
			t.Errorf("%d layers ending at %d, want %d ending at %d", len(ls), off, len(tt.hidden)+1, tt.want)
		}
	}
	hidden := []int{4, 3}
	if _, err := Layers(2, hidden); err != nil || !slices.Equal(hidden, []int{4, 3}) {
		t.Errorf("Layers changed its argument to %v (%v)", hidden, err)
	}
}

func TestValidate(t *testing.T) {
	ok := []Config{
		{Hidden: []int{1}},
		{Hidden: []int{MaxWidth}, Activation: Tanh, Dropout: 0.99},
		{Hidden: make8(3), Activation: Sigmoid},
		{Hidden: []int{64, 32}, Activation: ReLU, Dropout: 0},
	}
	for _, c := range ok {
		if err := c.Validate(10); err != nil {
			t.Errorf("Validate(%+v): %v", c, err)
		}
	}
	bad := []struct {
		f   int
		c   Config
		msg string
	}{
		{0, Config{Hidden: []int{4}}, "0 features, want 1..16777216"},
		{MaxFeatures + 1, Config{Hidden: []int{4}}, "features"},
		{3, Config{}, "0 hidden layers, want 1..8"},
		{3, Config{Hidden: append(make8(1), 1)}, "9 hidden layers"},
		{3, Config{Hidden: []int{4, 0}}, "hidden layer 1 has width 0, want 1..65536"},
		{3, Config{Hidden: []int{MaxWidth + 1}}, "width 65537"},
		{3, Config{Hidden: []int{4}, Activation: "ReLU"}, `activation "ReLU", want "relu", "tanh" or "sigmoid"`},
		{3, Config{Hidden: []int{4}, Dropout: 1}, "dropout 1, want a rate in [0, 1)"},
		{3, Config{Hidden: []int{4}, Dropout: math.NaN()}, "dropout NaN"},
		{MaxFeatures, Config{Hidden: []int{MaxWidth, MaxWidth}}, "parameters, want at most 268435456"},
	}
	for _, tt := range bad {
		err := tt.c.Validate(tt.f)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Validate(%d, %+v) = %v, want ErrConfig saying %q", tt.f, tt.c, err, tt.msg)
		}
		if tt.c.Dropout == 0 && tt.c.Activation == "" {
			if _, err := NumParams(tt.f, tt.c.Hidden); !errors.Is(err, ErrConfig) {
				t.Errorf("NumParams(%d, %v) err = %v, want ErrConfig", tt.f, tt.c.Hidden, err)
			}
		}
	}
}

func make8(w int) []int { return []int{w, w, w, w, w, w, w, w} }

func TestInitialWeights(t *testing.T) {
	cfg := Config{Hidden: []int{50, 20}, Activation: ReLU}
	w, err := InitialWeights(30, cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := InitialWeights(30, cfg, 7)
	if !slices.Equal(w, again) {
		t.Fatal("InitialWeights is not deterministic")
	}
	if other, _ := InitialWeights(30, cfg, 8); slices.Equal(w, other) {
		t.Error("seeds 7 and 8 gave the same weights")
	}
	withDropout := cfg
	withDropout.Dropout = 0.5
	if d, _ := InitialWeights(30, withDropout, 7); !slices.Equal(w, d) {
		t.Error("dropout changed the initial weights")
	}
	if def, _ := InitialWeights(30, Config{Hidden: cfg.Hidden}, 7); !slices.Equal(w, def) {
		t.Error(`activation "" and "relu" gave different weights`)
	}

	check := func(w []float32, act string) {
		ls, _ := Layers(30, cfg.Hidden)
		for i, l := range ls {
			a := math.Sqrt(6 / float64(l.In+l.Out))
			if i < len(ls)-1 && act == ReLU {
				a = math.Sqrt(6 / float64(l.In))
			}
			var sq float64
			for _, v := range w[l.Weights:l.Biases] {
				if math.Abs(float64(v)) > a {
					t.Fatalf("%s layer %d: weight %v outside ±%v", act, i, v, a)
				}
				sq += float64(v) * float64(v)
			}
			// Uniform on [−a, a] has variance a²/3.
			if n := l.Biases - l.Weights; n >= 500 {
				if v := sq / float64(n); math.Abs(v-a*a/3) > 0.15*a*a/3 {
					t.Errorf("%s layer %d: variance %.4f, want about %.4f", act, i, v, a*a/3)
				}
			}
			for _, b := range w[l.Biases:l.End()] {
				if b != 0 {
					t.Fatalf("%s layer %d: bias %v, want 0", act, i, b)
				}
			}
		}
	}
	check(w, ReLU)
	tw, _ := InitialWeights(30, Config{Hidden: cfg.Hidden, Activation: Tanh}, 7)
	check(tw, Tanh)

	if _, err := InitialWeights(30, Config{}, 1); !errors.Is(err, ErrConfig) {
		t.Errorf("InitialWeights with no hidden layer: err = %v, want ErrConfig", err)
	}
}

// TestInitialWeightsAlgorithm pins the documented algorithm, which the
// coordinator relies on to recreate a job's initial model.
func TestInitialWeightsAlgorithm(t *testing.T) {
	cfg := Config{Hidden: []int{2}, Activation: Tanh}
	w, err := InitialWeights(3, cfg, 42)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewPCG(42, 0x6d6c70696e6974)
	draw := func(a float64) float32 {
		return float32(a * (2*float64(rng.Uint64()>>11)*0x1p-53 - 1))
	}
	var want []float32
	for range 3 * 2 {
		want = append(want, draw(math.Sqrt(6.0/5)))
	}
	want = append(want, 0, 0)
	for range 2 {
		want = append(want, draw(math.Sqrt(6.0/3)))
	}
	want = append(want, 0)
	if !slices.Equal(w, want) {
		t.Errorf("InitialWeights = %v, want %v", w, want)
	}
	// The same values as literals, against changes to math/rand/v2.
	pinned := []uint32{0xbe8183b4, 0x3f376663, 0xbedee6af, 0xbeafd299, 0xbecd4704, 0xbc592322, 0, 0, 0x3ed4e994, 0x3fb22e56, 0}
	for i, v := range w {
		if math.Float32bits(v) != pinned[i] {
			t.Errorf("weight %d = %#08x, pinned %#08x", i, math.Float32bits(v), pinned[i])
		}
	}
}

// TestNoHeavyImports: the coordinator imports this package, so it must
// depend on the standard library only (not gorgonia).
func TestNoHeavyImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("mlpspec imports %s; it must use the standard library only", imp)
		}
	}
}
