package device

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/tidwall/buntdb"

	"github.com/cohort-fl/cohort/agent/device/mosquittotest"
)

// benchMsgs is the number of readings per benchmark iteration; with the
// default -benchtime a run makes a handful of iterations.
const benchMsgs = 5000

// benchPublishWindow is the publisher's unacked-publish limit in both
// benchmarks.
const benchPublishWindow = 500

// benchMessages returns iteration it's readings (ids unique across
// iterations).
func benchMessages(it int) []message {
	msgs := make([]message, benchMsgs)
	for i := range msgs {
		r := testReading(fmt.Sprintf("mon-%d", i%16), fmt.Sprintf("p-%d", i%16), it*benchMsgs+i)
		msgs[i] = message{Topic("site-a", r.DeviceID), testPayload(r)}
	}
	return msgs
}

// runPubSubBench publishes b.N batches of benchMsgs readings and waits,
// after each, until count reaches the running total; it reports msgs/s.
func runPubSubBench(b *testing.B, pub mqtt.Client, count func() int) {
	b.Helper()
	var elapsed time.Duration
	var bytes int
	b.ResetTimer()
	for it := range b.N {
		b.StopTimer()
		msgs := benchMessages(it)
		bytes = len(msgs[0].payload)
		b.StartTimer()
		start := time.Now()
		if err := publishAll(pub, msgs, benchPublishWindow, time.Minute); err != nil {
			b.Fatal(err)
		}
		want := (it + 1) * benchMsgs
		waitFor(b, time.Minute, fmt.Sprintf("%d messages", want), func() bool { return count() >= want })
		elapsed += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchMsgs)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(bytes), "bytes/msg")
}

// BenchmarkMosquittoEndToEnd: readings/s from a QoS 1 publisher through
// Mosquitto (default in-flight window of 20) into the Subscriber: decode,
// queue, sink (in memory, or the real encrypted store with batched
// fsyncs), then the manual ack; with paho's in-flight state in the
// SealedStore (Config.StoreDir and StoreKey, the file synced every
// second), in the SealedStore synced on every Put and Del
// (sealed-fsync, for comparison), in paho's plaintext FileStore (what
// StoreDir used to select; for comparison only) and in paho's in-memory
// store. Compare with BenchmarkMosquittoPubSub.
func BenchmarkMosquittoEndToEnd(b *testing.B) {
	type pahoStore int
	const (
		sealed pahoStore = iota
		sealedFsync
		plainFile
		memory
	)
	for _, bc := range []struct {
		name      string
		realStore bool // the encrypted store, else an in-memory sink
		paho      pahoStore
	}{
		{"sink=memory/paho=file", false, plainFile},
		{"sink=store/paho=file", true, plainFile},
		{"sink=memory/paho=sealed", false, sealed},
		{"sink=store/paho=sealed", true, sealed},
		{"sink=store/paho=sealed-fsync", true, sealedFsync},
		{"sink=memory/paho=memory", false, memory},
		{"sink=store/paho=memory", true, memory},
	} {
		b.Run(bc.name, func(b *testing.B) {
			broker := mosquittotest.Start(b, mosquittotest.Options{})
			sink := newCountingSink(nil)
			if bc.realStore {
				sink = newCountingSink(openTestStore(b).NewBatch(1000))
			}
			cfg := testConfig(b, broker.URL(), "agent-bench")
			var prepare func(*Subscriber)
			switch bc.paho {
			case memory:
				cfg.StoreDir, cfg.StoreKey = "", nil
			case plainFile:
				prepare = func(s *Subscriber) {
					s.pahoStore = func() mqtt.Store { return mqtt.NewFileStore(cfg.StoreDir) }
				}
			case sealedFsync:
				if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
					b.Fatal(err)
				}
				ss, err := newSealedStore(filepath.Join(cfg.StoreDir, StoreFile), cfg.StoreKey, nil, buntdb.Always)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(ss.Close)
				prepare = func(s *Subscriber) { s.pahoStore = func() mqtt.Store { return ss } }
			}
			runSubscriberWith(b, cfg, nil, sink, prepare)
			pub := benchPublisher(b, broker.URL())
			runPubSubBench(b, pub, func() int { d, _ := sink.counts(); return d })
		})
	}
}

// BenchmarkMosquittoPubSub is the baseline: Mosquitto's own
// publish-to-subscribe rate for the same messages, to a plain paho QoS 1
// subscriber that only counts (no decode, no store, automatic acks).
func BenchmarkMosquittoPubSub(b *testing.B) {
	broker := mosquittotest.Start(b, mosquittotest.Options{})
	var n atomic.Int64
	o := mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("plain-sub")
	sub := mqtt.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	tok := sub.Subscribe(TopicFilter("site-a"), 1, func(mqtt.Client, mqtt.Message) { n.Add(1) })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}
	pub := benchPublisher(b, broker.URL())
	runPubSubBench(b, pub, func() int { return int(n.Load()) })
}

// benchPublisher is the publisher of both benchmarks: QoS 1, in-memory
// paho store (the publisher's durability is not what is measured).
func benchPublisher(b *testing.B, url string) mqtt.Client {
	return connectPublisher(b, url, "gateway-bench", mqtt.NewMemoryStore())
}
