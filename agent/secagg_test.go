package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/dp"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/protocol/secagg"
	"github.com/cohort-fl/cohort/sim/synth"
	"github.com/quic-go/quic-go"
)

// secaggCoordinator speaks the agent protocol over real QUIC with mutual
// TLS and runs one secure aggregation run with a real secagg.Server: it
// offers every site the round once, takes the sites' messages (a resend
// of an accepted message is acknowledged again), advances the server as
// soon as every participant has answered, and holds a fetch until its
// phase opens. Hooks script faults.
type secaggCoordinator struct {
	t     *testing.T
	model []byte
	offer *pb.TaskOffer
	addr  string

	// observe, if set, sees every frame a site sends, before it is handled.
	observe func(site string, env *pb.Envelope)
	// onFetch, if set, may answer a fetch in the server's place by
	// returning an envelope.
	onFetch func(site string, f *pb.SecAggFetch) *pb.Envelope
	// cutAfter, if set, says whether to close the site's connection,
	// without an answer, once its message of kind k is accepted.
	cutAfter func(site string, k secagg.Kind) bool

	mu sync.Mutex
	// srv is the server's side of the run.
	srv *secagg.Server
	// changeC is closed, and replaced, whenever srv changes phase.
	changeC chan struct{}
	offered map[string]bool
	// accepted holds site and digest of every message srv accepted.
	accepted map[string]bool
	// received counts the messages received, by site and kind, resends
	// included.
	received map[string]map[secagg.Kind]int
	uploads  int
	declines int
	// doneC is closed when the run is complete.
	doneC chan struct{}
}

// newSecAggCoordinator makes the coordinator of a run of job "j", round 1,
// attempt 1 among sites, for the zero logistic regression model, with the
// given secure aggregation parameters (Clients and VectorLength are
// filled in), and serves it on loopback until the test ends.
func newSecAggCoordinator(t *testing.T, p *testPKI, sites []string, params *pb.SecAggParams) *secaggCoordinator {
	t.Helper()
	spec := synth.DefaultFeatureSpec()
	nf := len(spec.GetFeatures())
	model := make([]byte, 4*(nf+1))
	params.Attempt, params.Clients, params.VectorLength = 1, sites, uint32(nf+1)
	c := &secaggCoordinator{t: t, model: model, changeC: make(chan struct{}), offered: map[string]bool{},
		accepted: map[string]bool{}, received: map[string]map[secagg.Kind]int{}, doneC: make(chan struct{}),
		offer: &pb.TaskOffer{
			JobId: "j", Round: 1, Kind: pb.TaskKind_TASK_KIND_TRAIN,
			Model:     &pb.BlobRef{Sha256: protocol.Digest(model), Size: uint64(len(model)), Encoding: pb.Encoding_ENCODING_F32LE},
			ModelSpec: &pb.ModelSpec{Kind: "logreg", NumFeatures: uint32(nf), NumParams: uint32(nf + 1)},
			Params:    &pb.TrainParams{LocalEpochs: 2, LearningRate: 0.1, BatchSize: 32, Seed: 1, ValidationFraction: 0.2, MinRecords: 20},
			Features:  spec,
			Secagg:    params,
		}}
	cfg := secagg.Config{Threshold: int(params.GetThreshold()), ClipRange: params.GetClipRange(), Scale: params.GetScale(),
		VectorLength: int(params.GetVectorLength()), Degree: int(params.GetDegree())}
	srv, err := secagg.NewServer(cfg, secagg.Session{JobID: "j", Round: 1, Clients: sites})
	if err != nil {
		t.Fatal(err)
	}
	c.srv = srv

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(pki.ServerTLS(p.pool, p.coordinatorCert(t), protocol.ALPN, pki.RoleSite), &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.addr = udp.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			id, err := pki.PeerIdentity(conn.ConnectionState().TLS)
			if err != nil {
				t.Errorf("peer identity: %v", err)
				conn.CloseWithError(1, "no identity")
				continue
			}
			wg.Go(func() {
				for {
					s, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Go(func() { c.stream(ctx, conn, s, id.ID) })
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		tr.Close()
		udp.Close()
		wg.Wait()
	})
	return c
}

// changed wakes every fetch and task request held; c.mu is held.
func (c *secaggCoordinator) changed() {
	close(c.changeC)
	c.changeC = make(chan struct{})
}

func (c *secaggCoordinator) stream(ctx context.Context, conn *quic.Conn, s *quic.Stream, site string) {
	defer s.Close()
	for {
		env, err := protocol.ReadFrame(s, 0)
		if err != nil {
			return
		}
		if c.observe != nil {
			c.observe(site, env)
		}
		var resp *pb.Envelope
		switch b := env.GetBody().(type) {
		case *pb.Envelope_Hello:
			resp = &pb.Envelope{Body: &pb.Envelope_Welcome{Welcome: &pb.Welcome{ProtocolVersion: protocol.Version, NodeId: "c1", SiteId: site}}}
		case *pb.Envelope_TaskRequest:
			resp = c.task(ctx, site, b.TaskRequest.GetWaitMs())
		case *pb.Envelope_ModelRequest:
			off := min(b.ModelRequest.GetOffset(), uint64(len(c.model)))
			protocol.WriteFrame(s, &pb.Envelope{Body: &pb.Envelope_BlobHeader{BlobHeader: &pb.BlobHeader{Blob: c.offer.GetModel(), Offset: off}}})
			s.Write(c.model[off:])
			return
		case *pb.Envelope_SecaggMessage:
			if resp = c.message(site, b.SecaggMessage); resp == nil {
				conn.CloseWithError(0, "cut")
				return
			}
		case *pb.Envelope_SecaggFetch:
			resp = c.fetch(ctx, site, b.SecaggFetch)
		case *pb.Envelope_RoundStatusRequest:
			resp = &pb.Envelope{Body: &pb.Envelope_RoundStatus{RoundStatus: &pb.RoundStatus{
				JobId: "j", Round: 1, State: pb.RoundState_ROUND_STATE_FAILED}}}
		case *pb.Envelope_UpdateUpload:
			c.mu.Lock()
			c.uploads++
			c.mu.Unlock()
			resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "this round is securely aggregated")
		case *pb.Envelope_Decline:
			c.mu.Lock()
			c.declines++
			c.mu.Unlock()
			resp = &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: "j", Round: 1}}}
		default:
			resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "unexpected %T", b)
		}
		if protocol.WriteFrame(s, resp) != nil {
			return
		}
	}
}

// task offers the round to a site once; later requests are held until the
// run changes or wait passes, then answered NoTask.
func (c *secaggCoordinator) task(ctx context.Context, site string, waitMs uint32) *pb.Envelope {
	c.mu.Lock()
	first := !c.offered[site]
	c.offered[site] = true
	ch := c.changeC
	c.mu.Unlock()
	if first {
		return &pb.Envelope{Body: &pb.Envelope_TaskOffer{TaskOffer: c.offer}}
	}
	hold(ctx, ch, waitMs)
	return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
}

// hold is a long poll: it returns when ch is closed, waitMs pass or ctx
// ends.
func hold(ctx context.Context, ch <-chan struct{}, waitMs uint32) {
	t := time.NewTimer(time.Duration(waitMs) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// message hands a site's message to the server. It returns nil when the
// connection is to be cut instead of answered.
func (c *secaggCoordinator) message(site string, m *pb.SecAggMessage) *pb.Envelope {
	if m.GetJobId() != "j" || m.GetRound() != 1 || m.GetAttempt() != 1 {
		c.t.Errorf("%s sent a message for job %q round %d attempt %d", site, m.GetJobId(), m.GetRound(), m.GetAttempt())
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "no such run")
	}
	msg, err := secagg.Decode(m.GetPayload())
	if err != nil {
		c.t.Errorf("%s sent a message that does not decode: %v", site, err)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "malformed")
	}
	ack := &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: "j", Round: 1}}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.received[site] == nil {
		c.received[site] = map[secagg.Kind]int{}
	}
	c.received[site][msg.Kind()]++
	key := site + " " + protocol.Digest(m.GetPayload())
	if c.accepted[key] {
		return ack // a resend after a lost Ack
	}
	if err := c.srv.Handle(site, msg); err != nil {
		c.t.Errorf("server refused %s's %s: %v", site, msg.Kind(), err)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "refused")
	}
	c.accepted[key] = true
	if c.srv.Ready() {
		if err := c.srv.Advance(); err != nil {
			c.t.Errorf("advance: %v", err)
		}
		c.changed()
		if c.srv.Phase() == secagg.PhaseDone {
			close(c.doneC)
		}
	}
	if c.cutAfter != nil && c.cutAfter(site, msg.Kind()) {
		return nil
	}
	return ack
}

// fetch answers a site's fetch with the message that opens its phase,
// holding it until the phase opens or the wait passes (NoTask); a phase
// the run has passed, or that goes on without the site, is ROUND_CLOSED.
func (c *secaggCoordinator) fetch(ctx context.Context, site string, f *pb.SecAggFetch) *pb.Envelope {
	if c.onFetch != nil {
		if resp := c.onFetch(site, f); resp != nil {
			return resp
		}
	}
	want := secagg.Phase(f.GetPhase())
	t := time.NewTimer(time.Duration(f.GetWaitMs()) * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		var resp *pb.Envelope
		switch ph := c.srv.Phase(); {
		case ph == want && slices.Contains(c.srv.Participants(), site):
			resp = c.opening(site, want)
		case ph >= want:
			resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "the run went on without this site")
		}
		ch := c.changeC
		c.mu.Unlock()
		if resp != nil {
			return resp
		}
		select {
		case <-ch:
		case <-t.C:
			return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
		case <-ctx.Done():
			return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
		}
	}
}

// opening is the server's message that opens phase for site; c.mu is held.
func (c *secaggCoordinator) opening(site string, phase secagg.Phase) *pb.Envelope {
	var (
		m   secagg.Message
		err error
	)
	switch phase {
	case secagg.PhaseShareKeys:
		m, err = c.srv.KeyList()
	case secagg.PhaseMaskedInput:
		m, err = c.srv.RoutedShares(site)
	case secagg.PhaseUnmasking:
		m, err = c.srv.UnmaskRequest()
	default:
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "no such phase")
	}
	if err != nil {
		c.t.Errorf("server's message for phase %s: %v", phase, err)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "server")
	}
	return secaggMessage(m)
}

// secaggMessage wraps m for job "j", round 1, attempt 1.
func secaggMessage(m secagg.Message) *pb.Envelope {
	b, err := m.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return &pb.Envelope{Body: &pb.Envelope_SecaggMessage{SecaggMessage: &pb.SecAggMessage{JobId: "j", Round: 1, Attempt: 1, Payload: b}}}
}

// secaggSite is an agent of a test site, with the updates it trained.
type secaggSite struct {
	*Agent
	logs *lockedBuffer

	mu     sync.Mutex
	deltas [][]float32
}

// newSecAggSite makes an agent for site (enrolled with p, holding the
// i-th synthetic hospital's records) that dials coord and keeps a copy of
// every update it trains.
func newSecAggSite(t *testing.T, p *testPKI, site string, i int, coord string) *secaggSite {
	t.Helper()
	dir := t.TempDir()
	h := synth.DefaultSites(i+1, 5)[i]
	h.Patients = 200
	data := filepath.Join(dir, "fhir")
	if _, err := synth.WriteSite(data, h, synth.DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	ss := &secaggSite{logs: new(lockedBuffer)}
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "agent")
	p.enrolled(t, cfg.DataDir, site, time.Hour, time.Now())
	cfg.Coordinators = []string{coord}
	cfg.FHIRDir = data
	cfg.BackoffMin, cfg.BackoffMax = Duration(50*time.Millisecond), Duration(200*time.Millisecond)
	cfg.PollWait = Duration(time.Second)
	cfg.Logger = newTestLogger(ss.logs)
	// The identity: a copy of the update as trained.
	cfg.Adversary = func(job string, round uint64, d []float32) {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.deltas = append(ss.deltas, slices.Clone(d))
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ss.Agent = a
	return ss
}

// runSites runs the sites' agents until stop is called (at the latest when
// the test ends); stop waits for them and closes them.
func runSites(t *testing.T, sites ...*secaggSite) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range sites {
		wg.Go(func() {
			if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("agent %s: %v", s.SiteID(), err)
			}
		})
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			for _, s := range sites {
				s.Close()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitClosed waits up to 30 s for ch to be closed.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s within 30 s", what)
	}
}

// egressKinds counts the records of the site's egress log by kind, and
// checks that every secure aggregation record names job "j", round 1.
func egressKinds(t *testing.T, s *secaggSite) map[string]int {
	t.Helper()
	f, err := os.Open(filepath.Join(s.cfg.DataDir, egress.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, bad, err := egress.ReadLog(f, egress.Filter{})
	if err != nil || len(bad) > 0 {
		t.Fatalf("egress log of %s: %v, bad lines %v", s.SiteID(), err, bad)
	}
	n := map[string]int{}
	for _, r := range recs {
		n[r.Kind]++
		if r.Kind == egress.KindSecAgg && (r.Job != "j" || r.Round != 1) {
			t.Errorf("%s: secagg egress record for job %q round %d", s.SiteID(), r.Job, r.Round)
		}
	}
	return n
}

// checkSum checks that the run's result is the sum of the sites' trained
// updates, within the fixed-point encoding's error.
func checkSum(t *testing.T, c *secaggCoordinator, sites []*secaggSite) {
	t.Helper()
	c.mu.Lock()
	res, err := c.srv.Result()
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if res.Count != len(sites) {
		t.Fatalf("%d contributors %v, want all %d sites", res.Count, res.Contributors, len(sites))
	}
	want := make([]float64, len(res.Sum))
	moved := 0.0
	for _, s := range sites {
		s.mu.Lock()
		if len(s.deltas) != 1 || len(s.deltas[0]) != len(want) {
			t.Fatalf("%s trained %d updates; want one of %d coordinates", s.SiteID(), len(s.deltas), len(want))
		}
		for i, x := range s.deltas[0] {
			want[i] += float64(x)
			moved = max(moved, math.Abs(float64(x)))
		}
		s.mu.Unlock()
	}
	if moved < 1e-3 {
		t.Fatalf("fixture: the updates are all but zero (largest coordinate %g); the sum would prove nothing", moved)
	}
	scale := c.offer.GetSecagg().GetScale()
	tol := float64(len(sites))*0.5/scale + 1e-9
	for i := range want {
		if d := math.Abs(res.Sum[i] - want[i]); d > tol {
			t.Fatalf("coordinate %d of the sum is off by %g (tolerance %g)", i, d, tol)
		}
	}
}

var secaggSiteIDs = []string{"st-a", "st-b", "st-c"}

// defaultSecAggParams are the tests' parameters: three sites, threshold 2,
// coordinates clipped to [-8, 8] (wide enough that no trained coordinate
// is clipped), resolution 2^-16, no DP.
func defaultSecAggParams() *pb.SecAggParams {
	return &pb.SecAggParams{Threshold: 2, ClipRange: 8, Scale: 1 << 16}
}

// TestSecAggRound: three agents train a securely aggregated round and run
// the protocol with a real server; the server's sum is the sum of their
// updates, and no update was uploaded on its own.
func TestSecAggRound(t *testing.T) {
	p := newTestPKI(t)
	c := newSecAggCoordinator(t, p, secaggSiteIDs, defaultSecAggParams())
	var sites []*secaggSite
	for i, id := range secaggSiteIDs {
		sites = append(sites, newSecAggSite(t, p, id, i, c.addr))
	}
	stop := runSites(t, sites...)
	waitClosed(t, c.doneC, "completed run")
	eventually(t, "every site to see its run through", func() bool {
		for _, s := range sites {
			if s.Stats().SecAggRuns != 1 {
				return false
			}
		}
		return true
	})
	stop()

	checkSum(t, c, sites)
	c.mu.Lock()
	if c.uploads != 0 || c.declines != 0 {
		t.Errorf("%d update uploads and %d declines; want none", c.uploads, c.declines)
	}
	for _, id := range secaggSiteIDs {
		// One of each client message (the odd kinds), none of the server's.
		for k := secagg.KindAdvertiseKeys; k <= secagg.KindUnmaskResponse; k++ {
			if got, want := c.received[id][k], int(k%2); got != want {
				t.Errorf("%s sent %d %s messages, want %d", id, got, k, want)
			}
		}
	}
	c.mu.Unlock()
	for _, s := range sites {
		st := s.Stats()
		if st.RoundsTrained != 1 || st.LastRoundError != "" || st.Reconnects != 0 {
			t.Errorf("%s: %d rounds trained, %d reconnects, last error %q", s.SiteID(), st.RoundsTrained, st.Reconnects, st.LastRoundError)
		}
		if s.secagg != nil {
			t.Errorf("%s still holds its run", s.SiteID())
		}
		n := egressKinds(t, s)
		if n[egress.KindSecAgg] != 4 || n[egress.KindSecAggFetch] < 3 || n[egress.KindUpdateHeader] != 0 || n[egress.KindUpdateBody] != 0 {
			t.Errorf("%s's egress log: %v; want 4 secagg records, at least 3 fetches, no update", s.SiteID(), n)
		}
		if ents, err := os.ReadDir(s.outboxDir()); err != nil || len(ents) != 0 {
			t.Errorf("%s's outbox holds %d entries (%v); a securely aggregated update is never kept", s.SiteID(), len(ents), err)
		}
	}
}

// TestSecAggResumesAfterReconnect: one site's connection is cut after its
// masked input is accepted but before the Ack, another's fetch is
// redirected; both continue their runs in memory on the next session (the
// first sends its masked input again), and the sum holds all three updates.
func TestSecAggResumesAfterReconnect(t *testing.T) {
	p := newTestPKI(t)
	c := newSecAggCoordinator(t, p, secaggSiteIDs, defaultSecAggParams())
	var cut, redirected atomic.Bool
	c.cutAfter = func(site string, k secagg.Kind) bool {
		return site == "st-a" && k == secagg.KindMaskedInput && cut.CompareAndSwap(false, true)
	}
	c.onFetch = func(site string, f *pb.SecAggFetch) *pb.Envelope {
		if site == "st-b" && secagg.Phase(f.GetPhase()) == secagg.PhaseMaskedInput && redirected.CompareAndSwap(false, true) {
			return &pb.Envelope{Body: &pb.Envelope_Redirect{Redirect: &pb.Redirect{LeaderAddr: c.addr, LeaderId: "c1"}}}
		}
		return nil
	}
	var sites []*secaggSite
	for i, id := range secaggSiteIDs {
		sites = append(sites, newSecAggSite(t, p, id, i, c.addr))
	}
	stop := runSites(t, sites...)
	waitClosed(t, c.doneC, "completed run")
	eventually(t, "every site to see its run through", func() bool {
		for _, s := range sites {
			if s.Stats().SecAggRuns != 1 {
				return false
			}
		}
		return true
	})
	stop()

	if !cut.Load() || !redirected.Load() {
		t.Fatalf("fixture: cut %v, redirected %v", cut.Load(), redirected.Load())
	}
	checkSum(t, c, sites)
	c.mu.Lock()
	if n := c.received["st-a"][secagg.KindMaskedInput]; n != 2 {
		t.Errorf("st-a sent its masked input %d times; want twice (once more after the cut)", n)
	}
	if c.uploads != 0 {
		t.Errorf("%d update uploads", c.uploads)
	}
	c.mu.Unlock()
	for _, s := range sites[:2] {
		if st := s.Stats(); st.Reconnects < 1 || st.LastRoundError != "" || st.RoundsTrained != 1 {
			t.Errorf("%s: %d reconnects, %d rounds trained, last error %q; want a reconnect and one round", s.SiteID(), st.Reconnects, st.RoundsTrained, st.LastRoundError)
		}
	}
}

// TestSecAggRoundClosed: the coordinator answers a site's first fetch with
// ROUND_CLOSED (the run went on without it); the site drops the run,
// without recording a failure, and asks for work again.
func TestSecAggRoundClosed(t *testing.T) {
	p := newTestPKI(t)
	// st-ghost never connects: the run never passes AdvertiseKeys.
	c := newSecAggCoordinator(t, p, []string{"st-a", "st-ghost"}, defaultSecAggParams())
	var (
		mu     sync.Mutex
		closed bool
		// after are the frames the site sent after ROUND_CLOSED, up to
		// its first task request.
		after       []string
		askedAgainC = make(chan struct{})
	)
	c.onFetch = func(site string, f *pb.SecAggFetch) *pb.Envelope {
		mu.Lock()
		defer mu.Unlock()
		closed = true
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "the run failed")
	}
	c.observe = func(site string, env *pb.Envelope) {
		mu.Lock()
		defer mu.Unlock()
		if !closed || askedAgainC == nil {
			return
		}
		after = append(after, fmt.Sprintf("%T", env.GetBody()))
		if env.GetTaskRequest() != nil {
			close(askedAgainC)
			askedAgainC = nil
		}
	}
	done := askedAgainC
	s := newSecAggSite(t, p, "st-a", 0, c.addr)
	runUntil(t, s.Agent, done, "task request after ROUND_CLOSED")

	mu.Lock()
	if len(after) != 1 {
		t.Errorf("after ROUND_CLOSED the site sent %v; want a task request at once", after)
	}
	mu.Unlock()

	if s.secagg != nil {
		t.Error("the site still holds the closed run")
	}
	st := s.Stats()
	if st.RoundsTrained != 1 || st.SecAggRuns != 0 || st.LastRoundError != "" {
		t.Errorf("%d rounds trained, %d runs, last error %q; want a trained round, no run, no error", st.RoundsTrained, st.SecAggRuns, st.LastRoundError)
	}
	c.mu.Lock()
	if c.uploads != 0 || c.received["st-a"][secagg.KindAdvertiseKeys] != 1 {
		t.Errorf("%d uploads, %d key advertisements; want none and one", c.uploads, c.received["st-a"][secagg.KindAdvertiseKeys])
	}
	c.mu.Unlock()
	if !strings.Contains(s.logs.String(), "closed a secure aggregation run") {
		t.Error("the dropped run is not logged")
	}
}

// TestSecAggBadCoordinatorMessage: a fetch answered with something that is
// not the phase's message (here the site's own key advertisement echoed
// back) makes the site drop the run as failed, without a panic, and wait
// for the round to change.
func TestSecAggBadCoordinatorMessage(t *testing.T) {
	p := newTestPKI(t)
	c := newSecAggCoordinator(t, p, []string{"st-a", "st-ghost"}, defaultSecAggParams())
	var (
		own      atomic.Pointer[pb.Envelope]
		waitingC = make(chan struct{})
		once     sync.Once
	)
	c.observe = func(site string, env *pb.Envelope) {
		if env.GetSecaggMessage() != nil {
			own.CompareAndSwap(nil, env)
		}
		if env.GetRoundStatusRequest() != nil {
			once.Do(func() { close(waitingC) })
		}
	}
	c.onFetch = func(site string, f *pb.SecAggFetch) *pb.Envelope { return own.Load() }
	s := newSecAggSite(t, p, "st-a", 0, c.addr)
	runUntil(t, s.Agent, waitingC, "round status request after the bad message")

	if s.secagg != nil {
		t.Error("the site still holds the run")
	}
	if st := s.Stats(); !strings.Contains(st.LastRoundError, "secure aggregation run abandoned") || st.SecAggRuns != 0 {
		t.Errorf("last error %q, %d runs; want the abandoned run recorded", st.LastRoundError, st.SecAggRuns)
	}
	if !strings.Contains(s.logs.String(), `msg="secure aggregation run abandoned"`) {
		t.Error("the abandoned run is not logged as such")
	}
}

func TestNewSecAggClientChecksOffer(t *testing.T) {
	a := &Agent{site: "st-a"}
	offer := func(edit func(p *pb.SecAggParams, ms *pb.ModelSpec)) *pb.TaskOffer {
		p := &pb.SecAggParams{Attempt: 1, Threshold: 2, ClipRange: 1, Scale: 1 << 16, VectorLength: 10,
			Clients: []string{"st-a", "st-b", "st-c"}, ClipNorm: 1, NoiseStd: 0.1}
		ms := &pb.ModelSpec{Kind: "logreg", NumFeatures: 9, NumParams: 10}
		if edit != nil {
			edit(p, ms)
		}
		return &pb.TaskOffer{JobId: "j", Round: 1, ModelSpec: ms, Secagg: p}
	}
	cases := []struct {
		name string
		edit func(p *pb.SecAggParams, ms *pb.ModelSpec)
		ok   bool
	}{
		{"good", nil, true},
		{"sparse graph", func(p *pb.SecAggParams, _ *pb.ModelSpec) {
			p.Clients, p.Threshold, p.Degree = []string{"st-a", "st-b", "st-c", "st-d", "st-e"}, 2, 2
		}, true},
		{"threshold 1", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.Threshold = 1 }, false},
		{"threshold above the clients", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.Threshold = 4 }, false},
		{"minority threshold", func(p *pb.SecAggParams, _ *pb.ModelSpec) {
			p.Clients = []string{"st-a", "st-b", "st-c", "st-d", "st-e"}
		}, false},
		{"no clients", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.Clients = nil }, false},
		{"this site not among the clients", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.Clients = []string{"st-b", "st-c", "st-d"} }, false},
		{"repeated client", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.Clients = []string{"st-a", "st-b", "st-b"} }, false},
		{"vector length not the model's", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.VectorLength = 9 }, false},
		{"update too large for a frame", func(p *pb.SecAggParams, ms *pb.ModelSpec) { p.VectorLength, ms.NumParams = 1<<18, 1<<18 }, false},
		{"no scale", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.Scale = 0 }, false},
		{"NaN clip range", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.ClipRange = math.NaN() }, false},
		{"NaN clip norm", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.ClipNorm = math.NaN() }, false},
		{"negative clip norm", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.ClipNorm = -1 }, false},
		{"infinite noise", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.NoiseStd = math.Inf(1) }, false},
		{"negative noise", func(p *pb.SecAggParams, _ *pb.ModelSpec) { p.NoiseStd = -0.1 }, false},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.newSecAggClient(offer(tt.edit))
			switch {
			case tt.ok && (err != nil || c == nil):
				t.Fatalf("refused: %v", err)
			case !tt.ok && !errors.Is(err, ErrSecAggParams):
				t.Fatalf("err = %v, want ErrSecAggParams", err)
			case tt.ok && c.Phase() != secagg.PhaseAdvertiseKeys:
				t.Fatalf("a new client in phase %s", c.Phase())
			}
		})
	}
}

func TestPrivatize(t *testing.T) {
	t.Run("clip", func(t *testing.T) {
		v := []float32{3, 4}
		if clipped, err := privatize(v, 1, 0, nil); err != nil || !clipped {
			t.Fatalf("clipped %v, %v", clipped, err)
		}
		if n := dp.L2Norm(v); n > 1 || n < 0.999 || math.Abs(float64(v[0])/float64(v[1])-0.75) > 1e-6 {
			t.Fatalf("clipped to %v (norm %g); want [0.6 0.8]", v, n)
		}
		w := []float32{0.3, 0.4}
		if clipped, err := privatize(w, 1, 0, nil); err != nil || clipped || w[0] != 0.3 || w[1] != 0.4 {
			t.Fatalf("an update within the norm became %v (%v)", w, err)
		}
	})
	t.Run("noise", func(t *testing.T) {
		const n, std = 100000, 0.5
		v := make([]float32, n)
		if _, err := privatize(v, 0, std, dp.NewGaussian(rand.NewChaCha8([32]byte{1}))); err != nil {
			t.Fatal(err)
		}
		var sum, sq float64
		for _, x := range v {
			sum += float64(x)
			sq += float64(x) * float64(x)
		}
		mean := sum / n
		sd := math.Sqrt(sq/n - mean*mean)
		// Standard errors: 0.5/√n ≈ 0.0016 for the mean, about 0.0011
		// for the standard deviation.
		if math.Abs(mean) > 0.01 || math.Abs(sd-std) > 0.01 {
			t.Fatalf("noise of mean %g and standard deviation %g, want 0 and %g", mean, sd, std)
		}
	})
	t.Run("crypto noise", func(t *testing.T) {
		v := make([]float32, 16)
		if _, err := privatize(v, 0, 1, nil); err != nil {
			t.Fatal(err)
		}
		if slices.Equal(v, make([]float32, 16)) {
			t.Fatal("no noise added")
		}
	})
	t.Run("not finite", func(t *testing.T) {
		for _, x := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
			v := []float32{1, x}
			if _, err := privatize(v, 0, 0, nil); err == nil {
				t.Fatalf("an update holding %v was accepted", x)
			}
		}
	})
}
