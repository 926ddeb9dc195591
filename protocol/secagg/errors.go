package secagg

import (
	"errors"
	"fmt"
)

var (
	// ErrConfig: a Config or Session is invalid (see Config.Validate).
	ErrConfig = errors.New("invalid secure aggregation config")
	// ErrMalformed: a message or share does not decode, or its content does
	// not fit the protocol (wrong sizes, unknown or repeated indices, missing
	// entries).
	ErrMalformed = errors.New("malformed message")
	// ErrSession: a message names another job or round (a replay from an
	// earlier protocol run, or a message meant for another one).
	ErrSession = errors.New("message for another session")
	// ErrPhase: a message or call that does not belong to the current phase
	// (a late or early message, or a step called out of order).
	ErrPhase = errors.New("wrong phase")
	// ErrDuplicate: a client already sent its message for this phase (a
	// replay or retry; the first message stands).
	ErrDuplicate = errors.New("duplicate message")
	// ErrUnknownClient: a sender or index that is not a participant of
	// this step.
	ErrUnknownClient = errors.New("unknown client")
	// ErrBadKey: a public key that is malformed, repeated, or that does not
	// match the one its owner advertised.
	ErrBadKey = errors.New("bad public key")
	// ErrDecrypt: a share ciphertext failed authentication (tampered,
	// truncated, or addressed to someone else).
	ErrDecrypt = errors.New("share ciphertext does not authenticate")
	// ErrTooFewClients: fewer than the threshold t of clients remain at a
	// step; the protocol run cannot complete.
	ErrTooFewClients = errors.New("fewer clients than the threshold")
	// ErrTooFewShares: fewer than t distinct shares of a secret.
	ErrTooFewShares = errors.New("fewer shares than the threshold")
	// ErrInconsistentShares: shares that do not interpolate to a valid
	// secret (corrupted shares or shares of different secrets).
	ErrInconsistentShares = errors.New("inconsistent shares")
	// ErrBothShares: an unmasking request that would reveal both the
	// self-mask share and the key share of one client, which would unmask
	// that client's input. Clients refuse it.
	ErrBothShares = errors.New("request asks for both shares of one client")
	// ErrConflictingRequest: a second unmasking request that differs from
	// the one the client already answered. Clients refuse it.
	ErrConflictingRequest = errors.New("conflicting unmasking request")
	// ErrNotFinite: an update holds a NaN.
	ErrNotFinite = errors.New("update value is NaN")
	// ErrFailed: the server already failed this protocol run.
	ErrFailed = errors.New("protocol run failed")
)

// PhaseError reports the phase in which a protocol run failed. It wraps
// the cause (usually ErrTooFewClients, ErrTooFewShares or
// ErrInconsistentShares).
type PhaseError struct {
	Phase Phase
	Err   error
}

func (e *PhaseError) Error() string {
	return fmt.Sprintf("secagg: %s phase: %v", e.Phase, e.Err)
}

func (e *PhaseError) Unwrap() error { return e.Err }
