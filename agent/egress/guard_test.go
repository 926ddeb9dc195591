package egress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
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

func TestGuardAdmitsOnlyAgentMessages(t *testing.T) {
	digest := protocol.Digest([]byte("x"))
	delta := &pb.BlobRef{Sha256: digest, Size: 4, Encoding: pb.Encoding_ENCODING_F32LE}
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
