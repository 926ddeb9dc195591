package sim

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol/secagg"
	"github.com/cohort-fl/cohort/sim/synth"
)

// BenchmarkRoundLatency measures one federated round end to end (open,
// every site downloads the model, trains locally on 200 patients, uploads
// over QUIC, the receipt commits through a 3-node Raft cluster, FedAvg,
// commit) against the number of sites. One op is one round. Compare each
// size with sites=1 from the same run (scripts/bench.sh prints the ratios).
func BenchmarkRoundLatency(b *testing.B) {
	for _, n := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("sites=%d", n), func(b *testing.B) {
			benchRounds(b, n, 200, nil)
		})
	}
}

// BenchmarkSecAggRound measures what secure aggregation costs a round
// against plain FedAvg of the same sites in the same run: one op is one
// round (training on 50 patients per site, then the upload, or the four
// protocol steps), with the bytes every agent sent per round and site.
// mode=plain is the baseline; mode=secagg has every site mask against
// every other (Bonawitz et al.: O(n) key agreements per site), and
// mode=secagg+ uses the SecAgg+ k-regular graph with k = 2⌈log₂ n⌉.
// Every phase waits for all sites (none drops).
func BenchmarkSecAggRound(b *testing.B) {
	for _, n := range []int{10, 100} {
		for _, mode := range []string{"plain", "secagg", "secagg+"} {
			b.Run(fmt.Sprintf("sites=%d/mode=%s", n, mode), func(b *testing.B) {
				benchRounds(b, n, 50, func(j *coordinator.JobSpec) {
					switch mode {
					case "secagg":
						j.SecureAggregation = &coordinator.SecureAggregationSpec{ClipRange: 2}
						j.MinSites = secagg.MajorityThreshold(n, 0)
					case "secagg+":
						k := 2 * int(math.Ceil(math.Log2(float64(n))))
						j.SecureAggregation = &coordinator.SecureAggregationSpec{ClipRange: 2, Degree: k}
						j.MinSites = secagg.MajorityThreshold(n, k)
					}
				})
			})
		}
	}
}

// benchRounds runs rounds of a job over nSites sites of patients each;
// edit, if set, changes the job's spec.
func benchRounds(b *testing.B, nSites, patients int, edit func(*coordinator.JobSpec)) {
	dir := b.TempDir()
	sites := synth.DefaultSites(nSites, 1)
	var ids []string
	for _, s := range sites {
		s.Patients = patients
		if _, err := synth.WriteSite(filepath.Join(dir, "data", s.Name), s, synth.DefaultTruth()); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, s.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fed, err := startFederation(ctx, federationConfig{Dir: dir, Coordinators: 3, Sites: ids, DataDir: filepath.Join(dir, "data"), Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer fed.stop()
	leader, err := fed.leader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	job := func(id string, rounds int) coordinator.JobSpec {
		spec := synth.DefaultFeatureSpec()
		j := coordinator.DefaultJobSpec()
		j.ID, j.Rounds, j.MinSites = id, rounds, nSites
		j.Model.NumFeatures = len(spec.GetFeatures())
		j.Features = coordinator.FeatureSpec{FeatureSpec: spec}
		if edit != nil {
			edit(&j)
		}
		return j
	}
	// Warm up: every agent connected, data ingested, caches hot.
	if err := runJob(ctx, fed, leader, job("warmup", 1)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := runJob(ctx, fed, leader, job("measured", b.N)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(fed.bytesSent())/float64(b.N+1)/float64(nSites), "agent-bytes/round/site")
}

// runJob creates a job on the leader and waits for it to finish.
func runJob(ctx context.Context, fed *federation, leader *coordinator.Node, spec coordinator.JobSpec) error {
	if err := leader.CreateJob(spec); err != nil {
		return err
	}
	for {
		changed := leader.Changed()
		if j, ok := leader.Job(spec.ID); ok {
			switch j.State {
			case coordinator.JobDone:
				return nil
			case coordinator.JobFailed:
				return fmt.Errorf("job %s failed: %s", spec.ID, j.FailReason)
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
