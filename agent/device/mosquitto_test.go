package device

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/device/mosquittotest"
	"github.com/cohort-fl/cohort/agent/store"
)

// openTestStore opens a real encrypted store in t.TempDir.
func openTestStore(t testing.TB) *store.Store {
	t.Helper()
	key := func(b byte) []byte {
		k := make([]byte, 32)
		for i := range k {
			k[i] = b + byte(i)
		}
		return k
	}
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "store.db"), MasterKey: key(1), PseudonymKey: key(2)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestMosquittoRestartMidStream streams readings through a real Mosquitto
// into a real store and restarts the broker in the middle of the stream:
// every reading is stored exactly once and none is lost, with paho's
// in-flight state in the SealedStore (Config.StoreDir and StoreKey) and in
// memory. Afterwards no file in the subscriber's directories holds a
// patient id in plaintext.
func TestMosquittoRestartMidStream(t *testing.T) {
	for _, tt := range []struct {
		name   string
		sealed bool
	}{
		{"paho=sealed", true},
		{"paho=memory", false},
	} {
		t.Run(tt.name, func(t *testing.T) { testMosquittoRestartMidStream(t, tt.sealed) })
	}
}

func testMosquittoRestartMidStream(t *testing.T, sealed bool) {
	const (
		n      = 2000
		ahead  = 200 // the publisher runs at most this far ahead of the store
		budget = 60 * time.Second
		// canary is in every patient id: it must not appear in any file
		// the subscriber writes.
		canary = "canary-5e0b1d"
	)
	broker := mosquittotest.Start(t, mosquittotest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	st := openTestStore(t)
	sink := newCountingSink(st.NewBatch(256))
	cfg := testConfig(t, broker.URL(), "agent-site-a")
	if !sealed {
		cfg.StoreDir, cfg.StoreKey = "", nil
	}
	s, stop := runSubscriber(t, cfg, nil, sink)

	pub := newPublisher(t, broker.URL(), "gateway-1")
	msgs := make([]message, n)
	for i := range msgs {
		r := testReading(fmt.Sprintf("mon-%d", i%8), fmt.Sprintf("%s-%d", canary, i%8), i)
		msgs[i] = message{Topic("site-a", r.DeviceID), testPayload(r)}
	}

	// Stream: keep the publisher at most `ahead` readings in front of the
	// store, so the broker restart lands in the middle of the stream.
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		var wg sync.WaitGroup
		var once sync.Once
		for start := 0; start < n; start += 50 {
			for {
				d, _ := sink.counts()
				if start-d < ahead || ctx.Err() != nil {
					break
				}
				waitTick(ctx)
			}
			if ctx.Err() != nil {
				return
			}
			wg.Add(1)
			go func(batch []message) {
				defer wg.Done()
				if err := publishAll(pub, batch, len(batch), budget); err != nil {
					once.Do(func() { t.Errorf("publisher: %v", err) })
				}
			}(msgs[start:min(start+50, n)])
		}
		wg.Wait()
	}()

	waitFor(t, budget, "a few hundred readings stored", func() bool { d, _ := sink.counts(); return d >= 300 })
	before, _ := sink.counts()
	broker.Restart()
	t.Logf("broker restarted after %d of %d readings stored", before, n)

	waitFor(t, budget, "all readings stored", func() bool { d, _ := sink.counts(); return d == n })
	select {
	case <-pubDone:
	case <-ctx.Done():
		t.Fatal("publisher did not finish")
	}
	waitFor(t, 10*time.Second, "every message acked", func() bool { return s.Stats().Unacked == 0 })
	stop()

	distinct, total := sink.counts()
	_, observations, _, err := st.Counts()
	if err != nil {
		t.Fatal(err)
	}
	stats := s.Stats()
	t.Logf("delivered %d, written %d times for %d distinct ids, store holds %d; reconnects %d",
		stats.Received, total, distinct, observations, stats.Reconnects)
	if distinct != n || observations != n {
		t.Errorf("distinct ids %d, store observations %d; want %d", distinct, observations, n)
	}
	if stats.Reconnects < 1 {
		t.Errorf("the subscriber never reconnected (stats %+v)", stats)
	}
	if sum(stats.Rejected) != 0 {
		t.Errorf("rejected %v", stats.Rejected)
	}
	if before >= n {
		t.Errorf("the restart came after the stream ended")
	}

	if !sealed {
		return
	}
	// Every received message went through the sealed store: its file
	// holds a sealed entry ("set" command) per message received (buntdb
	// appends, and rewrites the file only past 1 MiB, more than this
	// test writes), and no patient id.
	files := scanForPlaintext(t, filepath.Dir(cfg.StoreDir), canary)
	raw, err := os.ReadFile(filepath.Join(cfg.StoreDir, StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	sets := bytes.Count(raw, []byte("$3\r\nset\r\n"))
	t.Logf("scanned %d files; the sealed store file is %d bytes with %d entries written", files, len(raw), sets)
	if sets < n {
		t.Errorf("the sealed store file has %d entries written, want at least %d (one per message)", sets, n)
	}
}

// scanForPlaintext fails the test if any file under dir holds needle, and
// returns the number of files scanned.
func scanForPlaintext(t *testing.T, dir, needle string) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(raw, []byte(needle)) {
			t.Errorf("%s holds a patient id in plaintext", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func waitTick(ctx context.Context) {
	t := time.NewTimer(2 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
