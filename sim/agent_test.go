package sim

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/sim/synth"
)

// smallFederation writes data for the named default sites (200 patients
// each) and starts a federation in which the first nRunning sites have
// agents and the rest are only enrolled.
func smallFederation(t *testing.T, nSites, nRunning int, job coordinator.JobSpec) (*federation, []string) {
	t.Helper()
	dir := t.TempDir()
	var ids []string
	for _, s := range synth.DefaultSites(nSites, 3) {
		s.Patients = 200
		if _, err := synth.WriteSite(filepath.Join(dir, "data", s.Name), s, synth.DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.Name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	fed, err := startFederation(ctx, federationConfig{Dir: dir, Coordinators: 3, Sites: ids[:nRunning], Enrolled: ids[nRunning:],
		DataDir: filepath.Join(dir, "data"), Jobs: []coordinator.JobSpec{job}, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fed.stop() })
	return fed, ids
}

func smallJob(rounds, minSites int) coordinator.JobSpec {
	spec := synth.DefaultFeatureSpec()
	j := coordinator.DefaultJobSpec()
	j.ID, j.Rounds, j.MinSites = "j", rounds, minSites
	j.Model.NumFeatures = len(spec.GetFeatures())
	j.Features = coordinator.FeatureSpec{FeatureSpec: spec}
	return j
}

// eventually polls cond every 20 ms for up to 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func outbox(t *testing.T, fed *federation, site string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(fed.cfg.Dir, "agents", site, "outbox"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// An agent keeps its acknowledged update until it sees the round commit.
func TestAgentKeepsUpdateUntilRoundCommits(t *testing.T) {
	fed, ids := smallFederation(t, 2, 1, smallJob(1, 2))
	leader, err := fed.leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The first site's update is acknowledged (its receipt committed) but
	// the round waits for the second site.
	eventually(t, "the first site's receipt", func() bool {
		j, ok := leader.Job("j")
		return ok && j.Current != nil && len(j.Current.Receipts) == 1
	})
	if got := outbox(t, fed, ids[0]); len(got) != 1 {
		t.Fatalf("outbox of %s while its round is open = %v, want the kept update", ids[0], got)
	}
	if _, err := fed.addAgent(ids[1], nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the job to finish", func() bool {
		j, ok := leader.Job("j")
		return ok && j.State == coordinator.JobDone
	})
	eventually(t, "the kept updates to be dropped after the commit", func() bool {
		return len(outbox(t, fed, ids[0])) == 0 && len(outbox(t, fed, ids[1])) == 0
	})
}

// An agent whose configured list starts with a dead address and a follower
// still reaches the leader and trains.
func TestAgentSkipsDeadAddressesAndFollowsRedirect(t *testing.T) {
	fed, ids := smallFederation(t, 1, 0, smallJob(2, 1))
	leader, err := fed.leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var follower string
	for _, n := range fed.nodes {
		if n != leader {
			follower = n.AgentAddr()
			break
		}
	}
	// A UDP port with nobody behind it.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	a, err := fed.addAgent(ids[0], func(c *agent.Config) {
		c.Coordinators = []string{dead, follower}
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the job to finish", func() bool {
		j, ok := leader.Job("j")
		return ok && j.State == coordinator.JobDone
	})
	if st := a.Stats(); st.RoundsTrained != 2 || st.UpdatesAcked != 2 {
		t.Fatalf("agent stats = %+v, want 2 rounds trained and acknowledged", st)
	}
}

// A gateway with a certificate from another CA, or trusting another CA,
// says in its log what is wrong, and the coordinator counts the refusal.
func TestAgentExplainsCertificateRefusals(t *testing.T) {
	fed, ids := smallFederation(t, 2, 0, smallJob(1, 1))
	if _, err := fed.leader(context.Background()); err != nil {
		t.Fatal(err)
	}
	rogueDir := filepath.Join(t.TempDir(), "rogue")
	if err := pki.InitCA(rogueDir, "rogue", time.Now()); err != nil {
		t.Fatal(err)
	}
	rogue, err := pki.LoadCA(rogueDir)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		site string
		edit func(c *agent.Config)
		want string
	}{
		{"site certificate from another CA", ids[0], func(c *agent.Config) {
			cert, key, err := rogue.IssueToFiles(rogueDir, pki.IssueRequest{Role: pki.RoleSite, ID: ids[0]}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			c.TLS.Cert, c.TLS.Key = cert, key
		}, "the coordinator refused this gateway's certificate"},
		{"trusting another CA", ids[1], func(c *agent.Config) {
			c.TLS.CA = filepath.Join(rogueDir, "ca.crt")
		}, "this gateway refused the coordinator's certificate"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			var logs lockedBuffer
			if _, err := fed.addAgent(tt.site, func(c *agent.Config) {
				tt.edit(c)
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the reason in the gateway's log", func() bool {
				return bytes.Contains(logs.Bytes(), []byte(tt.want))
			})
		})
	}
	eventually(t, "the coordinators to count the refused certificate", func() bool {
		var n int64
		for _, node := range fed.nodes {
			n += node.Stats().HandshakesRefused.Load()
		}
		return n > 0
	})
}
