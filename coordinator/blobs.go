package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cohort-fl/cohort/protocol"
)

// blobStore keeps content-addressed blobs (update bodies for now) as files
// named by their SHA-256 under one directory. Writes go to a temporary file
// that is synced and renamed, so a crash never leaves a partial blob under
// its final name.
type blobStore struct {
	dir string
}

// errBlobMissing: the blob is not held here.
var errBlobMissing = errors.New("blob not held on this node")

func newBlobStore(dir string) (*blobStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob dir: %w", err)
	}
	return &blobStore{dir: dir}, nil
}

func (b *blobStore) path(digest string) (string, error) {
	if len(digest) != 64 {
		return "", fmt.Errorf("%w: digest %q", protocol.ErrBadTensor, digest)
	}
	for _, c := range digest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("%w: digest is not lowercase hex", protocol.ErrBadTensor)
		}
	}
	return filepath.Join(b.dir, digest), nil
}

// put stores data under its digest, which the caller has verified.
func (b *blobStore) put(digest string, data []byte) error {
	p, err := b.path(digest)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	f, err := os.CreateTemp(b.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("blob put: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("blob put: %w", err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("blob put: %w", err)
	}
	return nil
}

func (b *blobStore) get(digest string) ([]byte, error) {
	p, err := b.path(digest)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errBlobMissing
	}
	if err != nil {
		return nil, fmt.Errorf("blob get: %w", err)
	}
	if protocol.Digest(data) != digest {
		return nil, fmt.Errorf("blob %s is corrupt on disk", digest[:12])
	}
	return data, nil
}

func (b *blobStore) has(digest string) bool {
	p, err := b.path(digest)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

func (b *blobStore) remove(digest string) {
	if p, err := b.path(digest); err == nil {
		os.Remove(p)
	}
}
