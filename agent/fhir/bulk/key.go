package bulk

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"runtime"
)

// JWS algorithms the client signs with.
const (
	// AlgES384 is ECDSA with P-384 and SHA-384.
	AlgES384 = "ES384"
	// AlgRS384 is RSASSA-PKCS1-v1_5 with SHA-384.
	AlgRS384 = "RS384"
)

// maxKeyFile bounds the size of a key file read by LoadPrivateKey.
const maxKeyFile = 1 << 20

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// LoadPrivateKey reads a PEM private key file: PKCS#8 ("PRIVATE KEY"),
// SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"). Other PEM blocks
// (such as the "EC PARAMETERS" openssl writes first) are skipped. On Unix
// it refuses, with ErrKeyPermissions, a file that group or others may
// read or write. The key must be ECDSA P-384 or RSA of at least 2048 bits;
// encrypted keys are not supported.
func LoadPrivateKey(path string) (crypto.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadKeyFile, path)
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600 or stricter", ErrKeyPermissions, path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadKeyFile, path, maxKeyFile)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

// ParsePrivateKey parses the first PEM private key in data (see
// LoadPrivateKey for the formats accepted).
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			if _, encrypted := block.Headers["Proc-Type"]; encrypted {
				return nil, fmt.Errorf("%w: encrypted pem", ErrUnsupportedKey)
			}
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: encrypted pkcs#8", ErrUnsupportedKey)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s block does not parse", ErrBadKeyFile, block.Type)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, key)
		}
		if _, err := algorithm(signer); err != nil {
			return nil, err
		}
		return signer, nil
	}
	return nil, ErrBadKeyFile
}

// algorithm returns the JWS algorithm for a signer's public key.
func algorithm(s crypto.Signer) (string, error) {
	switch pub := s.Public().(type) {
	case *ecdsa.PublicKey:
		if pub.Curve == nil || pub.Curve.Params().Name != "P-384" {
			return "", fmt.Errorf("%w: ecdsa key is not on P-384 (ES384 needs P-384)", ErrUnsupportedKey)
		}
		return AlgES384, nil
	case *rsa.PublicKey:
		if pub.N == nil || pub.N.BitLen() < minRSABits {
			return "", fmt.Errorf("%w: rsa key shorter than %d bits", ErrUnsupportedKey, minRSABits)
		}
		return AlgRS384, nil
	default:
		return "", fmt.Errorf("%w: %T (want ECDSA P-384 or RSA)", ErrUnsupportedKey, pub)
	}
}

// sign signs input with key under alg and returns the JWS signature bytes.
func sign(key crypto.Signer, alg string, input []byte) ([]byte, error) {
	digest := sha512.Sum384(input)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA384)
	if err != nil {
		return nil, fmt.Errorf("sign assertion: %w", err)
	}
	if alg != AlgES384 {
		return sig, nil
	}
	// crypto.Signer gives ECDSA signatures as ASN.1; JWS wants R||S.
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(sig, &rs)
	if err != nil || len(rest) != 0 || rs.R == nil || rs.S == nil ||
		rs.R.Sign() <= 0 || rs.S.Sign() <= 0 || rs.R.BitLen() > 384 || rs.S.BitLen() > 384 {
		return nil, fmt.Errorf("%w: signer returned a malformed ecdsa signature", ErrUnsupportedKey)
	}
	out := make([]byte, 96)
	rs.R.FillBytes(out[:48])
	rs.S.FillBytes(out[48:])
	return out, nil
}

// jwk returns the public JWK members of pub that RFC 7638 hashes, in the
// lexicographic order it requires, plus alg.
func jwk(pub crypto.PublicKey) (members [][2]string, alg string, err error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve == nil || pub.Curve.Params().Name != "P-384" {
			return nil, "", fmt.Errorf("%w: ecdsa key is not on P-384", ErrUnsupportedKey)
		}
		pt, err := pub.Bytes()
		if err != nil || len(pt) != 97 {
			return nil, "", fmt.Errorf("%w: invalid ecdsa public key", ErrUnsupportedKey)
		}
		return [][2]string{{"crv", "P-384"}, {"kty", "EC"}, {"x", b64(pt[1:49])}, {"y", b64(pt[49:])}}, AlgES384, nil
	case *rsa.PublicKey:
		if pub.N == nil || pub.N.BitLen() < minRSABits || pub.E <= 0 {
			return nil, "", fmt.Errorf("%w: invalid or short rsa public key", ErrUnsupportedKey)
		}
		e := big.NewInt(int64(pub.E)).Bytes()
		return [][2]string{{"e", b64(e)}, {"kty", "RSA"}, {"n", b64(pub.N.Bytes())}}, AlgRS384, nil
	default:
		return nil, "", fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
	}
}

// KeyThumbprint returns the RFC 7638 JWK thumbprint (SHA-256, base64url)
// of an ECDSA P-384 or RSA public key: the default kid.
func KeyThumbprint(pub crypto.PublicKey) (string, error) {
	members, _, err := jwk(pub)
	if err != nil {
		return "", err
	}
	obj := map[string]string{}
	for _, m := range members {
		obj[m[0]] = m[1]
	}
	// encoding/json writes map keys sorted, which is the canonical form
	// RFC 7638 asks for; the values need no escaping.
	canon, err := json.Marshal(obj)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	sum := sha256.Sum256(canon)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// PublicJWKS returns a JSON Web Key Set holding the public half of key
// with its kid (empty means the thumbprint), alg and use "sig": what a
// hospital registers with its EHR's authorization server for this client.
func PublicJWKS(key crypto.Signer, kid string) ([]byte, error) {
	members, alg, err := jwk(key.Public())
	if err != nil {
		return nil, err
	}
	if kid == "" {
		if kid, err = KeyThumbprint(key.Public()); err != nil {
			return nil, err
		}
	}
	obj := map[string]string{"kid": kid, "alg": alg, "use": "sig"}
	for _, m := range members {
		obj[m[0]] = m[1]
	}
	out, err := json.Marshal(map[string]any{"keys": []any{obj}})
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return out, nil
}
