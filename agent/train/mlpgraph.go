package train

import (
	"fmt"
	"math"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
)

// mlpKey selects a compiled MLP graph: the batch row count and which
// optional terms of the objective it has.
type mlpKey struct {
	rows     int
	weighted bool // PosWeight ≠ 1
	prox     bool // ProxMu > 0
}

// mlpGraph is the compiled gorgonia program for one MLP batch size and set
// of terms. For layers l = 0..k (k hidden, then the output unit):
//
//	A_0     = X                                        rows × F
//	Z_l     = A_l·W_l + 1·b_l                          rows × out_l (1: rows × 1 ones; b_l: 1 × out_l)
//	A_{l+1} = act(Z_l) ∘ M_l                           hidden layers only; M_l the dropout mask
//	z       = Z_k                                      rows × 1, the logits
//	cost    = mean(softplus(z) − y∘z) + λ/2·Σ_l ΣW_l² [+ μ/2·Σ_l (Σ(W_l−W_l⁰)² + Σ(b_l−b_l⁰)²)]
//
// with the class-weighted data term of lrGraph when key.weighted. W_l and
// b_l are bound to dual values, so a run leaves ∂cost/∂W_l and ∂cost/∂b_l
// on them; W_l's row-major data and b_l's are exactly the layer's two
// slices of the flat layout.
type mlpGraph struct {
	key    mlpKey
	layers []mlpspec.Layer
	x      []float64   // backing of X: rows × F
	y      []float64   // backing of y: rows × 1 (p·y when weighted)
	s      []float64   // row weights (weighted only)
	masks  [][]float64 // dropout masks per hidden layer, rows × out_l (dropout only)
	start  [][2][]float64
	cost   gorgonia.Value
	vm     gorgonia.VM

	w, b []*gorgonia.Node // per layer
	l2   *gorgonia.Node   // λ/2
	mu   *gorgonia.Node   // μ/2 (prox only)
}

// newMLPGraph builds and compiles the graph of an MLP with the given
// layers, activation and dropout rate for key.
func newMLPGraph(layers []mlpspec.Layer, act string, dropout float64, key mlpKey) (*mlpGraph, error) {
	// gorgonia.Rectify numbers its node group from an unguarded global
	// counter (internal/encoding.NewGroup): two graphs built at once, as
	// by two agents in one process, race on it.
	buildMu.Lock()
	defer buildMu.Unlock()
	rows := key.rows
	for _, l := range layers {
		if rows > math.MaxInt/max(l.In, l.Out) {
			return nil, fmt.Errorf("%w: batch of %d rows × %d units is too large", ErrShape, rows, max(l.In, l.Out))
		}
	}
	mg := &mlpGraph{key: key, layers: layers, x: make([]float64, rows*layers[0].In), y: make([]float64, rows)}
	ones := make([]float64, rows)
	for i := range ones {
		ones[i] = 1
	}

	g := gorgonia.NewGraph()
	x := matrixNode(g, "X", rows, layers[0].In, mg.x)
	y := matrixNode(g, "y", rows, 1, mg.y)
	one := matrixNode(g, "ones", rows, 1, ones)
	mg.l2 = gorgonia.NewScalar(g, tensor.Float64, gorgonia.WithName("halfL2"), gorgonia.WithValue(0.0))
	var s *gorgonia.Node
	if key.weighted {
		mg.s = make([]float64, rows)
		s = matrixNode(g, "s", rows, 1, mg.s)
	}
	var w0, b0 []*gorgonia.Node
	if key.prox {
		mg.mu = gorgonia.NewScalar(g, tensor.Float64, gorgonia.WithName("halfMu"), gorgonia.WithValue(0.0))
	}
	var masks []*gorgonia.Node
	for i, l := range layers {
		mg.w = append(mg.w, matrixNode(g, fmt.Sprintf("W%d", i), l.In, l.Out, make([]float64, l.In*l.Out)))
		mg.b = append(mg.b, matrixNode(g, fmt.Sprintf("b%d", i), 1, l.Out, make([]float64, l.Out)))
		if key.prox {
			ws, bs := make([]float64, l.In*l.Out), make([]float64, l.Out)
			mg.start = append(mg.start, [2][]float64{ws, bs})
			w0 = append(w0, matrixNode(g, fmt.Sprintf("W%d_0", i), l.In, l.Out, ws))
			b0 = append(b0, matrixNode(g, fmt.Sprintf("b%d_0", i), 1, l.Out, bs))
		}
		if dropout > 0 && i < len(layers)-1 {
			m := make([]float64, rows*l.Out)
			mg.masks = append(mg.masks, m)
			masks = append(masks, matrixNode(g, fmt.Sprintf("M%d", i), rows, l.Out, m))
		}
	}

	err := func() (err error) {
		defer recoverBuild(&err)
		b := builder{}
		a := x
		var z *gorgonia.Node
		for i := range layers {
			xw := b.op(gorgonia.Mul(a, mg.w[i]))
			bias := b.op(gorgonia.Mul(one, mg.b[i]))
			z = b.op(gorgonia.Add(xw, bias))
			if i == len(layers)-1 {
				break
			}
			switch act {
			case mlpspec.Tanh:
				a = b.op(gorgonia.Tanh(z))
			case mlpspec.Sigmoid:
				a = b.op(gorgonia.Sigmoid(z))
			default:
				a = b.op(gorgonia.Rectify(z))
			}
			if masks != nil {
				a = b.op(gorgonia.HadamardProd(a, masks[i]))
			}
		}
		sp := b.op(gorgonia.Softplus(z))
		if key.weighted {
			sp = b.op(gorgonia.HadamardProd(s, sp))
		}
		yz := b.op(gorgonia.HadamardProd(y, z))
		nll := b.op(gorgonia.Sub(sp, yz))
		cost := b.op(gorgonia.Mean(nll))
		var ss *gorgonia.Node
		for _, w := range mg.w {
			sq := b.op(gorgonia.Square(w))
			sum := b.op(gorgonia.Sum(sq))
			if ss == nil {
				ss = sum
			} else {
				ss = b.op(gorgonia.Add(ss, sum))
			}
		}
		pen := b.op(gorgonia.Mul(mg.l2, ss))
		cost = b.op(gorgonia.Add(cost, pen))
		if key.prox {
			cost = b.op(gorgonia.Add(cost, b.proxTerm(mg.mu, append(mg.w[:len(mg.w):len(mg.w)], mg.b...), append(w0, b0...))))
		}
		if b.err != nil {
			return b.err
		}
		gorgonia.Read(cost, &mg.cost)
		_, err = gorgonia.Grad(cost, mg.params()...)
		return err
	}()
	if err != nil {
		return nil, fmt.Errorf("%w: build graph: %w", ErrInternal, err)
	}
	mg.vm = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(mg.params()...))
	releasable(mg.vm)
	return mg, nil
}

// params are the parameter nodes, W_0, b_0, W_1, b_1, ….
func (mg *mlpGraph) params() gorgonia.Nodes {
	ns := make(gorgonia.Nodes, 0, 2*len(mg.w))
	for i := range mg.w {
		ns = append(ns, mg.w[i], mg.b[i])
	}
	return ns
}

// load copies the rows idx of X and y into the graph's inputs and draws
// the batch's dropout masks (see fillMasks).
func (mg *mlpGraph) load(X, y []float32, idx []int, obj *objective) {
	d := mg.layers[0].In
	for k, i := range idx {
		dst := mg.x[k*d : k*d+d]
		for j, v := range X[i*d : i*d+d] {
			dst[j] = float64(v)
		}
		mg.y[k] = float64(y[i])
	}
	if mg.key.weighted {
		loadWeighted(mg.y, mg.s, obj.posWeight)
	}
	fillMasks(mg.masks, obj)
}

// fillMasks draws inverted-dropout masks: each entry, layer by layer and
// row-major within a layer, is 0 with probability obj.dropout and
// 1/(1−dropout) otherwise, from obj.dropRNG.
func fillMasks(masks [][]float64, obj *objective) {
	if len(masks) == 0 {
		return
	}
	keep := 1 / (1 - obj.dropout)
	for _, m := range masks {
		for i := range m {
			if obj.dropRNG.Float64() < obj.dropout {
				m[i] = 0
			} else {
				m[i] = keep
			}
		}
	}
}

// run evaluates the objective and its gradient at params (flat layout).
func (mg *mlpGraph) run(params, grad []float64, obj *objective) (float64, error) {
	for i, l := range mg.layers {
		if err := setNode(mg.w[i], params[l.Weights:l.Biases]); err != nil {
			return 0, err
		}
		if err := setNode(mg.b[i], params[l.Biases:l.End()]); err != nil {
			return 0, err
		}
		if mg.key.prox {
			copy(mg.start[i][0], obj.start[l.Weights:l.Biases])
			copy(mg.start[i][1], obj.start[l.Biases:l.End()])
		}
	}
	if err := gorgonia.Let(mg.l2, obj.halfL2); err != nil {
		return 0, fmt.Errorf("%w: bind penalty: %w", ErrInternal, err)
	}
	if mg.key.prox {
		if err := gorgonia.Let(mg.mu, obj.halfMu); err != nil {
			return 0, fmt.Errorf("%w: bind proximal weight: %w", ErrInternal, err)
		}
	}
	defer mg.vm.Reset()
	if err := mg.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("%w: run graph: %w", ErrInternal, err)
	}
	for i, l := range mg.layers {
		if err := takeGrad(grad[l.Weights:l.Biases], mg.w[i]); err != nil {
			return 0, err
		}
		if err := takeGrad(grad[l.Biases:l.End()], mg.b[i]); err != nil {
			return 0, err
		}
	}
	return costValue(mg.cost)
}
