package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"fmt"
	"io"
)

// Share ciphertexts: AES-256-GCM under a key derived (HKDF-SHA256) from the
// X25519 agreement of the two clients' c keys, one key per direction and
// session, with a random 96-bit nonce. The associated data binds the
// session and the sender and receiver indices, so the server can neither
// read a ciphertext nor pass it off as coming from someone else, for
// someone else, or in another round. The plaintext is the sender's share of
// its own s key followed by its share of its self-mask seed b.
const (
	nonceSize      = 12
	sharePlainSize = 2 * ShareSize
	ciphertextSize = nonceSize + sharePlainSize + 16
	labelSharesAD  = "share-ad"
)

// ecdhShared returns X25519(priv, pub); a low-order public key is ErrBadKey.
func ecdhShared(sk *ecdh.PrivateKey, pub []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	z, err := sk.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return z, nil
}

// privateKey parses an X25519 private key. Parsing computes the public key
// (a scalar multiplication), so a client parses each of its keys once per
// step, not once per peer.
func privateKey(priv []byte) (*ecdh.PrivateKey, error) {
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return sk, nil
}

// publicKey returns the X25519 public key of a private key.
func publicKey(priv []byte) ([]byte, error) {
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return sk.PublicKey().Bytes(), nil
}

func shareAEAD(cPriv *ecdh.PrivateKey, peerC []byte, h Header, from, to int) (cipher.AEAD, []byte, error) {
	z, err := ecdhShared(cPriv, peerC)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(shareKey(z, h, from, to))
	if err != nil {
		return nil, nil, err
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	return a, context(labelSharesAD, h, from, to), nil
}

// sealShares encrypts the pair of shares from client from to client to.
func sealShares(cPriv *ecdh.PrivateKey, peerC []byte, h Header, from, to int, sShare, bShare Share, rnd io.Reader) ([]byte, error) {
	a, ad, err := shareAEAD(cPriv, peerC, h, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]byte, nonceSize, ciphertextSize)
	if _, err := io.ReadFull(rnd, out); err != nil {
		return nil, fmt.Errorf("secagg: randomness: %w", err)
	}
	plain := bShare.appendBinary(sShare.appendBinary(make([]byte, 0, sharePlainSize)))
	out = a.Seal(out, out[:nonceSize], plain, ad)
	clear(plain)
	return out, nil
}

// openShares decrypts a ciphertext that client from sent to client to and
// returns the s-key share and the self-mask share, both held by to.
func openShares(cPriv *ecdh.PrivateKey, peerC []byte, h Header, from, to int, data []byte) (sShare, bShare Share, err error) {
	if len(data) != ciphertextSize {
		return Share{}, Share{}, fmt.Errorf("%w: ciphertext from client %d has %d bytes, want %d", ErrDecrypt, from, len(data), ciphertextSize)
	}
	a, ad, err := shareAEAD(cPriv, peerC, h, from, to)
	if err != nil {
		return Share{}, Share{}, err
	}
	plain, err := a.Open(nil, data[:nonceSize], data[nonceSize:], ad)
	if err != nil {
		return Share{}, Share{}, fmt.Errorf("%w: from client %d", ErrDecrypt, from)
	}
	defer clear(plain)
	if err := sShare.UnmarshalBinary(plain[:ShareSize]); err != nil {
		return Share{}, Share{}, err
	}
	if err := bShare.UnmarshalBinary(plain[ShareSize:]); err != nil {
		return Share{}, Share{}, err
	}
	if int(sShare.X) != to || int(bShare.X) != to {
		return Share{}, Share{}, fmt.Errorf("%w: shares from client %d are for index %d, not %d", ErrMalformed, from, sShare.X, to)
	}
	return sShare, bShare, nil
}
