package agent

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// TestEnrollGateway: enrollment writes an owner-only key and the
// certificate for it into DATA_DIR/tls; it refuses to replace them
// without Force, says so when the token is refused, and trusts only the
// CA it was given. A failed enrollment leaves the files as they were.
func TestEnrollGateway(t *testing.T) {
	p := newTestPKI(t)
	admin := newFakeAdmin(t, p, time.Now, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dataDir := filepath.Join(t.TempDir(), "agent")
	cfg := EnrollConfig{Server: admin.srv.URL, CA: p.caFile, Token: "good-token", DataDir: dataDir}

	got, err := Enroll(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := DefaultTLSFiles(dataDir)
	if got.Site != "st-new" || got.Files != f || time.Until(got.NotAfter) < 50*time.Minute {
		t.Fatalf("enrolled %+v", got)
	}
	for path, want := range map[string]os.FileMode{filepath.Dir(f.Key): 0o700, f.Key: 0o600, f.Cert: 0o644, f.CA: 0o644} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v %v, want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	pair, err := pki.LoadKeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("the files written are not a key pair: %v", err)
	}
	if id, err := pki.IdentityOf(pair.Leaf); err != nil || id != (pki.Identity{Role: pki.RoleSite, ID: "st-new"}) {
		t.Errorf("identity %v %v", id, err)
	}
	if _, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("key type %T, want ECDSA", pair.PrivateKey)
	}
	if ca, _ := os.ReadFile(f.CA); string(ca) != string(p.ca.CertPEM()) {
		t.Error("ca.crt is not the CA given")
	}
	// An agent configured with only the data directory uses these files.
	acfg := DefaultConfig()
	acfg.DataDir, acfg.Coordinators = dataDir, []string{"127.0.0.1:1"}
	if a, err := New(acfg); err != nil || a.SiteID() != "st-new" {
		t.Fatalf("agent on the enrolled files: %v", err)
	}
	before, _ := os.ReadFile(f.Key)

	other := newTestPKI(t)
	for _, tt := range []struct {
		name   string
		mutate func(*EnrollConfig)
		setup  func()
		want   error
		detail string
	}{
		{name: "already enrolled", want: ErrEnrolled, detail: "--force"},
		{name: "token used", mutate: func(c *EnrollConfig) { c.Force = true }, want: ErrTokenRefused, detail: "already used"},
		{name: "server from another CA", mutate: func(c *EnrollConfig) { c.Force, c.CA = true, other.caFile }, detail: "is not a coordinator of this federation"},
		{name: "plain http", mutate: func(c *EnrollConfig) { c.Force, c.Server = true, "http://127.0.0.1:1" }, detail: "HTTPS only"},
		{name: "unreachable", mutate: func(c *EnrollConfig) { c.Force, c.Server = true, "https://127.0.0.1:1" }, detail: "cannot reach the coordinators' admin API at https://127.0.0.1:1"},
		{name: "certificate for another key", mutate: func(c *EnrollConfig) { c.Force = true }, setup: func() {
			admin.mu.Lock()
			admin.tokenUsed, admin.otherKey = false, true
			admin.mu.Unlock()
		}, want: ErrBadIssue, detail: "does not hold this gateway's key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.mutate != nil {
				tt.mutate(&c)
			}
			if tt.setup != nil {
				tt.setup()
			}
			_, err := Enroll(ctx, c)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("Enroll = %v, want %v saying %q", err, tt.want, tt.detail)
			}
			if after, _ := os.ReadFile(f.Key); string(after) != string(before) {
				t.Error("a failed enrollment replaced the key")
			}
			ents, _ := os.ReadDir(filepath.Dir(f.Key))
			if len(ents) != 3 {
				t.Errorf("the tls directory holds %d files, want 3 (no leftovers)", len(ents))
			}
		})
	}
}
