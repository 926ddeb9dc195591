package egress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/secagg"
	"google.golang.org/protobuf/proto"
)

func newGuard(t *testing.T) (*Guard, string, *bytes.Buffer) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "egress.log")
	tapped := new(bytes.Buffer)
	g, err := New(Config{LogPath: logPath, Tap: func(b []byte) { tapped.Write(b) },
		Now: func() time.Time { return time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, logPath, tapped
}

// secaggPayloads runs a two-client secure aggregation run of job "j",
// round 3, and returns every message of it in its wire encoding, by kind.
func secaggPayloads(t testing.TB) map[secagg.Kind][]byte {
	t.Helper()
	cfg := secagg.DefaultConfig()
	cfg.Threshold, cfg.VectorLength = 2, 3
	sess := secagg.Session{JobID: "j", Round: 3, Clients: []string{"a", "b"}}
	srv, err := secagg.NewServer(cfg, sess)
	if err != nil {
		t.Fatal(err)
	}
	var clients []*secagg.Client
	for _, id := range sess.Clients {
		c, err := secagg.NewClient(cfg, sess, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	out := map[secagg.Kind][]byte{}
	keep := func(m secagg.Message, err error) secagg.Message {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out[m.Kind()] = b
		return m
	}
	// step has every client answer the server's last message, the server
	// take the answers and close the phase.
	step := func(answer func(id string, c *secagg.Client) (secagg.Message, error)) {
		t.Helper()
		for i, c := range clients {
			m := keep(answer(sess.Clients[i], c))
			if err := srv.Handle(sess.Clients[i], m); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.Advance(); err != nil {
			t.Fatal(err)
		}
	}
	step(func(_ string, c *secagg.Client) (secagg.Message, error) { return c.AdvertiseKeys() })
	kl := keep(srv.KeyList()).(*secagg.KeyList)
	step(func(_ string, c *secagg.Client) (secagg.Message, error) { return c.ShareKeys(kl) })
	step(func(id string, c *secagg.Client) (secagg.Message, error) {
		rs := keep(srv.RoutedShares(id)).(*secagg.RoutedShares)
		return c.MaskedInput(rs, []float32{0.5, -0.25, 0})
	})
	req := keep(srv.UnmaskRequest()).(*secagg.UnmaskRequest)
	step(func(_ string, c *secagg.Client) (secagg.Message, error) { return c.Unmask(req) })
	return out
}

func secaggEnvelope(job string, round uint64, payload []byte) *pb.Envelope {
	return &pb.Envelope{Body: &pb.Envelope_SecaggMessage{SecaggMessage: &pb.SecAggMessage{JobId: job, Round: round, Attempt: 1, Payload: payload}}}
}

func secaggFetch(phase uint32) *pb.Envelope {
	return &pb.Envelope{Body: &pb.Envelope_SecaggFetch{SecaggFetch: &pb.SecAggFetch{JobId: "j", Round: 3, Phase: phase, WaitMs: 1000}}}
}

func TestGuardAdmitsOnlyAgentMessages(t *testing.T) {
	digest := protocol.Digest([]byte("x"))
	delta := &pb.BlobRef{Sha256: digest, Size: 4, Encoding: pb.Encoding_ENCODING_F32LE}
	sa := secaggPayloads(t)
	cases := []struct {
		name string
		env  *pb.Envelope
		want error
	}{
		{"hello", &pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{ProtocolVersion: 1}}}, nil},
		{"task request", &pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{}}}, nil},
		{"round status", &pb.Envelope{Body: &pb.Envelope_RoundStatusRequest{RoundStatusRequest: &pb.RoundStatusRequest{}}}, nil},
		{"model request", &pb.Envelope{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{Sha256: digest}}}, nil},
		{"update header", &pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: &pb.UpdateUpload{
			BaseModelSha256: digest, Delta: delta, Metrics: &pb.LocalMetrics{ValAuroc: 0.7}}}}, nil},
		// Messages only a coordinator sends never leave a site.
		{"error text", protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "patient Jane Doe"), ErrForbidden},
		{"welcome", &pb.Envelope{Body: &pb.Envelope_Welcome{Welcome: &pb.Welcome{SiteId: "x"}}}, ErrForbidden},
		{"task offer", &pb.Envelope{Body: &pb.Envelope_TaskOffer{TaskOffer: &pb.TaskOffer{}}}, ErrForbidden},
		{"empty", &pb.Envelope{}, ErrForbidden},
		{"model request with text for a digest", &pb.Envelope{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{Sha256: "MRN-0012345"}}}, ErrPayload},
		{"update with a NaN metric", &pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: &pb.UpdateUpload{
			BaseModelSha256: digest, Delta: delta, Metrics: &pb.LocalMetrics{TrainLoss: math.NaN()}}}}, ErrPayload},
		{"statistics with a histogram", &pb.Envelope{Body: &pb.Envelope_StatsUpload{StatsUpload: &pb.StatsUpload{CohortSize: 30,
			Stats: []*pb.FeatureStats{{Count: 30, Sum: 60, SumSq: 150, Bins: []uint64{0, 20, 10}}}}}}, nil},
		{"histogram beyond the feature's count", &pb.Envelope{Body: &pb.Envelope_StatsUpload{StatsUpload: &pb.StatsUpload{CohortSize: 30,
			Stats: []*pb.FeatureStats{{Count: 25, Sum: 60, SumSq: 150, Bins: []uint64{20, 10}}}}}}, ErrPayload},
		{"update without encoding", &pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: &pb.UpdateUpload{
			BaseModelSha256: digest, Delta: &pb.BlobRef{Sha256: digest, Size: 4}}}}, ErrPayload},
		{"evaluation", evalEnvelope(goodEval()), nil},
		{"evaluation with text for a digest", evalEnvelope(withEval(func(e *pb.EvalUpload) { e.ModelSha256 = "MRN-0012345" })), ErrPayload},
		// Secure aggregation: the four client messages, for the round
		// they name, and fetches of the three phases a client waits for.
		{"secagg advertise keys", secaggEnvelope("j", 3, sa[secagg.KindAdvertiseKeys]), nil},
		{"secagg share keys", secaggEnvelope("j", 3, sa[secagg.KindShareKeys]), nil},
		{"secagg masked input", secaggEnvelope("j", 3, sa[secagg.KindMaskedInput]), nil},
		{"secagg unmask response", secaggEnvelope("j", 3, sa[secagg.KindUnmaskResponse]), nil},
		{"secagg fetch key list", secaggFetch(1), nil},
		{"secagg fetch unmask request", secaggFetch(3), nil},
		// The coordinator's messages never leave a site, even well formed.
		{"secagg key list", secaggEnvelope("j", 3, sa[secagg.KindKeyList]), ErrForbidden},
		{"secagg routed shares", secaggEnvelope("j", 3, sa[secagg.KindRoutedShares]), ErrForbidden},
		{"secagg unmask request", secaggEnvelope("j", 3, sa[secagg.KindUnmaskRequest]), ErrForbidden},
		// Nothing may ride along after a client message, nor instead of one.
		{"secagg trailing bytes", secaggEnvelope("j", 3, append(slices.Clone(sa[secagg.KindAdvertiseKeys]), "MRN-0012345"...)), ErrPayload},
		{"secagg text for a payload", secaggEnvelope("j", 3, []byte("patient Jane Doe")), ErrPayload},
		{"secagg empty payload", secaggEnvelope("j", 3, nil), ErrPayload},
		{"secagg another job", secaggEnvelope("k", 3, sa[secagg.KindMaskedInput]), ErrPayload},
		{"secagg another round", secaggEnvelope("j", 4, sa[secagg.KindShareKeys]), ErrPayload},
		{"secagg fetch advertise keys", secaggFetch(0), ErrPayload},
		{"secagg fetch done", secaggFetch(4), ErrPayload},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			g, _, tapped := newGuard(t)
			var wire bytes.Buffer
			err := g.Send(&wire, tt.env)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Send = %v, want %v", err, tt.want)
			}
			if tt.want != nil && (wire.Len() != 0 || tapped.Len() != 0 || g.BytesSent() != 0) {
				t.Fatal("a refused message reached the wire")
			}
			if tt.want == nil {
				if got, err := protocol.ReadFrame(&wire, 0); err != nil || got.GetBody() == nil {
					t.Fatalf("sent frame does not decode: %v", err)
				}
				if !bytes.Equal(tapped.Bytes(), tapFrame(t, tt.env)) || g.BytesSent() != int64(tapped.Len()) {
					t.Fatal("tap and byte count do not match what was written")
				}
			}
		})
	}
}

func tapFrame(t *testing.T, env *pb.Envelope) []byte {
	var b bytes.Buffer
	if err := protocol.WriteFrame(&b, env); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestSendTensorChecksDeclaration(t *testing.T) {
	good := protocol.EncodeF32([]float32{1, -2, 3})
	ref := func(b []byte) *pb.BlobRef {
		return &pb.BlobRef{Sha256: protocol.Digest(b), Size: uint64(len(b)), Encoding: pb.Encoding_ENCODING_F32LE}
	}
	nan := bytes.Clone(good)
	copy(nan[4:], []byte{0, 0, 0xc0, 0x7f})
	cases := []struct {
		name string
		ref  *pb.BlobRef
		data []byte
		want error
	}{
		{"good", ref(good), good, nil},
		{"size differs from header", &pb.BlobRef{Sha256: protocol.Digest(good), Size: 8, Encoding: pb.Encoding_ENCODING_F32LE}, good, ErrPayload},
		{"digest differs", &pb.BlobRef{Sha256: protocol.Digest(nil), Size: 12, Encoding: pb.Encoding_ENCODING_F32LE}, good, ErrPayload},
		{"not finite", ref(nan), nan, ErrPayload},
		{"odd length", ref(good[:5]), good[:5], ErrPayload},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			g, _, _ := newGuard(t)
			var wire bytes.Buffer
			err := g.SendTensor(&wire, tt.ref, tt.data, "job", 1)
			if !errors.Is(err, tt.want) {
				t.Fatalf("SendTensor = %v, want %v", err, tt.want)
			}
			if tt.want != nil && wire.Len() != 0 {
				t.Fatal("refused bytes reached the wire")
			}
		})
	}
}

func TestEgressLogRecordsEverySend(t *testing.T) {
	g, logPath, _ := newGuard(t)
	var wire bytes.Buffer
	if err := g.Send(&wire, &pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{}}}); err != nil {
		t.Fatal(err)
	}
	body := protocol.EncodeF32([]float32{0.5, 0.25})
	ref := &pb.BlobRef{Sha256: protocol.Digest(body), Size: uint64(len(body)), Encoding: pb.Encoding_ENCODING_F32LE}
	if err := g.SendTensor(&wire, ref, body, "sepsis", 3); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 2 || recs[0].Kind != "hello" || recs[1].Kind != "update-body" {
		t.Fatalf("records = %+v", recs)
	}
	if recs[1].Bytes != len(body) || recs[1].SHA256 != protocol.Digest(body) || recs[1].Job != "sepsis" || recs[1].Round != 3 {
		t.Fatalf("update record = %+v", recs[1])
	}
	if int64(recs[0].Bytes+recs[1].Bytes) != g.BytesSent() || int64(wire.Len()) != g.BytesSent() {
		t.Fatalf("log says %d+%d bytes, guard counted %d, wire has %d", recs[0].Bytes, recs[1].Bytes, g.BytesSent(), wire.Len())
	}
}

// TestEgressLogRecordsSecAgg: a secure aggregation message is logged under
// its kind with the job and round it belongs to; a fetch under its own.
func TestEgressLogRecordsSecAgg(t *testing.T) {
	g, logPath, _ := newGuard(t)
	sa := secaggPayloads(t)
	var wire bytes.Buffer
	env := secaggEnvelope("j", 3, sa[secagg.KindMaskedInput])
	if err := g.Send(&wire, env); err != nil {
		t.Fatal(err)
	}
	if err := g.Send(&wire, secaggFetch(2)); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, bad, err := ReadLog(f, Filter{})
	if err != nil || len(bad) != 0 {
		t.Fatalf("ReadLog: %v, bad lines %v", err, bad)
	}
	if len(recs) != 2 {
		t.Fatalf("records = %+v", recs)
	}
	if r := recs[0]; r.Kind != KindSecAgg || r.Job != "j" || r.Round != 3 || r.SHA256 != protocol.Digest(tapFrame(t, env)) {
		t.Fatalf("secagg record = %+v", r)
	}
	if r := recs[1]; r.Kind != KindSecAggFetch || r.Job != "" {
		t.Fatalf("fetch record = %+v", r)
	}
}

// FuzzGuardSecAggMessage: whatever a secure aggregation envelope holds, the
// guard never panics, and it admits only a payload that decodes as a
// client's message for the envelope's job and round.
func FuzzGuardSecAggMessage(f *testing.F) {
	for _, b := range secaggPayloads(f) {
		f.Add("j", uint64(3), b)
		f.Add("j", uint64(3), append(slices.Clone(b), 0))
		f.Add("k", uint64(3), b)
		if len(b) > 8 {
			f.Add("j", uint64(3), b[:len(b)/2])
		}
	}
	f.Fuzz(func(t *testing.T, job string, round uint64, payload []byte) {
		kind, err := check(secaggEnvelope(job, round, payload))
		if err != nil {
			if !errors.Is(err, ErrPayload) && !errors.Is(err, ErrForbidden) {
				t.Fatalf("refused with %v, want ErrPayload or ErrForbidden", err)
			}
			return
		}
		m, derr := secagg.Decode(payload)
		if kind != KindSecAgg || derr != nil {
			t.Fatalf("admitted as %q a payload that does not decode (%v)", kind, derr)
		}
		if !m.Kind().FromClient() {
			t.Fatalf("admitted a %s", m.Kind())
		}
		h := secagg.HeaderOf(m)
		if h.JobID != job || h.Round != round {
			t.Fatalf("admitted a message of job %q round %d in an envelope of job %q round %d", h.JobID, h.Round, job, round)
		}
	})
}

// goodEval is an evaluation the guard admits: 40 records, 22 positives,
// four bins of which one is suppressed and one empty.
func goodEval() *pb.EvalUpload {
	return &pb.EvalUpload{JobId: "sepsis-eval", Round: 7, ModelSha256: protocol.Digest([]byte("model")),
		Count: 40, Positives: 22, Auroc: 0.8, Auprc: 0.75, Accuracy: 0.7, Brier: 0.18,
		Calibration: []*pb.CalibrationBin{
			{Count: 12, Positives: 2, SumPredicted: 1.5},
			{Suppressed: true},
			{},
			{Count: 25, Positives: 20, SumPredicted: 20.1},
		}}
}

// withEval is goodEval changed by f.
func withEval(f func(e *pb.EvalUpload)) *pb.EvalUpload {
	e := goodEval()
	f(e)
	return e
}

func evalEnvelope(e *pb.EvalUpload) *pb.Envelope {
	return &pb.Envelope{Body: &pb.Envelope_EvalUpload{EvalUpload: e}}
}

// TestGuardEvalUpload: an evaluation leaves only with a digest for its
// model, finite metrics in [0, 1] and counts that add up.
func TestGuardEvalUpload(t *testing.T) {
	bins := func(n int) []*pb.CalibrationBin {
		out := make([]*pb.CalibrationBin, n)
		for i := range out {
			out[i] = &pb.CalibrationBin{}
		}
		return out
	}
	cases := []struct {
		name string
		eval *pb.EvalUpload
		want error
	}{
		{"good", goodEval(), nil},
		{"no bins", withEval(func(e *pb.EvalUpload) { e.Calibration = nil }), nil},
		{"metrics at the bounds", withEval(func(e *pb.EvalUpload) { e.Auroc, e.Auprc, e.Accuracy, e.Brier = 0, 1, 0, 1 }), nil},
		{"bins fill the count", withEval(func(e *pb.EvalUpload) { e.Calibration[2] = &pb.CalibrationBin{Count: 3, Positives: 3, SumPredicted: 3} }), nil},
		{"the most bins", withEval(func(e *pb.EvalUpload) { e.Calibration = bins(MaxCalibrationBins) }), nil},

		{"no digest", withEval(func(e *pb.EvalUpload) { e.ModelSha256 = "" }), ErrPayload},
		{"upper-case digest", withEval(func(e *pb.EvalUpload) { e.ModelSha256 = strings.ToUpper(e.ModelSha256) }), ErrPayload},
		{"NaN AUROC", withEval(func(e *pb.EvalUpload) { e.Auroc = math.NaN() }), ErrPayload},
		{"infinite AUPRC", withEval(func(e *pb.EvalUpload) { e.Auprc = math.Inf(1) }), ErrPayload},
		{"accuracy above 1", withEval(func(e *pb.EvalUpload) { e.Accuracy = 1.5 }), ErrPayload},
		{"negative Brier", withEval(func(e *pb.EvalUpload) { e.Brier = -0.1 }), ErrPayload},
		{"AUROC above 1", withEval(func(e *pb.EvalUpload) { e.Auroc = 1.0000001 }), ErrPayload},
		{"positives beyond the count", withEval(func(e *pb.EvalUpload) { e.Positives = 41 }), ErrPayload},
		{"bin positives beyond its count", withEval(func(e *pb.EvalUpload) { e.Calibration[0].Positives = 13 }), ErrPayload},
		{"bins beyond the count", withEval(func(e *pb.EvalUpload) { e.Calibration[2] = &pb.CalibrationBin{Count: 4} }), ErrPayload},
		{"one bin beyond the count", withEval(func(e *pb.EvalUpload) { e.Calibration = []*pb.CalibrationBin{{Count: 41}} }), ErrPayload},
		{"bins that wrap around", withEval(func(e *pb.EvalUpload) {
			e.Count = math.MaxUint64
			e.Calibration = []*pb.CalibrationBin{{Count: math.MaxUint64}, {Count: 2}}
		}), ErrPayload},
		{"NaN sum of risks", withEval(func(e *pb.EvalUpload) { e.Calibration[0].SumPredicted = math.NaN() }), ErrPayload},
		{"infinite sum of risks", withEval(func(e *pb.EvalUpload) { e.Calibration[0].SumPredicted = math.Inf(1) }), ErrPayload},
		{"negative sum of risks", withEval(func(e *pb.EvalUpload) { e.Calibration[0].SumPredicted = -1 }), ErrPayload},
		{"sum of risks beyond the bin's count", withEval(func(e *pb.EvalUpload) { e.Calibration[0].SumPredicted = 12.5 }), ErrPayload},
		{"suppressed bin with a count", withEval(func(e *pb.EvalUpload) { e.Calibration[1].Count = 3 }), ErrPayload},
		{"suppressed bin with positives", withEval(func(e *pb.EvalUpload) { e.Calibration[1].Positives = 1 }), ErrPayload},
		{"suppressed bin with a sum", withEval(func(e *pb.EvalUpload) { e.Calibration[1].SumPredicted = 0.5 }), ErrPayload},
		{"too many bins", withEval(func(e *pb.EvalUpload) { e.Calibration = bins(MaxCalibrationBins + 1) }), ErrPayload},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			g, _, tapped := newGuard(t)
			var wire bytes.Buffer
			err := g.Send(&wire, evalEnvelope(tt.eval))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Send = %v, want %v", err, tt.want)
			}
			if tt.want != nil && (wire.Len() != 0 || tapped.Len() != 0 || g.BytesSent() != 0) {
				t.Fatal("a refused evaluation reached the wire")
			}
			if tt.want == nil && !bytes.Equal(wire.Bytes(), tapFrame(t, evalEnvelope(tt.eval))) {
				t.Fatal("the admitted evaluation is not what was written")
			}
		})
	}
}

// TestEgressLogRecordsEval: an evaluation is logged as "eval" with its job
// and round.
func TestEgressLogRecordsEval(t *testing.T) {
	g, logPath, _ := newGuard(t)
	env := evalEnvelope(goodEval())
	var wire bytes.Buffer
	if err := g.Send(&wire, env); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, bad, err := ReadLog(f, Filter{Job: "sepsis-eval"})
	if err != nil || len(bad) != 0 {
		t.Fatalf("ReadLog: %v, bad lines %v", err, bad)
	}
	if len(recs) != 1 {
		t.Fatalf("records = %+v", recs)
	}
	if r := recs[0]; r.Kind != KindEval || r.Round != 7 || r.Bytes != wire.Len() || r.SHA256 != protocol.Digest(tapFrame(t, env)) {
		t.Fatalf("eval record = %+v", r)
	}
}

// FuzzGuardEnvelope: whatever envelope an agent hands the guard, it never
// panics and refuses with ErrPayload or ErrForbidden; an evaluation it
// admits has counts that add up and metrics in [0, 1].
func FuzzGuardEnvelope(f *testing.F) {
	seeds := []*pb.Envelope{
		evalEnvelope(goodEval()),
		evalEnvelope(withEval(func(e *pb.EvalUpload) { e.Calibration[1].Count = 3 })),
		evalEnvelope(withEval(func(e *pb.EvalUpload) {
			e.Count, e.Calibration = math.MaxUint64, []*pb.CalibrationBin{{Count: math.MaxUint64}, {Count: 2}}
		})),
		{Body: &pb.Envelope_StatsUpload{StatsUpload: &pb.StatsUpload{CohortSize: 30, Stats: []*pb.FeatureStats{{Count: 30, Bins: []uint64{10, 20}}}}}},
		{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{Sha256: protocol.Digest(nil)}}},
	}
	for _, env := range seeds {
		b, err := proto.Marshal(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		env := new(pb.Envelope)
		if proto.Unmarshal(raw, env) != nil {
			return
		}
		kind, err := check(env)
		if err != nil {
			if !errors.Is(err, ErrPayload) && !errors.Is(err, ErrForbidden) {
				t.Fatalf("refused with %v, want ErrPayload or ErrForbidden", err)
			}
			return
		}
		e := env.GetEvalUpload()
		if e == nil {
			return
		}
		if kind != KindEval {
			t.Fatalf("evaluation admitted as %q", kind)
		}
		in01 := func(x float64) bool { return x >= 0 && x <= 1 }
		if !in01(e.GetAuroc()) || !in01(e.GetAuprc()) || !in01(e.GetAccuracy()) || !in01(e.GetBrier()) ||
			e.GetPositives() > e.GetCount() || len(e.GetCalibration()) > MaxCalibrationBins || !isDigest(e.GetModelSha256()) {
			t.Fatalf("admitted an inconsistent evaluation: %v", e)
		}
		total := new(big.Int)
		for _, b := range e.GetCalibration() {
			if b.GetPositives() > b.GetCount() || !(b.GetSumPredicted() >= 0 && b.GetSumPredicted() <= float64(b.GetCount())) ||
				b.GetSuppressed() && (b.GetCount() != 0 || b.GetPositives() != 0 || b.GetSumPredicted() != 0) {
				t.Fatalf("admitted an inconsistent calibration bin: %v", b)
			}
			total.Add(total, new(big.Int).SetUint64(b.GetCount()))
		}
		if total.Cmp(new(big.Int).SetUint64(e.GetCount())) > 0 {
			t.Fatalf("admitted bins holding %v records of %d", total, e.GetCount())
		}
	})
}

// TestGuardDriftAndDeployment: drift reports and deployment requests leave
// only with a job id, a digest and a finite, non-negative index.
func TestGuardDriftAndDeployment(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	for _, c := range []struct {
		name string
		env  *pb.Envelope
		ok   bool
	}{
		{"drift", &pb.Envelope{Body: &pb.Envelope_DriftReport{DriftReport: &pb.DriftReport{JobId: "sepsis", ModelSha256: digest, Scored: 40, MaxPsi: 0.2}}}, true},
		{"drift NaN", &pb.Envelope{Body: &pb.Envelope_DriftReport{DriftReport: &pb.DriftReport{JobId: "sepsis", ModelSha256: digest, MaxPsi: math.NaN()}}}, false},
		{"drift negative", &pb.Envelope{Body: &pb.Envelope_DriftReport{DriftReport: &pb.DriftReport{JobId: "sepsis", ModelSha256: digest, MaxPsi: -1}}}, false},
		{"drift text for a job", &pb.Envelope{Body: &pb.Envelope_DriftReport{DriftReport: &pb.DriftReport{JobId: "Jane Doe", ModelSha256: digest}}}, false},
		{"drift no digest", &pb.Envelope{Body: &pb.Envelope_DriftReport{DriftReport: &pb.DriftReport{JobId: "sepsis", ModelSha256: "x"}}}, false},
		{"deployment", &pb.Envelope{Body: &pb.Envelope_DeploymentRequest{DeploymentRequest: &pb.DeploymentRequest{JobId: "sepsis"}}}, true},
		{"deployment current", &pb.Envelope{Body: &pb.Envelope_DeploymentRequest{DeploymentRequest: &pb.DeploymentRequest{JobId: "sepsis", CurrentSha256: digest}}}, true},
		{"deployment text", &pb.Envelope{Body: &pb.Envelope_DeploymentRequest{DeploymentRequest: &pb.DeploymentRequest{JobId: "sepsis", CurrentSha256: "hello"}}}, false},
	} {
		if _, err := check(c.env); (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
