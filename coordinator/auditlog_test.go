package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/cohort-fl/cohort/coordinator/audit"
)

// auditActions returns the action of every leaf of a node's audit log.
func auditActions(t *testing.T, n *Node) []string {
	t.Helper()
	leaves, err := n.audit.log.Entries(0, int(n.audit.log.Size()))
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, l := range leaves {
		var e AuditEntry
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, e.Action)
	}
	return actions
}

// auditOf returns a node's audit log size and root.
func auditOf(n *Node) (uint64, []byte) { return n.audit.log.Size(), n.audit.log.Root() }

// TestAuditLogFollowsRaft: every node's log holds the same leaves as the
// leader's; a node that restarts replays its log without change; a node
// that joins after a snapshot gets the leaves from the snapshot; and the
// state's audit head matches the log.
func TestAuditLogFollowsRaft(t *testing.T) {
	tc := startClusterWith(t, 3, []string{"st-a"}, nil, func(c *Config) {
		c.TrailingLogs = 5 // a joining node installs a snapshot
	})
	leader, followers := tc.leader(t)
	for i := range 20 {
		tc.api(t, "POST", leader.AdminAddr(), "/v1/sites", map[string]string{"id": fmt.Sprintf("s%d", i)}, nil)
	}
	if err := leader.raftNode().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		tc.api(t, "GET", followers[0].AdminAddr(), fmt.Sprintf("/v1/sites/s%d", i), nil, nil)
	}
	same := func(n *Node) bool {
		ls, lr := auditOf(leader)
		s, r := auditOf(n)
		var head AuditHead
		n.fsm.view(func(st *state) { head = st.Audit })
		return s == ls && bytes.Equal(r, lr) && head.Size == s && bytes.Equal(head.Root, r)
	}
	for _, f := range followers {
		waitFor(t, f, "the follower's audit log to match the leader's", func() bool { return same(f) })
	}

	n4 := tc.addNode(t, "c4", nil)
	if code, raw := tc.api(t, "POST", leader.AdminAddr(), "/v1/cluster/nodes", map[string]string{"id": "c4", "raft_addr": n4.RaftAddr()}, nil); code != http.StatusOK {
		t.Fatalf("join: %d %s", code, raw)
	}
	tc.api(t, "GET", leader.AdminAddr(), "/v1/cluster", nil, nil)
	waitFor(t, n4, "the new node's audit log (from the snapshot) to match", func() bool { return same(n4) })
	if _, err := audit.VerifyDir(n4.AuditLogDir(), n4.audit.log.PublicKey()); err != nil {
		t.Fatalf("the new node's log: %v", err)
	}

	// A follower restarts: Raft restores its snapshot and replays the
	// entries after it, which are already in its log.
	idx := 0
	for i, n := range tc.nodes {
		if n == followers[1] {
			idx = i
		}
	}
	before, _ := auditOf(followers[1])
	tc.restart(t, idx)
	n := tc.nodes[idx]
	waitFor(t, n, "the restarted node's audit log to match", func() bool {
		if !same(n) {
			ls, _ := auditOf(leader)
			s, _ := auditOf(n)
			var head AuditHead
			n.fsm.view(func(st *state) { head = st.Audit })
			lid, _ := n.Leader()
			var sizes []string
			for _, m := range tc.nodes {
				ms, _ := auditOf(m)
				var h AuditHead
				m.fsm.view(func(st *state) { h = st.Audit })
				sizes = append(sizes, fmt.Sprintf("%s:%d/%d", m.ID(), ms, h.Size))
			}
			t.Logf("leader %d, restarted %d, head %d, broken %v; leader now %s; %v", ls, s, head.Size, n.audit.broken.Load(), lid, sizes)
		}
		return same(n)
	})
	if s, _ := auditOf(n); s < before {
		t.Fatalf("the restarted node's log shrank from %d to %d", before, s)
	}

	// Round and admin entries hold ids, never bodies: the site ids are
	// there, the request bodies' other fields are not.
	var page AuditEntries
	tc.api(t, "GET", leader.AdminAddr(), "/v1/audit/entries?limit=1000", nil, &page)
	for _, raw := range page.Entries {
		var e map[string]any
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		for k := range e {
			if !strings.Contains(" index time kind actor token_id role break_glass action target outcome status remote node request_id ", " "+k+" ") {
				t.Errorf("audit entry has field %q: %s", k, raw)
			}
		}
	}
}
