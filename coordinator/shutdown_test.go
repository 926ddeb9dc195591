package coordinator

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestStopAnswersAdminRequestsInFlight stops a node while an admin request
// is between its handler and its audit record: the node stops taking new
// connections, but waits for the request, which gets its answer, and the
// answered request's audit record is in the log after a restart. (Before,
// Run closed the admin connections at once and could stop Raft under the
// request's proposal, whose future Raft then never answered.)
func TestStopAnswersAdminRequestsInFlight(t *testing.T) {
	tc := startCluster(t, 1, []string{"st-mary"}, nil)
	n, _ := tc.leader(t)
	addr := n.AdminAddr()

	entered, release := make(chan struct{}), make(chan struct{})
	hook := func() {
		select {
		case <-entered:
			return // only the first request waits
		default:
		}
		close(entered)
		<-release
	}
	n.beforeRecord.Store(&hook)

	type answer struct {
		code      int
		requestID string
		err       error
	}
	answered := make(chan answer, 1)
	go func() {
		req, err := http.NewRequest("GET", "https://"+addr+"/v1/sites", nil)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := tc.adminHTTP(t).Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		answered <- answer{code: resp.StatusCode, requestID: resp.Header.Get(RequestIDHeader), err: err}
	}()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the request never reached its audit record")
	}

	stopped := make(chan struct{})
	go func() { tc.stop(0, false); close(stopped) }()
	// The node stops listening first...
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the stopping node still accepts admin connections")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// ...and waits for the request in flight.
	select {
	case <-stopped:
		t.Fatal("the node stopped with an admin request in flight")
	default:
	}
	close(release)
	a := <-answered
	if a.err != nil || a.code != http.StatusOK {
		t.Fatalf("the request in flight: status %d, %v; want 200", a.code, a.err)
	}
	<-stopped

	tc.restart(t, 0)
	n = tc.nodes[0]
	leaves, err := n.audit.log.Entries(0, int(n.audit.log.Size()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves {
		var e AuditEntry
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		if e.RequestID == a.requestID {
			if e.Action != "GET /v1/sites" || e.Status != http.StatusOK {
				t.Fatalf("the request's audit record: %+v", e)
			}
			return
		}
	}
	t.Fatalf("no audit record of request %s in %d leaves", a.requestID, len(leaves))
}
