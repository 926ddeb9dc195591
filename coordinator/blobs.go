package coordinator

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/protocol"
)

// blobStore keeps content-addressed blobs (global models and update
// bodies) as files named by their SHA-256 under one directory. Writes go to
// a temporary file that is hashed while written, synced and renamed only if
// the digest matches, so a crash or a corrupt transfer never leaves a
// partial or wrong blob under a final name.
type blobStore struct {
	dir string
}

// errBlobMissing: the blob is not held here.
var errBlobMissing = errors.New("blob not held on this node")

// errBlobCorrupt: bytes do not hash to the digest they were stored or sent
// under.
var errBlobCorrupt = errors.New("blob does not match its digest")

func newBlobStore(dir string) (*blobStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob dir: %w", err)
	}
	b := &blobStore{dir: dir}
	// Temporary files are writes a crash interrupted.
	tmps, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	for _, t := range tmps {
		os.Remove(t)
	}
	return b, nil
}

func validDigest(digest string) error {
	if len(digest) != 64 {
		return fmt.Errorf("%w: digest %q", protocol.ErrBadTensor, digest)
	}
	for _, c := range digest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%w: digest is not lowercase hex", protocol.ErrBadTensor)
		}
	}
	return nil
}

func (b *blobStore) path(digest string) (string, error) {
	if err := validDigest(digest); err != nil {
		return "", err
	}
	return filepath.Join(b.dir, digest), nil
}

// put stores data under digest, refusing data that does not hash to it.
func (b *blobStore) put(digest string, data []byte) error {
	_, err := b.write(digest, int64(len(data)), bytes.NewReader(data))
	return err
}

// write stores exactly size bytes read from r under digest. It returns
// errBlobCorrupt if they do not hash to digest, and does nothing (reading
// nothing) if the blob is already held.
func (b *blobStore) write(digest string, size int64, r io.Reader) (written bool, err error) {
	p, err := b.path(digest)
	if err != nil {
		return false, err
	}
	if b.has(digest) {
		return false, nil
	}
	f, err := os.CreateTemp(b.dir, ".tmp-*")
	if err != nil {
		return false, fmt.Errorf("blob write: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	h := sha256.New()
	n, cerr := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size))
	serr := f.Sync()
	if err := errors.Join(cerr, serr, f.Close()); err != nil {
		return false, fmt.Errorf("blob write: %w", err)
	}
	if n != size {
		return false, fmt.Errorf("blob write: %w after %d of %d bytes", io.ErrUnexpectedEOF, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return false, fmt.Errorf("%w: %.12s, got %.12s", errBlobCorrupt, digest, got)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return false, fmt.Errorf("blob write: %w", err)
	}
	return true, nil
}

// create stores data under the digest it hashes to, hashing it once while
// writing, and returns that digest.
func (b *blobStore) create(data []byte) (string, error) {
	f, err := os.CreateTemp(b.dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("blob create: %w", err)
	}
	defer os.Remove(f.Name()) // a no-op once renamed
	h := sha256.New()
	_, werr := io.Copy(io.MultiWriter(f, h), bytes.NewReader(data))
	serr := f.Sync()
	if err := errors.Join(werr, serr, f.Close()); err != nil {
		return "", fmt.Errorf("blob create: %w", err)
	}
	digest := hex.EncodeToString(h.Sum(nil))
	if b.has(digest) {
		return digest, nil
	}
	if err := os.Rename(f.Name(), filepath.Join(b.dir, digest)); err != nil {
		return "", fmt.Errorf("blob create: %w", err)
	}
	return digest, nil
}

// open returns the blob's file and size. The caller closes it.
func (b *blobStore) open(digest string) (*os.File, int64, error) {
	p, err := b.path(digest)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, errBlobMissing
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("blob open: %w", err)
	}
	return f, fi.Size(), nil
}

// get reads a whole blob and checks its digest.
func (b *blobStore) get(digest string) ([]byte, error) {
	f, _, err := b.open(digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("blob get: %w", err)
	}
	if protocol.Digest(data) != digest {
		return nil, fmt.Errorf("%w: %.12s on disk", errBlobCorrupt, digest)
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

// blobInfo is one held blob, for garbage collection.
type blobInfo struct {
	digest string
	size   int64
	mod    time.Time
}

// list returns every blob held.
func (b *blobStore) list() ([]blobInfo, error) {
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, fmt.Errorf("blob list: %w", err)
	}
	var out []blobInfo
	for _, e := range entries {
		if !e.Type().IsRegular() || validDigest(e.Name()) != nil {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("blob list: %w", err)
		}
		out = append(out, blobInfo{digest: e.Name(), size: fi.Size(), mod: fi.ModTime()})
	}
	return out, nil
}
