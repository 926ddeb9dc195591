package device

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/device/mosquittotest"
	"github.com/cohort-fl/cohort/agent/fhir"
)

// blockingSink blocks every call until released.
type blockingSink struct {
	releaseC chan struct{}
	calls    atomic.Int64
	next     *countingSink
}

func (b *blockingSink) Observation(o fhir.Observation) error {
	b.calls.Add(1)
	<-b.releaseC
	return b.next.Observation(o)
}

// TestBackPressure stalls the sink: the subscriber's queue stays within
// QueueSize, the messages it holds stay within the broker's in-flight
// window (Mosquitto's max_inflight_messages; the embedded broker has none
// for MQTT 3.1.1 clients, so there every message waits, unacked, in a
// handler), nothing is acked or dropped, and once the sink is released
// every reading arrives exactly once.
func TestBackPressure(t *testing.T) {
	const (
		n         = 300
		queueSize = 4
		maxBatch  = 2
		window    = 10
	)
	tests := []struct {
		name   string
		start  func(t *testing.T) string // returns the broker URL
		window int                       // 0: the broker has no in-flight window
	}{
		{"mosquitto", func(t *testing.T) string {
			return mosquittotest.Start(t, mosquittotest.Options{MaxInflight: window}).URL()
		}, window},
		{"embedded", func(t *testing.T) string { return startEmbedded(t).URL() }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.start(t)
			sink := &blockingSink{releaseC: make(chan struct{}), next: newCountingSink(nil)}
			released := false
			release := func() {
				if !released {
					released = true
					close(sink.releaseC)
				}
			}
			cfg := testConfig(t, url, "agent-site-a")
			cfg.QueueSize = queueSize
			cfg.MaxBatch = maxBatch
			s, stop := runSubscriber(t, cfg, nil, sink)
			// Cleanups run last-in first-out: release before the
			// subscriber's Close, which waits for the sink.
			t.Cleanup(release)

			msgs := make([]message, n)
			for i := range msgs {
				r := testReading(fmt.Sprintf("mon-%d", i%3), "p-1", i)
				msgs[i] = message{Topic("site-a", r.DeviceID), testPayload(r)}
			}
			// The broker accepts (PUBACKs) everything: MQTT 3.1.1 has no
			// end-to-end flow control, the broker queues for the agent.
			mustPublishAll(t, newPublisher(t, url, "gateway-1"), msgs, 50, 20*time.Second)

			held := n // messages the agent holds, unacked, while stalled
			if tt.window > 0 {
				held = tt.window
			}
			waitFor(t, 10*time.Second, fmt.Sprintf("%d messages held unacked", held), func() bool {
				st := s.Stats()
				return st.Received == uint64(held) && st.Unacked == held
			})
			// Stalled: it stays that way, nothing is stored or acked.
			bounded := func() bool {
				st := s.Stats()
				return st.Received > uint64(held) || st.Unacked != held || st.QueueDepth > queueSize || st.Stored != 0
			}
			neverWithin(t, 300*time.Millisecond, "the stalled subscriber took more or acked", bounded)
			st := s.Stats()
			// The writer holds 1 to maxBatch readings in the stalled sink call.
			if inHand := held - st.QueueDepth - st.Waiting; st.QueueDepth != queueSize || inHand < 1 || inHand > maxBatch {
				t.Errorf("stalled: queue %d, waiting %d, so %d in the writer's hands; want queue %d and 1 to %d in hand",
					st.QueueDepth, st.Waiting, inHand, queueSize, maxBatch)
			}
			if c := sink.calls.Load(); c != 1 {
				t.Errorf("sink called %d times while stalled, want 1", c)
			}
			t.Logf("stalled: received %d, unacked %d, queue %d/%d, waiting %d", st.Received, st.Unacked, st.QueueDepth, queueSize, st.Waiting)

			release()
			waitFor(t, 30*time.Second, "every reading stored", func() bool {
				d, _ := sink.next.counts()
				return d == n && s.Stats().Unacked == 0
			})
			stop()
			distinct, total := sink.next.counts()
			st = s.Stats()
			if distinct != n || total != n || st.Stored != n || st.Received != n || sum(st.Rejected) != 0 {
				t.Errorf("after release: %d distinct in %d writes; stats %+v", distinct, total, st)
			}
		})
	}
}
