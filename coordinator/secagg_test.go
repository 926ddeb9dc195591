package coordinator

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/protocol/secagg"
)

// saSite is one site speaking the secure aggregation protocol over a raw
// connection, with a secagg.Client of its own.
type saSite struct {
	id    string
	a     *rawAgent
	c     *secagg.Client
	offer *pb.TaskOffer
	delta []float32
	files pki.Files
	tc    *testCluster
}

// joinSecAgg connects site to n, takes its offer and builds its client.
func (tc *testCluster) joinSecAgg(t *testing.T, n *Node, site string, delta []float32) *saSite {
	t.Helper()
	files := tc.ca.issue(t, pki.RoleSite, site)
	s := &saSite{id: site, files: files, delta: delta, tc: tc}
	s.reconnect(t, n)
	offer := s.a.task(t, 10*time.Second)
	p := offer.GetSecagg()
	if p == nil {
		t.Fatalf("site %s got %v, want a secure aggregation offer", site, offer)
	}
	c, err := secagg.NewClient(offerConfig(p), secagg.Session{JobID: offer.GetJobId(), Round: offer.GetRound(), Clients: p.GetClients()}, site, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.c, s.offer = c, offer
	return s
}

func offerConfig(p *pb.SecAggParams) secagg.Config {
	return secagg.Config{Threshold: int(p.GetThreshold()), ClipRange: p.GetClipRange(), Scale: p.GetScale(),
		VectorLength: int(p.GetVectorLength()), Degree: int(p.GetDegree())}
}

// reconnect dials n (a new leader) as the site and says hello. As an
// agent does, it follows a redirect or an UNAVAILABLE answer to the ready
// leader until welcomed: with the tests' short Raft timeouts, leadership
// can move again on a loaded machine right after an election. It returns
// the node that welcomed the site.
func (s *saSite) reconnect(t *testing.T, n *Node) *Node {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a, err := dialRaw(t, n.AgentAddr(), s.files)
		if err == nil {
			resp := a.call(t, hello())
			if resp.GetWelcome() != nil {
				s.a = a
				return n
			}
			err = fmt.Errorf("hello answered %v", resp)
		}
		if time.Now().After(deadline) {
			t.Fatalf("site %s not welcomed: %v", s.id, err)
		}
		t.Logf("site %s at %s: %v; trying the ready leader", s.id, n.ID(), err)
		time.Sleep(50 * time.Millisecond)
		n = s.tc.readyLeader(t)
	}
}

// call sends env on the site's connection. A redirect or UNAVAILABLE
// answer (leadership moved) makes the site reconnect to the ready leader
// and send again, as an agent does; that is safe because the run acks a
// message it already took.
func (s *saSite) call(t *testing.T, env *pb.Envelope) *pb.Envelope {
	t.Helper()
	for try := 1; ; try++ {
		resp := s.a.call(t, env)
		if resp.GetRedirect() == nil && resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_UNAVAILABLE || try == 10 {
			return resp
		}
		t.Logf("site %s: answered %v; reconnecting", s.id, resp)
		s.reconnect(t, s.tc.readyLeader(t))
	}
}

// readyLeader waits for a running node that leads and has applied its
// term's barrier.
func (tc *testCluster) readyLeader(t *testing.T) *Node {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for i, n := range tc.nodes {
			if tc.stops[i] != nil && n.isReady() {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no ready leader in 20 s")
	return nil
}

// send returns a function that sends a client step's message and returns
// the answer: s.send(t)(s.c.AdvertiseKeys()).
func (s *saSite) send(t *testing.T) func(secagg.Message, error) *pb.Envelope {
	return func(m secagg.Message, err error) *pb.Envelope { return s.sendMsg(t, m, err) }
}

func (s *saSite) sendMsg(t *testing.T, m secagg.Message, err error) *pb.Envelope {
	t.Helper()
	if err != nil {
		t.Fatalf("site %s: %v", s.id, err)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return s.call(t, &pb.Envelope{Body: &pb.Envelope_SecaggMessage{SecaggMessage: &pb.SecAggMessage{
		JobId: s.offer.GetJobId(), Round: s.offer.GetRound(), Attempt: s.offer.GetSecagg().GetAttempt(), Payload: b}}})
}

// mustSend is send wanting an Ack.
func (s *saSite) mustSend(t *testing.T) func(secagg.Message, error) {
	return func(m secagg.Message, err error) {
		t.Helper()
		if resp := s.sendMsg(t, m, err); resp.GetAck() == nil {
			t.Fatalf("site %s: %T answered %v", s.id, m, resp)
		}
	}
}

// fetch waits for the message opening phase.
func (s *saSite) fetch(t *testing.T, phase secagg.Phase) secagg.Message {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp := s.call(t, &pb.Envelope{Body: &pb.Envelope_SecaggFetch{SecaggFetch: &pb.SecAggFetch{
			JobId: s.offer.GetJobId(), Round: s.offer.GetRound(), Attempt: s.offer.GetSecagg().GetAttempt(),
			Phase: uint32(phase), WaitMs: 2000}}})
		if resp.GetNoTask() != nil {
			continue
		}
		m, err := secagg.Decode(resp.GetSecaggMessage().GetPayload())
		if err != nil {
			t.Fatalf("site %s: fetch %s answered %v (%v)", s.id, phase, resp, err)
		}
		return m
	}
	t.Fatalf("site %s: phase %s never opened", s.id, phase)
	return nil
}

func (s *saSite) advertise(t *testing.T) { s.mustSend(t)(s.c.AdvertiseKeys()) }

func (s *saSite) shareKeys(t *testing.T) {
	s.mustSend(t)(s.c.ShareKeys(s.fetch(t, secagg.PhaseShareKeys).(*secagg.KeyList)))
}

func (s *saSite) maskedInput(t *testing.T) {
	s.mustSend(t)(s.c.MaskedInput(s.fetch(t, secagg.PhaseMaskedInput).(*secagg.RoutedShares), s.delta))
}

func (s *saSite) unmask(t *testing.T) {
	s.mustSend(t)(s.c.Unmask(s.fetch(t, secagg.PhaseUnmasking).(*secagg.UnmaskRequest)))
}

// vectorLog records what the nodes' protocol servers held.
type vectorLog struct {
	mu   sync.Mutex
	seen map[string][][]uint32
}

func (l *vectorLog) observe(label string, v []uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = make(map[string][][]uint32)
	}
	l.seen[label] = append(l.seen[label], slices.Clone(v))
}

// checkNoSingleUpdate fails if any vector a server held is one site's
// encoded update.
func (l *vectorLog) checkNoSingleUpdate(t *testing.T, cfg secagg.Config, sites []*saSite) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) == 0 {
		t.Fatal("the observer saw nothing")
	}
	for _, s := range sites {
		enc, err := cfg.Encode(s.delta)
		if err != nil {
			t.Fatal(err)
		}
		for label, vs := range l.seen {
			for _, v := range vs {
				if slices.Equal(v, enc) {
					t.Fatalf("a coordinator held site %s's unmasked update (%s)", s.id, label)
				}
			}
		}
	}
}

func secAggJob(id string, minSites, threshold int) JobSpec {
	j := testJob(id, 1, minSites)
	j.SecureAggregation = &SecureAggregationSpec{Threshold: threshold, PhaseTimeout: Duration(time.Second)}
	return j
}

func siteDelta(i int) []float32 {
	return []float32{0.1 * float32(i+1), -0.2, 0.05 * float32(i), 0.3 - 0.01*float32(i)}
}

// checkMean waits for round 1 to commit and checks the model is the start
// plus the mean of the contributors' deltas, within quantization.
func checkMean(t *testing.T, n *Node, job string, start []float32, contributors []*saSite, scale float64) {
	t.Helper()
	var j *Job
	waitFor(t, n, "round 1 to commit", func() bool {
		j, _ = n.Job(job)
		return j != nil && j.CommittedRounds() == 1
	})
	var ids []string
	for _, s := range contributors {
		ids = append(ids, s.id)
	}
	slices.Sort(ids)
	if got := j.Rounds[len(j.Rounds)-1].Contributors; !slices.Equal(got, ids) {
		t.Fatalf("contributors %v, want %v", got, ids)
	}
	w := modelWeights(t, n, j.Global.Digest)
	for i := range w {
		var sum float64
		for _, s := range contributors {
			sum += float64(s.delta[i])
		}
		want := float64(start[i]) + sum/float64(len(contributors))
		if math.Abs(float64(w[i])-want) > float64(len(contributors))/scale+1e-6 {
			t.Fatalf("weight %d = %g, want %g (start + mean of %d deltas)", i, w[i], want, len(contributors))
		}
	}
}

func modelWeights(t *testing.T, n *Node, digest string) []float32 {
	t.Helper()
	b, err := n.ModelWeights(t.Context(), digest)
	if err != nil {
		t.Fatal(err)
	}
	w, err := protocol.DecodeF32(b)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestSecureAggregationRound: four sites run the protocol with the leader;
// the committed model is the start plus the mean of their updates, and no
// node's server ever held one site's update.
func TestSecureAggregationRound(t *testing.T) {
	names := []string{"a-site", "b-site", "c-site", "d-site"}
	var obs vectorLog
	tc := startClusterWith(t, 1, names, []JobSpec{secAggJob("sa", 3, 3)}, func(c *Config) { c.SecAggObserver = obs.observe })
	leader, _ := tc.leader(t)
	var sites []*saSite
	for i, name := range names {
		sites = append(sites, tc.joinSecAgg(t, leader, name, siteDelta(i)))
	}
	start := download(t, sites[0].a, sites[0].offer)
	// A site may not send a server's message, nor garbage; both are
	// refused and counted.
	if resp := sites[0].sendMsg(t, &secagg.KeyList{Header: secagg.Header{JobID: "sa", Round: 1}}, nil); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_BAD_REQUEST {
		t.Fatalf("a KeyList from a site answered %v", resp)
	}
	if resp := sites[0].a.call(t, &pb.Envelope{Body: &pb.Envelope_SecaggMessage{SecaggMessage: &pb.SecAggMessage{JobId: "sa", Round: 1, Attempt: 1, Payload: []byte("junk")}}}); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_BAD_REQUEST {
		t.Fatalf("junk answered %v", resp)
	}
	for _, s := range sites {
		s.advertise(t)
	}
	// A retried message is acknowledged again and changes nothing.
	sites[0].mustSend(t)(sites[0].c.AdvertiseKeys())
	for _, s := range sites {
		s.shareKeys(t)
	}
	for _, s := range sites {
		s.maskedInput(t)
	}
	for _, s := range sites {
		s.unmask(t)
	}
	checkMean(t, leader, "sa", start, sites, 65536)
	if got := leader.Stats().SecAggRejected.Load(); got != 2 {
		t.Fatalf("rejected secure aggregation messages = %d, want 2", got)
	}
	cfg := secagg.DefaultConfig()
	cfg.VectorLength = 4
	obs.checkNoSingleUpdate(t, cfg, sites)
	// The round's audit trail names every message by kind.
	actions := auditActions(t, leader)
	for _, want := range []string{"secagg.AdvertiseKeys", "secagg.MaskedInput", "secagg.UnmaskResponse", "secagg.close-phase", "round.commit"} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit log lacks %s: %v", want, actions)
		}
	}
}

// TestSecureAggregationDropouts: with seven sites and t = 4, up to
// n − t = 3 sites leave, at every step of the protocol across the cases:
// before advertising keys, before sharing secrets, before sending the
// masked update, before the unmasking shares. Each round commits the mean
// of the sites whose masked updates arrived.
func TestSecureAggregationDropouts(t *testing.T) {
	names := []string{"a-site", "b-site", "c-site", "d-site", "e-site", "f-site", "g-site"}
	for _, c := range []struct {
		name string
		// drops[i] is the phase in which site i leaves (PhaseDone: it
		// stays to the end).
		drops [7]secagg.Phase
	}{
		{"keys, shares and unmasking", [7]secagg.Phase{4, 4, 4, 4, secagg.PhaseUnmasking, secagg.PhaseShareKeys, secagg.PhaseAdvertiseKeys}},
		{"masked input", [7]secagg.Phase{4, 4, 4, 4, secagg.PhaseMaskedInput, secagg.PhaseMaskedInput, secagg.PhaseMaskedInput}},
	} {
		t.Run(c.name, func(t *testing.T) {
			job := secAggJob("sa", 4, 4)
			job.RoundTimeout = Duration(3 * time.Second) // the key advertisement step's deadline
			tc := startCluster(t, 1, names, []JobSpec{job})
			leader, _ := tc.leader(t)
			var sites []*saSite
			for i, name := range names {
				sites = append(sites, tc.joinSecAgg(t, leader, name, siteDelta(i)))
			}
			start := download(t, sites[0].a, sites[0].offer)
			var contributors []*saSite
			for i, s := range sites {
				if c.drops[i] > secagg.PhaseMaskedInput {
					contributors = append(contributors, s)
				}
			}
			steps := []func(*saSite, *testing.T){(*saSite).advertise, (*saSite).shareKeys, (*saSite).maskedInput, (*saSite).unmask}
			for phase, step := range steps {
				for i, s := range sites {
					if c.drops[i] > secagg.Phase(phase) {
						step(s, t)
					}
				}
			}
			checkMean(t, leader, "sa", start, contributors, 65536)
			// A site the run went on without is told so.
			last := sites[6]
			cl, err := secagg.NewClient(offerConfig(last.offer.GetSecagg()), secagg.Session{JobID: "sa", Round: 1, Clients: names}, last.id, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp := last.send(t)(cl.AdvertiseKeys()); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_ROUND_CLOSED {
				t.Fatalf("a message from a dropped site answered %v", resp)
			}
		})
	}
}

// TestSecureAggregationSurvivesLeaderKill: the leader is killed after half
// the sites sent their masked updates; the others send theirs to the new
// leader, and the run ends in the same sum.
func TestSecureAggregationSurvivesLeaderKill(t *testing.T) {
	names := []string{"a-site", "b-site", "c-site", "d-site"}
	var obs vectorLog
	tc := startClusterWith(t, 3, names, []JobSpec{secAggJob("sa", 3, 3)}, func(c *Config) { c.SecAggObserver = obs.observe })
	leader, _ := tc.leader(t)
	var sites []*saSite
	for i, name := range names {
		sites = append(sites, tc.joinSecAgg(t, leader, name, siteDelta(i)))
	}
	start := download(t, sites[0].a, sites[0].offer)
	for _, s := range sites {
		s.advertise(t)
	}
	for _, s := range sites {
		s.shareKeys(t)
	}
	for _, s := range sites[:2] {
		s.maskedInput(t)
	}
	dead := slices.Index(tc.nodes, leader)
	next := tc.crashLeader(t, dead)
	for _, s := range sites {
		next = s.reconnect(t, next)
	}
	for _, s := range sites[2:] {
		s.maskedInput(t)
	}
	for _, s := range sites {
		s.unmask(t)
	}
	checkMean(t, next, "sa", start, sites, 65536)
	cfg := secagg.DefaultConfig()
	cfg.VectorLength = 4
	obs.checkNoSingleUpdate(t, cfg, sites)
}

func TestSecureAggregationSpecValidation(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*JobSpec)
		want string
	}{
		{"ok", func(*JobSpec) {}, ""},
		{"fedadam", func(j *JobSpec) { j.Strategy = StrategySpec{aggregator.Spec{Name: "fedadam"}} }, ""},
		{"median", func(j *JobSpec) { j.Strategy = StrategySpec{aggregator.Spec{Name: "median"}} }, "mean-based"},
		{"norm bound", func(j *JobSpec) { j.Strategy.NormBound = 1 }, "norm_bound"},
		{"threshold 1", func(j *JobSpec) { j.SecureAggregation.Threshold = 1 }, "at least 2"},
		{"below min_sites", func(j *JobSpec) { j.MinSites = 4 }, "below min_sites"},
		{"odd degree", func(j *JobSpec) { j.SecureAggregation.Degree = 3 }, "even"},
		{"bad clip", func(j *JobSpec) { j.SecureAggregation.ClipRange = math.NaN() }, "clip_range"},
		{"wrapping", func(j *JobSpec) { j.SecureAggregation.ClipRange = 1e6 }, "secure_aggregation"},
		{"private, range too small", func(j *JobSpec) {
			j.Privacy = &PrivacySpec{ClipNorm: 1, NoiseMultiplier: 1, Epsilon: 10}
			j.SecureAggregation.ClipRange = 2
		}, "too small"},
		{"private, default range", func(j *JobSpec) { j.Privacy = &PrivacySpec{ClipNorm: 1, NoiseMultiplier: 1, Epsilon: 10} }, ""},
		{"model too large", func(j *JobSpec) {
			j.Model = ModelSpec{Kind: "mlp", NumFeatures: 3, Hidden: []int{1 << 16, 8}}
		}, "parameters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := secAggJob("sa", 3, 3)
			c.edit(&j)
			err := j.Validate(0)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
		})
	}
}

// TestSecureAggregationStateInSnapshots: a snapshot taken mid-run holds
// the run's server (in the state, not in the job copies readers get), and
// a node that restores it continues the same run; cancelling the job
// drops the run.
func TestSecureAggregationStateInSnapshots(t *testing.T) {
	names := []string{"a-site", "b-site", "c-site"}
	tc := startCluster(t, 1, names, []JobSpec{secAggJob("sa", 2, 2)})
	leader, _ := tc.leader(t)
	var sites []*saSite
	for i, name := range names {
		sites = append(sites, tc.joinSecAgg(t, leader, name, siteDelta(i)))
	}
	for _, s := range sites {
		s.advertise(t)
	}
	sites[0].shareKeys(t)
	snap, err := leader.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*snapshot).write(&buf); err != nil {
		t.Fatal(err)
	}
	restored := newFSM()
	if err := restored.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	var phase secagg.Phase
	var pending []string
	restored.view(func(st *state) {
		r := st.Jobs["sa"].Current
		if r == nil || r.SecAgg == nil {
			t.Fatal("the restored state has no open secure aggregation run")
		}
		phase, pending = r.SecAgg.Phase(), r.SecAgg.Pending()
	})
	if phase != secagg.PhaseShareKeys || !slices.Equal(pending, []string{"b-site", "c-site"}) {
		t.Fatalf("restored run in phase %s waiting for %v", phase, pending)
	}
	// Readers' copies carry the progress, not the server.
	j, _ := leader.Job("sa")
	if j.Current.SecAgg != nil || j.Current.SecAggProgress == nil || j.Current.SecAggProgress.Pending != 2 {
		t.Fatalf("a reader's copy of the round: server %v, progress %+v", j.Current.SecAgg, j.Current.SecAggProgress)
	}
	if code, raw := tc.api(t, "POST", leader.AdminAddr(), "/v1/jobs/sa/cancel", nil, nil); code != 200 {
		t.Fatalf("cancel: %d %s", code, raw)
	}
	leader.fsm.view(func(st *state) {
		if len(st.SecAgg) != 0 {
			t.Fatalf("a cancelled job's run is still in the state: %v", st.SecAgg)
		}
	})
}
