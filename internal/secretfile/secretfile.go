// Package secretfile reads files that hold secrets (keys, tokens,
// passwords) only when their owner alone may read them, and says why
// otherwise. Its errors name the file and its mode, never its contents.
package secretfile

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// ErrTooOpen: a secret file that group or others may read or write.
var ErrTooOpen = errors.New("readable or writable by group or others")

// Check refuses a file that group or others may read or write. what names
// the secret for the message ("mqtt.password_file").
func Check(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s %s has mode %04o, %w: it holds a secret, make it readable by its owner only (chmod 600 %s)",
			what, path, fi.Mode().Perm(), ErrTooOpen, path)
	}
	return nil
}

// Read returns the contents of an owner-only file, trimmed of surrounding
// white space, and refuses an empty one.
func Read(path, what string) (string, error) {
	if err := Check(path, what); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}
