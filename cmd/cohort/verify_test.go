package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohort-fl/cohort/internal/release"
)

// testRelease is a signed release in a temporary directory.
type testRelease struct {
	dir      string // the artifacts, SHA256SUMS and SHA256SUMS.sig
	keyDir   string // release-key and release-key.pub
	pub      string // the public key file
	sums     string // SHA256SUMS
	sig      string // SHA256SUMS.sig
	binAMD64 string // two binaries with the same base name
	binARM64 string
	deb      string
}

// runCohort runs the cohort command line in-process.
func runCohort(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// newTestRelease makes a key pair with `cohort release keygen` and signs
// three artifacts with `cohort release sign`.
func newTestRelease(t *testing.T) testRelease {
	t.Helper()
	root := t.TempDir()
	r := testRelease{dir: filepath.Join(root, "dist"), keyDir: filepath.Join(root, "keys")}
	files := map[string]string{
		"cohort_1.0.0_linux_amd64/cohort": "amd64 binary",
		"cohort_1.0.0_linux_arm64/cohort": "arm64 binary",
		"cohort_1.0.0_amd64.deb":          "a package",
	}
	for name, body := range files {
		p := filepath.Join(r.dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr, err := runCohort(t, "release", "keygen", "-o", r.keyDir); err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	out, stderr, err := runCohort(t, "release", "sign", "--key", filepath.Join(r.keyDir, "release-key"), "--dir", r.dir,
		"cohort_1.0.0_linux_arm64/cohort", "cohort_1.0.0_amd64.deb", "cohort_1.0.0_linux_amd64/cohort")
	if err != nil {
		t.Fatalf("sign: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "signed 3 artifacts") {
		t.Fatalf("sign said %q", out)
	}
	r.pub = filepath.Join(r.keyDir, "release-key.pub")
	r.sums = filepath.Join(r.dir, "SHA256SUMS")
	r.sig = filepath.Join(r.dir, "SHA256SUMS.sig")
	r.binAMD64 = filepath.Join(r.dir, "cohort_1.0.0_linux_amd64", "cohort")
	r.binARM64 = filepath.Join(r.dir, "cohort_1.0.0_linux_arm64", "cohort")
	r.deb = filepath.Join(r.dir, "cohort_1.0.0_amd64.deb")
	return r
}

func (r testRelease) verify(t *testing.T, files ...string) (string, error) {
	t.Helper()
	args := append([]string{"verify", "--sums", r.sums, "--sig", r.sig, "--key", r.pub}, files...)
	out, _, err := runCohort(t, args...)
	return out, err
}

func TestReleaseSignWritesSHA256SUMS(t *testing.T) {
	r := newTestRelease(t)
	b, err := os.ReadFile(r.sums)
	if err != nil {
		t.Fatal(err)
	}
	// sha256sum's format, sorted by name: `sha256sum -c` reads it too.
	sum := sha256.Sum256([]byte("a package"))
	if want := hex.EncodeToString(sum[:]) + "  cohort_1.0.0_amd64.deb\n"; !strings.HasPrefix(string(b), want) {
		t.Errorf("SHA256SUMS starts %q, want %q", b, want)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("SHA256SUMS has %d lines, want 3:\n%s", len(lines), b)
	}
	for i, name := range []string{"cohort_1.0.0_amd64.deb", "cohort_1.0.0_linux_amd64/cohort", "cohort_1.0.0_linux_arm64/cohort"} {
		if !strings.HasSuffix(lines[i], "  "+name) || len(lines[i]) != 64+2+len(name) {
			t.Errorf("line %d = %q, want HEX  %s", i+1, lines[i], name)
		}
	}
	for _, f := range []struct {
		path string
		perm os.FileMode
	}{{filepath.Join(r.keyDir, "release-key"), 0o600}, {r.pub, 0o644}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.perm {
			t.Errorf("%s has mode %04o, want %04o", f.path, fi.Mode().Perm(), f.perm)
		}
	}
}

func TestReleaseKeygenRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runCohort(t, "release", "keygen", "-o", dir); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "release-key"))
	_, _, err := runCohort(t, "release", "keygen", "-o", dir)
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("second keygen: %v, want it to refuse an existing key", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "release-key"))
	if !bytes.Equal(before, after) {
		t.Fatal("the second keygen changed the private key")
	}
}

func TestReleaseSignRefusesAnOpenKey(t *testing.T) {
	r := newTestRelease(t)
	key := filepath.Join(r.keyDir, "release-key")
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCohort(t, "release", "sign", "--key", key, "--dir", r.dir, "cohort_1.0.0_amd64.deb")
	if err == nil || !strings.Contains(err.Error(), "0640") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("sign with a group-readable key: %v, want a refusal naming the mode", err)
	}
}

func TestReleaseSignRefusesBadNames(t *testing.T) {
	r := newTestRelease(t)
	key := filepath.Join(r.keyDir, "release-key")
	for _, name := range []string{"../escape", "/etc/passwd", "a/../b", "SHA256SUMS", "back\\slash"} {
		if _, _, err := runCohort(t, "release", "sign", "--key", key, "--dir", r.dir, name); err == nil {
			t.Errorf("sign %q: no error", name)
		}
	}
}

func TestVerify(t *testing.T) {
	r := newTestRelease(t)
	out, err := r.verify(t, r.binAMD64, r.binARM64, r.deb)
	if err != nil {
		t.Fatalf("verify a good release: %v", err)
	}
	if !strings.Contains(out, "signature OK") || strings.Count(out, "\nOK ") != 3 {
		t.Fatalf("verify printed:\n%s", out)
	}
	// Each binary is matched to its own line by its path.
	if !strings.Contains(out, "(cohort_1.0.0_linux_arm64/cohort ") {
		t.Errorf("arm64 binary not matched by its path:\n%s", out)
	}
}

func TestVerifyDownloadedCopy(t *testing.T) {
	// A binary copied out of its directory is found by base name and digest.
	r := newTestRelease(t)
	b, _ := os.ReadFile(r.binARM64)
	dl := filepath.Join(t.TempDir(), "cohort")
	if err := os.WriteFile(dl, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := r.verify(t, dl)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !strings.Contains(out, "cohort_1.0.0_linux_arm64/cohort") {
		t.Errorf("verify printed:\n%s", out)
	}
}

func TestVerifyModifiedArtifact(t *testing.T) {
	r := newTestRelease(t)
	if err := os.WriteFile(r.deb, []byte("a package, patched"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := r.verify(t, r.binAMD64, r.deb)
	if !errors.Is(err, release.ErrDigestMismatch) {
		t.Fatalf("verify a modified artifact: %v, want %v", err, release.ErrDigestMismatch)
	}
	msg := err.Error()
	// Both digests are shown, and only the modified file failed.
	got, _ := release.FileSHA256(r.deb)
	b, err := os.ReadFile(r.sums)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := release.ParseSums(b)
	if err != nil {
		t.Fatal(err)
	}
	var listed string
	for _, e := range entries {
		if e.Name == "cohort_1.0.0_amd64.deb" {
			listed = e.Digest
		}
	}
	for _, want := range []string{"1 of 2 files failed", got, listed, r.deb} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %q", msg, want)
		}
	}
}

func TestVerifyModifiedSums(t *testing.T) {
	r := newTestRelease(t)
	// Someone lists their own build's digest for the package.
	b, _ := os.ReadFile(r.sums)
	if err := os.WriteFile(r.deb, []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	evil, _ := release.FileSHA256(r.deb)
	lines := strings.SplitAfter(string(b), "\n")
	lines[0] = evil + "  cohort_1.0.0_amd64.deb\n"
	if err := os.WriteFile(r.sums, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := r.verify(t, r.deb)
	if !errors.Is(err, release.ErrBadSignature) {
		t.Fatalf("verify with a modified SHA256SUMS: %v, want %v", err, release.ErrBadSignature)
	}
	if strings.Contains(out, "OK") {
		t.Fatalf("verify printed OK for a modified list:\n%s", out)
	}
	if !strings.Contains(err.Error(), "no file was checked") {
		t.Errorf("error %q does not say no file was checked", err)
	}
}

func TestVerifySignatureFromAnotherKey(t *testing.T) {
	r := newTestRelease(t)
	other := newTestRelease(t)
	// The other release's key signs this release's list.
	_, _, err := runCohort(t, "release", "sign", "--key", filepath.Join(other.keyDir, "release-key"), "--dir", r.dir,
		"cohort_1.0.0_amd64.deb", "cohort_1.0.0_linux_amd64/cohort", "cohort_1.0.0_linux_arm64/cohort")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.verify(t, r.deb)
	if !errors.Is(err, release.ErrBadSignature) {
		t.Fatalf("verify a list signed by another key: %v, want %v", err, release.ErrBadSignature)
	}
	// With the key that signed it, it verifies.
	r.pub = other.pub
	if _, err := r.verify(t, r.deb); err != nil {
		t.Fatalf("verify with the signing key: %v", err)
	}
}

func TestVerifyTruncatedSignature(t *testing.T) {
	r := newTestRelease(t)
	b, _ := os.ReadFile(r.sig)
	for name, sig := range map[string]string{
		"truncated base64": string(b[:40]) + "\n",
		"short signature":  "AAAA\n",
		"empty":            "",
		"not base64":       "this is not a signature!\n",
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(r.sig, []byte(sig), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := r.verify(t, r.deb)
			if !errors.Is(err, release.ErrBadSignature) {
				t.Fatalf("verify: %v, want %v", err, release.ErrBadSignature)
			}
		})
	}
}

func TestVerifyFileNotListed(t *testing.T) {
	r := newTestRelease(t)
	extra := filepath.Join(r.dir, "cohort_1.0.0_arm64.rpm")
	if err := os.WriteFile(extra, []byte("rpm"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := r.verify(t, r.deb, extra)
	if !errors.Is(err, release.ErrNotListed) {
		t.Fatalf("verify an unlisted file: %v, want %v", err, release.ErrNotListed)
	}
	if !strings.Contains(err.Error(), "cohort_1.0.0_arm64.rpm") || errors.Is(err, release.ErrDigestMismatch) {
		t.Errorf("error %q", err)
	}
}

func TestVerifyMalformedKey(t *testing.T) {
	r := newTestRelease(t)
	priv, _ := os.ReadFile(filepath.Join(r.keyDir, "release-key"))
	pub, _ := os.ReadFile(r.pub)
	for name, key := range map[string]string{
		"empty":           "",
		"not PEM":         "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
		"private key":     string(priv),
		"damaged DER":     strings.Replace(string(pub), "MCowBQYDK2Vw", "MCowBQYDK2Vx", 1),
		"two keys":        string(pub) + string(pub),
		"truncated block": string(pub[:len(pub)/2]),
	} {
		t.Run(name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.pub")
			if err := os.WriteFile(bad, []byte(key), 0o644); err != nil {
				t.Fatal(err)
			}
			r := r
			r.pub = bad
			_, err := r.verify(t, r.deb)
			if !errors.Is(err, release.ErrBadKey) || !strings.Contains(err.Error(), bad) {
				t.Fatalf("verify with a %s key: %v", name, err)
			}
		})
	}
}

func TestVerifyUsage(t *testing.T) {
	r := newTestRelease(t)
	if _, _, err := runCohort(t, "verify", "--key", r.pub); err == nil {
		t.Error("verify with no FILE: no error")
	}
	if _, _, err := runCohort(t, "verify", r.deb); err == nil {
		t.Error("verify with no --key: no error")
	}
	// --sig defaults to the list's name with .sig.
	if _, _, err := runCohort(t, "verify", "--key", r.pub, "--sums", r.sums, r.deb); err != nil {
		t.Errorf("verify with the default --sig: %v", err)
	}
}
