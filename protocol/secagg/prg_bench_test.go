package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"testing"
)

func BenchmarkAddMask(b *testing.B) {
	acc := make([]uint32, benchLength)
	seed := make([]byte, 32)
	buf := make([]byte, prgChunkSize)
	b.SetBytes(4 * benchLength)
	for b.Loop() {
		addMask(acc, seed, false, buf)
	}
}

func BenchmarkAESCTRKeystream(b *testing.B) {
	buf := make([]byte, 4*benchLength)
	blk, _ := aes.NewCipher(make([]byte, 32))
	b.SetBytes(4 * benchLength)
	for b.Loop() {
		s := cipher.NewCTR(blk, make([]byte, 16))
		s.XORKeyStream(buf, buf)
	}
}
