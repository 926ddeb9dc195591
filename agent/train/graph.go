package train

import (
	"fmt"
	"math"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// lrKey selects a compiled logistic-regression graph: the batch row count
// and which optional terms of the objective it has.
type lrKey struct {
	rows     int
	weighted bool // PosWeight ≠ 1
	prox     bool // ProxMu > 0
}

// lrGraph is the compiled gorgonia program for one logistic-regression
// batch size and set of terms:
//
//	z    = Xa·θ                       (Xa = [X | 1], θ = [w; b])
//	cost = mean(softplus(z) − y∘z) + λ/2·Σ(θ∘mask)²
//
// softplus(z) − y·z is the binary cross-entropy of σ(z) against y in a
// form that stays finite for large |z|; mask zeroes the bias so the penalty
// covers coefficients only. The graph holds the symbolic gradient ∂cost/∂θ.
//
// With a positive-class weight p (key.weighted) the data term is
// mean(s∘softplus(z) − y'∘z) with s = (1−y) + p·y and y' = p·y, which is
// p·y·softplus(−z) + (1−y)·softplus(z) rewritten with softplus(−z) =
// softplus(z) − z. With FedProx (key.prox) the cost gains
// μ/2·Σ(θ − θ_start)². Without either the graph is exactly the original
// one, so results are bit-for-bit those of the original LogReg.
type lrGraph struct {
	key  lrKey
	d    int
	xa   []float64 // backing of Xa: rows × (d+1), last column fixed at 1
	y    []float64 // backing of y (p·y when weighted)
	s    []float64 // backing of s, the row weights (weighted only)
	th0  []float64 // backing of θ_start (prox only)
	cost gorgonia.Value
	vm   gorgonia.VM

	theta *gorgonia.Node
	l2    *gorgonia.Node // λ/2
	mu    *gorgonia.Node // μ/2 (prox only)
}

// newLRGraph builds and compiles the graph for d features and key.
func newLRGraph(d int, key lrKey) (*lrGraph, error) {
	rows := key.rows
	if rows > math.MaxInt/(d+1) {
		return nil, fmt.Errorf("%w: batch of %d rows × %d columns is too large", ErrShape, rows, d+1)
	}
	lg := &lrGraph{key: key, d: d, xa: make([]float64, rows*(d+1)), y: make([]float64, rows)}
	for i := range rows {
		lg.xa[i*(d+1)+d] = 1
	}
	mask := make([]float64, d+1)
	for j := range d {
		mask[j] = 1
	}

	g := gorgonia.NewGraph()
	x := matrixNode(g, "Xa", rows, d+1, lg.xa)
	y := vectorNode(g, "y", lg.y)
	lg.theta = vectorNode(g, "theta", make([]float64, d+1))
	m := vectorNode(g, "mask", mask)
	lg.l2 = gorgonia.NewScalar(g, tensor.Float64, gorgonia.WithName("halfL2"), gorgonia.WithValue(0.0))
	var s, th0 *gorgonia.Node
	if key.weighted {
		lg.s = make([]float64, rows)
		s = vectorNode(g, "s", lg.s)
	}
	if key.prox {
		lg.th0 = make([]float64, d+1)
		th0 = vectorNode(g, "theta0", lg.th0)
		lg.mu = gorgonia.NewScalar(g, tensor.Float64, gorgonia.WithName("halfMu"), gorgonia.WithValue(0.0))
	}

	err := func() (err error) {
		defer recoverBuild(&err)
		b := builder{}
		z := b.op(gorgonia.Mul(x, lg.theta))
		sp := b.op(gorgonia.Softplus(z))
		if key.weighted {
			sp = b.op(gorgonia.HadamardProd(s, sp))
		}
		yz := b.op(gorgonia.HadamardProd(y, z))
		nll := b.op(gorgonia.Sub(sp, yz))
		bce := b.op(gorgonia.Mean(nll))
		wm := b.op(gorgonia.HadamardProd(lg.theta, m))
		sq := b.op(gorgonia.Square(wm))
		ss := b.op(gorgonia.Sum(sq))
		pen := b.op(gorgonia.Mul(lg.l2, ss))
		cost := b.op(gorgonia.Add(bce, pen))
		if key.prox {
			cost = b.op(gorgonia.Add(cost, b.proxTerm(lg.mu, []*gorgonia.Node{lg.theta}, []*gorgonia.Node{th0})))
		}
		if b.err != nil {
			return b.err
		}
		gorgonia.Read(cost, &lg.cost)
		_, err = gorgonia.Grad(cost, lg.theta)
		return err
	}()
	if err != nil {
		return nil, fmt.Errorf("%w: build graph: %w", ErrInternal, err)
	}
	lg.vm = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(lg.theta))
	releasable(lg.vm)
	return lg, nil
}

// load copies the rows idx of X and y into the graph's input tensors.
func (lg *lrGraph) load(X, y []float32, idx []int, obj *objective) {
	d, w := lg.d, lg.d+1
	for k, i := range idx {
		dst := lg.xa[k*w : k*w+d]
		src := X[i*d : i*d+d]
		for j, v := range src {
			dst[j] = float64(v)
		}
		lg.y[k] = float64(y[i])
	}
	if lg.key.weighted {
		loadWeighted(lg.y, lg.s, obj.posWeight)
	}
}

// run evaluates the objective and its gradient at params.
func (lg *lrGraph) run(params, grad []float64, obj *objective) (float64, error) {
	if err := setNode(lg.theta, params); err != nil {
		return 0, err
	}
	if err := gorgonia.Let(lg.l2, obj.halfL2); err != nil {
		return 0, fmt.Errorf("%w: bind penalty: %w", ErrInternal, err)
	}
	if lg.key.prox {
		copy(lg.th0, obj.start)
		if err := gorgonia.Let(lg.mu, obj.halfMu); err != nil {
			return 0, fmt.Errorf("%w: bind proximal weight: %w", ErrInternal, err)
		}
	}
	defer lg.vm.Reset()
	if err := lg.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("%w: run graph: %w", ErrInternal, err)
	}
	if err := takeGrad(grad, lg.theta); err != nil {
		return 0, err
	}
	return costValue(lg.cost)
}

// loadWeighted turns the labels y of a loaded batch into p·y and sets the
// row weights s = (1−y) + p·y, for the weighted data term.
func loadWeighted(y, s []float64, p float64) {
	for k, v := range y {
		s[k] = (1 - v) + p*v
		y[k] = p * v
	}
}

// recoverBuild turns a panic while building a graph into an error: a
// failed constructor returns a nil node, which the next one in a chain may
// panic on.
func recoverBuild(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("panic: %v", r)
	}
}

// builder chains gorgonia constructors, keeping the first error; see
// recoverBuild.
type builder struct{ err error }

func (b *builder) op(n *gorgonia.Node, err error) *gorgonia.Node {
	if b.err == nil && err != nil {
		b.err = err
	}
	return n
}

// proxTerm is halfMu·Σ_k Σ(params_k − start_k)².
func (b *builder) proxTerm(halfMu *gorgonia.Node, params, start []*gorgonia.Node) *gorgonia.Node {
	var total *gorgonia.Node
	for k, p := range params {
		if b.err != nil {
			return nil
		}
		diff := b.op(gorgonia.Sub(p, start[k]))
		sq := b.op(gorgonia.Square(diff))
		s := b.op(gorgonia.Sum(sq))
		if total == nil {
			total = s
		} else {
			total = b.op(gorgonia.Add(total, s))
		}
	}
	if b.err != nil {
		return nil
	}
	return b.op(gorgonia.Mul(halfMu, total))
}

func vectorNode(g *gorgonia.ExprGraph, name string, backing []float64) *gorgonia.Node {
	return gorgonia.NewVector(g, tensor.Float64, gorgonia.WithShape(len(backing)), gorgonia.WithName(name),
		gorgonia.WithValue(tensor.New(tensor.WithShape(len(backing)), tensor.WithBacking(backing))))
}

func matrixNode(g *gorgonia.ExprGraph, name string, r, c int, backing []float64) *gorgonia.Node {
	return gorgonia.NewMatrix(g, tensor.Float64, gorgonia.WithShape(r, c), gorgonia.WithName(name),
		gorgonia.WithValue(tensor.New(tensor.WithShape(r, c), tensor.WithBacking(backing))))
}

// setNode copies params into a parameter node's value.
func setNode(n *gorgonia.Node, params []float64) error {
	data, ok := n.Value().Data().([]float64)
	if !ok || len(data) != len(params) {
		return fmt.Errorf("%w: unexpected parameter tensor %T for %s", ErrInternal, n.Value().Data(), n.Name())
	}
	copy(data, params)
	return nil
}

// takeGrad copies the gradient held by a parameter node's dual value into
// dst and zeroes it, as gorgonia's solvers do after a step.
func takeGrad(dst []float64, n *gorgonia.Node) error {
	gv, err := n.Grad()
	if err != nil {
		return fmt.Errorf("%w: gradient of %s: %w", ErrInternal, n.Name(), err)
	}
	g, ok := gv.Data().([]float64)
	if !ok || len(g) != len(dst) {
		return fmt.Errorf("%w: unexpected gradient tensor %T for %s", ErrInternal, gv.Data(), n.Name())
	}
	copy(dst, g)
	clear(g)
	return nil
}

// costValue extracts the scalar objective read from a run.
func costValue(v gorgonia.Value) (float64, error) {
	if v == nil {
		return 0, fmt.Errorf("%w: no cost value", ErrInternal)
	}
	cost, ok := v.Data().(float64)
	if !ok {
		return 0, fmt.Errorf("%w: unexpected cost value %T", ErrInternal, v.Data())
	}
	return cost, nil
}
