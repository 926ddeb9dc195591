package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/tidwall/buntdb"
)

// testSealedStore opens a SealedStore at path (a new file in t.TempDir
// when empty) under key, logging to the returned buffer; it is closed
// when the test ends.
func testSealedStore(t testing.TB, path string, key []byte) (*SealedStore, *logBuffer) {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), StoreFile)
	}
	logs := &logBuffer{}
	s, err := NewSealedStore(path, key, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, logs
}

// testPublish is an inbound QoS 1 PUBLISH, as paho stores it.
func testPublish(id uint16, topic string, payload []byte) *packets.PublishPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.Qos, p.MessageID, p.TopicName, p.Payload = 1, id, topic, payload
	return p
}

// testSubscribe is an outbound SUBSCRIBE, as paho stores it.
func testSubscribe(id uint16) *packets.SubscribePacket {
	p := packets.NewControlPacket(packets.Subscribe).(*packets.SubscribePacket)
	p.MessageID, p.Topics, p.Qoss = id, []string{TopicFilter("site-a")}, []byte{1}
	return p
}

// wire is a packet's MQTT encoding.
func wire(t testing.TB, p packets.ControlPacket) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// samePacket fails unless got encodes exactly as want.
func samePacket(t testing.TB, key string, got, want packets.ControlPacket) {
	t.Helper()
	if got == nil {
		t.Fatalf("Get(%q) = nil, want %v", key, want)
	}
	if !bytes.Equal(wire(t, got), wire(t, want)) {
		t.Fatalf("Get(%q) = %v, want %v", key, got, want)
	}
}

// rawValue is the value buntdb holds for key ("" if none).
func rawValue(t testing.TB, s *SealedStore, key string) string {
	t.Helper()
	var v string
	err := s.db.View(func(tx *buntdb.Tx) error {
		var err error
		v, err = tx.Get(key)
		if errors.Is(err, buntdb.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// setRaw writes a value to buntdb as it is, bypassing the sealing.
func setRaw(t testing.TB, s *SealedStore, key, val string) {
	t.Helper()
	err := s.db.Update(func(tx *buntdb.Tx) error {
		_, _, err := tx.Set(key, val, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSealedStoreSemantics: the paho Store contract, as MemoryStore and
// FileStore keep it.
func TestSealedStoreSemantics(t *testing.T) {
	pub := testPublish(1, Topic("site-a", "mon-1"), []byte(`{"x":1}`))
	pub2 := testPublish(2, Topic("site-a", "mon-2"), []byte(`{"x":2}`))
	sub := testSubscribe(3)
	rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
	rel.MessageID = 2

	tests := []struct {
		name string
		run  func(t *testing.T, s *SealedStore)
	}{
		{"put and get every stored packet type", func(t *testing.T, s *SealedStore) {
			s.Put("i.1", pub)
			s.Put("o.3", sub)
			s.Put("o.2", rel)
			samePacket(t, "i.1", s.Get("i.1"), pub)
			samePacket(t, "o.3", s.Get("o.3"), sub)
			samePacket(t, "o.2", s.Get("o.2"), rel)
		}},
		{"get of a missing key is nil", func(t *testing.T, s *SealedStore) {
			if p := s.Get("i.9"); p != nil {
				t.Fatalf("Get = %v", p)
			}
		}},
		{"all lists keys in put order", func(t *testing.T, s *SealedStore) {
			s.Put("o.3", sub)
			s.Put("i.10", pub)
			s.Put("i.2", pub2)
			if got, want := s.All(), []string{"o.3", "i.10", "i.2"}; !slices.Equal(got, want) {
				t.Fatalf("All = %q, want %q", got, want)
			}
		}},
		{"put replaces, and the key sorts last", func(t *testing.T, s *SealedStore) {
			s.Put("i.1", pub)
			s.Put("i.2", pub2)
			s.Put("i.1", pub2)
			samePacket(t, "i.1", s.Get("i.1"), pub2)
			if got, want := s.All(), []string{"i.2", "i.1"}; !slices.Equal(got, want) {
				t.Fatalf("All = %q, want %q", got, want)
			}
		}},
		{"del removes one entry; del of a missing key is harmless", func(t *testing.T, s *SealedStore) {
			s.Put("i.1", pub)
			s.Put("i.2", pub2)
			s.Del("i.1")
			s.Del("i.1")
			s.Del("o.7")
			if p := s.Get("i.1"); p != nil {
				t.Fatalf("Get after Del = %v", p)
			}
			if got, want := s.All(), []string{"i.2"}; !slices.Equal(got, want) {
				t.Fatalf("All = %q, want %q", got, want)
			}
		}},
		{"reset removes everything", func(t *testing.T, s *SealedStore) {
			s.Put("i.1", pub)
			s.Put("o.3", sub)
			s.Reset()
			if got := s.All(); len(got) != 0 {
				t.Fatalf("All after Reset = %q", got)
			}
			s.Put("i.2", pub2)
			samePacket(t, "i.2", s.Get("i.2"), pub2)
		}},
		{"open is a no-op on an open store", func(t *testing.T, s *SealedStore) {
			s.Put("i.1", pub)
			s.Open()
			samePacket(t, "i.1", s.Get("i.1"), pub)
		}},
		{"a closed store ignores everything; open brings it back", func(t *testing.T, s *SealedStore) {
			s.Put("i.1", pub)
			s.Close()
			s.Close() // idempotent
			s.Put("i.2", pub2)
			s.Del("i.1")
			s.Reset()
			if p := s.Get("i.1"); p != nil {
				t.Fatalf("Get on a closed store = %v", p)
			}
			if got := s.All(); got != nil {
				t.Fatalf("All on a closed store = %q", got)
			}
			s.Open()
			samePacket(t, "i.1", s.Get("i.1"), pub)
			if got, want := s.All(), []string{"i.1"}; !slices.Equal(got, want) {
				t.Fatalf("All after reopening = %q, want %q", got, want)
			}
		}},
		{"a nil packet is refused", func(t *testing.T, s *SealedStore) {
			s.Put("i.1", nil)
			if got := s.All(); len(got) != 0 {
				t.Fatalf("All = %q", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := testSealedStore(t, "", testStoreKey(1))
			tt.run(t, s)
		})
	}
}

// TestSealedStoreReopen: entries and their order survive Close and a new
// SealedStore on the same file; entries put after reopening sort after the
// old ones.
func TestSealedStoreReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFile)
	a := testPublish(1, Topic("site-a", "mon-1"), []byte(`{"a":1}`))
	b := testPublish(2, Topic("site-a", "mon-2"), []byte(`{"b":2}`))
	c := testSubscribe(3)

	s1, _ := testSealedStore(t, path, testStoreKey(1))
	s1.Put("i.1", a)
	s1.Put("i.2", b)
	s1.Close()

	s2, _ := testSealedStore(t, path, testStoreKey(1))
	samePacket(t, "i.1", s2.Get("i.1"), a)
	samePacket(t, "i.2", s2.Get("i.2"), b)
	s2.Put("o.3", c)
	s2.Put("i.1", a)
	if got, want := s2.All(), []string{"i.2", "o.3", "i.1"}; !slices.Equal(got, want) {
		t.Fatalf("All = %q, want %q", got, want)
	}
	s2.Close()
	s2.Open()
	if got, want := s2.All(), []string{"i.2", "o.3", "i.1"}; !slices.Equal(got, want) {
		t.Fatalf("All after Close and Open = %q, want %q", got, want)
	}
	samePacket(t, "o.3", s2.Get("o.3"), c)
}

// TestSealedStoreWrongKey: under another key the entries are listed (their
// names are not secret) but none opens: each is logged as corrupt, dropped,
// and Get returns nil; the right key then finds nothing.
func TestSealedStoreWrongKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFile)
	s1, _ := testSealedStore(t, path, testStoreKey(1))
	s1.Put("i.1", testPublish(1, Topic("site-a", "mon-1"), []byte(`{"a":1}`)))
	s1.Put("o.2", testSubscribe(2))
	s1.Close()

	s2, logs := testSealedStore(t, path, testStoreKey(2))
	keys := s2.All()
	if want := []string{"i.1", "o.2"}; !slices.Equal(keys, want) {
		t.Fatalf("All = %q, want %q", keys, want)
	}
	for _, k := range keys {
		if p := s2.Get(k); p != nil {
			t.Errorf("Get(%q) under the wrong key = %v", k, p)
		}
	}
	if got := s2.All(); len(got) != 0 {
		t.Errorf("All after the corrupt entries were read = %q", got)
	}
	if n := strings.Count(logs.String(), "corrupt entry dropped"); n != 2 {
		t.Errorf("%d corrupt entries logged, want 2:\n%s", n, logs)
	}
	s2.Close()

	s3, _ := testSealedStore(t, path, testStoreKey(1))
	if got := s3.All(); len(got) != 0 {
		t.Errorf("All under the right key after the drop = %q", got)
	}
}

// TestSealedStoreTampered: a value that was altered, cut, moved to another
// key, or that opens to something other than one packet is logged as
// corrupt, deleted, and read as nil; the other entries are untouched.
func TestSealedStoreTampered(t *testing.T) {
	victim := testPublish(1, Topic("site-a", "mon-1"), []byte(`{"v":1}`))
	other := testPublish(2, Topic("site-a", "mon-2"), []byte(`{"v":2}`))
	flip := func(at func(n int) int) func(t *testing.T, s *SealedStore, v string) string {
		return func(t *testing.T, s *SealedStore, v string) string {
			b := []byte(v)
			b[at(len(b))] ^= 0x01
			return string(b)
		}
	}
	tests := []struct {
		name   string
		tamper func(t *testing.T, s *SealedStore, v string) string
	}{
		{"sequence changed", flip(func(int) int { return seqSize - 1 })},
		{"nonce changed", flip(func(int) int { return seqSize + 2 })},
		{"ciphertext changed", flip(func(int) int { return seqSize + 12 + 5 })},
		{"tag changed", flip(func(n int) int { return n - 1 })},
		{"truncated", func(t *testing.T, s *SealedStore, v string) string { return v[:len(v)-1] }},
		{"too short", func(t *testing.T, s *SealedStore, v string) string { return v[:seqSize+4] }},
		{"empty", func(t *testing.T, s *SealedStore, v string) string { return "" }},
		{"moved from another key", func(t *testing.T, s *SealedStore, v string) string {
			return rawValue(t, s, "i.2")
		}},
		{"sealed, but not a packet", func(t *testing.T, s *SealedStore, v string) string {
			b, err := s.seal("i.1", 1, []byte("not an mqtt packet"))
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}},
		{"sealed packet with trailing bytes", func(t *testing.T, s *SealedStore, v string) string {
			b, err := s.seal("i.1", 1, append(wire(t, victim), 0))
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := testSealedStore(t, "", testStoreKey(1))
			s.Put("i.1", victim)
			s.Put("i.2", other)
			setRaw(t, s, "i.1", tt.tamper(t, s, rawValue(t, s, "i.1")))
			if p := s.Get("i.1"); p != nil {
				t.Fatalf("Get of a tampered entry = %v", p)
			}
			if v := rawValue(t, s, "i.1"); v != "" {
				t.Errorf("the corrupt entry was not deleted")
			}
			if !strings.Contains(logs.String(), "corrupt entry dropped") || !strings.Contains(logs.String(), "key=i.1") {
				t.Errorf("no corrupt-entry log:\n%s", logs)
			}
			samePacket(t, "i.2", s.Get("i.2"), other)
			if got, want := s.All(), []string{"i.2"}; !slices.Equal(got, want) {
				t.Errorf("All = %q, want %q", got, want)
			}
		})
	}
}

// TestSealedStoreTamperedOnDisk: a byte flipped in the file itself (not
// through buntdb) is caught the same way.
func TestSealedStoreTamperedOnDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), StoreFile)
	s, _ := testSealedStore(t, path, testStoreKey(1))
	s.Put("i.1", testPublish(1, Topic("site-a", "mon-1"), []byte(`{"v":1}`)))
	other := testPublish(2, Topic("site-a", "mon-2"), []byte(`{"v":2}`))
	s.Put("i.2", other)
	v := rawValue(t, s, "i.1")
	s.Close()

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(raw, []byte(v))
	if at < 0 || bytes.Count(raw, []byte(v)) != 1 {
		t.Fatalf("the sealed value is not in the file once")
	}
	raw[at+len(v)/2] ^= 0x10
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	s2, logs := testSealedStore(t, path, testStoreKey(1))
	if p := s2.Get("i.1"); p != nil {
		t.Fatalf("Get of the damaged entry = %v", p)
	}
	samePacket(t, "i.2", s2.Get("i.2"), other)
	if !strings.Contains(logs.String(), "corrupt entry dropped") {
		t.Errorf("no corrupt-entry log:\n%s", logs)
	}
}

// TestSealedStoreFileHoldsNoPayload: a raw scan of the store's file, while
// packets are stored and after they are deleted, finds neither the
// payloads' patient id nor the topics.
func TestSealedStoreFileHoldsNoPayload(t *testing.T) {
	const canary = "Patient/canary-4f1c9e2a7b"
	path := filepath.Join(t.TempDir(), StoreFile)
	s, _ := testSealedStore(t, path, testStoreKey(1))
	topic := Topic("site-a", "mon-canary-77")
	payload := []byte(`{"device_id":"mon-canary-77","patient":"` + canary + `","time":"2025-03-01T12:00:00Z","loinc":"8867-4","value":72,"unit":"/min"}`)
	needles := [][]byte{[]byte(canary), []byte("canary-4f1c9e2a7b"), []byte(topic), payload}

	scan := func(when string) {
		t.Helper()
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) == 0 {
			t.Fatalf("%s: the store file is empty", when)
		}
		for _, n := range needles {
			if bytes.Contains(raw, n) {
				t.Errorf("%s: the store file holds %q in plaintext", when, n)
			}
		}
	}
	var pub *packets.PublishPacket
	for i := range 50 {
		pub = testPublish(uint16(i+1), topic, payload)
		s.Put(fmt.Sprintf("i.%d", i+1), pub)
	}
	// The search works: the packet as paho's FileStore would write it
	// holds every needle.
	for _, n := range needles {
		if !bytes.Contains(wire(t, pub), n) {
			t.Fatalf("the packet does not hold %q", n)
		}
	}
	scan("with packets stored")
	for i := range 50 {
		s.Del(fmt.Sprintf("i.%d", i+1))
	}
	s.Close()
	scan("after deleting and closing")

	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("store file mode %04o, want 0600", perm)
		}
	}
}

// TestSealedStoreConcurrent: concurrent use (with -race), including Close
// and Open while other goroutines work.
func TestSealedStoreConcurrent(t *testing.T) {
	s, _ := testSealedStore(t, "", testStoreKey(1))
	const workers, ops = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ops {
				id := uint16(w*ops + i + 1)
				key := fmt.Sprintf("i.%d", id)
				s.Put(key, testPublish(id, Topic("site-a", "mon-1"), []byte(key)))
				if p := s.Get(key); p != nil {
					if got := string(p.(*packets.PublishPacket).Payload); got != key {
						t.Errorf("Get(%q) payload %q", key, got)
					}
				}
				s.All()
				if i%2 == 0 {
					s.Del(key)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			s.Close()
			s.Open()
		}
	}()
	wg.Wait()
	s.Open()
	for _, k := range s.All() {
		if s.Get(k) == nil {
			t.Errorf("entry %q does not open", k)
		}
	}
}

// TestNewSealedStoreErrors: a bad key or an unusable path fails in
// NewSealedStore.
func TestNewSealedStoreErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte("*3\r\n$3\r\nfoo\r\n$1\r\na\r\n$1\r\nb\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		key  []byte
		want error // nil: any error
	}{
		{"no key", filepath.Join(dir, "a.db"), nil, ErrBadStoreKey},
		{"short key", filepath.Join(dir, "a.db"), make([]byte, 16), ErrBadStoreKey},
		{"long key", filepath.Join(dir, "a.db"), make([]byte, 64), ErrBadStoreKey},
		{"missing directory", filepath.Join(dir, "nope", "a.db"), testStoreKey(1), nil},
		{"a directory", dir, testStoreKey(1), nil},
		{"not a buntdb file", garbage, testStoreKey(1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSealedStore(tt.path, tt.key, nil)
			if err == nil {
				s.Close()
				t.Fatal("NewSealedStore succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("NewSealedStore: %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzSealedStoreGet: whatever a sealed value holds, Get returns a packet
// or nil and never panics, and a packet it returns encodes again.
func FuzzSealedStoreGet(f *testing.F) {
	f.Add(wire(f, testPublish(1, Topic("site-a", "mon-1"), []byte(`{"a":1}`))))
	f.Add(wire(f, testSubscribe(2)))
	f.Add([]byte{0x30, 0x05, 0x00, 0x01, 'a'})
	f.Add([]byte{0x32, 0x02, 0x00, 0x09})
	f.Add([]byte{0xff})
	f.Add([]byte{})
	s, _ := testSealedStore(f, "", testStoreKey(1))
	f.Fuzz(func(t *testing.T, plain []byte) {
		v, err := s.seal("i.1", 1, plain)
		if err != nil {
			t.Fatal(err)
		}
		setRaw(t, s, "i.1", string(v))
		if p := s.Get("i.1"); p != nil {
			wire(t, p) // what Get returns, paho can send
		}
	})
}

// BenchmarkPahoStore: one Put and one Del of a reading-sized inbound
// PUBLISH, the store work paho does per message received at QoS 1.
func BenchmarkPahoStore(b *testing.B) {
	payload := testPayload(testReading("mon-1", "p-1", 1))
	for _, bc := range []struct {
		name string
		open func(b *testing.B) mqtt.Store
	}{
		{"memory", func(*testing.B) mqtt.Store { return mqtt.NewMemoryStore() }},
		{"file-plaintext", func(b *testing.B) mqtt.Store { return mqtt.NewFileStore(b.TempDir()) }},
		{"sealed", func(b *testing.B) mqtt.Store {
			s, _ := testSealedStore(b, "", testStoreKey(1))
			return s
		}},
		{"sealed-fsync", func(b *testing.B) mqtt.Store {
			s, err := newSealedStore(filepath.Join(b.TempDir(), StoreFile), testStoreKey(1), nil, buntdb.Always)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(s.Close)
			return s
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st := bc.open(b)
			st.Open()
			defer st.Close()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				id := uint16(i%65535 + 1)
				key := fmt.Sprintf("i.%d", id)
				st.Put(key, testPublish(id, Topic("site-a", "mon-1"), payload))
				st.Del(key)
				i++
			}
		})
	}
}

func TestIsPlaintextStoreFile(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"i.1.msg", true},
		{"o.65535.msg", true},
		{"i.12.tmp", true},
		{"o.7.CORRUPT", true},
		{"i.65536.msg", false},
		{"i..msg", false},
		{"i.x.msg", false},
		{"x.1.msg", false},
		{"i.1.msg.bak", false},
		{"i.1", false},
		{StoreFile, false},
		{"notes.txt", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isPlaintextStoreFile(tt.name); got != tt.want {
				t.Fatalf("isPlaintextStoreFile(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

// TestSubscriberSealedStoreDir: with StoreDir and StoreKey the Subscriber
// keeps paho's state in the SealedStore file, and first deletes the
// plaintext files an earlier version's paho FileStore left there (and
// nothing else).
func TestSubscriberSealedStoreDir(t *testing.T) {
	const canary = "canary-90ab1f"
	b := startEmbedded(t)
	cfg := testConfig(t, b.URL(), "agent-site-a")
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		t.Fatal(err)
	}
	legacy := []string{"i.12.msg", "o.3.tmp", "i.7.CORRUPT"}
	kept := []string{"notes.txt", "i.x.msg"}
	for _, name := range append(slices.Clone(legacy), kept...) {
		pkt := wire(t, testPublish(12, Topic("site-a", "mon-1"), []byte(`{"patient":"Patient/`+canary+`"}`)))
		if slices.Contains(kept, name) {
			pkt = []byte("operator notes")
		}
		if err := os.WriteFile(filepath.Join(cfg.StoreDir, name), pkt, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	sink := newCountingSink(nil)
	_, stop := runSubscriber(t, cfg, nil, sink)
	const n = 20
	var msgs []message
	for i := range n {
		r := testReading("mon-1", canary+"-1", i)
		msgs = append(msgs, message{Topic("site-a", r.DeviceID), testPayload(r)})
	}
	mustPublishAll(t, newPublisher(t, b.URL(), "gateway-1"), msgs, 10, 20*time.Second)
	waitFor(t, 20*time.Second, "the readings", func() bool { d, _ := sink.counts(); return d == n })
	stop()

	for _, name := range legacy {
		if _, err := os.Stat(filepath.Join(cfg.StoreDir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("legacy plaintext file %s: %v, want it deleted", name, err)
		}
	}
	for _, name := range kept {
		if _, err := os.Stat(filepath.Join(cfg.StoreDir, name)); err != nil {
			t.Errorf("unrelated file %s: %v, want it kept", name, err)
		}
	}
	if !strings.Contains(logs.String(), "deleted the plaintext paho file store") || !strings.Contains(logs.String(), "files=3") {
		t.Errorf("no log of the deletion:\n%s", logs)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.StoreDir, StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	if sets := bytes.Count(raw, []byte("$3\r\nset\r\n")); sets < n {
		t.Errorf("the sealed store file has %d entries written, want at least %d", sets, n)
	}
	if bytes.Contains(raw, []byte(canary)) {
		t.Errorf("the sealed store file holds a patient id in plaintext")
	}
}

// TestSubscriberStoreDirErrors: Run fails, before connecting, when the
// store directory or file cannot be used.
func TestSubscriberStoreDirErrors(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		want    error // nil: any error
	}{
		{"group-readable dir", func(t *testing.T, dir string) {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o750); err != nil {
				t.Fatal(err)
			}
		}, ErrInsecureDir},
		{"store file not buntdb", func(t *testing.T, dir string) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, StoreFile), []byte("*1\r\n$4\r\njunk\r\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == ErrInsecureDir && runtime.GOOS == "windows" {
				t.Skip("no unix permissions")
			}
			cfg := testConfig(t, "tcp://127.0.0.1:1", "agent")
			tt.prepare(t, cfg.StoreDir)
			s, err := New(cfg, nil, newCountingSink(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = s.Run(context.Background())
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Run: %v, want %v", err, tt.want)
			}
		})
	}
}
