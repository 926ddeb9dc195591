package coordinator

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cohort-fl/cohort/coordinator/raftnet"
)

// TestAdminHistoryIsLinearizable records the history of concurrent admin
// API clients (create and read sites and jobs, through any node) while
// leaders crash, leaders are partitioned away, followers restart or slow
// down, and checks with porcupine that the history is linearizable against
// linModel (linearizability_model_test.go).
//
// Each seed runs its own 3-node cluster. The seed fixes the fault schedule
// and every client's choices (node, operation, key); timing still varies
// from run to run (which node leads, what a request races with), so a
// replayed seed explores the same plan, not the same interleaving:
//
//	COHORT_LIN_SEED=<n> go test -run TestAdminHistoryIsLinearizable ./coordinator/
//
// How operations enter the history:
//   - a create answered 201 succeeded; a read answered 200 or 404 saw the
//     key present or absent;
//   - a create with no answer, a timeout or a 5xx (503 leadership changed,
//     502 forwarding failed, 500 apply error) may or may not take effect,
//     ever: it is recorded with an unknown outcome and Return =
//     math.MaxInt64, and its client continues under a new id (porcupine
//     allows one pending operation per client);
//   - a read that fails is left out (it had no effect), and so is a
//     request whose connection was refused (it was never sent);
//   - any other answer fails the test.
//
// Stale reads (?stale=true) are not linearizable and are not used.
func TestAdminHistoryIsLinearizable(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	load := 3500 * time.Millisecond
	if testing.Short() {
		seeds, load = seeds[:3], 3*time.Second
	}
	if s := os.Getenv("COHORT_LIN_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("COHORT_LIN_SEED=%q: %v", s, err)
		}
		seeds = []uint64{n}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runLinSeed(t, seed, load) })
	}
}

const (
	linClients    = 5
	linMaxOps     = 6000 // per seed, the final reads aside
	linReqTimeout = 2 * time.Second
	linBackoff    = 20 * time.Millisecond // after a failed request
	linCheckLimit = 20 * time.Second      // porcupine's time budget
)

func linReplay(seed uint64) string {
	return fmt.Sprintf("COHORT_LIN_SEED=%d go test -run TestAdminHistoryIsLinearizable ./coordinator/", seed)
}

func runLinSeed(t *testing.T, seed uint64, load time.Duration) {
	// Registered first, so it runs last: after the cluster's own cleanup,
	// whose failures it then covers too.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d failed; replay it with: %s", seed, linReplay(seed))
		}
	})
	tc := startClusterWith(t, 3, nil, nil, func(c *Config) {
		// One token drives every client: no rate limit in the way.
		c.Auth.RatePerSecond, c.Auth.Burst = 1e6, 1e6
	})
	tc.leader(t)

	h := &linHarness{t: t, seed: seed, names: map[string]string{}, counts: map[string]int{}}
	for _, n := range tc.nodes {
		// A restarted node keeps its addresses: clients never need tc.
		h.addrs = append(h.addrs, n.AdminAddr())
		h.names[n.AdminAddr()] = n.ID()
	}
	h.token = tc.token
	h.client = &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 2 * linClients, DisableCompression: true, TLSClientConfig: tc.clientTLS(t)},
		Timeout:   linReqTimeout,
	}
	h.nextID.Store(linClients)
	h.budget.Store(linMaxOps)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Runs before the cluster stops (cleanups run last in, first out),
	// also when the test fails early.
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		h.client.CloseIdleConnections()
	})

	h.start = time.Now()
	deadline := h.start.Add(load)
	for i := range linClients {
		wg.Go(func() { h.runClient(ctx, i, deadline) })
	}
	h.runFaults(tc, linSchedule(seed), deadline)
	wg.Wait()
	for _, n := range tc.nodes {
		n.InjectFault(nil) // healed already; for certainty
	}
	h.finalReads(ctx)
	h.client.CloseIdleConnections()
	if t.Failed() {
		return
	}

	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	var creates, unknown, reads int
	for _, op := range ops {
		switch {
		case op.Output.(linOutput).Unknown:
			unknown++
		case op.Input.(linInput).Kind == linCreate:
			creates++
		default:
			reads++
		}
	}
	t.Logf("seed %d: %d operations in %v: %d creates, %d with an unknown outcome, %d reads; faults: %s; answers: %v",
		seed, len(ops), load, creates, unknown, reads, h.faultSummary(), h.counts)
	if creates < 10 || reads < 10 {
		t.Errorf("seed %d: too few successful operations to check anything (%d creates, %d reads); replay: %s",
			seed, creates, reads, linReplay(seed))
	}

	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, linCheckLimit)
	t.Logf("seed %d: checked in %v: %s", seed, time.Since(began).Round(time.Millisecond), res)
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Logf("seed %d: the checker ran out of time (%v): no verdict", seed, linCheckLimit)
	default:
		info.AddAnnotations(h.annotations())
		path := "(none)"
		if f, err := os.CreateTemp("", fmt.Sprintf("cohort-lin-seed%d-*.html", seed)); err != nil {
			t.Logf("visualization: %v", err)
		} else {
			f.Close()
			if err := porcupine.VisualizePath(linModel, info, f.Name()); err != nil {
				t.Logf("visualization: %v", err)
			} else {
				path = f.Name()
			}
		}
		t.Errorf("seed %d: the admin API's history is NOT linearizable (%s)\nvisualization: %s\nreplay: %s\n%s",
			seed, res, path, linReplay(seed), h.explain(ops))
	}
}

// linHarness is one seed's clients and history.
type linHarness struct {
	t      *testing.T
	seed   uint64
	start  time.Time
	addrs  []string          // the nodes' status addresses
	names  map[string]string // status address → node id
	client *http.Client
	token  string
	nextID atomic.Int64 // the next porcupine client id
	budget atomic.Int64 // operations left

	mu     sync.Mutex
	ops    []porcupine.Operation
	counts map[string]int // answers, e.g. "create site 503"
	faults []porcupine.Annotation
}

// now is the history's clock: monotonic nanoseconds since the start.
func (h *linHarness) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *linHarness) count(what string) {
	h.mu.Lock()
	h.counts[what]++
	h.mu.Unlock()
}

func siteKey(i int) string { return fmt.Sprintf("site/site-%03d", i) }
func jobKey(i int) string  { return fmt.Sprintf("job/job-%02d", i) }

// runClient sends random requests to random nodes until the deadline or
// the budget ends. Keys come from a window that slides as the client goes,
// so that keys keep going from absent to present during the run and the
// clients' windows overlap.
func (h *linHarness) runClient(ctx context.Context, i int, deadline time.Time) {
	rng := rand.New(rand.NewPCG(h.seed, 0xc11e47+uint64(i)))
	id := i
	for n := 0; ctx.Err() == nil && time.Now().Before(deadline) && h.budget.Add(-1) >= 0; n++ {
		addr := h.addrs[rng.IntN(len(h.addrs))]
		var kind linKind
		var key string
		switch p := rng.IntN(100); {
		case p < 25:
			kind, key = linCreate, siteKey(n/12+rng.IntN(8))
		case p < 75:
			kind, key = linRead, siteKey(n/12+rng.IntN(8))
		case p < 82:
			kind, key = linCreate, jobKey(n/60+rng.IntN(3))
		default:
			kind, key = linRead, jobKey(n/60+rng.IntN(3))
		}
		switch h.do(ctx, id, kind, key, addr) {
		case linUnknown:
			id = int(h.nextID.Add(1) - 1)
			fallthrough
		case linDropped:
			select {
			case <-ctx.Done():
			case <-time.After(linBackoff):
			}
		case linFailed:
			return
		}
	}
}

// linResult is what became of one request.
type linResult int

const (
	linDone    linResult = iota // recorded with its outcome
	linDropped                  // left out: a failed read, or never sent
	linUnknown                  // a create recorded with an unknown outcome
	linFailed                   // an answer the API must not give: the test failed
)

// do sends one request and records it.
func (h *linHarness) do(ctx context.Context, client int, kind linKind, key, addr string) linResult {
	typ, id, _ := strings.Cut(key, "/")
	var method, path string
	var body []byte
	switch {
	case kind == linRead:
		method, path = "GET", "/v1/"+typ+"s/"+id
	case typ == "site":
		method, path = "POST", "/v1/sites"
		body, _ = json.Marshal(map[string]string{"id": id})
	default:
		method, path = "POST", "/v1/jobs"
		body, _ = json.Marshal(testJob(id, 1, 1)) // the same spec every time: idempotent
	}
	verb := map[linKind]string{linCreate: "create", linRead: "read"}[kind]

	call := h.now()
	code, raw, err := h.send(ctx, method, addr, path, body)
	ret := h.now()
	if ctx.Err() != nil {
		return linFailed // the test is over
	}
	op := porcupine.Operation{ClientId: client, Input: linInput{kind, key}, Call: call, Return: ret}
	via := h.names[addr]
	took := time.Duration(ret - call).Round(100 * time.Microsecond)
	unknown := func(why string) linResult {
		if kind == linRead {
			return linDropped
		}
		op.Output, op.Return = linOutput{Unknown: true}, math.MaxInt64
		op.Metadata = fmt.Sprintf("via %s: %s after %v", via, why, took)
		h.record(op)
		return linUnknown
	}
	var sent *net.OpError
	switch {
	case err != nil && errors.As(err, &sent) && sent.Op == "dial":
		h.count(verb + " " + typ + " refused")
		return linDropped // the node is down: nothing was sent
	case err != nil:
		h.count(verb + " " + typ + " error")
		return unknown(err.Error())
	}
	h.count(fmt.Sprintf("%s %s %d", verb, typ, code))
	switch {
	case code >= 500:
		var p Problem
		json.Unmarshal(raw, &p)
		return unknown(fmt.Sprintf("%d %s", code, p.Detail))
	case kind == linCreate && code == http.StatusCreated, kind == linRead && code == http.StatusOK:
		var v struct {
			ID      string `json:"id"`
			Created string `json:"created"`
		}
		if err := json.Unmarshal(raw, &v); err != nil || v.ID != id || v.Created == "" {
			h.t.Errorf("seed %d: %s %s via %s: %d with body %s; replay: %s", h.seed, method, path, via, code, raw, linReplay(h.seed))
			return linFailed
		}
		op.Output = linOutput{Present: true, Created: v.Created}
	case kind == linRead && code == http.StatusNotFound:
		op.Output = linOutput{}
	default:
		h.t.Errorf("seed %d: %s %s via %s: unexpected %d %s; replay: %s", h.seed, method, path, via, code, raw, linReplay(h.seed))
		return linFailed
	}
	op.Metadata = fmt.Sprintf("via %s: %d in %v", via, code, took)
	h.record(op)
	return linDone
}

func (h *linHarness) send(ctx context.Context, method, addr, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+h.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err // a cut answer: the outcome is unknown
	}
	return resp.StatusCode, raw, nil
}

func (h *linHarness) record(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// finalReads reads every key the clients touched once more, after the
// faults healed, as a new client: every create that succeeded must show,
// and each unknown one either shows or never will.
func (h *linHarness) finalReads(ctx context.Context) {
	h.mu.Lock()
	seen := map[string]bool{}
	for _, op := range h.ops {
		seen[op.Input.(linInput).Key] = true
	}
	h.mu.Unlock()
	keys := slices.Sorted(maps.Keys(seen))
	client := int(h.nextID.Add(1) - 1)
	deadline := time.Now().Add(15 * time.Second)
	for i, k := range keys {
		for try := 0; ; try++ {
			if time.Now().After(deadline) {
				h.t.Errorf("seed %d: no read of %s succeeded within 15 s of the faults' end: the cluster did not recover; replay: %s",
					h.seed, k, linReplay(h.seed))
				return
			}
			switch h.do(ctx, client, linRead, k, h.addrs[(i+try)%len(h.addrs)]) {
			case linDone:
			case linFailed:
				return
			default:
				time.Sleep(linBackoff)
				continue
			}
			break
		}
	}
}

// linEpisode is one fault of the schedule, after a quiet pause.
type linEpisode struct {
	kind  string
	pause time.Duration // quiet time before
	hold  time.Duration // how long the fault lasts
	pick  int           // which follower, for follower faults
	delay time.Duration // slow-follower: added to every write
	crash bool          // restart-follower: crash instead of a clean stop
}

// linSchedule derives a fault schedule from the seed. The first fault hits
// the leader (a crash or a partition); the rest are drawn from every kind.
// Faults never overlap: at most one node is down or cut off at a time.
func linSchedule(seed uint64) []linEpisode {
	rng := rand.New(rand.NewPCG(seed, 0xfa0175))
	kinds := []string{"crash-leader", "partition-leader", "restart-follower", "slow-follower", "isolate-follower"}
	var plan []linEpisode
	for i := range 16 {
		k := kinds[rng.IntN(len(kinds))]
		if i == 0 {
			k = kinds[rng.IntN(2)]
		}
		plan = append(plan, linEpisode{
			kind:  k,
			pause: time.Duration(100+rng.IntN(300)) * time.Millisecond,
			hold:  time.Duration(500+rng.IntN(500)) * time.Millisecond,
			pick:  rng.IntN(2),
			delay: time.Duration(20+rng.IntN(100)) * time.Millisecond,
			crash: rng.IntN(2) == 0,
		})
	}
	return plan
}

// runFaults plays the schedule on the test's goroutine (restarts may call
// t.Fatal) until the next episode would not end before the deadline.
func (h *linHarness) runFaults(tc *testCluster, plan []linEpisode, deadline time.Time) {
	t := h.t
	for _, e := range plan {
		if time.Until(deadline) < e.pause+e.hold {
			return
		}
		time.Sleep(e.pause)
		l := linLeader(tc, 2*time.Second)
		if l < 0 {
			t.Logf("seed %d: no leader for %s: skipped", h.seed, e.kind)
			h.annotate(h.now(), h.now(), "no leader: "+e.kind+" skipped")
			continue
		}
		var followers []int
		for i := range tc.nodes {
			if i != l && tc.stops[i] != nil {
				followers = append(followers, i)
			}
		}
		if len(followers) != len(tc.nodes)-1 {
			t.Fatalf("seed %d: a node is down between faults", h.seed)
		}
		f := followers[e.pick%len(followers)]
		lid, fid := tc.nodes[l].ID(), tc.nodes[f].ID()
		begin := h.now()
		var what string
		switch e.kind {
		case "crash-leader":
			what = "crash leader " + lid
			h.stop(tc, l, true)
			time.Sleep(e.hold)
			linRestart(t, tc, l)
		case "partition-leader":
			what = "partition leader " + lid
			linCut(tc, l, raftnet.Fault{Drop: true})
			time.Sleep(e.hold)
			linHeal(tc)
		case "restart-follower":
			how := "stop"
			if e.crash {
				how = "crash"
			}
			what = how + " and restart follower " + fid
			h.stop(tc, f, e.crash)
			time.Sleep(e.hold / 3)
			linRestart(t, tc, f)
		case "slow-follower":
			what = fmt.Sprintf("slow follower %s by %v", fid, e.delay)
			linCut(tc, f, raftnet.Fault{Delay: e.delay})
			time.Sleep(e.hold)
			linHeal(tc)
		case "isolate-follower":
			what = "isolate follower " + fid
			linCut(tc, f, raftnet.Fault{Drop: true})
			time.Sleep(e.hold)
			linHeal(tc)
		}
		h.annotate(begin, h.now(), what)
	}
}

// stop stops node i; reads may be in flight (Node.verifyLeader makes
// sure none waits forever on a Raft that has shut down).
func (h *linHarness) stop(tc *testCluster, i int, crash bool) {
	tc.stop(i, crash)
}

// linCut applies fault to every link of node i, both ways.
func linCut(tc *testCluster, i int, fault raftnet.Fault) {
	id := tc.nodes[i].ID()
	for j, n := range tc.nodes {
		if j == i {
			n.InjectFault(func(string) raftnet.Fault { return fault })
		} else {
			n.InjectFault(func(peer string) raftnet.Fault {
				if peer == id {
					return fault
				}
				return raftnet.Fault{}
			})
		}
	}
}

func linHeal(tc *testCluster) {
	for _, n := range tc.nodes {
		n.InjectFault(nil)
	}
}

// linLeader waits for a running node that leads; -1 if none does in time.
func linLeader(tc *testCluster, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		for i, n := range tc.nodes {
			if tc.stops[i] != nil && n.IsLeader() {
				return i
			}
		}
		if time.Now().After(deadline) {
			return -1
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// linRestart is tc.restart, retrying New for a while: while a node is down
// a client connection may briefly hold its old port as a local address.
func linRestart(t *testing.T, tc *testCluster, i int) {
	t.Helper()
	tc.stop(i, false)
	c := tc.cfgs[i]
	c.RaftAddr, c.AgentAddr = tc.nodes[i].RaftAddr(), tc.nodes[i].AgentAddr()
	if c.StatusAddr != "" {
		c.StatusAddr = tc.nodes[i].StatusAddr()
	}
	if c.AdminAddr != "" {
		c.AdminAddr = tc.nodes[i].AdminAddr()
	}
	var node *Node
	var err error
	for try := 0; ; try++ {
		if node, err = New(c); err == nil {
			break
		}
		if try == 30 {
			t.Fatalf("restart %s: %v", c.ID, err)
		}
		t.Logf("restart %s: %v; retrying", c.ID, err)
		time.Sleep(100 * time.Millisecond)
	}
	tc.nodes[i] = node
	tc.run(t, i)
}

func (h *linHarness) annotate(begin, end int64, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, porcupine.Annotation{Tag: "faults", Start: begin, End: end, Description: what,
		Details:         fmt.Sprintf("%v – %v", time.Duration(begin).Round(time.Millisecond), time.Duration(end).Round(time.Millisecond)),
		BackgroundColor: "#ffd6d6"})
}

func (h *linHarness) annotations() []porcupine.Annotation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.faults)
}

func (h *linHarness) faultSummary() string {
	var parts []string
	for _, a := range h.annotations() {
		parts = append(parts, fmt.Sprintf("[%s] %s", a.Details, a.Description))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// explain checks each key alone and describes the first keys that are
// not linearizable, with the faults, for a report. For a register written
// once the evidence is short: the operation after which the key had to be
// present, the first create, and every answer that contradicts them.
func (h *linHarness) explain(ops []porcupine.Operation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "faults: %s\n", h.faultSummary())
	line := func(op porcupine.Operation, note string) {
		ret := "∞"
		if op.Return != math.MaxInt64 {
			ret = time.Duration(op.Return).String()
		}
		fmt.Fprintf(&b, "  %-22s client %3d  [%v, %v]  %s  (%v)\n", note, op.ClientId, time.Duration(op.Call), ret,
			linModel.DescribeOperation(op.Input, op.Output), op.Metadata)
	}
	bad := 0
	for _, part := range linModel.Partition(ops) {
		if porcupine.CheckOperations(linModel, part) {
			continue
		}
		if bad++; bad > 3 {
			b.WriteString("(more keys fail; see the visualization)\n")
			break
		}
		slices.SortFunc(part, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		fmt.Fprintf(&b, "key %s is not linearizable (%d operations; times since the start):\n", part[0].Input.(linInput).Key, len(part))
		// known: the earliest return that shows the key; create: the
		// earliest create called; first: the first creation time seen.
		known, create := -1, -1
		for i, op := range part {
			out := op.Output.(linOutput)
			if out.Present && (known < 0 || op.Return < part[known].Return) {
				known = i
			}
			if create < 0 && op.Input.(linInput).Kind == linCreate {
				create = i
			}
		}
		if create >= 0 {
			line(part[create], "first create called")
		}
		if known < 0 {
			continue
		}
		line(part[known], "first to show the key")
		first, shown := part[known].Output.(linOutput).Created, 0
		for i, op := range part {
			out := op.Output.(linOutput)
			var note string
			switch {
			case out.Unknown:
			case create < 0 || out.Present && op.Return < part[create].Call:
				note = "shows it before a create"
			case !out.Present && op.Call > part[known].Return:
				note = "absent after that"
			case out.Present && out.Created != first && i != known:
				note = "another creation time"
			}
			if note == "" {
				continue
			}
			if shown++; shown > 20 {
				b.WriteString("  …\n")
				break
			}
			line(op, note)
		}
		if shown == 0 {
			b.WriteString("  (no single contradicting answer; see the visualization)\n")
		}
	}
	return b.String()
}
