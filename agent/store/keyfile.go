package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
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
