package train

import (
	"math"
	"math/rand/v2"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
)

// This file holds plain-Go float64 references for the training objective
// (see Options), independent of gorgonia, that the tests compare the
// graphs against.

// softplus is ln(1+e^z), finite for large |z|.
func softplus(z float64) float64 {
	if z > 0 {
		return z + math.Log1p(math.Exp(-z))
	}
	return math.Log1p(math.Exp(z))
}

// refForward returns the logit of one row x through layers (the flat layout
// of package mlpspec; a LogReg is the single layer d → 1), applying act to
// the hidden layers and multiplying hidden unit o of layer l by
// masks[l][o] when masks is not nil.
func refForward(layers []mlpspec.Layer, act string, params []float64, x []float64, masks [][]float64) float64 {
	a := x
	for li, l := range layers {
		z := make([]float64, l.Out)
		for o := range z {
			z[o] = params[l.Biases+o]
			for i := range l.In {
				z[o] += a[i] * params[l.Weights+i*l.Out+o]
			}
		}
		if li == len(layers)-1 {
			return z[0]
		}
		for o := range z {
			z[o] = activate(act, z[o])
			if masks != nil {
				z[o] *= masks[li][o]
			}
		}
		a = z
	}
	panic("no layers")
}

// refObjective is the objective of Options at params on rows of X and y:
// the (class-weighted) mean cross-entropy plus L2/2 over the weight
// matrices plus ProxMu/2·‖params − start‖². masks, if not nil, are the
// dropout masks of a loaded mlpGraph: masks[l] is rows × out_l.
func refObjective(layers []mlpspec.Layer, act string, params []float64, X, y []float32, rows int,
	opts Options, start []float64, masks [][]float64) float64 {
	d := layers[0].In
	p := opts.posWeight()
	var data float64
	for r := range rows {
		x := make([]float64, d)
		for j := range d {
			x[j] = float64(X[r*d+j])
		}
		var rowMasks [][]float64
		for li, m := range masks {
			w := layers[li].Out
			rowMasks = append(rowMasks, m[r*w:(r+1)*w])
		}
		z := refForward(layers, act, params, x, rowMasks)
		yi := float64(y[r])
		data += p*yi*softplus(-z) + (1-yi)*softplus(z)
	}
	obj := data / float64(rows)
	var sq, prox float64
	for _, l := range layers {
		for _, w := range params[l.Weights:l.Biases] {
			sq += w * w
		}
	}
	for i, w := range params {
		prox += (w - start[i]) * (w - start[i])
	}
	return obj + opts.L2/2*sq + opts.ProxMu/2*prox
}

// logRegLayers is LogReg's flat layout as a single layer.
func logRegLayers(d int) []mlpspec.Layer {
	return []mlpspec.Layer{{In: d, Out: 1, Weights: 0, Biases: d}}
}

// handGrad is the analytic gradient of the LogReg objective, and the
// objective, in plain Go float64.
func handGrad(w []float64, X, y []float32, rows int, opts Options, start []float64) (grad []float64, loss float64) {
	d := len(w) - 1
	p := opts.posWeight()
	grad = make([]float64, d+1)
	for i := range rows {
		z := w[d]
		for j := range d {
			z += w[j] * float64(X[i*d+j])
		}
		yi := float64(y[i])
		loss += p*yi*softplus(-z) + (1-yi)*softplus(z)
		// d/dz [p·y·softplus(−z) + (1−y)·softplus(z)]
		r := -p*yi*sigmoid(-z) + (1-yi)*sigmoid(z)
		for j := range d {
			grad[j] += r * float64(X[i*d+j])
		}
		grad[d] += r
	}
	loss /= float64(rows)
	for j := range grad {
		grad[j] /= float64(rows)
		if j < d {
			grad[j] += opts.L2 * w[j]
			loss += opts.L2 / 2 * w[j] * w[j]
		}
		grad[j] += opts.ProxMu * (w[j] - start[j])
		loss += opts.ProxMu / 2 * (w[j] - start[j]) * (w[j] - start[j])
	}
	return grad, loss
}

// handTrain runs opts.Epochs full-batch steps of opts' optimizer on a
// LogReg from w0 in plain Go, returning the weights and the last step's
// loss (measured before the step).
func handTrain(w0 []float32, X, y []float32, rows int, opts Options) ([]float64, float64) {
	w := toFloat64(w0)
	start := toFloat64(w0)
	b1, b2, eps := opts.adamParams()
	m := make([]float64, len(w))
	v := make([]float64, len(w))
	var loss float64
	for t := 1; t <= opts.Epochs; t++ {
		var g []float64
		g, loss = handGrad(w, X, y, rows, opts, start)
		for j := range w {
			if !opts.adam() {
				w[j] -= opts.LearningRate * g[j]
				continue
			}
			m[j] = b1*m[j] + (1-b1)*g[j]
			v[j] = b2*v[j] + (1-b2)*g[j]*g[j]
			mh := m[j] / (1 - math.Pow(b1, float64(t)))
			vh := v[j] / (1 - math.Pow(b2, float64(t)))
			w[j] -= opts.LearningRate * mh / (math.Sqrt(vh) + eps)
		}
	}
	return w, loss
}

// xorData draws rows of two features uniform on [−1, 1] with label 1 when
// they have the same sign: a problem no linear model can rank (its best
// AUROC is about 0.5), plus extra noise features.
func xorData(seed uint64, rows, noise int) (X, y []float32) {
	rng := rand.New(rand.NewPCG(seed, 3))
	d := 2 + noise
	X = make([]float32, rows*d)
	y = make([]float32, rows)
	for i := range rows {
		for j := range d {
			X[i*d+j] = float32(2*rng.Float64() - 1)
		}
		if X[i*d]*X[i*d+1] > 0 {
			y[i] = 1
		}
	}
	return X, y
}

// dist is the Euclidean distance between two weight vectors.
func dist(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

// mean is the mean of v.
func mean(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}
