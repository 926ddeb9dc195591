package secagg

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"slices"
)

// Client is one site's side of a protocol run. It holds secrets (its
// private keys, its self-mask seed and the shares other clients sent it) in
// memory; MarshalBinary exports them for an agent that must survive a
// restart, and that export must be stored encrypted.
//
// Each step checks what the server sent and returns the message to send
// back; a step that fails changes nothing, so it may be retried with a
// corrected message. A Client is not safe for concurrent use.
type Client struct {
	st   clientState
	rnd  io.Reader
	topo *topology // derived from st.U1
}

// clientState is the serialized form of a Client. It holds secrets.
type clientState struct {
	Version int     `json:"version"`
	Config  Config  `json:"config"`
	Session Session `json:"session"`
	Index   int     `json:"index"`
	Phase   Phase   `json:"phase"`

	// CPriv and SPriv are the X25519 private keys; B is the self-mask
	// seed. All three are erased once the masked input is computed.
	CPriv []byte `json:"c_priv,omitempty"`
	SPriv []byte `json:"s_priv,omitempty"`
	B     []byte `json:"b,omitempty"`

	// U1 is the key list's client set; Keys the public keys of this
	// client's neighbourhood in it.
	U1   []int              `json:"u1,omitempty"`
	Keys map[int]PublicKeys `json:"keys,omitempty"`
	// OwnB is this client's share of its own self-mask seed.
	OwnB *Share `json:"own_b,omitempty"`

	// U2 is this client's neighbourhood within U2 (itself included): the
	// clients whose shares it received and against whom it masked.
	U2 []int `json:"u2,omitempty"`
	// Held are the shares other clients sent: owner → shares.
	Held map[int]heldShares `json:"held,omitempty"`

	// Answered is the unmasking request this client answered, and
	// Response its answer: it answers no other.
	Answered *UnmaskRequest  `json:"answered,omitempty"`
	Response *UnmaskResponse `json:"response,omitempty"`
}

type heldShares struct {
	S Share `json:"s"`
	B Share `json:"b"`
}

// NewClient starts client id's side of a run. cfg and sess must be the
// ones the server uses; rnd supplies all randomness (nil means
// crypto/rand.Reader; tests pass a seeded reader).
func NewClient(cfg Config, sess Session, id string, rnd io.Reader) (*Client, error) {
	if err := validate(cfg, sess); err != nil {
		return nil, err
	}
	idx := sess.index(id)
	if idx == 0 {
		return nil, fmt.Errorf("%w: %q is not in the session", ErrUnknownClient, id)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &Client{rnd: rnd, st: clientState{Version: 1, Config: cfg, Session: sess, Index: idx}}, nil
}

// Phase returns the step the client performs next (PhaseDone once it has
// answered the unmasking request).
func (c *Client) Phase() Phase { return c.st.Phase }

// Index returns the client's 1-based index in the session.
func (c *Client) Index() int { return c.st.Index }

func (c *Client) header() Header { return c.st.Session.header() }

func (c *Client) checkMessage(m Message, want Phase) error {
	if isNil(m) {
		return fmt.Errorf("%w: nil message", ErrMalformed)
	}
	if h := m.hdr(); h != c.header() {
		return fmt.Errorf("%w: %s for job %q round %d, this is job %q round %d",
			ErrSession, m.Kind(), h.JobID, h.Round, c.st.Session.JobID, c.st.Session.Round)
	}
	if c.st.Phase != want {
		return fmt.Errorf("%w: %s arrived while the client is in phase %s", ErrPhase, m.Kind(), c.st.Phase)
	}
	return nil
}

func (c *Client) random(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(c.rnd, b); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	return b, nil
}

// AdvertiseKeys (round 0) makes the client's two key pairs and returns its
// public keys. Until ShareKeys succeeds, calling it again returns the same
// keys.
func (c *Client) AdvertiseKeys() (*AdvertiseKeys, error) {
	if c.st.Phase != PhaseAdvertiseKeys && !(c.st.Phase == PhaseShareKeys && c.st.CPriv != nil) {
		return nil, fmt.Errorf("%w: AdvertiseKeys in phase %s", ErrPhase, c.st.Phase)
	}
	if c.st.CPriv == nil {
		cp, err := c.random(KeySize)
		if err != nil {
			return nil, err
		}
		sp, err := c.random(KeySize)
		if err != nil {
			return nil, err
		}
		c.st.CPriv, c.st.SPriv = cp, sp
	}
	cpub, err := publicKey(c.st.CPriv)
	if err != nil {
		return nil, err
	}
	spub, err := publicKey(c.st.SPriv)
	if err != nil {
		return nil, err
	}
	c.st.Phase = PhaseShareKeys
	return &AdvertiseKeys{Header: c.header(), Keys: PublicKeys{C: cpub, S: spub}}, nil
}

// ShareKeys (round 1) checks the key list U1 — at least t clients, this
// client listed with its own keys, all keys distinct — picks the self-mask
// seed b, shares b and the s private key t-of-m among its neighbourhood
// (all of U1 with the full graph) and returns one ciphertext of the two
// shares per neighbour.
func (c *Client) ShareKeys(kl *KeyList) (*ShareKeys, error) {
	if err := c.checkMessage(kl, PhaseShareKeys); err != nil {
		return nil, err
	}
	cfg, h, me := c.st.Config, c.header(), c.st.Index
	n := len(c.st.Session.Clients)
	u1 := make([]int, 0, len(kl.Clients))
	keys := make(map[int]PublicKeys, len(kl.Clients))
	seen := make(map[string]bool, 2*len(kl.Clients))
	for _, e := range kl.Clients {
		if e.Index < 1 || e.Index > n {
			return nil, fmt.Errorf("%w: key list names index %d of %d clients", ErrUnknownClient, e.Index, n)
		}
		if len(u1) > 0 && e.Index <= u1[len(u1)-1] {
			return nil, fmt.Errorf("%w: key list indices not strictly increasing", ErrMalformed)
		}
		if len(e.Keys.C) != KeySize || len(e.Keys.S) != KeySize {
			return nil, fmt.Errorf("%w: client %d's keys have the wrong size", ErrBadKey, e.Index)
		}
		for _, k := range [][]byte{e.Keys.C, e.Keys.S} {
			if seen[string(k)] {
				return nil, fmt.Errorf("%w: key list repeats a public key (client %d)", ErrBadKey, e.Index)
			}
			seen[string(k)] = true
		}
		u1 = append(u1, e.Index)
		keys[e.Index] = e.Keys
	}
	if len(u1) < cfg.Threshold {
		return nil, fmt.Errorf("%w: key list has %d clients, threshold %d", ErrTooFewClients, len(u1), cfg.Threshold)
	}
	mine, ok := keys[me]
	if !ok {
		return nil, fmt.Errorf("%w: key list omits this client", ErrMalformed)
	}
	cpub, _ := publicKey(c.st.CPriv)
	spub, _ := publicKey(c.st.SPriv)
	if !bytes.Equal(mine.C, cpub) || !bytes.Equal(mine.S, spub) {
		return nil, fmt.Errorf("%w: key list gives this client keys it did not advertise", ErrBadKey)
	}
	topo := newTopology(cfg, h, u1)
	nb := topo.of(me)
	if len(nb) < cfg.Threshold {
		return nil, fmt.Errorf("%w: neighbourhood of %d clients, threshold %d", ErrTooFewClients, len(nb), cfg.Threshold)
	}
	b, err := c.random(SecretSize)
	if err != nil {
		return nil, err
	}
	sShares, err := Split(c.st.SPriv, cfg.Threshold, nb, c.rnd)
	if err != nil {
		return nil, err
	}
	bShares, err := Split(b, cfg.Threshold, nb, c.rnd)
	if err != nil {
		return nil, err
	}
	out := &ShareKeys{Header: h, Ciphertexts: make([]Ciphertext, 0, len(nb)-1)}
	cPriv, err := privateKey(c.st.CPriv)
	if err != nil {
		return nil, err
	}
	var own Share
	nbKeys := make(map[int]PublicKeys, len(nb))
	for i, v := range nb {
		nbKeys[v] = keys[v]
		if v == me {
			own = bShares[i]
			continue
		}
		ct, err := sealShares(cPriv, keys[v].C, h, me, v, sShares[i], bShares[i], c.rnd)
		if err != nil {
			return nil, fmt.Errorf("client %d: %w", v, err)
		}
		out.Ciphertexts = append(out.Ciphertexts, Ciphertext{Peer: v, Data: ct})
	}
	clear(sShares)
	c.st.B, c.st.U1, c.st.Keys, c.st.OwnB = b, u1, nbKeys, &own
	c.topo = topo
	c.st.Phase = PhaseMaskedInput
	return out, nil
}

// MaskedInput (round 2) decrypts the shares routed to this client (any
// ciphertext that does not authenticate is ErrDecrypt), checks that at
// least t clients (itself included) of its neighbourhood remain, and returns
// its update clipped and encoded (Config.Encode) plus its self mask PRG(b)
// and, for every other remaining neighbour v, the pairwise mask
// ±PRG(s_{u,v}) (+ when this client's index is the smaller). The client
// then erases its private keys and b.
func (c *Client) MaskedInput(rs *RoutedShares, update []float32) (*MaskedInput, error) {
	if err := c.checkMessage(rs, PhaseMaskedInput); err != nil {
		return nil, err
	}
	cfg, h, me := c.st.Config, c.header(), c.st.Index
	y := make([]uint32, cfg.VectorLength)
	if err := cfg.encodeInto(y, update); err != nil {
		return nil, err
	}
	topo := c.topology()
	held := make(map[int]heldShares, len(rs.Ciphertexts))
	u2 := []int{me}
	cPriv, err := privateKey(c.st.CPriv)
	if err != nil {
		return nil, err
	}
	sPriv, err := privateKey(c.st.SPriv)
	if err != nil {
		return nil, err
	}
	for _, ct := range rs.Ciphertexts {
		v := ct.Peer
		if v == me || !topo.adjacent(me, v) {
			return nil, fmt.Errorf("%w: shares from client %d, not a neighbour", ErrUnknownClient, v)
		}
		if _, dup := held[v]; dup {
			return nil, fmt.Errorf("%w: two ciphertexts from client %d", ErrMalformed, v)
		}
		s, b, err := openShares(cPriv, c.st.Keys[v].C, h, v, me, ct.Data)
		if err != nil {
			return nil, err
		}
		held[v] = heldShares{S: s, B: b}
		u2 = append(u2, v)
	}
	slices.Sort(u2)
	if len(u2) < cfg.Threshold {
		return nil, fmt.Errorf("%w: %d clients shared keys with this one (itself included), threshold %d", ErrTooFewClients, len(u2), cfg.Threshold)
	}
	buf := make([]byte, prgChunkSize)
	addMask(y, selfSeed(c.st.B, h, me), false, buf)
	for _, v := range u2 {
		if v == me {
			continue
		}
		z, err := ecdhShared(sPriv, c.st.Keys[v].S)
		if err != nil {
			return nil, fmt.Errorf("client %d: %w", v, err)
		}
		addMask(y, pairSeed(z, h, me, v), me > v, buf)
	}
	clear(c.st.CPriv)
	clear(c.st.SPriv)
	clear(c.st.B)
	c.st.CPriv, c.st.SPriv, c.st.B = nil, nil, nil
	c.st.U2, c.st.Held = u2, held
	c.st.Phase = PhaseUnmasking
	return &MaskedInput{Header: h, Vector: y}, nil
}

// Unmask (round 3) answers the server's unmasking request: for each
// survivor in its neighbourhood its share of that client's self-mask seed,
// for each dropped neighbour its share of that client's s key. It refuses
// (ErrBothShares) a request that names a client as both survivor and
// dropped, and (ErrConflictingRequest) any request that differs from one it
// already answered; asking again with the same request returns the same
// answer. It also refuses a request that lists it as dropped, omits or
// misplaces a neighbour that shared keys with it, or names fewer than t
// survivors.
func (c *Client) Unmask(req *UnmaskRequest) (*UnmaskResponse, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil message", ErrMalformed)
	}
	if h := req.hdr(); h != c.header() {
		return nil, fmt.Errorf("%w: %s for job %q round %d", ErrSession, req.Kind(), h.JobID, h.Round)
	}
	surv, drop := sortedCopy(req.Survivors), sortedCopy(req.Dropped)
	if c.st.Phase == PhaseDone && c.st.Answered != nil {
		if slices.Equal(surv, c.st.Answered.Survivors) && slices.Equal(drop, c.st.Answered.Dropped) {
			return c.st.Response, nil
		}
		return nil, fmt.Errorf("%w: the client already answered a request with other survivors or dropped clients", ErrConflictingRequest)
	}
	if err := c.checkMessage(req, PhaseUnmasking); err != nil {
		return nil, err
	}
	for _, v := range surv {
		if _, both := slices.BinarySearch(drop, v); both {
			return nil, fmt.Errorf("%w: client %d is listed as survivor and as dropped", ErrBothShares, v)
		}
	}
	if hasDup(surv) || hasDup(drop) {
		return nil, fmt.Errorf("%w: repeated index in request", ErrMalformed)
	}
	me, topo := c.st.Index, c.topology()
	if _, ok := slices.BinarySearch(drop, me); ok {
		return nil, fmt.Errorf("%w: request lists this client as dropped, but it sent its input", ErrMalformed)
	}
	if _, ok := slices.BinarySearch(surv, me); !ok {
		return nil, fmt.Errorf("%w: request does not list this client as a survivor", ErrMalformed)
	}
	if len(surv) < c.st.Config.Threshold {
		return nil, fmt.Errorf("%w: request names %d survivors, threshold %d", ErrTooFewClients, len(surv), c.st.Config.Threshold)
	}
	resp := &UnmaskResponse{Header: c.header()}
	listed := 0
	for k, list := range [][]int{surv, drop} {
		dropped := k == 1
		for _, v := range list {
			if _, ok := slices.BinarySearch(c.st.U1, v); !ok {
				return nil, fmt.Errorf("%w: request names client %d, not in U1", ErrUnknownClient, v)
			}
			if !topo.adjacent(me, v) {
				continue
			}
			if _, ok := slices.BinarySearch(c.st.U2, v); !ok {
				return nil, fmt.Errorf("%w: request names client %d, which shared no keys with this client", ErrMalformed, v)
			}
			listed++
			switch {
			case v == me:
				resp.SelfMaskShares = append(resp.SelfMaskShares, SecretShare{Owner: v, Share: *c.st.OwnB})
			case dropped:
				resp.KeyShares = append(resp.KeyShares, SecretShare{Owner: v, Share: c.st.Held[v].S})
			default:
				resp.SelfMaskShares = append(resp.SelfMaskShares, SecretShare{Owner: v, Share: c.st.Held[v].B})
			}
		}
	}
	if listed != len(c.st.U2) {
		return nil, fmt.Errorf("%w: request omits clients that shared keys with this client", ErrMalformed)
	}
	c.st.Answered = &UnmaskRequest{Header: c.header(), Survivors: surv, Dropped: drop}
	c.st.Response = resp
	c.st.Held = nil
	c.st.Phase = PhaseDone
	return resp, nil
}

func (c *Client) topology() *topology {
	if c.topo == nil {
		c.topo = newTopology(c.st.Config, c.header(), c.st.U1)
	}
	return c.topo
}

// MarshalBinary exports the client's whole state, SECRETS INCLUDED (private
// keys, self-mask seed, the shares other clients entrusted to it): store it
// only encrypted, and delete it when the round ends. RestoreClient reads it.
func (c *Client) MarshalBinary() ([]byte, error) { return json.Marshal(c.st) }

// RestoreClient rebuilds a client from MarshalBinary's output; rnd as in
// NewClient.
func RestoreClient(data []byte, rnd io.Reader) (*Client, error) {
	var st clientState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w: client state: %v", ErrMalformed, err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("%w: client state version %d", ErrMalformed, st.Version)
	}
	if err := validate(st.Config, st.Session); err != nil {
		return nil, err
	}
	n := len(st.Session.Clients)
	if st.Index < 1 || st.Index > n || st.Phase < PhaseAdvertiseKeys || st.Phase > PhaseDone {
		return nil, fmt.Errorf("%w: client state index or phase out of range", ErrMalformed)
	}
	ok := true
	switch st.Phase {
	case PhaseShareKeys:
		ok = len(st.CPriv) == KeySize && len(st.SPriv) == KeySize
	case PhaseMaskedInput:
		ok = len(st.CPriv) == KeySize && len(st.SPriv) == KeySize && len(st.B) == SecretSize && st.OwnB != nil && st.Keys != nil
	case PhaseUnmasking:
		ok = st.OwnB != nil && slices.Contains(st.U2, st.Index)
	case PhaseDone:
		ok = st.Answered != nil && st.Response != nil
	}
	if !ok || !validIndices(st.U1, n) || !validIndices(st.U2, n) {
		return nil, fmt.Errorf("%w: client state incomplete for phase %s", ErrMalformed, st.Phase)
	}
	for _, v := range st.U2 {
		if _, held := st.Held[v]; v != st.Index && st.Phase == PhaseUnmasking && !held {
			return nil, fmt.Errorf("%w: client state misses the shares of client %d", ErrMalformed, v)
		}
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &Client{st: st, rnd: rnd}, nil
}

// validIndices reports whether xs are strictly increasing indices in [1, n].
func validIndices(xs []int, n int) bool {
	for i, x := range xs {
		if x < 1 || x > n || (i > 0 && x <= xs[i-1]) {
			return false
		}
	}
	return true
}

func sortedCopy(xs []int) []int {
	s := slices.Clone(xs)
	slices.Sort(s)
	if s == nil {
		s = []int{}
	}
	return s
}

// hasDup reports whether sorted xs repeats a value.
func hasDup(xs []int) bool {
	for i := 1; i < len(xs); i++ {
		if xs[i] == xs[i-1] {
			return true
		}
	}
	return false
}
