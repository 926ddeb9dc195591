package coordinator

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/aggregator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/dp"
)

// runEngine drives rounds while this node leads: it opens the next round of
// each running job, closes a round when enough updates are in or its
// deadline passes, aggregates, and commits the new global model. All of its
// decisions go through Raft, so a new leader picks up where the old one
// stopped.
func (n *Node) runEngine(ctx context.Context) error {
	tick := time.NewTicker(time.Duration(n.cfg.TickInterval))
	defer tick.Stop()
	// setUpTerm is the term whose leader setup (onElected) passed: a node
	// that loses and regains leadership between two iterations runs it
	// again for the new term.
	var setUpTerm uint64
	wasLeader := false
	for {
		changed := n.fsm.changed()
		leader := n.IsLeader()
		if leader != wasLeader {
			// Long polls held by a node that lost leadership answer with
			// a redirect now, not at the end of their wait.
			n.signalLeadership()
			wasLeader = leader
		}
		if leader {
			// A restored backup replaced the state (and the nodes
			// published in it): set up again.
			if n.setUpAgain.Swap(false) {
				setUpTerm = 0
			}
			if term := n.raftNode().CurrentTerm(); term != setUpTerm {
				if err := n.onElected(); err != nil {
					n.log.Warn("leader setup", "err", err)
					leader = false // try again at the next tick
				} else {
					setUpTerm = term
					n.readyTerm.Store(term)
				}
			}
		}
		if leader {
			n.step()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-changed:
		}
	}
}

// onElected runs once per term on the new leader: wait until every entry of
// earlier terms is applied, publish this node's agent address, and enroll
// the configured sites and jobs.
func (n *Node) onElected() error {
	r := n.raftNode()
	if err := r.Barrier(time.Duration(n.cfg.ApplyTimeout)).Error(); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	info := NodeInfo{ID: n.cfg.ID, AgentAddr: n.AgentAddr(), StatusAddr: n.StatusAddr(), AdminAddr: n.AdminAddr(),
		AuditKey: base64.StdEncoding.EncodeToString(n.audit.log.PublicKey()), Version: n.cfg.Build}
	var (
		published, bootstrapped bool
		missing                 []string
	)
	n.fsm.view(func(st *state) {
		published = st.Nodes[info.ID] == info
		bootstrapped = st.Bootstrapped
		for _, s := range n.cfg.Sites {
			if _, ok := st.Sites[s]; !ok {
				missing = append(missing, s)
			}
		}
	})
	// The barrier above is an entry of this term: once it applied, every
	// entry of earlier terms has too. Nothing else needs writing again.
	if !published {
		if err := n.propose(cmdNodeInfo, info); err != nil {
			return err
		}
	}
	if !bootstrapped {
		if err := n.bootstrapToken(); err != nil {
			return err
		}
	}
	for _, s := range missing {
		if err := n.EnsureSite(s); err != nil {
			return err
		}
	}
	for _, j := range n.cfg.Jobs {
		if err := n.CreateJob(j); err != nil {
			return err
		}
	}
	n.log.Info("leading the cluster")
	return nil
}

// roundView is what the engine needs of one job, copied under the FSM lock.
type roundView struct {
	job        string
	spec       JobSpec
	committed  uint64
	global     *Model
	open       *Round
	needsStats bool
	// needsEval: an evaluation job that has not evaluated yet.
	needsEval bool
	paused    bool
	sites     int
	// allSites are the enrolled sites; attempts the job's round attempts
	// so far (seeding the sampling).
	allSites []string
	attempts int
	// optState is the rule's state after the last committed round.
	optState *BlobRef
	// privacy is a private job's spent privacy.
	privacy *PrivacyState
}

func (n *Node) step() {
	var views []roundView
	n.fsm.view(func(st *state) {
		for id, j := range st.Jobs {
			if j.State != JobRunning && (j.State != JobPaused || j.Current == nil) {
				continue // a paused job's open round runs to its end
			}
			v := roundView{job: id, spec: j.Spec, committed: j.committedN, global: j.Global, paused: j.State == JobPaused,
				needsStats: j.NeedsStats(), needsEval: j.Spec.IsEvaluation() && j.Evaluated == nil, sites: len(st.Sites), allSites: st.siteIDs(), attempts: len(j.Rounds),
				optState: j.OptState, privacy: j.Privacy}
			if j.Current != nil {
				c := *j.Current
				c.Receipts = make(map[string]*Receipt, len(j.Current.Receipts))
				for k, rc := range j.Current.Receipts {
					cp := *rc
					c.Receipts[k] = &cp
				}
				c.Declines = maps.Clone(j.Current.Declines)
				v.open = &c
			}
			views = append(views, v)
		}
	})
	slices.SortFunc(views, func(a, b roundView) int { return cmpString(a.job, b.job) })
	n.stepRetrain()
	for _, v := range views {
		if err := n.stepJob(v); err != nil && !errors.Is(err, ErrNotLeader) {
			n.warnEngine(v.job, err)
		}
	}
}

// engineWarning is the last warning logged for a job.
type engineWarning struct {
	msg string
	at  time.Time
}

// warnEngine logs the round engine's error for a job, unless the same
// error was logged for it within the last minute.
func (n *Node) warnEngine(job string, err error) {
	now := n.now()
	if v, ok := n.engineWarned.Load(job); ok {
		if w := v.(engineWarning); w.msg == err.Error() && now.Sub(w.at) < time.Minute {
			return
		}
	}
	n.engineWarned.Store(job, engineWarning{msg: err.Error(), at: now})
	n.log.Warn("round engine", "job", job, "err", err)
}

// sample chooses the sites a training round asks, per the job's Sampling
// (nil: every site). The choice is the leader's, recorded in the log.
func (n *Node) sample(v roundView, now time.Time) []string {
	if v.spec.Sampling == (Sampling{}) {
		return nil
	}
	recent := now.Add(-2 * time.Duration(n.cfg.MaxPollWait))
	var avail []string
	for _, s := range v.allSites {
		if t, ok := n.lastSeen.Load(s); ok && t.(time.Time).After(recent) {
			avail = append(avail, s)
		}
	}
	if len(avail) < v.spec.MinSites {
		avail = slices.Clone(v.allSites) // just elected, or sites reconnecting
	}
	k := v.spec.Sampling.size(len(avail))
	rng := rand.New(rand.NewPCG(v.spec.Train.Seed, uint64(v.attempts))) // #nosec G404 -- seeded site sampling, reproducible from the job's seed and attempt; not a secret
	rng.Shuffle(len(avail), func(i, j int) { avail[i], avail[j] = avail[j], avail[i] })
	picked := avail[:k]
	slices.Sort(picked)
	return picked
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (n *Node) stepJob(v roundView) error {
	now := n.now()
	if v.open == nil && v.needsEval {
		if err := n.propose(cmdOpenRound, openRoundBody{Job: v.job, Round: 0, Kind: KindEval,
			Deadline: now.Add(time.Duration(v.spec.RoundTimeout))}); err != nil {
			return fmt.Errorf("open evaluation round: %w", err)
		}
		n.log.Info("evaluation round opened", "job", v.job, "model", v.spec.Evaluation.Model[:12])
		return nil
	}
	if v.open != nil && v.open.Kind == KindEval {
		return n.stepEval(v, now)
	}
	if v.open == nil && v.needsStats {
		if err := n.propose(cmdOpenRound, openRoundBody{Job: v.job, Round: 0, Kind: KindStats,
			Deadline: now.Add(time.Duration(v.spec.RoundTimeout))}); err != nil {
			return fmt.Errorf("open statistics round: %w", err)
		}
		n.log.Info("statistics round opened", "job", v.job)
		return nil
	}
	if v.open != nil && v.open.Kind == KindStats {
		return n.stepStats(v, now)
	}
	if v.open == nil && v.paused {
		return nil
	}
	if v.open == nil {
		next := v.committed + 1
		selected := n.sample(v, now)
		if p := v.spec.Privacy; p != nil {
			ok, eps, err := budgetLeft(p, v.privacy, len(selected), v.sites)
			if err != nil {
				return fmt.Errorf("privacy budget: %w", err)
			}
			if !ok {
				spent := 0.0
				if v.privacy != nil {
					spent = v.privacy.Epsilon
				}
				reason := fmt.Sprintf("privacy budget reached: %d rounds spent ε=%.3g of %g at δ=%g; another would bring it to %.3g",
					v.committed, spent, p.Epsilon, p.delta(), eps)
				n.log.Info("job stopped at its privacy budget", "job", v.job, "rounds", v.committed, "epsilon", spent)
				return n.propose(cmdJobState, jobStateBody{Job: v.job, Action: "budget", Reason: reason})
			}
		}
		var sa *secAggOpen
		if v.spec.SecureAggregation != nil {
			var err error
			if sa, err = newSecAggOpen(&v.spec, v.privacy, selected, v.allSites); err != nil {
				return fmt.Errorf("round %d not opened: %w", next, err)
			}
		}
		if err := n.propose(cmdOpenRound, openRoundBody{Job: v.job, Round: next, Base: v.global.Digest,
			Deadline: now.Add(time.Duration(v.spec.RoundTimeout)), Selected: selected, SecAgg: sa}); err != nil {
			return fmt.Errorf("open round %d: %w", next, err)
		}
		n.log.Info("round opened", "job", v.job, "round", next, "sites_asked", len(selected))
		return nil
	}
	r := v.open
	if r.SecAgg != nil {
		return n.stepSecAgg(v, now)
	}
	// Updates whose body this node holds can be aggregated; a receipt
	// without a body (committed under an earlier leader) waits for the
	// agent to send it again.
	var ready []*Receipt
	for _, rc := range r.Receipts {
		if n.blob.has(rc.Digest) {
			ready = append(ready, rc)
		}
	}
	complete := len(ready) == len(r.Receipts)
	asked := v.sites
	if len(r.Selected) > 0 {
		asked = len(r.Selected)
	}
	answered := len(r.Receipts)+len(r.Declines) >= asked
	switch {
	case len(r.Receipts) >= v.spec.MinSites && complete:
		return n.closeRound(v, r, ready)
	case now.Before(r.Deadline) && !(answered && len(r.Receipts) < v.spec.MinSites):
		return nil
	case len(ready) >= v.spec.MinSites:
		n.log.Warn("round deadline: closing without updates whose bodies never arrived",
			"job", v.job, "round", r.Number, "missing", len(r.Receipts)-len(ready))
		return n.closeRound(v, r, ready)
	default:
		reason := fmt.Sprintf("deadline passed with %d of %d required updates", len(ready), v.spec.MinSites)
		n.stats.RoundsFailed.Add(1)
		n.log.Warn("round failed", "job", v.job, "round", r.Number, "attempt", r.Attempt, "reason", reason)
		return n.propose(cmdFailRound, failRoundBody{Job: v.job, Round: r.Number, Attempt: r.Attempt, Reason: reason})
	}
}

// A worker folds up to aggBatchMax bodies, holding at most aggBatchBytes
// of them (or one larger body), in one call when the rule's round takes
// batches: the streaming rules then read and write their running sum once
// per batch rather than once per update (aggregator.BatchAdder).
const (
	aggBatchMax   = 8
	aggBatchBytes = 256 << 20
)

// foldBodies reads the ready updates' bodies and folds them into agg, with
// one worker per core taking the next batch of consecutive updates (the
// rule's round keeps a shard per concurrent add). It returns, per update,
// why it could not be read or was rejected; the others are folded in.
//
// unweighted folds every update with weight 1 (a private job's mean).
func (n *Node) foldBodies(agg aggregator.Round, ready []*Receipt, unweighted bool) []error {
	ba, _ := agg.(aggregator.BatchAdder)
	ends := []int{0} // batch b is ready[ends[b]:ends[b+1]]
	for lo := 0; lo < len(ready); {
		hi, size := lo+1, ready[lo].Size
		for ba != nil && hi < min(len(ready), lo+aggBatchMax) && size+ready[hi].Size <= aggBatchBytes {
			size += ready[hi].Size
			hi++
		}
		ends, lo = append(ends, hi), hi
	}
	errs := make([]error, len(ready))
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range min(len(ends)-1, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for b := int(next.Add(1)) - 1; b < len(ends)-1; b = int(next.Add(1)) - 1 {
				lo, hi := ends[b], ends[b+1]
				n.foldBatch(agg, ba, ready[lo:hi], errs[lo:hi], unweighted)
			}
		})
	}
	wg.Wait()
	return errs
}

// foldBatch reads the bodies of rcs and folds them into agg, setting
// errs[i] for each that could not be read or was rejected: in one
// AddPackedBatch call when ba is not nil (again without the rejected ones
// when the batch is refused), one AddPacked per body otherwise.
func (n *Node) foldBatch(agg aggregator.Round, ba aggregator.BatchAdder, rcs []*Receipt, errs []error, unweighted bool) {
	fail := func(i int, err error) { errs[i] = fmt.Errorf("update of site %s: %w", rcs[i].Site, err) }
	var (
		bodies  [][]byte
		samples []uint64
		idx     []int // bodies[j] is rcs[idx[j]]'s
	)
	for i, rc := range rcs {
		weight := rc.Samples
		if unweighted {
			weight = 1
		}
		body, err := n.blob.get(rc.Digest)
		switch {
		case err != nil:
			fail(i, err)
		case ba == nil:
			if err := agg.AddPacked(body, weight); err != nil {
				fail(i, err)
			}
		default:
			bodies, samples, idx = append(bodies, body), append(samples, weight), append(idx, i)
		}
	}
	for len(bodies) > 0 {
		err := ba.AddPackedBatch(bodies, samples)
		if err == nil {
			return
		}
		var be *aggregator.BatchError
		if !errors.As(err, &be) || len(be.Unwrap()) == 0 {
			for _, i := range idx {
				fail(i, err)
			}
			return
		}
		k := 0
		for j, err := range be.Errs {
			if err != nil {
				fail(idx[j], err)
				continue
			}
			bodies[k], samples[k], idx[k] = bodies[j], samples[j], idx[j]
			k++
		}
		bodies, samples, idx = bodies[:k], samples[:k], idx[:k]
	}
}

// closeRound aggregates the ready updates and commits the new global model.
func (n *Node) closeRound(v roundView, r *Round, ready []*Receipt) error {
	slices.SortFunc(ready, func(a, b *Receipt) int { return cmpString(a.Site, b.Site) })
	p := v.spec.Privacy
	var (
		clip, z float64
		clipper *dp.AdaptiveClipper
	)
	if p != nil {
		var err error
		if clip, z, clipper, err = p.roundClip(v.privacy, v.spec.MinSites); err != nil {
			return fmt.Errorf("round %d: privacy: %w", r.Number, err)
		}
	}
	agg, name, err := n.beginRule(v, clip)
	if err != nil {
		return err
	}
	var (
		sites   []string
		samples uint64
		auroc   float64
	)
	if err := errors.Join(n.foldBodies(agg, ready, p != nil)...); err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	for _, rc := range ready {
		sites = append(sites, rc.Site)
		samples += rc.Samples
		auroc += float64(rc.Samples) * rc.Metrics.ValAUROC
	}
	res, err := agg.Finish()
	if errors.Is(err, aggregator.ErrNotFinite) {
		// The updates are finite (checked on arrival) but the new model
		// is not: updates too large for it, which no later tick changes.
		// Fail the attempt rather than retry it for ever.
		reason := fmt.Sprintf("the aggregate is not finite (%v); updates this large need strategy.norm_bound", err)
		n.stats.RoundsFailed.Add(1)
		n.log.Warn("round failed", "job", v.job, "round", r.Number, "attempt", r.Attempt, "reason", reason)
		return n.propose(cmdFailRound, failRoundBody{Job: v.job, Round: r.Number, Attempt: r.Attempt, Reason: reason})
	}
	if err != nil {
		return fmt.Errorf("aggregate (%s): %w", name, err)
	}
	var privacy *PrivacyState
	if p != nil {
		if privacy, err = n.privateRound(v, r, res.Weights, ready, clip, z, clipper); err != nil {
			return fmt.Errorf("round %d: privacy: %w", r.Number, err)
		}
	}
	if samples > 0 {
		auroc /= float64(samples)
	}
	return n.commitModel(v, r, res, sites, samples, auroc, privacy)
}

// privateRound adds the round's noise to the new weights (the mean of the
// updates clipped to clip) and ends the round for the accountant and,
// under adaptive clipping, for the clipper: it counts the updates that
// were within the clip and releases that count with noise.
func (n *Node) privateRound(v roundView, r *Round, weights []float32, ready []*Receipt, clip, z float64, clipper *dp.AdaptiveClipper) (*PrivacyState, error) {
	g := dp.NewGaussian(nil) // a cryptographically secure source
	if err := addPrivacyNoise(weights, z, clip, len(ready), g); err != nil {
		return nil, err
	}
	var noisy float64
	if clipper != nil {
		var bits float64
		for _, rc := range ready {
			body, err := n.blob.get(rc.Digest)
			if err != nil {
				return nil, fmt.Errorf("update of site %s: %w", rc.Site, err)
			}
			u, err := protocol.DecodeF32(body)
			if err != nil {
				return nil, fmt.Errorf("update of site %s: %w", rc.Site, err)
			}
			bits += dp.CountBit(dp.L2Norm(u) > clip)
		}
		var err error
		if noisy, err = clipper.NoisyCount(bits, g); err != nil {
			return nil, err
		}
	}
	return endPrivateRound(v.spec.Privacy, v.privacy, clipper, noisy, len(r.Selected), v.sites)
}

// beginRule starts the job's rule on the current global model and the
// rule's state; a positive clip wraps it in clipping to that L2 norm.
func (n *Node) beginRule(v roundView, clip float64) (agg aggregator.Round, name string, err error) {
	gw, err := n.ModelWeights(n.bgCtx, v.global.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("global model: %w", err)
	}
	global, err := protocol.DecodeF32(gw)
	if err != nil {
		return nil, "", fmt.Errorf("decode global model: %w", err)
	}
	strategy, err := v.spec.Strategy.Strategy()
	if err != nil {
		return nil, "", fmt.Errorf("strategy: %w", err)
	}
	var state []byte
	if v.optState != nil {
		if state, err = n.ModelWeights(n.bgCtx, v.optState.Digest); err != nil {
			return nil, "", fmt.Errorf("%s state: %w", strategy.Name(), err)
		}
	}
	if clip > 0 {
		strategy = privateRule(strategy, clip)
	}
	agg, err = strategy.Begin(global, state)
	return agg, strategy.Name(), err
}

// commitModel stores the rule's result (a majority holds the new model and
// the rule's state before the entry naming them exists), commits the round
// and drops the round's update bodies.
func (n *Node) commitModel(v roundView, r *Round, res aggregator.Result, sites []string, samples uint64, auroc float64, privacy *PrivacyState) error {
	m, err := n.storeModel(protocol.EncodeF32(res.Weights))
	if err != nil {
		return fmt.Errorf("round %d: %w", r.Number, err)
	}
	var optState *BlobRef
	if res.State != nil {
		sm, err := n.storeModel(res.State)
		if err != nil {
			return fmt.Errorf("round %d: rule state: %w", r.Number, err)
		}
		optState = &BlobRef{Digest: sm.Digest, Size: sm.Size}
	}
	if err := n.propose(cmdCommitRound, commitRoundBody{
		Job: v.job, Round: r.Number, Attempt: r.Attempt, Digest: m.Digest, Size: m.Size, OptState: optState,
		Contributors: sites, Samples: samples, MeanValAUROC: auroc, Privacy: privacy,
	}); err != nil {
		return fmt.Errorf("commit round %d: %w", r.Number, err)
	}
	n.stats.RoundsCommitted.Add(1)
	n.log.Info("round committed", "job", v.job, "round", r.Number, "sites", len(sites), "samples", samples)
	// The update bodies are no longer needed, unless one is byte for byte
	// a model (a single site's first update from a zero model is).
	models, _ := n.referencedBlobs()
	for _, rc := range r.Receipts {
		if !models[rc.Digest] {
			n.blob.remove(rc.Digest)
		}
	}
	return nil
}

// stepStats closes a statistics round once every site answered (or at the
// deadline) with at least MinSites answers, committing the federated mean
// and standard deviation of each feature; with fewer it fails the attempt.
func (n *Node) stepStats(v roundView, now time.Time) error {
	r := v.open
	answered := len(r.Receipts)+len(r.Declines) >= v.sites
	if !answered && now.Before(r.Deadline) {
		return nil
	}
	if len(r.Receipts) < v.spec.MinSites {
		reason := fmt.Sprintf("%d of %d required sites sent statistics (%d declined)", len(r.Receipts), v.spec.MinSites, len(r.Declines))
		n.stats.RoundsFailed.Add(1)
		n.log.Warn("statistics round failed", "job", v.job, "attempt", r.Attempt, "reason", reason)
		return n.propose(cmdFailRound, failRoundBody{Job: v.job, Round: 0, Attempt: r.Attempt, Reason: reason})
	}
	if v.spec.IsAnalytics() {
		res := aggregateAnalytics(v.spec, r.Receipts, newLaplace(nil))
		if err := n.propose(cmdCommitStats, commitStatsBody{Job: v.job, Attempt: r.Attempt, Results: res}); err != nil {
			return fmt.Errorf("commit analytics: %w", err)
		}
		n.log.Info("analytics committed", "job", v.job, "sites", len(res.Sites))
		return nil
	}
	norm := aggregateStats(len(v.spec.Features.GetFeatures()), r.Receipts)
	if err := n.propose(cmdCommitStats, commitStatsBody{Job: v.job, Attempt: r.Attempt, Norm: norm}); err != nil {
		return fmt.Errorf("commit statistics: %w", err)
	}
	n.log.Info("statistics committed", "job", v.job, "sites", len(norm.Sites), "cohort", norm.Cohort)
	return nil
}

// aggregateStats pools the sites' counts, sums and sums of squares into
// each feature's mean and (population) standard deviation. A feature no
// site observed, or one with no spread, gets mean 0 / std 1 so that it
// passes through unscaled rather than dividing by zero.
func aggregateStats(nFeat int, receipts map[string]*Receipt) Normalization {
	norm := Normalization{Mean: make([]float64, nFeat), Std: make([]float64, nFeat), Count: make([]uint64, nFeat)}
	sum := make([]float64, nFeat)
	sumSq := make([]float64, nFeat)
	for _, site := range slices.Sorted(maps.Keys(receipts)) {
		rc := receipts[site]
		norm.Sites = append(norm.Sites, site)
		norm.Cohort += rc.CohortSize
		for i, fs := range rc.Stats {
			norm.Count[i] += fs.Count
			sum[i] += fs.Sum
			sumSq[i] += fs.SumSq
		}
	}
	for i := range nFeat {
		if norm.Count[i] == 0 {
			norm.Mean[i], norm.Std[i] = 0, 1
			continue
		}
		n := float64(norm.Count[i])
		mean := sum[i] / n
		variance := sumSq[i]/n - mean*mean
		std := math.Sqrt(max(variance, 0))
		if !(std > 1e-9) || math.IsInf(std, 0) {
			std = 1
		}
		norm.Mean[i], norm.Std[i] = mean, std
	}
	return norm
}
