package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/dp"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/quic-go/quic-go"
)

const (
	// maxStreamsPerAgent bounds concurrent streams one agent may open.
	maxStreamsPerAgent = 16
	// streamIdle is how long a stream may sit silent between frames.
	streamIdle = 60 * time.Second
	// blobTimeout bounds one blob transfer.
	blobTimeout = 5 * time.Minute
)

// QUIC application error codes on connection close.
const (
	closeNormal      quic.ApplicationErrorCode = 0
	closeUnknownSite quic.ApplicationErrorCode = 0x101
	closeBadProtocol quic.ApplicationErrorCode = 0x102
	closeRevoked     quic.ApplicationErrorCode = 0x103
)

// siteConns are the open connections of one site, so that revoking it
// closes them at once.
type siteConns struct {
	mu    sync.Mutex
	conns map[*agentConn]struct{}
}

func (n *Node) trackConn(ac *agentConn) (untrack func()) {
	v, _ := n.conns.LoadOrStore(ac.site, &siteConns{conns: make(map[*agentConn]struct{})})
	sc := v.(*siteConns)
	sc.mu.Lock()
	sc.conns[ac] = struct{}{}
	sc.mu.Unlock()
	return func() {
		sc.mu.Lock()
		delete(sc.conns, ac)
		sc.mu.Unlock()
	}
}

// closeSite closes every connection of a revoked site on this node.
func (n *Node) closeSite(site string) {
	v, ok := n.conns.Load(site)
	if !ok {
		return
	}
	sc := v.(*siteConns)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for ac := range sc.conns {
		ac.conn.CloseWithError(closeRevoked, "site revoked")
	}
	if len(sc.conns) > 0 {
		n.log.Warn("closed the connections of a revoked site", "site", site, "connections", len(sc.conns))
	}
}

// siteRevoked reports whether the site was revoked.
func (n *Node) siteRevoked(site string) bool {
	var revoked bool
	n.fsm.view(func(st *state) {
		if s, ok := st.Sites[site]; ok {
			revoked = !s.Revoked.IsZero()
		}
	})
	return revoked
}

func verifyChain(pool *x509.CertPool, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("agent presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("agent certificate is not from this federation's CA: %w", err)
	}
	return nil
}

func (n *Node) serveAgents(ctx context.Context) error {
	for {
		conn, err := n.quicLn.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("accept agent: %w", err)
		}
		n.connWG.Go(func() { n.handleConn(ctx, conn) })
	}
}

// agentConn is one agent's connection.
type agentConn struct {
	conn  *quic.Conn
	site  string
	hello atomic.Bool
	// refused is set once the site is refused; the connection is closed
	// after the error frame is delivered. revoked says why.
	refused atomic.Bool
	revoked atomic.Bool
}

// closeRefused gives the agent time to read the refusal and hang up itself,
// then closes the connection.
func (ac *agentConn) closeRefused() {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-ac.conn.Context().Done():
	case <-t.C:
	}
	if ac.revoked.Load() {
		ac.conn.CloseWithError(closeRevoked, "site revoked")
		return
	}
	ac.conn.CloseWithError(closeUnknownSite, "site is not enrolled")
}

func (n *Node) handleConn(ctx context.Context, conn *quic.Conn) {
	id, err := pki.PeerIdentity(conn.ConnectionState().TLS)
	if err != nil || id.Role != pki.RoleSite {
		n.stats.HandshakesRefused.Add(1)
		n.log.Warn("refused agent connection: no site identity", "err", err)
		conn.CloseWithError(closeBadProtocol, "no site identity in certificate")
		return
	}
	ac := &agentConn{conn: conn, site: id.ID}
	if n.siteRevoked(ac.site) {
		n.stats.SitesRevokedRefused.Add(1)
		n.log.Warn("refused a revoked site", "site", ac.site)
		conn.CloseWithError(closeRevoked, "site revoked")
		return
	}
	defer n.trackConn(ac)()
	n.agentConns.Add(1)
	defer n.agentConns.Add(-1)
	// Agents say hello at once; keep-alives alone would hold a silent
	// connection (and this goroutine) open for ever.
	wait := n.cfg.helloTimeout()
	silent := time.AfterFunc(wait, func() {
		if !ac.hello.Load() && !ac.refused.Load() {
			n.stats.HelloTimeouts.Add(1)
			n.log.Warn("closed an agent connection with no hello", "site", ac.site, "after", wait)
			conn.CloseWithError(closeBadProtocol, "no hello in "+wait.String())
		}
	})
	defer silent.Stop()
	// On shutdown, tell the agent at once rather than leaving it to its
	// idle timeout, so it moves to another coordinator.
	defer conn.CloseWithError(closeNormal, "coordinator shutting down")
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		n.connWG.Go(func() { n.handleStream(ctx, ac, s) })
	}
}

// handleStream answers the frames of one stream until the agent closes it.
func (n *Node) handleStream(ctx context.Context, ac *agentConn, s *quic.Stream) {
	defer s.Close()
	for {
		s.SetReadDeadline(time.Now().Add(streamIdle))
		env, err := protocol.ReadFrame(s, 0)
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return
			}
			var se *quic.StreamError
			var ae *quic.ApplicationError
			if errors.As(err, &se) || errors.As(err, &ae) || errors.Is(err, io.ErrUnexpectedEOF) && isConnClosed(ac.conn) {
				return
			}
			n.stats.FramesRejected.Add(1)
			n.log.Warn("rejected frame", "site", ac.site, "err", err)
			n.reply(s, protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "%v", err))
			s.CancelRead(0)
			return
		}
		resp, done := n.dispatch(ctx, ac, s, env)
		if resp != nil {
			if err := n.reply(s, resp); err != nil {
				return
			}
		}
		if done {
			// A blob stream carries one request: stop reading it, so
			// that it completes even if the agent's FIN has not been
			// read (quic-go counts an incomplete stream against the
			// agent's stream limit until the connection ends).
			s.CancelRead(0)
			if ac.refused.Load() {
				n.connWG.Go(ac.closeRefused)
			}
			return
		}
	}
}

func isConnClosed(c *quic.Conn) bool { return c.Context().Err() != nil }

func (n *Node) reply(s *quic.Stream, env *pb.Envelope) error {
	s.SetWriteDeadline(time.Now().Add(streamIdle))
	return protocol.WriteFrame(s, env)
}

// dispatch answers one request. done means the stream is finished (blob
// streams carry one request).
func (n *Node) dispatch(ctx context.Context, ac *agentConn, s *quic.Stream, env *pb.Envelope) (resp *pb.Envelope, done bool) {
	if h := env.GetHello(); h != nil {
		return n.onHello(ac, h)
	}
	if !ac.hello.Load() {
		n.stats.FramesRejected.Add(1)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "send hello first"), true
	}
	if !n.IsLeader() {
		// An upload's body follows its header on the stream: stop
		// reading there rather than take the body for the next frame.
		_, upload := env.GetBody().(*pb.Envelope_UpdateUpload)
		return n.redirect(), upload
	}
	if n.siteRevoked(ac.site) {
		n.stats.SitesRevokedRefused.Add(1)
		ac.revoked.Store(true)
		ac.refused.Store(true)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_REFUSED, "site %q has been revoked", ac.site), true
	}
	n.lastSeen.Store(ac.site, n.now())
	switch b := env.GetBody().(type) {
	case *pb.Envelope_TaskRequest:
		return n.onTaskRequest(ctx, ac, b.TaskRequest), false
	case *pb.Envelope_RoundStatusRequest:
		return n.onRoundStatus(ac, b.RoundStatusRequest), false
	case *pb.Envelope_ModelRequest:
		return n.onModelRequest(ac, s, b.ModelRequest), true
	case *pb.Envelope_UpdateUpload:
		return n.onUpload(ac, s, b.UpdateUpload), true
	case *pb.Envelope_StatsUpload:
		return n.onStatsUpload(ac, b.StatsUpload), false
	case *pb.Envelope_Decline:
		return n.onDecline(ac, b.Decline), false
	case *pb.Envelope_SecaggMessage:
		return n.onSecAggMessage(ac, b.SecaggMessage), false
	case *pb.Envelope_SecaggFetch:
		return n.onSecAggFetch(ctx, ac, b.SecaggFetch), false
	case *pb.Envelope_EvalUpload:
		return n.onEvalUpload(ac, b.EvalUpload), false
	case *pb.Envelope_DeploymentRequest:
		return n.onDeploymentRequest(ctx, b.DeploymentRequest), false
	case *pb.Envelope_DriftReport:
		return n.onDriftReport(ac, b.DriftReport), false
	}
	n.stats.FramesRejected.Add(1)
	return protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "unexpected message %T from an agent", env.GetBody()), true
}

func (n *Node) redirect() *pb.Envelope {
	id, addr := n.Leader()
	return &pb.Envelope{Body: &pb.Envelope_Redirect{Redirect: &pb.Redirect{LeaderId: id, LeaderAddr: addr}}}
}

// siteBuild is what a site's agent runs: its version, as it says, and the
// protocol version negotiated with it.
type siteBuild struct {
	Version  string
	Protocol uint32
}

func (n *Node) onHello(ac *agentConn, h *pb.Hello) (*pb.Envelope, bool) {
	v, err := protocol.Negotiate(h.GetMinProtocolVersion(), h.GetProtocolVersion())
	if err != nil {
		n.stats.HandshakesRefused.Add(1)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_VERSION,
			"agent speaks protocol %d-%d, coordinator speaks %d-%d", h.GetMinProtocolVersion(), h.GetProtocolVersion(),
			protocol.MinVersion, protocol.Version), true
	}
	// Only a leader that has applied every earlier entry and its own seed
	// may judge a site unknown; a follower or a leader still starting up
	// may simply lag behind the log.
	if !n.IsLeader() {
		return n.redirect(), false
	}
	if !n.isReady() {
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "the leader is starting; retry shortly"), true
	}
	var known bool
	n.fsm.view(func(st *state) { _, known = st.Sites[ac.site] })
	if !known {
		n.stats.UnknownSites.Add(1)
		n.log.Warn("refused unknown site", "site", ac.site)
		ac.refused.Store(true)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_UNKNOWN_SITE,
			"site %q is not enrolled in this federation", ac.site), true
	}
	ac.hello.Store(true)
	n.agentBuilds.Store(ac.site, siteBuild{Version: h.GetAgentVersion(), Protocol: v})
	return &pb.Envelope{Body: &pb.Envelope_Welcome{Welcome: &pb.Welcome{
		ProtocolVersion: v, NodeId: n.cfg.ID, SiteId: ac.site}}}, false
}

// taskFor returns the offer for the first running job whose open round this
// site has not contributed to, or nil.
func (n *Node) taskFor(site string) *pb.TaskOffer {
	var offer *pb.TaskOffer
	n.fsm.view(func(st *state) {
		ids := make([]string, 0, len(st.Jobs))
		for id := range st.Jobs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			j := st.Jobs[id]
			r := j.Current
			if !j.State.active() || r == nil || (j.Global == nil && r.Kind != KindStats && r.Kind != KindEval) {
				continue
			}
			if _, done := r.Receipts[site]; done || !r.Asks(site) {
				continue
			}
			if _, declined := r.Declines[site]; declined {
				continue
			}
			var sa *pb.SecAggParams
			if r.SecAgg != nil {
				// A site is offered a secure aggregation round until it
				// advertised its keys; after that it drives the run.
				if sa = secAggParams(j, r, site); sa == nil {
					continue
				}
			}
			sp := j.Spec
			params := &pb.TrainParams{
				LocalEpochs: uint32(sp.Train.LocalEpochs), LearningRate: float32(sp.Train.LearningRate),
				BatchSize: uint32(sp.Train.BatchSize), Seed: sp.Train.Seed + r.Number,
				ValidationFraction: sp.Train.ValidationFraction, MinRecords: uint32(sp.Train.MinRecords),
				Optimizer: sp.Train.Optimizer, AdamBeta1: sp.Train.AdamBeta1, AdamBeta2: sp.Train.AdamBeta2,
				AdamEps: sp.Train.AdamEps, PosWeight: sp.Train.PosWeight, ProxMu: sp.Strategy.ProxMu(),
			}
			if r.Kind == KindEval {
				offer = n.evalOffer(st, id, j, r)
				return
			}
			if r.Kind == KindStats {
				offer = &pb.TaskOffer{JobId: id, Round: r.Number, Kind: pb.TaskKind_TASK_KIND_STATS,
					Params: params, Features: sp.Features.FeatureSpec}
				if sp.IsAnalytics() {
					offer.Features, offer.Analytics = sp.analyticsFeatures(), sp.analyticsWire()
				}
				return
			}
			offer = &pb.TaskOffer{
				JobId:     id,
				Round:     r.Number,
				Model:     &pb.BlobRef{Sha256: j.Global.Digest, Size: uint64(j.Global.Size), Encoding: pb.Encoding_ENCODING_F32LE},
				ModelSpec: sp.Model.Wire(),
				Params:    params,
				Features:  j.EffectiveFeatures(),
				Secagg:    sa,
			}
			return
		}
	})
	return offer
}

func (n *Node) onTaskRequest(ctx context.Context, ac *agentConn, req *pb.TaskRequest) *pb.Envelope {
	return n.longPoll(ctx, req.GetWaitMs(), func() *pb.Envelope {
		if offer := n.taskFor(ac.site); offer != nil {
			return &pb.Envelope{Body: &pb.Envelope_TaskOffer{TaskOffer: offer}}
		}
		return nil
	})
}

// longPoll holds an agent's request: it calls answer now, then after
// every applied entry and change of leadership, until answer returns an
// envelope, the request's wait (at most MaxPollWait) passes (NoTask), ctx
// ends, or this node stops leading (a redirect).
func (n *Node) longPoll(ctx context.Context, waitMs uint32, answer func() *pb.Envelope) *pb.Envelope {
	wait := min(time.Duration(waitMs)*time.Millisecond, time.Duration(n.cfg.MaxPollWait))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := n.fsm.changed()
		stepped := n.leadershipChanged()
		if !n.IsLeader() {
			return n.redirect()
		}
		if resp := answer(); resp != nil {
			return resp
		}
		select {
		case <-changed:
		case <-stepped:
		case <-timer.C:
			return &pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{}}}
		case <-ctx.Done():
			return protocol.Errorf(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "coordinator shutting down")
		}
	}
}

func (n *Node) onRoundStatus(ac *agentConn, req *pb.RoundStatusRequest) *pb.Envelope {
	rs := &pb.RoundStatus{JobId: req.GetJobId(), Round: req.GetRound(), State: pb.RoundState_ROUND_STATE_UNKNOWN}
	n.fsm.view(func(st *state) {
		j, ok := st.Jobs[req.GetJobId()]
		if !ok {
			return
		}
		// The latest attempt of the round decides its state.
		for _, r := range slices.Backward(j.Rounds) {
			if r.Number != req.GetRound() {
				continue
			}
			switch r.State {
			case RoundOpen:
				rs.State = pb.RoundState_ROUND_STATE_OPEN
				if rc, ok := r.Receipts[ac.site]; ok {
					rs.HaveUpdate = r.Kind == KindStats || r.Kind == KindEval || n.blob.has(rc.Digest)
				}
				if !rs.HaveUpdate && req.GetUpdateSha256() != "" {
					rs.HaveBytes = n.partialBytes(ac.site, req.GetUpdateSha256())
				}
			case RoundCommitted:
				rs.State = pb.RoundState_ROUND_STATE_COMMITTED
				rs.HaveUpdate = slices.Contains(r.Contributors, ac.site)
			case RoundFailed:
				rs.State = pb.RoundState_ROUND_STATE_FAILED
			}
			return
		}
	})
	return &pb.Envelope{Body: &pb.Envelope_RoundStatus{RoundStatus: rs}}
}

func (n *Node) onModelRequest(ac *agentConn, s *quic.Stream, req *pb.ModelRequest) *pb.Envelope {
	var m *Model
	n.fsm.view(func(st *state) {
		if j, ok := st.Jobs[req.GetJobId()]; ok {
			if e := j.Spec.Evaluation; j.Spec.IsEvaluation() && e.Model == req.GetSha256() && st.Jobs[e.Job] != nil {
				j = st.Jobs[e.Job] // an evaluation job serves the version it scores
			}
			if jm := j.ModelByDigest(req.GetSha256()); jm != nil {
				cp := *jm
				m = &cp
			}
		}
	})
	if m == nil {
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no model %.12s in job %q", req.GetSha256(), req.GetJobId())
	}
	if req.GetOffset() > uint64(m.Size) {
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "offset %d is past the model's %d bytes", req.GetOffset(), m.Size)
	}
	// A node that took over before its background sync fetched the model
	// fetches it now; the agent retries if that fails.
	ctx, cancel := context.WithTimeout(ac.conn.Context(), blobTransferTimeout(m.Size))
	err := n.ensureBlob(ctx, m.Digest)
	cancel()
	if err != nil {
		n.log.Warn("model not available", "blob", m.Digest[:12], "err", err)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "model %.12s is not available on this coordinator yet; retry", m.Digest)
	}
	f, size, err := n.blob.open(m.Digest)
	if err != nil || size != m.Size {
		n.log.Error("model blob unreadable", "blob", m.Digest[:12], "err", err, "size", size)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "model %.12s is unreadable on this coordinator", m.Digest)
	}
	defer f.Close()
	hdr := &pb.Envelope{Body: &pb.Envelope_BlobHeader{BlobHeader: &pb.BlobHeader{
		Blob:   &pb.BlobRef{Sha256: m.Digest, Size: uint64(m.Size), Encoding: pb.Encoding_ENCODING_F32LE},
		Offset: req.GetOffset(),
	}}}
	s.SetWriteDeadline(time.Now().Add(blobTimeout))
	if err := protocol.WriteFrame(s, hdr); err != nil {
		return nil
	}
	if _, err := f.Seek(int64(req.GetOffset()), io.SeekStart); err != nil {
		return nil
	}
	k, _ := io.Copy(s, f)
	n.stats.BytesSent.Add(k)
	return nil
}

// onUpload receives one update. It answers Ack only after the update's
// receipt is committed in Raft.
func (n *Node) onUpload(ac *agentConn, s *quic.Stream, up *pb.UpdateUpload) *pb.Envelope {
	reject := func(code pb.ErrorCode, format string, args ...any) *pb.Envelope {
		n.stats.UpdatesRejected.Add(1)
		msg := fmt.Sprintf(format, args...)
		n.log.Warn("rejected update", "site", ac.site, "job", up.GetJobId(), "round", up.GetRound(), "reason", msg)
		n.auditRefusal(ac, "update.reject", code, up.GetJobId(), up.GetRound())
		return protocol.Errorf(code, "%s", msg)
	}
	var (
		numParams int
		normBound float64
		base      string
		errResp   *pb.Envelope
	)
	n.fsm.view(func(st *state) {
		j, ok := st.Jobs[up.GetJobId()]
		switch {
		case !ok:
			errResp = reject(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no job %q", up.GetJobId())
		case !j.State.active() || j.Current == nil || j.Current.Number != up.GetRound() || j.Current.Kind == KindStats || j.Current.Kind == KindEval:
			// A straggler: discarded, counted, and never carried into
			// another round (its base is the closed round's model).
			n.stats.UpdatesLate.Add(1)
			errResp = reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "job %s round %d is not open", up.GetJobId(), up.GetRound())
		case !j.Current.Asks(ac.site):
			n.stats.UpdatesNotAsked.Add(1)
			errResp = reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "job %s round %d did not ask this site", up.GetJobId(), up.GetRound())
		default:
			numParams, normBound = j.Spec.Model.NumParams(), j.Spec.Strategy.NormBound
			base = j.Current.Base
		}
	})
	if errResp != nil {
		return errResp
	}
	d := up.GetDelta()
	switch {
	case up.GetBaseModelSha256() != base:
		return reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "update was computed from another model than the round's")
	case up.GetSampleCount() == 0:
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "sample_count must be positive")
	case up.GetSampleCount() > n.cfg.maxUpdateSamples():
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "sample_count %d is above this federation's maximum of %d (max_update_samples)",
			up.GetSampleCount(), n.cfg.maxUpdateSamples())
	case d.GetEncoding() != pb.Encoding_ENCODING_F32LE:
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "delta encoding %s is not supported", d.GetEncoding())
	case d.GetSize() != uint64(4*numParams):
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "delta declares %d bytes; the model has %d parameters (%d bytes)", d.GetSize(), numParams, 4*numParams)
	}
	if up.GetOffset() > d.GetSize() {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "offset %d is past the delta's %d bytes", up.GetOffset(), d.GetSize())
	}
	if validDigest(d.GetSha256()) != nil {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "delta sha256 is not 64 lowercase hex digits")
	}
	body, resp := n.receiveBody(ac.site, s, d, up.GetOffset(), reject)
	if resp != nil {
		return resp
	}
	delta, err := protocol.DecodeF32(body)
	if err != nil {
		// Neither a model nor another site's update can hold a value
		// that is not finite: the stored body is no one's.
		n.blob.remove(d.GetSha256())
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "update body: %v", err)
	}
	if normBound > 0 {
		if norm := dp.L2Norm(delta); norm > normBound {
			// Accepted: the rule clips it to the bound (aggregator.NormBound).
			n.stats.UpdatesClipped.Add(1)
			n.log.Info("update above the job's norm bound; it is clipped", "site", ac.site, "job", up.GetJobId(), "round", up.GetRound(),
				"norm", norm, "norm_bound", normBound)
		}
	}
	m := up.GetMetrics()
	err = n.propose(cmdReceipt, receiptBody{Job: up.GetJobId(), Round: up.GetRound(), Receipt: Receipt{
		Site: ac.site, Digest: d.GetSha256(), Size: d.GetSize(), Samples: up.GetSampleCount(), Base: base,
		Metrics: LocalMetrics{TrainLoss: m.GetTrainLoss(), ValAUROC: m.GetValAuroc(), ValAccuracy: m.GetValAccuracy(), ValCount: m.GetValCount()},
	}})
	if resp := n.proposalAnswer(err, reject); resp != nil {
		return resp
	}
	n.stats.UpdatesAccepted.Add(1)
	return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: up.GetJobId(), Round: up.GetRound(), Sha256: d.GetSha256()}}}
}

// onStatsUpload receives a site's feature statistics for a statistics
// round. They are checked (one entry per feature, finite, counts within the
// cohort, a cohort at least the job's minimum) and acknowledged once their
// receipt is committed.
func (n *Node) onStatsUpload(ac *agentConn, su *pb.StatsUpload) *pb.Envelope {
	reject := func(code pb.ErrorCode, format string, args ...any) *pb.Envelope {
		n.stats.UpdatesRejected.Add(1)
		msg := fmt.Sprintf(format, args...)
		n.log.Warn("rejected statistics", "site", ac.site, "job", su.GetJobId(), "reason", msg)
		n.auditRefusal(ac, "stats.reject", code, su.GetJobId(), su.GetRound())
		return protocol.Errorf(code, "%s", msg)
	}
	var (
		nFeat, minN int
		spec        JobSpec
		errResp     *pb.Envelope
	)
	n.fsm.view(func(st *state) {
		j, ok := st.Jobs[su.GetJobId()]
		switch {
		case !ok:
			errResp = reject(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no job %q", su.GetJobId())
		case j.Current == nil || j.Current.Kind != KindStats || j.Current.Number != su.GetRound():
			errResp = reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "job %s has no open statistics round", su.GetJobId())
		default:
			nFeat, minN, spec = len(j.Spec.Features.GetFeatures()), j.Spec.Train.MinRecords, j.Spec
		}
	})
	if errResp != nil {
		return errResp
	}
	if len(su.GetStats()) != nFeat {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "%d feature statistics for %d features", len(su.GetStats()), nFeat)
	}
	if su.GetCohortSize() > n.cfg.maxUpdateSamples() {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "cohort_size %d is above this federation's maximum of %d (max_update_samples)",
			su.GetCohortSize(), n.cfg.maxUpdateSamples())
	}
	if su.GetCohortSize() < uint64(minN) {
		return reject(pb.ErrorCode_ERROR_CODE_REFUSED, "cohort of %d is below the job's minimum of %d", su.GetCohortSize(), minN)
	}
	stats := make([]FeatureStats, nFeat)
	for i, fs := range su.GetStats() {
		if fs.GetCount() > su.GetCohortSize() || math.IsNaN(fs.GetSum()) || math.IsInf(fs.GetSum(), 0) ||
			math.IsNaN(fs.GetSumSq()) || math.IsInf(fs.GetSumSq(), 0) || fs.GetSumSq() < 0 {
			return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "feature %d statistics are inconsistent", i)
		}
		if fs.GetCount() > 0 && fs.GetCount() < uint64(minN) {
			return reject(pb.ErrorCode_ERROR_CODE_REFUSED, "feature %d statistics cover %d patients, below the minimum of %d", i, fs.GetCount(), minN)
		}
		if err := checkAnalyticsStats(spec, fs, i, minN); err != nil {
			return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "%v", err)
		}
		stats[i] = FeatureStats{Count: fs.GetCount(), Sum: fs.GetSum(), SumSq: fs.GetSumSq(), Bins: fs.GetBins()}
	}
	err := n.propose(cmdReceipt, receiptBody{Job: su.GetJobId(), Round: su.GetRound(), Receipt: Receipt{
		Site: ac.site, Stats: stats, CohortSize: su.GetCohortSize()}})
	if resp := n.proposalAnswer(err, reject); resp != nil {
		return resp
	}
	n.stats.UpdatesAccepted.Add(1)
	return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: su.GetJobId(), Round: su.GetRound()}}}
}

// onDecline records that a site will not take part in a round.
func (n *Node) onDecline(ac *agentConn, d *pb.Decline) *pb.Envelope {
	reject := func(code pb.ErrorCode, format string, args ...any) *pb.Envelope {
		return protocol.Errorf(code, format, args...)
	}
	reason := strings.ToLower(strings.TrimPrefix(d.GetReason().String(), "DECLINE_REASON_"))
	n.log.Info("site declined a round", "site", ac.site, "job", d.GetJobId(), "round", d.GetRound(), "reason", reason)
	err := n.propose(cmdDecline, declineBody{Job: d.GetJobId(), Round: d.GetRound(), Site: ac.site, Reason: reason})
	if resp := n.proposalAnswer(err, reject); resp != nil {
		return resp
	}
	return &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: d.GetJobId(), Round: d.GetRound()}}}
}

// auditRefusal records a site's refused upload as an audit leaf, written
// with the next batch (queueAudit): a refusal never waits for the log, and
// a flood of them costs the log little. The job id is the site's input:
// only one shaped like an id is kept.
func (n *Node) auditRefusal(ac *agentConn, action string, code pb.ErrorCode, job string, round uint64) {
	if !validID(job) {
		job = "(malformed)"
	}
	outcome := "denied"
	if code == pb.ErrorCode_ERROR_CODE_UNAVAILABLE || code == pb.ErrorCode_ERROR_CODE_INTERNAL {
		outcome = "error" // the site may retry: not a refusal of what it sent
	}
	n.queueAudit(AuditEntry{Time: n.now(), Kind: "site", Actor: ac.site, Action: action,
		Target: fmt.Sprintf("job %s round %d", job, round), Outcome: outcome,
		Remote: ac.conn.RemoteAddr().String(), Node: n.cfg.ID})
}

// proposalAnswer maps a failed proposal to the agent's answer; nil when
// err is nil.
func (n *Node) proposalAnswer(err error, reject func(pb.ErrorCode, string, ...any) *pb.Envelope) *pb.Envelope {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotLeader):
		return n.redirect()
	case errors.Is(err, ErrRoundClosed):
		// The round closed while the update was arriving: a straggler.
		n.stats.UpdatesLate.Add(1)
		return reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "%v", err)
	case errors.Is(err, ErrRoundConflict), errors.Is(err, ErrUnknownJob), errors.Is(err, ErrNotSelected):
		return reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "%v", err)
	case errors.Is(err, ErrDuplicateUpdate):
		return reject(pb.ErrorCode_ERROR_CODE_REFUSED, "%v", err)
	}
	n.log.Error("commit receipt", "err", err)
	return protocol.Errorf(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "could not commit; retry")
}
