package coordinator

import (
	"context"
	"io"
	"testing"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"google.golang.org/protobuf/proto"
)

// TestInterruptedUploadResumes cuts an upload in the middle of its body:
// the coordinator keeps what arrived, says how much in the round status,
// and accepts the rest from that offset. A resume from the wrong offset is
// answered UNAVAILABLE (retry), never a refusal that would make the agent
// drop its update. A model download resumes from an offset too.
func TestInterruptedUploadResumes(t *testing.T) {
	job := testJob("j1", 1, 1)
	job.Model.NumFeatures = 3
	tc := startCluster(t, 1, []string{"st-mary"}, []JobSpec{job})
	leader, _ := tc.leader(t)
	a, offer := tc.offerFor(t, leader, "st-mary")
	global := download(t, a, offer)

	// A download from byte 4 gets the last three weights.
	s, err := a.conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	protocol.WriteFrame(s, &pb.Envelope{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{
		JobId: "j1", Sha256: offer.GetModel().GetSha256(), Offset: 4}}})
	hdr, err := protocol.ReadFrame(s, 0)
	if err != nil || hdr.GetBlobHeader().GetOffset() != 4 {
		t.Fatalf("resumed download header: %v %v", hdr, err)
	}
	tail, _ := io.ReadAll(s)
	if len(tail) != 12 {
		t.Fatalf("resumed download sent %d bytes, want 12", len(tail))
	}

	delta := []float32{1, 2, 3, 4}
	body := protocol.EncodeF32(delta)
	digest := protocol.Digest(body)
	up := &pb.UpdateUpload{JobId: "j1", Round: 1, BaseModelSha256: offer.GetModel().GetSha256(), SampleCount: 10,
		Metrics: &pb.LocalMetrics{}, Delta: &pb.BlobRef{Sha256: digest, Size: uint64(len(body)), Encoding: pb.Encoding_ENCODING_F32LE}}

	// The first 6 bytes, then the stream ends (as when the agent's link
	// drops; a reset could discard the bytes before they are sent).
	s, err = a.conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	protocol.WriteFrame(s, &pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: up}})
	s.Write(body[:6])
	s.Close()
	status := func() *pb.RoundStatus {
		return a.call(t, &pb.Envelope{Body: &pb.Envelope_RoundStatusRequest{RoundStatusRequest: &pb.RoundStatusRequest{
			JobId: "j1", Round: 1, UpdateSha256: digest}}}).GetRoundStatus()
	}
	waitFor(t, leader, "the partial upload to be counted", func() bool {
		return leader.Stats().UploadsInterrupted.Load() == 1
	})
	if rs := status(); rs.GetHaveUpdate() || rs.GetHaveBytes() != 6 {
		t.Fatalf("round status after the cut: %v, want have_bytes 6", rs)
	}

	// A resume from the wrong offset: retry, not a refusal.
	bad := proto.CloneOf(up)
	bad.Offset = 9
	if resp := uploadRaw(t, a, bad, body[9:]); resp.GetError().GetCode() != pb.ErrorCode_ERROR_CODE_UNAVAILABLE {
		t.Fatalf("resume from a wrong offset answered %v", resp)
	}
	// The right one.
	good := proto.CloneOf(up)
	good.Offset = 6
	if resp := uploadRaw(t, a, good, body[6:]); resp.GetAck().GetSha256() != digest {
		t.Fatalf("resumed upload answered %v", resp)
	}
	if got := leader.Stats().UploadsResumed.Load(); got != 1 {
		t.Fatalf("uploads resumed = %d", got)
	}
	waitFor(t, leader, "round 1 to commit", func() bool {
		j, _ := leader.Job("j1")
		return j.CommittedRounds() == 1
	})
	j, _ := leader.Job("j1")
	w, err := leader.ModelWeights(context.Background(), j.Models[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := protocol.DecodeF32(w)
	for i := range got {
		if got[i] != global[i]+delta[i] {
			t.Fatalf("model after a resumed upload = %v, want %v + %v", got, global, delta)
		}
	}
}
