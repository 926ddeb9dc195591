package coordinator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Model blobs between coordinators.
//
// A global model is a content-addressed file (blobStore). The leader writes
// a new model, pushes it to enough peers that a majority of voters hold it,
// and only then proposes the Raft entry that names it (by digest and size):
// once the entry is committed, a majority can serve the model, so no single
// failure loses it. Nodes that lack a model named in the log fetch it from
// their peers in the background (syncBlobs), and on demand when an agent
// asks for it. Blobs no entry references any more are removed (collect).
//
// The protocol runs on the Raft listener under its own ALPN, with the same
// mutual TLS between coordinator certificates. One request per connection:
//
//	request:  op (1 byte) | digest (64 hex bytes) | n (uint64, big endian)
//	get (op 'G', n = offset): status; if ok, the size (uint64) then the
//	          bytes from offset to the end
//	put (op 'P', n = size):   status ok (send it) or have (done); after the
//	          bytes, status ok (stored) or an error
//
// A status is one byte; an error status is followed by a uint16 length and
// a message.

// BlobALPN is the ALPN of blob transfers between coordinators.
const BlobALPN = "cohort-blob/1"

const (
	blobOpGet = 'G'
	blobOpPut = 'P'

	blobOK      = 0
	blobHave    = 1 // put: already held; get: (unused)
	blobMissing = 2 // get: not held here
	blobErr     = 3 // followed by a message
)

// blobTransferTimeout bounds one transfer of size bytes: a fixed part plus
// 1 s per 4 MiB, generous for a LAN between coordinators.
func blobTransferTimeout(size int64) time.Duration {
	return 30*time.Second + time.Duration(size/(4<<20))*time.Second
}

// serveBlobConn answers one peer request on c and closes it.
func (n *Node) serveBlobConn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var hdr [1 + 64 + 8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	op, digest, arg := hdr[0], string(hdr[1:65]), binary.BigEndian.Uint64(hdr[65:])
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		b := []byte{blobErr, 0, 0}
		binary.BigEndian.PutUint16(b[1:], uint16(len(msg)))
		c.Write(append(b, msg...))
	}
	if err := validDigest(digest); err != nil {
		fail("%v", err)
		return
	}
	switch op {
	case blobOpGet:
		f, size, err := n.blob.open(digest)
		if errors.Is(err, errBlobMissing) {
			c.Write([]byte{blobMissing})
			return
		}
		if err != nil {
			fail("%v", err)
			return
		}
		defer f.Close()
		if arg > uint64(size) {
			fail("offset %d is past the blob's %d bytes", arg, size)
			return
		}
		c.SetDeadline(time.Now().Add(blobTransferTimeout(size)))
		var b [9]byte
		b[0] = blobOK
		binary.BigEndian.PutUint64(b[1:], uint64(size))
		if _, err := c.Write(b[:]); err != nil {
			return
		}
		if _, err := f.Seek(int64(arg), io.SeekStart); err != nil {
			return
		}
		if k, err := io.Copy(c, f); err == nil {
			n.stats.BlobBytesServed.Add(k)
		}
	case blobOpPut:
		if arg > uint64(n.cfg.MaxModelBytes) {
			fail("%d bytes is above this node's max_model_bytes (%d)", arg, n.cfg.MaxModelBytes)
			return
		}
		if n.blob.has(digest) {
			c.Write([]byte{blobHave})
			return
		}
		c.SetDeadline(time.Now().Add(blobTransferTimeout(int64(arg))))
		if _, err := c.Write([]byte{blobOK}); err != nil {
			return
		}
		if _, err := n.blob.write(digest, int64(arg), c); err != nil {
			n.log.Warn("blob from peer refused", "blob", digest[:12], "err", err)
			fail("%v", err)
			return
		}
		c.Write([]byte{blobOK})
	default:
		fail("unknown operation %q", op)
	}
}

// readBlobStatus reads a status byte, and an error status's message.
func readBlobStatus(r io.Reader) (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	if b[0] != blobErr {
		return b[0], nil
	}
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return 0, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, err
	}
	return blobErr, fmt.Errorf("peer: %s", msg)
}

// expectStatus reads a status and fails unless it is ok or one of also.
func expectStatus(r io.Reader, also ...byte) (byte, error) {
	st, err := readBlobStatus(r)
	if err != nil {
		return 0, err
	}
	if st != blobOK && !slices.Contains(also, st) {
		return 0, fmt.Errorf("peer answered status %d", st)
	}
	return st, nil
}

func (n *Node) blobRequest(ctx context.Context, addr string, op byte, digest string, arg uint64) (net.Conn, error) {
	c, err := n.stream.DialProtocol(ctx, addr, BlobALPN)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	c = &ctxConn{Conn: c, stop: context.AfterFunc(ctx, func() { c.Close() })}
	var hdr [1 + 64 + 8]byte
	hdr[0] = op
	copy(hdr[1:65], digest)
	binary.BigEndian.PutUint64(hdr[65:], arg)
	if _, err := c.Write(hdr[:]); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ctxConn is a connection that its context's end closes.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// fetchBlobFrom copies a blob from the peer at addr (its Raft address).
func (n *Node) fetchBlobFrom(ctx context.Context, addr, digest string) error {
	c, err := n.blobRequest(ctx, addr, blobOpGet, digest, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	if st, err := expectStatus(c, blobMissing); err != nil {
		return err
	} else if st == blobMissing {
		return errBlobMissing
	}
	var sz [8]byte
	if _, err := io.ReadFull(c, sz[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint64(sz[:])
	if size > uint64(n.cfg.MaxModelBytes) {
		return fmt.Errorf("peer offers %d bytes, above max_model_bytes (%d)", size, n.cfg.MaxModelBytes)
	}
	written, err := n.blob.write(digest, int64(size), c)
	if err != nil {
		return err
	}
	if written {
		n.stats.BlobsFetched.Add(1)
	}
	return nil
}

// pushBlobTo sends a blob this node holds to the peer at addr.
func (n *Node) pushBlobTo(ctx context.Context, addr, digest string) error {
	f, size, err := n.blob.open(digest)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := n.blobRequest(ctx, addr, blobOpPut, digest, uint64(size))
	if err != nil {
		return err
	}
	defer c.Close()
	if st, err := expectStatus(c, blobHave); err != nil || st == blobHave {
		return err
	}
	if _, err := io.Copy(c, f); err != nil {
		return err
	}
	if _, err := expectStatus(c); err != nil {
		return err
	}
	n.stats.BlobBytesPushed.Add(size)
	return nil
}

// peer is another voter of the Raft configuration.
type peer struct {
	id, addr string
}

// peers returns the other servers of the current Raft configuration, the
// leader first when it is one of them, then the rest in random order; and
// the number of voters (this node included).
func (n *Node) peers() (others []peer, voters int, err error) {
	r := n.raftNode()
	if r == nil {
		return nil, 0, ErrNotLeader
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, 0, fmt.Errorf("raft configuration: %w", err)
	}
	_, leader := r.LeaderWithID()
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if string(s.ID) != n.cfg.ID {
			others = append(others, peer{id: string(s.ID), addr: string(s.Address)})
		}
	}
	rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	slices.SortStableFunc(others, func(a, b peer) int {
		switch {
		case a.id == string(leader) && b.id != string(leader):
			return -1
		case b.id == string(leader) && a.id != string(leader):
			return 1
		}
		return 0
	})
	return others, voters, nil
}

// replicateBlob pushes a blob this node holds to its peers and returns once
// a majority of voters (this node included) hold it. The pushes to the
// remaining peers go on in the background.
func (n *Node) replicateBlob(ctx context.Context, digest string, size int64) error {
	others, voters, err := n.peers()
	if err != nil {
		return err
	}
	need := voters/2 + 1 - 1 // this node holds it
	if need <= 0 {
		return nil
	}
	results := make(chan error, len(others))
	bg, cancel := context.WithTimeout(n.bgCtx, blobTransferTimeout(size))
	var wg sync.WaitGroup
	for _, p := range others {
		wg.Go(func() {
			err := n.pushBlobTo(bg, p.addr, digest)
			if err != nil {
				err = fmt.Errorf("%s: %w", p.id, err)
			}
			results <- err
		})
	}
	n.bgWG.Go(func() { wg.Wait(); cancel() })
	var errs []error
	ok := 0
	for range others {
		select {
		case err := <-results:
			if err == nil {
				if ok++; ok >= need {
					return nil
				}
				continue
			}
			errs = append(errs, err)
			if len(others)-len(errs) < need {
				return fmt.Errorf("model %.12s reached %d of the %d peers a majority needs: %w", digest, ok, need, errors.Join(errs...))
			}
		case <-ctx.Done():
			return fmt.Errorf("model %.12s reached %d of the %d peers a majority needs: %w", digest, ok, need, ctx.Err())
		}
	}
	return fmt.Errorf("model %.12s reached %d of the %d peers a majority needs", digest, ok, need)
}

// ensureBlob makes sure this node holds a blob, fetching it from a peer if
// not. Concurrent calls for one digest share one fetch.
func (n *Node) ensureBlob(ctx context.Context, digest string) error {
	if n.blob.has(digest) {
		return nil
	}
	n.fetchMu.Lock()
	wait, busy := n.fetching[digest]
	if !busy {
		wait = make(chan struct{})
		n.fetching[digest] = wait
	}
	n.fetchMu.Unlock()
	if busy {
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
		if n.blob.has(digest) {
			return nil
		}
		return fmt.Errorf("model %.12s: %w, and no peer sent it", digest, errBlobMissing)
	}
	defer func() {
		n.fetchMu.Lock()
		delete(n.fetching, digest)
		n.fetchMu.Unlock()
		close(wait)
	}()
	others, _, err := n.peers()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range others {
		err := n.fetchBlobFrom(ctx, p.addr, digest)
		if err == nil {
			n.log.Info("model fetched from a peer", "blob", digest[:12], "peer", p.id)
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.id, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("model %.12s: %w, and there is no peer to fetch it from", digest, errBlobMissing)
	}
	return fmt.Errorf("model %.12s is not held here and no peer sent it: %w", digest, errors.Join(errs...))
}

// referencedBlobs returns every blob the replicated state names: each
// job's models, and the update bodies of open rounds.
func (n *Node) referencedBlobs() (models, bodies map[string]bool) {
	n.fsm.view(func(st *state) { models, bodies = st.blobRefs() })
	return models, bodies
}

// blobRefs returns every blob st names: each job's models and optimizer
// state, and the update bodies of open rounds.
func (st *state) blobRefs() (models, bodies map[string]bool) {
	models, bodies = make(map[string]bool), make(map[string]bool)
	for _, j := range st.Jobs {
		for _, m := range j.Models {
			models[m.Digest] = true
		}
		if j.OptState != nil {
			models[j.OptState.Digest] = true
		}
		if j.Current != nil {
			for _, rc := range j.Current.Receipts {
				if rc.Digest != "" {
					bodies[rc.Digest] = true
				}
			}
		}
	}
	return models, bodies
}

// syncBlobs fetches, in the background, every model the log names that
// this node lacks, so that any node can serve agents and take over as
// leader without waiting for a transfer.
func (n *Node) syncBlobs(ctx context.Context) error {
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		changed := n.fsm.changed()
		models, _ := n.referencedBlobs()
		for _, d := range slices.Sorted(maps.Keys(models)) {
			if ctx.Err() != nil {
				return nil
			}
			if n.blob.has(d) {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, blobTransferTimeout(int64(n.cfg.MaxModelBytes)))
			if err := n.ensureBlob(fctx, d); err != nil && ctx.Err() == nil {
				n.log.Debug("model sync", "blob", d[:12], "err", err)
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-retry.C:
		}
	}
}

// CollectGarbage removes the blobs that no replicated entry references and
// that are older than the configured grace period (a model being
// replicated is not referenced until its entry commits). It returns how
// many blobs and bytes it removed.
func (n *Node) CollectGarbage() (blobs int, bytes int64, err error) {
	models, bodies := n.referencedBlobs()
	held, err := n.blob.list()
	if err != nil {
		return 0, 0, err
	}
	cutoff := n.now().Add(-time.Duration(n.cfg.BlobGCGrace))
	n.collectPartials(cutoff)
	for _, b := range held {
		if models[b.digest] || bodies[b.digest] || b.mod.After(cutoff) {
			continue
		}
		n.blob.remove(b.digest)
		blobs++
		bytes += b.size
	}
	if blobs > 0 {
		n.stats.BlobsCollected.Add(int64(blobs))
		n.log.Info("unreferenced blobs removed", "blobs", blobs, "bytes", bytes)
	}
	return blobs, bytes, nil
}

func (n *Node) collectLoop(ctx context.Context) error {
	t := time.NewTicker(time.Duration(n.cfg.BlobGCInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, _, err := n.CollectGarbage(); err != nil {
				n.log.Warn("blob garbage collection", "err", err)
			}
		}
	}
}
