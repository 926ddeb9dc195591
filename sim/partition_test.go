package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

// Fault tests of the coordinator cluster, in process: raftnet faults drop
// or delay the Raft and blob traffic between coordinators while the
// agents' QUIC connections are untouched. Each test checks that the job
// commits exactly its rounds, each once, that every node agrees on each
// round's model, and the accounting of checkAccounting.

// agentsAcked reports whether the agents of sites have each had at least n
// updates acknowledged.
func (f *faultFed) agentsAcked(n int, sites ...string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.agents {
		for _, s := range sites {
			if a.SiteID() == s && a.Stats().UpdatesAcked < n {
				return false
			}
		}
	}
	return true
}

// resent is how many acknowledged updates the agents sent again.
func (f *faultFed) resent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.agents {
		n += a.Stats().UpdatesResent
	}
	return n
}

// holdLast holds the last site's upload for round of job "j" until the
// returned release (or the end of the test).
func (f *faultFed) holdLast(t *testing.T, round uint64) (release func()) {
	release = f.egress.hold(f.ids[len(f.ids)-1], round)
	t.Cleanup(release)
	return release
}

// waitMidRound waits until a leader has round open with every site's
// update but the last acknowledged (receipts committed and Acks received)
// and the last site's upload waiting at its gate (see holdLast), and
// returns that leader.
func (f *faultFed) waitMidRound(t *testing.T, round uint64) *coordinator.Node {
	t.Helper()
	last := f.ids[len(f.ids)-1]
	var leader *coordinator.Node
	within(t, 30*time.Second, fmt.Sprintf("round %d open with every other site's update acknowledged", round), func() bool {
		leader = nil
		for _, n := range f.nodes {
			if n.IsLeader() && openWithReceipts(n, round, len(f.ids)-1) {
				leader = n
			}
		}
		return leader != nil && f.agentsAcked(int(round), f.ids[:len(f.ids)-1]...) && f.egress.tried(last, round)
	})
	return leader
}

// other returns a node of the federation that is none of not.
func (f *faultFed) other(not ...*coordinator.Node) *coordinator.Node {
	for _, n := range f.nodes {
		skip := false
		for _, x := range not {
			skip = skip || n == x
		}
		if !skip {
			return n
		}
	}
	return nil
}

// The leader is cut off from both followers in the middle of a round, after
// acknowledging two of three updates; the third site's upload reaches the
// cut-off leader over QUIC just after the cut. The majority elects a new
// leader; the old one steps down when its lease runs out, acknowledges
// nothing more and commits nothing. The agents find the new leader and send
// it the updates it lacks. After the heal the old leader rejoins as a
// follower and catches up, and the job commits each round once.
func TestLeaderPartitionedFromMajority(t *testing.T) {
	const rounds, cut = 5, 2
	fed := startFaultFederation(t, 3, smallJob(rounds, 3))
	release := fed.holdLast(t, cut)
	// The next round waits too, so that the old leader rejoins mid-job.
	releaseNext := fed.holdLast(t, cut+1)
	old := fed.waitMidRound(t, cut)
	if got := committed(old); got != cut-1 {
		t.Fatalf("the leader committed %d rounds before the cut, want %d", got, cut-1)
	}
	accepted := old.Stats().UpdatesAccepted.Load()
	start := time.Now()
	fed.partition(old)
	release()

	within(t, 10*time.Second, "the cut-off leader to step down", func() bool { return !old.IsLeader() })
	t.Logf("the cut-off leader stepped down after %v", time.Since(start).Round(time.Millisecond))
	var leader *coordinator.Node
	within(t, 10*time.Second, "the majority to elect a new leader", func() bool {
		for _, n := range fed.nodes {
			if _, addr := n.Leader(); n != old && n.IsLeader() && addr != "" {
				leader = n
			}
		}
		return leader != nil
	})
	t.Logf("%s leads the majority after %v", leader.ID(), time.Since(start).Round(time.Millisecond))
	within(t, 30*time.Second, "the new leader to commit the cut round", func() bool { return committed(leader) >= cut })
	t.Logf("the new leader committed round %d after %v", cut, time.Since(start).Round(time.Millisecond))

	// Cut off, the old leader claims nothing, commits nothing and
	// acknowledges nothing.
	if old.IsLeader() {
		t.Fatal("the cut-off node still leads")
	}
	if id, _ := old.Leader(); id == old.ID() {
		t.Fatal("the cut-off node still names itself the leader")
	}
	if got := committed(old); got != cut-1 {
		t.Fatalf("the cut-off node committed %d rounds, want %d", got, cut-1)
	}
	if got := old.Stats().UpdatesAccepted.Load(); got != accepted {
		t.Fatalf("the cut-off node acknowledged %d updates without a quorum", got-accepted)
	}
	if got := fed.resent(); got < len(fed.ids)-1 {
		t.Errorf("agents re-sent %d acknowledged updates, want the %d whose bodies only the old leader held", got, len(fed.ids)-1)
	}

	fed.waitMidRound(t, cut+1)
	fed.heal()
	for _, n := range fed.nodes {
		t.Logf("healed: %s", describe(n))
	}
	within(t, 30*time.Second, "the old leader to rejoin as a follower and catch up", func() bool {
		id, _ := old.Leader()
		return !old.IsLeader() && id != "" && id != old.ID() && committed(old) >= cut
	})
	t.Logf("rejoined: %s", describe(old))
	releaseNext()
	within(t, 30*time.Second, "the job to finish", func() bool { return jobDone(leader) || jobDone(fed.other(old, leader)) })
	within(t, 30*time.Second, "every node to hold the same job state", func() bool {
		want := jobJSON(t, fed.nodes[0])
		return jobJSON(t, fed.nodes[1]) == want && jobJSON(t, fed.nodes[2]) == want
	})
	checkNodesAgree(t, fed.nodes...)
	for _, n := range fed.nodes {
		if j := checkAccounting(t, n, fed.egress); j.State != coordinator.JobDone || j.CommittedRounds() != rounds {
			t.Fatalf("%s: job %s with %d committed rounds, want done with %d", n.ID(), j.State, j.CommittedRounds(), rounds)
		}
	}
}

// One follower is slow: every write between it and its peers waits 40 ms.
// The job runs with it; then the leader crashes in the middle of a round,
// so that every commit needs the slow node, and the job still finishes.
func TestSlowFollower(t *testing.T) {
	const rounds, crash = 6, 4
	const delay = 40 * time.Millisecond
	fed := startFaultFederation(t, 3, smallJob(rounds, 3))
	// Round 1 cannot commit before the follower is slow.
	releaseFirst := fed.holdLast(t, 1)
	first := fed.currentLeader(t)
	slow := fed.other(first)
	fed.slow(slow, delay)
	start := time.Now()
	releaseFirst()

	release := fed.holdLast(t, crash)
	leader := fed.waitMidRound(t, crash)
	t.Logf("rounds 1-%d committed with a slow follower in %v", crash-1, time.Since(start).Round(time.Millisecond))
	if leader == slow {
		t.Fatal("leadership moved to the slow follower")
	}
	checkAccounting(t, leader, fed.egress)
	within(t, 30*time.Second, "the slow follower to apply the committed rounds", func() bool { return committed(slow) >= crash-1 })
	checkNodesAgree(t, fed.nodes...)

	fed.crash(leader)
	release()
	crashed := time.Now()
	fast := fed.other(leader, slow)
	within(t, 30*time.Second, "the job to finish under a quorum that needs the slow node", func() bool {
		return jobDone(fast) || jobDone(slow)
	})
	t.Logf("rounds %d-%d committed after the crash in %v", crash, rounds, time.Since(crashed).Round(time.Millisecond))
	within(t, 30*time.Second, "the survivors to hold the same job state", func() bool {
		return jobJSON(t, fast) == jobJSON(t, slow)
	})
	checkNodesAgree(t, fed.nodes...) // the dead node's state is a prefix
	for _, n := range []*coordinator.Node{fast, slow} {
		if j := checkAccounting(t, n, fed.egress); j.State != coordinator.JobDone || j.CommittedRounds() != rounds {
			t.Fatalf("%s: job %s with %d committed rounds, want done with %d", n.ID(), j.State, j.CommittedRounds(), rounds)
		}
	}
	if got := fed.resent(); got < len(fed.ids)-1 {
		t.Errorf("agents re-sent %d acknowledged updates, want the %d whose bodies only the dead leader held", got, len(fed.ids)-1)
	}
}

// One follower is cut off for a few rounds. The other two commit them;
// after the heal it catches up: its job state equals the leader's and it
// holds every committed model.
func TestMinorityPartitionedFollower(t *testing.T) {
	const rounds, cut = 6, 2
	fed := startFaultFederation(t, 3, smallJob(rounds, 3))
	release := fed.holdLast(t, cut)
	// Round cut+2 waits until after the heal, so that the follower
	// rejoins mid-job.
	releaseLater := fed.holdLast(t, cut+2)
	leader := fed.waitMidRound(t, cut)
	follower := fed.other(leader)
	fed.partition(follower)
	release()

	if l := fed.waitMidRound(t, cut+2); l != leader {
		t.Fatalf("leadership moved from %s to %s", leader.ID(), l.ID())
	}
	within(t, 10*time.Second, "the cut-off follower to stop naming a leader", func() bool {
		id, _ := follower.Leader()
		return id == ""
	})
	if !leader.IsLeader() {
		t.Fatal("the leader lost its leadership to a one-node partition")
	}
	if got := committed(follower); got != cut-1 {
		t.Fatalf("the cut-off follower applied %d committed rounds, want the %d committed before the cut", got, cut-1)
	}
	fed.heal()
	t.Logf("healed: %s; %s", describe(leader), describe(follower))
	within(t, 30*time.Second, "the follower to catch up with the open round", func() bool {
		return jobJSON(t, follower) == jobJSON(t, leader)
	})
	releaseLater()

	within(t, 30*time.Second, "the job to finish", func() bool { return jobDone(leader) })
	within(t, 30*time.Second, "the follower to catch up", func() bool { return jobJSON(t, follower) == jobJSON(t, leader) })
	j := checkAccounting(t, leader, fed.egress)
	if j.CommittedRounds() != rounds {
		t.Fatalf("committed %d rounds, want %d", j.CommittedRounds(), rounds)
	}
	checkNodesAgree(t, fed.nodes...)
	// Its sync loop fetches every committed model it missed.
	blobs := filepath.Join(fed.cfg.Dir, "coordinators", follower.ID(), "blobs")
	within(t, 30*time.Second, "the follower to hold every committed model", func() bool {
		for _, m := range j.Models {
			if _, err := os.Stat(filepath.Join(blobs, m.Digest)); err != nil {
				return false
			}
		}
		return true
	})
	for _, m := range j.Models {
		decodeModel(t, follower, m.Digest)
	}
}
