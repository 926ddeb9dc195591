package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/pki"
	"github.com/cohort-fl/cohort/sim/synth"
	"github.com/quic-go/quic-go"
)

// scriptedCoordinator speaks the agent protocol over real QUIC with mutual
// TLS, and cuts the first model download and the first update upload in
// their middle, to see the agent resume both from where they stopped.
type scriptedCoordinator struct {
	t     *testing.T
	model []byte
	offer *pb.TaskOffer
	// site is the site id it welcomes; default "st-mary".
	site string
	// handle, if set, sees every frame first: an envelope it returns is
	// the answer; nil leaves the frame to the script.
	handle func(env *pb.Envelope) *pb.Envelope

	mu sync.Mutex
	// downloadOffsets and uploadOffsets are the offsets asked for.
	downloadOffsets []uint64
	uploadOffsets   []uint64
	// received is the update body as assembled from the uploads.
	received []byte
	// stats is the statistics upload received, if any.
	stats  *pb.StatsUpload
	acked  bool
	digest string
	done   chan struct{}
}

func (c *scriptedCoordinator) serve(ctx context.Context, ln *quic.Listener) {
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			for {
				s, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				go c.stream(conn, s)
			}
		}()
	}
}

func (c *scriptedCoordinator) stream(conn *quic.Conn, s *quic.Stream) {
	for {
		env, err := protocol.ReadFrame(s, 0)
		if err != nil {
			return
		}
		reply := func(e *pb.Envelope) { protocol.WriteFrame(s, e) }
		if c.handle != nil {
			if resp := c.handle(env); resp != nil {
				reply(resp)
				continue
			}
		}
		switch b := env.GetBody().(type) {
		case *pb.Envelope_Hello:
			site := c.site
			if site == "" {
				site = "st-mary"
			}
			reply(&pb.Envelope{Body: &pb.Envelope_Welcome{Welcome: &pb.Welcome{ProtocolVersion: protocol.Version, NodeId: "c1", SiteId: site}}})
		case *pb.Envelope_TaskRequest:
			c.mu.Lock()
			acked := c.acked
			c.mu.Unlock()
			if acked {
				reply(&pb.Envelope{Body: &pb.Envelope_NoTask{NoTask: &pb.NoTask{RetryAfterMs: 1000}}})
				continue
			}
			reply(&pb.Envelope{Body: &pb.Envelope_TaskOffer{TaskOffer: c.offer}})
		case *pb.Envelope_RoundStatusRequest:
			c.mu.Lock()
			rs := &pb.RoundStatus{JobId: "j", Round: 1, State: pb.RoundState_ROUND_STATE_OPEN, HaveUpdate: c.acked}
			if c.acked {
				rs.State = pb.RoundState_ROUND_STATE_COMMITTED
			} else if b.RoundStatusRequest.GetUpdateSha256() == c.digest {
				rs.HaveBytes = uint64(len(c.received))
			}
			c.mu.Unlock()
			reply(&pb.Envelope{Body: &pb.Envelope_RoundStatus{RoundStatus: rs}})
		case *pb.Envelope_ModelRequest:
			off := b.ModelRequest.GetOffset()
			c.mu.Lock()
			first := len(c.downloadOffsets) == 0
			c.downloadOffsets = append(c.downloadOffsets, off)
			model, ref := c.model, c.offer.GetModel() // a test may swap them under mu
			c.mu.Unlock()
			reply(&pb.Envelope{Body: &pb.Envelope_BlobHeader{BlobHeader: &pb.BlobHeader{
				Blob: ref, Offset: off}}})
			if first {
				// Half the model, then the stream ends.
				s.Write(model[off : len(model)/2])
				s.Close()
				return
			}
			s.Write(model[off:])
			s.Close()
			return
		case *pb.Envelope_UpdateUpload:
			up := b.UpdateUpload
			c.mu.Lock()
			first := len(c.uploadOffsets) == 0
			c.uploadOffsets = append(c.uploadOffsets, up.GetOffset())
			c.digest = up.GetDelta().GetSha256()
			if up.GetOffset() != uint64(len(c.received)) {
				c.mu.Unlock()
				reply(protocol.Errorf(pb.ErrorCode_ERROR_CODE_UNAVAILABLE, "offset mismatch"))
				return
			}
			c.mu.Unlock()
			size := int(up.GetDelta().GetSize())
			if first {
				// Keep half the body, then lose the connection.
				half := make([]byte, size/2)
				if _, err := io.ReadFull(s, half); err != nil {
					c.t.Errorf("first upload: %v", err)
				}
				c.mu.Lock()
				c.received = half
				c.mu.Unlock()
				conn.CloseWithError(0, "cut")
				return
			}
			rest := make([]byte, size-int(up.GetOffset()))
			if _, err := io.ReadFull(s, rest); err != nil {
				c.t.Errorf("resumed upload: %v", err)
				return
			}
			c.mu.Lock()
			c.received = append(c.received, rest...)
			ok := protocol.Digest(c.received) == c.digest
			if ok {
				c.acked = true
			}
			c.mu.Unlock()
			if !ok {
				c.t.Error("the resumed upload does not assemble into the update the agent declared")
				reply(protocol.Errorf(pb.ErrorCode_ERROR_CODE_DIGEST_MISMATCH, "mismatch"))
				return
			}
			reply(&pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: "j", Round: 1, Sha256: c.digest}}})
			close(c.done)
			return
		case *pb.Envelope_StatsUpload:
			c.mu.Lock()
			first := !c.acked
			c.stats, c.acked = b.StatsUpload, true
			c.mu.Unlock()
			reply(&pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: b.StatsUpload.GetJobId()}}})
			if first {
				close(c.done)
			}
		case *pb.Envelope_Decline:
			c.t.Errorf("the agent declined: %v", b.Decline)
			reply(&pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: "j", Round: 1}}})
		default:
			reply(protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "unexpected %T", b))
		}
	}
}

// TestAgentResumesInterruptedTransfers: a model download that ends halfway
// is resumed from that byte, and an upload whose connection is lost
// halfway is resumed from what the coordinator says it holds.
func TestAgentResumesInterruptedTransfers(t *testing.T) {
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.InitCA(pkiDir, "test", time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	siteCert, siteKey, err := ca.IssueToFiles(pkiDir, pki.IssueRequest{Role: pki.RoleSite, ID: "st-mary"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	coordCert, coordKey, err := ca.IssueToFiles(pkiDir, pki.IssueRequest{Role: pki.RoleCoordinator, ID: "c1", Hosts: []string{"127.0.0.1"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool, cert, err := pki.Files{CA: filepath.Join(pkiDir, "ca.crt"), Cert: coordCert, Key: coordKey}.Load()
	if err != nil {
		t.Fatal(err)
	}

	site := synth.DefaultSites(1, 5)[0]
	site.Patients = 200
	data := filepath.Join(dir, "data")
	if _, err := synth.WriteSite(data, site, synth.DefaultTruth()); err != nil {
		t.Fatal(err)
	}
	spec := synth.DefaultFeatureSpec()
	nf := len(spec.GetFeatures())
	// The zero logistic regression model: cutting it in half is enough to
	// exercise resumption (the bytes are the same whatever the size).
	model := make([]byte, 4*(nf+1))
	digest := protocol.Digest(model)
	c := &scriptedCoordinator{t: t, model: model, done: make(chan struct{}), offer: &pb.TaskOffer{
		JobId: "j", Round: 1, Kind: pb.TaskKind_TASK_KIND_TRAIN,
		Model:     &pb.BlobRef{Sha256: digest, Size: uint64(len(model)), Encoding: pb.Encoding_ENCODING_F32LE},
		ModelSpec: &pb.ModelSpec{Kind: "logreg", NumFeatures: uint32(nf), NumParams: uint32(nf + 1)},
		Params:    &pb.TrainParams{LocalEpochs: 2, LearningRate: 0.1, BatchSize: 32, Seed: 1, ValidationFraction: 0.2, MinRecords: 20},
		Features:  spec,
	}}

	coordAddr := serveScripted(t, c, pool, cert)

	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "agent")
	cfg.Coordinators = []string{coordAddr}
	cfg.TLS = pki.Files{CA: filepath.Join(pkiDir, "ca.crt"), Cert: siteCert, Key: siteKey}
	cfg.FHIRDir = data
	cfg.BackoffMin, cfg.BackoffMax = Duration(50*time.Millisecond), Duration(200*time.Millisecond)
	cfg.PollWait = Duration(time.Second)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, a, c.done, "the update")

	c.mu.Lock()
	defer c.mu.Unlock()
	half := uint64(len(model) / 2)
	if len(c.downloadOffsets) != 2 || c.downloadOffsets[0] != 0 || c.downloadOffsets[1] != half {
		t.Errorf("download offsets %v, want [0 %d]", c.downloadOffsets, half)
	}
	if n := len(c.received); len(c.uploadOffsets) != 2 || c.uploadOffsets[0] != 0 || c.uploadOffsets[1] == 0 || c.uploadOffsets[1] >= uint64(n) {
		t.Errorf("upload offsets %v for a %d-byte update, want [0, its half]", c.uploadOffsets, n)
	}
	st := a.Stats()
	if st.Reconnects < 1 {
		t.Errorf("status counts %d reconnects; the cut connection was replaced", st.Reconnects)
	}
	if st.DownloadsResumed != 1 || st.UploadsResumed != 1 {
		t.Errorf("status counts %d resumed downloads and %d resumed uploads, want 1 and 1", st.DownloadsResumed, st.UploadsResumed)
	}
}

// serveScripted serves c on a QUIC listener on loopback, presenting the
// coordinator certificate cert and trusting site certificates of pool,
// until the test ends; it returns the listener's address.
func serveScripted(t *testing.T, c *scriptedCoordinator, pool *x509.CertPool, cert tls.Certificate) string {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(pki.ServerTLS(pool, cert, protocol.ALPN, pki.RoleSite), &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.serve(ctx, ln) })
	t.Cleanup(func() {
		cancel()
		ln.Close()
		tr.Close()
		udp.Close()
		wg.Wait()
	})
	return udp.LocalAddr().String()
}

// runUntil runs a until done is closed (within 60 s), then stops it.
func runUntil(t *testing.T, a *Agent, done <-chan struct{}, what string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	select {
	case <-done:
	case err := <-runErr:
		cancel()
		t.Fatalf("agent stopped before %s: %v", what, err)
	case <-time.After(60 * time.Second):
		cancel()
		<-runErr
		t.Fatalf("no %s within 60 s", what)
	}
	cancel()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("agent: %v", err)
	}
}
