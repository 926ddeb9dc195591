package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// adminCluster is a coordinator cluster run in this test process, with
// the admin API on loopback and a bootstrap token made by `cohort admin
// token new`, for testing `cohort admin` against the real API.
type adminCluster struct {
	t         *testing.T
	dir       string
	caFile    string
	tokenFile string // the bootstrap admin token
	nodes     []*coordinator.Node
	stops     []func()
}

// startAdminCluster starts n coordinators and waits until the bootstrap
// token works.
func startAdminCluster(t *testing.T, n int) *adminCluster {
	t.Helper()
	ac := &adminCluster{t: t, dir: t.TempDir()}
	pkiDir := filepath.Join(ac.dir, "pki")
	if err := runCA([]string{"init", "--dir", pkiDir}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	ac.caFile = filepath.Join(pkiDir, "ca.crt")
	ac.tokenFile = filepath.Join(ac.dir, "bootstrap-admin.token")
	if err := run(t.Context(), []string{"admin", "token", "new", "-o", ac.tokenFile}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	var peers []coordinator.Peer
	for i := range n {
		id := fmt.Sprintf("c%d", i+1)
		if err := runCA([]string{"issue", "--dir", pkiDir, "--role", "coordinator", "--id", id, "--host", "127.0.0.1"}, io.Discard, io.Discard); err != nil {
			t.Fatal(err)
		}
		c := coordinator.DefaultConfig()
		c.ID = id
		c.DataDir = filepath.Join(ac.dir, id)
		c.RaftAddr, c.AgentAddr, c.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		c.TLS = pki.Files{CA: ac.caFile, Cert: filepath.Join(pkiDir, id+".crt"), Key: filepath.Join(pkiDir, id+".key")}
		c.Auth.BootstrapTokenFile = ac.tokenFile
		c.Auth.RatePerSecond, c.Auth.Burst = 1000, 1000
		c.HeartbeatTimeout = coordinator.Duration(200 * time.Millisecond)
		c.ElectionTimeout = coordinator.Duration(200 * time.Millisecond)
		c.LeaderLeaseTimeout = coordinator.Duration(100 * time.Millisecond)
		c.TickInterval = coordinator.Duration(20 * time.Millisecond)
		node, err := coordinator.New(c)
		if err != nil {
			t.Fatal(err)
		}
		ac.nodes = append(ac.nodes, node)
		peers = append(peers, coordinator.Peer{ID: id, RaftAddr: node.RaftAddr()})
	}
	ac.stops = make([]func(), n)
	for i, node := range ac.nodes {
		if err := node.Bootstrap(peers); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := node.Run(ctx); err != nil {
				t.Errorf("node %s: %v", node.ID(), err)
			}
		}()
		ac.stops[i] = func() { cancel(); <-done; node.Close() }
	}
	t.Cleanup(func() {
		for i := range ac.nodes {
			ac.stop(i)
		}
	})
	waitFor(t, 30*time.Second, "the bootstrap token to work", func() (bool, string) {
		_, _, err := ac.cli(0, ac.tokenFile, "whoami", "--timeout", "2s")
		return err == nil, fmt.Sprint(err)
	})
	return ac
}

// stop stops node i (idempotent).
func (ac *adminCluster) stop(i int) {
	if ac.stops[i] != nil {
		ac.stops[i]()
		ac.stops[i] = nil
	}
}

// leader returns the index of the node that leads.
func (ac *adminCluster) leader() int {
	ac.t.Helper()
	leader := -1
	waitFor(ac.t, 20*time.Second, "a leader", func() (bool, string) {
		for i, n := range ac.nodes {
			if ac.stops[i] != nil && n.IsLeader() {
				leader = i
				return true, ""
			}
		}
		return false, "none leads"
	})
	return leader
}

// cli runs `cohort admin ARGS` against node i with the token in
// tokenFile.
func (ac *adminCluster) cli(i int, tokenFile string, args ...string) (stdout, stderr string, err error) {
	full := append([]string{"admin", "--server", "https://" + ac.nodes[i].AdminAddr(), "--ca", ac.caFile,
		"--token-file", tokenFile, "--timeout", "20s"}, args...)
	var out, errOut bytes.Buffer
	err = run(context.Background(), full, &out, &errOut)
	return out.String(), errOut.String(), err
}

// ok runs the CLI and fails the test unless it succeeds; it returns
// stdout.
func (ac *adminCluster) ok(t *testing.T, i int, tokenFile string, args ...string) string {
	t.Helper()
	out, errOut, err := ac.cli(i, tokenFile, args...)
	if err != nil {
		t.Fatalf("cohort admin %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// jsonOf runs the CLI with --json and decodes its output into v.
func (ac *adminCluster) jsonOf(t *testing.T, i int, tokenFile string, v any, args ...string) {
	t.Helper()
	out := ac.ok(t, i, tokenFile, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("cohort admin %s --json: %v in\n%s", strings.Join(args, " "), err, out)
	}
}

func contains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

// TestAdminCommands runs every `cohort admin` command against a real
// 3-node cluster, through a follower (which forwards) and the leader.
func TestAdminCommands(t *testing.T) {
	ac := startAdminCluster(t, 3)
	boot := ac.tokenFile
	leader := ac.leader()
	follower := (leader + 1) % 3

	out := ac.ok(t, follower, boot, "whoami")
	contains(t, "whoami", out, "bootstrap-admin (admin)", "expires")

	// People's tokens, one per role, written owner-only.
	tokens := map[string]string{}
	for _, role := range []string{"operator", "viewer", "auditor", "break-glass"} {
		t.Run("tokens create "+role, func(t *testing.T) {
			file := filepath.Join(ac.dir, role+".token")
			out := ac.ok(t, follower, boot, "tokens", "create", "--person", role+"@example.org", "--role", role, "--ttl", "8h", "-o", file)
			contains(t, "tokens create", out, "written to "+file, "("+role+")")
			if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("token file: %v, %v", fi, err)
			}
			out = ac.ok(t, leader, file, "whoami")
			contains(t, "whoami", out, role+"@example.org ("+role+")")
			if !strings.Contains(out, "(in 8h)") && !strings.Contains(out, "(in 7h59m)") {
				t.Errorf("whoami does not say the token expires in 8h:\n%s", out)
			}
			tokens[role] = file
		})
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("tokens", func(t *testing.T) {
		// Printed once, with a warning on stderr.
		out, errOut, err := ac.cli(follower, boot, "tokens", "create", "--person", "temp", "--role", "viewer")
		if err != nil {
			t.Fatal(err)
		}
		secret := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
		contains(t, "tokens create stderr", errOut, "only time the token is shown")
		tmp := filepath.Join(t.TempDir(), "temp.token")
		if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var who coordinator.Whoami
		ac.jsonOf(t, leader, tmp, &who, "whoami")
		if who.Person != "temp" || who.Role != coordinator.RoleViewer {
			t.Fatalf("whoami --json: %+v", who)
		}
		out = ac.ok(t, leader, boot, "tokens")
		contains(t, "tokens", out, "ID", "PERSON", "bootstrap-admin", "operator@example.org", "temp", "active")
		ac.ok(t, leader, boot, "tokens", "revoke", who.TokenID)
		_, _, err = ac.cli(follower, tmp, "whoami")
		if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "revoked") || !strings.Contains(err.Error(), "--token-file") {
			t.Fatalf("whoami with a revoked token: %v", err)
		}
		var list struct {
			Tokens []coordinator.TokenView `json:"tokens"`
		}
		ac.jsonOf(t, leader, tokens["auditor"], &list, "tokens")
		found := false
		for _, tk := range list.Tokens {
			found = found || tk.ID == who.TokenID && !tk.Revoked.IsZero()
		}
		if !found || len(list.Tokens) < 6 {
			t.Fatalf("tokens --json: %+v", list.Tokens)
		}
	})

	t.Run("sites", func(t *testing.T) {
		op := tokens["operator"]
		contains(t, "sites create", ac.ok(t, follower, op, "sites", "create", "st-a"), "site st-a enrolled")
		ac.ok(t, follower, op, "sites", "create", "st-b")
		contains(t, "sites show", ac.ok(t, leader, tokens["viewer"], "sites", "show", "st-a"), "st-a", "enrolled")
		contains(t, "sites revoke", ac.ok(t, follower, op, "sites", "revoke", "st-b"), "site st-b revoked", "refused")
		enroll := filepath.Join(t.TempDir(), "st-a.enroll")
		contains(t, "sites enroll-token", ac.ok(t, follower, op, "sites", "enroll-token", "st-a", "--ttl", "2h", "-o", enroll),
			"enrollment token", "for site st-a", "(in 2h", "written to "+enroll)
		if fi, err := os.Stat(enroll); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() < 20 {
			t.Errorf("enrollment token file: %v, %v", fi, err)
		}
		out := ac.ok(t, follower, tokens["viewer"], "sites")
		contains(t, "sites", out, "ID", "STATE", "st-a", "enrolled", "st-b", "revoked")
		var list struct {
			Sites []coordinator.SiteView `json:"sites"`
		}
		ac.jsonOf(t, follower, tokens["viewer"], &list, "sites")
		if len(list.Sites) != 2 || list.Sites[1].ID != "st-b" || list.Sites[1].Revoked.IsZero() {
			t.Fatalf("sites --json: %+v", list.Sites)
		}
	})

	t.Run("403 for a viewer", func(t *testing.T) {
		_, _, err := ac.cli(follower, tokens["viewer"], "sites", "create", "st-c")
		if err == nil {
			t.Fatal("a viewer created a site")
		}
		contains(t, "the error", err.Error(), "403 Forbidden: role viewer may not POST /v1/sites (needs sites.write)")
	})

	specFile := filepath.Join(ac.dir, "j1.json")
	spec := coordinator.DefaultJobSpec()
	spec.ID, spec.Rounds, spec.RoundTimeout = "j1", 3, coordinator.Duration(time.Hour)
	defaultFeatures(&spec)
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(specFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("jobs", func(t *testing.T) {
		op := tokens["operator"]
		contains(t, "jobs create", ac.ok(t, follower, op, "jobs", "create", "-f", specFile), "job j1 created", "3 rounds")
		contains(t, "jobs", ac.ok(t, follower, op, "jobs"), "ID", "j1", "0/3")
		// The leader opens round 1 at once (no site answers it here).
		waitFor(t, 20*time.Second, "round 1 to open", func() (bool, string) {
			out, _, err := ac.cli(leader, op, "jobs", "show", "j1")
			return err == nil && strings.Contains(out, "ROUND"), out
		})
		out := ac.ok(t, leader, op, "jobs", "show", "j1")
		contains(t, "jobs show", out, "job j1: running, 0 of 3 rounds committed", "ROUND", "ATTEMPT", "STATE", "SITES", "SAMPLES", "AUROC", "open")
		contains(t, "jobs rounds", ac.ok(t, leader, op, "jobs", "rounds", "j1"), "ROUND", "open")
		for _, c := range []struct{ verb, state string }{{"pause", "paused"}, {"resume", "running"}, {"cancel", "cancelled"}} {
			out := ac.ok(t, follower, op, "jobs", c.verb, "j1")
			contains(t, "jobs "+c.verb, out, "now "+c.state)
			var j coordinator.JobStatus
			ac.jsonOf(t, leader, tokens["viewer"], &j, "jobs", "show", "j1")
			if string(j.State) != c.state {
				t.Errorf("after %s the job is %s, want %s", c.verb, j.State, c.state)
			}
		}
		_, _, err := ac.cli(follower, op, "jobs", "resume", "j1")
		if err == nil || !strings.Contains(err.Error(), "409") {
			t.Errorf("resuming a cancelled job: %v", err)
		}

		// From stdin, without features: the simulator's spec, as in the
		// config file.
		var out2 bytes.Buffer
		a := &adminCLI{stdin: strings.NewReader(`{"id": "j2", "rounds": 1}`), stdout: &out2, stderr: io.Discard,
			getenv: func(string) string { return "" }, now: time.Now, timeout: 20 * time.Second}
		if err := a.run(t.Context(), []string{"--server", ac.nodes[follower].AdminAddr(), "--ca", ac.caFile, "--token-file", op, "jobs", "create", "-f", "-"}); err != nil {
			t.Fatalf("jobs create -f -: %v", err)
		}
		contains(t, "jobs create -f -", out2.String(), "job j2 created: running, 1 rounds")
		if _, _, err := ac.cli(follower, op, "jobs", "create", "-f", filepath.Join(ac.dir, "nowhere.json")); err == nil {
			t.Error("jobs create with a missing file")
		}
	})

	t.Run("models", func(t *testing.T) {
		var list struct {
			Models []coordinator.ModelView `json:"models"`
		}
		ac.jsonOf(t, follower, tokens["viewer"], &list, "models", "--job", "j1")
		var all struct {
			Models []coordinator.ModelView `json:"models"`
		}
		ac.jsonOf(t, follower, tokens["viewer"], &all, "models")
		if len(all.Models) != 2 {
			t.Errorf("models --json: %+v, want the initial models of j1 and j2", all.Models)
		}
		if len(list.Models) != 1 || list.Models[0].Round != 0 {
			t.Fatalf("models --json: %+v", list.Models)
		}
		m := list.Models[0]
		contains(t, "models", ac.ok(t, follower, tokens["viewer"], "models"), "DIGEST", m.Digest, "j1")
		contains(t, "models show", ac.ok(t, follower, tokens["viewer"], "models", "show", m.Digest[:10]), m.Digest, "round 0")

		file := filepath.Join(t.TempDir(), "j1-round0.f32")
		out := ac.ok(t, follower, tokens["operator"], "models", "download", m.Digest, "-o", file)
		contains(t, "models download", out, "sha256 "+m.Digest+" verified")
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != m.Digest || int64(len(raw)) != m.Size {
			t.Fatalf("downloaded %d bytes hashing to %x, want %d bytes hashing to %s", len(raw), sum, m.Size, m.Digest)
		}
		if _, _, err := ac.cli(follower, tokens["operator"], "models", "download", m.Digest, "-o", file); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Errorf("download over an existing file: %v", err)
		}
		ac.ok(t, follower, tokens["operator"], "models", "download", m.Digest, "-o", file, "--force")
		if _, _, err := ac.cli(follower, tokens["viewer"], "models", "download", m.Digest, "-o", file+".2"); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("a viewer downloaded a model: %v", err)
		}
		if _, err := os.Stat(file + ".2"); err == nil {
			t.Error("a refused download left a file")
		}
		if _, _, err := ac.cli(follower, tokens["operator"], "models", "download", strings.Repeat("0", 64), "-o", file+".3"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("downloading an unknown digest: %v", err)
		}
	})

	t.Run("registry", func(t *testing.T) {
		var list struct {
			Models []coordinator.ModelVersion `json:"models"`
		}
		ac.jsonOf(t, follower, tokens["viewer"], &list, "models", "versions", "j1")
		if len(list.Models) != 1 || list.Models[0].Stage != coordinator.StageCandidate {
			t.Fatalf("models versions --json: %+v", list.Models)
		}
		d := list.Models[0].Digest
		contains(t, "models versions", ac.ok(t, follower, tokens["viewer"], "models", "versions", "j1"), "STAGE", "candidate", d[:16])
		if _, _, err := ac.cli(follower, tokens["viewer"], "models", "stage", "j1", d, "production"); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("a viewer promoted a model: %v", err)
		}
		contains(t, "models stage", ac.ok(t, follower, tokens["operator"], "models", "stage", "j1", d, "production"), d, "(production)")
		if _, _, err := ac.cli(follower, tokens["operator"], "models", "stage", "j1", d, "gold"); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("an unknown stage: %v", err)
		}
		if _, _, err := ac.cli(follower, tokens["operator"], "models", "rollback", "j1"); err == nil || !strings.Contains(err.Error(), "409") {
			t.Errorf("a rollback with nothing to roll back to: %v", err)
		}
		contains(t, "models card", ac.ok(t, follower, tokens["viewer"], "models", "card", "j1", d), "# Model card: job j1, round 0", "## Limitations")
	})

	// published reports whether GET /v1/cluster names the nodes' admin
	// addresses and audit keys, which the API documents.
	published := func(t *testing.T) bool {
		var v clusterView
		ac.jsonOf(t, follower, tokens["viewer"], &v, "cluster")
		for _, n := range v.Nodes {
			if n.Leader && n.AdminAddr != "" && n.AuditKey != "" {
				return true
			}
		}
		return false
	}
	t.Run("cluster", func(t *testing.T) {
		out := ac.ok(t, follower, tokens["viewer"], "cluster")
		contains(t, "cluster", out, "ID", "ROLE", "ADMIN", "c1", "c2", "c3", "leader", "follower", ac.nodes[leader].RaftAddr())
		var v clusterView
		ac.jsonOf(t, follower, tokens["viewer"], &v, "cluster")
		if len(v.Nodes) != 3 || v.Leader != ac.nodes[leader].ID() {
			t.Fatalf("cluster --json: %+v", v)
		}
		if !published(t) {
			t.Fatal("GET /v1/cluster does not publish admin_addr and audit_key")
		}
		contains(t, "cluster", out, ac.nodes[leader].AdminAddr())
	})

	t.Run("audit tail", func(t *testing.T) {
		ac.ok(t, follower, tokens["break-glass"], "whoami")
		out := ac.ok(t, follower, tokens["auditor"], "audit", "tail", "-n", "400")
		contains(t, "audit tail", out, "INDEX", "ACTOR", "OUTCOME", "GET /v1/whoami", "bootstrap-admin", "POST /v1/sites", "viewer@example.org",
			"denied", "403", "round.open", "break-glass !", "! made with a break-glass token")
		var tail coordinator.AuditEntries
		ac.jsonOf(t, follower, tokens["auditor"], &tail, "audit", "tail", "-n", "5")
		if len(tail.Entries) != 5 || tail.Start+5 != tail.Size {
			t.Fatalf("audit tail -n 5 --json: start %d, size %d, %d entries", tail.Start, tail.Size, len(tail.Entries))
		}
		if _, _, err := ac.cli(follower, tokens["operator"], "audit", "tail"); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("an operator read the audit log: %v", err)
		}
	})

	// The leader signs the checkpoints; an auditor may pin its key.
	leaderKey := filepath.Join(ac.dir, ac.nodes[leader].ID(), "audit", "node.key")
	t.Run("audit verify", func(t *testing.T) {
		if !published(t) {
			t.Fatal("GET /v1/cluster does not publish the nodes' audit_key")
		}
		out := ac.ok(t, follower, tokens["auditor"], "audit", "verify")
		contains(t, "audit verify", out, "audit log verified: ", " entries, root ", "checkpoint signed by "+ac.nodes[leader].ID()+" at ")
	})
	var verified verifyResult
	t.Run("audit verify pinned", func(t *testing.T) {
		ac.jsonOf(t, follower, tokens["auditor"], &verified, "audit", "verify", "--key", leaderKey)
		if !verified.Verified || verified.Size < 50 || len(verified.Root) != 64 {
			t.Fatalf("audit verify --json: %+v", verified)
		}
		// Another node's key did not sign the leader's checkpoint.
		otherKey := filepath.Join(ac.dir, ac.nodes[follower].ID(), "audit", "node.key")
		if _, _, err := ac.cli(follower, tokens["auditor"], "audit", "verify", "--key", otherKey); err == nil || !strings.Contains(err.Error(), "FAILED") {
			t.Errorf("audit verify with another node's key: %v", err)
		}
	})

	t.Run("audit proof", func(t *testing.T) {
		for _, args := range [][]string{{"--index", "3"}, {"--index", "0"}, {"--index", "7", "--size", "20"}} {
			out := ac.ok(t, follower, tokens["auditor"], append(append([]string{"audit", "proof"}, args...), "--key", leaderKey)...)
			contains(t, "audit proof "+strings.Join(args, " "), out, "entry "+args[1]+":", "inclusion proof (", "verified against the checkpoint signed by")
		}
		if _, _, err := ac.cli(follower, tokens["auditor"], "audit", "proof", "--index", "100000", "--key", leaderKey); err == nil {
			t.Error("a proof for an entry beyond the log")
		}
	})

	t.Run("audit consistency", func(t *testing.T) {
		if verified.Root == "" {
			t.Skip("audit verify failed")
		}
		out := ac.ok(t, follower, tokens["auditor"], "audit", "consistency", "--from", fmt.Sprint(verified.Size), "--from-root", verified.Root, "--key", leaderKey)
		contains(t, "audit consistency", out, "consistent: the log of "+fmt.Sprint(verified.Size)+" entries (root "+verified.Root+")")
		bad := strings.Repeat("ab", 32)
		if _, _, err := ac.cli(follower, tokens["auditor"], "audit", "consistency", "--from", fmt.Sprint(verified.Size), "--from-root", bad, "--key", leaderKey); err == nil || !strings.Contains(err.Error(), "FAILED") {
			t.Errorf("consistency with a wrong root: %v", err)
		}
	})
}

// TestAdminAuditVerifyDataDir stops a node, then edits, deletes and
// reorders audit entries in copies of its data directory: the offline
// `cohort admin audit verify --data-dir` must fail and name the entry.
func TestAdminAuditVerifyDataDir(t *testing.T) {
	ac := startAdminCluster(t, 1)
	for range 12 {
		ac.ok(t, 0, ac.tokenFile, "whoami")
	}
	ac.stop(0)
	src := filepath.Join(ac.dir, "c1", "audit")
	lines := readLines(t, filepath.Join(src, "entries.jsonl"))
	k := whoamiRun(t, lines)

	tests := []struct {
		name   string
		edit   func(lines []string) []string
		want   []string // in the error
		wantOK bool
	}{
		{name: "untouched", edit: func(l []string) []string { return l }, wantOK: true},
		{name: "one byte changed", edit: func(l []string) []string {
			l[k] = flipByte(l[k])
			return l
		}, want: []string{fmt.Sprintf("FAILED at entry %d", k), "altered"}},
		{name: "line deleted", edit: func(l []string) []string {
			return append(l[:k:k], l[k+1:]...)
		}, want: []string{fmt.Sprintf("FAILED at entry %d", k)}},
		{name: "lines swapped", edit: func(l []string) []string {
			l[k], l[k+1] = l[k+1], l[k]
			return l
		}, want: []string{fmt.Sprintf("FAILED at entry %d", k), "reordered"}},
		{name: "last line deleted", edit: func(l []string) []string {
			return l[:len(l)-1]
		}, want: []string{fmt.Sprintf("FAILED at entry %d", len(lines)-1), "missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			copyAuditDir(t, src, filepath.Join(dataDir, "audit"))
			edited := tt.edit(append([]string(nil), lines...))
			writeLines(t, filepath.Join(dataDir, "audit", "entries.jsonl"), edited)
			var out, errOut bytes.Buffer
			err := run(t.Context(), []string{"admin", "audit", "verify", "--data-dir", dataDir}, &out, &errOut)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("verify: %v\n%s", err, errOut.String())
				}
				contains(t, "verify", out.String(), fmt.Sprintf("audit log verified: %d entries", len(lines)))
				return
			}
			if err == nil {
				t.Fatalf("verify passed:\n%s", out.String())
			}
			contains(t, "the error", err.Error(), tt.want...)
			// --json says where too.
			out.Reset()
			err = run(t.Context(), []string{"admin", "audit", "verify", "--data-dir", dataDir, "--json"}, &out, io.Discard)
			var res verifyResult
			if jerr := json.Unmarshal(out.Bytes(), &res); err == nil || jerr != nil || res.Verified || res.Index == nil {
				t.Fatalf("--json: %v, %v:\n%s", err, jerr, out.String())
			}
		})
	}
}

// TestAdminAuditVerifyLiveTamper edits the running leader's entries.jsonl
// in place: the online `cohort admin audit verify` must fail and name the
// entry, and pass again once the byte is restored.
func TestAdminAuditVerifyLiveTamper(t *testing.T) {
	ac := startAdminCluster(t, 1)
	for range 12 {
		ac.ok(t, 0, ac.tokenFile, "whoami")
	}
	// The key pinned from the node's own directory, as an auditor who
	// recorded it would.
	key := filepath.Join(ac.dir, "c1", "audit", "node.key")
	contains(t, "verify", ac.ok(t, 0, ac.tokenFile, "audit", "verify", "--key", key), "audit log verified")
	path := filepath.Join(ac.dir, "c1", "audit", "entries.jsonl")
	lines := readLines(t, path)
	k := whoamiRun(t, lines)
	off := 0
	for _, l := range lines[:k] {
		off += len(l) + 1
	}
	tests := []struct {
		name string
		// at is where in line k the byte is changed, to what.
		at   func(line string) (int, byte)
		want string
	}{
		{name: "a letter in a value (still JSON)", at: func(l string) (int, byte) {
			i := strings.Index(l, `"outcome":"ok"`) + len(`"outcome":"`)
			return i, 'O'
		}, want: "altered"},
		{name: "a quote (no longer JSON)", at: func(l string) (int, byte) {
			return strings.Index(l, `"outcome"`), 'x'
		}, want: "altered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i, b := tt.at(lines[k])
			writeByteAt(t, path, int64(off+i), b)
			_, _, err := ac.cli(0, ac.tokenFile, "audit", "verify", "--key", key)
			writeByteAt(t, path, int64(off+i), lines[k][i])
			if err == nil {
				t.Fatal("audit verify passed with an edited entry")
			}
			contains(t, "the error", err.Error(), fmt.Sprintf("FAILED at entry %d on c1", k), tt.want)
			contains(t, "verify after the repair", ac.ok(t, 0, ac.tokenFile, "audit", "verify", "--key", key), "audit log verified")
		})
	}
}

// TestAdminDownloadChecksDigest serves wrong weights: nothing is written.
func TestAdminDownloadChecksDigest(t *testing.T) {
	good := []byte("weights of a committed model")
	sum := sha256.Sum256(good)
	digest := hex.EncodeToString(sum[:])
	tests := []struct {
		name    string
		header  string
		body    []byte
		wantErr bool
	}{
		{name: "good", header: digest, body: good},
		{name: "other bytes", header: digest, body: []byte("weights of another model"), wantErr: true},
		{name: "header names another model", header: strings.Repeat("1", 64), body: good, wantErr: true},
		{name: "no header", body: good, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeAPI(t, func(w http.ResponseWriter, req *http.Request) {
				if req.URL.Path != "/v1/models/"+digest+"/weights" {
					http.NotFound(w, req)
					return
				}
				if tt.header != "" {
					w.Header().Set("Cohort-Model-Sha256", tt.header)
				}
				w.Write(tt.body)
			})
			out := filepath.Join(t.TempDir(), "model.f32")
			n, err := downloadModel(t.Context(), c, digest, out, false)
			if tt.wantErr {
				if !errors.Is(err, errDigestMismatch) {
					t.Fatalf("err = %v, want errDigestMismatch", err)
				}
				if _, err := os.Stat(out); err == nil {
					t.Fatal("the file was written")
				}
				if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "*")); len(left) != 0 {
					t.Fatalf("left behind: %v", left)
				}
				return
			}
			if err != nil || n != int64(len(good)) {
				t.Fatalf("download: %d, %v", n, err)
			}
		})
	}
}

// fakeAPI serves h over HTTPS and returns a client for it.
func fakeAPI(t *testing.T, h http.HandlerFunc) *adminClient {
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return &adminClient{base: srv.URL, token: "cohort_t0000000000_x", http: srv.Client()}
}

// TestAdminOffline covers what needs no server: token new, help, and
// argument errors.
func TestAdminOffline(t *testing.T) {
	dir := t.TempDir()
	cmd := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append([]string{"admin"}, args...), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	t.Run("token new", func(t *testing.T) {
		out, _, err := cmd("token", "new")
		if err != nil || !strings.HasPrefix(out, "cohort_t") {
			t.Fatalf("token new: %q, %v", out, err)
		}
		file := filepath.Join(dir, "boot.token")
		if _, _, err := cmd("token", "new", "-o", file); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("token file: %v %v", fi, err)
		}
		if tok, err := coordinator.ReadTokenFile(file); err != nil || tok == strings.TrimSpace(out) {
			t.Fatalf("ReadTokenFile: %q, %v", tok, err)
		}
		if _, _, err := cmd("token", "new", "-o", file); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Fatalf("token new over a file: %v", err)
		}
		if _, _, err := cmd("token", "new", "-o", file, "--force"); err != nil {
			t.Fatal(err)
		}
	})

	loose := filepath.Join(dir, "loose.token")
	tok, _ := coordinator.NewAdminToken()
	if err := os.WriteFile(loose, []byte(tok), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.token")
	if err := os.WriteFile(good, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "pki")
	if err := runCA([]string{"init", "--dir", ca}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	closed := freeAddr(t, "tcp")
	errTests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown audit command", []string{"audit", "frobnicate"}, `unknown command "frobnicate"`},
		{"no server", []string{"whoami", "--token-file", good}, "no server"},
		{"plain http", []string{"whoami", "--server", "http://127.0.0.1:1", "--token-file", good}, "HTTPS only"},
		{"no token", []string{"whoami", "--server", closed}, "no token"},
		{"token file readable by others", []string{"whoami", "--server", closed, "--token-file", loose}, "chmod 600"},
		{"missing argument", []string{"sites", "show", "--server", closed, "--token-file", good}, "missing ID"},
		{"extra argument", []string{"sites", "st-a", "--server", closed, "--token-file", good}, `unexpected argument "st-a"`},
		{"server down", []string{"whoami", "--server", closed, "--token-file", good, "--ca", filepath.Join(ca, "ca.crt")}, "cannot reach https://" + closed},
		{"data dir without a log", []string{"audit", "verify", "--data-dir", dir}, "not a coordinator's data directory"},
		{"stale cluster alias", []string{"--stale"}, "--stale is gone"},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.name == "stale cluster alias" {
				err = runCluster(t.Context(), tt.args, io.Discard, io.Discard)
			} else {
				_, _, err = cmd(tt.args...)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// TestAdminHelp checks that every command explains itself and the role
// it needs.
func TestAdminHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"admin", "--help"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	contains(t, "admin --help", out.String(), "whoami", "cluster", "sites", "jobs", "models", "tokens", "token new", "audit", "COHORT_SERVER", "break-glass")
	a := &adminCLI{}
	for name, c := range a.commands() {
		t.Run(name, func(t *testing.T) {
			var errOut bytes.Buffer
			err := run(t.Context(), append(append([]string{"admin"}, strings.Fields(name)...), "--help"), io.Discard, &errOut)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			want := []string{"Usage: cohort admin " + name, "Global flags"}
			if c.perm != "" {
				want = append(want, "Needs: permission "+c.perm+", which "+rolesFor[c.perm])
			}
			contains(t, name+" --help", errOut.String(), want...)
			if rolesFor[c.perm] == "" && c.perm != "" {
				t.Errorf("no roles listed for permission %s", c.perm)
			}
		})
	}
	var group bytes.Buffer
	if err := run(t.Context(), []string{"admin", "audit", "--help"}, &group, io.Discard); err != nil {
		t.Fatal(err)
	}
	contains(t, "admin audit --help", group.String(), "audit verify", "audit tail", "audit proof", "audit consistency")
}

// readLines reads a file of lines (without their newlines).
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// whoamiRun returns an index k such that entries k-1, k and k+1 all
// record GET /v1/whoami: each was appended (and checkpointed) alone, so a
// change to k is located exactly.
func whoamiRun(t *testing.T, lines []string) int {
	t.Helper()
	is := func(i int) bool { return strings.Contains(lines[i], `"action":"GET /v1/whoami"`) }
	for k := len(lines) - 3; k >= 1; k-- {
		if is(k-1) && is(k) && is(k+1) {
			return k
		}
	}
	t.Fatalf("no run of whoami entries in the log:\n%s", strings.Join(lines, "\n"))
	return 0
}

// flipByte changes one letter in the middle of a line.
func flipByte(l string) string {
	i := strings.Index(l, `"action":"GET`) + len(`"action":"G`)
	return l[:i] + "X" + l[i+1:]
}

func copyAuditDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"entries.jsonl", "checkpoints.jsonl", "node.key"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// writeByteAt overwrites one byte of a file in place (the running node
// keeps its file open: a new file would not be what it reads).
func writeByteAt(t *testing.T, path string, off int64, b byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b}, off); err != nil {
		t.Fatal(err)
	}
}
