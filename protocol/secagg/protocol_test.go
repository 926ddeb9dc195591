package secagg

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// fixture is a run driven step by step with every client taking part.
type fixture struct {
	cfg     Config
	sess    Session
	srv     *Server
	clients []*Client
	adv     []*AdvertiseKeys
	kl      *KeyList
	sk      []*ShareKeys
	rs      []*RoutedShares
	mi      []*MaskedInput
	req     *UnmaskRequest
	updates [][]float32
}

// newFixture drives a run of n clients until the server is in phase upTo
// (with every message of the earlier phases delivered).
func newFixture(t testing.TB, n int, upTo Phase) *fixture {
	return buildFixture(t, testConfig(n, 10), n, upTo)
}

func buildFixture(t testing.TB, cfg Config, n int, upTo Phase) *fixture {
	t.Helper()
	f := &fixture{cfg: cfg, sess: sessionFor(n, 7)}
	var err error
	if f.srv, err = NewServer(f.cfg, f.sess); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 9))
	for i := range n {
		c, err := NewClient(f.cfg, f.sess, f.sess.Clients[i], rand.NewChaCha8([32]byte{byte(i), 7}))
		if err != nil {
			t.Fatal(err)
		}
		f.clients = append(f.clients, c)
		f.updates = append(f.updates, randomUpdate(r, f.cfg.VectorLength, 1))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if upTo == PhaseAdvertiseKeys {
		return f
	}
	for i, c := range f.clients {
		m, err := c.AdvertiseKeys()
		must(err)
		f.adv = append(f.adv, m)
		must(f.srv.Handle(f.sess.Clients[i], m))
	}
	must(f.srv.Advance())
	f.kl, err = f.srv.KeyList()
	must(err)
	if upTo == PhaseShareKeys {
		return f
	}
	for i, c := range f.clients {
		m, err := c.ShareKeys(f.kl)
		must(err)
		f.sk = append(f.sk, m)
		must(f.srv.Handle(f.sess.Clients[i], m))
	}
	must(f.srv.Advance())
	for _, id := range f.sess.Clients {
		rs, err := f.srv.RoutedShares(id)
		must(err)
		f.rs = append(f.rs, rs)
	}
	if upTo == PhaseMaskedInput {
		return f
	}
	for i, c := range f.clients {
		m, err := c.MaskedInput(f.rs[i], f.updates[i])
		must(err)
		f.mi = append(f.mi, m)
		must(f.srv.Handle(f.sess.Clients[i], m))
	}
	must(f.srv.Advance())
	f.req, err = f.srv.UnmaskRequest()
	must(err)
	return f
}

func TestClientRefusesBothSharesOfOneClient(t *testing.T) {
	f := newFixture(t, 5, PhaseUnmasking)
	tests := []struct {
		name string
		mod  func(r *UnmaskRequest)
	}{
		{"survivor also dropped", func(r *UnmaskRequest) { r.Dropped = append(r.Dropped, 2) }},
		{"all listed twice", func(r *UnmaskRequest) { r.Dropped = slices.Clone(r.Survivors) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := *f.req
			req.Survivors, req.Dropped = slices.Clone(f.req.Survivors), slices.Clone(f.req.Dropped)
			tc.mod(&req)
			if _, err := f.clients[0].Unmask(&req); !errors.Is(err, ErrBothShares) {
				t.Fatalf("err = %v, want ErrBothShares", err)
			}
			if f.clients[0].Phase() != PhaseUnmasking {
				t.Fatal("a refused request changed the client's state")
			}
		})
	}
}

func TestClientAnswersOneUnmaskingRequestOnly(t *testing.T) {
	f := newFixture(t, 5, PhaseUnmasking)
	c := f.clients[0]
	first, err := c.Unmask(f.req)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.KeyShares) != 0 || len(first.SelfMaskShares) != 5 {
		t.Fatalf("response has %d key shares, %d self-mask shares", len(first.KeyShares), len(first.SelfMaskShares))
	}
	again, err := c.Unmask(f.req)
	if err != nil || !reflect.DeepEqual(again, first) {
		t.Fatalf("same request again: %v", err)
	}
	// Client 2 moved from survivors to dropped: answering would hand over
	// its key share after its self-mask share.
	second := &UnmaskRequest{Header: f.req.Header, Survivors: []int{1, 2, 4, 5}, Dropped: []int{3}}
	if _, err := c.Unmask(second); !errors.Is(err, ErrConflictingRequest) {
		t.Fatalf("second request: %v, want ErrConflictingRequest", err)
	}
	// The state survives a restart with the same refusal.
	b, _ := c.MarshalBinary()
	rc, err := RestoreClient(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Unmask(second); !errors.Is(err, ErrConflictingRequest) {
		t.Fatalf("after restore: %v", err)
	}
}

// TestServerCannotSplitClients: a server that tells half of the clients
// that client v survived and the other half that it dropped collects
// fewer than t shares of at least one of v's secrets, because t > n/2.
func TestServerCannotSplitClients(t *testing.T) {
	f := newFixture(t, 5, PhaseUnmasking) // t = 3
	const v = 3
	asSurvivor := f.req
	asDropped := &UnmaskRequest{Header: f.req.Header, Survivors: []int{1, 2, 4, 5}, Dropped: []int{v}}
	var bShares, sShares []Share
	for i, c := range f.clients {
		req := asSurvivor
		if i >= 3 {
			req = asDropped
		}
		if i+1 == v {
			req = asSurvivor // v itself refuses to be called dropped
		}
		resp, err := c.Unmask(req)
		if err != nil {
			t.Fatalf("client %d: %v", i+1, err)
		}
		for _, s := range resp.SelfMaskShares {
			if s.Owner == v {
				bShares = append(bShares, s.Share)
			}
		}
		for _, s := range resp.KeyShares {
			if s.Owner == v {
				sShares = append(sShares, s.Share)
			}
		}
	}
	_, errB := Combine(bShares, f.cfg.Threshold)
	_, errS := Combine(sShares, f.cfg.Threshold)
	if errB == nil && errS == nil {
		t.Fatal("the server obtained both of client 3's secrets")
	}
	if !errors.Is(errS, ErrTooFewShares) {
		t.Fatalf("key shares: %v", errS)
	}
}

func TestClientRefusesBadUnmaskingRequests(t *testing.T) {
	f := newFixture(t, 5, PhaseUnmasking)
	tests := []struct {
		name string
		req  UnmaskRequest
		want error
	}{
		{"lists the client as dropped", UnmaskRequest{Survivors: []int{2, 3, 4, 5}, Dropped: []int{1}}, ErrMalformed},
		{"omits the client", UnmaskRequest{Survivors: []int{2, 3, 4, 5}}, ErrMalformed},
		{"omits a neighbour", UnmaskRequest{Survivors: []int{1, 2, 3, 4}}, ErrMalformed},
		{"fewer than t survivors", UnmaskRequest{Survivors: []int{1, 2}, Dropped: []int{3, 4, 5}}, ErrTooFewClients},
		{"unknown client", UnmaskRequest{Survivors: []int{1, 2, 3, 4, 5, 9}}, ErrUnknownClient},
		{"repeated survivor", UnmaskRequest{Survivors: []int{1, 1, 2, 3, 4, 5}}, ErrMalformed},
		{"wrong round", UnmaskRequest{Header: Header{JobID: "job-1", Round: 6}, Survivors: []int{1, 2, 3, 4, 5}}, ErrSession},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			if req.JobID == "" {
				req.Header = f.req.Header
			}
			if _, err := f.clients[0].Unmask(&req); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := f.clients[0].Unmask(f.req); err != nil {
		t.Fatalf("the valid request after refusals: %v", err)
	}
}

func TestTamperedCiphertextsAreRejected(t *testing.T) {
	f := newFixture(t, 4, PhaseMaskedInput)
	c, rs := f.clients[0], f.rs[0]
	tests := []struct {
		name string
		mod  func(*RoutedShares)
	}{
		{"nonce bit", func(r *RoutedShares) { r.Ciphertexts[0].Data[0] ^= 1 }},
		{"body bit", func(r *RoutedShares) { r.Ciphertexts[1].Data[nonceSize+20] ^= 0x80 }},
		{"tag bit", func(r *RoutedShares) { d := r.Ciphertexts[2].Data; d[len(d)-1] ^= 1 }},
		{"truncated", func(r *RoutedShares) { r.Ciphertexts[0].Data = r.Ciphertexts[0].Data[:50] }},
		{"senders swapped", func(r *RoutedShares) {
			r.Ciphertexts[0].Peer, r.Ciphertexts[1].Peer = r.Ciphertexts[1].Peer, r.Ciphertexts[0].Peer
		}},
		{"meant for another client", func(r *RoutedShares) {
			for _, ct := range f.rs[1].Ciphertexts {
				if ct.Peer == r.Ciphertexts[1].Peer {
					r.Ciphertexts[1].Data = clone(ct.Data)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := &RoutedShares{Header: rs.Header}
			for _, ct := range rs.Ciphertexts {
				bad.Ciphertexts = append(bad.Ciphertexts, Ciphertext{Peer: ct.Peer, Data: clone(ct.Data)})
			}
			tc.mod(bad)
			if _, err := c.MaskedInput(bad, f.updates[0]); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("err = %v, want ErrDecrypt", err)
			}
		})
	}
	// Nothing was consumed: the genuine message still works.
	if _, err := c.MaskedInput(rs, f.updates[0]); err != nil {
		t.Fatalf("genuine shares after tampered ones: %v", err)
	}
}

func TestReplayedAndWrongRoundMessagesAreRejected(t *testing.T) {
	// A run of round 6 with the same sites: its messages must not be
	// accepted by round 7.
	old := newFixture(t, 4, PhaseUnmasking)
	f := newFixture(t, 4, PhaseShareKeys)
	id := f.sess.Clients
	otherRound := func(h Header) Header { h.Round--; return h }

	adv := *f.adv[0]
	adv.Header = otherRound(adv.Header)
	tests := []struct {
		name string
		from string
		msg  Message
		want error
	}{
		{"replayed AdvertiseKeys (wrong phase now)", id[0], f.adv[0], ErrPhase},
		{"AdvertiseKeys from an earlier round", id[0], &adv, ErrSession},
		{"another job", id[0], &ShareKeys{Header: Header{JobID: "job-2", Round: 7}}, ErrSession},
		{"early masked input", id[0], &MaskedInput{Header: f.sess.header(), Vector: make([]uint32, 10)}, ErrPhase},
		{"server message from a client", id[0], f.kl, ErrPhase},
		{"unknown sender", "site-99", &ShareKeys{Header: f.sess.header()}, ErrUnknownClient},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.srv.Handle(tc.from, tc.msg); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("duplicate ShareKeys", func(t *testing.T) {
		m, err := f.clients[1].ShareKeys(f.kl)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.srv.Handle(id[1], m); err != nil {
			t.Fatal(err)
		}
		if err := f.srv.Handle(id[1], m); !errors.Is(err, ErrDuplicate) {
			t.Fatalf("replay: %v", err)
		}
		if _, err := f.clients[1].ShareKeys(f.kl); !errors.Is(err, ErrPhase) {
			t.Fatalf("client asked to share twice: %v", err)
		}
	})
	t.Run("old round's messages to clients", func(t *testing.T) {
		// Client 0 of round 7 is in ShareKeys: the key list of round 7's
		// predecessor (a different session header) is refused.
		kl := *f.kl
		kl.Header = otherRound(kl.Header)
		if _, err := f.clients[0].ShareKeys(&kl); !errors.Is(err, ErrSession) {
			t.Fatalf("old key list: %v", err)
		}
		if _, err := f.clients[0].MaskedInput(&RoutedShares{Header: f.sess.header()}, f.updates[0]); !errors.Is(err, ErrPhase) {
			t.Fatalf("routed shares before sharing: %v", err)
		}
		// Old round's unmasking request (same clients, older keys).
		req := *old.req
		req.Header = otherRound(req.Header)
		if _, err := old.clients[0].Unmask(&req); !errors.Is(err, ErrSession) {
			t.Fatalf("old unmasking request: %v", err)
		}
	})
	t.Run("late masked input", func(t *testing.T) {
		g := newFixture(t, 4, PhaseUnmasking)
		if err := g.srv.Handle(id[0], g.mi[0]); !errors.Is(err, ErrPhase) {
			t.Fatalf("masked input after the phase closed: %v", err)
		}
	})
}

func TestServerRejectsMalformedMessages(t *testing.T) {
	t.Run("AdvertiseKeys", func(t *testing.T) {
		f := newFixture(t, 4, PhaseAdvertiseKeys)
		a, _ := f.clients[0].AdvertiseKeys()
		b, _ := f.clients[1].AdvertiseKeys()
		if err := f.srv.Handle(f.sess.Clients[0], a); err != nil {
			t.Fatal(err)
		}
		for name, k := range map[string]PublicKeys{
			"short key":        {C: b.Keys.C[:31], S: b.Keys.S},
			"same key twice":   {C: b.Keys.C, S: b.Keys.C},
			"another's key":    {C: b.Keys.C, S: a.Keys.S},
			"another's c as s": {C: a.Keys.C, S: b.Keys.S},
		} {
			if err := f.srv.Handle(f.sess.Clients[1], &AdvertiseKeys{Header: f.sess.header(), Keys: k}); !errors.Is(err, ErrBadKey) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if err := f.srv.Handle(f.sess.Clients[1], b); err != nil {
			t.Fatalf("genuine keys after refusals: %v", err)
		}
	})
	t.Run("ShareKeys", func(t *testing.T) {
		f := newFixture(t, 4, PhaseShareKeys)
		m, _ := f.clients[0].ShareKeys(f.kl)
		for name, mod := range map[string]func(*ShareKeys){
			"missing recipient":  func(s *ShareKeys) { s.Ciphertexts = s.Ciphertexts[1:] },
			"repeated recipient": func(s *ShareKeys) { s.Ciphertexts[1].Peer = s.Ciphertexts[0].Peer },
			"to itself":          func(s *ShareKeys) { s.Ciphertexts[0].Peer = 1 },
			"wrong size":         func(s *ShareKeys) { s.Ciphertexts[0].Data = s.Ciphertexts[0].Data[1:] },
		} {
			bad := &ShareKeys{Header: m.Header, Ciphertexts: slices.Clone(m.Ciphertexts)}
			mod(bad)
			if err := f.srv.Handle(f.sess.Clients[0], bad); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if got := f.srv.Pending(); len(got) != 4 {
			t.Fatalf("refused messages were recorded: pending %v", got)
		}
		if err := f.srv.Handle(f.sess.Clients[0], m); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("MaskedInput", func(t *testing.T) {
		f := newFixture(t, 4, PhaseMaskedInput)
		for _, l := range []int{0, 9, 11} {
			if err := f.srv.Handle(f.sess.Clients[0], &MaskedInput{Header: f.sess.header(), Vector: make([]uint32, l)}); !errors.Is(err, ErrMalformed) {
				t.Errorf("length %d: %v", l, err)
			}
		}
	})
	t.Run("UnmaskResponse", func(t *testing.T) {
		f := newFixture(t, 4, PhaseUnmasking)
		good, err := f.clients[0].Unmask(f.req)
		if err != nil {
			t.Fatal(err)
		}
		other, _ := f.clients[1].Unmask(f.req)
		for name, mod := range map[string]func(*UnmaskResponse){
			"missing share":         func(r *UnmaskResponse) { r.SelfMaskShares = r.SelfMaskShares[1:] },
			"key share of survivor": func(r *UnmaskResponse) { r.KeyShares = []SecretShare{r.SelfMaskShares[1]} },
			"someone else's share":  func(r *UnmaskResponse) { r.SelfMaskShares[0] = other.SelfMaskShares[0] },
		} {
			bad := &UnmaskResponse{Header: good.Header, SelfMaskShares: slices.Clone(good.SelfMaskShares), KeyShares: slices.Clone(good.KeyShares)}
			mod(bad)
			if err := f.srv.Handle(f.sess.Clients[0], bad); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if err := f.srv.Handle(f.sess.Clients[0], good); err != nil {
			t.Fatal(err)
		}
	})
}

func TestClientChecksTheKeyList(t *testing.T) {
	f := newFixture(t, 4, PhaseShareKeys)
	c := f.clients[0]
	stranger, _ := NewClient(f.cfg, f.sess, f.sess.Clients[0], rand.NewChaCha8([32]byte{42}))
	strangerKeys, _ := stranger.AdvertiseKeys()
	tests := []struct {
		name string
		mod  func(*KeyList)
		want error
	}{
		{"omits the client", func(k *KeyList) { k.Clients = k.Clients[1:] }, ErrMalformed},
		{"replaces its keys", func(k *KeyList) { k.Clients[0].Keys = strangerKeys.Keys }, ErrBadKey},
		{"repeats a key", func(k *KeyList) { k.Clients[2].Keys.S = k.Clients[1].Keys.S }, ErrBadKey},
		{"short key", func(k *KeyList) { k.Clients[2].Keys.S = k.Clients[2].Keys.S[:8] }, ErrBadKey},
		{"unsorted", func(k *KeyList) { k.Clients[1], k.Clients[2] = k.Clients[2], k.Clients[1] }, ErrMalformed},
		{"unknown index", func(k *KeyList) { k.Clients[3].Index = 9 }, ErrUnknownClient},
		{"too few", func(k *KeyList) { k.Clients = k.Clients[:2] }, ErrTooFewClients},
		{"low-order key", func(k *KeyList) { k.Clients[3].Keys.C = make([]byte, 32) }, ErrBadKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kl := &KeyList{Header: f.kl.Header}
			for _, e := range f.kl.Clients {
				kl.Clients = append(kl.Clients, ClientKeys{Index: e.Index, Keys: PublicKeys{C: clone(e.Keys.C), S: clone(e.Keys.S)}})
			}
			tc.mod(kl)
			if _, err := c.ShareKeys(kl); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if c.Phase() != PhaseShareKeys {
				t.Fatal("a refused key list changed the client's state")
			}
		})
	}
}

func TestServerParticipantsAndPending(t *testing.T) {
	f := newFixture(t, 4, PhaseAdvertiseKeys)
	if f.srv.Ready() || len(f.srv.Pending()) != 4 {
		t.Fatalf("fresh server: ready %v, pending %v", f.srv.Ready(), f.srv.Pending())
	}
	for i := range 3 {
		m, _ := f.clients[i].AdvertiseKeys()
		if err := f.srv.Handle(f.sess.Clients[i], m); err != nil {
			t.Fatal(err)
		}
	}
	if p := f.srv.Pending(); !slices.Equal(p, []string{"site-03"}) || f.srv.Ready() {
		t.Fatalf("pending %v", p)
	}
	if err := f.srv.Advance(); err != nil {
		t.Fatal(err)
	}
	if p := f.srv.Participants(); !slices.Equal(p, f.sess.Clients[:3]) {
		t.Fatalf("U1 = %v", p)
	}
	if err := f.srv.Handle("site-03", &ShareKeys{Header: f.sess.header()}); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("a client outside U1: %v", err)
	}
	if _, err := f.srv.Result(); !errors.Is(err, ErrPhase) {
		t.Fatalf("early Result: %v", err)
	}
	if _, err := f.srv.RoutedShares("site-00"); !errors.Is(err, ErrPhase) {
		t.Fatalf("early RoutedShares: %v", err)
	}
}

func TestWireRoundTrip(t *testing.T) {
	f := newFixture(t, 3, PhaseUnmasking)
	resp, _ := f.clients[0].Unmask(f.req)
	dropReq := &UnmaskRequest{Header: f.req.Header, Survivors: []int{1, 2}, Dropped: []int{3}}
	msgs := []Message{f.adv[0], f.kl, f.sk[0], f.rs[1], f.mi[2], f.req, dropReq, resp,
		&UnmaskResponse{Header: f.req.Header, KeyShares: resp.SelfMaskShares}, &ShareKeys{Header: f.req.Header}}
	for _, m := range msgs {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: %v", m.Kind(), err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind(), err)
		}
		norm := func(m Message) Message {
			// Empty and nil lists encode alike.
			v := reflect.ValueOf(m).Elem()
			for i := range v.NumField() {
				if fv := v.Field(i); fv.Kind() == reflect.Slice && fv.Len() == 0 {
					fv.Set(reflect.Zero(fv.Type()))
				}
			}
			return m
		}
		if !reflect.DeepEqual(norm(got), norm(m)) {
			t.Fatalf("%s: round trip gives %+v", m.Kind(), got)
		}
		b2, _ := got.MarshalBinary()
		if !bytes.Equal(b, b2) {
			t.Fatalf("%s: re-encoding differs", m.Kind())
		}
		// Every strict prefix fails to decode, as does a trailing byte.
		for i := range len(b) {
			if _, err := Decode(b[:i]); err == nil {
				t.Fatalf("%s: %d-byte prefix decoded", m.Kind(), i)
			}
		}
		if _, err := Decode(append(slices.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: trailing byte: %v", m.Kind(), err)
		}
	}
	b, _ := f.adv[0].MarshalBinary()
	var kl KeyList
	if err := kl.UnmarshalBinary(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("AdvertiseKeys decoded as KeyList: %v", err)
	}
	bad := slices.Clone(b)
	bad[2] = 9
	if _, err := Decode(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("wrong version: %v", err)
	}
	huge := append([]byte{'S', 'A', 1, byte(KindKeyList), 1, 'j', 0, 0, 0, 0, 0, 0, 0, 7}, 0xff, 0xff, 0xff, 0xff, 0x0f)
	if _, err := Decode(huge); !errors.Is(err, ErrMalformed) {
		t.Fatalf("huge count: %v", err)
	}
}

func TestRestoreRejectsCorruptState(t *testing.T) {
	f := newFixture(t, 3, PhaseMaskedInput)
	good, _ := f.srv.MarshalJSON()
	for name, data := range map[string]string{
		"not JSON":      "{",
		"empty":         "{}",
		"bad phase":     `{"version":1,"phase":"Sideways"}`,
		"index too big": string(bytes.Replace(good, []byte(`"u1":[1,2,3]`), []byte(`"u1":[1,2,4]`), 1)),
		"unsorted":      string(bytes.Replace(good, []byte(`"u1":[1,2,3]`), []byte(`"u1":[2,1,3]`), 1)),
		"u2 not in u1":  string(bytes.Replace(good, []byte(`"u1":[1,2,3]`), []byte(`"u1":[1,2]`), 1)),
	} {
		var s Server
		if err := s.UnmarshalJSON([]byte(data)); err == nil {
			t.Errorf("%s: restored", name)
		}
	}
	var s Server
	if err := s.UnmarshalJSON(good); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"not JSON": "[", "empty": "{}"} {
		if _, err := RestoreClient([]byte(data), nil); err == nil {
			t.Errorf("client %s: restored", name)
		}
	}
}
