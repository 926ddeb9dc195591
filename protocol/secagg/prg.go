package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// Domain separation for every key the protocol derives. Each derivation
// binds the protocol version, its purpose, the session (job and round) and
// the client indices it is for, so no key or mask is reused across rounds,
// jobs, pairs or purposes.
const (
	kdfPrefix    = "cohort/secagg/v1"
	labelPair    = "pairwise-mask"
	labelSelf    = "self-mask"
	labelShares  = "share-encryption"
	labelGraph   = "graph"
	prgChunkSize = 16 << 10
)

// context encodes a label, the session and indices unambiguously (each
// variable-length field is length-prefixed).
func context(label string, h Header, idx ...int) []byte {
	b := make([]byte, 0, len(kdfPrefix)+len(label)+len(h.JobID)+16+4*len(idx))
	b = append(b, kdfPrefix...)
	b = append(b, 0)
	b = append(b, byte(len(label)))
	b = append(b, label...)
	b = append(b, byte(len(h.JobID)))
	b = append(b, h.JobID...)
	b = binary.BigEndian.AppendUint64(b, h.Round)
	for _, i := range idx {
		b = binary.BigEndian.AppendUint32(b, uint32(i))
	}
	return b
}

// deriveKey is HKDF-SHA256(secret, salt = none, info = context) → 32 bytes.
func deriveKey(secret []byte, label string, h Header, idx ...int) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, string(context(label, h, idx...)), 32)
	if err != nil {
		// Only an output longer than 255·32 bytes fails.
		panic("secagg: hkdf: " + err.Error())
	}
	return k
}

// pairSeed derives the pairwise mask seed of clients a and b from their
// X25519 shared secret; it is symmetric in a and b.
func pairSeed(shared []byte, h Header, a, b int) []byte {
	return deriveKey(shared, labelPair, h, min(a, b), max(a, b))
}

// selfSeed derives client u's self-mask seed from its secret b_u.
func selfSeed(b []byte, h Header, u int) []byte {
	return deriveKey(b, labelSelf, h, u)
}

// shareKey derives the AEAD key for shares that client from sends to
// client to; each direction has its own key.
func shareKey(shared []byte, h Header, from, to int) []byte {
	return deriveKey(shared, labelShares, h, from, to)
}

// prg expands a 32-byte seed into a stream of uint32 words: AES-256 in
// counter mode from a zero IV, words read little-endian. A seed is used
// for one vector only, so the fixed IV is safe.
type prg struct {
	stream cipher.Stream
	buf    []byte
}

func newPRG(seed []byte, buf []byte) *prg {
	block, err := aes.NewCipher(seed)
	if err != nil {
		panic("secagg: aes: " + err.Error()) // seeds are always 32 bytes
	}
	if cap(buf) < prgChunkSize {
		buf = make([]byte, prgChunkSize)
	}
	return &prg{stream: cipher.NewCTR(block, make([]byte, aes.BlockSize)), buf: buf[:prgChunkSize]} // #nosec G407 -- AES-CTR as a PRG: every seed gives its own AES key, so the fixed zero IV never repeats a keystream under one key
}

// addMask adds (or, with neg, subtracts) PRG(seed) to acc, modulo 2^32.
// buf is scratch space (may be nil).
func addMask(acc []uint32, seed []byte, neg bool, buf []byte) {
	g := newPRG(seed, buf)
	for len(acc) > 0 {
		n := min(len(acc), prgChunkSize/4)
		b := g.buf[:4*n]
		clear(b)
		g.stream.XORKeyStream(b, b)
		if neg {
			subWords(acc[:n], b)
		} else {
			addWords(acc[:n], b)
		}
		acc = acc[n:]
	}
}

// addWords adds the little-endian words of b (4·len(a) bytes) to a.
func addWords(a []uint32, b []byte) {
	for len(a) >= 4 && len(b) >= 16 {
		a[0] += binary.LittleEndian.Uint32(b[0:4])
		a[1] += binary.LittleEndian.Uint32(b[4:8])
		a[2] += binary.LittleEndian.Uint32(b[8:12])
		a[3] += binary.LittleEndian.Uint32(b[12:16])
		a, b = a[4:], b[16:]
	}
	for i := range a {
		a[i] += binary.LittleEndian.Uint32(b[4*i:])
	}
}

// subWords subtracts the little-endian words of b from a.
func subWords(a []uint32, b []byte) {
	for len(a) >= 4 && len(b) >= 16 {
		a[0] -= binary.LittleEndian.Uint32(b[0:4])
		a[1] -= binary.LittleEndian.Uint32(b[4:8])
		a[2] -= binary.LittleEndian.Uint32(b[8:12])
		a[3] -= binary.LittleEndian.Uint32(b[12:16])
		a, b = a[4:], b[16:]
	}
	for i := range a {
		a[i] -= binary.LittleEndian.Uint32(b[4*i:])
	}
}

// uint64 returns the next 64-bit word of the stream.
func (g *prg) uint64() uint64 {
	var b [8]byte
	g.stream.XORKeyStream(b[:], b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// intn returns a uniform integer in [0, n), by rejection.
func (g *prg) intn(n int) int {
	limit := ^uint64(0) - ^uint64(0)%uint64(n)
	for {
		if v := g.uint64(); v < limit {
			return int(v % uint64(n))
		}
	}
}
