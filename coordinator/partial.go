package coordinator

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/quic-go/quic-go"
)

// Resumable uploads. An update body is written to
// data_dir/partial/<site>/<digest> as it arrives. If the stream breaks,
// the bytes received stay there: the agent learns their count from a round
// status (have_bytes) and sends the rest with UpdateUpload.offset. A
// complete body is checked against its digest and moved into the blob
// store. Each site keeps at most one partial upload; collect removes
// partial files older than blob_gc_grace.

func (n *Node) partialPath(site, digest string) string {
	return filepath.Join(n.cfg.DataDir, "partial", site, digest)
}

// partialBytes is how many bytes of a site's interrupted upload are held.
func (n *Node) partialBytes(site, digest string) uint64 {
	if !validID(site) || validDigest(digest) != nil {
		return 0
	}
	fi, err := os.Stat(n.partialPath(site, digest))
	if err != nil {
		return 0
	}
	return uint64(fi.Size())
}

// receiveBody reads the rest of an update body from s (offset bytes are
// already held from an earlier, interrupted upload) and returns the whole
// body once it is complete, verified and stored as a blob; or the answer
// to send instead.
func (n *Node) receiveBody(site string, s *quic.Stream, d *pb.BlobRef, offset uint64,
	reject func(pb.ErrorCode, string, ...any) *pb.Envelope) ([]byte, *pb.Envelope) {
	digest, size := d.GetSha256(), d.GetSize()
	if n.blob.has(digest) && offset == 0 {
		// Already held (sent before, to this leader): read and discard.
		s.SetReadDeadline(time.Now().Add(blobTimeout))
		if k, err := io.CopyN(io.Discard, s, int64(size)); err != nil {
			return nil, reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "update body ended early after %d bytes: %v", k, err)
		}
		body, err := n.blob.get(digest)
		if err != nil {
			return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "could not read the update back")
		}
		return body, nil
	}
	p := n.partialPath(site, digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		n.log.Error("partial upload dir", "err", err)
		return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "could not store the update")
	}
	var (
		f   *os.File
		err error
	)
	if offset == 0 {
		// A new upload: this site's other partial uploads are abandoned.
		olds, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "*"))
		for _, o := range olds {
			if o != p {
				os.Remove(o)
			}
		}
		f, err = os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	} else {
		if held := n.partialBytes(site, digest); held != offset {
			// UNAVAILABLE: the agent asks the round status again and
			// resumes from what is held, instead of dropping its update.
			return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_UNAVAILABLE,
				"resume from byte %d, but %d bytes of this update are held; ask the round status again", offset, held)
		}
		f, err = os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0o600)
	}
	if err != nil {
		n.log.Error("partial upload", "err", err)
		return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "could not store the update")
	}
	s.SetReadDeadline(time.Now().Add(blobTimeout))
	k, cerr := io.CopyN(f, s, int64(size-offset))
	n.stats.BytesReceived.Add(k)
	serr := f.Sync()
	if err := errors.Join(serr, f.Close()); err != nil {
		n.log.Error("partial upload", "err", err)
		return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "could not store the update")
	}
	if cerr != nil {
		n.stats.UploadsInterrupted.Add(1)
		return nil, reject(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "update body ended after %d of %d bytes (%v); resume from byte %d",
			offset+uint64(k), size, cerr, offset+uint64(k))
	}
	pf, err := os.Open(p)
	if err != nil {
		return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "could not store the update")
	}
	_, werr := n.blob.write(digest, int64(size), pf)
	pf.Close()
	os.Remove(p)
	if errors.Is(werr, errBlobCorrupt) {
		return nil, reject(pb.ErrorCode_ERROR_CODE_DIGEST_MISMATCH, "update body does not match its declared sha256")
	}
	if werr != nil {
		n.log.Error("store update", "err", werr)
		return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "could not store the update")
	}
	if offset > 0 {
		n.stats.UploadsResumed.Add(1)
	}
	body, err := n.blob.get(digest)
	if err != nil {
		return nil, protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "could not read the update back")
	}
	return body, nil
}

// collectPartials removes partial uploads older than the grace period.
func (n *Node) collectPartials(cutoff time.Time) int {
	removed := 0
	root := filepath.Join(n.cfg.DataDir, "partial")
	sites, _ := os.ReadDir(root)
	for _, sd := range sites {
		files, _ := os.ReadDir(filepath.Join(root, sd.Name()))
		for _, f := range files {
			fi, err := f.Info()
			if err == nil && fi.ModTime().Before(cutoff) {
				if os.Remove(filepath.Join(root, sd.Name(), f.Name())) == nil {
					removed++
				}
			}
		}
	}
	if removed > 0 {
		n.log.Info("stale partial uploads removed", "files", removed)
	}
	return removed
}
