// Package mlpspec describes the shape of a [train.MLP] — its configuration,
// flat weight layout and initial weights — in plain Go, with no dependency
// on the training engine (gorgonia), so that the coordinator can validate
// a job's MLP, size its weight vector and draw its initial model without
// linking the trainer.
//
// # Flat weight layout
//
// An MLP over F features with hidden widths h1..hk has k+1 dense layers;
// layer l maps in_l inputs to out_l outputs, with (in_0, …, in_k) =
// (F, h1, …, hk) and (out_0, …, out_k) = (h1, …, hk, 1). The flat float32
// vector holds the layers in order 0..k; layer l occupies
// in_l·out_l + out_l consecutive values starting at its offset Off_l (Off_0
// = 0, Off_{l+1} = Off_l + in_l·out_l + out_l):
//
//	v[Off_l + i·out_l + o]          weight from input i to unit o (W_l row-major, in_l × out_l)
//	v[Off_l + in_l·out_l + o]       bias of unit o
//
// so the unit's pre-activation is z_o = Σ_i a_i·W_l[i][o] + b_l[o]. The
// length is Σ_l (in_l·out_l + out_l) = F·h1+h1 + h1·h2+h2 + … + hk·1+1.
// [Layers] gives the offsets.
//
// [train.MLP]: https://pkg.go.dev/github.com/cohort-fl/cohort/agent/train#MLP
package mlpspec

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Activation functions of the hidden layers (the output unit is always a
// sigmoid).
const (
	ReLU    = "relu"    // max(0, z); the default
	Tanh    = "tanh"    // tanh(z)
	Sigmoid = "sigmoid" // 1/(1+e^−z)
)

// Bounds on an MLP's shape. They keep every size computed from a valid
// configuration far from overflow.
const (
	MaxFeatures = 1 << 24 // input features
	MaxHidden   = 8       // hidden layers
	MaxWidth    = 1 << 16 // units in a hidden layer
	MaxParams   = 1 << 28 // length of the flat weight vector (1 GiB of float32)
)

// ErrConfig means an MLP configuration (or its feature count) is invalid.
var ErrConfig = errors.New("invalid MLP configuration")

// Config is an MLP's architecture.
type Config struct {
	// Hidden are the widths of the hidden layers, input side first: 1 to
	// MaxHidden layers of 1 to MaxWidth units each.
	Hidden []int
	// Activation of the hidden layers: ReLU, Tanh or Sigmoid; "" means
	// ReLU.
	Activation string
	// Dropout is the rate at which hidden units are zeroed during training
	// (inverted dropout: survivors are scaled by 1/(1−rate), and
	// prediction uses every unit unscaled). In [0, 1); 0 disables it.
	Dropout float64
}

// Validate reports the first problem with c for an input of features
// columns, wrapping ErrConfig.
func (c Config) Validate(features int) error {
	if features < 1 || features > MaxFeatures {
		return fmt.Errorf("%w: %d features, want 1..%d", ErrConfig, features, MaxFeatures)
	}
	if len(c.Hidden) < 1 || len(c.Hidden) > MaxHidden {
		return fmt.Errorf("%w: %d hidden layers, want 1..%d", ErrConfig, len(c.Hidden), MaxHidden)
	}
	for i, h := range c.Hidden {
		if h < 1 || h > MaxWidth {
			return fmt.Errorf("%w: hidden layer %d has width %d, want 1..%d", ErrConfig, i, h, MaxWidth)
		}
	}
	switch c.Activation {
	case "", ReLU, Tanh, Sigmoid:
	default:
		return fmt.Errorf("%w: activation %q, want %q, %q or %q", ErrConfig, c.Activation, ReLU, Tanh, Sigmoid)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) { // also catches NaN
		return fmt.Errorf("%w: dropout %v, want a rate in [0, 1)", ErrConfig, c.Dropout)
	}
	if n := numParams(features, c.Hidden); n > MaxParams {
		return fmt.Errorf("%w: %d parameters, want at most %d", ErrConfig, n, MaxParams)
	}
	return nil
}

// numParams is the flat length in 64-bit arithmetic: with the per-value
// bounds checked by Validate it cannot overflow (each term is below 2^41).
func numParams(features int, hidden []int) int64 {
	var n int64
	in := int64(features)
	for _, h := range hidden {
		out := int64(h)
		n += in*out + out
		in = out
	}
	return n + in + 1
}

// NumParams is the length of the flat weight vector of an MLP over features
// inputs with the given hidden widths: Σ_l (in_l·out_l + out_l), the last
// layer having one output. It fails if the shape is not valid (see
// [Config.Validate]).
func NumParams(features int, hidden []int) (int, error) {
	if err := (Config{Hidden: hidden}).Validate(features); err != nil {
		return 0, err
	}
	return int(numParams(features, hidden)), nil
}

// Layer is the place of one dense layer in the flat weight vector.
type Layer struct {
	In, Out int // input and output widths
	// Weights is the offset of the In×Out row-major weight matrix;
	// Biases = Weights + In·Out is the offset of the Out biases.
	Weights, Biases int
}

// End is the offset just past the layer's biases.
func (l Layer) End() int { return l.Biases + l.Out }

// Layers returns the layers of a valid MLP shape, input side first; the
// last has Out = 1 and ends at NumParams. It fails like NumParams.
func Layers(features int, hidden []int) ([]Layer, error) {
	if err := (Config{Hidden: hidden}).Validate(features); err != nil {
		return nil, err
	}
	ls := make([]Layer, 0, len(hidden)+1)
	off, in := 0, features
	for _, out := range append(hidden[:len(hidden):len(hidden)], 1) {
		ls = append(ls, Layer{In: in, Out: out, Weights: off, Biases: off + in*out})
		off += in*out + out
		in = out
	}
	return ls, nil
}

// initStream is the second PCG seed word of InitialWeights ("mlpinit").
const initStream = 0x6d6c70696e6974

// InitialWeights returns the initial flat weights of an MLP: a pure,
// deterministic function of (features, cfg.Hidden, cfg.Activation, seed),
// the same on every platform. Biases are 0. The weights of layer l are
// drawn uniformly from [−a_l, a_l) with
//
//	a_l = √(6 / in_l)             He (Kaiming) uniform, hidden layers with ReLU
//	a_l = √(6 / (in_l + out_l))   Glorot (Xavier) uniform, every other layer
//
// (Glorot for the sigmoid output and for tanh or sigmoid hidden layers).
//
// The draws come from math/rand/v2's PCG seeded with (seed,
// 0x6d6c70696e6974), in flat order: each weight takes one Uint64 x and is
// float32(a_l·(2u−1)) with u = (x>>11)·2⁻⁵³. cfg.Dropout does not affect
// the result. It fails with ErrConfig if cfg is not valid for features.
func InitialWeights(features int, cfg Config, seed uint64) ([]float32, error) {
	if err := cfg.Validate(features); err != nil {
		return nil, err
	}
	layers, err := Layers(features, cfg.Hidden)
	if err != nil {
		return nil, err
	}
	w := make([]float32, layers[len(layers)-1].End())
	rng := rand.NewPCG(seed, initStream)
	for i, l := range layers {
		a := math.Sqrt(6 / float64(l.In+l.Out))
		if i < len(layers)-1 && (cfg.Activation == "" || cfg.Activation == ReLU) {
			a = math.Sqrt(6 / float64(l.In))
		}
		for j := range w[l.Weights:l.Biases] {
			u := float64(rng.Uint64()>>11) * 0x1p-53
			w[l.Weights+j] = float32(a * (2*u - 1))
		}
	}
	return w, nil
}
