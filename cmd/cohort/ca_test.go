package main

import (
	"bytes"
	"crypto/x509"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// caRun runs `cohort ca` with args and returns its output.
func caRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = runCA(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCACommandInitAndIssue(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	stdout, _, err := caRun(t, "init", "--dir", caDir, "--name", "Test federation CA")
	if err != nil {
		t.Fatalf("ca init: %v", err)
	}
	caCert := filepath.Join(caDir, pki.CACertFile)
	caKey := filepath.Join(caDir, pki.CAKeyFile)
	for _, p := range []string{caCert, caKey} {
		if !strings.Contains(stdout, p) {
			t.Errorf("init output does not name %s:\n%s", p, stdout)
		}
	}
	if fi, err := os.Stat(caKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v, %v", fi, err)
	}
	pool, err := pki.LoadPool(caCert)
	if err != nil {
		t.Fatal(err)
	}

	outDir := filepath.Join(t.TempDir(), "site-out")
	tests := []struct {
		name         string
		args         []string
		dir          string
		wantID       pki.Identity
		wantEKU      x509.ExtKeyUsage
		wantHosts    []string
		wantValidity time.Duration
	}{
		{
			name:         "coordinator into the CA directory",
			args:         []string{"issue", "--dir", caDir, "--role", "coordinator", "--id", "c1", "--host", "c1.cohort.test", "--host", "127.0.0.1,10.0.0.11"},
			dir:          caDir,
			wantID:       pki.Identity{Role: pki.RoleCoordinator, ID: "c1"},
			wantEKU:      x509.ExtKeyUsageServerAuth,
			wantHosts:    []string{"c1.cohort.test", "127.0.0.1", "10.0.0.11"},
			wantValidity: pki.DefaultCoordinatorValidity,
		},
		{
			name:         "site into --out with --validity",
			args:         []string{"issue", "--dir", caDir, "--role", "site", "--id", "st-marys", "--out", outDir, "--validity", "720h"},
			dir:          outDir,
			wantID:       pki.Identity{Role: pki.RoleSite, ID: "st-marys"},
			wantEKU:      x509.ExtKeyUsageClientAuth,
			wantValidity: 720 * time.Hour,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			stdout, _, err := caRun(t, tt.args...)
			if err != nil {
				t.Fatalf("ca issue: %v", err)
			}
			certPath := filepath.Join(tt.dir, tt.wantID.ID+".crt")
			keyPath := filepath.Join(tt.dir, tt.wantID.ID+".key")
			for _, p := range []string{certPath, keyPath} {
				if !strings.Contains(stdout, p) {
					t.Errorf("issue output does not name %s:\n%s", p, stdout)
				}
			}
			pair, err := pki.LoadKeyPair(certPath, keyPath) // also checks the key's mode
			if err != nil {
				t.Fatalf("LoadKeyPair: %v", err)
			}
			if id, err := pki.IdentityOf(pair.Leaf); err != nil || id != tt.wantID {
				t.Errorf("IdentityOf = %+v, %v; want %+v", id, err, tt.wantID)
			}
			if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{tt.wantEKU}}); err != nil {
				t.Errorf("Verify: %v", err)
			}
			var hosts []string
			hosts = append(hosts, pair.Leaf.DNSNames...)
			for _, ip := range pair.Leaf.IPAddresses {
				hosts = append(hosts, ip.String())
			}
			if strings.Join(hosts, ",") != strings.Join(tt.wantHosts, ",") {
				t.Errorf("hosts = %v, want %v", hosts, tt.wantHosts)
			}
			if got := pair.Leaf.NotAfter.Sub(now); got < tt.wantValidity-time.Minute || got > tt.wantValidity+time.Minute {
				t.Errorf("validity = %v, want %v", got, tt.wantValidity)
			}
		})
	}
}

func TestCACommandHelp(t *testing.T) {
	stdout, _, err := caRun(t, "--help")
	if err != nil {
		t.Fatalf("ca --help: %v", err)
	}
	for _, want := range []string{"cohort ca init", "cohort ca issue", "--role coordinator|site", "--host"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help does not mention %q:\n%s", want, stdout)
		}
	}
	if n := strings.Count(stdout, "\n           cohort ca "); n < 2 {
		t.Errorf("help has %d examples, want at least 2:\n%s", n, stdout)
	}
	for _, sub := range []string{"init", "issue"} {
		t.Run(sub+" -h", func(t *testing.T) {
			_, stderr, err := caRun(t, sub, "-h")
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("error = %v, want flag.ErrHelp", err)
			}
			if !strings.Contains(stderr, "Usage: cohort ca "+sub) || !strings.Contains(stderr, "-dir") || !strings.Contains(stderr, "Example:") {
				t.Errorf("usage:\n%s", stderr)
			}
		})
	}
}

func TestCACommandErrors(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	if _, _, err := caRun(t, "init", "--dir", caDir); err != nil {
		t.Fatal(err)
	}
	if _, _, err := caRun(t, "issue", "--dir", caDir, "--role", "site", "--id", "taken"); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	tests := []struct {
		name    string
		args    []string
		wantErr error  // checked with errors.Is when set
		wantMsg string // substring of the error
	}{
		{name: "no subcommand", wantMsg: "no subcommand"},
		{name: "unknown subcommand", args: []string{"revoke"}, wantMsg: `unknown subcommand "revoke"`},
		{name: "init without dir", args: []string{"init"}, wantMsg: "--dir is required"},
		{name: "init twice", args: []string{"init", "--dir", caDir}, wantErr: pki.ErrExists},
		{name: "init extra argument", args: []string{"init", "--dir", caDir, "extra"}, wantMsg: "unexpected arguments"},
		{name: "unknown flag", args: []string{"init", "--bogus"}, wantMsg: "bogus"},
		{name: "issue without required flags", args: []string{"issue", "--dir", caDir}, wantMsg: "--role, --id required"},
		{name: "bad role", args: []string{"issue", "--dir", caDir, "--role", "admin", "--id", "x"}, wantErr: pki.ErrInvalidRole},
		{name: "bad id", args: []string{"issue", "--dir", caDir, "--role", "site", "--id", "St Marys"}, wantErr: pki.ErrInvalidID},
		{name: "coordinator without host", args: []string{"issue", "--dir", caDir, "--role", "coordinator", "--id", "c1"}, wantErr: pki.ErrNoHosts},
		{name: "site with host", args: []string{"issue", "--dir", caDir, "--role", "site", "--id", "s1", "--host", "s1.example"}, wantErr: pki.ErrHostsNotAllowed},
		{name: "bad validity", args: []string{"issue", "--dir", caDir, "--role", "site", "--id", "s1", "--validity", "90d"}, wantMsg: "validity"},
		{name: "negative validity", args: []string{"issue", "--dir", caDir, "--role", "site", "--id", "s1", "--validity", "-1h"}, wantErr: pki.ErrInvalidValidity},
		{name: "already issued", args: []string{"issue", "--dir", caDir, "--role", "site", "--id", "taken"}, wantErr: pki.ErrExists},
		{name: "would overwrite the CA key", args: []string{"issue", "--dir", caDir, "--role", "site", "--id", "ca"}, wantErr: pki.ErrExists},
		{name: "no CA", args: []string{"issue", "--dir", missing, "--role", "site", "--id", "s1"}, wantErr: os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := caRun(t, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

// TestExistOK: setup scripts (the compose testbed's one-shot services) run
// `ca init`, `ca issue` and `admin token new -o` again on every start.
// With --exist-ok each keeps what the first run made, byte for byte, and
// succeeds; it refuses to keep anything that is not what it would make.
func TestExistOK(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for i := range 2 {
		if out, _, err := caRun(t, "init", "--dir", caDir, "--exist-ok"); err != nil || (i == 1) != strings.Contains(out, "kept") {
			t.Fatalf("ca init --exist-ok, run %d: %v\n%s", i+1, err, out)
		}
	}
	caKey := read(filepath.Join(caDir, pki.CAKeyFile))
	if _, _, err := caRun(t, "init", "--dir", caDir); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("ca init without --exist-ok over a CA: %v", err)
	}
	issue := []string{"issue", "--dir", caDir, "--role", "coordinator", "--id", "c1", "--host", "c1", "--host", "127.0.0.1", "--out", filepath.Join(dir, "c1"), "--exist-ok"}
	for i := range 2 {
		if out, _, err := caRun(t, issue...); err != nil || (i == 1) != strings.Contains(out, "kept") {
			t.Fatalf("ca issue --exist-ok, run %d: %v\n%s", i+1, err, out)
		}
	}
	crt := read(filepath.Join(dir, "c1", "c1.crt"))
	// Not kept: another host, another role, or a certificate of another CA.
	for name, args := range map[string][]string{
		"new host":   append(slices.Clone(issue), "--host", "c1.example.org"),
		"other role": {"issue", "--dir", caDir, "--role", "site", "--id", "c1", "--out", filepath.Join(dir, "c1"), "--exist-ok"},
	} {
		if _, _, err := caRun(t, args...); err == nil || !strings.Contains(err.Error(), "can't be kept") {
			t.Errorf("%s: %v", name, err)
		}
	}
	other := filepath.Join(dir, "other-ca")
	if _, _, err := caRun(t, "init", "--dir", other); err != nil {
		t.Fatal(err)
	}
	if _, _, err := caRun(t, "issue", "--dir", other, "--role", "coordinator", "--id", "c1", "--host", "c1", "--out", filepath.Join(dir, "c1"), "--exist-ok"); err == nil || !strings.Contains(err.Error(), "not signed by this CA") {
		t.Errorf("a certificate of another CA was kept: %v", err)
	}
	if read(filepath.Join(caDir, pki.CAKeyFile)) != caKey || read(filepath.Join(dir, "c1", "c1.crt")) != crt {
		t.Fatal("--exist-ok changed a file")
	}

	tok := filepath.Join(dir, "bootstrap.token")
	var first string
	for i := range 2 {
		if err := runAdmin(t.Context(), []string{"token", "new", "-o", tok, "--exist-ok"}, io.Discard, io.Discard); err != nil {
			t.Fatalf("admin token new --exist-ok, run %d: %v", i+1, err)
		}
		if i == 0 {
			first = read(tok)
		}
	}
	if read(tok) != first {
		t.Fatal("token new --exist-ok replaced the token")
	}
	if err := os.WriteFile(tok, []byte("not a token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runAdmin(t.Context(), []string{"token", "new", "-o", tok, "--exist-ok"}, io.Discard, io.Discard); err == nil {
		t.Fatal("token new --exist-ok kept a file that holds no token")
	}
}
