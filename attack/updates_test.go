package attack

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
)

// Update attacks. Each test creates its own job (3 features: a logistic
// regression of 4 weights, asking every enrolled site, closing a round at
// 2 updates). The attacker is the enrolled site "mallory", or an honest
// site replaying itself. After the attacks, the honest sites honest-a and
// honest-b upload known deltas and the round commits: the test checks the
// committed model against the FedAvg of the honest deltas alone and the
// round's contributors, so an attacker's update that slipped into the
// aggregate fails it.

// numParams is the jobs' model size: 3 features and a bias.
const numParams = 4

// honest is an honest site's update: the same every round.
type honest struct {
	site    string
	delta   []float32
	samples uint64
}

var honestUpdates = []honest{
	{"honest-a", []float32{0.05, -0.025, 0.0125, 0.1}, 120},
	{"honest-b", []float32{-0.05, 0.075, 0.025, -0.1}, 360},
}

// jobSpec is an update test's job, in the operator's JSON; edit adds or
// overrides fields.
func jobSpec(id string, rounds int, edit map[string]any) map[string]any {
	spec := map[string]any{
		"id": id, "rounds": rounds, "min_sites": 2, "round_timeout": "2m", "max_attempts": 1,
		"model": map[string]any{"kind": "logreg", "num_features": 3},
		"features": map[string]any{
			"features": []map[string]any{
				{"name": "age", "kind": "age", "scale": 10},
				{"name": "hr_mean", "kind": "mean", "loinc": "8867-4", "scale": 10},
				{"name": "diabetes", "kind": "condition", "codes": []string{"44054006"}, "scale": 1},
			},
			"label": map[string]any{"kind": "deceased"},
		},
	}
	for k, v := range edit {
		spec[k] = v
	}
	return spec
}

// updateJob is a job under update attacks: its id, the honest sites'
// connections, and the base model of its open round.
type updateJob struct {
	f      *federation
	id     string
	honest map[string]*client
	round  uint64
	base   string    // digest of the open round's base model
	global []float32 // its weights
}

// newUpdateJob creates the job and connects the honest sites.
func newUpdateJob(t *testing.T, f *federation, id string, rounds int, edit map[string]any) *updateJob {
	t.Helper()
	if status, body := f.api(t, http.MethodPost, "/v1/jobs", jobSpec(id, rounds, edit), nil); status != http.StatusCreated {
		t.Fatalf("create job %s: %d %s", id, status, body)
	}
	zero := make([]float32, numParams)
	j := &updateJob{f: f, id: id, honest: map[string]*client{}, round: 1, base: protocol.Digest(protocol.EncodeF32(zero)), global: zero}
	for _, h := range honestUpdates {
		j.honest[h.site] = f.connect(t, h.site)
	}
	waitFor(t, 10*time.Second, "round 1 of "+id+" to open", func() (bool, string) {
		js := j.job(t)
		open := len(js.History) > 0 && js.History[len(js.History)-1].State == coordinator.RoundOpen
		return open, fmt.Sprintf("%+v", js.History)
	})
	return j
}

// job is the job's status.
func (j *updateJob) job(t *testing.T) coordinator.JobStatus {
	t.Helper()
	for _, js := range j.f.status(t).Jobs {
		if js.ID == j.id {
			return js
		}
	}
	t.Fatalf("no job %s in the status", j.id)
	return coordinator.JobStatus{}
}

// header is an upload header for the open round.
func (j *updateJob) header(body []byte, samples uint64) *pb.UpdateUpload {
	return &pb.UpdateUpload{JobId: j.id, Round: j.round, BaseModelSha256: j.base, SampleCount: samples, Metrics: &pb.LocalMetrics{},
		Delta: &pb.BlobRef{Sha256: protocol.Digest(body), Size: uint64(len(body)), Encoding: pb.Encoding_ENCODING_F32LE}}
}

// acked fails the test unless the upload was acknowledged.
func acked(t *testing.T, what string, resp *pb.Envelope, err error) {
	t.Helper()
	if err != nil || resp.GetAck() == nil {
		t.Fatalf("%s: answered %v %v, want an ack", what, resp, err)
	}
}

// commitHonest has the honest sites upload their deltas, waits for the
// open round to commit, and checks it: the honest sites and no one else
// contributed, with their sample counts, and the new model is the base
// plus the sample-weighted mean of their deltas. It moves the job to the
// next round.
func (j *updateJob) commitHonest(t *testing.T) {
	t.Helper()
	for _, h := range honestUpdates {
		body := protocol.EncodeF32(h.delta)
		resp, err := j.honest[h.site].upload(j.header(body, h.samples), body)
		acked(t, h.site+"'s update", resp, err)
	}
	want := make([]float32, numParams)
	var total float64
	for _, h := range honestUpdates {
		total += float64(h.samples)
	}
	for i := range want {
		var s float64
		for _, h := range honestUpdates {
			s += float64(h.samples) * float64(h.delta[i])
		}
		want[i] = float32(float64(j.global[i]) + s/total)
	}
	j.checkCommit(t, want, 1e-6, []string{"honest-a", "honest-b"}, uint64(total))
}

// checkCommit waits for the open round to commit and checks its
// contributors, samples and model (within tol).
func (j *updateJob) checkCommit(t *testing.T, want []float32, tol float64, contributors []string, samples uint64) {
	t.Helper()
	var r coordinator.RoundSummary
	waitFor(t, 15*time.Second, fmt.Sprintf("round %d of %s to commit", j.round, j.id), func() (bool, string) {
		js := j.job(t)
		for _, h := range js.History {
			if h.Round == j.round && h.State == coordinator.RoundCommitted {
				r = h
				return true, ""
			}
		}
		return false, fmt.Sprintf("%s %+v", js.State, js.History)
	})
	if !slices.Equal(slices.Sorted(slices.Values(r.Contributors)), contributors) || r.Samples != samples {
		t.Fatalf("round %d aggregated %v with %d samples, want %v with %d", j.round, r.Contributors, r.Samples, contributors, samples)
	}
	got, err := j.honest["honest-a"].download(j.id, r.Model)
	if err != nil {
		t.Fatalf("download round %d's model: %v", j.round, err)
	}
	for i := range want {
		if math.Abs(float64(got[i])-float64(want[i])) > tol {
			t.Fatalf("round %d's model is %v, want %v (the honest updates alone)", j.round, got, want)
		}
	}
	t.Logf("round %d committed from %v: %v", j.round, r.Contributors, got)
	j.round++
	j.base, j.global = r.Model, got
}

// refusedUpload sends an update and checks it is refused with code and a
// message holding words, counted in updates_rejected_total (and any other
// counters named), and recorded in the audit log as the site's refusal.
func (j *updateJob) refusedUpload(t *testing.T, c *client, site, what string, hdr *pb.UpdateUpload, body []byte,
	code pb.ErrorCode, words []string, counters ...string) {
	t.Helper()
	rejected := j.f.count(t, "updates_rejected_total")
	var others []*counter
	for _, name := range counters {
		others = append(others, j.f.count(t, name))
	}
	from := j.f.auditSize(t)
	resp, err := c.upload(hdr, body)
	wantRefusal(t, what, resp, err, code, words...)
	rejected.grew(t, 1)
	for _, o := range others {
		o.grew(t, 1)
	}
	target := fmt.Sprintf("job %s round %d", j.id, hdr.GetRound())
	j.f.audited(t, from, 1, what, func(e auditEntry) bool {
		return e.Kind == "site" && e.Actor == site && e.Action == "update.reject" && e.Target == target && e.Outcome == "denied"
	})
}

// TestAttackUpdatesReplay: a site sends its update again. In the same round
// the same bytes are harmless (the answer is the same Ack, the receipt is
// kept once, with its first sample count: a site resends after a failover)
// and other bytes are refused; after the round committed, the update is
// refused for the closed round, and relabelled for the next round it is
// refused for its base model. The replays are counted and audited, and
// every round aggregates each honest update exactly once.
func TestAttackUpdatesReplay(t *testing.T) {
	f := fed(t)
	j := newUpdateJob(t, f, "replay", 2, nil)
	a := j.honest["honest-a"]
	h := honestUpdates[0]
	body := protocol.EncodeF32(h.delta)
	first := j.header(body, h.samples)
	resp, err := a.upload(first, body)
	acked(t, "the update", resp, err)

	t.Run("same bytes, same round", func(t *testing.T) {
		inflated := j.header(body, 1_000_000) // the same update, claiming more samples
		for _, hdr := range []*pb.UpdateUpload{first, inflated} {
			resp, err := a.upload(hdr, body)
			acked(t, "the replay", resp, err)
		}
	})
	t.Run("other bytes, same round", func(t *testing.T) {
		other := protocol.EncodeF32([]float32{9, 9, 9, 9})
		j.refusedUpload(t, a, h.site, "a second, different update", j.header(other, h.samples), other,
			pb.ErrorCode_ERROR_CODE_REFUSED, []string{"already submitted a different update"})
	})
	// honest-a's update counts once, with its first sample count.
	resp, err = j.honest["honest-b"].upload(j.header(protocol.EncodeF32(honestUpdates[1].delta), honestUpdates[1].samples), protocol.EncodeF32(honestUpdates[1].delta))
	acked(t, "honest-b's update", resp, err)
	want := make([]float32, numParams)
	for i := range want {
		want[i] = float32((float64(h.samples)*float64(h.delta[i]) + float64(honestUpdates[1].samples)*float64(honestUpdates[1].delta[i])) /
			float64(h.samples+honestUpdates[1].samples))
	}
	j.checkCommit(t, want, 1e-6, []string{"honest-a", "honest-b"}, h.samples+honestUpdates[1].samples)

	t.Run("closed round", func(t *testing.T) {
		j.refusedUpload(t, a, h.site, "the replay into the closed round", first, body,
			pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, []string{"round 1 is not open"}, "updates_late_total")
	})
	t.Run("relabelled for the next round", func(t *testing.T) {
		next := j.header(body, h.samples)
		next.BaseModelSha256 = first.GetBaseModelSha256()
		j.refusedUpload(t, a, h.site, "the replay into round 2", next, body,
			pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, []string{"another model than the round's"})
	})
	j.commitHonest(t)
	f.healthy(t)
}

// TestAttackUpdatesWrongRound: mallory sends updates for rounds that have
// not opened (the next one, and one far ahead) and, once the round has
// committed, for that closed round. Each is refused for its round, counted
// (a closed round's as late), audited, and every round aggregates the
// honest updates only.
func TestAttackUpdatesWrongRound(t *testing.T) {
	f := fed(t)
	j := newUpdateJob(t, f, "wrong-round", 2, nil)
	m := f.connect(t, "mallory")
	body := protocol.EncodeF32([]float32{5, 5, 5, 5})
	t.Run("future round", func(t *testing.T) {
		for _, round := range []uint64{2, 1 << 40} {
			hdr := j.header(body, 100)
			hdr.Round = round
			j.refusedUpload(t, m, "mallory", fmt.Sprintf("an update for round %d", round), hdr, body,
				pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, []string{fmt.Sprintf("round %d is not open", round)})
		}
	})
	oldBase := j.base
	j.commitHonest(t)
	t.Run("closed round", func(t *testing.T) {
		late := j.header(body, 100)
		late.Round, late.BaseModelSha256 = 1, oldBase
		j.refusedUpload(t, m, "mallory", "an update for committed round 1", late, body,
			pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, []string{"round 1 is not open"}, "updates_late_total")
	})
	j.commitHonest(t)
	f.healthy(t)
}

// TestAttackUpdatesWrongShape: updates whose declared size is not the
// model's (a weight short, a weight more, not whole float32s, empty, a
// terabyte) or whose encoding is not f32le are refused from their header,
// before any body is read, counted and audited; the round aggregates the
// honest updates only.
func TestAttackUpdatesWrongShape(t *testing.T) {
	f := fed(t)
	j := newUpdateJob(t, f, "wrong-shape", 1, nil)
	m := f.connect(t, "mallory")
	for _, size := range []uint64{4 * (numParams - 1), 4 * (numParams + 1), 4*numParams + 2, 0, 1 << 40} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			body := make([]byte, min(size, 64))
			hdr := j.header(body, 100)
			hdr.Delta.Size = size
			j.refusedUpload(t, m, "mallory", fmt.Sprintf("a %d-byte update", size), hdr, body,
				pb.ErrorCode_ERROR_CODE_BAD_REQUEST, []string{fmt.Sprintf("delta declares %d bytes; the model has %d parameters", size, numParams)})
		})
	}
	t.Run("encoding", func(t *testing.T) {
		body := protocol.EncodeF32([]float32{1, 1, 1, 1})
		hdr := j.header(body, 100)
		hdr.Delta.Encoding = pb.Encoding_ENCODING_UNSPECIFIED
		j.refusedUpload(t, m, "mallory", "an update of another encoding", hdr, body,
			pb.ErrorCode_ERROR_CODE_BAD_REQUEST, []string{"encoding"})
	})
	j.commitHonest(t)
	f.healthy(t)
}

// TestAttackUpdatesNonFinite: updates holding a NaN, +Inf or -Inf are
// refused once their body is read, counted and audited, their body is not
// kept in the coordinator's blob store, and the round aggregates the honest
// updates only.
func TestAttackUpdatesNonFinite(t *testing.T) {
	f := fed(t)
	j := newUpdateJob(t, f, "non-finite", 1, nil)
	m := f.connect(t, "mallory")
	values := map[string]uint32{
		"NaN": math.Float32bits(float32(math.NaN())), "signalling NaN": 0x7f800001,
		"+Inf": math.Float32bits(float32(math.Inf(1))), "-Inf": math.Float32bits(float32(math.Inf(-1))),
	}
	for name, bits := range values {
		t.Run(name, func(t *testing.T) {
			body := protocol.EncodeF32([]float32{0.01, 0.01, 0.01, 0.01})
			binary.LittleEndian.PutUint32(body[8:], bits)
			j.refusedUpload(t, m, "mallory", "an update with "+name, j.header(body, 100), body,
				pb.ErrorCode_ERROR_CODE_BAD_REQUEST, []string{"element 2 is not finite"})
			if _, err := os.Stat(filepath.Join(f.dataDir, "blobs", protocol.Digest(body))); !os.IsNotExist(err) {
				t.Fatalf("the refused body is still in the blob store (%v)", err)
			}
		})
	}
	j.commitHonest(t)
	f.healthy(t)
}

// TestAttackUpdatesAbsurdNorm: outside a job's norm bound the coordinator
// has no norm check (a finite update of any size is accepted, by design:
// aggregator.NormBound clips and never rejects). With strategy.norm_bound
// set, mallory's update of norm 2e30 is accepted, counted as clipped, and
// enters the aggregate scaled down to the bound: the committed model moves
// at most norm_bound from the base, and equals the FedAvg of the honest
// updates with mallory's clipped one.
func TestAttackUpdatesAbsurdNorm(t *testing.T) {
	f := fed(t)
	const bound = 0.5
	j := newUpdateJob(t, f, "absurd-norm", 1, map[string]any{"min_sites": 3,
		"strategy": map[string]any{"name": "fedavg", "norm_bound": bound}})
	m := f.connect(t, "mallory")
	evil := []float32{1e30, -1e30, 1e30, 1e30}
	body := protocol.EncodeF32(evil)
	clipped := f.count(t, "updates_clipped_total")
	from := f.auditSize(t)
	const evilSamples = 100
	resp, err := m.upload(j.header(body, evilSamples), body)
	acked(t, "mallory's update", resp, err)
	clipped.grew(t, 1)
	f.audited(t, from, 1, "mallory's update", func(e auditEntry) bool {
		return e.Actor == "mallory" && e.Action == "update.accept" && e.Target == "job absurd-norm round 1"
	})
	for _, h := range honestUpdates {
		b := protocol.EncodeF32(h.delta)
		resp, err := j.honest[h.site].upload(j.header(b, h.samples), b)
		acked(t, h.site+"'s update", resp, err)
	}
	// Every delta clipped to the bound (the honest ones are within it),
	// then averaged by samples.
	norm := 0.0
	for _, x := range evil {
		norm += float64(x) * float64(x)
	}
	norm = math.Sqrt(norm)
	want := make([]float32, numParams)
	total := float64(evilSamples)
	for _, h := range honestUpdates {
		total += float64(h.samples)
	}
	for i := range want {
		s := evilSamples * float64(evil[i]) * bound / norm
		for _, h := range honestUpdates {
			s += float64(h.samples) * float64(h.delta[i])
		}
		want[i] = float32(s / total)
	}
	j.checkCommit(t, want, 1e-5, []string{"honest-a", "honest-b", "mallory"}, evilSamples+honestUpdates[0].samples+honestUpdates[1].samples)
	moved := 0.0
	for _, x := range j.global {
		moved += float64(x) * float64(x)
	}
	if math.Sqrt(moved) > bound*(1+1e-6) {
		t.Fatalf("the model moved %v from its base, beyond the norm bound %v", math.Sqrt(moved), bound)
	}
	f.healthy(t)
}

// TestAttackUpdatesLyingSampleCount: mallory's update claims a billion (and
// 2^64-1) training samples, which would make it the whole FedAvg. Claims
// above the coordinator's max_update_samples are refused, counted and
// audited, and the round aggregates the honest updates only.
func TestAttackUpdatesLyingSampleCount(t *testing.T) {
	f := fed(t)
	j := newUpdateJob(t, f, "sample-lie", 1, nil)
	m := f.connect(t, "mallory")
	body := protocol.EncodeF32([]float32{5, -5, 5, -5})
	for _, n := range []uint64{1_000_000_000, math.MaxUint64} {
		j.refusedUpload(t, m, "mallory", fmt.Sprintf("an update claiming %d samples", n), j.header(body, n), body,
			pb.ErrorCode_ERROR_CODE_BAD_REQUEST, []string{fmt.Sprintf("sample_count %d is above", n), "max_update_samples"})
	}
	j.commitHonest(t)
	f.healthy(t)
}
