// Package train is the site agent's local training: models behind the
// [Trainer] interface (flat float32 weights in, trained weights out) and the
// evaluation metrics reported with an update.
//
// Gradients are computed by gorgonia (symbolic differentiation on an
// expression graph run by a tape machine, stepped by a gorgonia solver).
// [LogReg] is binary logistic regression; later models (an MLP) follow the
// same pattern. Metrics ([AUROC], [Accuracy], [LogLoss]) are plain Go.
//
// Data is passed as a row-major float32 matrix X (rows × features) and a
// label vector y with values in [0, 1]. Nothing in this package reads or
// writes outside the process; it never sees identifiers, only numbers.
package train
