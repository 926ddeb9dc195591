package main

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

// Fault tests: the real binary as separate processes, with coordinators
// killed by SIGKILL as a crash would. They prove the coordinator's promise
// that a leader dying in the middle of a round does not stop the job nor
// lose an accepted update.

// faultRounds is the length of the fault tests' jobs.
const faultRounds = 8

// faultJob is a job whose rounds last about half a second on a 2-core
// machine (200 local epochs), so that a test can act between two rounds;
// every round needs both sites.
func faultJob(id string) coordinator.JobSpec {
	j := coordinator.DefaultJobSpec()
	j.ID, j.Rounds, j.MinSites, j.RoundTimeout = id, faultRounds, 2, coordinator.Duration(time.Minute)
	j.Train.LocalEpochs = 200
	return j
}

// TestKillLeaderMidJob kills the leader with SIGKILL in the middle of a
// round in which one site's update is already accepted: its receipt is in
// the Raft log and its body only on the leader. To hold the round open at
// that point, the other site's agent is paused (SIGSTOP) once round 2 has
// committed, and resumed right after the kill. The job must finish on the
// two survivors with every round committed once, from both sites, and the
// accepted update must have been sent again to the new leader.
func TestKillLeaderMidJob(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as five processes")
	}
	spec := faultJob("kill-leader")
	c := newCluster(t, 3, 2, spec)
	c.startAll()
	paused, sender := c.agents[0], c.agents[1]

	c.waitStatus(30*time.Second, "round 2 to commit", func(st coordinator.Status) bool {
		return committed(st, spec.ID) >= 2
	})
	paused.proc.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { paused.proc.cmd.Process.Signal(syscall.SIGCONT) })
	// With one site paused the open round cannot close; wait until the
	// other site's update for it is acknowledged, seen twice in a row.
	var at uint64
	seen := 0
	_, st := c.waitStatus(30*time.Second, "the open round to hold one acknowledged update", func(st coordinator.Status) bool {
		if !st.IsLeader {
			return false
		}
		n := committed(st, spec.ID)
		if sender.status(t).UpdatesAcked != int(n)+1 {
			seen = 0
			return false
		}
		if n != at {
			at, seen = n, 0
		}
		seen++
		return seen >= 2
	})
	c.kill(c.index(st.Node))
	killed := time.Now()
	t.Logf("killed leader %s in round %d, after %s's update was acknowledged", st.Node, at+1, sender.site)

	// The survivors elect a leader that has the receipt but not the body;
	// the round cannot have closed with one site paused.
	newLeader := c.leader(10 * time.Second)
	t.Logf("%s leads %v after the kill", c.nodes[newLeader].id, time.Since(killed).Round(time.Millisecond))
	st = c.waitNode(newLeader, 5*time.Second, "the new leader to apply the log", func(st coordinator.Status) bool {
		return committed(st, spec.ID) >= at
	})
	if n := committed(st, spec.ID); n != at {
		t.Fatalf("after the kill, %s reports %d rounds committed, want %d", c.nodes[newLeader].id, n, at)
	}
	paused.proc.signal(t, syscall.SIGCONT)

	// An agent waiting for the dead leader's answer to an upload notices
	// at its request deadline or its QUIC idle timeout (10 s), whichever
	// comes first (see TestAgentsNoticeCrashedLeaderPromptly).
	_, st = c.waitStatus(75*time.Second, fmt.Sprintf("round %d to commit after the kill", at+1), func(st coordinator.Status) bool {
		return committed(st, spec.ID) > at
	})
	t.Logf("round %d committed %v after the kill, under %s", at+1, time.Since(killed).Round(time.Millisecond), st.Leader)

	js := c.waitDoneEverywhere(30*time.Second, spec.ID)
	checkHistory(t, js, faultRounds, c.siteNames())
	for _, a := range c.agents {
		if !a.proc.running() {
			t.Errorf("agent %s exited: %v", a.site, a.proc.err)
		}
		s := a.status(t)
		t.Logf("agent %s: %d rounds trained, %d updates acked, %d resent, %d reconnects", a.site, s.RoundsTrained, s.UpdatesAcked, s.UpdatesResent, s.Reconnects)
	}
	for _, r := range js.History {
		if r.State != coordinator.RoundCommitted || r.Attempt != 1 {
			t.Errorf("round %d attempt %d %s (%s): no attempt should fail, the accepted update must be aggregated", r.Round, r.Attempt, r.State, r.FailReason)
		}
	}
	if s := sender.status(t); s.UpdatesResent < 1 {
		t.Errorf("agent %s never sent its accepted update of round %d again; the new leader cannot have aggregated it", sender.site, at+1)
	}
}

// TestRestartAllNodes kills all three coordinators at once after round 2
// committed and starts them again with the same data dirs and flags
// (--bootstrap included: a node with Raft state skips it). The job must
// finish with every round committed once, and the rounds committed before
// the crash must still be there, unchanged.
func TestRestartAllNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as five processes")
	}
	spec := faultJob("restart-all")
	c := newCluster(t, 3, 2, spec)
	c.startAll()

	_, st := c.waitStatus(30*time.Second, "round 2 to commit", func(st coordinator.Status) bool {
		return st.IsLeader && committed(st, spec.ID) >= 2
	})
	before, _ := job(st, spec.ID)
	for _, n := range c.nodes {
		n.proc.signal(t, syscall.SIGKILL)
	}
	for _, n := range c.nodes {
		n.proc.wait(t, 10*time.Second)
	}
	killed := time.Now()
	t.Logf("killed every coordinator after round %d committed", before.CommittedRounds)

	for i := range c.nodes {
		c.startCoordinator(i)
	}
	leader := c.leader(20 * time.Second)
	t.Logf("%s leads %v after the crash", c.nodes[leader].id, time.Since(killed).Round(time.Millisecond))
	next := before.CommittedRounds + 1
	_, st = c.waitStatus(75*time.Second, fmt.Sprintf("a round after %d to commit after the restart", before.CommittedRounds), func(st coordinator.Status) bool {
		return committed(st, spec.ID) > next // past the round that may have been in flight
	})
	t.Logf("round %d committed %v after the crash, under %s", committed(st, spec.ID), time.Since(killed).Round(time.Millisecond), st.Leader)

	js := c.waitDoneEverywhere(30*time.Second, spec.ID)
	checkHistory(t, js, faultRounds, c.siteNames())
	for _, r := range before.History {
		if r.State != coordinator.RoundCommitted {
			continue
		}
		i := slices.IndexFunc(js.History, func(h coordinator.RoundSummary) bool {
			return h.Round == r.Round && h.State == coordinator.RoundCommitted
		})
		if i < 0 || !sameRound(r, js.History[i]) {
			t.Errorf("round %d committed before the crash as %+v; after the restart the history holds %+v", r.Round, r, js.History)
		}
	}
	for _, n := range c.nodes {
		if !n.proc.running() {
			t.Errorf("restarted %s exited: %v", n.id, n.proc.err)
		}
	}
	for _, a := range c.agents {
		if !a.proc.running() {
			t.Errorf("agent %s exited: %v", a.site, a.proc.err)
		}
	}
}

// TestFiveNodeClusterLosesTwo kills two followers of a five-node cluster
// with SIGKILL during a job: with three voters left the job finishes. Then
// it kills the leader too: two of five cannot elect a leader, and a second,
// long job that progressed until then must not progress any more.
func TestFiveNodeClusterLosesTwo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as seven processes")
	}
	spec := faultJob("five-nodes")
	// tail keeps rounds going after spec is done (agents take the jobs in
	// id order, so it only fills the gaps of spec's rounds).
	tail := coordinator.DefaultJobSpec()
	tail.ID, tail.Rounds, tail.MinSites, tail.RoundTimeout = "tail", 100000, 2, coordinator.Duration(time.Minute)
	c := newCluster(t, 5, 2, spec, tail)
	c.startAll()

	_, st := c.waitStatus(30*time.Second, "round 2 to commit", func(st coordinator.Status) bool {
		return st.IsLeader && committed(st, spec.ID) >= 2
	})
	leader := c.index(st.Node)
	var killed []string
	for i, n := range c.nodes {
		if i != leader && len(killed) < 2 {
			c.kill(i)
			killed = append(killed, n.id)
		}
	}
	t.Logf("killed followers %v after round %d committed; %s leads", killed, committed(st, spec.ID), st.Node)

	js := c.waitDoneEverywhere(45*time.Second, spec.ID)
	checkHistory(t, js, faultRounds, c.siteNames())
	for _, a := range c.agents {
		if !a.proc.running() {
			t.Errorf("agent %s exited: %v", a.site, a.proc.err)
		}
	}

	// Three of five still make progress on the tail job...
	leader = c.leader(10 * time.Second)
	st, err := c.status(leader)
	if err != nil {
		t.Fatal(err)
	}
	base := committed(st, tail.ID)
	c.waitStatus(20*time.Second, "the tail job to progress with three nodes", func(st coordinator.Status) bool {
		return committed(st, tail.ID) >= base+2
	})
	// ...two of five do not.
	c.kill(leader)
	t.Logf("killed leader %s; %d nodes left", c.nodes[leader].id, len(c.live()))
	frozen := map[int]uint64{}
	waitFor(t, 10*time.Second, "the survivors to lose the leader", func() (bool, string) {
		for _, i := range c.live() {
			st, err := c.status(i)
			if err != nil || st.IsLeader || st.Leader != "" {
				return false, fmt.Sprintf("%s: %v %s", c.nodes[i].id, err, summarize(st))
			}
			frozen[i] = committed(st, tail.ID)
		}
		return true, ""
	})
	holdsFor(t, 3*time.Second, "no leader and no progress with two of five nodes", func() (bool, string) {
		for _, i := range c.live() {
			st, err := c.status(i)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", c.nodes[i].id, err)
			}
			if st.IsLeader || st.Leader != "" || committed(st, tail.ID) != frozen[i] {
				return false, fmt.Sprintf("%s, tail job had %d rounds", summarize(st), frozen[i])
			}
		}
		return true, ""
	})
}

// promptResume bounds how long after a leader's crash the next round may
// commit: the agent's own bound for noticing a coordinator that went silent
// is its poll wait plus requestGrace (10 s + 10 s, agent/session.go), and
// the survivors elect a leader in under a second with the test's Raft
// timeouts; 5 s more cover the election and retraining.
const promptResume = 25 * time.Second

// TestAgentsNoticeCrashedLeaderPromptly kills the leader in the middle of
// a round, with both agents paused (SIGSTOP) for the kill so that at least
// one has yet to send its update, then lets them go on: that one uploads to
// the dead leader. The next round must commit within promptResume of the
// kill.
//
// What makes it pass: every agent request, download and upload has a
// deadline (agent/session.go), the agent's QUIC idle timeout is 10 s with
// keep-alives every 3 s, and a restarted coordinator answers its old
// connections' packets with a stateless reset (a persisted
// StatelessResetKey, coordinator/node.go).
func TestAgentsNoticeCrashedLeaderPromptly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as five processes")
	}
	spec := faultJob("crash-upload")
	c := newCluster(t, 3, 2, spec)
	c.startAll()

	c.waitStatus(30*time.Second, "round 2 to commit", func(st coordinator.Status) bool {
		return committed(st, spec.ID) >= 2
	})
	for _, a := range c.agents {
		a.proc.signal(t, syscall.SIGSTOP)
		t.Cleanup(func() { a.proc.cmd.Process.Signal(syscall.SIGCONT) })
	}
	// Read the leader's view now that the agents stand still.
	_, st := c.waitStatus(10*time.Second, "the leader's view with both agents paused", func(st coordinator.Status) bool {
		return st.IsLeader
	})
	// The open round needs both updates, so at least one agent has yet to
	// send its own: it will download, train or upload against the dead
	// leader.
	at := committed(st, spec.ID)
	var acked []int
	for _, a := range c.agents {
		acked = append(acked, a.status(t).UpdatesAcked)
	}
	c.kill(c.index(st.Node))
	killed := time.Now()
	for _, a := range c.agents {
		a.proc.signal(t, syscall.SIGCONT)
	}
	t.Logf("killed leader %s in round %d; the agents had %v updates acknowledged", st.Node, at+1, acked)

	_, st = c.waitStatus(75*time.Second, fmt.Sprintf("round %d to commit after the kill", at+1), func(st coordinator.Status) bool {
		return committed(st, spec.ID) > at
	})
	took := time.Since(killed)
	t.Logf("round %d committed %v after the kill, under %s", at+1, took.Round(time.Millisecond), st.Leader)
	if took > promptResume {
		t.Errorf("round %d committed %v after the leader crashed, want within %v: agents waited on the dead leader", at+1, took.Round(time.Second), promptResume)
	}
}

// TestAgentExitsPromptlyOnSIGTERM stops the agents with SIGTERM right after
// their job finished, when each is in a long-polled task request (the
// agent's poll wait is 10 s). Each must exit within 3 s.
//
// What makes it pass: the agent closes its session as soon as its context
// ends, which ends the long-polled read on the control stream.
func TestAgentExitsPromptlyOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary as three processes")
	}
	spec := coordinator.JobSpec{ID: "stop", Rounds: 1, MinSites: 2, RoundTimeout: coordinator.Duration(time.Minute)}
	c := newCluster(t, 1, 2, spec)
	c.startAll()
	c.waitStatus(30*time.Second, "the job to finish", func(st coordinator.Status) bool {
		j, _ := job(st, spec.ID)
		return j.State == coordinator.JobDone
	})
	stopped := time.Now()
	for _, a := range c.agents {
		a.proc.signal(t, syscall.SIGTERM)
	}
	for _, a := range c.agents {
		if err := a.proc.wait(t, 20*time.Second); err != nil {
			t.Errorf("agent %s: %v", a.site, err)
		}
		if took := time.Since(stopped); took > 3*time.Second {
			t.Errorf("agent %s exited %v after SIGTERM, want within 3 s", a.site, took.Round(time.Millisecond))
		}
	}
}
