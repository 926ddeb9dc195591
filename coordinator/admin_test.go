package coordinator

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// addNode starts one more node, without bootstrap, for a join.
func (tc *testCluster) addNode(t *testing.T, id string, edit func(*Config)) *Node {
	t.Helper()
	c := tc.cfgs[0]
	c.ID = id
	c.DataDir = t.TempDir()
	c.RaftAddr, c.AgentAddr = "127.0.0.1:0", "127.0.0.1:0"
	if c.StatusAddr != "" {
		c.StatusAddr = "127.0.0.1:0"
	}
	c.TLS = tc.ca.issue(t, pki.RoleCoordinator, id, "127.0.0.1")
	if edit != nil {
		edit(&c)
	}
	node, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes = append(tc.nodes, node)
	tc.cfgs = append(tc.cfgs, c)
	tc.stops = append(tc.stops, nil)
	tc.run(t, len(tc.nodes)-1)
	return node
}

// TestJoinAndRemoveThroughAFollower grows a 3-node cluster to 4 and back
// through the admin API of a follower, which forwards the writes to the
// leader. The new node catches up, models included, and serves reads.
func TestJoinAndRemoveThroughAFollower(t *testing.T) {
	tc := startCluster(t, 3, []string{"st-mary"}, []JobSpec{testJob("j1", 2, 1)})
	leader, followers := tc.leader(t)
	f := followers[0].AdminAddr()

	n4 := tc.addNode(t, "c4", nil)
	var v ClusterView
	if code, body := tc.api(t, "POST", f, "/v1/cluster/nodes", map[string]string{"id": "c4", "raft_addr": n4.RaftAddr()}, &v); code != http.StatusOK {
		t.Fatalf("join: %d %s", code, body)
	}
	if len(v.Nodes) != 4 || v.Leader != leader.ID() {
		t.Fatalf("after the join: %+v", v)
	}
	j, _ := leader.Job("j1")
	waitFor(t, n4, "the new node to apply the log and hold the initial model", func() bool {
		_, ok := n4.Job("j1")
		return ok && n4.blob.has(j.Models[0].Digest)
	})
	// The new node answers reads (forwarded to the leader).
	var sv SiteView
	if code, body := tc.api(t, "GET", n4.AdminAddr(), "/v1/sites/st-mary", nil, &sv); code != http.StatusOK || sv.ID != "st-mary" {
		t.Fatalf("read through the new node: %d %s", code, body)
	}

	// Refusals.
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"POST", "/v1/cluster/nodes", map[string]string{"id": "Bad Id", "raft_addr": "127.0.0.1:1"}, http.StatusBadRequest},
		{"POST", "/v1/cluster/nodes", map[string]string{"id": "c9", "raft_addr": "nowhere"}, http.StatusBadRequest},
		{"POST", "/v1/cluster/nodes", `{"id": "c9", "raft_addr": "127.0.0.1:1", "extra": 1}`, http.StatusBadRequest},
		{"POST", "/v1/cluster/nodes", `{"id": `, http.StatusBadRequest},
		{"POST", "/v1/sites", `{"id": "x"}` + strings.Repeat(" ", maxAdminBody), http.StatusRequestEntityTooLarge},
		{"POST", "/v1/sites", map[string]string{"id": "../etc"}, http.StatusBadRequest},
		{"DELETE", "/v1/cluster/nodes/c9", nil, http.StatusNotFound},
		{"GET", "/v1/sites/nowhere", nil, http.StatusNotFound},
		{"GET", "/v1/jobs/nowhere", nil, http.StatusNotFound},
		{"POST", "/v1/jobs", map[string]any{"id": "j2", "rounds": 0}, http.StatusBadRequest},
	} {
		if code, body := tc.api(t, c.method, f, c.path, c.body, nil); code != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.want)
		}
	}
	// A job: created through a follower, then the same spec again (fine),
	// then a different spec under the same id (a conflict).
	spec := testJob("j2", 1, 1)
	var js JobStatus
	if code, body := tc.api(t, "POST", f, "/v1/jobs", spec, &js); code != http.StatusCreated || js.ID != "j2" {
		t.Fatalf("create job: %d %s", code, body)
	}
	if code, body := tc.api(t, "POST", f, "/v1/jobs", spec, nil); code != http.StatusCreated {
		t.Fatalf("create the same job again: %d %s", code, body)
	}
	spec.Rounds = 5
	if code, body := tc.api(t, "POST", f, "/v1/jobs", spec, nil); code != http.StatusConflict {
		t.Fatalf("create a different job under the same id: %d %s", code, body)
	}

	// Remove the new node, then the leader itself: a new leader follows.
	if code, body := tc.api(t, "DELETE", f, "/v1/cluster/nodes/c4", nil, &v); code != http.StatusOK || len(v.Nodes) != 3 {
		t.Fatalf("remove c4: %d %s", code, body)
	}
	if code, body := tc.api(t, "DELETE", f, "/v1/cluster/nodes/"+leader.ID(), nil, nil); code != http.StatusOK {
		t.Fatalf("remove the leader: %d %s", code, body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := tc.api(t, "GET", f, "/v1/cluster", nil, &v)
		if code == http.StatusOK && v.Leader != "" && v.Leader != leader.ID() && len(v.Nodes) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader after removing %s: %+v", leader.ID(), v)
		}
		time.Sleep(50 * time.Millisecond)
	}

}

// TestAdminBadRequestsAreCounted: admin requests refused for what they ask
// (invalid input, an unknown route or resource, a body too large) are
// counted in AdminBadRequests; refusals for the token are not.
func TestAdminBadRequestsAreCounted(t *testing.T) {
	tc := startCluster(t, 1, nil, nil)
	leader, _ := tc.leader(t)
	addr := leader.AdminAddr()
	for _, c := range []struct {
		token, method, path string
		body                any
		want                int
	}{
		{tc.token, "POST", "/v1/sites", map[string]string{"id": "<script>"}, http.StatusBadRequest},
		{tc.token, "POST", "/v1/sites", `{"id": "x"}` + strings.Repeat(" ", maxAdminBody), http.StatusRequestEntityTooLarge},
		{tc.token, "GET", "/v1/sites/nowhere", nil, http.StatusNotFound},
		{tc.token, "GET", "/v1/no-such-route", nil, http.StatusNotFound},
		{"", "GET", "/v1/sites", nil, http.StatusUnauthorized},
		{tc.token, "GET", "/v1/sites", nil, http.StatusOK},
	} {
		if code, body := tc.apiAs(t, c.token, c.method, addr, c.path, c.body, nil); code != c.want {
			t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.want)
		}
	}
	if got := leader.Stats().AdminBadRequests.Load(); got != 4 {
		t.Fatalf("admin_bad_requests = %d, want 4", got)
	}
}
