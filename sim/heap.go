package sim

import (
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// heapWatch samples the Go heap every 50 ms and keeps the largest value:
// the peak memory of an in-process testbed.
type heapWatch struct {
	max  atomic.Uint64
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func startHeapWatch() *heapWatch {
	h := &heapWatch{done: make(chan struct{})}
	h.sample()
	h.wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.done:
				return
			case <-t.C:
				h.sample()
			}
		}
	})
	return h
}

func (h *heapWatch) sample() {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	v := s[0].Value.Uint64()
	for {
		old := h.max.Load()
		if v <= old || h.max.CompareAndSwap(old, v) {
			return
		}
	}
}

// peak is the largest heap seen so far.
func (h *heapWatch) peak() uint64 {
	h.sample()
	return h.max.Load()
}

// stop ends the sampling; it is idempotent.
func (h *heapWatch) stop() {
	h.once.Do(func() { close(h.done) })
	h.wg.Wait()
}
