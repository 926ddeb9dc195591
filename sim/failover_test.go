package sim

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/sim/synth"
)

// The leader dies in the middle of a round, after it acknowledged two
// sites' updates and while the round waits for a third. The new leader has
// the receipts (they are in the Raft log) but not the update bodies (they
// were on the dead leader's disk); the agents, which keep every update until
// they see its round committed, send them again. The job finishes, and the
// accounting holds: every acknowledged update is in exactly one committed
// aggregate, and each committed model is the previous one plus the FedAvg
// of exactly those updates.
func TestLeaderKillMidRoundLosesNothing(t *testing.T) {
	dir := t.TempDir()
	var ids []string
	for _, s := range synth.DefaultSites(3, 5) {
		s.Patients = 200
		if _, err := synth.WriteSite(filepath.Join(dir, "data", s.Name), s, synth.DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.Name)
	}
	// Every tensor an agent sends, by digest, to recompute the aggregates.
	var mu sync.Mutex
	sent := map[string][]byte{}
	tap := func(_ string, b []byte) {
		mu.Lock()
		sent[protocol.Digest(b)] = append([]byte(nil), b...)
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fed, err := startFederation(ctx, federationConfig{Dir: dir, Coordinators: 3, Sites: ids[:2], Enrolled: ids[2:],
		DataDir: filepath.Join(dir, "data"), Jobs: []coordinator.JobSpec{smallJob(3, 3)}, Seed: 5, EgressTap: tap})
	if err != nil {
		t.Fatal(err)
	}
	defer fed.stop()
	leader, err := fed.leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Both sites must hold their acks too: an ack still in flight when
	// the leader dies makes its agent resend an update it does not know
	// was taken, which is not counted as a resend of an acknowledged one.
	eventually(t, "two acknowledged updates in round 1, their acks received", func() bool {
		j, ok := leader.Job("j")
		if !ok || j.Current == nil || j.Current.Number != 1 || len(j.Current.Receipts) != 2 {
			return false
		}
		for _, a := range fed.agents {
			if a.Stats().UpdatesAcked < 1 {
				return false
			}
		}
		return true
	})
	dead := slices.Index(fed.nodes, leader)
	fed.killNode(dead)
	var survivor *coordinator.Node
	for i, n := range fed.nodes {
		if i != dead {
			survivor = n
			break
		}
	}
	if _, err := fed.addAgent(ids[2], nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the job to finish under the new leader", func() bool {
		j, ok := survivor.Job("j")
		return ok && j.State == coordinator.JobDone
	})
	j, _ := survivor.Job("j")
	if j.CommittedRounds() != 3 {
		t.Fatalf("committed %d rounds", j.CommittedRounds())
	}

	mu.Lock()
	defer mu.Unlock()
	resent := 0
	for _, a := range fed.agents {
		resent += a.Stats().UpdatesResent
	}
	if resent < 2 {
		t.Errorf("agents re-sent %d acknowledged updates, want the 2 the dead leader held", resent)
	}
	for _, r := range j.Rounds {
		if r.State != coordinator.RoundCommitted {
			if len(r.Receipts) > 0 {
				t.Errorf("round %d attempt %d (%s) acknowledged %d updates that no aggregate holds", r.Number, r.Attempt, r.State, len(r.Receipts))
			}
			continue
		}
		var receipts []string
		for site := range r.Receipts {
			receipts = append(receipts, site)
		}
		slices.Sort(receipts)
		if !slices.Equal(receipts, r.Contributors) {
			t.Fatalf("round %d: acknowledged %v, aggregated %v", r.Number, receipts, r.Contributors)
		}
		// Recompute: previous global + sample-weighted mean of the deltas.
		prev, err := protocol.DecodeF32(weights(t, survivor, r.Base))
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float64, len(prev))
		var total float64
		for _, site := range receipts {
			rc := r.Receipts[site]
			d, err := protocol.DecodeF32(sent[rc.Digest])
			if err != nil || len(d) != len(prev) {
				t.Fatalf("round %d: delta of %s not found among the bytes it sent", r.Number, site)
			}
			for i := range d {
				want[i] += float64(rc.Samples) * float64(d[i])
			}
			total += float64(rc.Samples)
		}
		got, err := protocol.DecodeF32(weights(t, survivor, r.Result))
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if w := float64(prev[i]) + want[i]/total; math.Abs(float64(got[i])-w) > 1e-5 {
				t.Fatalf("round %d: weight %d is %v, FedAvg of the acknowledged updates gives %v", r.Number, i, got[i], w)
			}
		}
	}
}

// A leader stopped on purpose hands its leadership over before it goes;
// one that crashes (Abandon) does not.
func TestGracefulStopHandsOverLeadership(t *testing.T) {
	for _, tc := range []struct {
		name    string
		crash   bool
		handoff bool
	}{{"graceful", false, true}, {"crash", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var logs lockedBuffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			fed, err := startFederation(ctx, federationConfig{Dir: t.TempDir(), Coordinators: 3,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer fed.stop()
			leader, err := fed.leader(ctx)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.Index(fed.nodes, leader)
			if tc.crash {
				leader.Abandon()
			}
			fed.nodeStop[i]()
			<-fed.nodeDone[i]
			if got := bytes.Contains(logs.Bytes(), []byte("leadership handed over")); got != tc.handoff {
				t.Fatalf("handed over = %v, want %v", got, tc.handoff)
			}
			survivor := fed.nodes[(i+1)%3]
			eventually(t, "a new leader", func() bool { id, _ := survivor.Leader(); return id != "" && id != leader.ID() })
		})
	}
}

// weights reads a committed model's weights through a node (which fetches
// the blob from a peer if it lacks it).
func weights(t *testing.T, n *coordinator.Node, digest string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := n.ModelWeights(ctx, digest)
	if err != nil {
		t.Fatalf("model %.12s: %v", digest, err)
	}
	return w
}
