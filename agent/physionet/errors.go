package physionet

import "errors"

// Errors. Messages carry counts, reasons and record ids at most, never a
// value from the data.
var (
	// ErrNilCallback: ReadStays was given no callback.
	ErrNilCallback = errors.New("nil callback")
	// ErrNilSink: no fhir.Sink was given.
	ErrNilSink = errors.New("nil sink")
	// ErrNilStay: a nil *Stay was given.
	ErrNilStay = errors.New("nil stay")
	// ErrBadStay: a hand-made Stay cannot be turned into records (a record
	// id that is not positive, a row with a negative minute or a value
	// that is not finite).
	ErrBadStay = errors.New("bad stay")
	// ErrArchive: the stay archive is not a readable tar.gz.
	ErrArchive = errors.New("bad stay archive")
	// ErrArchiveTooLarge: the archive expands to more than MaxArchiveBytes.
	ErrArchiveTooLarge = errors.New("stay archive too large")
	// ErrOutcomes: the outcomes file cannot be read.
	ErrOutcomes = errors.New("bad outcomes file")
	// ErrConfig: a ReplayConfig is invalid.
	ErrConfig = errors.New("invalid replay config")
	// ErrConnect: Replay could not connect to the broker.
	ErrConnect = errors.New("mqtt connect failed")
	// ErrPublish: the broker did not accept a publish.
	ErrPublish = errors.New("mqtt publish failed")
)
