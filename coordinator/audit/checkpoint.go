package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// checkpointHeader is the first line of the signed body.
const checkpointHeader = "cohort-audit-checkpoint/v1"

// MaxOriginSize bounds an origin's length in bytes.
const MaxOriginSize = 512

// maxCheckpointLine bounds a line of checkpoints.jsonl (a checkpoint with the
// longest origin is well under 2 KiB).
const maxCheckpointLine = 8 << 10

// Checkpoint is a signed statement by one node: the log named Origin had
// Size leaves with root Root at Time.
type Checkpoint struct {
	// Origin names the log, e.g. "cohort-audit/<cluster id>".
	Origin string `json:"origin"`
	// Size is the number of leaves.
	Size uint64 `json:"size"`
	// Root is the RFC 6962 root of the first Size leaves.
	Root []byte `json:"root"`
	// Time is when the node signed, in UTC.
	Time time.Time `json:"time"`
	// KeyID names the signing key: KeyID(public key).
	KeyID string `json:"key_id"`
	// Sig is the Ed25519 signature of Body().
	Sig []byte `json:"sig"`
}

// KeyID returns the hex of the first 8 bytes of the SHA-256 of pub.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Body returns the text the signature covers:
//
//	cohort-audit-checkpoint/v1
//	<origin>
//	<size>
//	<base64 root>
//	<RFC 3339 time, nanoseconds, UTC>
//
// each line ending in '\n'.
func (c Checkpoint) Body() []byte {
	var b strings.Builder
	b.WriteString(checkpointHeader)
	b.WriteByte('\n')
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root))
	b.WriteByte('\n')
	b.WriteString(c.Time.UTC().Format(time.RFC3339Nano))
	b.WriteByte('\n')
	return []byte(b.String())
}

// Verify checks that c is well formed and signed by pub.
func (c Checkpoint) Verify(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key of %d bytes", ErrBadCheckpoint, len(pub))
	}
	if err := checkOrigin(c.Origin); err != nil {
		return fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if len(c.Root) != hashSize {
		return fmt.Errorf("%w: root of %d bytes, want %d", ErrBadCheckpoint, len(c.Root), hashSize)
	}
	if id := KeyID(pub); c.KeyID != id {
		return fmt.Errorf("%w: signed by key %q, not key %s", ErrBadCheckpoint, c.KeyID, id)
	}
	if len(c.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, c.Body(), c.Sig) {
		return fmt.Errorf("%w: signature does not verify with key %s", ErrBadCheckpoint, c.KeyID)
	}
	return nil
}

// signCheckpoint signs the tree (size, root) of origin at t.
func signCheckpoint(priv ed25519.PrivateKey, origin string, size uint64, root []byte, t time.Time) Checkpoint {
	c := Checkpoint{
		Origin: origin,
		Size:   size,
		Root:   clone(root),
		Time:   t.UTC().Round(0),
		KeyID:  KeyID(priv.Public().(ed25519.PublicKey)),
	}
	c.Sig = ed25519.Sign(priv, c.Body())
	return c
}

// parseCheckpoint decodes one line of checkpoints.jsonl (untrusted).
func parseCheckpoint(line []byte) (Checkpoint, error) {
	var c Checkpoint
	if len(line) > maxCheckpointLine {
		return c, fmt.Errorf("%w: line of %d bytes", ErrBadCheckpoint, len(line))
	}
	if err := json.Unmarshal(line, &c); err != nil {
		return c, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	return c, nil
}

// marshalLine encodes c as one line of checkpoints.jsonl, '\n' included.
func (c Checkpoint) marshalLine() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func checkOrigin(origin string) error {
	switch {
	case origin == "":
		return fmt.Errorf("empty origin")
	case len(origin) > MaxOriginSize:
		return fmt.Errorf("origin of %d bytes, at most %d", len(origin), MaxOriginSize)
	case strings.ContainsAny(origin, "\n\r"):
		return fmt.Errorf("origin %q contains a line break", origin)
	case !utf8.ValidString(origin):
		return fmt.Errorf("origin %q is not UTF-8", origin)
	}
	return nil
}
