package protocol

import (
	"errors"
	"fmt"

	"github.com/cohort-fl/cohort/protocol/pb"
)

var (
	// ErrFrameTooLarge: a frame's declared length exceeds the limit.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrMalformedFrame: a frame's body is not a valid Envelope.
	ErrMalformedFrame = errors.New("malformed frame")
	// ErrVersion: no protocol version in common.
	ErrVersion = errors.New("no common protocol version")
	// ErrBadTensor: tensor bytes do not decode.
	ErrBadTensor = errors.New("bad tensor")
	// ErrUnexpected: a well-formed message of the wrong type for the stream's state.
	ErrUnexpected = errors.New("unexpected message")
)

// RemoteError is an Error message received from the peer.
type RemoteError struct {
	Code    pb.ErrorCode
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("peer error %s: %s", e.Code, e.Message)
}

// Errorf builds an Envelope carrying a typed error.
func Errorf(code pb.ErrorCode, format string, args ...any) *pb.Envelope {
	return &pb.Envelope{Body: &pb.Envelope_Error{Error: &pb.Error{Code: code, Message: fmt.Sprintf(format, args...)}}}
}

// AsError returns the envelope's Error as a *RemoteError, or nil when the
// envelope is not an error.
func AsError(env *pb.Envelope) error {
	if e := env.GetError(); e != nil {
		return &RemoteError{Code: e.GetCode(), Message: e.GetMessage()}
	}
	return nil
}
