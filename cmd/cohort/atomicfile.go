package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// writeFileAtomically copies r into a temporary file beside out (mode
// 0600, as os.CreateTemp makes it), syncs it, lets check look at the whole
// file (check may be nil), and only then puts it at out. Without force an
// existing out is an error, also one that appeared during the copy. On any
// error nothing is left behind and out is untouched. It returns the bytes
// copied.
func writeFileAtomically(out string, force bool, r io.Reader, check func(tmp string, n int64) error) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.part")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // after a rename this removes nothing
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("after %d bytes: %w", n, err)
	}
	if check != nil {
		if err := check(tmp.Name(), n); err != nil {
			return n, err
		}
	}
	if force {
		return n, os.Rename(tmp.Name(), out)
	}
	// A hard link does not replace a file that appeared meanwhile.
	if err := os.Link(tmp.Name(), out); err != nil {
		if errors.Is(err, os.ErrExist) {
			return n, fmt.Errorf("%s exists (--force replaces it)", out)
		}
		return n, os.Rename(tmp.Name(), out) // a file system without hard links
	}
	return n, nil
}
