// Package release writes and checks a release's signed checksum list: a
// SHA256SUMS file in sha256sum's format and SHA256SUMS.sig, the base64 of
// the Ed25519 signature of SHA256SUMS's exact bytes. Keys are PEM files:
// the private key PKCS#8 ("PRIVATE KEY"), the public key PKIX ("PUBLIC
// KEY"), as openssl writes Ed25519 keys, so a release can also be checked
// without Cohort:
//
//	base64 -d SHA256SUMS.sig >sig.bin
//	openssl pkeyutl -verify -pubin -inkey release-key.pub -rawin -in SHA256SUMS -sigfile sig.bin
//	sha256sum -c --ignore-missing SHA256SUMS
//
// `cohort release` and `cohort verify` are its command line; the signing
// procedure and the key's custody are in docs/security-tooling.md.
package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cohort-fl/cohort/internal/secretfile"
)

// File names in a release directory and a key directory.
const (
	SumsFile       = "SHA256SUMS"
	SigFile        = "SHA256SUMS.sig"
	PrivateKeyFile = "release-key"
	PublicKeyFile  = "release-key.pub"
)

// Size limits of the files read (they may come from a download).
const (
	// MaxKeySize bounds a key file: a PEM Ed25519 key is about 120 bytes.
	MaxKeySize = 16 << 10
	// MaxSumsSize bounds SHA256SUMS: a release lists a dozen files.
	MaxSumsSize = 1 << 20
	// MaxSigSize bounds SHA256SUMS.sig: 88 base64 characters and a newline.
	MaxSigSize = 1 << 10
)

const (
	pemPrivate = "PRIVATE KEY"
	pemPublic  = "PUBLIC KEY"
	hexLen     = 2 * sha256.Size
)

var (
	// ErrBadSignature: SHA256SUMS.sig is not the key's signature of
	// SHA256SUMS (changed list, another key, damaged signature).
	ErrBadSignature = errors.New("signature does not verify")
	// ErrNotListed: no line of SHA256SUMS names the file.
	ErrNotListed = errors.New("not listed")
	// ErrDigestMismatch: the file's SHA-256 is not the one listed.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrBadKey: a key file that is not a PEM Ed25519 key of the kind
	// expected.
	ErrBadKey = errors.New("not a PEM Ed25519 key")
)

// Entry is one line of SHA256SUMS.
type Entry struct {
	Digest string // lowercase hex SHA-256
	Name   string // as listed: a path relative to the release directory
}

// GenerateKey writes a new key pair into dir (made 0700 if missing):
// PrivateKeyFile (mode 0600) and PublicKeyFile. It never overwrites a key
// (the error wraps os.ErrExist): a release key that is lost can't sign
// again.
func GenerateKey(dir string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := writeNew(filepath.Join(dir, PrivateKeyFile), pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: privDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(filepath.Join(dir, PublicKeyFile), pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: pubDER}), 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

// writeNew writes a file that must not exist yet.
func writeNew(name string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm) // #nosec G304 -- the operator names the key directory
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close() // the write error is the one to report
		return err
	}
	return f.Close()
}

// ReadPrivateKey reads a PEM PKCS#8 Ed25519 private key from a file that
// only its owner may read, and refuses any other: whoever can read the key
// can sign releases.
func ReadPrivateKey(name string) (ed25519.PrivateKey, error) {
	if err := secretfile.Check(name, "release key"); err != nil {
		return nil, fmt.Errorf("%w; whoever can read the key can sign releases", err)
	}
	b, err := ReadFileMax(name, MaxKeySize)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != pemPrivate {
		return nil, fmt.Errorf("release key %s: %w: no %q block", name, ErrBadKey, pemPrivate)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("release key %s: %w: %w", name, ErrBadKey, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("release key %s: %w: a %T", name, ErrBadKey, k)
	}
	return priv, nil
}

// ParsePublicKey decodes one PEM PKIX Ed25519 public key.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != pemPublic {
		return nil, fmt.Errorf("%w: no %q block", ErrBadKey, pemPublic)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: more than one PEM block", ErrBadKey)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T", ErrBadKey, k)
	}
	return pub, nil
}

// Fingerprint names a public key in messages: "SHA256:" and the unpadded
// base64 of the SHA-256 of its 32 bytes, as ssh-keygen -l shows keys.
func Fingerprint(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(h[:])
}

// Sign writes dir/SHA256SUMS, one line per artifact sorted by name (names
// are slash-separated paths relative to dir), and dir/SHA256SUMS.sig.
func Sign(priv ed25519.PrivateKey, dir string, names []string) error {
	names = slices.Clone(names)
	slices.Sort(names)
	var sums bytes.Buffer
	for i, name := range names {
		if i > 0 && name == names[i-1] {
			return fmt.Errorf("%s given twice", name)
		}
		if err := checkName(name); err != nil {
			return err
		}
		digest, err := FileSHA256(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return err
		}
		fmt.Fprintf(&sums, "%s  %s\n", digest, name)
	}
	if len(names) == 0 {
		return errors.New("no artifact to list")
	}
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(priv, sums.Bytes())) + "\n"
	if err := os.WriteFile(filepath.Join(dir, SumsFile), sums.Bytes(), 0o644); err != nil { // #nosec G306 -- a release's checksum list is public
		return err
	}
	return os.WriteFile(filepath.Join(dir, SigFile), []byte(sig), 0o644) // #nosec G306 -- a signature is public
}

// checkName refuses a name that SHA256SUMS can't hold as a plain line
// (sha256sum would escape it), that climbs out of the release directory, or
// that is the list itself.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case strings.ContainsAny(name, "\\\n\r\x00"):
		return fmt.Errorf("file name %q: backslashes, line breaks and NUL are not supported", name)
	case strings.HasPrefix(name, "/"), name != path.Clean(name), name == "..", strings.HasPrefix(name, "../"):
		return fmt.Errorf("file name %q: give a clean slash-separated path relative to the release directory", name)
	case name == SumsFile, name == SigFile:
		return fmt.Errorf("%s can't list itself", name)
	}
	return nil
}

// VerifySignature checks that sigText, the base64 of an Ed25519 signature
// (surrounding white space ignored), signs sums with pub. Its errors wrap
// ErrBadSignature.
func VerifySignature(pub ed25519.PublicKey, sums, sigText []byte) error {
	sig, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sigText)))
	if err != nil {
		return fmt.Errorf("%w: the signature is not base64: %w", ErrBadSignature, err)
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: the signature holds %d bytes, an Ed25519 signature %d (truncated, or not a signature)",
			ErrBadSignature, len(sig), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, sums, sig) {
		return fmt.Errorf("%w: the list was changed after signing, or signed with another key", ErrBadSignature)
	}
	return nil
}

// ParseSums decodes a checksum list as sha256sum writes it: per line 64 hex
// digits, a space, a space or '*' (binary mode), and the file name. Blank
// lines are skipped. It refuses sha256sum's escaped names (a line starting
// with '\'), CR line ends, a name listed twice and a list with no line.
func ParseSums(b []byte) ([]Entry, error) {
	var entries []Entry
	seen := make(map[string]bool)
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		if strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasPrefix(line, "\\") {
			return nil, fmt.Errorf("line %d: escaped file names are not supported", n)
		}
		if strings.HasSuffix(line, "\r") {
			return nil, fmt.Errorf("line %d: ends with CR (Windows line ends)", n)
		}
		if len(line) < hexLen+3 || line[hexLen] != ' ' || (line[hexLen+1] != ' ' && line[hexLen+1] != '*') {
			return nil, fmt.Errorf("line %d: not \"SHA256  NAME\"", n)
		}
		digest := strings.ToLower(line[:hexLen])
		if strings.Trim(digest, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("line %d: the digest is not %d hex digits", n, hexLen)
		}
		name := line[hexLen+2:]
		if strings.ContainsAny(name, "\x00\r") {
			return nil, fmt.Errorf("line %d: the file name holds NUL or CR", n)
		}
		key := path.Clean(name)
		if seen[key] {
			return nil, fmt.Errorf("line %d: %s is listed twice", n, name)
		}
		seen[key] = true
		entries = append(entries, Entry{Digest: digest, Name: name})
	}
	if len(entries) == 0 {
		return nil, errors.New("no checksums in it")
	}
	return entries, nil
}

// CheckFile finds file's line in entries and checks its digest. The line is
// the one with file's base name; among several (every binary is called
// cohort), the one whose listed path ends file's path; failing that, any
// of them whose digest matches: every line is signed, so a match is a
// release artifact. Its errors wrap ErrNotListed or ErrDigestMismatch, the
// latter naming both digests.
func CheckFile(entries []Entry, file string) (Entry, error) {
	slashed := path.Clean(filepath.ToSlash(file))
	base := path.Base(slashed)
	var byBase, byPath []Entry
	for _, e := range entries {
		name := path.Clean(e.Name)
		if path.Base(name) != base {
			continue
		}
		byBase = append(byBase, e)
		if slashed == name || strings.HasSuffix(slashed, "/"+name) {
			byPath = append(byPath, e)
		}
	}
	candidates := byBase
	if len(byPath) == 1 {
		candidates = byPath
	}
	if len(candidates) == 0 {
		return Entry{}, fmt.Errorf("%w in the checksum list (no line names %s)", ErrNotListed, base)
	}
	digest, err := FileSHA256(file)
	if err != nil {
		return Entry{}, err
	}
	var listed []string
	for _, e := range candidates {
		if e.Digest == digest {
			return e, nil
		}
		listed = append(listed, fmt.Sprintf("%s for %s", e.Digest, e.Name))
	}
	return Entry{}, fmt.Errorf("%w: the file's SHA-256 is %s, the checksum list has %s",
		ErrDigestMismatch, digest, strings.Join(listed, "; "))
}

// FileSHA256 returns the hex SHA-256 of a file's contents.
func FileSHA256(name string) (string, error) {
	f, err := os.Open(name) // #nosec G304 -- the operator names the files to hash
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ReadFileMax reads a file that must hold at most max bytes.
func ReadFileMax(name string, max int64) ([]byte, error) {
	f, err := os.Open(name) // #nosec G304 -- the operator names the file on the command line
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, max)
	}
	return b, nil
}
