package store

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Key file errors.
var (
	// ErrKeyFilePermissions: an existing key file is readable or writable
	// by group or others.
	ErrKeyFilePermissions = errors.New("key file is accessible by group or others (want mode 0600)")
	// ErrKeyFileSize: an existing key file does not hold exactly n bytes.
	ErrKeyFileSize = errors.New("key file has the wrong size")
	// ErrKeyFileNotRegular: the key path is not a regular file.
	ErrKeyFileNotRegular = errors.New("key file is not a regular file")
)

// LoadOrCreateKey reads the n-byte key in the file at path, or, when the
// file does not exist, creates it (mode 0600) with n bytes from crypto/rand.
// An existing key file that group or others may access is refused, as is one
// of the wrong size.
func LoadOrCreateKey(path string, n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("key file: %w: size %d", ErrKeyFileSize, n)
	}
	key, err := readKey(path, n)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = createKey(path, n)
	if errors.Is(err, fs.ErrExist) { // created concurrently: use that one
		return readKey(path, n)
	}
	return key, err
}

func readKey(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, ErrKeyFileNotRegular
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: mode %04o", ErrKeyFilePermissions, fi.Mode().Perm())
	}
	key, err := io.ReadAll(io.LimitReader(f, int64(n)+1))
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if len(key) != n {
		return nil, fmt.Errorf("%w: want %d bytes", ErrKeyFileSize, n)
	}
	return key, nil
}

func createKey(path string, n int) (key []byte, err error) {
	key = make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	if _, err := f.Write(key); err != nil {
		return nil, fmt.Errorf("write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("sync key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("close key file: %w", err)
	}
	// Make the new directory entry durable too (best effort).
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return key, nil
}

// Master key errors.
var (
	// ErrMasterKeyEnv: the master key environment variable is set but does
	// not hold base64 or hex of exactly MasterKeySize bytes.
	ErrMasterKeyEnv = errors.New("master key environment variable must hold base64 or hex of exactly 32 bytes")
	// ErrNoMasterKey: neither a master key file nor an environment
	// variable was named.
	ErrNoMasterKey = errors.New("no master key file or environment variable given")
)

// LoadMasterKey returns the store's master key, from the environment
// variable envVar when it is set, else from the key file at file.
//
// The environment wins when both are given and the variable is set (even
// to an empty value, which is an error rather than a silent fallback to
// the file). It must hold exactly MasterKeySize bytes encoded as hex (64
// digits) or base64 (standard or URL alphabet, padded or not); surrounding
// white space is ignored. The file is read, or created, as by
// LoadOrCreateKey. Errors name the variable or the file, never the key.
//
// A variable is visible to every process the agent starts and, on most
// systems, to the same user through /proc; feed it from a secret manager
// or a systemd credential rather than a unit file.
func LoadMasterKey(file, envVar string) ([]byte, error) {
	if envVar != "" {
		if v, ok := os.LookupEnv(envVar); ok {
			key, err := decodeKey(v, MasterKeySize)
			if err != nil {
				return nil, fmt.Errorf("%w: $%s %w", ErrMasterKeyEnv, envVar, err)
			}
			return key, nil
		}
		if file == "" {
			return nil, fmt.Errorf("%w: $%s is not set", ErrNoMasterKey, envVar)
		}
	}
	if file == "" {
		return nil, ErrNoMasterKey
	}
	key, err := LoadOrCreateKey(file, MasterKeySize)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", file, err)
	}
	return key, nil
}

// errKeyEncoding describes a key that does not decode, without its value.
type errKeyEncoding string

func (e errKeyEncoding) Error() string { return string(e) }

// decodeKey decodes an n-byte key written as hex or base64.
func decodeKey(s string, n int) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errKeyEncoding("is empty")
	}
	if len(s) == 2*n {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) != n {
			return nil, errKeyEncoding(fmt.Sprintf("decodes to %d bytes, want %d", len(b), n))
		}
		return b, nil
	}
	return nil, errKeyEncoding(fmt.Sprintf("is neither %d hex digits nor base64 (%d characters)", 2*n, len(s)))
}
