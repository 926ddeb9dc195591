// Package audit is the coordinator's tamper-evident audit log: an
// append-only Merkle tree (RFC 6962 hashing) kept in a node's data
// directory, with checkpoints signed by the node's own Ed25519 key and
// inclusion and consistency proofs.
//
// The log is three files in one directory:
//
//	entries.jsonl      one leaf per line: exactly the leaf bytes, then '\n'
//	checkpoints.jsonl  one signed Checkpoint (JSON) per line
//	node.key           the node's Ed25519 seed (32 raw bytes, mode 0600)
//
// Leaves are opaque to this package (the coordinator stores one JSON object
// per leaf). Every AppendAt that adds leaves signs one checkpoint for the new
// size. Open re-hashes every entry and checks the tree against every
// checkpoint, so an entry edited, deleted or reordered on disk is reported
// by index and line (a *TamperError wrapping ErrTampered). VerifyDir does the
// same checks read-only, and VerifyEntries checks entries fetched over the
// admin API against a checkpoint.
//
// What the local checks prove: nobody changed the files without the node's
// key. Someone who can read node.key can re-sign anything; comparing roots
// and consistency proofs across the cluster's nodes (each signs with its own
// key) and against checkpoints kept by clients is the stronger check.
//
// A Log has one writer (the coordinator's FSM) and any number of concurrent
// readers. Log.mu, a sync.RWMutex, guards all of its state; writers (AppendAt,
// Reset, Close, and Checkpoint when it must sign) hold it to write, everything
// else to read. No other lock is taken while it is held and no callback runs
// under it.
package audit
