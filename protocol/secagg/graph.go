package secagg

import "slices"

// topology is the communication graph over U1: who shares secrets with,
// and masks against, whom. With the full graph every client's
// neighbourhood is U1. With Degree k (SecAgg+), U1 is shuffled onto a ring
// by a permutation derived from the session, and each client's
// neighbourhood is itself and the k/2 clients on either side (a k-regular
// Harary graph). Client and server derive the same graph from U1 and the
// session; it is never sent.
type topology struct {
	members []int         // U1, sorted
	nb      map[int][]int // neighbourhoods, sorted, self included; nil for the full graph
}

func newTopology(cfg Config, h Header, u1 []int) *topology {
	t := &topology{members: slices.Clone(u1)}
	slices.Sort(t.members)
	m := len(t.members)
	if cfg.Degree == 0 || cfg.Degree+1 >= m {
		return t
	}
	ring := slices.Clone(t.members)
	g := newPRG(deriveKey(nil, labelGraph, h), nil)
	for i := m - 1; i > 0; i-- {
		j := g.intn(i + 1)
		ring[i], ring[j] = ring[j], ring[i]
	}
	t.nb = make(map[int][]int, m)
	half := cfg.Degree / 2
	for p, u := range ring {
		n := make([]int, 0, cfg.Degree+1)
		for d := -half; d <= half; d++ {
			n = append(n, ring[((p+d)%m+m)%m])
		}
		slices.Sort(n)
		t.nb[u] = n
	}
	return t
}

// of returns u's neighbourhood (u included), sorted; nil if u ∉ U1. The
// caller must not modify it.
func (t *topology) of(u int) []int {
	if t.nb == nil {
		if _, ok := slices.BinarySearch(t.members, u); ok {
			return t.members
		}
		return nil
	}
	return t.nb[u]
}

// adjacent reports whether v is in u's neighbourhood (u itself included).
func (t *topology) adjacent(u, v int) bool {
	_, ok := slices.BinarySearch(t.of(u), v)
	return ok
}
