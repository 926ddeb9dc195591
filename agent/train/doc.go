// Package train is the site agent's local training: models behind the
// [Trainer] interface (flat float32 weights in, trained weights out) and the
// evaluation metrics reported with an update or a federated evaluation.
//
// # Models
//
// [LogReg] is binary logistic regression, p = σ(w·x + b). Its flat weight
// vector has NumFeatures()+1 values: the coefficients w[0..d−1] of features
// 0..d−1, then the bias w[d]. A new LogReg is all zeros.
//
// [MLP] is a multilayer perceptron: 1 to 8 dense hidden layers
// ([MLPConfig].Hidden, widths 1..65536) with a ReLU, tanh or sigmoid
// activation and optional (inverted) dropout during training, then one
// sigmoid output unit. Its flat weight vector holds the layers in order
// from the input; layer l, mapping in_l inputs to out_l outputs, is its
// in_l×out_l weight matrix in row-major order (the weight from input i to
// unit o at offset i·out_l + o within the layer) followed by its out_l
// biases:
//
//	[W_0 (F×h1), b_0 (h1), W_1 (h1×h2), b_1 (h2), …, W_k (hk×1), b_k (1)]
//
// so NumParams = F·h1+h1 + h1·h2+h2 + … + hk·1+1 for F features and hidden
// widths h1..hk. With no hidden layer this would be LogReg's layout.
//
// An MLP cannot learn from all-zero weights, so a job's initial MLP must be
// drawn: [MLPInitialWeights] (He-uniform for ReLU layers, Glorot-uniform
// otherwise, zero biases, from a PCG seeded with the job's seed) is a pure
// function of (features, config, seed). The shape, the layout's offsets and
// the initializer live in the leaf package mlpspec, which imports only the
// standard library, so the coordinator can size and initialize a model
// without linking gorgonia.
//
// # Training
//
// Both models minimize, batch by batch, the objective documented on
// [Options]: the mean binary cross-entropy, optionally class-weighted
// (Options.PosWeight, PyTorch's pos_weight), plus an L2 penalty on the
// coefficients (Options.L2) and the FedProx proximal term μ/2·‖θ − θ_start‖²
// to the weights the call started from (Options.ProxMu). The optimizer is
// SGD or Adam (Options.Optimizer; Adam's moments start afresh on every
// Train call, since each federated round starts from the global model).
// The zero values of these options give the original behaviour, bit for
// bit. Since the loss is a mean over rows, one full-batch SGD step on each
// of several shards, averaged by shard size, is one full-batch step on the
// pooled data (FedAvg's one-step equivalence; tested).
//
// Gradients are computed by gorgonia in float64 (symbolic differentiation
// on an expression graph run by a tape machine; each model caches the
// compiled graphs of a few batch sizes); the optimizers and Predict's
// forward pass are plain Go. Training is deterministic: the same weights,
// data, options and Options.Seed (which orders the mini-batches and draws
// the dropout masks) give bit-for-bit the same result. Metrics ([AUROC],
// [AUPRC], [Accuracy], [LogLoss], [Brier] and the [Calibration] table) are
// plain Go.
//
// Data is passed as a row-major float32 matrix X (rows × features) and a
// label vector y with values in [0, 1]. Nothing in this package reads or
// writes outside the process; it never sees identifiers, only numbers.
package train
