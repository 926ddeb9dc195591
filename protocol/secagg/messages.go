package secagg

import (
	"encoding/binary"
	"fmt"
)

// Kind is a message type.
type Kind byte

// Message kinds, in protocol order. Clients send AdvertiseKeys, ShareKeys,
// MaskedInput and UnmaskResponse; the server sends KeyList, RoutedShares and
// UnmaskRequest.
const (
	KindAdvertiseKeys Kind = 1 + iota
	KindKeyList
	KindShareKeys
	KindRoutedShares
	KindMaskedInput
	KindUnmaskRequest
	KindUnmaskResponse
)

var kindNames = [...]string{"", "AdvertiseKeys", "KeyList", "ShareKeys", "RoutedShares", "MaskedInput", "UnmaskRequest", "UnmaskResponse"}

func (k Kind) String() string {
	if int(k) > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", byte(k))
}

// Header binds a message to a session: every message carries the job and
// round, and both sides refuse a message for another session.
type Header struct {
	JobID string `json:"job_id"`
	Round uint64 `json:"round"`
}

func (h Header) hdr() Header { return h }

// Message is any protocol message. MarshalBinary gives its wire encoding;
// Decode reads one back.
type Message interface {
	Kind() Kind
	MarshalBinary() ([]byte, error)
	hdr() Header
}

// HeaderOf returns the session header m carries.
func HeaderOf(m Message) Header {
	if isNil(m) {
		return Header{}
	}
	return m.hdr()
}

// FromClient reports whether messages of kind k are sent by clients
// (AdvertiseKeys, ShareKeys, MaskedInput, UnmaskResponse) rather than by the
// server.
func (k Kind) FromClient() bool {
	return k == KindAdvertiseKeys || k == KindShareKeys || k == KindMaskedInput || k == KindUnmaskResponse
}

// isNil reports whether m is nil or a nil pointer.
func isNil(m Message) bool {
	switch m := m.(type) {
	case nil:
		return true
	case *AdvertiseKeys:
		return m == nil
	case *KeyList:
		return m == nil
	case *ShareKeys:
		return m == nil
	case *RoutedShares:
		return m == nil
	case *MaskedInput:
		return m == nil
	case *UnmaskRequest:
		return m == nil
	case *UnmaskResponse:
		return m == nil
	}
	return false
}

// KeySize is the size of an X25519 public key.
const KeySize = 32

// PublicKeys are a client's two X25519 public keys: C for encrypting shares
// between clients, S for agreeing pairwise masks.
type PublicKeys struct {
	C []byte `json:"c"`
	S []byte `json:"s"`
}

// AdvertiseKeys (client → server, round 0) carries the client's public keys.
type AdvertiseKeys struct {
	Header
	Keys PublicKeys
}

// ClientKeys is one entry of a KeyList.
type ClientKeys struct {
	Index int        `json:"index"`
	Keys  PublicKeys `json:"keys"`
}

// KeyList (server → every client in U1, after round 0) lists U1: the
// clients that advertised keys, by index, with their keys.
type KeyList struct {
	Header
	Clients []ClientKeys
}

// Ciphertext is an encrypted pair of shares between two clients. Peer is
// the recipient in ShareKeys and the sender in RoutedShares.
type Ciphertext struct {
	Peer int    `json:"peer"`
	Data []byte `json:"data"`
}

// ShareKeys (client → server, round 1) carries one ciphertext for each of
// the sender's neighbours in U1 (every other client with the full graph).
type ShareKeys struct {
	Header
	Ciphertexts []Ciphertext
}

// RoutedShares (server → client v, after round 1) carries the ciphertexts
// addressed to v by every client in U2 (the clients that sent ShareKeys).
type RoutedShares struct {
	Header
	Ciphertexts []Ciphertext
}

// MaskedInput (client → server, round 2) carries the client's masked,
// encoded update, VectorLength words.
type MaskedInput struct {
	Header
	Vector []uint32
}

// UnmaskRequest (server → clients in U3, after round 2) names U3, the
// clients whose masked inputs the server holds, and U2\U3, the clients that
// shared keys but sent no input. A client answers with its shares of the
// self-mask seeds of the former and of the mask keys of the latter, and
// refuses a request that names a client in both.
type UnmaskRequest struct {
	Header
	Survivors []int
	Dropped   []int
}

// SecretShare is a share (held by Share.X) of the secret of client Owner.
type SecretShare struct {
	Owner int   `json:"owner"`
	Share Share `json:"share"`
}

// UnmaskResponse (client → server, round 3) carries the sender's shares of
// the self-mask seed b_v of each survivor v and of the mask key s_v of each
// dropped client v among its neighbours.
type UnmaskResponse struct {
	Header
	SelfMaskShares []SecretShare
	KeyShares      []SecretShare
}

func (*AdvertiseKeys) Kind() Kind  { return KindAdvertiseKeys }
func (*KeyList) Kind() Kind        { return KindKeyList }
func (*ShareKeys) Kind() Kind      { return KindShareKeys }
func (*RoutedShares) Kind() Kind   { return KindRoutedShares }
func (*MaskedInput) Kind() Kind    { return KindMaskedInput }
func (*UnmaskRequest) Kind() Kind  { return KindUnmaskRequest }
func (*UnmaskResponse) Kind() Kind { return KindUnmaskResponse }

// Wire encoding. Every message starts with
//
//	"SA" | version (1) | kind (1) | len(job id) (1) | job id | round (8, big-endian)
//
// followed by its body. Indices and counts are unsigned varints, keys are
// 32 raw bytes, shares ShareSize raw bytes, ciphertexts a varint length and
// the bytes, vectors a varint length and 4 bytes per word (little-endian).
// Decoders refuse trailing bytes and bound every count by what the
// remaining bytes can hold, so a hostile length cannot make them allocate.
const (
	wireVersion    = 1
	maxCiphertext  = 1024
	minHeaderBytes = 4 + 1 + 8
)

func appendHeader(b []byte, k Kind, h Header) []byte {
	b = append(b, 'S', 'A', wireVersion, byte(k), byte(len(h.JobID)))
	b = append(b, h.JobID...)
	return binary.BigEndian.AppendUint64(b, h.Round)
}

func appendKeys(b []byte, k PublicKeys) ([]byte, error) {
	if len(k.C) != KeySize || len(k.S) != KeySize {
		return nil, fmt.Errorf("%w: public keys must be %d bytes", ErrMalformed, KeySize)
	}
	return append(append(b, k.C...), k.S...), nil
}

func checkHeader(h Header) error {
	if len(h.JobID) > MaxIDLength {
		return fmt.Errorf("%w: job id longer than %d bytes", ErrMalformed, MaxIDLength)
	}
	return nil
}

func (m *AdvertiseKeys) MarshalBinary() ([]byte, error) {
	if err := checkHeader(m.Header); err != nil {
		return nil, err
	}
	return appendKeys(appendHeader(nil, m.Kind(), m.Header), m.Keys)
}

func (m *KeyList) MarshalBinary() ([]byte, error) {
	if err := checkHeader(m.Header); err != nil {
		return nil, err
	}
	b := appendHeader(nil, m.Kind(), m.Header)
	b = binary.AppendUvarint(b, uint64(len(m.Clients)))
	var err error
	for _, c := range m.Clients {
		b = binary.AppendUvarint(b, uint64(c.Index))
		if b, err = appendKeys(b, c.Keys); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func marshalCiphertexts(k Kind, h Header, cts []Ciphertext) ([]byte, error) {
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	b := appendHeader(nil, k, h)
	b = binary.AppendUvarint(b, uint64(len(cts)))
	for _, c := range cts {
		if len(c.Data) > maxCiphertext {
			return nil, fmt.Errorf("%w: ciphertext of %d bytes", ErrMalformed, len(c.Data))
		}
		b = binary.AppendUvarint(b, uint64(c.Peer))
		b = binary.AppendUvarint(b, uint64(len(c.Data)))
		b = append(b, c.Data...)
	}
	return b, nil
}

func (m *ShareKeys) MarshalBinary() ([]byte, error) {
	return marshalCiphertexts(m.Kind(), m.Header, m.Ciphertexts)
}

func (m *RoutedShares) MarshalBinary() ([]byte, error) {
	return marshalCiphertexts(m.Kind(), m.Header, m.Ciphertexts)
}

func (m *MaskedInput) MarshalBinary() ([]byte, error) {
	if err := checkHeader(m.Header); err != nil {
		return nil, err
	}
	b := appendHeader(make([]byte, 0, minHeaderBytes+len(m.JobID)+binary.MaxVarintLen64+4*len(m.Vector)), m.Kind(), m.Header)
	b = binary.AppendUvarint(b, uint64(len(m.Vector)))
	for _, w := range m.Vector {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return b, nil
}

func appendIndices(b []byte, xs []int) []byte {
	b = binary.AppendUvarint(b, uint64(len(xs)))
	for _, x := range xs {
		b = binary.AppendUvarint(b, uint64(x))
	}
	return b
}

func (m *UnmaskRequest) MarshalBinary() ([]byte, error) {
	if err := checkHeader(m.Header); err != nil {
		return nil, err
	}
	b := appendHeader(nil, m.Kind(), m.Header)
	b = appendIndices(b, m.Survivors)
	return appendIndices(b, m.Dropped), nil
}

func appendSecretShares(b []byte, ss []SecretShare) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = binary.AppendUvarint(b, uint64(s.Owner))
		b = s.Share.appendBinary(b)
	}
	return b
}

func (m *UnmaskResponse) MarshalBinary() ([]byte, error) {
	if err := checkHeader(m.Header); err != nil {
		return nil, err
	}
	b := appendHeader(nil, m.Kind(), m.Header)
	b = appendSecretShares(b, m.SelfMaskShares)
	return appendSecretShares(b, m.KeyShares), nil
}

// reader decodes the wire format; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

func (r *reader) raw(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("truncated")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// index reads a 1-based client index.
func (r *reader) index() int {
	v := r.uvarint()
	if r.err == nil && (v == 0 || v > MaxClients) {
		r.fail("client index %d out of range", v)
		return 0
	}
	return int(v)
}

// count reads a list length, bounded by MaxClients and by the remaining
// bytes at minSize bytes an entry.
func (r *reader) count(minSize int) int {
	v := r.uvarint()
	if r.err == nil && (v > MaxClients || v > uint64(len(r.b)/minSize)) {
		r.fail("list of %d entries does not fit", v)
		return 0
	}
	return int(v)
}

func (r *reader) keys() PublicKeys {
	c, s := r.raw(KeySize), r.raw(KeySize)
	return PublicKeys{C: clone(c), S: clone(s)}
}

func (r *reader) header(want Kind) Header {
	b := r.raw(5)
	if r.err != nil {
		return Header{}
	}
	if b[0] != 'S' || b[1] != 'A' {
		r.fail("not a secure aggregation message")
		return Header{}
	}
	if b[2] != wireVersion {
		r.fail("wire version %d, want %d", b[2], wireVersion)
		return Header{}
	}
	if Kind(b[3]) != want {
		r.fail("message is %s, want %s", Kind(b[3]), want)
		return Header{}
	}
	job := r.raw(int(b[4]))
	round := r.raw(8)
	if r.err != nil {
		return Header{}
	}
	return Header{JobID: string(job), Round: binary.BigEndian.Uint64(round)}
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func (m *AdvertiseKeys) UnmarshalBinary(data []byte) error {
	r := reader{b: data}
	h := r.header(KindAdvertiseKeys)
	k := r.keys()
	if err := r.done(); err != nil {
		return err
	}
	*m = AdvertiseKeys{Header: h, Keys: k}
	return nil
}

func (m *KeyList) UnmarshalBinary(data []byte) error {
	r := reader{b: data}
	h := r.header(KindKeyList)
	n := r.count(1 + 2*KeySize)
	cs := make([]ClientKeys, 0, n)
	for range n {
		cs = append(cs, ClientKeys{Index: r.index(), Keys: r.keys()})
	}
	if err := r.done(); err != nil {
		return err
	}
	*m = KeyList{Header: h, Clients: cs}
	return nil
}

func unmarshalCiphertexts(data []byte, k Kind) (Header, []Ciphertext, error) {
	r := reader{b: data}
	h := r.header(k)
	n := r.count(2)
	cts := make([]Ciphertext, 0, n)
	for range n {
		peer := r.index()
		l := r.uvarint()
		if l > maxCiphertext {
			r.fail("ciphertext of %d bytes", l)
		}
		cts = append(cts, Ciphertext{Peer: peer, Data: clone(r.raw(int(l)))})
	}
	if err := r.done(); err != nil {
		return Header{}, nil, err
	}
	return h, cts, nil
}

func (m *ShareKeys) UnmarshalBinary(data []byte) error {
	h, cts, err := unmarshalCiphertexts(data, KindShareKeys)
	if err != nil {
		return err
	}
	*m = ShareKeys{Header: h, Ciphertexts: cts}
	return nil
}

func (m *RoutedShares) UnmarshalBinary(data []byte) error {
	h, cts, err := unmarshalCiphertexts(data, KindRoutedShares)
	if err != nil {
		return err
	}
	*m = RoutedShares{Header: h, Ciphertexts: cts}
	return nil
}

func (m *MaskedInput) UnmarshalBinary(data []byte) error {
	r := reader{b: data}
	h := r.header(KindMaskedInput)
	n := r.uvarint()
	if r.err == nil && (n > MaxVectorLength || n*4 != uint64(len(r.b))) {
		r.fail("vector of %d words in %d bytes", n, len(r.b))
	}
	raw := r.raw(4 * int(n))
	if err := r.done(); err != nil {
		return err
	}
	v := make([]uint32, n)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(raw[4*i:])
	}
	*m = MaskedInput{Header: h, Vector: v}
	return nil
}

func (r *reader) indices() []int {
	n := r.count(1)
	xs := make([]int, 0, n)
	for range n {
		xs = append(xs, r.index())
	}
	return xs
}

func (m *UnmaskRequest) UnmarshalBinary(data []byte) error {
	r := reader{b: data}
	h := r.header(KindUnmaskRequest)
	s := r.indices()
	d := r.indices()
	if err := r.done(); err != nil {
		return err
	}
	*m = UnmaskRequest{Header: h, Survivors: s, Dropped: d}
	return nil
}

func (r *reader) secretShares() []SecretShare {
	n := r.count(1 + ShareSize)
	ss := make([]SecretShare, 0, n)
	for range n {
		owner := r.index()
		raw := r.raw(ShareSize)
		var s Share
		if r.err == nil {
			if err := s.UnmarshalBinary(raw); err != nil {
				r.err = err
			}
		}
		ss = append(ss, SecretShare{Owner: owner, Share: s})
	}
	return ss
}

func (m *UnmaskResponse) UnmarshalBinary(data []byte) error {
	r := reader{b: data}
	h := r.header(KindUnmaskResponse)
	b := r.secretShares()
	s := r.secretShares()
	if err := r.done(); err != nil {
		return err
	}
	*m = UnmaskResponse{Header: h, SelfMaskShares: b, KeyShares: s}
	return nil
}

// Decode reads any message from its wire encoding.
func Decode(data []byte) (Message, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	var m interface {
		Message
		UnmarshalBinary([]byte) error
	}
	switch Kind(data[3]) {
	case KindAdvertiseKeys:
		m = new(AdvertiseKeys)
	case KindKeyList:
		m = new(KeyList)
	case KindShareKeys:
		m = new(ShareKeys)
	case KindRoutedShares:
		m = new(RoutedShares)
	case KindMaskedInput:
		m = new(MaskedInput)
	case KindUnmaskRequest:
		m = new(UnmaskRequest)
	case KindUnmaskResponse:
		m = new(UnmaskResponse)
	default:
		return nil, fmt.Errorf("%w: unknown message kind %d", ErrMalformed, data[3])
	}
	if err := m.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	return m, nil
}
