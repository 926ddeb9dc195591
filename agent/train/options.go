package train

import (
	"errors"
	"fmt"
	"math"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
)

// Errors returned by this package. Test for them with errors.Is.
var (
	// ErrOptions means Options failed validation.
	ErrOptions = errors.New("invalid training options")
	// ErrShape means a matrix, vector or weight slice has the wrong length.
	ErrShape = errors.New("shape mismatch")
	// ErrNoRows means a call was given no rows (rows <= 0).
	ErrNoRows = errors.New("no rows")
	// ErrNotFinite means an input value is NaN or infinite.
	ErrNotFinite = errors.New("value is not finite")
	// ErrLabel means a label lies outside [0, 1] (for metrics: is not 0 or 1).
	ErrLabel = errors.New("label out of range")
	// ErrOneClass means a metric needs both classes and only one is present.
	ErrOneClass = errors.New("only one class present")
	// ErrScore means a score that must be a probability lies outside
	// [0, 1].
	ErrScore = errors.New("score is not a probability")
	// ErrInternal means the training engine failed (including a recovered
	// panic inside gorgonia). The model is left unchanged.
	ErrInternal = errors.New("training engine failure")
	// ErrConfig means an MLP configuration is invalid (the same error as
	// mlpspec.ErrConfig).
	ErrConfig = mlpspec.ErrConfig
)

// Optimizers for Options.Optimizer.
const (
	// OptimizerSGD is plain (mini-batch) gradient descent: θ ← θ − η·g.
	OptimizerSGD = "sgd"
	// OptimizerAdam is Adam (Kingma & Ba, 2015) with bias correction:
	//
	//	m ← β1·m + (1−β1)·g        v ← β2·v + (1−β2)·g²
	//	θ ← θ − η·m̂ / (√v̂ + ε)    m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)
	//
	// where t counts the steps of the current Train call: the moments start
	// at zero on every call, since each federated round starts from the
	// global model.
	OptimizerAdam = "adam"
)

// Adam defaults, used where Options leaves AdamBeta1, AdamBeta2 or AdamEps
// at zero.
const (
	DefaultAdamBeta1 = 0.9
	DefaultAdamBeta2 = 0.999
	DefaultAdamEps   = 1e-8
)

// MaxPosWeight bounds Options.PosWeight.
const MaxPosWeight = 1e6

// Options controls one call to Trainer.Train. The zero value of every field
// added after Epochs, LearningRate, BatchSize, Seed and L2 keeps the
// original behaviour: plain SGD on the unweighted mean cross-entropy.
//
// The objective minimized over the weights θ, for a batch B of n rows with
// logits z_i and labels y_i, is
//
//	J(θ) = (1/n)·Σ_{i∈B} [ p·y_i·softplus(−z_i) + (1−y_i)·softplus(z_i) ]
//	     + L2/2·‖θ_coef‖² + ProxMu/2·‖θ − θ_start‖²
//
// with p = PosWeight (1 if 0), softplus(z) = ln(1+e^z) (so the bracket is
// the cross-entropy −[p·y·ln σ(z) + (1−y)·ln(1−σ(z))]), θ_coef the
// coefficients (every weight but the biases) and θ_start the weights at the
// start of the Train call.
type Options struct {
	// Epochs is the number of passes over the data; at least 1.
	Epochs int
	// LearningRate is the gradient-descent step size; positive and finite.
	LearningRate float64
	// BatchSize is the number of rows per gradient step. 0, or any value
	// at least the number of rows, means full-batch gradient descent.
	BatchSize int
	// Seed fixes the order in which mini-batches are drawn (and an MLP's
	// dropout masks): the same seed, data, options and starting weights
	// give bit-for-bit the same result.
	Seed uint64
	// L2 is the ridge penalty λ: the objective gains λ/2·‖w‖² over the
	// coefficients (never the biases). 0 disables it; must be finite and
	// non-negative.
	L2 float64

	// Optimizer is OptimizerSGD or OptimizerAdam; "" means OptimizerSGD.
	Optimizer string
	// AdamBeta1, AdamBeta2 and AdamEps are Adam's β1, β2 (each in [0, 1))
	// and ε (positive, below 1); 0 means DefaultAdamBeta1,
	// DefaultAdamBeta2 and DefaultAdamEps. They are ignored by SGD. L2
	// stays a term of the objective under Adam (coupled weight decay, as
	// in PyTorch's Adam), not decoupled (AdamW).
	AdamBeta1, AdamBeta2, AdamEps float64

	// PosWeight multiplies the loss of the positive class (the y·ln σ(z)
	// term), for rare outcomes: about #negatives/#positives balances the
	// classes. It is PyTorch's BCEWithLogitsLoss pos_weight; the batch loss
	// stays a mean over rows (divided by n, not by the total weight), so
	// gradients of shards still average, by row count, to the pooled
	// gradient. 0 or 1 means unweighted; otherwise positive, at most
	// MaxPosWeight.
	PosWeight float64

	// ProxMu is FedProx's μ: the objective gains μ/2·‖θ − θ_start‖² over
	// every weight (biases included), θ_start being the weights at the
	// start of the Train call (the global model of the round). 0 disables
	// it (and gives bit-for-bit the result without the term); must be
	// finite and non-negative.
	ProxMu float64
}

// DefaultOptions returns options that suit small tabular clinical models:
// 5 epochs of mini-batch SGD (batch 32, learning rate 0.1), no penalty.
func DefaultOptions() Options {
	return Options{Epochs: 5, LearningRate: 0.1, BatchSize: 32, Seed: 1}
}

// maxEpochs bounds Epochs to catch unit mix-ups (such as passing steps).
const maxEpochs = 1_000_000

// Validate reports the first problem with o, wrapping ErrOptions.
func (o Options) Validate() error {
	switch {
	case o.Epochs < 1:
		return fmt.Errorf("%w: epochs %d, want at least 1", ErrOptions, o.Epochs)
	case o.Epochs > maxEpochs:
		return fmt.Errorf("%w: epochs %d, want at most %d", ErrOptions, o.Epochs, maxEpochs)
	case !(o.LearningRate > 0) || math.IsInf(o.LearningRate, 0):
		return fmt.Errorf("%w: learning rate %v, want positive and finite", ErrOptions, o.LearningRate)
	case o.BatchSize < 0:
		return fmt.Errorf("%w: batch size %d, want 0 (full batch) or positive", ErrOptions, o.BatchSize)
	case !(o.L2 >= 0) || math.IsInf(o.L2, 0):
		return fmt.Errorf("%w: L2 %v, want non-negative and finite", ErrOptions, o.L2)
	case o.Optimizer != "" && o.Optimizer != OptimizerSGD && o.Optimizer != OptimizerAdam:
		return fmt.Errorf("%w: optimizer %q, want %q or %q", ErrOptions, o.Optimizer, OptimizerSGD, OptimizerAdam)
	case !(o.AdamBeta1 >= 0 && o.AdamBeta1 < 1):
		return fmt.Errorf("%w: Adam beta1 %v, want a value in [0, 1) (0 means %v)", ErrOptions, o.AdamBeta1, DefaultAdamBeta1)
	case !(o.AdamBeta2 >= 0 && o.AdamBeta2 < 1):
		return fmt.Errorf("%w: Adam beta2 %v, want a value in [0, 1) (0 means %v)", ErrOptions, o.AdamBeta2, DefaultAdamBeta2)
	case !(o.AdamEps >= 0 && o.AdamEps < 1):
		return fmt.Errorf("%w: Adam epsilon %v, want a value in [0, 1) (0 means %v)", ErrOptions, o.AdamEps, DefaultAdamEps)
	case !(o.PosWeight >= 0 && o.PosWeight <= MaxPosWeight):
		return fmt.Errorf("%w: positive-class weight %v, want 0 (unweighted) or a value in (0, %v]", ErrOptions, o.PosWeight, float64(MaxPosWeight))
	case !(o.ProxMu >= 0) || math.IsInf(o.ProxMu, 0):
		return fmt.Errorf("%w: FedProx mu %v, want non-negative and finite", ErrOptions, o.ProxMu)
	}
	return nil
}

// adam reports whether o selects Adam.
func (o Options) adam() bool { return o.Optimizer == OptimizerAdam }

// posWeight is the effective positive-class weight, 1 when unweighted.
func (o Options) posWeight() float64 {
	if o.PosWeight == 0 {
		return 1
	}
	return o.PosWeight
}

// adamParams returns β1, β2 and ε with the defaults filled in.
func (o Options) adamParams() (b1, b2, eps float64) {
	b1, b2, eps = o.AdamBeta1, o.AdamBeta2, o.AdamEps
	if b1 == 0 {
		b1 = DefaultAdamBeta1
	}
	if b2 == 0 {
		b2 = DefaultAdamBeta2
	}
	if eps == 0 {
		eps = DefaultAdamEps
	}
	return b1, b2, eps
}
