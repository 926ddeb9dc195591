package sim

import (
	"sort"
	"sync"
	"time"
)

// byteSeries samples the agents' and coordinators' byte counters every
// 10 ms, so that a round's bytes can be read off at its commit time (the
// watcher may see several commits at once, long after they happened).
type byteSeries struct {
	read func() (up, down int64)
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	samples []byteSample
}

type byteSample struct {
	at       time.Time
	up, down int64
}

func startByteSeries(read func() (up, down int64)) *byteSeries {
	b := &byteSeries{read: read, done: make(chan struct{})}
	b.sample()
	b.wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.done:
				b.sample()
				return
			case <-t.C:
				b.sample()
			}
		}
	})
	return b
}

func (b *byteSeries) sample() {
	up, down := b.read()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.samples = append(b.samples, byteSample{at: time.Now(), up: up, down: down})
}

// stop takes a last sample and ends the sampling.
func (b *byteSeries) stop() {
	select {
	case <-b.done:
	default:
		close(b.done)
	}
	b.wg.Wait()
}

// at returns the counters as of the last sample taken at or before t.
func (b *byteSeries) at(t time.Time) (up, down int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.samples), func(i int) bool { return b.samples[i].at.After(t) })
	if i == 0 {
		return 0, 0
	}
	s := b.samples[i-1]
	return s.up, s.down
}

// perRound fills in each round's bytes: the counters' growth between the
// previous round's commit and this one's (commit times are in
// rounds[i].Elapsed seconds after start).
func (b *byteSeries) perRound(start time.Time, rounds []RoundLine) {
	var pu, pd int64
	for i := range rounds {
		u, d := b.at(start.Add(time.Duration(rounds[i].Elapsed * float64(time.Second))))
		rounds[i].BytesUp, rounds[i].BytesDown = max(u-pu, 0), max(d-pd, 0)
		pu, pd = max(u, pu), max(d, pd)
	}
}
