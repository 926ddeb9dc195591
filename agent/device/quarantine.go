package device

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// QuarantineExt is the file name extension of quarantine files.
const QuarantineExt = ".quarantine"

// quarantineMagic is the first line of every quarantine file.
const quarantineMagic = "cohort-device-quarantine v1"

// Quarantined is a parsed quarantine file.
type Quarantined struct {
	// Reason is the rejection reason (see Reason).
	Reason string
	// Topic is the topic the payload arrived on.
	Topic string
	// Received is when the payload arrived (receiver's clock).
	Received time.Time
	// Size is the payload's size as received.
	Size int
	// Payload is the raw payload, cut to the payload limit if it was
	// larger.
	Payload []byte
}

// quarantine writes rejected payloads to a directory, one file each, named
// by receive time and a hash of topic and payload:
//
//	20250301T120000.000000000Z-<16 hex digits>.quarantine
//
// A file holds a header (magic line, "reason:", "topic:" (Go-quoted),
// "received:", "size:"), an empty line, and the raw payload bytes.
type quarantine struct {
	dir        string
	maxFiles   int
	maxPayload int

	mu    sync.Mutex // guards files
	files int        // files in dir (counted at open, then tracked)
}

// openQuarantine prepares dir (created 0700 if absent, refused if group or
// others may access it) and counts the files already there.
func openQuarantine(dir string, maxFiles, maxPayload int) (*quarantine, error) {
	if err := securePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("quarantine dir: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("quarantine dir: %w", err)
	}
	q := &quarantine{dir: dir, maxFiles: maxFiles, maxPayload: maxPayload}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), QuarantineExt) {
			q.files++
		}
	}
	return q, nil
}

// securePrivateDir creates dir with mode 0700 if absent and refuses it if
// group or others may access it.
func securePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: not a directory", fs.ErrInvalid)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: mode %04o", ErrInsecureDir, fi.Mode().Perm())
	}
	return nil
}

// quarantineName returns the file name for a payload received at t.
func quarantineName(t time.Time, topic string, payload []byte) string {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(payload)
	return t.UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(h.Sum(nil)[:8]) + QuarantineExt
}

// write quarantines one payload and returns the file's path. The file is
// written to a temporary name, synced, then renamed, so a reader never sees
// a partial file.
func (q *quarantine) write(reason, topic string, payload []byte, t time.Time) (string, error) {
	q.mu.Lock()
	if q.files >= q.maxFiles {
		q.mu.Unlock()
		return "", fmt.Errorf("%w: %d files", ErrQuarantineFull, q.maxFiles)
	}
	q.files++
	q.mu.Unlock()
	path, err := q.writeFile(reason, topic, payload, t)
	if err != nil {
		q.mu.Lock()
		q.files--
		q.mu.Unlock()
	}
	return path, err
}

func (q *quarantine) writeFile(reason, topic string, payload []byte, t time.Time) (string, error) {
	name := quarantineName(t, topic, payload)
	size := len(payload)
	if len(payload) > q.maxPayload {
		payload = payload[:q.maxPayload]
	}
	var buf bytes.Buffer
	buf.WriteString(quarantineMagic + "\n")
	buf.WriteString("reason: " + reason + "\n")
	buf.WriteString("topic: " + strconv.Quote(topic) + "\n")
	buf.WriteString("received: " + t.UTC().Format(time.RFC3339Nano) + "\n")
	buf.WriteString("size: " + strconv.Itoa(size) + "\n\n")
	buf.Write(payload)

	path := filepath.Join(q.dir, name)
	f, err := os.CreateTemp(q.dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	ok = true
	return path, nil
}

// ReadQuarantined parses a quarantine file.
func ReadQuarantined(path string) (Quarantined, error) {
	var q Quarantined
	b, err := os.ReadFile(path)
	if err != nil {
		return q, fmt.Errorf("read quarantine file: %w", err)
	}
	head, payload, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return q, errors.New("quarantine file: no header")
	}
	lines := strings.Split(string(head), "\n")
	if len(lines) != 5 || lines[0] != quarantineMagic {
		return q, errors.New("quarantine file: bad header")
	}
	var fields [4]string
	for i, key := range []string{"reason: ", "topic: ", "received: ", "size: "} {
		v, ok := strings.CutPrefix(lines[i+1], key)
		if !ok {
			return q, fmt.Errorf("quarantine file: missing %q", strings.TrimSuffix(key, ": "))
		}
		fields[i] = v
	}
	q.Reason = fields[0]
	if q.Topic, err = strconv.Unquote(fields[1]); err != nil {
		return q, errors.New("quarantine file: bad topic line")
	}
	if q.Received, err = time.Parse(time.RFC3339Nano, fields[2]); err != nil {
		return q, errors.New("quarantine file: bad received line")
	}
	if q.Size, err = strconv.Atoi(fields[3]); err != nil {
		return q, errors.New("quarantine file: bad size line")
	}
	q.Payload = payload
	return q, nil
}
