package bulk

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Errors returned by the package wrap one of them.
var (
	// ErrInvalidConfig: Config.Validate refused the configuration.
	ErrInvalidConfig = errors.New("invalid config")
	// ErrInsecureURL: a URL is not https (http is allowed on loopback
	// hosts only), is relative, or carries credentials.
	ErrInsecureURL = errors.New("insecure or invalid url")
	// ErrUnsupportedKey: the private key is not ECDSA P-384 or RSA of at
	// least 2048 bits, or it is encrypted.
	ErrUnsupportedKey = errors.New("unsupported private key")
	// ErrKeyPermissions: the private key file is readable or writable by
	// group or others.
	ErrKeyPermissions = errors.New("private key file is accessible to group or others")
	// ErrBadKeyFile: the key file holds no PEM private key that parses.
	ErrBadKeyFile = errors.New("no usable private key in file")
	// ErrDiscovery: .well-known/smart-configuration could not be read or
	// names no usable token endpoint.
	ErrDiscovery = errors.New("smart configuration discovery failed")
	// ErrAuth: the token endpoint refused the client or gave no usable
	// token.
	ErrAuth = errors.New("authorization failed")
	// ErrUnauthorized: the server answered 401 even with a fresh token.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrKickOff: the server refused the export request.
	ErrKickOff = errors.New("export kick-off refused")
	// ErrExportFailed: the status endpoint reported that the export failed.
	ErrExportFailed = errors.New("export failed")
	// ErrTimeout: the export did not complete within Config.MaxWait.
	ErrTimeout = errors.New("export did not complete in time")
	// ErrUnreachable: a request failed in transport (connection refused,
	// reset, TLS failure); the error it wraps says how.
	ErrUnreachable = errors.New("server unreachable")
	// ErrTooManyRetries: a request still got 429, 503 or a transport error
	// after Config.MaxRetries retries.
	ErrTooManyRetries = errors.New("too many retries")
	// ErrManifest: the completion manifest is malformed.
	ErrManifest = errors.New("bad completion manifest")
	// ErrDownload: an output or error file could not be downloaded.
	ErrDownload = errors.New("download failed")
	// ErrForeignURL: a URL that needs the access token is not on the FHIR
	// server's origin, so the token is not sent there.
	ErrForeignURL = errors.New("url is not on the fhir server's origin")
	// ErrCancel: the server refused to cancel the export.
	ErrCancel = errors.New("cancel refused")
	// ErrProtocol: the server answered in a way the Bulk Data
	// specification does not allow (an unexpected status, a 202 without
	// Content-Location, an unsupported Content-Encoding).
	ErrProtocol = errors.New("bulk data protocol violation")

	// errNotJSON: a body is not the JSON expected. encoding/json's own
	// messages quote input bytes, so they are replaced by this one.
	errNotJSON = errors.New("body is not the expected json")
)

// StatusError is an error response from the server: the operation, the
// server endpoint, the HTTP status and the issue codes of the
// OperationOutcome in the body, if any. Diagnostics text is not kept: it
// is free text that may quote data. It wraps one of the sentinel errors.
type StatusError struct {
	// Op is the operation: "kick-off", "status", "download", "cancel",
	// "token", "discovery".
	Op string
	// Method is the HTTP method.
	Method string
	// URL is the server endpoint requested.
	URL string
	// StatusCode is the HTTP status.
	StatusCode int
	// Issues are the OperationOutcome issue codes (e.g. "not-supported",
	// "too-costly"), or for the token endpoint the OAuth error code (e.g.
	// "invalid_client"); only values made of letters, digits, '-' and '_'
	// are kept.
	Issues []string
	// Err is the sentinel error this error wraps.
	Err error
}

func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v: %s %s: status %d", e.Op, e.Err, e.Method, e.URL, e.StatusCode)
	if len(e.Issues) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(e.Issues, ", "))
	}
	return b.String()
}

// Unwrap returns the sentinel error.
func (e *StatusError) Unwrap() error { return e.Err }

// safeCode keeps s when it is a short token made of letters, digits, '-',
// '_' and '.', the shape of FHIR issue codes and OAuth error codes.
func safeCode(s string) (string, bool) {
	if len(s) == 0 || len(s) > 64 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", false
		}
	}
	return s, true
}
