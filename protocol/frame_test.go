package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/cohort-fl/cohort/protocol/pb"
	"google.golang.org/protobuf/proto"
)

func TestFrameRoundTrip(t *testing.T) {
	msgs := []*pb.Envelope{
		{Body: &pb.Envelope_Hello{Hello: &pb.Hello{ProtocolVersion: 1, MinProtocolVersion: 1, AgentVersion: "dev"}}},
		{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{WaitMs: 500}}},
		{Body: &pb.Envelope_UpdateUpload{UpdateUpload: &pb.UpdateUpload{JobId: "j", Round: 3, SampleCount: 10,
			Delta: &pb.BlobRef{Sha256: Digest(nil), Size: 8, Encoding: pb.Encoding_ENCODING_F32LE}}}},
		Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "bad %d", 1),
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteFrame(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range msgs {
		got, err := ReadFrame(&buf, 0)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("frame %d = %v, want %v", i, got, want)
		}
	}
	if _, err := ReadFrame(&buf, 0); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	hdr := func(n uint32, body ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, n)
		return append(b, body...)
	}
	cases := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"too large", hdr(DefaultMaxFrame + 1), 0, ErrFrameTooLarge},
		{"above a smaller limit", hdr(100, make([]byte, 100)...), 10, ErrFrameTooLarge},
		{"truncated header", []byte{0, 0}, 0, io.ErrUnexpectedEOF},
		{"truncated body", hdr(10, 1, 2, 3), 0, io.ErrUnexpectedEOF},
		{"not protobuf", hdr(3, 0xff, 0xff, 0xff), 0, ErrMalformedFrame},
		{"empty envelope", hdr(0), 0, ErrMalformedFrame},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tt.in), tt.max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestWriteFrameRefusesOversized(t *testing.T) {
	big := &pb.Envelope{Body: &pb.Envelope_Error{Error: &pb.Error{Message: string(make([]byte, DefaultMaxFrame))}}}
	if err := WriteFrame(io.Discard, big); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame decoder: it must return
// an envelope or an error, never panic, and what it decodes must re-encode.
func FuzzReadFrame(f *testing.F) {
	for _, env := range []*pb.Envelope{
		{Body: &pb.Envelope_Hello{Hello: &pb.Hello{ProtocolVersion: 1}}},
		{Body: &pb.Envelope_ModelRequest{ModelRequest: &pb.ModelRequest{JobId: "j", Sha256: Digest(nil), Offset: 4}}},
		Errorf(pb.ErrorCode_ERROR_CODE_UNKNOWN_SITE, "nope"),
	} {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, env); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0, 0, 0, 1, 0x08})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			env, err := ReadFrame(r, 4096)
			if err != nil {
				return
			}
			if env.GetBody() == nil {
				t.Fatal("decoded an envelope without a body")
			}
			var buf bytes.Buffer
			if err := WriteFrame(&buf, env); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}

func TestTensorRoundTrip(t *testing.T) {
	v := []float32{0, -1.5, 3.25, 1e-30, 7e30}
	got, err := DecodeF32(EncodeF32(v))
	if err != nil {
		t.Fatal(err)
	}
	for i := range v {
		if got[i] != v[i] {
			t.Fatalf("element %d = %v, want %v", i, got[i], v[i])
		}
	}
	if b := EncodeF32([]float32{1}); !bytes.Equal(b, []byte{0, 0, 0x80, 0x3f}) {
		t.Fatalf("1.0 encodes as % x, want little-endian 00 00 80 3f", b)
	}
	for name, b := range map[string][]byte{
		"odd length": {1, 2, 3},
		"NaN":        {0, 0, 0xc0, 0x7f},
		"+Inf":       {0, 0, 0x80, 0x7f},
	} {
		if _, err := DecodeF32(b); !errors.Is(err, ErrBadTensor) {
			t.Errorf("%s: err = %v, want ErrBadTensor", name, err)
		}
	}
}

func TestNegotiate(t *testing.T) {
	cases := []struct {
		min, max uint32
		want     uint32
		err      bool
	}{
		{1, 1, 1, false},
		{1, 5, Version, false},
		{Version + 1, Version + 2, 0, true},
		{0, 0, 0, true},
		{3, 1, 0, true},
	}
	for _, c := range cases {
		v, err := Negotiate(c.min, c.max)
		if (err != nil) != c.err || v != c.want {
			t.Errorf("Negotiate(%d, %d) = %d, %v", c.min, c.max, v, err)
		}
	}
}
