package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/cohort-fl/cohort/coordinator"
)

func (a *adminCLI) modelCommands() []*adminCommand {
	var (
		job, out string
		force    bool
	)
	return []*adminCommand{
		{
			name: "models", perm: "models.read",
			about: `Lists the committed global models (every page): digest (SHA-256 of the
weights), job, round (0 is a job's initial model) and size.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&job, "job", "", "only the models of this job `id`")
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				path := "/v1/models"
				if job != "" {
					path = withQuery(path, "job", job)
				}
				raws, err := listAll[json.RawMessage](ctx, c, path, "models")
				if err != nil {
					return err
				}
				if a.json {
					return a.printList("models", raws)
				}
				models, err := decodeAll[coordinator.ModelView](raws)
				if err != nil {
					return err
				}
				tw := a.table()
				fmt.Fprintln(tw, "DIGEST\tJOB\tROUND\tSIZE")
				for _, m := range models {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", m.Digest, m.Job, m.Round, humanBytes(m.Size))
				}
				tw.Flush()
				return nil
			},
		},
		{
			name: "models show", synopsis: "DIGEST", nargs: 1, perm: "models.read",
			about: `Shows one committed model: its job, round and size. DIGEST may be a unique
prefix of the digest (at least 8 hex digits).`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				d, err := resolveDigest(ctx, c, args[0])
				if err != nil {
					return err
				}
				var m coordinator.ModelView
				raw, err := c.get(ctx, "/v1/models/"+url.PathEscape(d), &m)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				fmt.Fprintf(a.stdout, "model %s\njob %s, round %d, %s (%d bytes)\n", m.Digest, m.Job, m.Round, humanBytes(m.Size), m.Size)
				return nil
			},
		},
		{
			name: "models download", synopsis: "DIGEST", nargs: 1, perm: "models.download", long: true,
			about: `Downloads a committed model's weights (packed little-endian float32) to -o
FILE. The weights are written to a temporary file beside FILE, their
SHA-256 is checked against DIGEST and the server's Cohort-Model-Sha256
header, and only then is the file renamed to FILE. An existing FILE is
kept unless --force is given. DIGEST may be a unique prefix (at least 8
hex digits). Only committed global models can be downloaded, never a
site's individual update.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&out, "o", "", "write the weights to this `file`")
				fs.BoolVar(&force, "force", false, "replace an existing file")
			},
			run: func(ctx context.Context, c *adminClient, args []string) error {
				if out == "" {
					return errors.New("models download: -o FILE is required")
				}
				if !force {
					if _, err := os.Lstat(out); err == nil {
						return fmt.Errorf("models download: %s exists (--force replaces it)", out)
					}
				}
				d, err := resolveDigest(ctx, c, args[0])
				if err != nil {
					return err
				}
				n, err := downloadModel(ctx, c, d, out, force)
				if err != nil {
					return fmt.Errorf("models download: %w", err)
				}
				if a.json {
					return a.printValue(map[string]any{"digest": d, "file": out, "size": n})
				}
				fmt.Fprintf(a.stdout, "wrote %s: %d bytes (%s), sha256 %s verified\n", out, n, humanBytes(n), d)
				return nil
			},
		},
	}
}

// errDigestMismatch: downloaded weights do not hash to their digest.
var errDigestMismatch = errors.New("the weights do not match the digest")

// downloadModel fetches a model's weights into out through a temporary
// file, and keeps them only if they hash to digest.
func downloadModel(ctx context.Context, c *adminClient, digest, out string, force bool) (int64, error) {
	resp, err := c.open(ctx, "/v1/models/"+url.PathEscape(digest)+"/weights")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if h := resp.Header.Get("Cohort-Model-Sha256"); h != digest {
		return 0, fmt.Errorf("%w: the server says it sends model %q, not %s", errDigestMismatch, h, digest)
	}
	h := sha256.New()
	return writeFileAtomically(out, force, io.TeeReader(resp.Body, h), func(_ string, n int64) error {
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != digest {
			return fmt.Errorf("%w: they hash to %s, not %s; nothing was written", errDigestMismatch, got, digest)
		}
		return nil
	})
}

// resolveDigest expands a unique digest prefix into the full digest by
// listing the models.
func resolveDigest(ctx context.Context, c *adminClient, d string) (string, error) {
	d = strings.ToLower(d)
	if _, err := hex.DecodeString(d + strings.Repeat("0", len(d)%2)); err != nil || len(d) > 64 {
		return "", fmt.Errorf("%q is not a digest: 64 hex digits (or a unique prefix of 8 or more)", d)
	}
	if len(d) == 64 {
		return d, nil
	}
	if len(d) < 8 {
		return "", fmt.Errorf("digest prefix %q: give at least 8 hex digits", d)
	}
	models, err := listAll[coordinator.ModelView](ctx, c, "/v1/models", "models")
	if err != nil {
		return "", err
	}
	var found []string
	seen := map[string]bool{}
	for _, m := range models {
		if strings.HasPrefix(m.Digest, d) && !seen[m.Digest] {
			seen[m.Digest] = true
			found = append(found, m.Digest)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no committed model has a digest starting with %s", d)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("digest prefix %s matches %d models; give more digits", d, len(found))
}
