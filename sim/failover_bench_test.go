package sim

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
)

// failoverTrials is how many leader kills one benchmark op runs: the
// figures are medians and maxima over these, so one op (-benchtime 1x)
// is a complete measurement.
const failoverTrials = 20

// failoverMaxMisses bounds the trials whose kill came too late: the old
// leader had already committed the round (all three updates landed
// between the first receipt and the kill). They are rerun, not counted.
const failoverMaxMisses = 20

// Rounds of each trial's job: round 1 warms up (agents connect and
// ingest), round 2 is the trial's round without a kill, the leader is
// killed in round 3, and round 4 shows the job carrying on.
const (
	failoverNormalRound = 2
	failoverKillRound   = 3
	failoverJobRounds   = 4
)

// BenchmarkLeaderFailover kills the Raft leader in the middle of a round
// (a round open with at least one acknowledged update, so the new leader
// has that receipt but not its body) and measures how long the federation
// takes to recover. Each trial is a fresh 3-node cluster with 3 sites of
// 100 synthetic patients and a job with MinSites=3. One op runs
// failoverTrials trials (run it with -benchtime 1x):
//
//	go test -run '^$' -bench LeaderFailover -benchtime 1x ./sim/
//
// Times from the kill are wall clock in this process, from the moment
// killNode is called (the dead leader stops serving then; killNode's own
// duration is reported as kill-median-ms):
//
//   - failover: until a surviving node leads and has published its agent
//     address (its Raft barrier passed and its node-info entry applied:
//     the last step of taking over that is visible from outside the
//     package before it re-enrolls the configured sites and job and
//     starts answering agents).
//   - elected: until a surviving node is Raft leader (polled every 2 ms).
//   - resume: until the interrupted round is committed, as seen on the new
//     leader when it applies the commit.
//   - next-round: until the following round is open on the new leader.
//
// Round durations come from the replicated log: Round.Opened to
// Round.Closed, the proposing leader's clock at open-round and at
// commit-round. A round with a kill opens under the old leader and
// commits under the new one (same process, same clock). The ratio is the
// median round with a kill over the median round without one, the latter
// being round 2 of the same trials: a paired control in the same run.
func BenchmarkLeaderFailover(b *testing.B) {
	data := filepath.Join(b.TempDir(), "data")
	var ids []string
	for _, s := range synth.DefaultSites(3, 7) {
		s.Patients = 100
		if _, err := synth.WriteSite(filepath.Join(data, s.Name), s, synth.DefaultTruth()); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, s.Name)
	}
	var trials []failoverTrial
	misses := 0
	b.ResetTimer()
	for range b.N {
		for n := 0; n < failoverTrials; {
			tr, err := runFailoverTrial(b, data, ids, uint64(len(trials)+misses+1))
			switch {
			case errors.Is(err, errKillTooLate):
				misses++
				b.Logf("trial missed: %v", err)
				if misses > failoverMaxMisses {
					b.Fatalf("%d kills came after the round had committed: cannot catch a round in flight", misses)
				}
				continue
			case err != nil:
				b.Fatal(err)
			}
			b.Logf("trial %2d: kill %v, elected %v, failover %v, resume %v, next round %v; round %v without a kill, %v with; %d updates re-sent, dead leader %s",
				len(trials)+1, ms(tr.kill), ms(tr.elected), ms(tr.failover), ms(tr.resume), ms(tr.nextOpen), ms(tr.normal), ms(tr.withKill), tr.resent, tr.dead)
			trials = append(trials, tr)
			n++
		}
	}
	b.StopTimer()

	pick := func(f func(failoverTrial) time.Duration) []time.Duration {
		var ds []time.Duration
		for _, tr := range trials {
			ds = append(ds, f(tr))
		}
		slices.Sort(ds)
		return ds
	}
	kill := pick(func(t failoverTrial) time.Duration { return t.kill })
	elected := pick(func(t failoverTrial) time.Duration { return t.elected })
	failover := pick(func(t failoverTrial) time.Duration { return t.failover })
	resume := pick(func(t failoverTrial) time.Duration { return t.resume })
	next := pick(func(t failoverTrial) time.Duration { return t.nextOpen })
	normal := pick(func(t failoverTrial) time.Duration { return t.normal })
	withKill := pick(func(t failoverTrial) time.Duration { return t.withKill })
	b.ReportMetric(float64(len(trials)), "trials")
	b.ReportMetric(float64(misses), "missed-trials")
	b.ReportMetric(msf(median(kill)), "kill-median-ms")
	b.ReportMetric(msf(median(elected)), "elected-median-ms")
	b.ReportMetric(msf(median(failover)), "failover-median-ms")
	b.ReportMetric(msf(failover[len(failover)-1]), "failover-max-ms")
	b.ReportMetric(msf(median(resume)), "resume-median-ms")
	b.ReportMetric(msf(resume[len(resume)-1]), "resume-max-ms")
	b.ReportMetric(msf(median(next)), "next-round-median-ms")
	b.ReportMetric(msf(median(normal)), "round-normal-median-ms")
	b.ReportMetric(msf(median(withKill)), "round-with-kill-median-ms")
	b.ReportMetric(float64(median(withKill))/float64(median(normal)), "ratio")
}

// failoverTrial is what one leader kill measured.
type failoverTrial struct {
	dead                                      string
	kill, elected, failover, resume, nextOpen time.Duration
	normal, withKill                          time.Duration
	resent                                    int
}

// errKillTooLate marks a trial whose round committed under the old leader.
var errKillTooLate = errors.New("the old leader committed the round before it died")

// runFailoverTrial runs one fresh federation, kills its leader during
// round failoverKillRound and stops everything before it returns.
func runFailoverTrial(b *testing.B, data string, ids []string, seed uint64) (tr failoverTrial, err error) {
	// Every wait below is bounded by this.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	spec := smallJob(failoverJobRounds, len(ids))
	spec.RoundTimeout = coordinator.Duration(30 * time.Second)
	fed, err := startFederation(ctx, federationConfig{Dir: b.TempDir(), Coordinators: 3, Sites: ids,
		DataDir: data, Jobs: []coordinator.JobSpec{spec}, Seed: seed})
	if err != nil {
		return tr, err
	}
	defer func() {
		if serr := fed.stop(); serr != nil && err == nil {
			err = fmt.Errorf("stop: %w", serr)
		}
	}()
	leader, err := fed.leader(ctx)
	if err != nil {
		return tr, fmt.Errorf("first leader: %w", err)
	}
	// Mid-round: the kill round is open and at least one update is
	// acknowledged (its receipt is committed).
	var late bool
	err = waitApplied(ctx, fed, leader, func(j *coordinator.Job) bool {
		if j.CommittedRounds() >= failoverKillRound {
			late = true
			return true
		}
		c := j.Current
		return c != nil && c.Number == failoverKillRound && len(c.Receipts) > 0
	})
	if err != nil {
		return tr, fmt.Errorf("waiting for round %d with a receipt: %w", failoverKillRound, err)
	}
	if late {
		return tr, fmt.Errorf("%w (it committed between two applied entries seen by the benchmark)", errKillTooLate)
	}
	dead := slices.Index(fed.nodes, leader)
	tr.dead = leader.ID()
	start := time.Now()
	fed.killNode(dead)
	tr.kill = time.Since(start)

	// A surviving node leads, then has published its address.
	var next *coordinator.Node
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for next == nil {
		for i, n := range fed.nodes {
			if i == dead || !n.IsLeader() {
				continue
			}
			if tr.elected == 0 {
				tr.elected = time.Since(start)
			}
			if id, addr := n.Leader(); id == n.ID() && addr != "" {
				tr.failover = time.Since(start)
				next = n
			}
		}
		select {
		case <-ctx.Done():
			return tr, fmt.Errorf("no new leader %v after the kill: %w", time.Since(start), ctx.Err())
		case err := <-fed.errC:
			return tr, err
		case <-tick.C:
		}
	}
	// The new leader's barrier has applied every entry of the old term.
	if j, ok := next.Job("j"); ok && j.CommittedRounds() >= failoverKillRound {
		return tr, fmt.Errorf("%w (during killNode)", errKillTooLate)
	}

	err = waitApplied(ctx, fed, next, func(j *coordinator.Job) bool {
		return j.CommittedRounds() >= failoverKillRound
	})
	if err != nil {
		return tr, fmt.Errorf("round %d did not commit under %s: %w", failoverKillRound, next.ID(), err)
	}
	tr.resume = time.Since(start)
	err = waitApplied(ctx, fed, next, func(j *coordinator.Job) bool {
		return j.Current != nil && j.Current.Number == failoverKillRound+1 || j.State != coordinator.JobRunning
	})
	if err != nil {
		return tr, fmt.Errorf("round %d did not open under %s: %w", failoverKillRound+1, next.ID(), err)
	}
	tr.nextOpen = time.Since(start)

	j, _ := next.Job("j")
	if tr.normal, err = roundDuration(j, failoverNormalRound); err != nil {
		return tr, err
	}
	if tr.withKill, err = roundDuration(j, failoverKillRound); err != nil {
		return tr, err
	}
	for _, a := range fed.agents {
		tr.resent += a.Stats().UpdatesResent
	}
	return tr, nil
}

// waitApplied waits until cond holds for job "j" as node n has applied it,
// re-checking after every applied entry.
func waitApplied(ctx context.Context, fed *federation, n *coordinator.Node, cond func(*coordinator.Job) bool) error {
	for {
		changed := n.Changed()
		if j, ok := n.Job("j"); ok {
			if cond(j) {
				return nil
			}
			if j.State == coordinator.JobFailed {
				return fmt.Errorf("job failed: %s", j.FailReason)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-fed.errC:
			return err
		case <-changed:
		}
	}
}

// roundDuration is round number's time from its first attempt opening to
// its commit, from the log.
func roundDuration(j *coordinator.Job, number uint64) (time.Duration, error) {
	var opened time.Time
	for _, r := range j.Rounds {
		if r.Number != number || r.Kind == coordinator.KindStats {
			continue
		}
		if opened.IsZero() {
			opened = r.Opened
		}
		if r.State == coordinator.RoundCommitted {
			return r.Closed.Sub(opened), nil
		}
	}
	return 0, fmt.Errorf("round %d is not committed", number)
}

func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ms(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
