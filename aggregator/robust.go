package aggregator

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
)

// Robust rules. They need every update at once, so their rounds keep a
// float32 copy of each delta: memory is O(updates × parameters), unlike
// the streaming rules. All of them ignore sample counts (which a hostile
// site controls) and weigh every site equally, and all of them are exactly
// invariant to the order updates arrive in: ties are broken by comparing
// the updates' values, and sums run in a canonical order.

// Median is the coordinate-wise median of the deltas (Yin et al., 2018):
// new[j] = global[j] + median_i Δᵢ[j], the mean of the two middle values
// when the number of updates is even. It tolerates fewer than half of the
// sites being hostile. Stateless.
type Median struct{}

// TrimmedMean is the coordinate-wise trimmed mean (Yin et al., 2018): for
// each coordinate it drops the ⌊Beta·n⌋ smallest and the ⌊Beta·n⌋ largest
// of the n deltas and averages the rest. Stateless.
type TrimmedMean struct {
	// Beta is the fraction trimmed from each end, 0 <= Beta < 0.5.
	Beta float64
}

// Krum (Blanchard et al., 2017) picks the one delta whose n−F−2 nearest
// neighbours (squared Euclidean distance) are closest, and applies it. It
// needs n > 2F+2 updates; Finish fails with ErrTooFew otherwise, and
// CheckByzantine checks a job's minimum in advance. Stateless.
type Krum struct {
	// F is the number of hostile sites tolerated, >= 0.
	F int
}

// MultiKrum (Blanchard et al., 2017) ranks the deltas by their Krum score
// and applies the unweighted mean of the M best. Stateless.
type MultiKrum struct {
	// F is the number of hostile sites tolerated, >= 0.
	F int
	// M is the number of deltas averaged, 1 <= M; 0 means n−F, all but
	// the F worst. A round needs n > 2F+2 and n >= M+F updates.
	M int
}

var (
	_ Strategy = Median{}
	_ Strategy = TrimmedMean{}
	_ Strategy = Krum{}
	_ Strategy = MultiKrum{}
)

// Name returns "median".
func (Median) Name() string { return "median" }

// Name returns "trimmedmean".
func (TrimmedMean) Name() string { return "trimmedmean" }

// Name returns "krum".
func (Krum) Name() string { return "krum" }

// Name returns "multikrum".
func (MultiKrum) Name() string { return "multikrum" }

func (s TrimmedMean) validate() error {
	return checkParam(s.Name(), "beta", s.Beta, 0, 0.5, true, false)
}

func (s Krum) validate() error {
	if s.F < 0 {
		return fmt.Errorf("krum: %w: f = %d, want f >= 0", ErrParams, s.F)
	}
	return nil
}

func (s MultiKrum) validate() error {
	if s.F < 0 {
		return fmt.Errorf("multikrum: %w: f = %d, want f >= 0", ErrParams, s.F)
	}
	if s.M < 0 {
		return fmt.Errorf("multikrum: %w: m = %d, want m >= 1, or 0 for n-f", ErrParams, s.M)
	}
	return nil
}

// minUpdates is the fewest updates a round of s can finish with.
func (s Krum) minUpdates() int { return 2*s.F + 3 }

func (s MultiKrum) minUpdates() int { return max(2*s.F+3, s.M+s.F) }

// Begin starts a round; state must be empty.
func (s Median) Begin(global []float32, state []byte) (Round, error) {
	return beginBuffered(s.Name(), global, state, 1, combineMedian)
}

// Begin starts a round; state must be empty.
func (s TrimmedMean) Begin(global []float32, state []byte) (Round, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	beta := s.Beta
	return beginBuffered(s.Name(), global, state, 1, func(g []float32, ups [][]float32) ([]float32, error) {
		return combineTrimmed(g, ups, beta)
	})
}

// Begin starts a round; state must be empty.
func (s Krum) Begin(global []float32, state []byte) (Round, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	f := s.F
	return beginBuffered(s.Name(), global, state, s.minUpdates(), func(g []float32, ups [][]float32) ([]float32, error) {
		return combineKrum(g, ups, f, 1)
	})
}

// Begin starts a round; state must be empty.
func (s MultiKrum) Begin(global []float32, state []byte) (Round, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	f, m := s.F, s.M
	return beginBuffered(s.Name(), global, state, s.minUpdates(), func(g []float32, ups [][]float32) ([]float32, error) {
		sel := m
		if sel == 0 {
			sel = len(ups) - f
		}
		if sel > len(ups)-f {
			return nil, fmt.Errorf("%w: m = %d needs at least m+f = %d updates, have %d", ErrTooFew, sel, sel+f, len(ups))
		}
		return combineKrum(g, ups, f, sel)
	})
}

// combiner turns the buffered deltas into new weights. It must not modify
// global or the deltas' values (it may reorder ups).
type combiner func(global []float32, ups [][]float32) ([]float32, error)

func beginBuffered(rule string, global []float32, state []byte, minUpdates int, c combiner) (Round, error) {
	if err := checkGlobal(rule, global); err != nil {
		return nil, err
	}
	if len(state) > 0 {
		return nil, fmt.Errorf("%s: begin: %w: the rule keeps no state, got %d bytes", rule, ErrState, len(state))
	}
	return &bufRound{rule: rule, global: slices.Clone(global), minUpdates: minUpdates, combine: c}, nil
}

// bufRound keeps every update until Finish.
type bufRound struct {
	rule       string
	global     []float32
	minUpdates int
	combine    combiner

	mu     sync.Mutex // guards the fields below
	ups    [][]float32
	count  int
	result *Result
}

// AddPacked implements Round: it copies the delta (decoding and checking
// it outside the lock) and keeps the copy until Finish. Sample counts are
// checked but otherwise ignored.
func (r *bufRound) AddPacked(delta []byte, samples uint64) error {
	if len(delta) != 4*len(r.global) {
		return fmt.Errorf("%s: add: %w: got %d bytes, want %d (%d float32)", r.rule, ErrShape, len(delta), 4*len(r.global), len(r.global))
	}
	var x []float32
	if v, ok := f32view(delta); ok {
		x = slices.Clone(v)
	} else {
		x = decodeF32(make([]float32, len(r.global)), delta)
	}
	return r.keep(x, samples)
}

// Add implements Round; see AddPacked.
func (r *bufRound) Add(delta []float32, samples uint64) error {
	if len(delta) != len(r.global) {
		return fmt.Errorf("%s: add: %w: got %d values, want %d", r.rule, ErrShape, len(delta), len(r.global))
	}
	return r.keep(slices.Clone(delta), samples)
}

func (r *bufRound) keep(x []float32, samples uint64) error {
	if samples == 0 {
		return fmt.Errorf("%s: add: %w", r.rule, ErrNoSamples)
	}
	if !finite32(x) {
		return fmt.Errorf("%s: add: %w: delta element %d", r.rule, ErrNotFinite, firstNonFinite(x))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.result != nil {
		return fmt.Errorf("%s: add: %w", r.rule, ErrFinished)
	}
	r.ups = append(r.ups, x)
	r.count++
	return nil
}

// Count implements Round.
func (r *bufRound) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// Finish implements Round. It fails with ErrEmpty without updates, with
// ErrTooFew when Krum's assumptions need more, and with ErrNotFinite when a
// new weight overflows float32; the round then stays open.
func (r *bufRound) Finish() (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.result == nil {
		n := len(r.ups)
		if n == 0 {
			return Result{}, fmt.Errorf("%s: finish: %w", r.rule, ErrEmpty)
		}
		if n < r.minUpdates {
			return Result{}, fmt.Errorf("%s: finish: %w: %d updates, the rule needs at least %d", r.rule, ErrTooFew, n, r.minUpdates)
		}
		w, err := r.combine(r.global, slices.Clone(r.ups))
		if err != nil {
			return Result{}, fmt.Errorf("%s: finish: %w", r.rule, err)
		}
		if i := firstNonFinite(w); i >= 0 {
			return Result{}, fmt.Errorf("%s: finish: %w: new weight %d overflows float32", r.rule, ErrNotFinite, i)
		}
		r.result = &Result{Weights: w}
		r.ups = nil // free the deltas; count keeps Count
	}
	return r.result.clone(), nil
}

// Coordinate-wise rules sort every coordinate's n values. They work on a
// block of coordinates at a time: row k of the block is update k's values
// as int32 sort keys (see f32key), and sorting is a sorting network applied
// across the rows, so every compare-exchange is a branch-free pass over
// two rows. After it, row k holds each coordinate's k-th smallest value.

// netMax is the largest number of updates sorted with a network; beyond
// it each coordinate's column is sorted on its own.
const netMax = 64

// f32key maps float32 bits to an int32 whose order is the float order
// (-0 before +0); it is its own inverse.
func f32key(x float32) int32 {
	b := int32(math.Float32bits(x))
	return b ^ int32(uint32(b>>31)>>1)
}

func keyF32(k int32) float32 {
	return math.Float32frombits(uint32(k ^ int32(uint32(k>>31)>>1)))
}

// sortedBlocks calls f(c0, rows) for consecutive blocks of coordinates
// starting at c0, where rows[k][t], for lo <= k < hi, is the key of the
// k-th smallest of the n updates' values at coordinate c0+t (other rows
// hold the other values in no particular order).
func sortedBlocks(ups [][]float32, dim, lo, hi int, f func(c0 int, rows [][]int32)) {
	n := len(ups)
	block := min(max(8192/n, 64), 1024, dim)
	useNet := n <= netMax
	var net [][2]int
	var col []int32
	if useNet {
		net = pruneNet(batcher(n), n, lo, hi)
	} else {
		col = make([]int32, n)
	}
	buf := make([]int32, n*block)
	rows := make([][]int32, n)
	for c0 := 0; c0 < dim; c0 += block {
		w := min(block, dim-c0)
		for k, u := range ups {
			row := buf[k*block : k*block+w : k*block+w]
			for t, x := range u[c0 : c0+w] {
				row[t] = f32key(x)
			}
			rows[k] = row
		}
		if useNet {
			for _, p := range net {
				compareExchange(rows[p[0]], rows[p[1]])
			}
		} else {
			for t := range w {
				for k := range rows {
					col[k] = rows[k][t]
				}
				slices.Sort(col)
				for k := range rows {
					rows[k][t] = col[k]
				}
			}
		}
		f(c0, rows)
	}
}

// compareExchange leaves the element-wise minimum in a and maximum in b.
func compareExchange(a, b []int32) {
	b = b[:len(a)]
	for i, x := range a {
		y := b[i]
		a[i], b[i] = min(x, y), max(x, y)
	}
}

// batcher returns the compare-exchange pairs of Batcher's odd-even merge
// sort for n inputs: the network for the next power of two, without the
// comparators that touch an index >= n (those inputs would be +Inf and
// never move).
func batcher(n int) [][2]int {
	p2 := 1
	for p2 < n {
		p2 <<= 1
	}
	var net [][2]int
	for p := 1; p < p2; p <<= 1 {
		for k := p; k >= 1; k >>= 1 {
			for j := k % p; j+k < p2; j += 2 * k {
				for i := range min(k, p2-j-k) {
					if a, b := i+j, i+j+k; a/(2*p) == b/(2*p) && b < n {
						net = append(net, [2]int{a, b})
					}
				}
			}
		}
	}
	return net
}

// pruneNet drops the comparators of net whose results cannot reach
// positions lo..hi-1: scanning backwards, a comparator is needed when it
// writes a position that a needed comparator after it, or the output,
// reads.
func pruneNet(net [][2]int, n, lo, hi int) [][2]int {
	need := make([]bool, n)
	for i := lo; i < hi; i++ {
		need[i] = true
	}
	var out [][2]int
	for i := len(net) - 1; i >= 0; i-- {
		if p := net[i]; need[p[0]] || need[p[1]] {
			need[p[0]], need[p[1]] = true, true
			out = append(out, p)
		}
	}
	slices.Reverse(out)
	return out
}

func combineMedian(global []float32, ups [][]float32) ([]float32, error) {
	n := len(ups)
	out := make([]float32, len(global))
	sortedBlocks(ups, len(global), (n-1)/2, n/2+1, func(c0 int, rows [][]int32) {
		hi := rows[n/2]
		g := global[c0 : c0+len(hi)]
		o := out[c0 : c0+len(hi)]
		if n%2 == 1 {
			for t, k := range hi {
				o[t] = float32(float64(g[t]) + float64(keyF32(k)))
			}
			return
		}
		lo := rows[n/2-1][:len(hi)]
		for t, k := range hi {
			m := (float64(keyF32(lo[t])) + float64(keyF32(k))) / 2
			o[t] = float32(float64(g[t]) + m)
		}
	})
	return out, nil
}

func combineTrimmed(global []float32, ups [][]float32, beta float64) ([]float32, error) {
	n := len(ups)
	k := int(beta * float64(n))
	keep := float64(n - 2*k)
	out := make([]float32, len(global))
	var acc []float64
	sortedBlocks(ups, len(global), k, n-k, func(c0 int, rows [][]int32) {
		w := len(rows[0])
		if cap(acc) < w {
			acc = make([]float64, w)
		}
		acc = acc[:w]
		clear(acc)
		// Sum in sorted order, so the result does not depend on the
		// order the updates arrived in.
		for _, row := range rows[k : n-k] {
			for t, x := range row {
				acc[t] += float64(keyF32(x))
			}
		}
		for t, s := range acc {
			out[c0+t] = float32(float64(global[c0+t]) + s/keep)
		}
	})
	return out, nil
}

// krumBlock is how many coordinates the pairwise distances are summed over
// at a time, so that every update's block stays in cache across its pairs.
const krumBlock = 2048

// combineKrum ranks the deltas by Krum score and applies the unweighted
// mean of the m best (m = 1 is Krum).
func combineKrum(global []float32, ups [][]float32, f, m int) ([]float32, error) {
	n := len(ups)
	if n <= 2*f+2 {
		return nil, fmt.Errorf("%w: %d updates, Krum with f = %d needs more than 2f+2 = %d", ErrTooFew, n, f, 2*f+2)
	}
	// Canonical order first, so that everything after is independent of
	// arrival order.
	slices.SortFunc(ups, cmpF32s)
	dim := len(global)
	dist := make([]float64, n*n)
	for c0 := 0; c0 < dim; c0 += krumBlock {
		c1 := min(c0+krumBlock, dim)
		for i := range n {
			a := ups[i][c0:c1]
			for j := i + 1; j < n; j++ {
				dist[i*n+j] += sqDist(a, ups[j][c0:c1])
			}
		}
	}
	near := n - f - 2
	score := make([]float64, n)
	row := make([]float64, 0, n-1)
	for i := range n {
		row = row[:0]
		for j := range n {
			switch {
			case j < i:
				row = append(row, dist[j*n+i])
			case j > i:
				row = append(row, dist[i*n+j])
			}
		}
		slices.Sort(row)
		var s float64
		for _, d := range row[:near] {
			s += d
		}
		score[i] = s
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	// ups is in canonical order, so a stable sort breaks score ties by it.
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(score[a], score[b]) })
	out := make([]float32, dim)
	if m == 1 {
		best := ups[idx[0]]
		for j, g := range global {
			out[j] = float32(float64(g) + float64(best[j]))
		}
		return out, nil
	}
	acc := make([]float64, dim)
	for _, i := range idx[:m] {
		for j, x := range ups[i] {
			acc[j] += float64(x)
		}
	}
	for j, g := range global {
		out[j] = float32(float64(g) + acc[j]/float64(m))
	}
	return out, nil
}

// sqDist is the squared Euclidean distance between a and b, in float64.
func sqDist(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i <= len(a)-4; i += 4 {
		p, q := a[i:i+4:i+4], b[i:i+4:i+4]
		d0 := float64(p[0]) - float64(q[0])
		d1 := float64(p[1]) - float64(q[1])
		d2 := float64(p[2]) - float64(q[2])
		d3 := float64(p[3]) - float64(q[3])
		s0 += float64(d0 * d0)
		s1 += float64(d1 * d1)
		s2 += float64(d2 * d2)
		s3 += float64(d3 * d3)
	}
	for ; i < len(a); i++ {
		d := float64(a[i]) - float64(b[i])
		s0 += float64(d * d)
	}
	return (s0 + s1) + (s2 + s3)
}

// cmpF32s orders vectors lexicographically by value, then by bits (so -0
// and +0 differ), giving a total order that does not depend on arrival.
func cmpF32s(a, b []float32) int {
	for i := range a {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
		if c := cmp.Compare(math.Float32bits(a[i]), math.Float32bits(b[i])); c != 0 {
			return c
		}
	}
	return 0
}
