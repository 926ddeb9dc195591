package train

import (
	"fmt"
	"math"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// lrGraph is the compiled gorgonia program for one logistic-regression
// batch size:
//
//	z    = Xa·θ                       (Xa = [X | 1], θ = [w; b])
//	cost = mean(softplus(z) − y∘z) + λ/2·Σ(θ∘mask)²
//
// softplus(z) − y·z is the binary cross-entropy of σ(z) against y in a
// form that stays finite for large |z|; mask zeroes the bias so the penalty
// covers coefficients only. The graph holds the symbolic gradient ∂cost/∂θ.
type lrGraph struct {
	d, rows int

	xa    []float64 // backing of Xa: rows × (d+1), last column fixed at 1
	y     []float64 // backing of y
	theta *gorgonia.Node
	l2    *gorgonia.Node // λ/2
	cost  gorgonia.Value // set by each run
	vm    gorgonia.VM
}

// newLRGraph builds and compiles the graph for batches of rows rows.
func newLRGraph(d, rows int) (*lrGraph, error) {
	if rows > math.MaxInt/(d+1) {
		return nil, fmt.Errorf("%w: batch of %d rows × %d columns is too large", ErrShape, rows, d+1)
	}
	lg := &lrGraph{d: d, rows: rows, xa: make([]float64, rows*(d+1)), y: make([]float64, rows)}
	for i := range rows {
		lg.xa[i*(d+1)+d] = 1
	}
	mask := make([]float64, d+1)
	for j := range d {
		mask[j] = 1
	}

	f64 := tensor.Float64
	g := gorgonia.NewGraph()
	x := gorgonia.NewMatrix(g, f64, gorgonia.WithShape(rows, d+1), gorgonia.WithName("Xa"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(rows, d+1), tensor.WithBacking(lg.xa))))
	y := gorgonia.NewVector(g, f64, gorgonia.WithShape(rows), gorgonia.WithName("y"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(rows), tensor.WithBacking(lg.y))))
	lg.theta = gorgonia.NewVector(g, f64, gorgonia.WithShape(d+1), gorgonia.WithName("theta"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(d+1), tensor.WithBacking(make([]float64, d+1)))))
	m := gorgonia.NewVector(g, f64, gorgonia.WithShape(d+1), gorgonia.WithName("mask"),
		gorgonia.WithValue(tensor.New(tensor.WithShape(d+1), tensor.WithBacking(mask))))
	lg.l2 = gorgonia.NewScalar(g, f64, gorgonia.WithName("halfL2"), gorgonia.WithValue(0.0))

	var cost *gorgonia.Node
	err := func() (err error) {
		z, err := gorgonia.Mul(x, lg.theta)
		if err != nil {
			return err
		}
		sp, err := gorgonia.Softplus(z)
		if err != nil {
			return err
		}
		yz, err := gorgonia.HadamardProd(y, z)
		if err != nil {
			return err
		}
		nll, err := gorgonia.Sub(sp, yz)
		if err != nil {
			return err
		}
		bce, err := gorgonia.Mean(nll)
		if err != nil {
			return err
		}
		wm, err := gorgonia.HadamardProd(lg.theta, m)
		if err != nil {
			return err
		}
		sq, err := gorgonia.Square(wm)
		if err != nil {
			return err
		}
		ss, err := gorgonia.Sum(sq)
		if err != nil {
			return err
		}
		pen, err := gorgonia.Mul(lg.l2, ss)
		if err != nil {
			return err
		}
		if cost, err = gorgonia.Add(bce, pen); err != nil {
			return err
		}
		gorgonia.Read(cost, &lg.cost)
		_, err = gorgonia.Grad(cost, lg.theta)
		return err
	}()
	if err != nil {
		return nil, fmt.Errorf("%w: build graph: %w", ErrInternal, err)
	}
	lg.vm = gorgonia.NewTapeMachine(g, gorgonia.BindDualValues(lg.theta))
	return lg, nil
}

// load copies the rows idx of X and y into the graph's input tensors.
func (lg *lrGraph) load(X, y []float32, idx []int) {
	d, w := lg.d, lg.d+1
	for k, i := range idx {
		dst := lg.xa[k*w : k*w+d]
		src := X[i*d : i*d+d]
		for j, v := range src {
			dst[j] = float64(v)
		}
		lg.y[k] = float64(y[i])
	}
}

// stepper applies gradient-descent steps with fixed hyper-parameters.
type stepper struct {
	solver *gorgonia.VanillaSolver
	halfL2 float64
	model  []gorgonia.ValueGrad
}

func newStepper(lr, l2 float64) *stepper {
	return &stepper{solver: gorgonia.NewVanillaSolver(gorgonia.WithLearnRate(lr)), halfL2: l2 / 2}
}

// step runs the graph on its loaded batch from params, takes one solver
// step and writes the new parameters back into params. It returns the
// batch objective measured before the step.
func (s *stepper) step(lg *lrGraph, params []float64) (float64, error) {
	theta, ok := lg.theta.Value().Data().([]float64)
	if !ok || len(theta) != len(params) {
		return 0, fmt.Errorf("%w: unexpected parameter tensor %T", ErrInternal, lg.theta.Value().Data())
	}
	copy(theta, params)
	if err := gorgonia.Let(lg.l2, s.halfL2); err != nil {
		return 0, fmt.Errorf("%w: bind penalty: %w", ErrInternal, err)
	}
	defer lg.vm.Reset()
	if err := lg.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("%w: run graph: %w", ErrInternal, err)
	}
	cost, ok := lg.cost.Data().(float64)
	if !ok {
		return 0, fmt.Errorf("%w: unexpected cost value %T", ErrInternal, lg.cost.Data())
	}
	if math.IsNaN(cost) || math.IsInf(cost, 0) {
		return 0, fmt.Errorf("%w: loss is %v (diverged; lower the learning rate)", ErrNotFinite, cost)
	}
	s.model = append(s.model[:0], lg.theta)
	if err := s.solver.Step(s.model); err != nil {
		return 0, fmt.Errorf("%w: solver step: %w", ErrInternal, err)
	}
	theta, ok = lg.theta.Value().Data().([]float64)
	if !ok || len(theta) != len(params) {
		return 0, fmt.Errorf("%w: unexpected parameter tensor %T", ErrInternal, lg.theta.Value().Data())
	}
	for i, v := range theta {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("%w: weight %d is %v (diverged; lower the learning rate)", ErrNotFinite, i, v)
		}
	}
	copy(params, theta)
	return cost, nil
}
