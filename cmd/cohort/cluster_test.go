package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

// runOut runs the binary to completion and returns its stdout, failing the
// test if it exits non-zero.
func runOut(t *testing.T, bin string, args ...string) string {
	t.Helper()
	p := start(t, "cli", bin, args...)
	if err := p.wait(t, 60*time.Second); err != nil {
		t.Fatalf("cohort %s: %v\n%s", strings.Join(args, " "), err, p.out.String())
	}
	return p.out.String()
}

// TestClusterJoinAndRemove grows a running 3-node cluster of the real
// binary to 4 with `cohort admin cluster join` (the new node started
// without --bootstrap), kills the old leader with SIGKILL, removes it with
// the deprecated alias `cohort cluster remove`, and sees the job finish
// with every round committed once.
func TestClusterJoinAndRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as six processes")
	}
	spec := faultJob("membership")
	c := newCluster(t, 3, 2, spec)
	c.startAll()
	c.waitStatus(30*time.Second, "round 1 to commit", func(st coordinator.Status) bool {
		return committed(st, spec.ID) >= 1
	})

	// A fourth node: same flags as the others, but no --bootstrap and no
	// peers. It waits until it is added.
	n := &coordNode{id: "c4", raft: freeAddr(t, "tcp"), agent: freeAddr(t, "udp"), status: freeAddr(t, "tcp"), admin: freeAddr(t, "tcp")}
	runOK(t, c.bin, "ca", "issue", "--dir", c.pki, "--role", "coordinator", "--id", n.id, "--host", "127.0.0.1")
	n.args = c.coordinatorArgs(n)
	c.nodes = append(c.nodes, n)
	c.startCoordinator(len(c.nodes) - 1)

	// Join it through a follower's admin API.
	leader := c.leader(15 * time.Second)
	follower := (leader + 1) % 3
	out := runOut(t, c.bin, c.adminArgs(follower, "cluster", "join", "--id", "c4", "--raft-addr", n.raft)...)
	if !strings.Contains(out, "c4 joined") || strings.Count(out, "127.0.0.1:") < 4 {
		t.Fatalf("cluster join printed:\n%s", out)
	}
	c.waitNode(3, 30*time.Second, "the new node to catch up", func(st coordinator.Status) bool {
		return committed(st, spec.ID) >= 1 && st.Leader != ""
	})

	// Lose the old leader: three of four voters remain, a quorum.
	c.kill(leader)
	c.leader(15 * time.Second)
	// The old command still works, pointed at the admin address, and
	// says it is deprecated.
	out = runOut(t, c.bin, "cluster", "remove", "--addr", n.admin, "--id", c.nodes[leader].id,
		"--ca", filepath.Join(c.pki, "ca.crt"), "--token-file", c.tokenFile)
	if !strings.Contains(out, "removed") || !strings.Contains(out, "deprecated") {
		t.Fatalf("cluster remove printed:\n%s", out)
	}
	out = runOut(t, c.bin, c.adminArgs(3, "cluster")...)
	if strings.Contains(out, c.nodes[leader].id+" ") || !strings.Contains(out, "leader") {
		t.Fatalf("cluster status after the removal:\n%s", out)
	}
	t.Logf("cluster status:\n%s", out)
	js := c.waitDoneEverywhere(90*time.Second, spec.ID)
	checkHistory(t, js, faultRounds, c.siteNames())
}
