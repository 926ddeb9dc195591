package coordinator

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// getBackupTar downloads a backup from addr with token.
func (tc *testCluster) getBackupTar(t *testing.T, addr, token string) []byte {
	t.Helper()
	for try := 0; ; try++ {
		req, _ := http.NewRequest("GET", "https://"+addr+"/v1/cluster/backup", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := tc.adminHTTP(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "application/x-tar" {
			return raw
		}
		if resp.StatusCode != http.StatusServiceUnavailable || try == 50 {
			t.Fatalf("backup: %d %s", resp.StatusCode, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// auditLeaves returns node n's first k audit leaves.
func auditLeaves(t *testing.T, n *Node, k uint64) [][]byte {
	t.Helper()
	var out [][]byte
	for uint64(len(out)) < k {
		ls, err := n.audit.log.Entries(uint64(len(out)), int(k)-len(out))
		if err != nil || len(ls) == 0 {
			t.Fatalf("audit leaves of %s from %d: %v (%d)", n.cfg.ID, len(out), err, len(ls))
		}
		out = append(out, ls...)
	}
	return out[:k]
}

// TestBackupAndRestoreIntoANewCluster: a backup of one cluster (its
// state, audit log and models) restored into a fresh three-node cluster
// makes every node of the new one hold the old one's jobs, models and
// audit leaves; the old cluster's tokens are the ones that work; a
// damaged backup is refused and changes nothing.
func TestBackupAndRestoreIntoANewCluster(t *testing.T) {
	sites := []string{"st-a", "st-b"}
	src := startCluster(t, 1, sites, []JobSpec{testJob("j1", 2, 2)})
	sl, _ := src.leader(t)
	trainRounds(t, sl, "j1", []*rawAgent{src.welcomed(t, sl, "st-a"), src.welcomed(t, sl, "st-b")}, 2)
	srcJob, _ := sl.Job("j1")
	if len(srcJob.Models) != 3 {
		t.Fatalf("source models: %d", len(srcJob.Models))
	}
	backup := src.getBackupTar(t, sl.AdminAddr(), src.token)

	// What is in it: the manifest first, every model, the snapshot last.
	tr := tar.NewReader(bytes.NewReader(backup))
	var names []string
	var man BackupManifest
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == backupManifestName {
			if err := json.NewDecoder(tr).Decode(&man); err != nil {
				t.Fatal(err)
			}
		}
	}
	if names[0] != backupManifestName || names[len(names)-1] != backupSnapshotName {
		t.Fatalf("backup entries: %v", names)
	}
	for _, m := range srcJob.Models {
		if !slices.Contains(names, backupBlobDir+m.Digest) {
			t.Fatalf("model %s is not in the backup (%v)", m.Digest[:8], names)
		}
	}
	if man.Node != "c1" || man.AuditSize == 0 || len(man.Blobs) < 3 {
		t.Fatalf("manifest: %+v", man)
	}

	dst := startCluster(t, 3, nil, nil)
	dl, followers := dst.leader(t)
	restore := func(body []byte, query string) (int, string) {
		return dst.apiOnce(t, dst.token, "POST", dl.AdminAddr(), "/v1/cluster/restore"+query, string(body), nil)
	}
	// Refusals first: nothing changes.
	for name, c := range map[string]struct {
		body  []byte
		query string
	}{
		"no confirmation": {backup, ""},
		"garbage":         {[]byte("not a tar"), "?confirm=replace-state"},
		"truncated":       {backup[:len(backup)-2048], "?confirm=replace-state"},
		"no snapshot":     {backup[:1024], "?confirm=replace-state"},
	} {
		if code, raw := restore(c.body, c.query); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, code, raw)
		}
	}
	if _, ok := dl.Job("j1"); ok {
		t.Fatal("a refused restore changed the state")
	}

	var res RestoreResult
	if code, raw := restore(backup, "?confirm=replace-state"); code != http.StatusOK || json.Unmarshal([]byte(raw), &res) != nil {
		t.Fatalf("restore: %d %s", code, raw)
	}
	if res.From != "c1" || res.Blobs != len(man.Blobs) || res.AuditSize != man.AuditSize {
		t.Fatalf("restore result %+v, manifest %+v", res, man)
	}
	srcLeaves := auditLeaves(t, sl, man.AuditSize)
	for _, n := range dst.nodes {
		waitFor(t, n, "the restored job on "+n.cfg.ID, func() bool {
			j, ok := n.Job("j1")
			return ok && j.CommittedRounds() == 2
		})
		j, _ := n.Job("j1")
		for i, m := range j.Models {
			if m.Digest != srcJob.Models[i].Digest {
				t.Fatalf("%s: model %d is %s, was %s", n.cfg.ID, i, m.Digest[:8], srcJob.Models[i].Digest[:8])
			}
		}
		waitFor(t, n, "the audit log on "+n.cfg.ID, func() bool { return n.audit.log.Size() > man.AuditSize })
		for i, l := range auditLeaves(t, n, man.AuditSize) {
			if !bytes.Equal(l, srcLeaves[i]) {
				t.Fatalf("%s: audit leaf %d differs from the source's", n.cfg.ID, i)
			}
		}
	}
	// The restore request is the first leaf after the backup's.
	next, err := dl.audit.log.Entries(man.AuditSize, 1)
	if err != nil || len(next) != 1 || !strings.Contains(string(next[0]), "POST /v1/cluster/restore") {
		t.Fatalf("leaf after the backup's: %q %v", next, err)
	}
	// Followers hold (or fetch) the models.
	for _, f := range followers {
		for _, m := range srcJob.Models {
			if _, err := f.ModelWeights(t.Context(), m.Digest); err != nil {
				t.Fatalf("%s: model %s: %v", f.cfg.ID, m.Digest[:8], err)
			}
		}
	}
	// The backup's tokens are the cluster's now; the new leader serves
	// with its own addresses published again.
	if code, raw := dst.apiAs(t, src.token, "GET", dl.AdminAddr(), "/v1/jobs/j1", nil, nil); code != http.StatusOK {
		t.Fatalf("the source's token after the restore: %d %s", code, raw)
	}
	if code, _ := dst.apiAs(t, dst.token, "GET", dl.AdminAddr(), "/v1/jobs/j1", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("the new cluster's bootstrap token still works after the restore: %d", code)
	}
	waitFor(t, dl, "the leader's node info published again", func() bool {
		var info NodeInfo
		dl.fsm.view(func(st *state) { info = st.Nodes[dl.cfg.ID] })
		return info.AdminAddr == dl.AdminAddr()
	})
}
