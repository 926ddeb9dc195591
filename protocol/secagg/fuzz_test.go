package secagg

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// seedMessages returns the wire encoding of one message of every kind.
func seedMessages(t testing.TB) [][]byte {
	f := newFixture(t, 3, PhaseUnmasking)
	resp, err := f.clients[0].Unmask(f.req)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range []Message{f.adv[0], f.kl, f.sk[0], f.rs[1], f.mi[2], f.req, resp,
		&UnmaskRequest{Header: f.req.Header, Survivors: []int{1, 2}, Dropped: []int{3}},
		&UnmaskResponse{Header: f.req.Header, KeyShares: resp.SelfMaskShares[:1]}} {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzDecode: any bytes a peer sends either decode into a message whose
// re-encoding decodes to the same message, or give an error; never a
// panic or an outsized allocation.
func FuzzDecode(f *testing.F) {
	for _, b := range seedMessages(f) {
		f.Add(b)
	}
	f.Add([]byte("SA\x01\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %s does not re-encode: %v", m.Kind(), err)
		}
		m2, err := Decode(b)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", m.Kind(), err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("%s changes across a re-encoding", m.Kind())
		}
	})
}

// FuzzShare: share decoding accepts exactly the canonical encodings.
func FuzzShare(f *testing.F) {
	s, _ := Split(bytes.Repeat([]byte{3}, SecretSize), 2, []int{1, 2}, nil)
	b, _ := s[1].MarshalBinary()
	f.Add(b)
	f.Add(make([]byte, ShareSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		var sh Share
		if err := sh.UnmarshalBinary(data); err != nil {
			return
		}
		out, _ := sh.MarshalBinary()
		if !bytes.Equal(out, data) {
			t.Fatal("share encoding is not canonical")
		}
		if sh.X != s[0].X {
			if _, err := Combine([]Share{sh, s[0]}, 2); err != nil && !errors.Is(err, ErrInconsistentShares) {
				t.Fatalf("combining a decoded share: %v", err)
			}
		}
	})
}

// FuzzServerHandle feeds decoded bytes to a server in every phase: no
// panic, and a refused message leaves the state as it was.
func FuzzServerHandle(f *testing.F) {
	for _, b := range seedMessages(f) {
		f.Add(b, uint8(0))
	}
	var snaps [][]byte
	for _, p := range []Phase{PhaseAdvertiseKeys, PhaseShareKeys, PhaseMaskedInput, PhaseUnmasking} {
		fx := newFixture(f, 3, p)
		b, err := json.Marshal(fx.srv)
		if err != nil {
			f.Fatal(err)
		}
		snaps = append(snaps, b)
	}
	clients := sessionFor(3, 7).Clients
	f.Fuzz(func(t *testing.T, data []byte, who uint8) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		for _, snap := range snaps {
			var s Server
			if err := json.Unmarshal(snap, &s); err != nil {
				t.Fatal(err)
			}
			if err := s.Handle(clients[int(who)%len(clients)], m); err != nil {
				after, _ := json.Marshal(&s)
				if !bytes.Equal(after, snap) {
					t.Fatalf("refused %s (%v) changed the server state", m.Kind(), err)
				}
			}
		}
	})
}

// FuzzClientHandle feeds decoded bytes to a client at every step: no
// panic, only errors or well-formed answers.
func FuzzClientHandle(f *testing.F) {
	for _, b := range seedMessages(f) {
		f.Add(b)
	}
	fx := newFixture(f, 3, PhaseMaskedInput)
	var snaps [][]byte
	for _, c := range []*Client{fx.clients[0]} {
		b, _ := c.MarshalBinary()
		snaps = append(snaps, b)
	}
	early := newFixture(f, 3, PhaseShareKeys)
	b, _ := early.clients[1].MarshalBinary()
	snaps = append(snaps, b)
	late := newFixture(f, 3, PhaseUnmasking)
	b, _ = late.clients[2].MarshalBinary()
	snaps = append(snaps, b)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		for _, snap := range snaps {
			c, err := RestoreClient(snap, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch m := m.(type) {
			case *KeyList:
				_, err = c.ShareKeys(m)
			case *RoutedShares:
				_, err = c.MaskedInput(m, make([]float32, fx.cfg.VectorLength))
			case *UnmaskRequest:
				_, err = c.Unmask(m)
			}
			_ = err
		}
	})
}
