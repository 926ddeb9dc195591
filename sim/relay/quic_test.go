package relay_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cohort-fl/cohort/sim/relay"
)

const alpn = "cohort-relay-test"

// testTLS returns the server and client TLS configs of a self-signed
// certificate for localhost, made once per test binary.
var testTLS = sync.OnceValues(func() (*tls.Config, *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	server := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		NextProtos:   []string{alpn},
		MinVersion:   tls.VersionTLS13,
	}
	client := &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	return server, client
})

func quicConfig() *quic.Config {
	return &quic.Config{HandshakeIdleTimeout: 10 * time.Second, MaxIdleTimeout: 30 * time.Second}
}

// sink is a QUIC server that reads one stream per connection to its end,
// counting the bytes, and answers with their SHA-256.
type sink struct {
	ln       *quic.Listener
	received atomic.Int64
}

func newSink(t *testing.T) *sink {
	t.Helper()
	serverTLS, _ := testTLS()
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, quicConfig())
	if err != nil {
		t.Fatalf("quic listen: %v", err)
	}
	s := &sink{ln: ln}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { s.serve(ctx, conn) })
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close() // closes the connections accepted
		wg.Wait()
	})
	return s
}

func (s *sink) serve(ctx context.Context, conn *quic.Conn) {
	defer conn.CloseWithError(0, "")
	str, err := conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for {
		n, err := str.Read(buf)
		h.Write(buf[:n])
		s.received.Add(int64(n))
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return
		}
	}
	if _, err := str.Write(h.Sum(nil)); err != nil {
		return
	}
	str.Close()
	select { // the client closes the connection once it has the sum
	case <-conn.Context().Done():
	case <-ctx.Done():
	}
}

// dial opens a QUIC connection to addr, closed when the test ends.
func dial(t *testing.T, ctx context.Context, addr string) *quic.Conn {
	t.Helper()
	_, clientTLS := testTLS()
	conn, err := quic.DialAddr(ctx, addr, clientTLS, quicConfig())
	if err != nil {
		t.Fatalf("quic dial through the relay: %v", err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

func payload(n int) []byte {
	b := make([]byte, n)
	rng := mrand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(b)
	return b
}

// readSum reads the server's SHA-256 of what it received and compares it
// with data's.
func readSum(t *testing.T, str *quic.Stream, data []byte) {
	t.Helper()
	got, err := io.ReadAll(str)
	if err != nil {
		t.Fatalf("read the server's sum: %v", err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Fatalf("the server's sum is %x, want %x: the data arrived altered", got, want)
	}
}

func TestQUICTransfer(t *testing.T) {
	const size = 1 << 20
	tests := []struct {
		name string
		link relay.Link
	}{
		{"clean", relay.Link{}},
		{"10% loss and 5ms each way", relay.Link{Loss: 0.1, Latency: 5 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			srv := newSink(t)
			r := startRelay(t, relay.Config{Target: srv.ln.Addr().String(), Link: tt.link, Seed: 1})
			conn := dial(t, ctx, r.Addr().String())
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			data := payload(size)
			if _, err := str.Write(data); err != nil {
				t.Fatalf("write: %v", err)
			}
			str.Close()
			readSum(t, str, data)

			// The last datagrams are counted just after they are written.
			waitFor(t, "the payload counted", func() bool { return r.Stats().ToTarget.Bytes >= size })
			st := r.Stats()
			if st.ToTarget.Bytes < size || st.SessionsOpen != 1 {
				t.Errorf("Stats = %+v, want at least %d bytes to the target over 1 session", st, size)
			}
			if lossy := tt.link.Loss > 0; lossy != (st.ToTarget.DroppedLoss > 0 && st.ToClient.DroppedLoss > 0) {
				t.Errorf("Stats = %+v: loss drops in both directions = %v, want %v", st, !lossy, lossy)
			}
		})
	}
}

// TestQUICOutage takes the link down in the middle of a transfer: nothing
// crosses while it is down, and the same connection finishes once it is
// back.
func TestQUICOutage(t *testing.T) {
	const size, before = 1 << 20, 256 << 10
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	srv := newSink(t)
	r := startRelay(t, relay.Config{Target: srv.ln.Addr().String()})
	conn := dial(t, ctx, r.Addr().String())
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := payload(size)
	if _, err := str.Write(data[:before]); err != nil {
		t.Fatalf("write: %v", err)
	}
	waitFor(t, "the first part to arrive", func() bool { return srv.received.Load() == before })

	if err := r.Set(relay.Link{Down: true}); err != nil {
		t.Fatal(err)
	}
	down := r.Stats()
	writeErrC := make(chan error, 1)
	go func() {
		_, err := str.Write(data[before:])
		if err == nil {
			err = str.Close()
		}
		writeErrC <- err
	}()
	// The client keeps sending data, then probes: wait for several of
	// them to be dropped.
	waitFor(t, "datagrams dropped while down", func() bool {
		return r.Stats().ToTarget.DroppedDown >= down.ToTarget.DroppedDown+5
	})
	during := r.Stats()
	if during.ToTarget.Forwarded != down.ToTarget.Forwarded || during.ToClient.Forwarded != down.ToClient.Forwarded {
		t.Fatalf("datagrams crossed a down link: %+v, then %+v", down, during)
	}
	if got := srv.received.Load(); got >= size {
		t.Fatalf("the server received %d bytes, everything, while the link was down", got)
	}
	if err := conn.Context().Err(); err != nil {
		t.Fatalf("the connection ended during the outage: %v", context.Cause(conn.Context()))
	}

	if err := r.Set(relay.Link{}); err != nil {
		t.Fatal(err)
	}
	readSum(t, str, data)
	if err := <-writeErrC; err != nil {
		t.Fatalf("write after the outage: %v", err)
	}
	if st := r.Stats(); st.SessionsOpen != 1 || st.ToTarget.Forwarded <= during.ToTarget.Forwarded {
		t.Errorf("Stats = %+v, want the same session to carry on", st)
	}
}
