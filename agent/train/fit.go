package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
)

// dropoutStream is the second PCG seed word of the dropout masks
// ("dropout"); Options.Seed is the first.
const dropoutStream = 0x64726f706f7574

// objective holds what one Train call adds to the data term, fixed for the
// call.
type objective struct {
	halfL2    float64   // L2/2
	halfMu    float64   // ProxMu/2
	posWeight float64   // 1 when unweighted
	start     []float64 // θ_start, the weights when the call began

	dropout float64    // an MLP's dropout rate (0: none)
	dropRNG *rand.Rand // draws the dropout masks, batch after batch
}

func newObjective(opts Options, start []float64, dropout float64) *objective {
	obj := &objective{
		halfL2:    opts.L2 / 2,
		halfMu:    opts.ProxMu / 2,
		posWeight: opts.posWeight(),
		start:     start,
		dropout:   dropout,
	}
	if dropout > 0 {
		obj.dropRNG = rand.New(rand.NewPCG(opts.Seed, dropoutStream)) // #nosec G404 -- seeded dropout stream: training must be reproducible from the job's seed; not a secret
	}
	return obj
}

// weighted reports whether the data term weighs the positive class.
func (o *objective) weighted() bool { return o.posWeight != 1 }

// prox reports whether the objective has the FedProx term.
func (o *objective) prox() bool { return o.halfMu != 0 }

// batchGraph is a compiled gorgonia program computing the objective and
// its gradient on batches of a fixed row count.
type batchGraph interface {
	// load copies the rows idx of X and y into the graph's inputs (and
	// draws the batch's dropout masks).
	load(X, y []float32, idx []int, obj *objective)
	// run evaluates the objective of the loaded batch at params and
	// writes its gradient into grad (both in the flat layout).
	run(params, grad []float64, obj *objective) (float64, error)
}

// optimizer updates params in place from the gradient of one batch.
type optimizer interface {
	update(params, grad []float64)
}

func newOptimizer(opts Options, n int) optimizer {
	if opts.adam() {
		b1, b2, eps := opts.adamParams()
		return &adam{eta: opts.LearningRate, b1: b1, b2: b2, eps: eps, m: make([]float64, n), v: make([]float64, n)}
	}
	return sgd{negEta: -opts.LearningRate}
}

// sgd is θ ← θ + (−η)·g, computed exactly as gorgonia's VanillaSolver does
// (the product rounded on its own, then added), which LogReg used before
// the optimizer moved here.
type sgd struct{ negEta float64 }

func (s sgd) update(params, grad []float64) {
	for i, g := range grad {
		params[i] += float64(g * s.negEta) // the conversion forbids a fused multiply-add
	}
}

// adam is Adam with bias correction; see OptimizerAdam.
type adam struct {
	eta, b1, b2, eps float64
	m, v             []float64
	t                int
}

func (a *adam) update(params, grad []float64) {
	a.t++
	c1 := 1 - math.Pow(a.b1, float64(a.t))
	c2 := 1 - math.Pow(a.b2, float64(a.t))
	for i, g := range grad {
		a.m[i] = a.b1*a.m[i] + (1-a.b1)*g
		a.v[i] = a.b2*a.v[i] + (1-a.b2)*g*g
		params[i] -= a.eta * (a.m[i] / c1) / (math.Sqrt(a.v[i]/c2) + a.eps)
	}
}

// fit runs opts.Epochs epochs of mini-batch descent on params (the flat
// weights, updated in place) and returns the row-weighted mean objective of
// the last epoch's batches, each measured before its step. graph returns
// the compiled graph for a batch row count; drop discards one whose state
// is unknown after a failed run. ctx is checked before every batch.
func fit(ctx context.Context, X, y []float32, rows int, opts Options, params []float64, obj *objective,
	graph func(rows int) (batchGraph, error), drop func(rows int)) (loss float64, err error) {
	bs := opts.BatchSize
	if bs == 0 || bs > rows {
		bs = rows
	}
	full, err := graph(bs)
	if err != nil {
		return 0, err
	}
	var rest batchGraph
	if r := rows % bs; r != 0 {
		if rest, err = graph(r); err != nil {
			return 0, err
		}
	}

	grad := make([]float64, len(params))
	opt := newOptimizer(opts, len(params))
	order := make([]int, rows)
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(opts.Seed, shuffleStream)) // #nosec G404 -- seeded shuffling: training must be reproducible from the job's seed; not a secret

	for range opts.Epochs {
		if bs < rows {
			rng.Shuffle(rows, func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		var sum float64
		for start := 0; start < rows; start += bs {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			end := min(start+bs, rows)
			g := full
			if end-start != bs {
				g = rest
			}
			g.load(X, y, order[start:end], obj)
			c, err := g.run(params, grad, obj)
			if err != nil {
				drop(end - start)
				return 0, err
			}
			if math.IsNaN(c) || math.IsInf(c, 0) {
				return 0, fmt.Errorf("%w: loss is %v (diverged; lower the learning rate)", ErrNotFinite, c)
			}
			opt.update(params, grad)
			for i, v := range params {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return 0, fmt.Errorf("%w: weight %d is %v (diverged; lower the learning rate)", ErrNotFinite, i, v)
				}
			}
			sum += c * float64(end-start)
		}
		loss = sum / float64(rows)
	}
	return loss, nil
}

// toFloat32 converts trained weights into dst, failing (with dst
// unchanged) if one overflows float32.
func toFloat32(dst []float32, params []float64) error {
	for i, p := range params {
		if math.IsInf(float64(float32(p)), 0) {
			return fmt.Errorf("%w: weight %d overflows float32 (diverged; lower the learning rate)", ErrNotFinite, i)
		}
	}
	for i, p := range params {
		dst[i] = float32(p)
	}
	return nil
}

// toFloat64 returns w widened to float64.
func toFloat64(w []float32) []float64 {
	p := make([]float64, len(w))
	for i, v := range w {
		p[i] = float64(v)
	}
	return p
}
