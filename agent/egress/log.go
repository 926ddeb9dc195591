package egress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// LogFile is the egress log's name in an agent's data directory.
const LogFile = "egress.log"

// Kinds of egress record: what left the site. Each is one message type
// the guard admits, except update-body, the raw tensor after an
// update-header.
const (
	KindHello              = "hello"
	KindTaskRequest        = "task-request"
	KindRoundStatusRequest = "round-status-request"
	KindModelRequest       = "model-request"
	KindUpdateHeader       = "update-header"
	KindUpdateBody         = "update-body"
	// KindSecAgg is one of the site's secure aggregation messages in a
	// securely aggregated round, which replace its update-header and
	// update-body: public keys, encrypted shares, the masked update,
	// unmasking shares. KindSecAggFetch asks for the coordinator's
	// message that opens the site's next protocol phase.
	KindSecAgg      = "secagg"
	KindSecAggFetch = "secagg-fetch"
	KindStats       = "stats"
	// KindEval is a federated evaluation's answer: a model's metrics and
	// calibration bins on the site's held-out records, numbers only.
	KindEval = "eval"
	// KindDeploymentRequest asks for a followed job's production version.
	KindDeploymentRequest = "deployment-request"
	// KindDrift is a deployed version's drift at the site: the largest
	// population stability index of its features, a number.
	KindDrift   = "drift"
	KindDecline = "decline"
	// KindEnroll and KindRenew are certificate requests, sent over HTTPS
	// to the coordinators' admin address.
	KindEnroll = "enroll"
	KindRenew  = "renew"
)

// Kinds lists every record kind, in the order of a round.
var Kinds = []string{KindHello, KindTaskRequest, KindRoundStatusRequest, KindModelRequest,
	KindUpdateHeader, KindUpdateBody, KindSecAgg, KindSecAggFetch, KindStats, KindEval, KindDeploymentRequest, KindDrift, KindDecline, KindEnroll, KindRenew}

// MaxLineBytes bounds one line of the log; a longer line is reported as
// malformed (the guard writes lines of a few hundred bytes).
const MaxLineBytes = 64 << 10

var (
	// ErrMalformed: a line of the egress log is not a record the guard
	// writes.
	ErrMalformed = errors.New("malformed egress record")
	// ErrLineTooLong: a line is longer than MaxLineBytes.
	ErrLineTooLong = errors.New("line too long")
)

// Filter selects records; its zero value selects every record.
type Filter struct {
	// Since, if not zero, keeps records at or after it.
	Since time.Time
	// Job, if set, keeps records of that job (update headers and bodies,
	// secure aggregation messages and evaluations carry one; other kinds
	// do not).
	Job string
	// Kind, if set, keeps records of that kind.
	Kind string
}

// Match reports whether r passes the filter.
func (f Filter) Match(r Record) bool {
	return (f.Since.IsZero() || !r.Time.Before(f.Since)) &&
		(f.Job == "" || r.Job == f.Job) &&
		(f.Kind == "" || r.Kind == f.Kind)
}

// LineError is a line of the log that was skipped.
type LineError struct {
	// Line is the 1-based line number.
	Line int
	Err  error
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

func (e LineError) Unwrap() error { return e.Err }

// ReadLog reads an egress log (JSON lines, as the Guard writes them) from
// r and returns, in file order, the records that pass f. A line that is
// not a valid record is skipped and reported in bad, with its line number;
// blank lines are ignored. err reports only a failure to read r.
func ReadLog(r io.Reader, f Filter) (recs []Record, bad []LineError, err error) {
	br := bufio.NewReaderSize(r, 4096)
	var line []byte
	for n := 1; ; n++ {
		// Read one line, keeping at most MaxLineBytes+2 of it (room for
		// "\r\n"): a longer one is reported, not held in memory.
		line = line[:0]
		tooLong := false
		var rerr error
		for {
			var chunk []byte
			chunk, rerr = br.ReadSlice('\n')
			if len(line)+len(chunk) > MaxLineBytes+2 {
				tooLong = true
			}
			if !tooLong {
				line = append(line, chunk...)
			}
			if !errors.Is(rerr, bufio.ErrBufferFull) {
				break
			}
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return recs, bad, fmt.Errorf("read egress log: %w", rerr)
		}
		eof := rerr != nil
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		switch {
		case tooLong || len(line) > MaxLineBytes:
			bad = append(bad, LineError{Line: n, Err: fmt.Errorf("%w: %w (more than %d bytes)", ErrMalformed, ErrLineTooLong, MaxLineBytes)})
		case len(bytes.TrimSpace(line)) == 0:
		default:
			rec, perr := parseRecord(line)
			if perr != nil {
				bad = append(bad, LineError{Line: n, Err: perr})
			} else if f.Match(rec) {
				recs = append(recs, rec)
			}
		}
		if eof {
			return recs, bad, nil
		}
	}
}

// parseRecord decodes and checks one line.
func parseRecord(line []byte) (Record, error) {
	var rec Record
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&rec); err != nil {
		return Record{}, fmt.Errorf("%w: %s", ErrMalformed, describeDecodeError(err))
	}
	if dec.More() {
		return Record{}, fmt.Errorf("%w: text after the record", ErrMalformed)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Record{}, fmt.Errorf("%w: text after the record", ErrMalformed)
	}
	if err := rec.check(); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return rec, nil
}

// check reports a record that the guard could not have written.
func (r Record) check() error {
	switch {
	case r.Time.IsZero():
		return errors.New("no time")
	case !slices.Contains(Kinds, r.Kind):
		return errors.New("unknown kind")
	case r.Bytes < 0:
		return fmt.Errorf("negative byte count %d", r.Bytes)
	case !isDigest(r.SHA256):
		return errors.New("sha256 is not 64 lower-case hex digits")
	}
	return nil
}

// describeDecodeError says what is wrong with a line without quoting it:
// a tampered log could hold anything, and the reader's messages are shown
// to people and kept in scripts' logs.
func describeDecodeError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tpe *time.ParseError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("not JSON (syntax error at byte %d)", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.As(err, &tpe):
		return "time is not RFC 3339"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	}
	return "not a JSON record"
}
