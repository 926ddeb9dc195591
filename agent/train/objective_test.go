package train

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
)

// TestLogRegMatchesHandTraining runs several full-batch steps with each
// optimizer and the new terms, against the same steps in plain Go.
func TestLogRegMatchesHandTraining(t *testing.T) {
	X, y := synth(21, 40, []float64{0.8, -1.2, 0.3}, -0.5)
	y[3] = 0.7 // a soft label
	w0 := []float32{0.2, -0.1, 0.05, 0.3}
	tests := []struct {
		name string
		opts Options
	}{
		{"sgd", Options{Epochs: 5, LearningRate: 0.5}},
		{"sgd pos weight", Options{Epochs: 5, LearningRate: 0.5, PosWeight: 3}},
		{"sgd prox", Options{Epochs: 5, LearningRate: 0.5, ProxMu: 0.8}},
		{"sgd all terms", Options{Epochs: 5, LearningRate: 0.5, L2: 0.1, PosWeight: 0.3, ProxMu: 0.4}},
		{"adam", Options{Epochs: 6, LearningRate: 0.05, Optimizer: OptimizerAdam}},
		{"adam own parameters", Options{Epochs: 6, LearningRate: 0.05, Optimizer: OptimizerAdam,
			AdamBeta1: 0.5, AdamBeta2: 0.9, AdamEps: 1e-3}},
		{"adam all terms", Options{Epochs: 6, LearningRate: 0.05, Optimizer: OptimizerAdam,
			L2: 0.1, PosWeight: 4, ProxMu: 0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, 3)
			if err := m.SetWeights(w0); err != nil {
				t.Fatal(err)
			}
			loss, err := m.Train(context.Background(), X, y, 40, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			want, wantLoss := handTrain(w0, X, y, 40, tt.opts)
			got := m.Weights()
			for j := range want {
				if d := math.Abs(float64(got[j]) - want[j]); d > 1e-6 {
					t.Errorf("weight %d = %.8f, hand-computed %.8f", j, got[j], want[j])
				}
			}
			if math.Abs(loss-wantLoss) > 1e-12 {
				t.Errorf("loss %.15f, hand-computed %.15f", loss, wantLoss)
			}
		})
	}
}

// TestAdamConverges: Adam fits the synthetic logistic problem (and, in
// TestMLPLearnsXORLogRegCannot, an MLP on XOR).
func TestAdamConverges(t *testing.T) {
	trueW := []float64{1.5, -2, 0.5, 0, 1}
	X, y := synth(31, 2000, trueW, -0.4)
	m := newModel(t, len(trueW))
	loss, err := m.Train(context.Background(), X, y, 2000,
		Options{Epochs: 8, LearningRate: 0.02, BatchSize: 32, Seed: 2, Optimizer: OptimizerAdam})
	if err != nil {
		t.Fatal(err)
	}
	w := m.Weights()
	for j, tw := range trueW {
		if math.Abs(float64(w[j])-tw) > 0.3 {
			t.Errorf("coefficient %d = %.3f, true %.3f", j, w[j], tw)
		}
	}
	if math.Abs(float64(w[len(trueW)])+0.4) > 0.3 {
		t.Errorf("bias %.3f, true -0.4", w[len(trueW)])
	}
	t.Logf("loss %.4f, weights %v", loss, w)
}

// TestAdamStateIsFreshEachCall: the first Adam step moves every weight by
// about the learning rate (m̂/√v̂ = ±1 at t = 1), and so does the first
// step of a second call: the moments do not carry over.
func TestAdamStateIsFreshEachCall(t *testing.T) {
	X, y := synth(8, 100, []float64{1, -1, 2}, 0.5)
	opts := Options{Epochs: 1, LearningRate: 0.01, Optimizer: OptimizerAdam}
	for _, tr := range []Trainer{newModel(t, 3), newMLP(t, 3, MLPConfig{Hidden: []int{4}})} {
		for call := range 3 {
			before := tr.Weights()
			if _, err := tr.Train(context.Background(), X, y, 100, opts); err != nil {
				t.Fatal(err)
			}
			for j, w := range tr.Weights() {
				step := math.Abs(float64(w) - float64(before[j]))
				if step == 0 {
					continue // a zero gradient (say, a dead ReLU unit)
				}
				if math.Abs(step-0.01) > 1e-4 {
					t.Fatalf("%T call %d: weight %d moved %.6f, want the learning rate 0.01", tr, call, j, step)
				}
			}
		}
	}
}

// TestPosWeightShiftsTowardPositives: on data with about 10% positives,
// weighting positives by 9 raises the predicted probabilities toward the
// balanced 0.5 while ranking stays good.
func TestPosWeightShiftsTowardPositives(t *testing.T) {
	X, y := synth(41, 1500, []float64{1, -1, 0.5, 0.8}, -3)
	prevalence := mean(y)
	if prevalence < 0.05 || prevalence > 0.2 {
		t.Fatalf("prevalence %.3f, want about 0.1", prevalence)
	}
	models := map[string]func() Trainer{
		"logreg": func() Trainer { return newModel(t, 4) },
		"mlp":    func() Trainer { return newMLP(t, 4, MLPConfig{Hidden: []int{8}}) },
	}
	for name, newTrainer := range models {
		t.Run(name, func(t *testing.T) {
			fit := func(pw float64) (meanP, auc float64) {
				m := newTrainer()
				if _, err := m.Train(context.Background(), X, y, 1500,
					Options{Epochs: 10, LearningRate: 0.05, BatchSize: 50, Seed: 1, Optimizer: OptimizerAdam, PosWeight: pw}); err != nil {
					t.Fatal(err)
				}
				p, err := m.Predict(X, 1500)
				if err != nil {
					t.Fatal(err)
				}
				auc, err = AUROC(p, y)
				if err != nil {
					t.Fatal(err)
				}
				return mean(p), auc
			}
			plain, aucPlain := fit(0)
			weighted, aucWeighted := fit(9)
			t.Logf("prevalence %.3f; mean prediction unweighted %.3f (AUROC %.3f), PosWeight 9 %.3f (AUROC %.3f)",
				prevalence, plain, aucPlain, weighted, aucWeighted)
			if math.Abs(plain-prevalence) > 0.05 {
				t.Errorf("unweighted mean prediction %.3f, want near the prevalence %.3f", plain, prevalence)
			}
			if weighted < plain+0.2 {
				t.Errorf("PosWeight 9 mean prediction %.3f, want well above the unweighted %.3f", weighted, plain)
			}
			if aucWeighted < aucPlain-0.02 {
				t.Errorf("PosWeight 9 AUROC %.3f, unweighted %.3f", aucWeighted, aucPlain)
			}
		})
	}
}

// TestProxMu: a large μ keeps the weights near the start of the call; and
// the proximal gradient vanishes at the start, so one full-batch step is
// bit-for-bit the step without the term.
func TestProxMu(t *testing.T) {
	X, y := synth(51, 600, []float64{2, -1.5, 1, 0.5}, 0.3)
	models := map[string]func() Trainer{
		"logreg": func() Trainer { return newModel(t, 4) },
		"mlp":    func() Trainer { return newMLP(t, 4, MLPConfig{Hidden: []int{6}, Activation: ActivationTanh}) },
	}
	for name, newTrainer := range models {
		t.Run(name, func(t *testing.T) {
			moved := func(opts Options) float64 {
				m := newTrainer()
				w0 := m.Weights()
				if _, err := m.Train(context.Background(), X, y, 600, opts); err != nil {
					t.Fatal(err)
				}
				return dist(m.Weights(), w0)
			}
			base := Options{Epochs: 5, LearningRate: 0.1, BatchSize: 30, Seed: 4}
			free := moved(base)
			held := moved(withOpts(base, func(o *Options) { o.ProxMu = 5 }))
			t.Logf("distance from the start: ProxMu 0 %.4f, ProxMu 5 %.4f", free, held)
			if held > 0.25*free {
				t.Errorf("ProxMu 5 moved %.4f from the start, ProxMu 0 moved %.4f: want far less", held, free)
			}
			adamHeld := moved(withOpts(base, func(o *Options) { o.ProxMu = 5; o.Optimizer = OptimizerAdam; o.LearningRate = 0.01 }))
			adamFree := moved(withOpts(base, func(o *Options) { o.Optimizer = OptimizerAdam; o.LearningRate = 0.01 }))
			if adamHeld > 0.5*adamFree {
				t.Errorf("Adam: ProxMu 5 moved %.4f, ProxMu 0 moved %.4f: want far less", adamHeld, adamFree)
			}

			one := Options{Epochs: 1, LearningRate: 0.3}
			a, b := newTrainer(), newTrainer()
			la, err := a.Train(context.Background(), X, y, 600, one)
			if err != nil {
				t.Fatal(err)
			}
			lb, err := b.Train(context.Background(), X, y, 600, withOpts(one, func(o *Options) { o.ProxMu = 100 }))
			if err != nil {
				t.Fatal(err)
			}
			if !equalBits(a.Weights(), b.Weights()) || la != lb {
				t.Error("one full-batch step with ProxMu 100 differs from the step without it")
			}
		})
	}
}

func TestOptionsValidateNewFields(t *testing.T) {
	base := Options{Epochs: 1, LearningRate: 0.1}
	tests := []struct {
		name string
		f    func(*Options)
		msg  string // "" means valid
	}{
		{"sgd", func(o *Options) { o.Optimizer = OptimizerSGD }, ""},
		{"adam with defaults", func(o *Options) { o.Optimizer = OptimizerAdam }, ""},
		{"adam with parameters", func(o *Options) {
			o.Optimizer, o.AdamBeta1, o.AdamBeta2, o.AdamEps = OptimizerAdam, 0.8, 0.99, 1e-6
		}, ""},
		{"adam parameters ignored by sgd", func(o *Options) { o.AdamBeta1 = 0.5 }, ""},
		{"unknown optimizer", func(o *Options) { o.Optimizer = "Adam" }, `optimizer "Adam", want "sgd" or "adam"`},
		{"beta1 1", func(o *Options) { o.Optimizer, o.AdamBeta1 = OptimizerAdam, 1 }, "Adam beta1 1, want a value in [0, 1)"},
		{"negative beta2", func(o *Options) { o.Optimizer, o.AdamBeta2 = OptimizerAdam, -0.1 }, "Adam beta2 -0.1"},
		{"NaN beta2", func(o *Options) { o.AdamBeta2 = math.NaN() }, "Adam beta2 NaN"},
		{"negative epsilon", func(o *Options) { o.AdamEps = -1e-8 }, "Adam epsilon -1e-08"},
		{"pos weight 1", func(o *Options) { o.PosWeight = 1 }, ""},
		{"pos weight 20", func(o *Options) { o.PosWeight = 20 }, ""},
		{"pos weight 0.1", func(o *Options) { o.PosWeight = 0.1 }, ""},
		{"negative pos weight", func(o *Options) { o.PosWeight = -2 }, "positive-class weight -2, want 0 (unweighted) or a value in (0, 1e+06]"},
		{"infinite pos weight", func(o *Options) { o.PosWeight = math.Inf(1) }, "positive-class weight +Inf"},
		{"NaN pos weight", func(o *Options) { o.PosWeight = math.NaN() }, "positive-class weight NaN"},
		{"huge pos weight", func(o *Options) { o.PosWeight = 2e6 }, "positive-class weight 2e+06"},
		{"prox mu", func(o *Options) { o.ProxMu = 0.01 }, ""},
		{"negative prox mu", func(o *Options) { o.ProxMu = -0.01 }, "FedProx mu -0.01, want non-negative and finite"},
		{"infinite prox mu", func(o *Options) { o.ProxMu = math.Inf(1) }, "FedProx mu +Inf"},
		{"NaN prox mu", func(o *Options) { o.ProxMu = math.NaN() }, "FedProx mu NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := withOpts(base, tt.f).Validate()
			switch {
			case tt.msg == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tt.msg != "" && !errors.Is(err, ErrOptions):
				t.Errorf("Validate err = %v, want ErrOptions", err)
			case tt.msg != "" && !strings.Contains(err.Error(), tt.msg):
				t.Errorf("Validate err = %q, want it to say %q", err, tt.msg)
			}
		})
	}
}
