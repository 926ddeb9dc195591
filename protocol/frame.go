package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cohort-fl/cohort/protocol/pb"
	"google.golang.org/protobuf/proto"
)

// DefaultMaxFrame bounds a control frame's body. Blobs (models and updates)
// travel as raw bytes after a header frame and are bounded separately.
const DefaultMaxFrame = 1 << 20

// A frame is a 4-byte big-endian body length followed by the body, one
// marshalled Envelope.
const frameHeader = 4

// WriteFrame marshals env and writes it as one frame.
func WriteFrame(w io.Writer, env *pb.Envelope) error {
	body, err := proto.Marshal(env)
	if err != nil {
		return fmt.Errorf("marshal frame: %w", err)
	}
	if len(body) > DefaultMaxFrame {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrFrameTooLarge, len(body), DefaultMaxFrame)
	}
	buf := make([]byte, frameHeader+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[frameHeader:], body)
	_, err = w.Write(buf)
	return err
}

// ReadFrame reads one frame of at most maxBody bytes (DefaultMaxFrame when
// maxBody <= 0) and decodes its Envelope. A clean end of stream before the
// first header byte is io.EOF; a truncated frame is io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, maxBody int) (*pb.Envelope, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxFrame
	}
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(maxBody) {
		return nil, fmt.Errorf("%w: declared %d bytes (max %d)", ErrFrameTooLarge, n, maxBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read frame body: %w", err)
	}
	return DecodeEnvelope(body)
}

// DecodeEnvelope decodes a frame body. An envelope with no body set is
// malformed.
func DecodeEnvelope(body []byte) (*pb.Envelope, error) {
	env := new(pb.Envelope)
	if err := proto.Unmarshal(body, env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedFrame, err)
	}
	if env.GetBody() == nil {
		return nil, fmt.Errorf("%w: empty envelope", ErrMalformedFrame)
	}
	return env, nil
}
