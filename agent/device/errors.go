package device

import "errors"

// Sentinel errors. The rejection errors (ErrOversized through
// ErrUnknownDevice) each have a Reason; no error message quotes a payload
// or names a patient.
var (
	// Rejections: a payload that will never become valid.

	// ErrOversized: the payload is larger than the payload limit.
	ErrOversized = errors.New("payload too large")
	// ErrMalformedJSON: the payload is not well-formed UTF-8 JSON.
	ErrMalformedJSON = errors.New("malformed json")
	// ErrWrongType: the payload is not a JSON object, or a field has the
	// wrong JSON type (a string for value, a number or null for a string).
	ErrWrongType = errors.New("wrong json type")
	// ErrUnknownField: the payload has a field outside the contract.
	ErrUnknownField = errors.New("unknown field")
	// ErrDuplicateField: the payload has a field twice.
	ErrDuplicateField = errors.New("duplicate field")
	// ErrMissingField: a required field is absent.
	ErrMissingField = errors.New("missing field")
	// ErrBadTopic: the topic is not cohort/<site>/devices/<device-id>/observations
	// with valid ids, or names another site.
	ErrBadTopic = errors.New("bad topic")
	// ErrDeviceMismatch: device_id differs from the topic's device id.
	ErrDeviceMismatch = errors.New("device_id does not match the topic")
	// ErrBadLOINC: loinc is not a LOINC code with a valid check digit.
	ErrBadLOINC = errors.New("bad loinc code")
	// ErrNotFinite: value does not fit a finite float64.
	ErrNotFinite = errors.New("value not finite")
	// ErrBadUnit: unit is empty or longer than MaxUnitLen.
	ErrBadUnit = errors.New("bad unit")
	// ErrBadTime: time is not RFC 3339 or is outside the years 1900-9999.
	ErrBadTime = errors.New("bad time")
	// ErrFutureTime: time is further ahead of the receiver's clock than
	// the allowed skew.
	ErrFutureTime = errors.New("time in the future")
	// ErrBadPatient: patient is not a patient id or reference.
	ErrBadPatient = errors.New("bad patient reference")
	// ErrUnknownDevice: the reading names no patient and the registry has
	// no patient for the device at the reading's time.
	ErrUnknownDevice = errors.New("unknown device")

	// Registry.

	// ErrInvalidRegistry: a registry file or entry list is malformed or
	// ambiguous. Messages name entry numbers, never patient ids.
	ErrInvalidRegistry = errors.New("invalid device registry")

	// Quarantine and data directories.

	// ErrInsecureDir: a directory that holds payloads is accessible by
	// group or others.
	ErrInsecureDir = errors.New("directory is accessible by group or others (want mode 0700)")
	// ErrQuarantineFull: the quarantine already holds its maximum number
	// of files.
	ErrQuarantineFull = errors.New("quarantine full")

	// In-flight store.

	// ErrBadStoreKey: a SealedStore key (Config.StoreKey) is not
	// StoreKeySize bytes.
	ErrBadStoreKey = errors.New("mqtt store key must be 32 bytes")
	// ErrCorruptEntry: a SealedStore entry does not decrypt or does not
	// hold one MQTT packet; Get logs it, deletes it and returns nil.
	ErrCorruptEntry = errors.New("mqtt store entry corrupt")

	// Subscriber.

	// ErrInvalidConfig: a Config field is missing or out of range.
	ErrInvalidConfig = errors.New("invalid device subscriber config")
	// ErrClosed: the Subscriber has been closed.
	ErrClosed = errors.New("device subscriber closed")
	// ErrAlreadyStarted: Run was called more than once.
	ErrAlreadyStarted = errors.New("device subscriber already started")

	// Embedded broker.

	// ErrNotLoopback: the embedded broker was asked to listen on an address
	// that is not a loopback IP.
	ErrNotLoopback = errors.New("embedded broker listens on loopback addresses only")
)
