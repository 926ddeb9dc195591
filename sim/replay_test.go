package sim

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/device"
	"github.com/cohort-fl/cohort/agent/device/mosquittotest"
	"github.com/cohort-fl/cohort/agent/physionet"
	"github.com/cohort-fl/cohort/agent/store"
)

// Every device vital of all 4,000 PhysioNet stays, replayed as bedside
// telemetry through a real Mosquitto broker, lands in an agent's encrypted
// store exactly once: the store holds one observation per distinct
// (device, time, LOINC code) published, none lost, none doubled.
func TestPhysioNetReplayThroughMosquitto(t *testing.T) {
	if testing.Short() {
		t.Skip("replays 1.1 million readings")
	}
	dir := physioNetDir(t)
	broker := mosquittotest.Start(t, mosquittotest.Options{MaxInflight: 100})

	key := func() []byte {
		k := make([]byte, 32)
		rand.Read(k)
		return k
	}
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "store.db"), MasterKey: key(), PseudonymKey: key()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := device.DefaultConfig()
	cfg.Broker = broker.URL()
	cfg.Site = "icu"
	cfg.ClientID = "cohort-agent-icu"
	cfg.QuarantineDir = filepath.Join(t.TempDir(), "quarantine")
	sub, err := device.New(cfg, nil, st.NewBatch(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { sub.Run(ctx) })
	defer sub.Close()
	eventually(t, "the subscriber to connect", func() bool { return sub.Stats().Connected })

	var stays []*physionet.Stay
	if _, err := physionet.ReadStays(ctx, filepath.Join(dir, physionet.SetAArchive), filepath.Join(dir, physionet.SetAOutcomes),
		func(s *physionet.Stay) error { stays = append(stays, s); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(stays) != 4000 {
		t.Fatalf("read %d stays", len(stays))
	}
	// What should arrive: the distinct (device, minute, code) readings
	// among the stays' device vitals (a stay may repeat a parameter within
	// a minute; the subscriber keys observations by device, time and code).
	vitals := physionet.DefaultVitalParams()
	type reading struct {
		device string
		minute int
		code   string
	}
	distinct := map[reading]bool{}
	rows := 0
	for _, s := range stays {
		for _, r := range s.Rows {
			p, ok := physionet.Lookup(r.Param)
			if !ok || !slices.Contains(vitals, r.Param) {
				continue
			}
			rows++
			distinct[reading{physionet.DeviceID(s), r.Minute, p.LOINC}] = true
		}
	}

	rc := physionet.DefaultReplayConfig()
	rc.Broker = broker.URL()
	rc.ClientID = "icu-replay"
	rc.Site = "icu"
	rc.Speed = 0 // as fast as the broker takes them
	rs, err := physionet.Replay(ctx, rc, stays, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Total != rows {
		t.Fatalf("published %d readings, the stays hold %d device vitals", rs.Total, rows)
	}
	deadline := time.Now().Add(15 * time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_, obs, _, err := st.Counts()
		if err != nil {
			t.Fatal(err)
		}
		if obs == len(distinct) {
			break
		}
		if obs > len(distinct) {
			t.Fatalf("store holds %d observations, more than the %d distinct readings", obs, len(distinct))
		}
		if time.Now().After(deadline) {
			t.Fatalf("store holds %d of %d distinct readings; subscriber %+v", obs, len(distinct), sub.Stats())
		}
		<-tick.C // the broker drains at its own pace: poll the count, bounded by the deadline
	}
	if s := sub.Stats(); len(s.Rejected) != 0 {
		t.Fatalf("rejected readings: %v", s.Rejected)
	}
	t.Logf("published %d readings (%d distinct) from %d stays; all stored", rs.Total, len(distinct), rs.Devices)
}
