// Package aggregator holds the server-side aggregation math of a federated
// round: it turns the model updates that sites submit into the next global
// model.
//
// A [Strategy] describes a rule and its parameters. Its Begin starts a
// [Round] from the current global weights and the state the previous round
// returned; the round folds in one site update at a time (the streaming
// rules' rounds also take a batch at once, see [BatchAdder]), and Finish
// returns a [Result]: the new global weights and the rule's new state.
// Updates are weight deltas (local minus global), either as []float32 or as
// the packed little-endian float32 bytes that travel on the wire (see
// protocol.EncodeF32), each with the number of samples it was trained on.
//
// Rules:
//   - [FedAvg] and [FedProx] (FedAvg on the server; μ goes to the sites, see
//     [ProximalMu]): streaming sample-weighted mean, memory O(parameters).
//   - [FedAvgM], [FedAdam], [FedYogi], [FedAdagrad]: server optimizers on the
//     weighted mean delta; streaming, with state carried in Result.State.
//   - [Median], [TrimmedMean], [Krum], [MultiKrum]: robust to hostile sites;
//     they keep every update, memory O(updates × parameters).
//   - [NormBound] wraps any rule and clips each delta's L2 norm.
//
// [New] builds a Strategy from a JSON-friendly [Spec], validating names and
// parameters; [CheckByzantine] checks a job's minimum number of sites
// against Krum's n > 2f+2 before any round runs.
//
// State is bytes, not hidden fields, so that the coordinator can replicate
// it with Raft and store it as a content-addressed blob; [DecodeState]
// documents the versioned encoding. Strategy values hold no mutable state.
//
// The package is pure computation: no I/O, no clocks, no logging. The only
// goroutines are those AddPacked and AddPackedBatch start, and wait for, to
// split a large update or batch across cores. It imports no Cohort package (tests use protocol).
// See DESIGN.md in this directory.
package aggregator
