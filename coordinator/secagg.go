package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/dp"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/secagg"
)

// Secure aggregation of a job's rounds (protocol/secagg, after Bonawitz et
// al. 2017). Each training round of such a job is one protocol run between
// the sites the round asks (the session) and the cluster: sites train, then
// advertise keys, share their secrets, send masked updates and finally the
// shares that remove the masks. The leader learns only the sum of the
// updates of the sites that got through every step, and needs at least t of
// them.
//
// The protocol's server is a deterministic state machine, so it lives in the
// replicated state: every message a site sends is a Raft entry applied to it
// (cmdSecAggInput), and so is every phase change (cmdSecAggAdvance, which the
// leader proposes when every participant has answered or the phase's
// deadline passed). A new leader therefore continues the same run where the
// old one stopped; no site is asked for anything twice, and the sum is that
// of the same masked inputs. The masked inputs enter the entries themselves
// (the server keeps only their running sum), which bounds the model size
// (maxSecAggParams).
//
// Under secure aggregation the leader never holds one site's update, so it
// can neither weigh updates by sample count (the sum is unweighted: each
// site counts once) nor bound or screen them one by one: only the
// mean-based rules are allowed, each site clips its own update (coordinates
// to clip_range, and to privacy.clip_norm in L2 when the job is private),
// and a private job's noise is split across the sites (each adds
// N(0, (z·C)²/t)), so that the unmasked sum of at least t updates carries at
// least the central mechanism's noise.

// SecureAggregationSpec is a job's secure aggregation section.
type SecureAggregationSpec struct {
	// Threshold t: the fewest sites that must remain at every step, and
	// the number of shares that rebuild a secret. 0 picks the smallest
	// secure value for the round's sites (a majority), and never less
	// than min_sites. It must be at least 2, at least min_sites, and more
	// than half the sites of any round.
	Threshold int `json:"threshold,omitempty"`
	// ClipRange c: each coordinate of a site's update is clipped to
	// [-c, c] before it is encoded (default 1, or for a private job enough
	// to hold the clipped update and its noise: clip_norm·(1 + 8z/√2)).
	ClipRange float64 `json:"clip_range,omitempty"`
	// Scale is the fixed-point resolution: a coordinate x is sent as
	// round(x·Scale) mod 2^32 (default 2^16). The sum of n updates errs by
	// at most n/(2·Scale) per coordinate; n·c·Scale must stay below 2^31.
	Scale float64 `json:"scale,omitempty"`
	// Degree 0 has every site mask against every other (Bonawitz et al.);
	// an even Degree k ≥ 2 uses the SecAgg+ k-regular graph, O(k) work per
	// site instead of O(n).
	Degree int `json:"degree,omitempty"`
	// PhaseTimeout bounds each protocol step after the sites advertised
	// their keys (default 30s); the first step shares the round's
	// round_timeout with training. Sites that have not answered by then
	// count as dropped.
	PhaseTimeout Duration `json:"phase_timeout,omitempty"`
}

// Limits of secure aggregation in this implementation.
const (
	// maxSecAggParams bounds the model: a masked input travels in one
	// control frame and one Raft entry (4 bytes per parameter).
	maxSecAggParams = 200_000
	// defaultPhaseTimeout is a protocol step's deadline after the first.
	defaultPhaseTimeout = 30 * time.Second
	// secAggNoiseSigmas is how many of a site's noise standard deviations
	// the default clip range leaves above a private job's clip norm.
	secAggNoiseSigmas = 8
)

// meanRules are the rules that need only the mean of the updates, which
// is what secure aggregation gives.
var meanRules = []string{"fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"}

func (s *SecureAggregationSpec) phaseTimeout() time.Duration {
	if s.PhaseTimeout > 0 {
		return time.Duration(s.PhaseTimeout)
	}
	return defaultPhaseTimeout
}

// config is the protocol configuration for a round of n sites of job spec
// js whose privacy state is st (the threshold resolved). Under adaptive
// clipping each site also sends its noised clip bit, one more
// coordinate.
func (s *SecureAggregationSpec) config(js *JobSpec, n int, st *PrivacyState) (secagg.Config, error) {
	cfg := secagg.DefaultConfig()
	cfg.VectorLength = js.Model.NumParams()
	cfg.Degree = s.Degree
	if s.Scale > 0 {
		cfg.Scale = s.Scale
	}
	cfg.Threshold = s.Threshold
	if cfg.Threshold == 0 {
		cfg.Threshold = max(secagg.MajorityThreshold(n, s.Degree), js.MinSites)
	}
	if s.ClipRange > 0 {
		cfg.ClipRange = s.ClipRange
	}
	if p := js.Privacy; p != nil {
		clip, z, c, err := p.roundClip(st, js.MinSites)
		if err != nil {
			return cfg, err
		}
		if s.ClipRange == 0 {
			// Room for the clipped update and 8 of its noise's standard
			// deviations (a site's share, t ≥ 2).
			cfg.ClipRange = clip * (1 + secAggNoiseSigmas*z/math.Sqrt2)
		}
		if c != nil {
			cfg.VectorLength++
			bit := 0.5 + secAggNoiseSigmas*c.Config().CountStddev/math.Sqrt2
			cfg.ClipRange = max(cfg.ClipRange, bit)
		}
	}
	return cfg, nil
}

// validate checks the section against the rest of the job's spec.
func (s *SecureAggregationSpec) validate(js *JobSpec) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: secure_aggregation: %s", ErrInvalidJob, fmt.Sprintf(format, args...))
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !slices.Contains(meanRules, js.Strategy.Name):
		return bad("the sum of masked updates serves the mean-based rules only (%v), not %s", meanRules, js.Strategy.Name)
	case js.Strategy.NormBound != 0:
		return bad("strategy.norm_bound needs each site's update, which secure aggregation hides; sites clip their own updates (clip_range, or privacy.clip_norm)")
	case js.Model.NumParams() > maxSecAggParams:
		return bad("the model has %d parameters; secure aggregation takes at most %d", js.Model.NumParams(), maxSecAggParams)
	case s.Threshold < 0 || s.Threshold == 1:
		return bad("threshold must be at least 2 (0 picks a majority of each round's sites)")
	case s.Threshold > 0 && s.Threshold < js.MinSites:
		return bad("threshold %d is below min_sites %d: a round could commit with fewer sites than the job asks", s.Threshold, js.MinSites)
	case s.Degree < 0 || s.Degree%2 != 0:
		return bad("degree must be 0 (every site with every other) or an even number")
	case s.ClipRange < 0 || !finite(s.ClipRange):
		return bad("clip_range must be a positive number")
	case s.Scale < 0 || !finite(s.Scale):
		return bad("scale must be a positive number")
	case s.PhaseTimeout < 0:
		return bad("phase_timeout must be positive")
	case js.Privacy != nil && js.Privacy.AdaptiveClipping != nil && s.ClipRange != 0:
		return bad("leave clip_range unset with privacy.adaptive_clipping: it follows the clip norm, which moves every round")
	}
	cfg, err := s.config(js, max(2, s.Threshold), nil)
	if err != nil {
		return bad("%v", err)
	}
	cfg.Threshold = max(2, cfg.Threshold)
	if err := cfg.Validate(); err != nil {
		return bad("%v", err)
	}
	if p := js.Privacy; p != nil && s.ClipRange > 0 {
		// The range must hold the clipped update plus its noise: a
		// coordinate clipped after the noise is added is no longer the
		// Gaussian mechanism the accountant counts.
		need := p.ClipNorm * (1 + secAggNoiseSigmas*p.NoiseMultiplier/math.Sqrt2)
		if s.ClipRange < need {
			return bad("clip_range %g is too small for privacy.clip_norm %g with noise_multiplier %g: sites' noised coordinates would be clipped; use at least %.3g (or leave it unset)",
				s.ClipRange, p.ClipNorm, p.NoiseMultiplier, need)
		}
	}
	return nil
}

// secAggOpen is the protocol run a training round opens with: the leader
// fixes the session's sites and the configuration; the FSM builds the
// server from them.
type secAggOpen struct {
	Config  secagg.Config `json:"config"`
	Clients []string      `json:"clients"`
}

// newSecAggOpen resolves the run for a round asking selected (nil: every
// enrolled site, all).
func newSecAggOpen(js *JobSpec, st *PrivacyState, selected, all []string) (*secAggOpen, error) {
	clients := selected
	if len(clients) == 0 {
		clients = all
	}
	cfg, err := js.SecureAggregation.config(js, len(clients), st)
	if err != nil {
		return nil, err
	}
	if err := cfg.ValidateFor(len(clients)); err != nil {
		return nil, fmt.Errorf("secure aggregation over %d sites: %w", len(clients), err)
	}
	return &secAggOpen{Config: cfg, Clients: slices.Clone(clients)}, nil
}

// secAggInputBody is one site's protocol message, applied to the round's
// server.
type secAggInputBody struct {
	Job     string `json:"job"`
	Round   uint64 `json:"round"`
	Attempt int    `json:"attempt"`
	Site    string `json:"site"`
	Payload []byte `json:"payload"`
}

// secAggAdvanceBody closes a protocol phase. Deadline is the next phase's.
type secAggAdvanceBody struct {
	Job      string       `json:"job"`
	Round    uint64       `json:"round"`
	Attempt  int          `json:"attempt"`
	Phase    secagg.Phase `json:"phase"`
	Deadline time.Time    `json:"deadline"`
}

// ErrSecAgg marks a protocol message the round's server refused; it wraps
// the protocol/secagg error that says why.
var ErrSecAgg = errors.New("secure aggregation refused the message")

// secAggRound returns the open attempt's protocol server, or an error that
// says the attempt is not open.
func (f *fsm) secAggRound(job string, round uint64, attempt int) (*Round, error) {
	r, err := f.openRound(job, round)
	if err != nil {
		return nil, err
	}
	if r.Attempt != attempt || r.SecAgg == nil {
		return nil, fmt.Errorf("%w: job %s round %d attempt %d is not an open secure aggregation run", ErrRoundClosed, job, round, attempt)
	}
	r.SecAgg.SetObserver(f.secAggObserver)
	return r, nil
}

// applySecAggInput hands one site's message to the round's server. A
// message the server already has (a retry) is accepted again.
func (f *fsm) applySecAggInput(b secAggInputBody) error {
	r, err := f.secAggRound(b.Job, b.Round, b.Attempt)
	if err != nil {
		return err
	}
	m, err := secagg.Decode(b.Payload)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSecAgg, err)
	}
	switch err := r.SecAgg.Handle(b.Site, m); {
	case err == nil:
		r.SecAggProgress = progress(r.SecAgg)
		return nil
	case errors.Is(err, secagg.ErrDuplicate):
		return nil
	default:
		return fmt.Errorf("%w: %w", ErrSecAgg, err)
	}
}

// applySecAggAdvance closes the named phase of the round's run. A run that
// cannot go on (too few sites left, shares that do not rebuild) fails the
// attempt.
func (f *fsm) applySecAggAdvance(b secAggAdvanceBody, at time.Time) error {
	r, err := f.secAggRound(b.Job, b.Round, b.Attempt)
	if err != nil {
		return err
	}
	if r.SecAgg.Phase() != b.Phase {
		return nil // already closed: a retried proposal
	}
	r.PhaseDeadline = b.Deadline
	if err := r.SecAgg.Advance(); err != nil {
		f.failRound(f.st.Jobs[b.Job], r, at, fmt.Sprintf("secure aggregation: %v", err))
		return nil
	}
	r.SecAggProgress = progress(r.SecAgg)
	return nil
}

// secAggView is what the engine and the agent handlers read of a round's
// run, copied under the FSM lock.
type secAggView struct {
	phase   secagg.Phase
	pending []string
	parts   []string
	result  *secagg.Result
}

func viewSecAgg(r *Round) secAggView {
	v := secAggView{phase: r.SecAgg.Phase(), pending: r.SecAgg.Pending(), parts: r.SecAgg.Participants()}
	if v.phase == secagg.PhaseDone {
		if res, err := r.SecAgg.Result(); err == nil {
			cp := *res
			cp.Sum = slices.Clone(res.Sum)
			cp.Contributors = slices.Clone(res.Contributors)
			v.result = &cp
		}
	}
	return v
}

// stepSecAgg moves a secure aggregation round on: closes the phase once
// every participant answered (or declined), or its deadline passed, and
// commits the round once the sum is known.
func (n *Node) stepSecAgg(v roundView, now time.Time) error {
	r := v.open
	var (
		sv   secAggView
		open bool
	)
	n.fsm.view(func(st *state) {
		if j := st.Jobs[v.job]; j != nil && j.Current != nil && j.Current.Attempt == r.Attempt && j.Current.SecAgg != nil {
			sv, open = viewSecAgg(j.Current), true
		}
	})
	if !open {
		return nil
	}
	if sv.phase == secagg.PhaseDone {
		if sv.result == nil {
			return fmt.Errorf("round %d: secure aggregation finished without a sum", r.Number)
		}
		return n.closeSecAggRound(v, r, sv.result)
	}
	waiting := 0
	for _, s := range sv.pending {
		if _, declined := r.Declines[s]; !declined {
			waiting++
		}
	}
	if waiting > 0 && now.Before(r.PhaseDeadline) {
		return nil
	}
	if waiting > 0 {
		n.log.Warn("secure aggregation phase deadline: going on without the sites that did not answer",
			"job", v.job, "round", r.Number, "phase", sv.phase.String(), "missing", waiting, "of", len(sv.parts))
	}
	err := n.propose(cmdSecAggAdvance, secAggAdvanceBody{Job: v.job, Round: r.Number, Attempt: r.Attempt, Phase: sv.phase,
		Deadline: now.Add(v.spec.SecureAggregation.phaseTimeout())})
	if err != nil {
		return fmt.Errorf("round %d: close secure aggregation phase %s: %w", r.Number, sv.phase, err)
	}
	n.log.Info("secure aggregation phase closed", "job", v.job, "round", r.Number, "phase", sv.phase.String(), "sites", len(sv.parts)-waiting)
	return nil
}

// closeSecAggRound turns the unmasked sum into the new global model: the
// mean update (each contributor counts once) goes through the job's rule
// as a single update, and a private job's accountant takes the round (the
// noise is already in the sum: each site added its share).
func (n *Node) closeSecAggRound(v roundView, r *Round, res *secagg.Result) error {
	if res.Count < 1 {
		return fmt.Errorf("round %d: secure aggregation sum of no sites", r.Number)
	}
	p := v.spec.Privacy
	var clipper *dp.AdaptiveClipper
	if p != nil {
		var err error
		if _, _, clipper, err = p.roundClip(v.privacy, v.spec.MinSites); err != nil {
			return fmt.Errorf("round %d: privacy: %w", r.Number, err)
		}
	}
	sum, noisyCount := res.Sum, 0.0
	if clipper != nil {
		// The last coordinate is the sum of the sites' noised clip bits.
		sum, noisyCount = sum[:len(sum)-1], sum[len(sum)-1]
	}
	mean := make([]float32, len(sum))
	for i, s := range sum {
		mean[i] = float32(s / float64(res.Count))
	}
	agg, name, err := n.beginRule(v, 0)
	if err != nil {
		return err
	}
	if err := agg.AddPacked(protocol.EncodeF32(mean), 1); err != nil {
		return fmt.Errorf("round %d: aggregate (%s): %w", r.Number, name, err)
	}
	res2, err := agg.Finish()
	if err != nil {
		return fmt.Errorf("round %d: aggregate (%s): %w", r.Number, name, err)
	}
	var privacy *PrivacyState
	if p != nil {
		if privacy, err = endPrivateRound(p, v.privacy, clipper, noisyCount, len(r.Selected), v.sites); err != nil {
			return fmt.Errorf("round %d: privacy: %w", r.Number, err)
		}
	}
	return n.commitModel(v, r, res2, res.Contributors, 0, 0, privacy)
}

// secAggParams is the offer's protocol section for site; nil when the
// round is not a secure aggregation run or the run no longer takes the
// site's keys.
func secAggParams(j *Job, r *Round, site string) *pb.SecAggParams {
	if r.SecAgg == nil || r.SecAgg.Phase() != secagg.PhaseAdvertiseKeys || !slices.Contains(r.SecAgg.Pending(), site) {
		return nil
	}
	cfg, sess := r.SecAgg.Config(), r.SecAgg.Session()
	p := &pb.SecAggParams{Attempt: uint32(r.Attempt), Threshold: uint32(cfg.Threshold), ClipRange: cfg.ClipRange, Scale: cfg.Scale,
		Degree: uint32(cfg.Degree), VectorLength: uint32(cfg.VectorLength), Clients: slices.Clone(sess.Clients)}
	if pr := j.Spec.Privacy; pr != nil {
		clip, z, c, err := pr.roundClip(j.Privacy, j.Spec.MinSites)
		if err != nil {
			return nil
		}
		std, err := dp.DistributedStddev(z, clip, cfg.Threshold)
		if err != nil {
			return nil
		}
		p.ClipNorm, p.NoiseStd = clip, std
		if c != nil {
			p.CountStddev = c.Config().CountStddev
		}
	}
	return p
}

// phaseOf is the protocol phase in which a site sends message kind k.
func phaseOf(k secagg.Kind) (secagg.Phase, bool) {
	switch k {
	case secagg.KindAdvertiseKeys:
		return secagg.PhaseAdvertiseKeys, true
	case secagg.KindShareKeys:
		return secagg.PhaseShareKeys, true
	case secagg.KindMaskedInput:
		return secagg.PhaseMaskedInput, true
	case secagg.KindUnmaskResponse:
		return secagg.PhaseUnmasking, true
	}
	return 0, false
}

// onSecAggMessage takes one site's protocol message: checked here against
// the run's current phase (so that junk costs no Raft entry), then
// committed and applied to the replicated server before the Ack.
func (n *Node) onSecAggMessage(ac *agentConn, m *pb.SecAggMessage) *pb.Envelope {
	reject := func(code pb.ErrorCode, format string, args ...any) *pb.Envelope {
		n.stats.SecAggRejected.Add(1)
		msg := fmt.Sprintf(format, args...)
		n.log.Warn("rejected secure aggregation message", "site", ac.site, "job", m.GetJobId(), "round", m.GetRound(), "reason", msg)
		return protocol.Errorf(code, "%s", msg)
	}
	ack := &pb.Envelope{Body: &pb.Envelope_Ack{Ack: &pb.Ack{JobId: m.GetJobId(), Round: m.GetRound()}}}
	msg, err := secagg.Decode(m.GetPayload())
	if err != nil {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "secure aggregation message: %v", err)
	}
	phase, ok := phaseOf(msg.Kind())
	if !ok {
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "a site may not send a %s message", msg.Kind())
	}
	var (
		sv   secAggView
		resp *pb.Envelope
	)
	n.fsm.view(func(st *state) {
		j, ok := st.Jobs[m.GetJobId()]
		if !ok {
			resp = reject(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no job %q", m.GetJobId())
			return
		}
		r := j.Current
		if !j.State.active() || r == nil || r.Number != m.GetRound() || r.Attempt != int(m.GetAttempt()) || r.SecAgg == nil {
			resp = reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "job %s round %d attempt %d has no open secure aggregation run", m.GetJobId(), m.GetRound(), m.GetAttempt())
			return
		}
		sv = viewSecAgg(r)
	})
	if resp != nil {
		return resp
	}
	switch {
	case phase < sv.phase && slices.Contains(sv.parts, ac.site):
		// A retry of a message the run took (its Ack was lost): the
		// site is still in, so the message was accepted.
		return ack
	case phase != sv.phase:
		return reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "the run is in phase %s, not %s", sv.phase, phase)
	case !slices.Contains(sv.parts, ac.site):
		return reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "this site is not in phase %s of the run", sv.phase)
	case !slices.Contains(sv.pending, ac.site):
		return ack // already in
	}
	err = n.propose(cmdSecAggInput, secAggInputBody{Job: m.GetJobId(), Round: m.GetRound(), Attempt: int(m.GetAttempt()), Site: ac.site, Payload: m.GetPayload()})
	switch {
	case err == nil:
		n.stats.SecAggMessages.Add(1)
		return ack
	case errors.Is(err, secagg.ErrPhase), errors.Is(err, secagg.ErrUnknownClient), errors.Is(err, secagg.ErrFailed):
		return reject(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, "%v", err)
	case errors.Is(err, ErrSecAgg):
		return reject(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "%v", err)
	}
	return n.proposalAnswer(err, reject)
}

// onSecAggFetch answers a site waiting for the message that opens a
// phase: NoTask until it opens (holding the request up to its wait), then
// the KeyList, the ciphertexts addressed to the site, or the unmasking
// request; ROUND_CLOSED once the run went on without the site or ended.
func (n *Node) onSecAggFetch(ctx context.Context, ac *agentConn, f *pb.SecAggFetch) *pb.Envelope {
	want := secagg.Phase(f.GetPhase())
	if want < secagg.PhaseShareKeys || want > secagg.PhaseUnmasking {
		n.stats.SecAggRejected.Add(1)
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_BAD_REQUEST, "secure aggregation fetch for phase %d: want 1 to 3", f.GetPhase())
	}
	closed := func(format string, args ...any) *pb.Envelope {
		return protocol.Errorf(pb.ErrorCode_ERROR_CODE_ROUND_CLOSED, format, args...)
	}
	return n.longPoll(ctx, f.GetWaitMs(), func() *pb.Envelope {
		var (
			resp    *pb.Envelope
			payload []byte
			err     error
		)
		n.fsm.view(func(st *state) {
			j, ok := st.Jobs[f.GetJobId()]
			if !ok {
				resp = protocol.Errorf(pb.ErrorCode_ERROR_CODE_NOT_FOUND, "no job %q", f.GetJobId())
				return
			}
			r := j.Current
			if !j.State.active() || r == nil || r.Number != f.GetRound() || r.Attempt != int(f.GetAttempt()) || r.SecAgg == nil {
				resp = closed("job %s round %d attempt %d has no open secure aggregation run", f.GetJobId(), f.GetRound(), f.GetAttempt())
				return
			}
			srv := r.SecAgg
			switch phase := srv.Phase(); {
			case phase < want:
				return // not yet
			case phase > want:
				resp = closed("the run is past phase %s", want)
				return
			case !slices.Contains(srv.Participants(), ac.site):
				resp = closed("the run went on without this site")
				return
			}
			var out secagg.Message
			switch want {
			case secagg.PhaseShareKeys:
				out, err = srv.KeyList()
			case secagg.PhaseMaskedInput:
				out, err = srv.RoutedShares(ac.site)
			default:
				out, err = srv.UnmaskRequest()
			}
			if err == nil {
				payload, err = out.MarshalBinary()
			}
		})
		switch {
		case resp != nil:
			return resp
		case err != nil:
			n.log.Error("secure aggregation: server message", "job", f.GetJobId(), "round", f.GetRound(), "err", err)
			return protocol.Errorf(pb.ErrorCode_ERROR_CODE_INTERNAL, "secure aggregation: %v", err)
		case payload != nil:
			return &pb.Envelope{Body: &pb.Envelope_SecaggMessage{SecaggMessage: &pb.SecAggMessage{
				JobId: f.GetJobId(), Round: f.GetRound(), Attempt: f.GetAttempt(), Payload: payload}}}
		}
		return nil
	})
}
