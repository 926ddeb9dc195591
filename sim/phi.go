package sim

import (
	"maps"
	"slices"
	"strings"
	"sync"
)

// phiScanner looks for planted identifiers in every byte agents send. A
// tap sees the egress in writes; the last bytes of each site's previous
// write are kept so that an identifier split across two writes is found.
type phiScanner struct {
	canaries map[string][]string // by kind
	longest  int

	mu    sync.Mutex
	tails map[string][]byte
	found map[string]bool
}

func newPHIScanner(canaries map[string][]string) *phiScanner {
	p := &phiScanner{canaries: canaries, tails: map[string][]byte{}, found: map[string]bool{}}
	for _, vs := range canaries {
		for _, v := range vs {
			p.longest = max(p.longest, len(v))
		}
	}
	return p
}

// wrap returns a tap that scans and then calls next (if any).
func (p *phiScanner) wrap(next func(site string, b []byte)) func(site string, b []byte) {
	return func(site string, b []byte) {
		p.scan(site, b)
		if next != nil {
			next(site, b)
		}
	}
}

func (p *phiScanner) scan(site string, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	buf := append(p.tails[site], b...)
	s := string(buf)
	for kind, vs := range p.canaries {
		if p.found[kind] {
			continue
		}
		for _, v := range vs {
			if v != "" && strings.Contains(s, v) {
				p.found[kind] = true
				break
			}
		}
	}
	keep := min(len(buf), max(p.longest-1, 0))
	p.tails[site] = slices.Clone(buf[len(buf)-keep:])
}

// result is how many identifiers were looked for and the kinds found.
func (p *phiScanner) result() (checked int, found []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, vs := range p.canaries {
		checked += len(vs)
	}
	return checked, slices.Sorted(maps.Keys(p.found))
}
