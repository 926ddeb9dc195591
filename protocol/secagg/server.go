package secagg

import (
	"bytes"
	"crypto/ecdh"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Server is the coordinator's side of a protocol run. It is a deterministic
// state machine: its state is a function of the Config, the Session and the
// sequence of messages it accepted and Advance calls, it draws no
// randomness, and it keeps nothing that is not in its JSON form. A
// coordinator can therefore either replicate the inputs (each accepted
// message and each Advance as a Raft entry, applied in order on every
// replica) or snapshot the Server with MarshalJSON; a new leader continues
// from UnmarshalJSON.
//
// The server never holds a client's secrets or unmasked update: it routes
// ciphertexts it cannot read, keeps the running sum of masked inputs, and in
// the last step receives, for each client, either the shares of its
// self-mask seed (if its input arrived) or of its mask key (if not), never
// both.
//
// The coordinator drives it: Handle each client message as it arrives
// (from is the site id the transport authenticated); when Ready, or when
// the phase's deadline passes, call Advance; then send every Participant the
// phase's broadcast (KeyList, RoutedShares, UnmaskRequest). A Server is not
// safe for concurrent use.
type Server struct {
	st       serverState
	topo     *topology // derived from st.U1
	observer func(label string, v []uint32)
}

// serverState is the Server's JSON form.
type serverState struct {
	Version int      `json:"version"`
	Config  Config   `json:"config"`
	Session Session  `json:"session"`
	Phase   Phase    `json:"phase"`
	Failure *failure `json:"failure,omitempty"`

	// Keys are the advertised public keys by client index; once
	// AdvertiseKeys closes, exactly U1's.
	Keys map[int]PublicKeys `json:"keys,omitempty"`
	U1   []int              `json:"u1,omitempty"`
	// Ciphertexts are the ShareKeys messages by sender (Peer is the
	// recipient), kept until MaskedInput closes.
	Ciphertexts map[int][]Ciphertext `json:"ciphertexts,omitempty"`
	U2          []int                `json:"u2,omitempty"`
	// Inputs are the clients whose masked input is in Sum; U3 once
	// MaskedInput closes.
	Inputs []int `json:"inputs,omitempty"`
	Sum    words `json:"sum,omitempty"`
	U3     []int `json:"u3,omitempty"`
	// Responses are the unmasking answers by responder.
	Responses map[int]storedResponse `json:"responses,omitempty"`
	// Total is the unmasked sum (PhaseDone).
	Total words `json:"total,omitempty"`
}

type storedResponse struct {
	SelfMaskShares []SecretShare `json:"b"`
	KeyShares      []SecretShare `json:"s"`
}

// failure records why and where a run failed; Code names the sentinel
// error so errors.Is still works after a restore.
type failure struct {
	Phase  Phase  `json:"phase"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

var failureCodes = map[string]error{
	"too_few_clients":     ErrTooFewClients,
	"too_few_shares":      ErrTooFewShares,
	"inconsistent_shares": ErrInconsistentShares,
	"bad_key":             ErrBadKey,
}

// NewServer starts the server's side of a run; cfg and sess are validated
// (Config.ValidateFor with the session's size).
func NewServer(cfg Config, sess Session) (*Server, error) {
	if err := validate(cfg, sess); err != nil {
		return nil, err
	}
	sess.Clients = slices.Clone(sess.Clients)
	return &Server{st: serverState{Version: 1, Config: cfg, Session: sess, Keys: map[int]PublicKeys{}}}, nil
}

// SetObserver installs a test hook called with every vector the server
// holds, as it comes to hold it: "input <id>" for each masked input as
// received, "sum" for the running sum after each input, "unmask" after
// each mask removed, "result" for the final sum. The observer must not
// keep or modify v. It is not part of the serialized state.
func (s *Server) SetObserver(fn func(label string, v []uint32)) { s.observer = fn }

func (s *Server) observe(label string, v []uint32) {
	if s.observer != nil {
		s.observer(label, v)
	}
}

// Config returns the run's configuration.
func (s *Server) Config() Config { return s.st.Config }

// Session returns the run's session.
func (s *Server) Session() Session {
	sess := s.st.Session
	sess.Clients = slices.Clone(sess.Clients)
	return sess
}

// Phase returns the phase whose messages the server is collecting, or
// PhaseDone or PhaseFailed.
func (s *Server) Phase() Phase { return s.st.Phase }

// Err returns the failure (a *PhaseError) once the run failed, else nil.
func (s *Server) Err() error {
	f := s.st.Failure
	if f == nil {
		return nil
	}
	cause := failureCodes[f.Code]
	if cause == nil {
		cause = ErrFailed
	}
	return &PhaseError{Phase: f.Phase, Err: fmt.Errorf("%w: %s", cause, f.Reason)}
}

// participants returns the indices that may send in the current phase.
func (s *Server) participants() []int {
	switch s.st.Phase {
	case PhaseAdvertiseKeys:
		all := make([]int, len(s.st.Session.Clients))
		for i := range all {
			all[i] = i + 1
		}
		return all
	case PhaseShareKeys:
		return s.st.U1
	case PhaseMaskedInput:
		return s.st.U2
	case PhaseUnmasking:
		return s.st.U3
	}
	return nil
}

// sent reports whether client u sent its message in the current phase.
func (s *Server) sent(u int) bool {
	switch s.st.Phase {
	case PhaseAdvertiseKeys:
		_, ok := s.st.Keys[u]
		return ok
	case PhaseShareKeys:
		_, ok := s.st.Ciphertexts[u]
		return ok
	case PhaseMaskedInput:
		_, ok := slices.BinarySearch(s.st.Inputs, u)
		return ok
	case PhaseUnmasking:
		_, ok := s.st.Responses[u]
		return ok
	}
	return false
}

func (s *Server) ids(xs []int) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = s.st.Session.id(x)
	}
	return out
}

// Participants returns the clients that take part in the current phase:
// the ones to send the phase's broadcast to and to expect a message from
// (U0, U1, U2 or U3). Empty once the run is over.
func (s *Server) Participants() []string { return s.ids(s.participants()) }

// Pending returns the participants whose message for the current phase
// has not arrived.
func (s *Server) Pending() []string {
	var p []int
	for _, u := range s.participants() {
		if !s.sent(u) {
			p = append(p, u)
		}
	}
	return s.ids(p)
}

// Ready reports whether every participant of the current phase has sent
// its message, so Advance need not wait for the deadline.
func (s *Server) Ready() bool {
	return s.st.Phase < PhaseDone && len(s.Pending()) == 0
}

var phaseOf = map[Kind]Phase{
	KindAdvertiseKeys:  PhaseAdvertiseKeys,
	KindShareKeys:      PhaseShareKeys,
	KindMaskedInput:    PhaseMaskedInput,
	KindUnmaskResponse: PhaseUnmasking,
}

// Handle accepts one client message. from is the sender's site id as the
// transport authenticated it. A message for another session is ErrSession,
// for another phase (late, early, or a server message) ErrPhase, from a
// client that is not a participant of the phase ErrUnknownClient, a second
// message from the same client in a phase ErrDuplicate; a message that does
// not fit the protocol is ErrMalformed (or ErrBadKey). A refused message
// changes nothing.
func (s *Server) Handle(from string, m Message) error {
	if s.st.Phase == PhaseFailed {
		return s.Err()
	}
	if isNil(m) {
		return fmt.Errorf("%w: nil message", ErrMalformed)
	}
	if h := m.hdr(); h != s.st.Session.header() {
		return fmt.Errorf("%w: %s for job %q round %d, this is job %q round %d",
			ErrSession, m.Kind(), h.JobID, h.Round, s.st.Session.JobID, s.st.Session.Round)
	}
	want, ok := phaseOf[m.Kind()]
	if !ok || want != s.st.Phase {
		return fmt.Errorf("%w: %s from %q while the server is in phase %s", ErrPhase, m.Kind(), from, s.st.Phase)
	}
	u := s.st.Session.index(from)
	if _, ok := slices.BinarySearch(s.participants(), u); u == 0 || !ok {
		return fmt.Errorf("%w: %q is not a participant of phase %s", ErrUnknownClient, from, s.st.Phase)
	}
	if s.sent(u) {
		return fmt.Errorf("%w: %s from %q", ErrDuplicate, m.Kind(), from)
	}
	switch m := m.(type) {
	case *AdvertiseKeys:
		return s.handleAdvertise(u, m)
	case *ShareKeys:
		return s.handleShareKeys(u, m)
	case *MaskedInput:
		return s.handleMaskedInput(u, m)
	case *UnmaskResponse:
		return s.handleUnmask(u, m)
	}
	return fmt.Errorf("%w: unexpected message type %T", ErrMalformed, m)
}

func (s *Server) handleAdvertise(u int, m *AdvertiseKeys) error {
	k := m.Keys
	if len(k.C) != KeySize || len(k.S) != KeySize || bytes.Equal(k.C, k.S) {
		return fmt.Errorf("%w: client %d's keys must be two distinct %d-byte keys", ErrBadKey, u, KeySize)
	}
	for v, o := range s.st.Keys {
		for _, a := range [][]byte{o.C, o.S} {
			if bytes.Equal(a, k.C) || bytes.Equal(a, k.S) {
				return fmt.Errorf("%w: client %d advertised a key of client %d", ErrBadKey, u, v)
			}
		}
	}
	s.st.Keys[u] = PublicKeys{C: clone(k.C), S: clone(k.S)}
	return nil
}

func (s *Server) handleShareKeys(u int, m *ShareKeys) error {
	nb := s.topology().of(u)
	if len(m.Ciphertexts) != len(nb)-1 {
		return fmt.Errorf("%w: %d ciphertexts from client %d, want %d", ErrMalformed, len(m.Ciphertexts), u, len(nb)-1)
	}
	cts := slices.Clone(m.Ciphertexts)
	slices.SortFunc(cts, func(a, b Ciphertext) int { return a.Peer - b.Peer })
	want := slices.DeleteFunc(slices.Clone(nb), func(v int) bool { return v == u })
	for i, ct := range cts {
		if ct.Peer != want[i] {
			return fmt.Errorf("%w: client %d's ciphertexts are not one per neighbour", ErrMalformed, u)
		}
		if len(ct.Data) != ciphertextSize {
			return fmt.Errorf("%w: ciphertext for client %d has %d bytes, want %d", ErrMalformed, ct.Peer, len(ct.Data), ciphertextSize)
		}
		cts[i].Data = clone(ct.Data)
	}
	if s.st.Ciphertexts == nil {
		s.st.Ciphertexts = map[int][]Ciphertext{}
	}
	s.st.Ciphertexts[u] = cts
	return nil
}

func (s *Server) handleMaskedInput(u int, m *MaskedInput) error {
	if len(m.Vector) != s.st.Config.VectorLength {
		return fmt.Errorf("%w: masked input of %d words, want %d", ErrMalformed, len(m.Vector), s.st.Config.VectorLength)
	}
	s.observe("input "+s.st.Session.id(u), m.Vector)
	if s.st.Sum == nil {
		s.st.Sum = make(words, s.st.Config.VectorLength)
	}
	sum := s.st.Sum
	for i, w := range m.Vector {
		sum[i] += w
	}
	i, _ := slices.BinarySearch(s.st.Inputs, u)
	s.st.Inputs = slices.Insert(s.st.Inputs, i, u)
	s.observe("sum", sum)
	return nil
}

func (s *Server) handleUnmask(u int, m *UnmaskResponse) error {
	topo := s.topology()
	dropped := difference(s.st.U2, s.st.U3)
	check := func(ss []SecretShare, owners []int, what string) error {
		var want []int
		for _, v := range owners {
			if topo.adjacent(u, v) {
				want = append(want, v)
			}
		}
		got := make([]int, len(ss))
		for i, sh := range ss {
			if int(sh.Share.X) != u {
				return fmt.Errorf("%w: client %d sent a share held by index %d", ErrMalformed, u, sh.Share.X)
			}
			got[i] = sh.Owner
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%w: client %d's %s shares are for %v, want %v", ErrMalformed, u, what, got, want)
		}
		return nil
	}
	if err := check(m.SelfMaskShares, s.st.U3, "self-mask"); err != nil {
		return err
	}
	if err := check(m.KeyShares, dropped, "key"); err != nil {
		return err
	}
	if s.st.Responses == nil {
		s.st.Responses = map[int]storedResponse{}
	}
	s.st.Responses[u] = storedResponse{SelfMaskShares: slices.Clone(m.SelfMaskShares), KeyShares: slices.Clone(m.KeyShares)}
	return nil
}

// Advance closes the current phase. It needs messages from at least t
// clients; with fewer the run fails, and Advance returns (and Err keeps) a
// *PhaseError naming the phase and wrapping ErrTooFewClients. Closing
// Unmasking reconstructs the secrets and computes the sum; a
// reconstruction that fails also fails the run.
func (s *Server) Advance() error {
	switch s.st.Phase {
	case PhaseFailed:
		return s.Err()
	case PhaseDone:
		return fmt.Errorf("%w: the run is complete", ErrPhase)
	}
	t := s.st.Config.Threshold
	var got []int
	for _, u := range s.participants() {
		if s.sent(u) {
			got = append(got, u)
		}
	}
	if len(got) < t {
		return s.fail("too_few_clients", fmt.Sprintf("%d of %d clients sent their message, threshold %d", len(got), len(s.participants()), t))
	}
	switch s.st.Phase {
	case PhaseAdvertiseKeys:
		for u := range s.st.Keys {
			if !slices.Contains(got, u) {
				delete(s.st.Keys, u)
			}
		}
		s.st.U1 = got
		s.topo = nil
		s.st.Phase = PhaseShareKeys
	case PhaseShareKeys:
		s.st.U2 = got
		s.st.Phase = PhaseMaskedInput
	case PhaseMaskedInput:
		s.st.U3 = got
		s.st.Ciphertexts = nil
		s.st.Phase = PhaseUnmasking
	case PhaseUnmasking:
		total, code, err := s.unmask()
		if err != nil {
			return s.fail(code, err.Error())
		}
		s.st.Total = total
		s.st.Sum = nil
		s.st.Responses = nil
		s.st.Phase = PhaseDone
		s.observe("result", total)
	}
	return nil
}

func (s *Server) fail(code, reason string) error {
	s.st.Failure = &failure{Phase: s.st.Phase, Code: code, Reason: reason}
	s.st.Phase = PhaseFailed
	s.st.Ciphertexts, s.st.Sum, s.st.Responses = nil, nil, nil
	return s.Err()
}

// unmask removes every mask from the running sum and returns the sum of
// the survivors' encoded inputs. It does not modify the state.
func (s *Server) unmask() (words, string, error) {
	t, h := s.st.Config.Threshold, s.st.Session.header()
	topo := s.topology()
	responders := make([]int, 0, len(s.st.Responses))
	for u := range s.st.Responses {
		responders = append(responders, u)
	}
	slices.Sort(responders)
	lagrange := map[string][]uint64{}
	reconstruct := func(owner int, kind string, pick func(storedResponse) []SecretShare) ([]byte, error) {
		var shares []Share
		for _, r := range responders {
			if !topo.adjacent(r, owner) {
				continue
			}
			for _, sh := range pick(s.st.Responses[r]) {
				if sh.Owner == owner {
					shares = append(shares, sh.Share)
				}
			}
		}
		use, err := pickShares(shares, t)
		if err != nil {
			return nil, fmt.Errorf("%s of client %q: %w", kind, s.st.Session.id(owner), err)
		}
		var key strings.Builder
		xs := make([]uint64, len(use))
		for i, sh := range use {
			xs[i] = uint64(sh.X)
			key.WriteString(strconv.Itoa(int(sh.X)))
			key.WriteByte(',')
		}
		lam, ok := lagrange[key.String()]
		if !ok {
			lam = f61.lagrange(xs)
			lagrange[key.String()] = lam
		}
		secret, err := combineWith(use, lam)
		if err != nil {
			return nil, fmt.Errorf("%s of client %q: %w", kind, s.st.Session.id(owner), err)
		}
		return secret, nil
	}
	code := func(err error) string {
		for c, e := range failureCodes {
			if errors.Is(err, e) {
				return c
			}
		}
		return ""
	}

	sum := slices.Clone(s.st.Sum)
	if sum == nil {
		sum = make(words, s.st.Config.VectorLength)
	}
	buf := make([]byte, prgChunkSize)
	// Dropped clients: rebuild s_v, then remove the pairwise masks the
	// survivors added for v.
	for _, v := range difference(s.st.U2, s.st.U3) {
		sv, err := reconstruct(v, "mask key", func(r storedResponse) []SecretShare { return r.KeyShares })
		if err != nil {
			return nil, code(err), err
		}
		if pub, err := publicKey(sv); err != nil || !bytes.Equal(pub, s.st.Keys[v].S) {
			err := fmt.Errorf("%w: mask key of client %q does not match its public key", ErrInconsistentShares, s.st.Session.id(v))
			return nil, code(err), err
		}
		sk, _ := ecdh.X25519().NewPrivateKey(sv)
		for _, u := range s.st.U3 {
			if !topo.adjacent(v, u) {
				continue
			}
			pk, err := ecdh.X25519().NewPublicKey(s.st.Keys[u].S)
			if err != nil {
				return nil, "bad_key", fmt.Errorf("%w: client %q: %v", ErrBadKey, s.st.Session.id(u), err)
			}
			z, err := sk.ECDH(pk)
			if err != nil {
				return nil, "bad_key", fmt.Errorf("%w: client %q: %v", ErrBadKey, s.st.Session.id(u), err)
			}
			// u added +PRG if u < v, −PRG if u > v: take it back.
			addMask(sum, pairSeed(z, h, u, v), u < v, buf)
			s.observe("unmask", sum)
		}
		clear(sv)
	}
	// Survivors: rebuild b_u and remove the self masks.
	for _, u := range s.st.U3 {
		b, err := reconstruct(u, "self-mask seed", func(r storedResponse) []SecretShare { return r.SelfMaskShares })
		if err != nil {
			return nil, code(err), err
		}
		addMask(sum, selfSeed(b, h, u), true, buf)
		clear(b)
		if u != s.st.U3[len(s.st.U3)-1] {
			s.observe("unmask", sum)
		}
	}
	return sum, "", nil
}

func (s *Server) topology() *topology {
	if s.topo == nil {
		s.topo = newTopology(s.st.Config, s.st.Session.header(), s.st.U1)
	}
	return s.topo
}

// KeyList returns the broadcast that closes AdvertiseKeys: U1 with its keys.
// Available in every later phase (a client that missed it can ask again).
func (s *Server) KeyList() (*KeyList, error) {
	if s.st.Phase < PhaseShareKeys || s.st.Phase > PhaseUnmasking {
		return nil, fmt.Errorf("%w: no key list in phase %s", ErrPhase, s.st.Phase)
	}
	kl := &KeyList{Header: s.st.Session.header(), Clients: make([]ClientKeys, 0, len(s.st.U1))}
	for _, u := range s.st.U1 {
		k := s.st.Keys[u]
		kl.Clients = append(kl.Clients, ClientKeys{Index: u, Keys: PublicKeys{C: clone(k.C), S: clone(k.S)}})
	}
	return kl, nil
}

// RoutedShares returns, in phase MaskedInput, the ciphertexts addressed to
// client to by the clients of U2, in sender order.
func (s *Server) RoutedShares(to string) (*RoutedShares, error) {
	if s.st.Phase != PhaseMaskedInput {
		return nil, fmt.Errorf("%w: no routed shares in phase %s", ErrPhase, s.st.Phase)
	}
	v := s.st.Session.index(to)
	if _, ok := slices.BinarySearch(s.st.U2, v); !ok {
		return nil, fmt.Errorf("%w: %q is not in U2", ErrUnknownClient, to)
	}
	rs := &RoutedShares{Header: s.st.Session.header()}
	for _, u := range s.st.U2 {
		for _, ct := range s.st.Ciphertexts[u] {
			if ct.Peer == v {
				rs.Ciphertexts = append(rs.Ciphertexts, Ciphertext{Peer: u, Data: clone(ct.Data)})
			}
		}
	}
	return rs, nil
}

// UnmaskRequest returns, in phase Unmasking, the request to send to every
// client of U3.
func (s *Server) UnmaskRequest() (*UnmaskRequest, error) {
	if s.st.Phase != PhaseUnmasking {
		return nil, fmt.Errorf("%w: no unmasking request in phase %s", ErrPhase, s.st.Phase)
	}
	return &UnmaskRequest{
		Header:    s.st.Session.header(),
		Survivors: slices.Clone(s.st.U3),
		Dropped:   difference(s.st.U2, s.st.U3),
	}, nil
}

// Result is the outcome of a run: the sum of the contributors' clipped
// updates, decoded.
type Result struct {
	// Sum is the coordinate-wise sum, within Count·0.5/Scale of the sum
	// of the clipped updates.
	Sum []float64
	// Count is the number of contributors (|U3|).
	Count int
	// Contributors are the clients whose updates are in Sum.
	Contributors []string
}

// Result returns the outcome once the run is Done.
func (s *Server) Result() (*Result, error) {
	switch s.st.Phase {
	case PhaseDone:
	case PhaseFailed:
		return nil, s.Err()
	default:
		return nil, fmt.Errorf("%w: no result in phase %s", ErrPhase, s.st.Phase)
	}
	return &Result{
		Sum:          s.st.Config.Decode(s.st.Total),
		Count:        len(s.st.U3),
		Contributors: s.ids(s.st.U3),
	}, nil
}

// MarshalJSON encodes the whole server state (no secrets: public keys,
// ciphertexts, the masked running sum, shares of the secrets needed for
// unmasking, the result). The encoding is deterministic.
func (s *Server) MarshalJSON() ([]byte, error) { return json.Marshal(s.st) }

// UnmarshalJSON restores a server from MarshalJSON's output, checking it
// for consistency. The observer is not restored.
func (s *Server) UnmarshalJSON(data []byte) error {
	var st serverState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%w: server state: %v", ErrMalformed, err)
	}
	if err := st.check(); err != nil {
		return err
	}
	s.st, s.topo = st, nil
	return nil
}

func (st *serverState) check() error {
	bad := func(what string) error { return fmt.Errorf("%w: server state: %s", ErrMalformed, what) }
	if st.Version != 1 {
		return bad("unknown version")
	}
	if err := validate(st.Config, st.Session); err != nil {
		return err
	}
	n := len(st.Session.Clients)
	if st.Phase < PhaseAdvertiseKeys || st.Phase > PhaseFailed || (st.Phase == PhaseFailed) != (st.Failure != nil) {
		return bad("phase")
	}
	for _, xs := range [][]int{st.U1, st.U2, st.U3, st.Inputs} {
		if !validIndices(xs, n) {
			return bad("index list")
		}
	}
	if st.Keys == nil {
		st.Keys = map[int]PublicKeys{}
	}
	for u, k := range st.Keys {
		if u < 1 || u > n || len(k.C) != KeySize || len(k.S) != KeySize {
			return bad("keys")
		}
	}
	for _, u := range st.U1 {
		if _, ok := st.Keys[u]; !ok {
			return bad("U1 member without keys")
		}
	}
	for u, cts := range st.Ciphertexts {
		if u < 1 || u > n {
			return bad("ciphertext sender")
		}
		for _, ct := range cts {
			if ct.Peer < 1 || ct.Peer > n {
				return bad("ciphertext recipient")
			}
		}
	}
	for u, r := range st.Responses {
		if u < 1 || u > n {
			return bad("responder")
		}
		for _, sh := range slices.Concat(r.SelfMaskShares, r.KeyShares) {
			if sh.Owner < 1 || sh.Owner > n || int(sh.Share.X) != u {
				return bad("share")
			}
			for _, y := range sh.Share.Y {
				if y >= p61 {
					return bad("share element")
				}
			}
		}
	}
	if (st.Sum != nil && len(st.Sum) != st.Config.VectorLength) || (st.Total != nil && len(st.Total) != st.Config.VectorLength) {
		return bad("vector length")
	}
	if st.Phase == PhaseDone && st.Total == nil {
		return bad("done without a result")
	}
	if (st.Phase > PhaseAdvertiseKeys && st.Phase < PhaseFailed && len(st.U1) == 0) ||
		(st.Phase > PhaseShareKeys && st.Phase < PhaseFailed && len(st.U2) == 0) ||
		(st.Phase > PhaseMaskedInput && st.Phase < PhaseFailed && len(st.U3) == 0) {
		return bad("missing participant list")
	}
	if !subset(st.U2, st.U1) || !subset(st.U3, st.U2) || (st.Phase <= PhaseMaskedInput && !subset(st.Inputs, st.U2)) {
		return bad("participant lists do not nest")
	}
	return nil
}

// words is a vector of uint32 whose JSON form is base64 of its
// little-endian bytes (a quarter of the size of a JSON array).
type words []uint32

func (w words) MarshalJSON() ([]byte, error) {
	b := make([]byte, 4*len(w))
	for i, x := range w {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return json.Marshal(b)
}

func (w *words) UnmarshalJSON(data []byte) error {
	var b []byte
	if err := json.Unmarshal(data, &b); err != nil {
		return err
	}
	if len(b)%4 != 0 {
		return fmt.Errorf("%w: vector of %d bytes", ErrMalformed, len(b))
	}
	v := make(words, len(b)/4)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	*w = v
	return nil
}

// difference returns the sorted a \ b for sorted a, b.
func difference(a, b []int) []int {
	out := []int{}
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			out = append(out, x)
		}
	}
	return out
}

// subset reports whether sorted a ⊆ sorted b.
func subset(a, b []int) bool {
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			return false
		}
	}
	return true
}
