package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/coordinator/audit"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// auditPage is how many entries one request fetches (the API's maximum).
const auditPage = 1000

func (a *adminCLI) auditCommands() []*adminCommand {
	var (
		n                 int
		dataDir           string
		keyFile, keyB64   string
		index, size       uint64
		from, to          uint64
		fromRoot, toRoot  string
		indexSet, sizeSet bool
		toSet             bool
		keyFlags          = func(fs *flag.FlagSet) {
			fs.StringVar(&keyFile, "key", "", "pin the signing key: a `file` with a node's public key (base64, as /v1/cluster's audit_key, or PEM), or a node's audit/node.key")
			fs.StringVar(&keyB64, "key-b64", "", "pin the signing key: a node's public key in `base64` (its audit_key)")
		}
	)
	return []*adminCommand{
		{
			name: "audit tail", perm: "audit.read",
			about: `Shows the last entries of the audit log: every admin request (allowed,
denied or failed, with the person, role and outcome) and every round event.
Requests made with a break-glass token are marked with "!".`,
			flags: func(fs *flag.FlagSet) {
				fs.IntVar(&n, "n", 50, "how many `entries`")
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				if n < 0 {
					return errors.New("audit tail: -n must not be negative")
				}
				var head coordinator.AuditEntries
				if _, err := c.get(ctx, "/v1/audit/entries?start=0&limit=0", &head); err != nil {
					return err
				}
				start := head.Size - min(head.Size, uint64(n))
				raws, _, err := fetchEntries(ctx, c, start, head.Size, false)
				if err != nil {
					return err
				}
				if a.json {
					return a.printValue(coordinator.AuditEntries{Size: head.Size, Start: start, Entries: rawMessages(raws)})
				}
				a.auditTable(raws, start)
				return nil
			},
		},
		{
			name: "audit verify", perm: "audit.read", long: true,
			about: `Checks the whole audit log against the latest signed checkpoint.

Online (the default): reads the nodes' signing keys from /v1/cluster (or
the key pinned with --key or --key-b64), the latest checkpoint the leader
signed, and every entry up to its size with the leader's leaf hashes; checks
the checkpoint's Ed25519 signature and that the entries hash to its RFC 6962
root. An entry edited, deleted or reordered in the leader's
DATA_DIR/audit/entries.jsonl is reported by index. For a check that does
not trust the server for the key, pin it with --key.

Offline (--data-dir DIR): checks a node's data directory (a stopped node, a
backup) without any server: every entry of DIR/audit/entries.jsonl against
every checkpoint in DIR/audit/checkpoints.jsonl, with the key in
DIR/audit/node.key or the one given with --key. Anyone holding node.key can
re-sign a forged log, so pin the key you recorded when you can.

Exits non-zero, saying where, when the log does not verify.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&dataDir, "data-dir", "", "check this node's data `directory` offline, without a server")
				keyFlags(fs)
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				if dataDir != "" {
					return a.verifyDir(dataDir, keyFile, keyB64)
				}
				return a.verifyOnline(ctx, c, keyFile, keyB64)
			},
			offlineIf: func() bool { return dataDir != "" },
		},
		{
			name: "audit proof", perm: "audit.read",
			about: `Proves that one entry is in the log: fetches the entry, its RFC 6962
inclusion proof and the latest signed checkpoint, and verifies them here.
With --size S below the checkpoint's size it proves inclusion in the log of
S entries and that log's consistency with the signed one.`,
			flags: func(fs *flag.FlagSet) {
				fs.Func("index", "the entry's `index` (from 0; required)", func(s string) error {
					indexSet = true
					_, err := fmt.Sscan(s, &index)
					return err
				})
				fs.Func("size", "prove inclusion in the log of this `size` (default: the latest checkpoint's)", func(s string) error {
					sizeSet = true
					_, err := fmt.Sscan(s, &size)
					return err
				})
				keyFlags(fs)
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				if !indexSet {
					return errors.New("audit proof: --index is required")
				}
				return a.inclusion(ctx, c, index, size, sizeSet, keyFile, keyB64)
			},
		},
		{
			name: "audit consistency", perm: "audit.read",
			about: `Proves that the log only grew: that the log of --from A entries, whose root
you recorded earlier (--from-root, as audit verify printed it), is a prefix
of the log of --to B entries (default: the latest signed checkpoint). The
RFC 6962 consistency proof is fetched and verified here.`,
			flags: func(fs *flag.FlagSet) {
				fs.Func("from", "the earlier log's `size`", func(s string) error { _, err := fmt.Sscan(s, &from); return err })
				fs.Func("to", "the later log's `size` (default: the latest checkpoint's)", func(s string) error {
					toSet = true
					_, err := fmt.Sscan(s, &to)
					return err
				})
				fs.StringVar(&fromRoot, "from-root", "", "the earlier log's root, `hex` (from an earlier audit verify)")
				fs.StringVar(&toRoot, "to-root", "", "the later log's root, `hex`, when --to is not the latest checkpoint's size")
				keyFlags(fs)
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				return a.consistency(ctx, c, from, to, toSet, fromRoot, toRoot, keyFile, keyB64)
			},
		},
	}
}

// fetchEntries reads entries [start, end) page by page; with hashes, the
// server's leaf hashes too (nil if it sent none). The entries are the
// leaves' exact bytes (?raw=true); from a server that does not send them,
// the JSON values compacted, which gives back the bytes it wrote.
func fetchEntries(ctx context.Context, c *adminClient, start, end uint64, hashes bool) ([][]byte, [][]byte, error) {
	var entries, leafHashes [][]byte
	haveHashes := hashes
	for i := start; i < end; {
		limit := min(end-i, auditPage)
		path := fmt.Sprintf("/v1/audit/entries?start=%d&limit=%d&raw=true", i, limit)
		if hashes {
			path += "&hashes=true"
		}
		var page coordinator.AuditEntries
		if _, err := c.get(ctx, path, &page); err != nil {
			if errors.Is(err, errUnexpectedAnswer) {
				// The answer did not decode: find the entry the server
				// could not send as JSON.
				if bad, ok := findUnservable(ctx, c, i, i+limit); ok {
					return nil, nil, bad
				}
			}
			return nil, nil, err
		}
		if page.Start != i {
			return nil, nil, fmt.Errorf("GET %s: the answer starts at entry %d", path, page.Start)
		}
		if len(page.Entries) == 0 {
			break // fewer entries than asked for: the caller finds them missing
		}
		if hashes && len(page.LeafHashes) != len(page.Entries) {
			haveHashes = false
		}
		for k, raw := range page.Entries {
			if len(page.Raw) == len(page.Entries) {
				entries = append(entries, page.Raw[k])
			} else {
				var b bytes.Buffer
				if err := json.Compact(&b, raw); err != nil {
					return nil, nil, fmt.Errorf("entry %d: %w", i+uint64(k), err)
				}
				entries = append(entries, b.Bytes())
			}
			if haveHashes {
				h, err := hex.DecodeString(page.LeafHashes[k])
				if err != nil {
					haveHashes = false
					continue
				}
				leafHashes = append(leafHashes, h)
			}
		}
		i += uint64(len(page.Entries))
	}
	if !haveHashes {
		leafHashes = nil
	}
	return entries, leafHashes, nil
}

// findUnservable fetches entries [start, end) one by one and reports the
// first one whose answer does not decode: its line in the node's
// entries.jsonl is no longer JSON, so it was altered.
func findUnservable(ctx context.Context, c *adminClient, start, end uint64) (*audit.TamperError, bool) {
	for i := start; i < end; i++ {
		var page coordinator.AuditEntries
		_, err := c.get(ctx, fmt.Sprintf("/v1/audit/entries?start=%d&limit=1", i), &page)
		switch {
		case err == nil:
			continue
		case !errors.Is(err, errUnexpectedAnswer):
			return nil, false
		}
		return &audit.TamperError{Index: i, Reason: fmt.Sprintf("entry %d (line %d) is not valid JSON on the server, so the server cannot send it: it was altered", i, i+1)}, true
	}
	return nil, false
}

func rawMessages(bs [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out
}

func (a *adminCLI) auditTable(raws [][]byte, start uint64) {
	tw := a.table()
	fmt.Fprintln(tw, "INDEX\tTIME\tACTOR\tROLE\tACTION\tTARGET\tOUTCOME\tSTATUS")
	breakGlass := false
	for k, raw := range raws {
		var e coordinator.AuditEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			fmt.Fprintf(tw, "%d\t(not an audit entry: %v)\n", start+uint64(k), err)
			continue
		}
		role := dash(string(e.Role))
		if e.BreakGlass {
			role += " !"
			breakGlass = true
		}
		status := "-"
		if e.Status != 0 {
			status = fmt.Sprint(e.Status)
		}
		target := e.Target
		if d, ok := strings.CutPrefix(target, "model "); ok && len(d) > 16 {
			target = "model " + d[:12] + "…"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Index, stamp(e.Time), dash(e.Actor), role, e.Action, dash(target), e.Outcome, status)
	}
	tw.Flush()
	if breakGlass {
		fmt.Fprintln(a.stdout, "! made with a break-glass token")
	}
}

// auditKeys returns the keys to check checkpoints with, and the node each
// one belongs to (by key id): the one pinned with --key or --key-b64, or
// every node's from /v1/cluster.
func auditKeys(ctx context.Context, c *adminClient, keyFile, keyB64 string) ([]ed25519.PublicKey, map[string]string, error) {
	names := map[string]string{}
	if keyFile != "" || keyB64 != "" {
		k, err := parseAuditKey(keyFile, keyB64)
		if err != nil {
			return nil, nil, err
		}
		names[audit.KeyID(k)] = "the pinned key"
		return []ed25519.PublicKey{k}, names, nil
	}
	var v clusterView
	if _, err := c.get(ctx, "/v1/cluster", &v); err != nil {
		return nil, nil, fmt.Errorf("reading the nodes' audit keys: %w", err)
	}
	var keys []ed25519.PublicKey
	for _, n := range v.Nodes {
		if n.AuditKey == "" {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(n.AuditKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return nil, nil, fmt.Errorf("node %s publishes an audit key that is not a base64 Ed25519 public key", n.ID)
		}
		keys = append(keys, k)
		names[audit.KeyID(k)] = n.ID
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("the cluster's answer (GET /v1/cluster) carries no audit keys; pin a node's key with --key FILE or --key-b64 KEY")
	}
	return keys, names, nil
}

// parseAuditKey reads a pinned public key: base64 text (a node's
// audit_key), a PEM PUBLIC KEY, or a node's node.key (the 32-byte seed).
func parseAuditKey(file, b64 string) (ed25519.PublicKey, error) {
	if file != "" && b64 != "" {
		return nil, errors.New("give --key or --key-b64, not both")
	}
	text := b64
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		if len(raw) == ed25519.SeedSize {
			return ed25519.NewKeyFromSeed(raw).Public().(ed25519.PublicKey), nil
		}
		if blk, _ := pem.Decode(raw); blk != nil {
			pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if k, ok := pub.(ed25519.PublicKey); err == nil && ok {
				return k, nil
			}
			return nil, fmt.Errorf("--key %s: not an Ed25519 public key", file)
		}
		text = string(raw)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, errors.New("the pinned key is not an Ed25519 public key in base64 (44 characters, as /v1/cluster's audit_key)")
	}
	return k, nil
}

// signedCheckpoint fetches the latest checkpoint and checks its signature
// with one of keys; it returns the checkpoint and the signer's name.
func signedCheckpoint(ctx context.Context, c *adminClient, keys []ed25519.PublicKey, names map[string]string) (coordinator.AuditCheckpoint, string, error) {
	var cp coordinator.AuditCheckpoint
	if _, err := c.get(ctx, "/v1/audit/checkpoint", &cp); err != nil {
		return cp, "", err
	}
	for _, k := range keys {
		if audit.KeyID(k) == cp.KeyID {
			if err := cp.Checkpoint.Verify(k); err != nil {
				return cp, "", fmt.Errorf("the latest checkpoint (from %s) does not verify: %w", dash(cp.Node), err)
			}
			return cp, signerName(cp, names), nil
		}
	}
	return cp, "", fmt.Errorf("the latest checkpoint (from %s) is signed by key %s, which is not among the keys checked (%d)", dash(cp.Node), cp.KeyID, len(keys))
}

func signerName(cp coordinator.AuditCheckpoint, names map[string]string) string {
	name := names[cp.KeyID]
	if name == "" || name == "the pinned key" {
		name = dash(cp.Node)
	}
	return name
}

// verifyOnline checks the log the leader serves against its latest
// checkpoint.
func (a *adminCLI) verifyOnline(ctx context.Context, c *adminClient, keyFile, keyB64 string) error {
	keys, names, err := auditKeys(ctx, c, keyFile, keyB64)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	var cp coordinator.AuditCheckpoint
	if _, err := c.get(ctx, "/v1/audit/checkpoint", &cp); err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	signer := signerName(cp, names)
	entries, leafHashes, err := fetchEntries(ctx, c, 0, cp.Size, true)
	if err == nil {
		err = audit.VerifyEntries(entries, leafHashes, cp.Checkpoint, keys...)
	}
	if err != nil {
		return a.verifyFailed(err, "on "+signer)
	}
	if a.json {
		return a.printValue(verifyResult{Verified: true, Size: cp.Size, Root: hex.EncodeToString(cp.Root), Node: signer, KeyID: cp.KeyID, Time: cp.Time})
	}
	fmt.Fprintf(a.stdout, "audit log verified: %d entries, root %s, checkpoint signed by %s at %s\n", cp.Size, hex.EncodeToString(cp.Root), signer, a.when(cp.Time))
	return nil
}

// verifyResult is audit verify's --json output.
type verifyResult struct {
	Verified    bool      `json:"verified"`
	Size        uint64    `json:"size,omitempty"`
	Root        string    `json:"root,omitempty"`
	Node        string    `json:"node,omitempty"`
	KeyID       string    `json:"key_id,omitempty"`
	Time        time.Time `json:"time,omitzero"`
	Checkpoints int       `json:"checkpoints,omitempty"`
	Unchecked   uint64    `json:"unchecked,omitempty"`
	Index       *uint64   `json:"index,omitempty"`
	File        string    `json:"file,omitempty"`
	Line        int       `json:"line,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// verifyFailed reports a failed verification: where, if a *TamperError
// says, and why.
func (a *adminCLI) verifyFailed(err error, where string) error {
	var te *audit.TamperError
	res := verifyResult{Reason: err.Error()}
	msg := fmt.Sprintf("audit verify: FAILED %s: %v", where, err)
	if errors.As(err, &te) {
		idx := te.Index
		res.Index, res.File, res.Line, res.Reason = &idx, te.File, te.Line, te.Reason
		what := "entry"
		if te.File == audit.CheckpointsFile {
			what = "checkpoint"
		}
		msg = fmt.Sprintf("audit verify: FAILED at %s %d %s: %s", what, te.Index, where, te.Reason)
	}
	if a.json {
		if perr := a.printValue(res); perr != nil {
			return perr
		}
	}
	return errors.New(msg)
}

// verifyDir checks a node's data directory offline.
func (a *adminCLI) verifyDir(dataDir, keyFile, keyB64 string) error {
	dir := filepath.Join(dataDir, "audit")
	if _, err := os.Stat(dir); err != nil {
		if _, err2 := os.Stat(filepath.Join(dataDir, audit.EntriesFile)); err2 != nil {
			return fmt.Errorf("audit verify: %s is not a coordinator's data directory (no audit/): %w", dataDir, err)
		}
		dir = dataDir // the audit directory itself
	}
	var pub ed25519.PublicKey
	if keyFile != "" || keyB64 != "" {
		k, err := parseAuditKey(keyFile, keyB64)
		if err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
		pub = k
	}
	rep, err := audit.VerifyDir(dir, pub)
	for _, w := range rep.Warnings {
		fmt.Fprintf(a.stderr, "warning: %s\n", w)
	}
	if err != nil {
		return a.verifyFailed(err, "in "+dir)
	}
	res := verifyResult{Verified: true, Size: rep.Entries, Root: hex.EncodeToString(rep.Root), KeyID: rep.KeyID, Checkpoints: rep.Checkpoints, Unchecked: rep.Unchecked}
	if rep.Latest != nil {
		res.Time = rep.Latest.Time
	}
	if a.json {
		return a.printValue(res)
	}
	fmt.Fprintf(a.stdout, "audit log verified: %d entries, root %s, %d checkpoints signed by key %s, the latest at %s\n",
		rep.Entries, res.Root, rep.Checkpoints, rep.KeyID, a.when(res.Time))
	if rep.Unchecked > 0 {
		fmt.Fprintf(a.stdout, "note: the last %d entries come after the last checkpoint, so nothing checks them\n", rep.Unchecked)
	}
	return nil
}

// inclusion proves that entry index is in the log of size entries (the
// latest checkpoint's size unless sizeSet).
func (a *adminCLI) inclusion(ctx context.Context, c *adminClient, index, size uint64, sizeSet bool, keyFile, keyB64 string) error {
	keys, names, err := auditKeys(ctx, c, keyFile, keyB64)
	if err != nil {
		return fmt.Errorf("audit proof: %w", err)
	}
	cp, signer, err := signedCheckpoint(ctx, c, keys, names)
	if err != nil {
		return fmt.Errorf("audit proof: %w", err)
	}
	if !sizeSet {
		size = cp.Size
	}
	switch {
	case size > cp.Size:
		return fmt.Errorf("audit proof: --size %d is beyond the latest checkpoint (size %d)", size, cp.Size)
	case index >= size:
		return fmt.Errorf("audit proof: --index %d is not below the size %d", index, size)
	}
	entries, _, err := fetchEntries(ctx, c, index, index+1, false)
	if err != nil {
		return fmt.Errorf("audit proof: %w", err)
	}
	if len(entries) != 1 {
		return fmt.Errorf("audit proof: the server sent no entry %d", index)
	}
	hasher := rfc6962.DefaultHasher
	leaf := hasher.HashLeaf(entries[0])
	var incl coordinator.AuditProof
	if _, err := c.get(ctx, fmt.Sprintf("/v1/audit/proofs/inclusion?index=%d&size=%d", index, size), &incl); err != nil {
		return fmt.Errorf("audit proof: %w", err)
	}
	var cons coordinator.AuditProof
	if size == cp.Size {
		err = proof.VerifyInclusion(hasher, index, size, leaf, incl.Hashes, cp.Root)
	} else {
		var root []byte
		root, err = proof.RootFromInclusionProof(hasher, index, size, leaf, incl.Hashes)
		if err == nil {
			if _, err = c.get(ctx, fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", size, cp.Size), &cons); err != nil {
				return fmt.Errorf("audit proof: %w", err)
			}
			err = proof.VerifyConsistency(hasher, size, cp.Size, cons.Hashes, root, cp.Root)
		}
	}
	if err != nil {
		return fmt.Errorf("audit proof: FAILED: entry %d as the server sends it is not in the log the checkpoint signed by %s at size %d commits to: %w", index, signer, cp.Size, err)
	}
	if a.json {
		return a.printValue(map[string]any{"verified": true, "index": index, "size": size, "leaf_hash": hex.EncodeToString(leaf),
			"entry": json.RawMessage(entries[0]), "inclusion": incl.Hashes, "consistency": cons.Hashes, "checkpoint": cp})
	}
	var e coordinator.AuditEntry
	_ = json.Unmarshal(entries[0], &e)
	fmt.Fprintf(a.stdout, "entry %d: %s %s %s %s %s\n", index, stamp(e.Time), dash(e.Actor), e.Action, dash(e.Target), e.Outcome)
	fmt.Fprintf(a.stdout, "included in the log of %d entries: inclusion proof (%d hashes)", size, len(incl.Hashes))
	if size != cp.Size {
		fmt.Fprintf(a.stdout, " and consistency proof to size %d (%d hashes)", cp.Size, len(cons.Hashes))
	}
	fmt.Fprintf(a.stdout, " verified against the checkpoint signed by %s at %s (size %d, root %s)\n", signer, a.when(cp.Time), cp.Size, hex.EncodeToString(cp.Root))
	return nil
}

// consistency proves that the log of from entries (root fromRoot) is a
// prefix of the log of to entries.
func (a *adminCLI) consistency(ctx context.Context, c *adminClient, from, to uint64, toSet bool, fromRoot, toRoot, keyFile, keyB64 string) error {
	keys, names, err := auditKeys(ctx, c, keyFile, keyB64)
	if err != nil {
		return fmt.Errorf("audit consistency: %w", err)
	}
	cp, signer, err := signedCheckpoint(ctx, c, keys, names)
	if err != nil {
		return fmt.Errorf("audit consistency: %w", err)
	}
	if !toSet {
		to = cp.Size
	}
	var root2 []byte
	switch {
	case to > cp.Size:
		return fmt.Errorf("audit consistency: --to %d is beyond the latest checkpoint (size %d)", to, cp.Size)
	case from > to:
		return fmt.Errorf("audit consistency: --from %d is beyond --to %d", from, to)
	case to == cp.Size:
		root2 = cp.Root
		if toRoot != "" && toRoot != hex.EncodeToString(cp.Root) {
			return fmt.Errorf("audit consistency: FAILED: --to-root %s is not the root %s the checkpoint signed by %s at size %d commits to", toRoot, hex.EncodeToString(cp.Root), signer, cp.Size)
		}
	case toRoot == "":
		return fmt.Errorf("audit consistency: --to %d is not the latest checkpoint's size (%d): give that log's root with --to-root, or leave --to out", to, cp.Size)
	default:
		if root2, err = hex.DecodeString(toRoot); err != nil {
			return fmt.Errorf("audit consistency: --to-root: %w", err)
		}
	}
	var root1 []byte
	switch {
	case fromRoot != "":
		if root1, err = hex.DecodeString(fromRoot); err != nil {
			return fmt.Errorf("audit consistency: --from-root: %w", err)
		}
	case from == 0:
		root1 = rfc6962.DefaultHasher.EmptyRoot()
	default:
		return fmt.Errorf("audit consistency: --from-root is required: the root of the log when it had %d entries, as an earlier `cohort admin audit verify` printed it", from)
	}
	var p coordinator.AuditProof
	if _, err := c.get(ctx, fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", from, to), &p); err != nil {
		return fmt.Errorf("audit consistency: %w", err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, from, to, p.Hashes, root1, root2); err != nil {
		return fmt.Errorf("audit consistency: FAILED: the log of %d entries with root %x is not a prefix of the log of %d entries: %w", from, root1, to, err)
	}
	if a.json {
		return a.printValue(map[string]any{"verified": true, "from": from, "to": to, "from_root": hex.EncodeToString(root1),
			"to_root": hex.EncodeToString(root2), "hashes": p.Hashes, "checkpoint": cp})
	}
	fmt.Fprintf(a.stdout, "consistent: the log of %d entries (root %x) is a prefix of the log of %d entries (root %x); proof of %d hashes verified, checkpoint signed by %s at %s\n",
		from, root1, to, root2, len(p.Hashes), signer, a.when(cp.Time))
	return nil
}
