package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/agent/train/mlpspec"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/quic-go/quic-go"
)

// blobDeadline bounds one model download: a minute, plus a second per
// megabyte (a gateway's link is assumed to manage at least 1 MB/s).
func blobDeadline(size uint64) time.Duration {
	return time.Minute + time.Duration(size>>20)*time.Second
}

// requestGrace is how much longer than the long-poll wait a control
// request may take before the coordinator counts as gone.
const requestGrace = 5 * time.Second

// errRedirect carries the leader's address from a follower's answer.
type errRedirect struct{ addr string }

func (e *errRedirect) Error() string { return "redirected to the leader at " + e.addr }

// session is one QUIC connection to a coordinator with its control stream.
type session struct {
	addr string
	conn *quic.Conn
	ctrl *quic.Stream
}

func (s *session) close() {
	if s.conn != nil {
		s.conn.CloseWithError(0, "agent closing")
	}
}

// dial connects to addr, opens the control stream and says hello.
func (a *Agent) dial(ctx context.Context, addr string) (*session, error) {
	tlsConf := pki.ClientTLS(a.pool, tls.Certificate{}, protocol.ALPN, pki.ServerNameFor(addr), pki.RoleCoordinator)
	// The certificate current at each handshake: renewal swaps it without
	// touching open connections.
	tlsConf.Certificates = nil
	tlsConf.GetClientCertificate = a.clientCert
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(dctx, addr, tlsConf, &quic.Config{
		HandshakeIdleTimeout: 5 * time.Second,
		// A coordinator that dies without closing (a crash, a cut link)
		// is given up after 10 s of silence; keep-alives every 3 s keep a
		// live but quiet connection open.
		MaxIdleTimeout:  10 * time.Second,
		KeepAlivePeriod: 3 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, a.explain(err))
	}
	s := &session{addr: addr, conn: conn}
	if s.ctrl, err = conn.OpenStreamSync(dctx); err != nil {
		s.close()
		return nil, fmt.Errorf("open control stream to %s: %w", addr, a.explain(err))
	}
	resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{
		ProtocolVersion: protocol.Version, MinProtocolVersion: protocol.MinVersion, AgentVersion: Build}}})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("hello to %s: %w", addr, a.explain(err))
	}
	if w := resp.GetWelcome(); w != nil {
		if w.GetSiteId() != a.site {
			s.close()
			return nil, fmt.Errorf("coordinator knows this gateway as %q, its certificate says %q", w.GetSiteId(), a.site)
		}
		return s, nil
	}
	s.close()
	return nil, fmt.Errorf("hello: %w: %T", protocol.ErrUnexpected, resp.GetBody())
}

// explain adds what a gateway engineer should check to a connection error.
// In TLS 1.3 the coordinator checks the gateway's certificate after the
// gateway's side of the handshake is done, so its refusal can surface on
// the first stream rather than at dial.
func (a *Agent) explain(err error) error {
	var te *quic.TransportError
	var ht *quic.HandshakeTimeoutError
	var it *quic.IdleTimeoutError
	switch {
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError() && te.Remote:
		return fmt.Errorf("the coordinator refused this gateway's certificate %s (it must be a current site certificate issued by the federation CA): %w", a.cfg.TLS.Cert, err)
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		return fmt.Errorf("this gateway refused the coordinator's certificate (it must be issued by the CA in %s, for the address dialled): %w", a.cfg.TLS.CA, err)
	case errors.As(err, &ht), errors.As(err, &it):
		return fmt.Errorf("no answer (is outbound UDP to the coordinator's agent port open?): %w", err)
	}
	return err
}

// request sends one frame on the control stream and reads the answer. A
// Redirect becomes *errRedirect; an Error becomes *protocol.RemoteError.
func (a *Agent) request(s *session, env *pb.Envelope) (*pb.Envelope, error) {
	// A coordinator that died without a word (power loss, kill -9) is
	// noticed by this deadline rather than the connection's idle timeout:
	// no answer, even a long-polled one, takes longer.
	s.ctrl.SetDeadline(a.now().Add(time.Duration(a.cfg.PollWait) + requestGrace))
	defer s.ctrl.SetDeadline(time.Time{})
	if err := a.guard.Send(s.ctrl, env); err != nil {
		return nil, err
	}
	resp, err := protocol.ReadFrame(s.ctrl, 0)
	if err != nil {
		return nil, err
	}
	return answer(resp)
}

func answer(resp *pb.Envelope) (*pb.Envelope, error) {
	if r := resp.GetRedirect(); r != nil {
		return nil, &errRedirect{addr: r.GetLeaderAddr()}
	}
	if err := protocol.AsError(resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// isRefusal reports whether err is a refusal that retrying cannot cure.
func isRefusal(err error) bool {
	var re *protocol.RemoteError
	return errors.As(err, &re) && (re.Code == pb.ErrorCode_ERROR_CODE_UNKNOWN_SITE || re.Code == pb.ErrorCode_ERROR_CODE_VERSION)
}

// closeRevoked is the QUIC application error code a coordinator closes a
// revoked site's connections with (coordinator/agents.go).
const closeRevoked quic.ApplicationErrorCode = 0x103

// isRevocation reports whether err says this site was revoked: the
// coordinator closed the connection with closeRevoked, or refused a
// control request (REFUSED is what a coordinator answers a revoked
// site's requests with; a refusal of local work, such as statistics
// below a job's minimum, is wrapped in errLocal and does not count).
func isRevocation(err error) bool {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == closeRevoked {
		return true
	}
	var re *protocol.RemoteError
	return errors.As(err, &re) && re.Code == pb.ErrorCode_ERROR_CODE_REFUSED && !errors.Is(err, errLocal)
}

// connect dials coordinators until one that leads accepts us, with
// exponential backoff and jitter between passes. Each pass dials every
// candidate at once (see dialAny): a dead coordinator costs nothing while a
// live leader answers in a round trip.
func (a *Agent) connect(ctx context.Context, hint string) (*session, error) {
	backoff := time.Duration(a.cfg.BackoffMin)
	for attempt := 0; ; attempt++ {
		targets := a.cfg.Coordinators
		if hint != "" && !slices.Contains(targets, hint) {
			targets = append([]string{hint}, targets...)
		}
		hint = ""
		s, err := a.dialAny(ctx, targets)
		if err == nil {
			a.log.Info("connected to coordinator", "addr", s.addr, "passes", attempt+1)
			return s, nil
		}
		if isRefusal(err) {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		if isRevocation(err) {
			return nil, fmt.Errorf("%w: %w", ErrRevoked, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.log.Warn("no coordinator reachable; retrying", "err", err, "backoff", backoff)
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1)) // #nosec G404 -- reconnect backoff jitter; not a secret
		t := time.NewTimer(backoff + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, time.Duration(a.cfg.BackoffMax))
	}
}

// dialAny dials every target concurrently and returns the first session
// a leader welcomed; the other dials are cancelled and their sessions
// closed. A redirect to an address not yet dialled is followed at once. A
// live follower that points at a leader already being dialled (perhaps one
// that just died) or knows none yet is asked again shortly: during an
// election it soon leads, or names the new leader, well before a dial to
// a dead address times out. A refusal (unknown site, no common version,
// a revoked site) ends the pass. A pass lasts at most
// dialPassLimit; then the last error is returned.
func (a *Agent) dialAny(ctx context.Context, targets []string) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, dialPassLimit)
	defer cancel()
	type result struct {
		addr string
		s    *session
		err  error
	}
	results := make(chan result, 4*len(targets)+4)
	var wg sync.WaitGroup
	defer wg.Wait()
	inflight := map[string]bool{}
	asked := map[string]int{}
	pending := 0
	dialAfter := func(addr string, after time.Duration) {
		inflight[addr] = true
		pending++
		wg.Go(func() {
			if after > 0 {
				t := time.NewTimer(after)
				select {
				case <-ctx.Done():
					t.Stop()
					results <- result{addr, nil, ctx.Err()}
					return
				case <-t.C:
				}
			}
			s, err := a.dial(ctx, addr)
			results <- result{addr, s, err}
		})
	}
	// reask dials addr again after a short pause that grows with each ask.
	reask := func(addr string) {
		if !inflight[addr] && asked[addr] < maxReasks {
			asked[addr]++
			dialAfter(addr, time.Duration(asked[addr])*time.Duration(a.cfg.BackoffMin))
		}
	}
	for _, t := range targets {
		if !inflight[t] {
			dialAfter(t, 0)
		}
	}
	var (
		winner  *session
		lastErr error
		refused bool
	)
	for ; pending > 0; pending-- {
		r := <-results
		inflight[r.addr] = false
		var (
			rd *errRedirect
			re *protocol.RemoteError
		)
		switch {
		case r.err == nil && winner == nil && !refused:
			winner = r.s
			cancel()
		case r.err == nil:
			r.s.close()
		case winner != nil || refused || ctx.Err() != nil:
		case isRefusal(r.err), isRevocation(r.err):
			lastErr, refused = r.err, true
			cancel()
		case errors.As(r.err, &rd):
			// A live node: follow it to the leader it names, and ask it
			// again if that leader is being dialled already (perhaps a
			// dead one) or it knows none yet.
			if rd.addr != "" && !inflight[rd.addr] && asked[rd.addr] < maxReasks {
				asked[rd.addr]++
				dialAfter(rd.addr, 0)
			} else {
				reask(r.addr)
			}
			lastErr = r.err
		case errors.As(r.err, &re) && re.Code == pb.ErrorCode_ERROR_CODE_UNAVAILABLE:
			// A leader still setting up: ask it again shortly.
			reask(r.addr)
			lastErr = r.err
		default:
			lastErr = r.err
		}
	}
	if winner != nil {
		return winner, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no coordinator address")
	}
	return nil, lastErr
}

const (
	// dialPassLimit bounds one pass over the coordinators.
	dialPassLimit = 15 * time.Second
	// maxReasks bounds how often one live node is asked again in a pass.
	maxReasks = 20
)

// openStream opens a stream for one blob transfer, waiting at most
// requestGrace for the coordinator to allow one more stream.
func openStream(ctx context.Context, s *session) (*quic.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, requestGrace)
	defer cancel()
	return s.conn.OpenStreamSync(ctx)
}

// partialDownload is the part of a model an interrupted download got; the
// next download of the same model asks for the rest (from any node: the
// model is content-addressed).
type partialDownload struct {
	digest string
	body   []byte
	have   uint64
}

// errDigestMismatch: downloaded model weights do not hash to the digest
// they were asked by.
var errDigestMismatch = errors.New("model body does not match its digest")

// maxModelBytes is the largest model this agent downloads: the largest it
// can build (mlpspec.MaxParams float32 weights, 1 GiB). Callers check a
// model's size against its spec before downloading it; download refuses a
// larger one before it allocates anything.
const maxModelBytes = 4 * mlpspec.MaxParams

// download fetches a model blob on its own stream and verifies its digest.
// An interrupted download is resumed from the byte it reached.
func (a *Agent) download(ctx context.Context, s *session, job string, ref *pb.BlobRef) ([]byte, error) {
	if ref.GetSize() > maxModelBytes {
		return nil, fmt.Errorf("model %.12s: %d bytes, more than the %d of the largest model this agent builds", ref.GetSha256(), ref.GetSize(), maxModelBytes)
	}
	var (
		body   []byte
		offset uint64
	)
	a.mu.Lock()
	if p := a.partialDL; p != nil && p.digest == ref.GetSha256() && uint64(len(p.body)) == ref.GetSize() {
		body, offset = p.body, p.have
	}
	a.partialDL = nil
	a.mu.Unlock()
	if body == nil {
		body = make([]byte, ref.GetSize())
	} else {
		a.log.Info("resuming an interrupted model download", "job", job, "from_byte", offset, "of", len(body))
	}
	st, err := openStream(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("open download stream: %w", err)
	}
	defer st.CancelRead(0)
	if err := a.guard.Send(st, &pb.Envelope{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{
		JobId: job, Sha256: ref.GetSha256(), Offset: offset}}}); err != nil {
		return nil, err
	}
	st.Close() // one request per blob stream: half-close our side
	// A coordinator that vanishes mid-transfer is noticed by this deadline,
	// not by the connection's idle timeout.
	st.SetReadDeadline(a.now().Add(blobDeadline(ref.GetSize() - offset)))
	resp, err := protocol.ReadFrame(st, 0)
	if err != nil {
		return nil, fmt.Errorf("model header: %w", err)
	}
	if resp, err = answer(resp); err != nil {
		return nil, err
	}
	hdr := resp.GetBlobHeader()
	if hdr == nil || hdr.GetBlob().GetSize() != ref.GetSize() || hdr.GetOffset() != offset {
		return nil, fmt.Errorf("model header: %w", protocol.ErrUnexpected)
	}
	k, err := io.ReadFull(st, body[offset:])
	if err != nil {
		if got := offset + uint64(k); got > 0 {
			a.mu.Lock()
			a.partialDL = &partialDownload{digest: ref.GetSha256(), body: body, have: got}
			a.mu.Unlock()
		}
		return nil, fmt.Errorf("model body, at byte %d of %d: %w", offset+uint64(k), len(body), err)
	}
	if protocol.Digest(body) != ref.GetSha256() {
		return nil, fmt.Errorf("%w %.12s", errDigestMismatch, ref.GetSha256())
	}
	if offset > 0 {
		a.mu.Lock()
		a.stats.DownloadsResumed++
		a.mu.Unlock()
	}
	return body, nil
}

// upload sends a kept update on its own stream and waits for the Ack, which
// the coordinator sends only after the update's receipt is committed. With
// offset > 0 it sends only the bytes the coordinator does not hold yet from
// an interrupted upload.
func (a *Agent) upload(ctx context.Context, s *session, u *pending, offset uint64) error {
	st, err := openStream(ctx, s)
	if err == nil {
		st.SetWriteDeadline(a.now().Add(blobDeadline(uint64(len(u.Delta)))))
	}
	if err != nil {
		return fmt.Errorf("open upload stream: %w", err)
	}
	defer st.CancelRead(0)
	hdr := u.header()
	hdr.Offset = offset
	if err := a.guard.Send(st, &pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: hdr}}); err != nil {
		return err
	}
	if err := a.guard.SendTensorFrom(st, hdr.GetDelta(), u.Delta, offset, u.Job, u.Round); err != nil {
		return err
	}
	st.Close()
	// The Ack comes once the receipt is committed through Raft.
	st.SetReadDeadline(a.now().Add(time.Duration(a.cfg.PollWait) + requestGrace))
	resp, err := protocol.ReadFrame(st, 0)
	if err != nil {
		return fmt.Errorf("upload answer: %w", err)
	}
	if resp, err = answer(resp); err != nil {
		return err
	}
	if ack := resp.GetAck(); ack == nil || ack.GetSha256() != hdr.GetDelta().GetSha256() {
		return fmt.Errorf("upload answer: %w", protocol.ErrUnexpected)
	}
	return nil
}
