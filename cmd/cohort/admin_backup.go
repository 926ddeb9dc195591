package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/cohort-fl/cohort/coordinator"
)

func (a *adminCLI) clusterBackupCommand() *adminCommand {
	var out string
	var force bool
	return &adminCommand{
		name: "cluster backup", perm: "cluster.write", long: true,
		about: `Backs up the cluster to -o FILE: the leader takes a Raft snapshot (the whole
replicated state: sites, jobs, rounds, the model registry, people's token
hashes, privacy budgets, and the audit log's leaves) and sends it with every
model it names, as a tar. The file is written beside FILE first and kept only
when whole; it is created mode 0600, since it holds token hashes and models.
Restore it with 'cohort admin cluster restore'.`,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&out, "o", "", "write the backup to this `file`")
			fs.BoolVar(&force, "force", false, "replace FILE if it exists")
		},
		run: func(ctx context.Context, c *adminClient, _ []string) error {
			if out == "" {
				return errors.New("cluster backup: -o FILE is required")
			}
			if _, err := os.Stat(out); err == nil && !force {
				return fmt.Errorf("cluster backup: %s exists (--force replaces it)", out)
			}
			resp, err := c.open(ctx, "/v1/cluster/backup")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var man *coordinator.BackupManifest
			n, err := writeFileAtomically(out, force, resp.Body, func(tmp string, _ int64) (err error) {
				if man, err = checkBackup(tmp); err != nil {
					return fmt.Errorf("the leader sent an incomplete backup; nothing was written: %w", err)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("cluster backup: %w", err)
			}
			if a.json {
				return json.NewEncoder(a.stdout).Encode(man)
			}
			fmt.Fprintf(a.stdout, "backed up %s: Raft index %d (term %d), %d models, %d audit leaves, %d bytes, from %s\n",
				out, man.Raft.Index, man.Raft.Term, len(man.Blobs), man.AuditSize, n, man.Node)
			return nil
		},
	}
}

func (a *adminCLI) clusterRestoreCommand() *adminCommand {
	var yes bool
	return &adminCommand{
		name: "cluster restore", synopsis: "FILE", nargs: 1, perm: "cluster.write", long: true,
		about: `Restores a backup made by 'cohort admin cluster backup' into this cluster,
normally a new one (after a disaster): the models are stored and replicated
first, then every node installs the snapshot. The cluster keeps its own
members; everything else becomes the backup's, people's tokens included: the
token you use now stops working, and the backup's tokens work again. The
restore is the first audit leaf after the backup's. Needs --yes.`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&yes, "yes", false, "confirm that the cluster's whole state is to be replaced")
		},
		run: func(ctx context.Context, c *adminClient, args []string) error {
			man, err := checkBackup(args[0])
			if err != nil {
				return fmt.Errorf("cluster restore: %s: %w", args[0], err)
			}
			if !yes {
				return fmt.Errorf("cluster restore: this replaces the cluster's whole state with %s (Raft index %d from %s, %d models); add --yes", args[0], man.Raft.Index, man.Node, len(man.Blobs))
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			var res coordinator.RestoreResult
			raw, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/restore?confirm=replace-state",
				body: f, contentType: "application/x-tar", once: true}, &res)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(raw)
			}
			fmt.Fprintf(a.stdout, "restored Raft index %d from %s: %d models, %d audit leaves; use the backup's tokens from now on\n",
				res.Index, res.From, res.Blobs, res.AuditSize)
			return nil
		},
	}
}

// checkBackup reads a backup file through and returns its manifest, or
// says why it is not a whole backup.
func checkBackup(path string) (*coordinator.BackupManifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil || h.Name != "cohort-backup.json" {
		return nil, errors.New("not a Cohort backup (no cohort-backup.json first)")
	}
	var man coordinator.BackupManifest
	if err := json.NewDecoder(tr).Decode(&man); err != nil {
		return nil, fmt.Errorf("cohort-backup.json: %w", err)
	}
	sizes := map[string]int64{"snapshot": man.Raft.Size}
	for _, b := range man.Blobs {
		sizes["blobs/"+b.Digest] = b.Size
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		want, ok := sizes[h.Name]
		if !ok || h.Size != want {
			return nil, fmt.Errorf("unexpected entry %q", h.Name)
		}
		if n, err := io.Copy(io.Discard, tr); err != nil || n != want { // #nosec G110 -- reads one tar entry whose size was checked against the manifest above, into io.Discard; the operator chose the backup file
			return nil, fmt.Errorf("%s: cut short after %d bytes", h.Name, n)
		}
		delete(sizes, h.Name)
	}
	if len(sizes) > 0 {
		return nil, fmt.Errorf("%d entries are missing (the snapshot or models)", len(sizes))
	}
	return &man, nil
}
