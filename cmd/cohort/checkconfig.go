package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
)

// redactedSecret stands for a password in a printed configuration.
const redactedSecret = "(redacted)"

// printEffectiveConfig writes the configuration a command would run with,
// its config file with the flags applied and the defaults filled in, as
// indented JSON (--check-config). Callers redact the secrets first.
func printEffectiveConfig(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("print the configuration: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// redactURL hides the password of a URL's user information
// (tcp://user:secret@host), for a printed configuration.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}
