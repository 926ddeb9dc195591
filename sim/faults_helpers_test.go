package sim

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
)

// faultFed is a federation for fault tests: three coordinators, one
// running agent per site, every agent's egress recorded, and the logs kept
// (and written to a file if the test fails, or always when the environment
// sets COHORT_SIM_KEEP_LOGS).
type faultFed struct {
	*federation
	ids    []string
	egress *egressRecorder
	logs   *lockedBuffer
}

// startFaultFederation writes data for nSites default sites (200 patients
// each) and starts three coordinators and one agent per site with job.
// Everything is stopped when the test ends.
func startFaultFederation(t *testing.T, nSites int, job coordinator.JobSpec) *faultFed {
	t.Helper()
	dir := t.TempDir()
	var ids []string
	for _, s := range synth.DefaultSites(nSites, 7) {
		s.Patients = 200
		if _, err := synth.WriteSite(filepath.Join(dir, "data", s.Name), s, synth.DefaultTruth()); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.Name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := new(lockedBuffer)
	rec := newEgressRecorder(ctx)
	fed, err := startFederation(ctx, federationConfig{Dir: dir, Coordinators: 3, Sites: ids,
		DataDir: filepath.Join(dir, "data"), Jobs: []coordinator.JobSpec{job}, Seed: 7,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), EgressTap: rec.tap})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Cancelling first also releases any upload an egress gate holds,
		// so that stop can wait for every agent.
		cancel()
		if err := fed.stop(); err != nil {
			t.Logf("stopping the federation: %v", err)
		}
		if t.Failed() || os.Getenv("COHORT_SIM_KEEP_LOGS") != "" {
			dumpLogs(t, logs.Bytes())
		}
	})
	return &faultFed{federation: fed, ids: ids, egress: rec, logs: logs}
}

// dumpLogs writes a failed test's logs to a file that outlives the test,
// and their tail to the test output.
func dumpLogs(t *testing.T, logs []byte) {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	f, err := os.CreateTemp("", "cohort-"+name+"-*.log")
	if err == nil {
		_, err = f.Write(logs)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Logf("could not keep the logs: %v", err)
	} else {
		t.Logf("federation logs: %s", f.Name())
	}
	lines := bytes.Split(bytes.TrimSpace(logs), []byte("\n"))
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	t.Logf("last log lines:\n%s", bytes.Join(lines, []byte("\n")))
}

// nodeIndex is the index of n in the federation.
func (f *faultFed) nodeIndex(n *coordinator.Node) int { return slices.Index(f.nodes, n) }

// currentLeader waits (bounded) for a leader and returns it.
func (f *faultFed) currentLeader(t *testing.T) *coordinator.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := f.leader(ctx)
	if err != nil {
		t.Fatalf("waiting for a leader: %v", err)
	}
	return l
}

// partition cuts the Raft and blob traffic between the nodes of side and
// every other node, in both directions (a slow node stays slow).
func (f *faultFed) partition(side ...*coordinator.Node) {
	var ids []string
	for _, n := range side {
		ids = append(ids, n.ID())
	}
	f.federation.partition(ids...)
}

// slow delays every write between n and its peers by d, both ways.
func (f *faultFed) slow(n *coordinator.Node, d time.Duration) { f.slowNode(n.ID(), d) }

// crash cuts node n off from its peers and then stops it without a
// leadership transfer.
func (f *faultFed) crash(n *coordinator.Node) { f.federation.crash(f.nodeIndex(n)) }

// within polls cond every 10 ms until it holds, failing the test after d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// committed is how many rounds of job "j" node n has committed (0 if it
// does not know the job yet).
func committed(n *coordinator.Node) uint64 {
	j, ok := n.Job("j")
	if !ok {
		return 0
	}
	return j.CommittedRounds()
}

// jobDone reports whether node n has job "j" finished.
func jobDone(n *coordinator.Node) bool {
	j, ok := n.Job("j")
	return ok && j.State == coordinator.JobDone
}

// jobJSON is node n's replicated state of job "j", for comparing nodes.
func jobJSON(t *testing.T, n *coordinator.Node) string {
	t.Helper()
	j, ok := n.Job("j")
	if !ok {
		return ""
	}
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// openWithReceipts reports whether node n has round number open with
// exactly k receipts.
func openWithReceipts(n *coordinator.Node, number uint64, k int) bool {
	j, ok := n.Job("j")
	return ok && j.Current != nil && j.Current.Number == number && len(j.Current.Receipts) == k
}

// siteRound names one site's upload for one round of one job.
type siteRound struct {
	site, job string
	round     uint64
}

// egressRecorder sees every byte the agents send: the tensors by digest
// (to recompute aggregates), and, per site and round, the digests of the
// update bodies uploaded (to see whether a site ever trained a round
// twice). A gate can hold a site's upload of one round until released.
type egressRecorder struct {
	ctx context.Context

	mu      sync.Mutex
	tensors map[string][]byte
	uploads map[siteRound]map[string]bool
	gates   map[siteRound]chan struct{}
}

func newEgressRecorder(ctx context.Context) *egressRecorder {
	return &egressRecorder{ctx: ctx, tensors: map[string][]byte{},
		uploads: map[siteRound]map[string]bool{}, gates: map[siteRound]chan struct{}{}}
}

// tap is the agents' EgressTap. It runs in the sending agent's goroutine
// before the bytes are written, so blocking here holds that send.
func (e *egressRecorder) tap(site string, b []byte) {
	up := uploadHeader(b)
	e.mu.Lock()
	var gate chan struct{}
	if up == nil {
		e.tensors[protocol.Digest(b)] = bytes.Clone(b)
	} else {
		k := siteRound{site, up.GetJobId(), up.GetRound()}
		if e.uploads[k] == nil {
			e.uploads[k] = map[string]bool{}
		}
		e.uploads[k][up.GetDelta().GetSha256()] = true
		gate = e.gates[k]
	}
	e.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-e.ctx.Done():
		}
	}
}

// hold makes site's next uploads for round of job "j" wait until the
// returned release is called (release is idempotent). The gate stays
// open once released, so later sends of the same update pass.
func (e *egressRecorder) hold(site string, round uint64) (release func()) {
	ch := make(chan struct{})
	e.mu.Lock()
	e.gates[siteRound{site, "j", round}] = ch
	e.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// tried reports whether site has tried to send an upload for round of job
// "j" (and waits at the gate, if one holds it).
func (e *egressRecorder) tried(site string, round uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.uploads[siteRound{site, "j", round}]) > 0
}

// uploadHeader decodes b if it is exactly one frame carrying an update
// header, else returns nil.
func uploadHeader(b []byte) *pb.UpdateUpload {
	if len(b) < 4 || int(binary.BigEndian.Uint32(b)) != len(b)-4 {
		return nil
	}
	env, err := protocol.ReadFrame(bytes.NewReader(b), 0)
	if err != nil {
		return nil
	}
	return env.GetUpdateUpload()
}

// checkAccounting checks job "j" as node n sees it against what the agents
// sent, for every round committed so far:
//   - each round number is committed by exactly one attempt, in order, and
//     the job's models are the initial one followed by the rounds' results;
//   - an attempt that did not commit (and is not the open one) acknowledged
//     no update, since no aggregate would hold it;
//   - a committed round's contributors are exactly its receipts, each
//     receipt is an update its site sent for that round, and no site sent
//     two different updates for one round (a site that trained a round
//     again had dropped an update it may have had acknowledged);
//   - the committed model is its base plus the sample-weighted mean of
//     exactly those updates.
//
// It returns the job.
func checkAccounting(t *testing.T, n *coordinator.Node, rec *egressRecorder) *coordinator.Job {
	t.Helper()
	j, ok := n.Job("j")
	if !ok {
		t.Fatalf("%s does not know job j", n.ID())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(j.Models) == 0 || j.Models[0].Round != 0 {
		t.Fatalf("%s: job j has no initial model", n.ID())
	}
	var next uint64 = 1
	for _, r := range j.Rounds {
		if r.Kind == coordinator.KindStats {
			continue
		}
		if r.State != coordinator.RoundCommitted {
			if r.State != coordinator.RoundOpen && len(r.Receipts) > 0 {
				t.Errorf("%s: round %d attempt %d (%s) acknowledged %d updates that no aggregate holds",
					n.ID(), r.Number, r.Attempt, r.State, len(r.Receipts))
			}
			continue
		}
		if r.Number != next {
			t.Fatalf("%s: committed round %d (attempt %d) where round %d was next: a round committed twice or out of order",
				n.ID(), r.Number, r.Attempt, next)
		}
		next++
		if int(r.Number) >= len(j.Models) || j.Models[r.Number].Digest != r.Result || j.Models[r.Number].Round != r.Number {
			t.Fatalf("%s: round %d committed %.12s, but the job's model list does not name it in place", n.ID(), r.Number, r.Result)
		}
		if prev := j.Models[r.Number-1].Digest; r.Base != prev {
			t.Fatalf("%s: round %d started from %.12s, the previous global model is %.12s", n.ID(), r.Number, r.Base, prev)
		}
		receipts := slices.Sorted(maps.Keys(r.Receipts))
		if !slices.Equal(receipts, r.Contributors) {
			t.Fatalf("%s: round %d acknowledged %v, aggregated %v", n.ID(), r.Number, receipts, r.Contributors)
		}
		prev := decodeModel(t, n, r.Base)
		sum := make([]float64, len(prev))
		var total float64
		for _, site := range receipts {
			rc := r.Receipts[site]
			sentDigests := rec.uploads[siteRound{site, "j", r.Number}]
			if !sentDigests[rc.Digest] {
				t.Fatalf("%s: round %d: the receipt of %s names an update (%.12s) it never sent for this round", n.ID(), r.Number, site, rc.Digest)
			}
			if len(sentDigests) != 1 {
				t.Errorf("%s: site %s sent %d different updates for round %d: it trained the round again", n.ID(), site, len(sentDigests), r.Number)
			}
			d, err := protocol.DecodeF32(rec.tensors[rc.Digest])
			if err != nil || len(d) != len(prev) {
				t.Fatalf("%s: round %d: the delta of %s is not among the bytes it sent", n.ID(), r.Number, site)
			}
			for i := range d {
				sum[i] += float64(rc.Samples) * float64(d[i])
			}
			total += float64(rc.Samples)
		}
		got := decodeModel(t, n, r.Result)
		for i := range got {
			if w := float64(prev[i]) + sum[i]/total; math.Abs(float64(got[i])-w) > 1e-5 {
				t.Fatalf("%s: round %d: weight %d is %v, the FedAvg of the acknowledged updates gives %v", n.ID(), r.Number, i, got[i], w)
			}
		}
	}
	if next-1 != j.CommittedRounds() || len(j.Models) != int(next) {
		t.Fatalf("%s: %d rounds committed in order, the job counts %d and names %d models", n.ID(), next-1, j.CommittedRounds(), len(j.Models))
	}
	return j
}

// decodeModel reads a committed model through n and checks its digest.
func decodeModel(t *testing.T, n *coordinator.Node, digest string) []float32 {
	t.Helper()
	b := weights(t, n, digest)
	if got := protocol.Digest(b); got != digest {
		t.Fatalf("%s served model %.12s with digest %.12s", n.ID(), digest, got)
	}
	w, err := protocol.DecodeF32(b)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// checkNodesAgree checks that no two nodes committed different models for
// one round of job "j", and that no node committed a round twice. A node
// may lag behind (a dead one, or one that has not caught up yet).
func checkNodesAgree(t *testing.T, nodes ...*coordinator.Node) {
	t.Helper()
	results := map[uint64]string{}
	owner := map[uint64]string{}
	for _, n := range nodes {
		j, ok := n.Job("j")
		if !ok {
			continue
		}
		seen := map[uint64]bool{}
		for _, r := range j.Rounds {
			if r.State != coordinator.RoundCommitted || r.Kind == coordinator.KindStats {
				continue
			}
			if seen[r.Number] {
				t.Errorf("%s committed round %d more than once", n.ID(), r.Number)
			}
			seen[r.Number] = true
			if d, ok := results[r.Number]; ok && d != r.Result {
				t.Errorf("round %d: %s committed model %.12s, %s committed %.12s", r.Number, owner[r.Number], d, n.ID(), r.Result)
			} else if !ok {
				results[r.Number], owner[r.Number] = r.Result, n.ID()
			}
		}
	}
}

// describe summarizes a node's view of job "j" for test logs.
func describe(n *coordinator.Node) string {
	j, ok := n.Job("j")
	if !ok {
		return n.ID() + ": no job"
	}
	lid, _ := n.Leader()
	s := fmt.Sprintf("%s (leader=%v, sees %q): %s, %d committed", n.ID(), n.IsLeader(), lid, j.State, j.CommittedRounds())
	if c := j.Current; c != nil {
		s += fmt.Sprintf(", round %d attempt %d open with %d receipts", c.Number, c.Attempt, len(c.Receipts))
	}
	return s
}
