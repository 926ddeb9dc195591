package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
)

// EncodeF32 packs v as little-endian IEEE-754 float32 bytes
// (pb.Encoding_ENCODING_F32LE).
func EncodeF32(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// DecodeF32 unpacks little-endian float32 bytes. It refuses a length that is
// not a multiple of four and any NaN or infinite value.
func DecodeF32(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("%w: f32le tensor of %d bytes is not a multiple of 4", ErrBadTensor, len(b))
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		x := math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("%w: element %d is not finite", ErrBadTensor, i)
		}
		v[i] = x
	}
	return v, nil
}

// Digest is the lowercase hex SHA-256 of b, the name of a content-addressed
// blob.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
