package coordinator

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// A backup is a tar stream, in this order:
//
//	cohort-backup.json   BackupManifest
//	blobs/<sha256>       every model, optimizer state and open-round update
//	                     the snapshot's state names
//	snapshot             the Raft snapshot: the replicated state and the
//	                     audit log's leaves (see fsm.Snapshot)
//
// The snapshot comes last so a restore can stream it into Raft after the
// blobs it names are stored and replicated.
const (
	backupManifestName = "cohort-backup.json"
	backupSnapshotName = "snapshot"
	backupBlobDir      = "blobs/"
	backupFormat       = 1
)

// BackupManifest describes a backup.
type BackupManifest struct {
	Format  int       `json:"format"`
	Node    string    `json:"node"`
	Created time.Time `json:"created"`
	// Raft is the snapshot's metadata (index, term, size, membership).
	Raft  raft.SnapshotMeta `json:"raft"`
	Blobs []BackupBlob      `json:"blobs"`
	// AuditSize is the number of audit leaves in the snapshot.
	AuditSize uint64 `json:"audit_size"`
}

// BackupBlob is one blob in a backup.
type BackupBlob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// ErrBadBackup: a restore was given something that is not a whole backup.
var ErrBadBackup = errors.New("not a Cohort backup")

// backupTimeout bounds the snapshot a backup takes and a restore's Raft
// call; a large state (or 100 MB models) takes a while on a slow disk.
const backupTimeout = 10 * time.Minute

// latestSnapshot takes a fresh Raft snapshot (or, when nothing was applied
// since the last one, uses that) and opens it.
func (n *Node) latestSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	r := n.raftNode()
	if r == nil {
		return nil, nil, ErrNotLeader
	}
	fut := r.Snapshot()
	if err := fut.Error(); err == nil {
		return fut.Open()
	} else if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return nil, nil, fmt.Errorf("snapshot: none to back up: %v", err)
	}
	return n.snaps.Open(metas[0].ID)
}

// snapshotRefs reads the state at the head of a snapshot and returns the
// blobs it names, sorted, and its audit size.
func (n *Node) snapshotRefs(id string) ([]string, uint64, error) {
	_, rc, err := n.snaps.Open(id)
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	st := newState()
	if err := json.NewDecoder(bufio.NewReader(rc)).Decode(st); err != nil {
		return nil, 0, fmt.Errorf("snapshot state: %w", err)
	}
	models, bodies := st.blobRefs()
	var refs []string
	for d := range models {
		refs = append(refs, d)
	}
	for d := range bodies {
		if !models[d] {
			refs = append(refs, d)
		}
	}
	slices.Sort(refs)
	return refs, st.Audit.Size, nil
}

// getBackup is GET /v1/cluster/backup: the leader's latest snapshot and
// every blob it names, as a tar stream (see BackupManifest).
func (n *Node) getBackup(w http.ResponseWriter, req *http.Request) {
	rs := stateOf(req)
	fail := func(status int, detail string) { n.answer(w, rs, problemWriter(status, detail)) }
	meta, rc, err := n.latestSnapshot()
	if err != nil {
		n.log.Warn("backup", "err", err)
		fail(http.StatusServiceUnavailable, "could not take a snapshot: "+err.Error())
		return
	}
	defer rc.Close()
	refs, auditSize, err := n.snapshotRefs(meta.ID)
	if err != nil {
		fail(http.StatusInternalServerError, "could not read the snapshot: "+err.Error())
		return
	}
	man := BackupManifest{Format: backupFormat, Node: n.cfg.ID, Created: n.now().UTC(), Raft: *meta, AuditSize: auditSize}
	for _, d := range refs {
		if err := n.ensureBlob(req.Context(), d); err != nil {
			fail(http.StatusServiceUnavailable, fmt.Sprintf("blob %.12s is not on the leader yet; retry: %v", d, err))
			return
		}
		f, size, err := n.blob.open(d)
		if err != nil {
			fail(http.StatusInternalServerError, err.Error())
			return
		}
		f.Close()
		man.Blobs = append(man.Blobs, BackupBlob{Digest: d, Size: size})
	}
	if err := n.recordNow(rs, http.StatusOK); err != nil {
		writeProblem(w, http.StatusServiceUnavailable, "the request could not be recorded in the audit log; retry")
		return
	}
	// The stream may outlast the server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(backupTimeout))
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="cohort-backup-%d.tar"`, meta.Index))
	w.WriteHeader(http.StatusOK)
	if err := n.writeBackup(w, man, rc); err != nil {
		// The status is sent: the client sees a truncated tar, which a
		// restore refuses.
		n.log.Warn("backup stream", "err", err)
	}
}

func (n *Node) writeBackup(w io.Writer, man BackupManifest, snap io.Reader) error {
	tw := tar.NewWriter(w)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: 0o600, ModTime: man.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(hdr(backupManifestName, int64(len(mj)))); err != nil {
		return err
	}
	if _, err := tw.Write(mj); err != nil {
		return err
	}
	for _, b := range man.Blobs {
		f, size, err := n.blob.open(b.Digest)
		if err != nil {
			return err
		}
		if size != b.Size {
			f.Close()
			return fmt.Errorf("blob %.12s changed size", b.Digest)
		}
		if err := tw.WriteHeader(hdr(backupBlobDir+b.Digest, size)); err != nil {
			f.Close()
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(hdr(backupSnapshotName, man.Raft.Size)); err != nil {
		return err
	}
	if _, err := io.Copy(tw, io.LimitReader(snap, man.Raft.Size)); err != nil {
		return err
	}
	return tw.Close()
}

// RestoreResult is the answer of POST /v1/cluster/restore.
type RestoreResult struct {
	Index     uint64 `json:"index"`
	Term      uint64 `json:"term"`
	Blobs     int    `json:"blobs"`
	AuditSize uint64 `json:"audit_size"`
	From      string `json:"from_node"`
}

// postRestore is POST /v1/cluster/restore?confirm=replace-state: the
// cluster takes the state of a backup (see getBackup). Its blobs are
// stored and replicated to a majority first, then the snapshot goes to
// Raft, which installs it on every node. The cluster keeps its own
// membership; everything else (sites, jobs, models, tokens, the audit
// log) becomes the backup's, and the record of this request is the first
// leaf after the backup's.
func (n *Node) postRestore(w http.ResponseWriter, req *http.Request) {
	if req.URL.Query().Get("confirm") != "replace-state" {
		writeProblem(w, http.StatusBadRequest, "a restore replaces the whole replicated state (sites, jobs, models, tokens, audit log); add ?confirm=replace-state")
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(backupTimeout))
	res, err := n.restore(req.Context(), req.Body)
	if err != nil {
		status, detail := problemFor(err)
		if errors.Is(err, ErrBadBackup) {
			status, detail = http.StatusBadRequest, err.Error()
		}
		n.log.Warn("restore", "err", err)
		writeProblem(w, status, detail)
		return
	}
	n.log.Info("restored a backup", "index", res.Index, "blobs", res.Blobs, "from_node", res.From)
	writeJSON(w, http.StatusOK, res)
}

func (n *Node) restore(ctx context.Context, body io.Reader) (*RestoreResult, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadBackup, fmt.Sprintf(format, a...))
	}
	tr := tar.NewReader(body)
	h, err := tr.Next()
	if err != nil || h.Name != backupManifestName {
		return nil, bad("it must start with %s", backupManifestName)
	}
	var man BackupManifest
	dec := json.NewDecoder(io.LimitReader(tr, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&man); err != nil {
		return nil, bad("%s: %v", backupManifestName, err)
	}
	if man.Format != backupFormat {
		return nil, bad("format %d; this build reads format %d", man.Format, backupFormat)
	}
	if man.Raft.Size <= 0 || man.Raft.Index == 0 {
		return nil, bad("the manifest names no snapshot")
	}
	want := make(map[string]int64, len(man.Blobs))
	for _, b := range man.Blobs {
		if err := validDigest(b.Digest); err != nil || b.Size < 0 {
			return nil, bad("blob %q: not a sha256 digest and size", b.Digest)
		}
		want[b.Digest] = b.Size
	}
	got := 0
	for {
		if h, err = tr.Next(); err != nil {
			return nil, bad("it ends before its snapshot: %v", err)
		}
		if h.Name == backupSnapshotName {
			break
		}
		d, ok := strings.CutPrefix(h.Name, backupBlobDir)
		size, listed := want[d]
		if !ok || !listed || h.Size != size {
			return nil, bad("unexpected entry %q", h.Name)
		}
		if _, err := n.blob.write(d, size, tr); err != nil {
			return nil, bad("blob %.12s: %v", d, err)
		}
		if err := n.replicateBlob(ctx, d, size); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		delete(want, d)
		got++
	}
	if len(want) > 0 {
		return nil, bad("%d blobs the manifest lists are missing", len(want))
	}
	if h.Size != man.Raft.Size {
		return nil, bad("the snapshot is %d bytes, the manifest says %d", h.Size, man.Raft.Size)
	}
	r := n.raftNode()
	if r == nil || r.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	meta := man.Raft
	sr := &readErr{r: tr}
	if err := r.Restore(&meta, sr, backupTimeout); err != nil {
		if sr.err != nil && sr.err != io.EOF {
			// Raft wrote nothing to the state: the snapshot was cut short.
			return nil, bad("the snapshot: %v", sr.err)
		}
		return nil, fmt.Errorf("restore: %w", err)
	}
	// The nodes published in the backup are the old cluster's: publish
	// this one again (the engine's leader setup).
	n.setUpAgain.Store(true)
	return &RestoreResult{Index: man.Raft.Index, Term: man.Raft.Term, Blobs: got, AuditSize: man.AuditSize, From: man.Node}, nil
}

// readErr remembers the first error its reader returned.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}
