package aggregator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	s := State{Rule: "fedadam", Vectors: [][]float32{{1, -2, 3.5}, {0, float32(math.SmallestNonzeroFloat32), math.MaxFloat32}}}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if want := 16 + len("fedadam") + 2*3*4 + 4; len(b) != want {
		t.Errorf("encoded %d bytes, want %d", len(b), want)
	}
	got, err := DecodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rule != s.Rule || len(got.Vectors) != 2 || !equalBits(got.Vectors[0], s.Vectors[0]) || !equalBits(got.Vectors[1], s.Vectors[1]) {
		t.Errorf("decoded %+v, want %+v", got, s)
	}
	again, err := got.Encode()
	if err != nil || !bytes.Equal(again, b) {
		t.Errorf("re-encoding differs: %x vs %x (%v)", again, b, err)
	}
}

// TestStateLayout pins the documented byte layout (DESIGN.md).
func TestStateLayout(t *testing.T) {
	b, err := State{Rule: "x1", Vectors: [][]float32{{1}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{'A', 'G', 'S', 'T', 1, 4, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 'x', '1', 0, 0, 0x80, 0x3f}
	want = binary.LittleEndian.AppendUint32(want, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli)))
	if !bytes.Equal(b, want) {
		t.Errorf("encoding\n%x, want\n%x", b, want)
	}
}

func TestStateEncodeErrors(t *testing.T) {
	for name, s := range map[string]State{
		"no rule":       {Vectors: [][]float32{{1}}},
		"bad rule":      {Rule: "Fed Adam", Vectors: [][]float32{{1}}},
		"long rule":     {Rule: "abcdefghijklmnopqrstuvwxyzabcdefg", Vectors: [][]float32{{1}}},
		"no vectors":    {Rule: "r"},
		"empty vector":  {Rule: "r", Vectors: [][]float32{{}}},
		"ragged":        {Rule: "r", Vectors: [][]float32{{1, 2}, {1}}},
		"non-finite":    {Rule: "r", Vectors: [][]float32{{1, float32(math.NaN())}}},
		"too many vecs": {Rule: "r", Vectors: make([][]float32, 17)},
	} {
		if _, err := s.Encode(); err == nil {
			t.Errorf("%s: Encode succeeded", name)
		}
	}
}

func TestDecodeStateRejects(t *testing.T) {
	good, err := State{Rule: "fedyogi", Vectors: [][]float32{{1, 2}, {3, 4}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// reseal fixes the checksum after a header edit, so the decoder must
	// catch the edit itself.
	reseal := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
		return b
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"empty":           nil,
		"truncated":       good[:len(good)-1],
		"extended":        append(bytes.Clone(good), 0),
		"magic":           edit(func(b []byte) []byte { b[0] = 'X'; return reseal(b) }),
		"version 2":       edit(func(b []byte) []byte { b[4] = 2; return reseal(b) }),
		"float64 elems":   edit(func(b []byte) []byte { b[5] = 8; return reseal(b) }),
		"zero vectors":    edit(func(b []byte) []byte { b[6] = 0; return reseal(b) }),
		"vector count":    edit(func(b []byte) []byte { b[6] = 3; return reseal(b) }),
		"rule length 0":   edit(func(b []byte) []byte { b[7] = 0; return reseal(b) }),
		"rule length":     edit(func(b []byte) []byte { b[7] = 6; return reseal(b) }),
		"dim":             edit(func(b []byte) []byte { b[8] = 3; return reseal(b) }),
		"dim 0":           edit(func(b []byte) []byte { b[8] = 0; return reseal(b) }),
		"huge dim":        edit(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[8:], 1<<62); return reseal(b) }),
		"overflowing dim": edit(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[8:], math.MaxUint64); return reseal(b) }),
		"rule chars":      edit(func(b []byte) []byte { b[16] = 'F'; return reseal(b) }),
		"bit flip":        edit(func(b []byte) []byte { b[len(b)-6] ^= 1; return b }),
		"checksum":        edit(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }),
		"NaN value": edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[16+7:], 0x7fc00000)
			return reseal(b)
		}),
	}
	for name, b := range cases {
		if _, err := DecodeState(b); !errors.Is(err, ErrState) {
			t.Errorf("%s: err = %v, want ErrState", name, err)
		}
	}
}

// FuzzDecodeState feeds arbitrary bytes (as could come from a corrupt Raft
// entry or blob) to the decoder and to every stateful rule's Begin: they
// must never panic, accept only what re-encodes to the same bytes, and
// allocate no more than the input implies.
func FuzzDecodeState(f *testing.F) {
	for _, s := range []State{
		{Rule: "fedadam", Vectors: [][]float32{{0.1, -0.2}, {1e-6, 2e-6}}},
		{Rule: "fedavgm", Vectors: [][]float32{{1, 2}}},
		{Rule: "fedyogi", Vectors: [][]float32{{1, 2}, {-1, 2}}},
	} {
		b, err := s.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-3])
	}
	f.Add([]byte("AGST\x01\x04\x01\x01\xff\xff\xff\xff\xff\xff\xff\xffr"))
	f.Add([]byte{})
	stateful := []Strategy{
		FedAvgM{ServerLR: 1, Momentum: 0.9},
		FedAdam{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		FedYogi{ServerLR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		FedAdagrad{ServerLR: 0.1, Beta1: 0.9, Tau: 1e-3},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			if !errors.Is(err, ErrState) {
				t.Fatalf("error %v does not wrap ErrState", err)
			}
		} else {
			again, err := s.Encode()
			if err != nil {
				t.Fatalf("decoded state does not encode: %v", err)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("decode/encode not identity:\n%x\n%x", b, again)
			}
		}
		for _, st := range stateful {
			dim := 2
			if err == nil {
				dim = len(s.Vectors[0])
			}
			if dim > 1<<16 {
				continue
			}
			r, berr := st.Begin(make([]float32, dim), b)
			if berr != nil {
				if len(b) > 0 && !errors.Is(berr, ErrState) {
					t.Fatalf("%s: Begin error %v does not wrap ErrState", st.Name(), berr)
				}
				continue
			}
			if err != nil && len(b) > 0 {
				t.Fatalf("%s: Begin accepted state DecodeState rejects: %v", st.Name(), err)
			}
			if err := r.Add(make([]float32, dim), 1); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Finish(); err != nil && !errors.Is(err, ErrNotFinite) {
				t.Fatalf("%s: Finish: %v", st.Name(), err)
			}
		}
	})
}
