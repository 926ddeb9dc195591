package sim

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cohort-fl/cohort/agent/physionet"
	"github.com/cohort-fl/cohort/protocol/featurespec"
)

// physionetSpec is the mortality job's feature spec.
//
//go:embed specs/physionet-mortality.yaml
var physionetSpec []byte

// Splits of a real dataset into sites (Config.Split).
const (
	// SplitICU makes one PhysioNet site per ICU type (4 sites; Sites is
	// ignored). It is what an empty Split means for PhysioNet.
	SplitICU = "icu"
	// SplitRandom deals the training population to Sites sites of similar
	// size and outcome rate (see splitSites). It is what an empty Split
	// means for Synthea.
	SplitRandom = "random"
	// SplitSkewed deals it to Sites sites of unequal size and outcome rate
	// (see skewedShares).
	SplitSkewed = "skewed"
)

// icuSites names the four sites PhysioNet's ICU types become.
var icuSites = []struct {
	icuType int
	name    string
}{{1, "coronary-care"}, {2, "cardiac-surgery"}, {3, "medical"}, {4, "surgical"}}

// testFraction of the stays (by a hash of RecordID, seeded) is held out,
// pooled over all ICU types, as the test population.
const testFraction = 0.2

func heldOut(seed uint64, recordID int) bool {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	binary.BigEndian.PutUint64(b[8:], uint64(recordID))
	h := sha256.Sum256(b[:])
	return float64(binary.BigEndian.Uint64(h[:8])>>11)/(1<<53) < testFraction
}

// preparePhysioNet writes the PhysioNet 2012 stays as FHIR R4 NDJSON: one
// directory per site (its stays not held out) and the held-out test
// population. Under the icu split (the default) the sites are the four ICU
// types; under random or skewed they are cfg.Sites sites "site-1".. (see
// splitSites), the stays dealt by a first pass over the archive. Each agent
// then ingests its site's files through the same reader a hospital's
// export goes through.
func preparePhysioNet(ctx context.Context, dir string, cfg Config, out io.Writer) (*prepared, error) {
	src := cfg.PhysioNetDir
	for _, f := range []string{physionet.SetAArchive, physionet.SetAOutcomes} {
		if _, err := os.Stat(filepath.Join(src, f)); err != nil {
			return nil, fmt.Errorf("sim: physionet dataset: %w (set --physionet-dir to the folder with %s and %s)", err, physionet.SetAArchive, physionet.SetAOutcomes)
		}
	}
	spec, err := featurespec.Parse(physionetSpec)
	if err != nil {
		return nil, fmt.Errorf("sim: physionet spec: %w", err)
	}
	p := &prepared{name: DatasetPhysioNet, jobID: "icu-mortality", spec: spec, testDir: filepath.Join(dir, "data", "test")}

	// keep[i] accepts the stays of site i.
	var (
		names []string
		keep  []func(*physionet.Stay) bool
	)
	switch cfg.Split {
	case "", SplitICU:
		fmt.Fprintf(out, "preparing PhysioNet 2012 set A: 4 sites by ICU type, %.0f%% of stays held out for testing\n", 100*testFraction)
		for _, s := range icuSites {
			names = append(names, s.name)
			keep = append(keep, func(x *physionet.Stay) bool { return x.ICUType == s.icuType && !heldOut(cfg.Seed, x.RecordID) })
		}
	case SplitRandom, SplitSkewed:
		site, err := physionetSplit(ctx, src, cfg)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(out, "preparing PhysioNet 2012 set A: %d sites, %s split, %.0f%% of stays held out for testing\n", cfg.Sites, cfg.Split, 100*testFraction)
		for i := range cfg.Sites {
			names = append(names, siteName(i))
			keep = append(keep, func(x *physionet.Stay) bool {
				k, ok := site[x.RecordID]
				return ok && k == i
			})
		}
	default:
		return nil, fmt.Errorf("sim: physionet split %q: use %s, %s or %s", cfg.Split, SplitICU, SplitRandom, SplitSkewed)
	}
	for i, name := range names {
		st, err := physionet.WriteNDJSON(ctx, src, filepath.Join(dir, "data", name), keep[i], nil)
		if err != nil {
			return nil, fmt.Errorf("sim: physionet site %s: %w", name, err)
		}
		p.sites = append(p.sites, siteData{name: name, patients: st.Stays})
	}
	if _, err := physionet.WriteNDJSON(ctx, src, p.testDir, func(x *physionet.Stay) bool { return heldOut(cfg.Seed, x.RecordID) }, nil); err != nil {
		return nil, fmt.Errorf("sim: physionet test set: %w", err)
	}
	return p, nil
}

// physionetSplit reads set A once and deals its stays that are not held
// out to cfg.Sites sites by cfg.Split, stratified by in-hospital death. It
// returns each stay's site index by RecordID.
func physionetSplit(ctx context.Context, src string, cfg Config) (map[int]int, error) {
	var units []splitUnit
	_, err := physionet.ReadStays(ctx, filepath.Join(src, physionet.SetAArchive), filepath.Join(src, physionet.SetAOutcomes), func(s *physionet.Stay) error {
		if !heldOut(cfg.Seed, s.RecordID) {
			units = append(units, splitUnit{id: strconv.Itoa(s.RecordID), positive: s.Outcome.InHospitalDeath})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sim: physionet split: %w", err)
	}
	byID, err := splitSites(cfg.Split, cfg.Sites, cfg.Seed, units, physionetMin)
	if err != nil {
		return nil, fmt.Errorf("sim: physionet %w", err)
	}
	site := make(map[int]int, len(byID))
	for id, k := range byID {
		n, err := strconv.Atoi(id)
		if err != nil {
			return nil, err
		}
		site[n] = k
	}
	return site, nil
}

// siteName is the name of site i (from 0) of a random or skewed split:
// "site-1", "site-2", ...
func siteName(i int) string { return "site-" + strconv.Itoa(i+1) }

// splitUnit is what a split deals: a stay or a patient, by id, and whether
// it has the job's outcome.
type splitUnit struct {
	id       string
	positive bool
}

// splitMin is what every site of a split must get: at least site units,
// pos of them positive and neg negative.
type splitMin struct{ site, pos, neg int }

// physionetMin is what every site of a random or skewed PhysioNet split
// gets: enough stays and deaths to train on and to score a local model.
// Set A's 3,200 or so training stays (about 440 deaths) fit up to 44
// sites.
var physionetMin = splitMin{site: 50, pos: 10, neg: 40}

// splitSites deals units to k sites and returns each unit's site index
// (0..k-1) by id; it fails when there are too few units for k sites of
// least. With size and risk weights (random: all 1; skewed: skewedShares):
//
//   - site i's number of units is least.site plus its share, in proportion
//     to size[i], of the units left over after the minimums (largest
//     remainder, ties to the lower index);
//   - its number of positives is least.pos plus its share of the positives
//     left over, in proportion to size[i]*risk[i], but at most its number
//     of units less least.neg (a site over that is held there and the rest
//     shared again among the others);
//   - the rest of its units are negatives.
//
// So a site holds about size[i]/sum(size) of the units, and its outcome
// rate is about proportional to risk[i]; under random, sizes and positive
// counts differ by at most one. Then each class is ordered by
// unitPoint(seed, "site", id) and cut into consecutive blocks, site-1's
// first: which units share a site is decided by a seeded hash of their
// ids alone, and the same seed and units give the same assignment in any
// order.
func splitSites(split string, k int, seed uint64, units []splitUnit, least splitMin) (map[string]int, error) {
	if k < 1 {
		return nil, fmt.Errorf("split: need at least 1 site, not %d", k)
	}
	var pos, neg []string
	for _, u := range units {
		if u.positive {
			pos = append(pos, u.id)
		} else {
			neg = append(neg, u.id)
		}
	}
	size, risk := make([]float64, k), make([]float64, k)
	switch split {
	case SplitRandom:
		for i := range k {
			size[i], risk[i] = 1, 1
		}
	case SplitSkewed:
		size, risk = skewedShares(seed, k)
	default:
		return nil, fmt.Errorf("split %q: use %s or %s", split, SplitRandom, SplitSkewed)
	}
	n, err := allocate(len(units), size, max(least.site, least.pos+least.neg), nil)
	if err != nil {
		return nil, fmt.Errorf("%s split: %d units: %w", split, len(units), err)
	}
	posW, caps := make([]float64, k), make([]int, k)
	for i := range k {
		posW[i], caps[i] = size[i]*risk[i], n[i]-least.neg
	}
	if len(neg) < k*least.neg {
		return nil, fmt.Errorf("%s split: %d negatives (without the outcome): too few for %d sites of at least %d each; use fewer sites", split, len(neg), k, least.neg)
	}
	np, err := allocate(len(pos), posW, least.pos, caps)
	if err != nil {
		return nil, fmt.Errorf("%s split: %d positives (with the outcome): %w", split, len(pos), err)
	}
	nn := make([]int, k)
	for i := range k {
		nn[i] = n[i] - np[i]
	}
	site := make(map[string]int, len(units))
	for _, class := range []struct {
		ids    []string
		counts []int
	}{{pos, np}, {neg, nn}} {
		ids := slices.Clone(class.ids)
		point := make(map[string]float64, len(ids))
		for _, id := range ids {
			point[id] = unitPoint(seed, "site", id)
		}
		slices.SortFunc(ids, func(a, b string) int { return cmp.Or(cmp.Compare(point[a], point[b]), cmp.Compare(a, b)) })
		next := 0
		for i, c := range class.counts {
			for _, id := range ids[next : next+c] {
				if _, dup := site[id]; dup {
					return nil, fmt.Errorf("split: unit %q appears twice", id)
				}
				site[id] = i
			}
			next += c
		}
	}
	return site, nil
}

// skewedShares is the skewed split's rule for k sites. Site i's size
// weight is
//
//	size[i] = 1/(2k) + d[i]/2,  d = E/sum(E),  E[i] = -ln(1 - unitPoint(seed, "skewed-size", i))
//
// that is, half an equal share plus half a flat Dirichlet(1, ..., 1) draw,
// so that no site gets less than half an equal share. Its outcome weight
// is
//
//	risk[i] = 2^(1 - 2j/(k-1))  (risk 1 when k = 1)
//
// where j is site i's rank (from 0) when the sites are ordered by
// unitPoint(seed, "skewed-risk", i): the risks run from 2 down to 1/2 over
// the sites in a seeded order independent of their sizes. splitSites then
// gives site i about size[i] of the units and an outcome rate about
// proportional to risk[i]: the riskiest site's rate is about four times
// the safest's, less where a site's minimums bind. (PhysioNet set A, seed
// 1, 5 sites: 410 to 1,070 stays, with 8% to 24% in-hospital deaths around
// the overall 14%.)
func skewedShares(seed uint64, k int) (size, risk []float64) {
	size, risk = make([]float64, k), make([]float64, k)
	var sum float64
	for i := range k {
		size[i] = -math.Log1p(-unitPoint(seed, "skewed-size", strconv.Itoa(i)))
		sum += size[i]
	}
	for i := range k {
		size[i] = 1/(2*float64(k)) + size[i]/sum/2
	}
	order := make([]int, k)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Compare(unitPoint(seed, "skewed-risk", strconv.Itoa(a)), unitPoint(seed, "skewed-risk", strconv.Itoa(b)))
	})
	for j, i := range order {
		risk[i] = 1
		if k > 1 {
			risk[i] = math.Exp2(1 - 2*float64(j)/float64(k-1))
		}
	}
	return size, risk
}

// allocate splits n into len(w) counts: minEach each, and the remaining
// n - minEach*len(w) in proportion to w by largest remainder (ties to the
// lower index). With caps (nil: none), no count exceeds caps[i]: a count
// over its cap is held there and the rest allocated again among the
// others.
func allocate(n int, w []float64, minEach int, caps []int) ([]int, error) {
	k := len(w)
	if n < minEach*k {
		return nil, fmt.Errorf("too few for %d sites of at least %d each; use fewer sites", k, minEach)
	}
	total := 0
	for _, c := range caps {
		if c < minEach {
			return nil, fmt.Errorf("a site's cap of %d is below the minimum of %d; use fewer sites", c, minEach)
		}
		total += c
	}
	if caps != nil && n > total {
		return nil, fmt.Errorf("%d do not fit in %d sites (at most %d); use fewer sites", n, k, total)
	}
	counts := make([]int, k)
	held := make([]bool, k)
	for {
		var free []int
		left := n
		for i := range k {
			if held[i] {
				left -= counts[i]
			} else {
				free = append(free, i)
			}
		}
		c := largestRemainder(left-minEach*len(free), free, w)
		over := false
		for j, i := range free {
			counts[i] = c[j] + minEach
			if caps != nil && counts[i] > caps[i] {
				counts[i], held[i], over = caps[i], true, true
			}
		}
		if !over {
			return counts, nil
		}
	}
}

// largestRemainder shares n among the sites idx in proportion to their
// weights w[i], by largest remainder (ties to the earlier site).
func largestRemainder(n int, idx []int, w []float64) []int {
	var sum float64
	for _, i := range idx {
		sum += w[i]
	}
	counts := make([]int, len(idx))
	frac := make([]float64, len(idx))
	given := 0
	for j, i := range idx {
		q := float64(n) * w[i] / sum
		counts[j] = int(math.Floor(q))
		frac[j] = q - float64(counts[j])
		given += counts[j]
	}
	order := make([]int, len(idx))
	for j := range order {
		order[j] = j
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(frac[b], frac[a]) })
	for j := 0; given < n; j++ {
		counts[order[j%len(order)]]++
		given++
	}
	return counts
}

// unitPoint maps (seed, domain, id) to a uniform number in [0, 1) with
// SHA-256, so splits do not depend on any random number generator's
// algorithm.
func unitPoint(seed uint64, domain, id string) float64 {
	h := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(len(domain)))
	h.Write(b[:])
	h.Write([]byte(domain))
	h.Write([]byte(id))
	return float64(binary.BigEndian.Uint64(h.Sum(nil)[:8])>>11) / (1 << 53)
}
