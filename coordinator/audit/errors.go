package audit

import (
	"errors"
	"fmt"
)

var (
	// ErrTampered: the files do not match what the node signed (an entry
	// altered, deleted, inserted or reordered, a checkpoint altered or not
	// signed by this node). The error is a *TamperError that says where.
	ErrTampered = errors.New("audit log tampered")
	// ErrDiverged: AppendAt replayed a leaf that differs from the one the log
	// already holds at that index. The error is a *TamperError with the index.
	ErrDiverged = errors.New("audit log diverged")
	// ErrInvalidLeaf: a leaf is empty, longer than MaxLeafSize, or contains
	// '\n'.
	ErrInvalidLeaf = errors.New("invalid audit leaf")
	// ErrGap: AppendAt was asked to start beyond the end of the log.
	ErrGap = errors.New("gap in audit log")
	// ErrOutOfRange: an index or tree size beyond the log.
	ErrOutOfRange = errors.New("out of range")
	// ErrBadKey: the signing key file is missing, malformed or readable by
	// others.
	ErrBadKey = errors.New("bad audit signing key")
	// ErrBadCheckpoint: a checkpoint is malformed or its signature does not
	// verify with the given key.
	ErrBadCheckpoint = errors.New("bad checkpoint")
	// ErrOrigin: the log's checkpoints name another origin than the one it
	// was opened with.
	ErrOrigin = errors.New("audit log origin mismatch")
	// ErrClosed: the Log was closed.
	ErrClosed = errors.New("audit log closed")
)

// TamperError says where a log does not match its checkpoints. It wraps
// ErrTampered, or ErrDiverged for a replay that differs (which matches
// ErrTampered too: the local log cannot be trusted either way).
type TamperError struct {
	// Index is the 0-based index of the entry concerned (for a range, the
	// first entry that may be bad). When File is CheckpointsFile it is the
	// 0-based index of the checkpoint record instead.
	Index uint64
	// Reason says what and where, e.g. "entry 57 (line 58) does not match
	// the checkpoint signed at size 58".
	Reason string
	// File is EntriesFile or CheckpointsFile, or "" when the problem was not
	// found in a file (VerifyEntries, AppendAt).
	File string
	// Line is the 1-based line in File, 0 when there is none.
	Line int
	// Err is ErrTampered or ErrDiverged (nil means ErrTampered).
	Err error
}

func (e *TamperError) Error() string { return "audit log: " + e.Reason }

// Unwrap returns ErrTampered or ErrDiverged.
func (e *TamperError) Unwrap() error {
	if e.Err == nil {
		return ErrTampered
	}
	return e.Err
}

// Is makes every TamperError match ErrTampered.
func (e *TamperError) Is(target error) bool { return target == ErrTampered }

// entryTamper reports a problem with entry i of entries.jsonl.
func entryTamper(i uint64, format string, args ...any) *TamperError {
	return &TamperError{
		Index:  i,
		Reason: fmt.Sprintf("entry %d (line %d) ", i, i+1) + fmt.Sprintf(format, args...),
		File:   EntriesFile,
		Line:   lineOf(i),
	}
}

// checkpointTamper reports a problem with checkpoint record i (0-based) of
// checkpoints.jsonl.
func checkpointTamper(i int, format string, args ...any) *TamperError {
	return &TamperError{
		Index:  uint64(i),
		Reason: fmt.Sprintf("checkpoint %d (line %d of %s) ", i, i+1, CheckpointsFile) + fmt.Sprintf(format, args...),
		File:   CheckpointsFile,
		Line:   i + 1,
	}
}

// lineOf is the 1-based line of entry i, saturated to fit an int.
func lineOf(i uint64) int {
	if i >= uint64(maxInt) {
		return maxInt
	}
	return int(i) + 1
}

const maxInt = int(^uint(0) >> 1)
