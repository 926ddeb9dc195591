package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/quic-go/quic-go"
)

// testCA is a federation CA in a temp dir.
type testCA struct {
	dir string
	ca  *pki.CA
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := pki.InitCA(dir, name, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{dir: dir, ca: ca}
}

func (c *testCA) issue(t testing.TB, role, id string, hosts ...string) pki.Files {
	t.Helper()
	cert, key, err := c.ca.IssueToFiles(c.dir, pki.IssueRequest{Role: role, ID: id, Hosts: hosts}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pki.Files{CA: filepath.Join(c.dir, "ca.crt"), Cert: cert, Key: key}
}

func testFeatureSpec(n int) FeatureSpec {
	spec := &pb.FeatureSpec{Label: &pb.Label{ConditionCode: "91302008"}}
	for i := range n {
		spec.Features = append(spec.Features, &pb.Feature{Name: fmt.Sprintf("f%d", i),
			Kind: pb.FeatureKind_FEATURE_KIND_OBS_LAST, Loinc: "8867-4", Scale: 1})
	}
	return FeatureSpec{spec}
}

func testJob(id string, rounds, minSites int) JobSpec {
	j := DefaultJobSpec()
	j.ID = id
	j.Rounds = rounds
	j.MinSites = minSites
	j.RoundTimeout = Duration(time.Minute)
	j.Model.NumFeatures = 3
	j.Features = testFeatureSpec(3)
	return j
}

type testCluster struct {
	sites []string
	jobs  []JobSpec
	ca    *testCA
	nodes []*Node
	cfgs  []Config
	// stops[i] stops node i's Run and waits for it; nil when not running.
	stops []func()
	// token is the bootstrap admin token every node is configured with.
	token string
}

// run starts node i's Run in the background.
func (tc *testCluster) run(t testing.TB, i int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	node := tc.nodes[i]
	go func() {
		defer close(done)
		if err := node.Run(ctx); err != nil {
			t.Errorf("node %s: %v", node.ID(), err)
		}
	}()
	tc.stops[i] = func() { cancel(); <-done; node.Close() }
}

// stop stops node i; crash skips the leadership transfer.
func (tc *testCluster) stop(i int, crash bool) {
	if crash {
		tc.nodes[i].Abandon()
	}
	if tc.stops[i] != nil {
		tc.stops[i]()
		tc.stops[i] = nil
	}
}

// restart starts node i again from its data dir, at the same addresses.
func (tc *testCluster) restart(t testing.TB, i int) {
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
	node, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	tc.nodes[i] = node
	tc.run(t, i)
}

// startCluster runs n coordinators on loopback with data on disk.
func startCluster(t testing.TB, n int, sites []string, jobs []JobSpec) *testCluster {
	t.Helper()
	return startClusterWith(t, n, sites, jobs, nil)
}

// startClusterWith is startCluster with a hook to edit each node's config.
func startClusterWith(t testing.TB, n int, sites []string, jobs []JobSpec, edit func(*Config)) *testCluster {
	t.Helper()
	tc := &testCluster{ca: newTestCA(t, "fed"), sites: sites, jobs: jobs}
	tokenFile := tc.bootstrapTokenFile(t)
	var peers []Peer
	for i := range n {
		c := DefaultConfig()
		c.ID = fmt.Sprintf("c%d", i+1)
		c.DataDir = t.TempDir()
		c.RaftAddr = "127.0.0.1:0"
		c.AgentAddr = "127.0.0.1:0"
		c.TLS = tc.ca.issue(t, pki.RoleCoordinator, c.ID, "127.0.0.1")
		c.Sites = sites
		c.Jobs = jobs
		c.HeartbeatTimeout = Duration(200 * time.Millisecond)
		c.ElectionTimeout = Duration(200 * time.Millisecond)
		c.LeaderLeaseTimeout = Duration(100 * time.Millisecond)
		c.TickInterval = Duration(20 * time.Millisecond)
		c.AdminAddr = "127.0.0.1:0"
		c.Auth.BootstrapTokenFile = tokenFile
		if os.Getenv("COHORT_TEST_LOG") != "" {
			c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		if edit != nil {
			edit(&c)
		}
		node, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		tc.nodes = append(tc.nodes, node)
		tc.cfgs = append(tc.cfgs, c)
		peers = append(peers, Peer{ID: c.ID, RaftAddr: node.RaftAddr()})
	}
	tc.stops = make([]func(), n)
	for i, node := range tc.nodes {
		if err := node.Bootstrap(peers); err != nil {
			t.Fatal(err)
		}
		tc.run(t, i)
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for i := range tc.nodes {
			wg.Go(func() { tc.stop(i, true) })
		}
		wg.Wait()
	})
	return tc
}

// waitFor polls cond on every applied entry until it holds or 20 s pass.
func waitFor(t testing.TB, n *Node, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ch := n.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (tc *testCluster) leader(t testing.TB) (leader *Node, followers []*Node) {
	t.Helper()
	waitFor(t, tc.nodes[0], "a leader, its agent address, sites and jobs on every node", func() bool {
		for _, n := range tc.nodes {
			st := n.Status()
			if _, addr := n.Leader(); addr == "" || len(st.Sites) != len(tc.sites) || len(st.Jobs) != len(tc.jobs) {
				return false
			}
			var boot bool
			n.fsm.view(func(s *state) { boot = s.Bootstrapped })
			if !boot {
				return false
			}
		}
		return true
	})
	// A leader answers agents only once it has applied its term's
	// barrier (until then a hello gets UNAVAILABLE): wait for that.
	waitFor(t, tc.nodes[0], "a ready leader", func() bool {
		leader = nil
		for _, n := range tc.nodes {
			if n.isReady() {
				leader = n
			}
		}
		return leader != nil
	})
	for _, n := range tc.nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	return leader, followers
}

// offerFor connects to n as site, says hello and asks for a task (waiting
// up to 10 s); it returns the connection and the offer (nil if none).
func (tc *testCluster) offerFor(t *testing.T, n *Node, site string) (*rawAgent, *pb.TaskOffer) {
	t.Helper()
	a, err := dialRaw(t, n.AgentAddr(), tc.ca.issue(t, pki.RoleSite, site))
	if err != nil {
		t.Fatal(err)
	}
	a.call(t, hello())
	return a, a.call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 10000}}}).GetTaskOffer()
}

// crashLeader crash-stops node dead (the leader) and returns the next
// ready leader among the others.
func (tc *testCluster) crashLeader(t *testing.T, dead int) *Node {
	t.Helper()
	tc.stop(dead, true)
	var next *Node
	waitFor(t, tc.nodes[(dead+1)%len(tc.nodes)], "a new leader", func() bool {
		for i, n := range tc.nodes {
			if i != dead && n.isReady() {
				next = n
				return true
			}
		}
		return false
	})
	return next
}

// rawAgent speaks the wire protocol directly, without the agent package.
type rawAgent struct {
	conn *quic.Conn
	ctrl *quic.Stream
}

func dialRaw(t *testing.T, addr string, files pki.Files) (*rawAgent, error) {
	t.Helper()
	pool, cert, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, pki.ClientTLS(pool, cert, protocol.ALPN, "127.0.0.1", pki.RoleCoordinator), &quic.Config{})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return &rawAgent{conn: conn, ctrl: ctrl}, nil
}

func (r *rawAgent) call(t *testing.T, env *pb.Envelope) *pb.Envelope {
	t.Helper()
	if err := protocol.WriteFrame(r.ctrl, env); err != nil {
		t.Fatal(err)
	}
	resp, err := protocol.ReadFrame(r.ctrl, 0)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return resp
}

// welcomed dials n as site, with a certificate of the cluster's CA, and
// has it welcomed.
func (tc *testCluster) welcomed(t *testing.T, n *Node, site string) *rawAgent {
	t.Helper()
	a, err := dialRaw(t, n.AgentAddr(), tc.ca.issue(t, pki.RoleSite, site))
	if err != nil {
		t.Fatal(err)
	}
	if a.call(t, hello()).GetWelcome() == nil {
		t.Fatalf("site %s not welcomed", site)
	}
	return a
}

// task asks for a task, held up to wait; nil when there is none.
func (r *rawAgent) task(t *testing.T, wait time.Duration) *pb.TaskOffer {
	t.Helper()
	return r.call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: uint32(wait / time.Millisecond)}}}).GetTaskOffer()
}

func hello() *pb.Envelope {
	return &pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{ProtocolVersion: protocol.Version, MinProtocolVersion: protocol.MinVersion}}}
}

func TestFollowerRedirectsAndLeaderRunsRound(t *testing.T) {
	tc := startCluster(t, 3, []string{"st-mary"}, []JobSpec{testJob("j1", 2, 1)})
	leader, followers := tc.leader(t)
	site := tc.ca.issue(t, pki.RoleSite, "st-mary")

	// A follower answers hello with the leader's address.
	fa, err := dialRaw(t, followers[0].AgentAddr(), site)
	if err != nil {
		t.Fatal(err)
	}
	red := fa.call(t, hello()).GetRedirect()
	if red == nil || red.GetLeaderAddr() != leader.AgentAddr() {
		t.Fatalf("follower answered %v, want a redirect to %s", red, leader.AgentAddr())
	}

	// A follower (a leader that has just lost its leadership) redirects
	// an upload from a site that said hello to it, and stops reading the
	// stream there: the upload's body follows its header and must not be
	// read as the next frame.
	ac := &agentConn{site: "st-mary"}
	ac.hello.Store(true)
	resp, done := followers[0].dispatch(context.Background(), ac, nil,
		&pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: &pb.UpdateUpload{JobId: "j1", Round: 1}}})
	if resp.GetRedirect() == nil || !done {
		t.Fatalf("a follower answered an upload with %v (stream done %v), want a redirect that ends the stream", resp, done)
	}
	if _, done := followers[0].dispatch(context.Background(), ac, nil,
		&pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{}}}); done {
		t.Fatal("a follower ended a request stream after its redirect")
	}

	a, err := dialRaw(t, leader.AgentAddr(), site)
	if err != nil {
		t.Fatal(err)
	}
	if w := a.call(t, hello()).GetWelcome(); w.GetSiteId() != "st-mary" {
		t.Fatalf("welcome names site %q", w.GetSiteId())
	}
	offer := a.call(t, &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 10000}}}).GetTaskOffer()
	if offer.GetJobId() != "j1" || offer.GetRound() != 1 || offer.GetModelSpec().GetNumParams() != 4 {
		t.Fatalf("offer = %v", offer)
	}
	global := download(t, a, offer)
	delta := []float32{1, 2, 3, 4}
	if resp := upload(t, a, offer, delta, 10); resp.GetAck() == nil {
		t.Fatalf("upload answered %v", resp)
	}
	waitFor(t, leader, "round 1 committed", func() bool {
		j, _ := leader.Job("j1")
		return j.CommittedRounds() >= 1
	})
	j, _ := leader.Job("j1")
	wb, err := leader.ModelWeights(context.Background(), j.Models[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	w, err := protocol.DecodeF32(wb)
	if err != nil {
		t.Fatal(err)
	}
	for i := range w {
		if w[i] != global[i]+delta[i] {
			t.Fatalf("global after round 1 = %v, want %v + %v", w, global, delta)
		}
	}
	// Every node applied the same model.
	for _, n := range followers {
		waitFor(t, n, "follower has round 1", func() bool {
			fj, ok := n.Job("j1")
			return ok && fj.CommittedRounds() >= 1 && fj.Models[1].Digest == j.Models[1].Digest
		})
	}
	st := a.call(t, &pb.Envelope{Body: &pb.Envelope_RoundStatusRequest{RoundStatusRequest: &pb.RoundStatusRequest{JobId: "j1", Round: 1}}}).GetRoundStatus()
	if st.GetState() != pb.RoundState_ROUND_STATE_COMMITTED || !st.GetHaveUpdate() {
		t.Fatalf("round status = %v", st)
	}
}

func download(t *testing.T, a *rawAgent, offer *pb.TaskOffer) []float32 {
	t.Helper()
	s, err := a.conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteFrame(s, &pb.Envelope{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{
		JobId: offer.GetJobId(), Sha256: offer.GetModel().GetSha256()}}}); err != nil {
		t.Fatal(err)
	}
	hdr, err := protocol.ReadFrame(s, 0)
	if err != nil || hdr.GetBlobHeader() == nil {
		t.Fatalf("model header: %v %v", hdr, err)
	}
	body := make([]byte, hdr.GetBlobHeader().GetBlob().GetSize())
	if _, err := io.ReadFull(s, body); err != nil {
		t.Fatal(err)
	}
	if protocol.Digest(body) != offer.GetModel().GetSha256() {
		t.Fatal("model digest mismatch")
	}
	w, err := protocol.DecodeF32(body)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func upload(t *testing.T, a *rawAgent, offer *pb.TaskOffer, delta []float32, n uint64) *pb.Envelope {
	t.Helper()
	return uploadRaw(t, a, uploadHeader(offer, delta, n), protocol.EncodeF32(delta))
}

// uploadHeader is the header of an upload of delta for offer.
func uploadHeader(offer *pb.TaskOffer, delta []float32, n uint64) *pb.UpdateUpload {
	body := protocol.EncodeF32(delta)
	return &pb.UpdateUpload{JobId: offer.GetJobId(), Round: offer.GetRound(),
		BaseModelSha256: offer.GetModel().GetSha256(), SampleCount: n, Metrics: &pb.LocalMetrics{},
		Delta: &pb.BlobRef{Sha256: protocol.Digest(body), Size: uint64(len(body)), Encoding: pb.Encoding_ENCODING_F32LE}}
}

func encodeF32(v []float32) []byte { return protocol.EncodeF32(v) }

func uploadRaw(t *testing.T, a *rawAgent, hdr *pb.UpdateUpload, body []byte) *pb.Envelope {
	t.Helper()
	s, err := a.conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.WriteFrame(s, &pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: hdr}}); err != nil {
		t.Fatal(err)
	}
	s.Write(body)
	s.Close()
	resp, err := protocol.ReadFrame(s, 0)
	if err != nil {
		t.Fatalf("upload answer: %v", err)
	}
	return resp
}

func TestBadUpdatesAreRefusedAndCounted(t *testing.T) {
	tc := startCluster(t, 1, []string{"st-mary"}, []JobSpec{testJob("j1", 1, 1)})
	leader, _ := tc.leader(t)
	a, offer := tc.offerFor(t, leader, "st-mary")
	good := protocol.EncodeF32([]float32{1, 2, 3, 4})
	nan := protocol.EncodeF32([]float32{1, 2, 3, 4})
	nan[0], nan[1], nan[2], nan[3] = 0, 0, 0xc0, 0x7f // NaN
	base := func() *pb.UpdateUpload {
		return &pb.UpdateUpload{JobId: "j1", Round: offer.GetRound(), BaseModelSha256: offer.GetModel().GetSha256(), SampleCount: 5,
			Delta: &pb.BlobRef{Sha256: protocol.Digest(good), Size: uint64(len(good)), Encoding: pb.Encoding_ENCODING_F32LE}}
	}
	cases := []struct {
		name string
		edit func(*pb.UpdateUpload) []byte
		code pb.ErrorCode
	}{
		{"wrong size", func(u *pb.UpdateUpload) []byte {
			b := protocol.EncodeF32([]float32{1, 2})
			u.Delta.Size, u.Delta.Sha256 = uint64(len(b)), protocol.Digest(b)
			return b
		}, pb.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"digest mismatch", func(u *pb.UpdateUpload) []byte {
			u.Delta.Sha256 = protocol.Digest([]byte("other"))
			return good
		}, pb.ErrorCode_ERROR_CODE_DIGEST_MISMATCH},
		{"not finite", func(u *pb.UpdateUpload) []byte {
			u.Delta.Sha256 = protocol.Digest(nan)
			return nan
		}, pb.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"zero samples", func(u *pb.UpdateUpload) []byte { u.SampleCount = 0; return good }, pb.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"samples above the maximum", func(u *pb.UpdateUpload) []byte { u.SampleCount = DefaultMaxUpdateSamples + 1; return good }, pb.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"closed round", func(u *pb.UpdateUpload) []byte { u.Round = 7; return good }, pb.ErrorCode_ERROR_CODE_ROUND_CLOSED},
		{"stale base", func(u *pb.UpdateUpload) []byte { u.BaseModelSha256 = protocol.Digest(nil); return good }, pb.ErrorCode_ERROR_CODE_ROUND_CLOSED},
		{"unknown encoding", func(u *pb.UpdateUpload) []byte { u.Delta.Encoding = 0; return good }, pb.ErrorCode_ERROR_CODE_BAD_REQUEST},
	}
	for i, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			u := base()
			body := tt.edit(u)
			resp := uploadRaw(t, a, u, body)
			var re *protocol.RemoteError
			if err := protocol.AsError(resp); !errors.As(err, &re) || re.Code != tt.code {
				t.Fatalf("answer %v, want error %s", resp, tt.code)
			}
			if got := leader.Stats().UpdatesRejected.Load(); got != int64(i+1) {
				t.Fatalf("updates_rejected = %d, want %d", got, i+1)
			}
		})
	}
	j, _ := leader.Job("j1")
	if len(j.Current.Receipts) != 0 {
		t.Fatalf("a refused update left a receipt: %v", j.Current.Receipts)
	}
	// Every refusal is an audit leaf of the site's, written in a batch.
	waitFor(t, leader, "the refusals in the audit log", func() bool {
		n := 0
		for _, raw := range auditLeaves(t, leader, leader.audit.log.Size()) {
			var e AuditEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			round := offer.GetRound()
			if strings.HasSuffix(e.Target, " round 7") {
				round = 7 // the closed round's case
			}
			if e.Kind == "site" && e.Actor == "st-mary" && e.Action == "update.reject" && e.Outcome == "denied" && e.Target == fmt.Sprintf("job j1 round %d", round) {
				n++
			}
		}
		return n == len(cases)
	})
	// The body that was not finite is not kept.
	if leader.blob.has(protocol.Digest(nan)) {
		t.Fatal("the refused body that was not finite is still in the blob store")
	}
}

// TestUpdatesAboveTheNormBoundAreCounted: an update above its job's norm
// bound is accepted (the rule clips it) and counted.
func TestUpdatesAboveTheNormBoundAreCounted(t *testing.T) {
	job := testJob("j1", 1, 2)
	job.Strategy.NormBound = 1
	tc := startCluster(t, 1, []string{"st-mary", "st-luke"}, []JobSpec{job})
	leader, _ := tc.leader(t)
	a, offer := tc.offerFor(t, leader, "st-mary")
	if resp := upload(t, a, offer, []float32{0.1, 0.1, 0.1, 0.1}, 10); resp.GetAck() == nil {
		t.Fatalf("an update within the bound: %v", resp)
	}
	b, offer := tc.offerFor(t, leader, "st-luke")
	if resp := upload(t, b, offer, []float32{1e30, 0, 0, 0}, 10); resp.GetAck() == nil {
		t.Fatalf("an update above the bound: %v", resp)
	}
	if got := leader.Stats().UpdatesClipped.Load(); got != 1 {
		t.Fatalf("updates_clipped = %d, want 1", got)
	}
}

// TestWrongALPNIsRefusedAndCounted: a client offering another application
// protocol is refused in the handshake, and the refusal is counted.
func TestWrongALPNIsRefusedAndCounted(t *testing.T) {
	tc := startCluster(t, 1, []string{"st-mary"}, nil)
	leader, _ := tc.leader(t)
	pool, cert, err := tc.ca.issue(t, pki.RoleSite, "st-mary").Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conf := pki.ClientTLS(pool, cert, "h3", "127.0.0.1", pki.RoleCoordinator)
	if conn, err := quic.DialAddr(ctx, leader.AgentAddr(), conf, &quic.Config{}); err == nil {
		conn.CloseWithError(0, "")
		t.Fatal("a client asking for h3 was accepted")
	}
	if got := leader.Stats().HandshakesRefused.Load(); got != 1 {
		t.Fatalf("handshakes_refused = %d, want 1", got)
	}
}

// TestSilentConnectionIsClosed: a connection that completes the handshake
// but says no hello is closed after hello_timeout, even while its
// keep-alives hold the idle timeout off, and counted; the open-connection
// gauge follows it.
func TestSilentConnectionIsClosed(t *testing.T) {
	tc := startClusterWith(t, 1, []string{"st-mary"}, nil, func(c *Config) { c.HelloTimeout = Duration(300 * time.Millisecond) })
	leader, _ := tc.leader(t)
	files := tc.ca.issue(t, pki.RoleSite, "st-mary")
	pool, cert, err := files.Load()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, leader.AgentAddr(), pki.ClientTLS(pool, cert, protocol.ALPN, "127.0.0.1", pki.RoleCoordinator),
		&quic.Config{KeepAlivePeriod: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	waitFor(t, leader, "the connection to be counted", func() bool { return leader.agentConns.Load() == 1 })
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the silent connection was not closed")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || ae.ErrorCode != closeBadProtocol {
		t.Fatalf("closed with %v, want code %#x", err, uint64(closeBadProtocol))
	}
	waitFor(t, leader, "the connection to be gone", func() bool { return leader.agentConns.Load() == 0 })
	if got := leader.Stats().HelloTimeouts.Load(); got != 1 {
		t.Fatalf("hello_timeouts = %d, want 1", got)
	}
	// A site that says hello stays.
	a, err := dialRaw(t, leader.AgentAddr(), files)
	if err != nil {
		t.Fatal(err)
	}
	if a.call(t, hello()).GetWelcome() == nil {
		t.Fatal("hello not welcomed")
	}
	select {
	case <-a.conn.Context().Done():
		t.Fatal("a connection that said hello was closed")
	case <-time.After(600 * time.Millisecond): // twice the hello timeout
	}
}

func TestUnknownSiteIsRefused(t *testing.T) {
	tc := startCluster(t, 1, []string{"st-mary"}, nil)
	leader, _ := tc.leader(t)
	a, err := dialRaw(t, leader.AgentAddr(), tc.ca.issue(t, pki.RoleSite, "mallory-general"))
	if err != nil {
		t.Fatal(err)
	}
	resp := a.call(t, hello())
	var re *protocol.RemoteError
	if err := protocol.AsError(resp); !errors.As(err, &re) || re.Code != pb.ErrorCode_ERROR_CODE_UNKNOWN_SITE {
		t.Fatalf("hello answered %v, want UNKNOWN_SITE", resp)
	}
	if got := leader.Stats().UnknownSites.Load(); got != 1 {
		t.Fatalf("unknown_sites = %d, want 1", got)
	}
}

func TestCertificateFromAnotherCAIsRefused(t *testing.T) {
	tc := startCluster(t, 1, []string{"st-mary"}, nil)
	leader, _ := tc.leader(t)
	rogue := newTestCA(t, "rogue")
	// A site certificate from another CA, with the federation CA as trust
	// root so that the agent side would accept the coordinator.
	files := rogue.issue(t, pki.RoleSite, "st-mary")
	files.CA = filepath.Join(tc.ca.dir, "ca.crt")
	// In TLS 1.3 the client's handshake completes before the server has
	// checked the client certificate, so the refusal shows on first use.
	if a, err := dialRaw(t, leader.AgentAddr(), files); err == nil {
		if err := protocol.WriteFrame(a.ctrl, hello()); err == nil {
			if _, err := protocol.ReadFrame(a.ctrl, 0); err == nil {
				t.Fatal("a certificate from another CA was accepted")
			} else {
				t.Logf("agent side sees: %v", err)
			}
		}
	}
	waitFor(t, leader, "the refusal to be counted", func() bool { return leader.Stats().HandshakesRefused.Load() >= 1 })

	// The agent side refuses a coordinator whose certificate is from
	// another CA.
	site := tc.ca.issue(t, pki.RoleSite, "st-mary")
	site.CA = filepath.Join(rogue.dir, "ca.crt")
	if _, err := dialRaw(t, leader.AgentAddr(), site); err == nil {
		t.Fatal("the agent accepted a coordinator certificate from another CA")
	}
}

func TestMalformedFramesGetAnError(t *testing.T) {
	tc := startCluster(t, 1, []string{"st-mary"}, nil)
	leader, _ := tc.leader(t)
	a, err := dialRaw(t, leader.AgentAddr(), tc.ca.issue(t, pki.RoleSite, "st-mary"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"garbage body":     {0, 0, 0, 3, 0xff, 0xff, 0xff},
		"oversized length": {0x7f, 0xff, 0xff, 0xff},
		"empty envelope":   {0, 0, 0, 0},
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := a.conn.OpenStreamSync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			s.Write(raw)
			resp, err := protocol.ReadFrame(s, 0)
			if err != nil {
				t.Fatalf("no error frame: %v", err)
			}
			var re *protocol.RemoteError
			if err := protocol.AsError(resp); !errors.As(err, &re) || re.Code != pb.ErrorCode_ERROR_CODE_BAD_REQUEST {
				t.Fatalf("answer %v, want BAD_REQUEST", resp)
			}
		})
	}
	if got := leader.Stats().FramesRejected.Load(); got != int64(len(cases)) {
		t.Fatalf("frames_rejected = %d, want %d", got, len(cases))
	}
	// The connection still works.
	if w := a.call(t, hello()).GetWelcome(); w == nil {
		t.Fatal("hello after bad frames was not welcomed")
	}
}

// Start-up failures are errors, never panics, and leave nothing open.
func TestNewReportsStartupErrors(t *testing.T) {
	ca := newTestCA(t, "fed")
	base := func(id string) Config {
		c := DefaultConfig()
		c.ID = id
		c.DataDir = t.TempDir()
		c.RaftAddr = "127.0.0.1:0"
		c.AgentAddr = "127.0.0.1:0"
		c.TLS = ca.issue(t, pki.RoleCoordinator, id, "127.0.0.1")
		return c
	}
	first, err := New(base("c1"))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	cases := map[string]func(c *Config){
		"raft port in use":  func(c *Config) { c.RaftAddr = first.RaftAddr() },
		"data dir in use":   func(c *Config) { c.DataDir = first.cfg.DataDir },
		"missing key file":  func(c *Config) { c.TLS.Key = filepath.Join(t.TempDir(), "none.key") },
		"status port taken": func(c *Config) { c.StatusAddr = first.RaftAddr() },
	}
	i := 0
	for name, edit := range cases {
		i++
		t.Run(name, func(t *testing.T) {
			c := base(fmt.Sprintf("c%d", i+1))
			edit(&c)
			n, err := New(c)
			if err == nil {
				n.Close()
				t.Fatal("New succeeded")
			}
			t.Logf("%v", err)
		})
	}
}

func TestStatisticsRoundCommitsFederatedNormalization(t *testing.T) {
	job := testJob("norm", 1, 2)
	job.Features.Normalization = pb.Normalization_NORMALIZATION_FEDERATED
	for _, f := range job.Features.GetFeatures() {
		f.Scale = 0 // computed by the statistics round
	}
	job.Train.MinRecords = 10
	tc := startClusterWith(t, 1, []string{"a", "b", "c"}, []JobSpec{job}, func(c *Config) { c.MinCohort = 10 })
	leader, _ := tc.leader(t)
	dial := func(site string) *rawAgent { return tc.welcomed(t, leader, site) }
	task := func(ra *rawAgent) *pb.TaskOffer { return ra.task(t, 10*time.Second) }
	stats := func(ra *rawAgent, cohort uint64, fs ...*pb.FeatureStats) *pb.Envelope {
		return ra.call(t, &pb.Envelope{Body: &pb.Envelope_StatsUpload{StatsUpload: &pb.StatsUpload{
			JobId: "norm", CohortSize: cohort, Stats: fs}}})
	}
	a, b, c := dial("a"), dial("b"), dial("c")
	if o := task(a); o.GetKind() != pb.TaskKind_TASK_KIND_STATS || o.GetRound() != 0 || o.GetModel() != nil {
		t.Fatalf("first offer = %v, want a statistics task", o)
	}
	// Feature values: site a has 10 patients with value 1, site b 30 with value 3.
	f := func(n uint64, v float64) *pb.FeatureStats {
		return &pb.FeatureStats{Count: n, Sum: float64(n) * v, SumSq: float64(n) * v * v}
	}
	if e := protocol.AsError(stats(a, 5, f(5, 1), f(5, 1), f(5, 1))); e == nil {
		t.Fatal("a cohort below min_records was accepted")
	}
	if e := protocol.AsError(stats(a, 10, f(10, 1))); e == nil {
		t.Fatal("statistics for the wrong number of features were accepted")
	}
	if ack := stats(a, 10, f(10, 1), f(10, 1), &pb.FeatureStats{}).GetAck(); ack == nil {
		t.Fatal("statistics not acknowledged")
	}
	task(b)
	if ack := stats(b, 30, f(30, 3), f(30, 3), &pb.FeatureStats{}).GetAck(); ack == nil {
		t.Fatal("statistics not acknowledged")
	}
	task(c)
	if ack := c.call(t, &pb.Envelope{Body: &pb.Envelope_Decline{Decline: &pb.Decline{JobId: "norm",
		Reason: pb.DeclineReason_DECLINE_REASON_TOO_FEW_RECORDS}}}).GetAck(); ack == nil {
		t.Fatal("decline not acknowledged")
	}
	waitFor(t, leader, "normalization committed", func() bool {
		j, _ := leader.Job("norm")
		return j.Norm != nil
	})
	j, _ := leader.Job("norm")
	// Pooled: 40 values, mean (10*1 + 30*3)/40 = 2.5, variance 10.5/40... = 0.75.
	if math.Abs(j.Norm.Mean[0]-2.5) > 1e-12 || math.Abs(j.Norm.Std[0]-math.Sqrt(0.75)) > 1e-12 {
		t.Fatalf("norm = %+v", j.Norm)
	}
	if j.Norm.Mean[2] != 0 || j.Norm.Std[2] != 1 || len(j.Norm.Sites) != 2 || j.Norm.Cohort != 40 {
		t.Fatalf("norm = %+v", j.Norm)
	}
	o := task(a)
	if o.GetKind() != pb.TaskKind_TASK_KIND_TRAIN || o.GetRound() != 1 {
		t.Fatalf("offer after statistics = %v", o)
	}
	if got := o.GetFeatures().GetFeatures()[0]; got.GetCenter() != 2.5 || got.GetScale() != math.Sqrt(0.75) {
		t.Fatalf("training offer carries center %v scale %v", got.GetCenter(), got.GetScale())
	}
}

// Status reads are linearizable by default: a follower sends the reader to
// the leader, which confirms its leadership first; ?stale=true reads the
// follower's own state.
func TestStatusReadsAreLinearizable(t *testing.T) {
	tc := startClusterWith(t, 3, []string{"a"}, nil, func(c *Config) { c.StatusAddr = "127.0.0.1:0" })
	leader, followers := tc.leader(t)
	waitFor(t, followers[0], "the leader's status address", func() bool {
		var ok bool
		followers[0].fsm.view(func(st *state) { ok = st.Nodes[leader.ID()].StatusAddr != "" })
		return ok
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get("http://" + followers[0].StatusAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "http://"+leader.StatusAddr()+"/v1/status" {
		t.Fatalf("follower answered %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, url := range []string{
		"http://" + followers[0].StatusAddr() + "/v1/status",            // followed to the leader
		"http://" + followers[0].StatusAddr() + "/v1/status?stale=true", // the follower's own view
	} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var st Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %v", url, resp.StatusCode, err)
		}
		if strings.Contains(url, "stale") == st.IsLeader {
			t.Fatalf("%s answered by node %s (leader %v)", url, st.Node, st.IsLeader)
		}
	}
}

// TestAggregateOverflowFailsTheAttempt: without a norm bound a site may
// send finite updates so large that the new model overflows float32. The
// round attempt then fails with the reason (the job fails after its
// attempts), instead of the engine retrying the aggregation for ever.
func TestAggregateOverflowFailsTheAttempt(t *testing.T) {
	job := testJob("j1", 2, 1)
	job.MaxAttempts = 1
	tc := startCluster(t, 1, []string{"st-mary"}, []JobSpec{job})
	leader, _ := tc.leader(t)
	huge := []float32{3e38, 3e38, 3e38, 3e38}
	a, offer := tc.offerFor(t, leader, "st-mary")
	for round := uint64(1); round <= 2; round++ {
		if round > 1 {
			offer = a.task(t, 5*time.Second)
		}
		if offer.GetRound() != round {
			t.Fatalf("offered round %d, want %d", offer.GetRound(), round)
		}
		if resp := upload(t, a, offer, huge, 1); resp.GetAck() == nil {
			t.Fatalf("round %d: %v", round, resp)
		}
		if round == 1 {
			waitFor(t, leader, "round 1 to commit", func() bool {
				j, _ := leader.Job("j1")
				return j.CommittedRounds() == 1
			})
		}
	}
	waitFor(t, leader, "the job to fail", func() bool {
		j, _ := leader.Job("j1")
		return j.State == JobFailed
	})
	j, _ := leader.Job("j1")
	if !strings.Contains(j.FailReason, "not finite") || leader.Stats().RoundsFailed.Load() != 1 {
		t.Fatalf("job failed with %q after %d failed rounds", j.FailReason, leader.Stats().RoundsFailed.Load())
	}
}
