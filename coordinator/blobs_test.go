package coordinator

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/hashicorp/raft"
)

// maxEntryBytes is the largest Raft log entry on a node.
func maxEntryBytes(t *testing.T, n *Node) int {
	t.Helper()
	first, err := n.boltStore.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := n.boltStore.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	largest := 0
	for i := first; i <= last && i > 0; i++ {
		var l raft.Log
		if err := n.boltStore.GetLog(i, &l); err != nil {
			continue // compacted
		}
		largest = max(largest, len(l.Data))
	}
	return largest
}

func holders(tc *testCluster, digest string) int {
	k := 0
	for i, n := range tc.nodes {
		if tc.stops[i] != nil && n.blob.has(digest) {
			k++
		}
	}
	return k
}

// TestLargeModelSurvivesLeaderLoss runs a job whose model is 100 MB (an MLP
// of 25 million parameters) on three nodes: the model goes to agents over
// QUIC and between coordinators as blobs, the Raft log holds only
// references, and after the leader is lost the new leader serves the model
// and completes the next round.
func TestLargeModelSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("moves several 100 MB models")
	}
	job := testJob("big", 2, 1)
	job.Model = ModelSpec{Kind: "mlp", NumFeatures: 3, Hidden: []int{5000, 5000}}
	if job.Model.ModelBytes() < 100e6 {
		t.Fatalf("test model is %d bytes, want at least 100 MB", job.Model.ModelBytes())
	}
	tc := startClusterWith(t, 3, []string{"st-mary"}, []JobSpec{job}, func(c *Config) {
		c.ApplyTimeout = Duration(30 * time.Second)
		// Raft's default timeouts: writing and hashing 100 MB files on
		// two cores delays heartbeats past the other tests' 200 ms.
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 0, 0, 0
	})
	leader, _ := tc.leader(t)
	site := tc.ca.issue(t, pki.RoleSite, "st-mary")

	round := func(leader *Node, number uint64, delta float32) {
		t.Helper()
		a, err := dialRaw(t, leader.AgentAddr(), site)
		if err != nil {
			t.Fatal(err)
		}
		if w := a.call(t, hello()).GetWelcome(); w == nil {
			t.Fatalf("hello refused by %s", leader.ID())
		}
		offer := a.call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 10000}}}).GetTaskOffer()
		if offer.GetRound() != number || offer.GetModel().GetSize() != uint64(job.Model.ModelBytes()) {
			t.Fatalf("offer = %v", offer)
		}
		global := download(t, a, offer)
		d := make([]float32, len(global))
		for i := range d {
			d[i] = delta
		}
		if resp := upload(t, a, offer, d, 10); resp.GetAck() == nil {
			t.Fatalf("upload answered %v", resp)
		}
		waitFor(t, leader, "the round to commit", func() bool {
			j, _ := leader.Job("big")
			return j.CommittedRounds() >= number
		})
		j, _ := leader.Job("big")
		m := j.Models[number]
		// A majority held the model when its entry was proposed.
		if k := holders(tc, m.Digest); k < 2 {
			t.Fatalf("round %d model is held by %d nodes just after commit, want a majority", number, k)
		}
		w, err := leader.ModelWeights(context.Background(), m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := protocol.DecodeF32(w)
		for _, i := range []int{0, len(got) / 2, len(got) - 1} {
			if got[i] != global[i]+delta {
				t.Fatalf("round %d weight %d = %v, want %v", number, i, got[i], global[i]+delta)
			}
		}
	}
	round(leader, 1, 0.5)

	for _, n := range tc.nodes {
		if b := maxEntryBytes(t, n); b > 64<<10 {
			t.Errorf("%s: a Raft entry of %d bytes; models must stay out of the log", n.ID(), b)
		}
	}
	// The leader is lost; a survivor takes over and serves the model,
	// fetching it from a peer if its background sync has not.
	li := indexOf(tc.nodes, leader)
	next := tc.crashLeader(t, li)
	round(next, 2, 0.25)
	j, _ := next.Job("big")
	if j.State != JobDone {
		t.Fatalf("job is %s after its 2 rounds", j.State)
	}
}

func indexOf(nodes []*Node, n *Node) int {
	for i, m := range nodes {
		if m == n {
			return i
		}
	}
	return -1
}

// TestSnapshotCarriesModelReferences takes a node down, runs rounds while
// the others compact their logs, and brings it back: it catches up from a
// snapshot (which holds model references, not weights) and fetches the
// models from its peers. Unreferenced blobs are then collected.
func TestSnapshotCarriesModelReferences(t *testing.T) {
	tc := startClusterWith(t, 3, []string{"st-mary"}, []JobSpec{testJob("j1", 3, 1)}, func(c *Config) {
		c.TrailingLogs = 2
		c.SnapshotThreshold = 1
		c.SnapshotInterval = Duration(50 * time.Millisecond)
		c.BlobGCGrace = Duration(time.Hour)
	})
	leader, followers := tc.leader(t)
	lag := indexOf(tc.nodes, followers[0])
	// No entry is appended between here and the stop: no site is talking.
	lagLast, err := tc.nodes[lag].boltStore.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	tc.stop(lag, false)
	site := tc.ca.issue(t, pki.RoleSite, "st-mary")
	a, err := dialRaw(t, leader.AgentAddr(), site)
	if err != nil {
		t.Fatal(err)
	}
	a.call(t, hello())

	for r := uint64(1); r <= 3; r++ {
		offer := a.call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 10000}}}).GetTaskOffer()
		if offer.GetRound() != r {
			t.Fatalf("offer = %v", offer)
		}
		download(t, a, offer)
		if resp := upload(t, a, offer, []float32{1, 1, 1, float32(r)}, 10); resp.GetAck() == nil {
			t.Fatalf("upload answered %v", resp)
		}
		waitFor(t, leader, "the round to commit", func() bool {
			j, _ := leader.Job("j1")
			return j.CommittedRounds() >= r
		})
	}
	// Compact the leader's log so the lagging node needs the snapshot.
	if err := leader.raftNode().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if first, _ := leader.boltStore.FirstIndex(); first <= lagLast+1 {
		t.Fatalf("the leader's log starts at %d; the lagging node (at %d) would not need the snapshot", first, lagLast)
	}
	j, _ := leader.Job("j1")
	tc.restart(t, lag)
	back := tc.nodes[lag]
	waitFor(t, back, "the restarted node to hold every model", func() bool {
		bj, ok := back.Job("j1")
		if !ok || bj.State != JobDone {
			return false
		}
		for _, m := range j.Models {
			if !back.blob.has(m.Digest) {
				return false
			}
		}
		return true
	})
	if got := back.Stats().BlobsFetched.Load(); got < 3 {
		t.Errorf("the restarted node fetched %d models, want the 3 committed while it was down", got)
	}

	// Garbage: a stray blob is removed once older than the grace period;
	// models stay.
	stray := bytes.Repeat([]byte{7}, 64)
	d := protocol.Digest(stray)
	if err := back.blob.put(d, stray); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := back.CollectGarbage(); n != 0 {
		t.Fatalf("collected %d blobs inside the grace period", n)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(filepath.Join(back.blob.dir, d), old, old)
	for _, m := range j.Models {
		os.Chtimes(filepath.Join(back.blob.dir, m.Digest), old, old)
	}
	if n, _, err := back.CollectGarbage(); err != nil || n != 1 {
		t.Fatalf("collected %d blobs (%v), want the stray one", n, err)
	}
	for _, m := range j.Models {
		if !back.blob.has(m.Digest) {
			t.Fatalf("model of round %d was collected", m.Round)
		}
	}
}

// TestBlobPeerRefusesCorruptAndOversized: a peer's push whose bytes do not
// match the digest, or whose size is above max_model_bytes, is refused and
// leaves nothing behind.
func TestBlobPeerRefusesCorruptAndOversized(t *testing.T) {
	tc := startClusterWith(t, 2, nil, nil, func(c *Config) { c.MaxModelBytes = 1 << 20 })
	src, dst := tc.nodes[0], tc.nodes[1]
	good := bytes.Repeat([]byte{1, 2, 3, 4}, 1000)
	d := protocol.Digest(good)
	// src holds bytes under the wrong name.
	if err := os.WriteFile(filepath.Join(src.blob.dir, protocol.Digest([]byte("other"))), good, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad := protocol.Digest([]byte("other"))
	if err := src.pushBlobTo(ctx, dst.RaftAddr(), bad); err == nil {
		t.Fatal("a corrupt blob was accepted")
	}
	if dst.blob.has(bad) {
		t.Fatal("a corrupt blob was stored")
	}
	if err := src.blob.put(d, good); err != nil {
		t.Fatal(err)
	}
	if err := src.pushBlobTo(ctx, dst.RaftAddr(), d); err != nil {
		t.Fatal(err)
	}
	if !dst.blob.has(d) {
		t.Fatal("a good blob was not stored")
	}
	big := make([]byte, 2<<20)
	bd := protocol.Digest(big)
	if err := src.blob.put(bd, big); err != nil {
		t.Fatal(err)
	}
	if err := src.pushBlobTo(ctx, dst.RaftAddr(), bd); err == nil || dst.blob.has(bd) {
		t.Fatalf("an oversized blob was accepted: %v", err)
	}
	if err := dst.fetchBlobFrom(ctx, src.RaftAddr(), bd); err == nil || dst.blob.has(bd) {
		t.Fatalf("an oversized blob was fetched: %v", err)
	}
	if err := dst.fetchBlobFrom(ctx, src.RaftAddr(), protocol.Digest([]byte("nothing"))); err == nil {
		t.Fatal("fetching a blob the peer lacks succeeded")
	}
}
