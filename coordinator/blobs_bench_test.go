package coordinator

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// BenchmarkModelReplication stores a 64 MiB model on the leader of a
// 3-node cluster and replicates it to its peers until a majority holds it
// (what happens before every commit), against a baseline measured in the
// same run: the same bytes over plain TLS 1.3 loopback connections to two
// receivers that only discard them. Each op uses new bytes.
//
//	go test -run '^$' -bench ModelReplication -benchtime 5x ./coordinator/
func BenchmarkModelReplication(b *testing.B) {
	const size = 64 << 20
	b.Run("cohort", func(b *testing.B) {
		tc := startClusterWith(b, 3, nil, nil, func(c *Config) { c.ApplyTimeout = Duration(time.Minute) })
		leader, _ := tc.leader(b)
		w := make([]byte, size)
		b.SetBytes(size)
		b.ResetTimer()
		for i := range b.N {
			binary.LittleEndian.PutUint64(w, uint64(i)+1)
			if _, err := leader.storeModel(w); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tls-baseline", func(b *testing.B) {
		ca := newTestCA(b, "bench")
		files := ca.issue(b, pki.RoleCoordinator, "c1", "127.0.0.1")
		pool, cert, err := files.Load()
		if err != nil {
			b.Fatal(err)
		}
		srv := pki.ServerTLS(pool, cert, "bench/1", pki.RoleCoordinator)
		cli := pki.ClientTLS(pool, cert, "bench/1", "127.0.0.1", pki.RoleCoordinator)
		var addrs []string
		for range 2 {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			addrs = append(addrs, ln.Addr().String())
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(io.Discard, c); c.Write([]byte{0}); c.Close() }()
				}
			}()
		}
		w := make([]byte, size)
		b.SetBytes(size)
		b.ResetTimer()
		for range b.N {
			var wg sync.WaitGroup
			for _, a := range addrs {
				wg.Go(func() {
					c, err := tls.Dial("tcp", a, cli)
					if err != nil {
						b.Error(err)
						return
					}
					defer c.Close()
					c.Write(w)
					c.CloseWrite()
					c.Read(make([]byte, 1))
				})
			}
			wg.Wait()
		}
	})
}
