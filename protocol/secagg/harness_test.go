package secagg

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// scenario describes one simulated protocol run.
type scenario struct {
	n    int
	cfg  Config
	seed uint64
	// drop[p] lists the 0-based clients that send nothing from phase p on.
	drop map[Phase][]int
	// failover serializes and restores the server (and every client)
	// between every step, as a new leader (or a restarted agent) would.
	failover bool
	// wire sends every message through its binary encoding.
	wire bool
	// observe records every vector the server holds.
	observe func(label string, v []uint32)
}

// outcome is what a run produced.
type outcome struct {
	res     *Result
	err     error
	updates [][]float32 // by 0-based client
	inputs  []int       // 0-based clients that sent a masked input
	server  *Server
	clients []*Client
}

func sessionFor(n int, round uint64) Session {
	s := Session{JobID: "job-1", Round: round}
	for i := range n {
		s.Clients = append(s.Clients, fmt.Sprintf("site-%02d", i))
	}
	return s
}

func testConfig(n, length int) Config {
	cfg := DefaultConfig()
	cfg.Threshold = MajorityThreshold(n, 0)
	cfg.VectorLength = length
	return cfg
}

func randomUpdate(r *rand.Rand, length int, spread float64) []float32 {
	u := make([]float32, length)
	for i := range u {
		u[i] = float32((r.Float64()*2 - 1) * spread)
	}
	return u
}

// transmit passes a message through its wire encoding when wire is set.
func transmit[M Message](t testing.TB, wire bool, m M) M {
	t.Helper()
	if !wire {
		return m
	}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatalf("marshal %s: %v", m.Kind(), err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatalf("decode %s: %v", m.Kind(), err)
	}
	return d.(M)
}

func (sc scenario) run(t testing.TB) outcome {
	t.Helper()
	sess := sessionFor(sc.n, 7)
	r := rand.New(rand.NewPCG(sc.seed, 1))
	srv, err := NewServer(sc.cfg, sess)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	srv.SetObserver(sc.observe)
	out := outcome{server: srv}
	clients := make([]*Client, sc.n)
	for i := range clients {
		c, err := NewClient(sc.cfg, sess, sess.Clients[i], rand.NewChaCha8([32]byte{byte(sc.seed), byte(i), 1}))
		if err != nil {
			t.Fatalf("NewClient: %v", err)
		}
		clients[i] = c
		out.updates = append(out.updates, randomUpdate(r, sc.cfg.VectorLength, 1.3*sc.cfg.ClipRange))
	}
	dropped := map[int]bool{}
	active := func(p Phase) []int {
		for _, i := range sc.drop[p] {
			dropped[i] = true
		}
		var a []int
		for i := range clients {
			if !dropped[i] {
				a = append(a, i)
			}
		}
		return a
	}
	failover := func() {
		if !sc.failover {
			return
		}
		b, err := json.Marshal(srv)
		if err != nil {
			t.Fatalf("marshal server: %v", err)
		}
		var next Server
		if err := json.Unmarshal(b, &next); err != nil {
			t.Fatalf("restore server: %v", err)
		}
		next.SetObserver(sc.observe)
		srv = &next
		for i, c := range clients {
			b, err := c.MarshalBinary()
			if err != nil {
				t.Fatalf("marshal client: %v", err)
			}
			if clients[i], err = RestoreClient(b, rand.NewChaCha8([32]byte{byte(sc.seed), byte(i), 2})); err != nil {
				t.Fatalf("restore client: %v", err)
			}
		}
	}
	finish := func(err error) outcome {
		out.err, out.server, out.clients = err, srv, clients
		return out
	}
	inU := func(ids []string, i int) bool { return slices.Contains(ids, sess.Clients[i]) }

	// Round 0.
	for _, i := range active(PhaseAdvertiseKeys) {
		m, err := clients[i].AdvertiseKeys()
		if err != nil {
			t.Fatalf("client %d AdvertiseKeys: %v", i, err)
		}
		failover()
		if err := srv.Handle(sess.Clients[i], transmit(t, sc.wire, m)); err != nil {
			t.Fatalf("server AdvertiseKeys from %d: %v", i, err)
		}
	}
	failover()
	if err := srv.Advance(); err != nil {
		return finish(err)
	}
	failover()
	// Round 1.
	kl, err := srv.KeyList()
	if err != nil {
		t.Fatalf("KeyList: %v", err)
	}
	for _, i := range active(PhaseShareKeys) {
		if !inU(srv.Participants(), i) {
			continue
		}
		m, err := clients[i].ShareKeys(transmit(t, sc.wire, kl))
		if err != nil {
			t.Fatalf("client %d ShareKeys: %v", i, err)
		}
		failover()
		if err := srv.Handle(sess.Clients[i], transmit(t, sc.wire, m)); err != nil {
			t.Fatalf("server ShareKeys from %d: %v", i, err)
		}
	}
	failover()
	if err := srv.Advance(); err != nil {
		return finish(err)
	}
	failover()
	// Round 2.
	for _, i := range active(PhaseMaskedInput) {
		if !inU(srv.Participants(), i) {
			continue
		}
		rs, err := srv.RoutedShares(sess.Clients[i])
		if err != nil {
			t.Fatalf("RoutedShares(%d): %v", i, err)
		}
		m, err := clients[i].MaskedInput(transmit(t, sc.wire, rs), out.updates[i])
		if err != nil {
			t.Fatalf("client %d MaskedInput: %v", i, err)
		}
		failover()
		if err := srv.Handle(sess.Clients[i], transmit(t, sc.wire, m)); err != nil {
			t.Fatalf("server MaskedInput from %d: %v", i, err)
		}
		out.inputs = append(out.inputs, i)
	}
	failover()
	if err := srv.Advance(); err != nil {
		return finish(err)
	}
	failover()
	// Round 3.
	req, err := srv.UnmaskRequest()
	if err != nil {
		t.Fatalf("UnmaskRequest: %v", err)
	}
	for _, i := range active(PhaseUnmasking) {
		if !inU(srv.Participants(), i) {
			continue
		}
		m, err := clients[i].Unmask(transmit(t, sc.wire, req))
		if err != nil {
			t.Fatalf("client %d Unmask: %v", i, err)
		}
		failover()
		if err := srv.Handle(sess.Clients[i], transmit(t, sc.wire, m)); err != nil {
			t.Fatalf("server Unmask from %d: %v", i, err)
		}
	}
	failover()
	if err := srv.Advance(); err != nil {
		return finish(err)
	}
	failover()
	res, err := srv.Result()
	out.res = res
	return finish(err)
}

// plainSum is the sum of the clients' clipped updates, in float64.
func plainSum(cfg Config, updates [][]float32, who []int) []float64 {
	s := make([]float64, cfg.VectorLength)
	for _, i := range who {
		for j, x := range updates[i] {
			s[j] += min(max(float64(x), -cfg.ClipRange), cfg.ClipRange)
		}
	}
	return s
}

// checkSum compares a run's result with the plain sum of its contributors.
func checkSum(t *testing.T, cfg Config, o outcome) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("run failed: %v", o.err)
	}
	if o.res.Count != len(o.inputs) {
		t.Fatalf("result counts %d contributors, %d sent inputs", o.res.Count, len(o.inputs))
	}
	want := plainSum(cfg, o.updates, o.inputs)
	tol := float64(len(o.inputs))*0.5/cfg.Scale + 1e-9
	for j, w := range want {
		if d := math.Abs(o.res.Sum[j] - w); d > tol {
			t.Fatalf("coordinate %d: masked sum %v, plain sum %v (|Δ| %g > %g)", j, o.res.Sum[j], w, d, tol)
		}
	}
}
