// Package aggregator holds the server-side aggregation math of a federated
// round: it turns the model updates that sites submit into the next global
// model.
//
// A [Strategy] (FedAvg today; FedProx, FedOpt, robust rules and
// secure-aggregation unmasking later) starts a [Round] from the current global
// weights; the round folds in one site update at a time and Finish returns the
// new global weights. Updates are weight deltas (local minus global), either
// as []float32 or as the packed little-endian float32 bytes that travel on the
// wire (see protocol.EncodeF32), each with the number of samples it was
// trained on.
//
// The package is pure computation: no I/O, no clocks, no logging. It imports
// no Cohort package except protocol. See DESIGN.md in this directory.
package aggregator
