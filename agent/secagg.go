package agent

// The site's side of secure aggregation (protocol/secagg). When a training
// offer carries SecAggParams, the agent trains as usual but never uploads
// its update: it clips and noises it as the job asks, then takes part in a
// protocol run in which the coordinator learns only the sum of the sites'
// updates. The run is a sequence of exchanges on the control stream: the
// agent sends each of its four messages (AdvertiseKeys, ShareKeys,
// MaskedInput, UnmaskResponse) in a SecAggMessage until it is acknowledged,
// and between them asks with SecAggFetch for the coordinator's message
// that opens its next phase (KeyList, RoutedShares, UnmaskRequest).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/dp"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/secagg"
)

// errSecAgg marks a secure aggregation run this site dropped for a reason
// other than the session: a step its client refused, a coordinator answer
// that does not fit the run, or the coordinator's refusal of a message.
// The serve loop records it like a failed task instead of reconnecting.
var errSecAgg = errors.New("secure aggregation run abandoned")

// secaggFrameOverhead bounds what a SecAggMessage frame adds to a masked
// input's 4 bytes per coordinate: the envelope, the job id twice (envelope
// and message header, at most secagg.MaxIDLength bytes each), round,
// attempt and length prefixes.
const secaggFrameOverhead = 1024

// secaggRun is this site's part in one secure aggregation run. It lives in
// memory only and outlives the session it began on, so that a reconnect
// (a cut link, a leader change) continues the run; an agent that restarts
// has lost it and drops out, which the protocol tolerates (up to n−t sites
// may drop at each step). Keeping it on disk would mean storing the
// client's private keys and the update, for a run that will usually have
// moved on by the time the agent is back.
type secaggRun struct {
	job     string
	round   uint64
	attempt uint32
	client  *secagg.Client
	// update is the clipped and noised update; it is erased as soon as
	// the client has masked it.
	update []float32
	// last is the wire encoding of the message the client computed last,
	// until the coordinator acknowledges it; nil when there is none. A
	// message whose Ack was lost is sent again, and the client is never
	// asked to compute it twice.
	last []byte
}

// newSecAggClient checks an offer's secure aggregation parameters before
// the site downloads or trains anything, and builds its client for the
// run. The client draws its keys only when it first advertises them.
func (a *Agent) newSecAggClient(offer *pb.TaskOffer) (*secagg.Client, error) {
	p := offer.GetSecagg()
	n, vl := len(p.GetClients()), p.GetVectorLength()
	params := vl // the model's coordinates: the count bit is one more
	if p.GetCountStddev() > 0 {
		params--
	}
	switch {
	case p.GetThreshold() < 2:
		return nil, fmt.Errorf("%w: threshold %d (at least 2, or the sum is one site's update)", ErrSecAggParams, p.GetThreshold())
	case n == 0:
		return nil, fmt.Errorf("%w: the run names no clients", ErrSecAggParams)
	case !slices.Contains(p.GetClients(), a.site):
		return nil, fmt.Errorf("%w: the run's %d clients do not include this site", ErrSecAggParams, n)
	case vl == 0 || params != offer.GetModelSpec().GetNumParams():
		return nil, fmt.Errorf("%w: vector length %d, the model has %d parameters", ErrSecAggParams, vl, offer.GetModelSpec().GetNumParams())
	case !(p.GetCountStddev() >= 0) || math.IsInf(p.GetCountStddev(), 0):
		return nil, fmt.Errorf("%w: count standard deviation %v (must be finite, 0 for none)", ErrSecAggParams, p.GetCountStddev())
	case 4*uint64(vl)+secaggFrameOverhead > protocol.DefaultMaxFrame:
		return nil, fmt.Errorf("%w: a masked update of %d coordinates does not fit one control frame (%d bytes)", ErrSecAggParams, vl, protocol.DefaultMaxFrame)
	case !(p.GetClipNorm() >= 0) || math.IsInf(p.GetClipNorm(), 0):
		return nil, fmt.Errorf("%w: clip norm %v (must be finite, 0 for none)", ErrSecAggParams, p.GetClipNorm())
	case !(p.GetNoiseStd() >= 0) || math.IsInf(p.GetNoiseStd(), 0):
		return nil, fmt.Errorf("%w: noise standard deviation %v (must be finite, 0 for none)", ErrSecAggParams, p.GetNoiseStd())
	}
	cfg := secagg.Config{
		Threshold: int(p.GetThreshold()), ClipRange: p.GetClipRange(), Scale: p.GetScale(),
		VectorLength: int(vl), Degree: int(p.GetDegree()),
	}
	sess := secagg.Session{JobID: offer.GetJobId(), Round: offer.GetRound(), Clients: slices.Clone(p.GetClients())}
	c, err := secagg.NewClient(cfg, sess, a.site, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSecAggParams, err)
	}
	return c, nil
}

// privatize prepares an update for a securely aggregated round: it scales
// update in place to L2 norm at most clipNorm (0: no clipping) and adds
// Gaussian noise of standard deviation noiseStd (0: none) to every
// coordinate, drawn from g (nil: a sampler seeded from crypto/rand). The
// site does this itself because the coordinator only ever sees the sum,
// which must carry the job's noise. An update that is not finite is
// refused: its norm, and so its share of the sum, cannot be bounded.
// clipped reports whether the clip changed the update (adaptive clipping
// counts the sites it did not).
func privatize(update []float32, clipNorm, noiseStd float64, g *dp.Gaussian) (clipped bool, err error) {
	for _, x := range update {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false, errors.New("the trained update has a coordinate that is not finite")
		}
	}
	if clipNorm > 0 {
		if _, clipped, err = dp.ClipL2(update, clipNorm); err != nil {
			return false, fmt.Errorf("clip the update: %w", err)
		}
	}
	if noiseStd > 0 {
		if g == nil {
			g = dp.NewGaussian(nil)
		}
		if err := g.AddNoise(update, noiseStd); err != nil {
			return false, fmt.Errorf("noise the update: %w", err)
		}
	}
	return clipped, nil
}

// startSecAgg takes the update p trained for offer into a secure
// aggregation run with client c, and runs the protocol on s (see
// runSecAgg for what it returns). The encoded update is erased: from here
// on the only copy is the run's, until the client has masked it.
func (a *Agent) startSecAgg(ctx context.Context, s *session, offer *pb.TaskOffer, c *secagg.Client, p *pending) error {
	params := offer.GetSecagg()
	update, err := protocol.DecodeF32(p.Delta)
	clear(p.Delta)
	if err != nil {
		return fmt.Errorf("%w: %w", errLocal, err)
	}
	want := int(params.GetVectorLength())
	if params.GetCountStddev() > 0 {
		want-- // the count bit
	}
	if len(update) != want {
		return a.decline(s, offer, fmt.Errorf("%w: the update has %d coordinates, the run expects %d", ErrSecAggParams, len(update), want))
	}
	clipped, err := privatize(update, params.GetClipNorm(), params.GetNoiseStd(), nil)
	if err != nil {
		clear(update)
		return a.decline(s, offer, err)
	}
	if sd := params.GetCountStddev(); sd > 0 {
		// Adaptive clipping: whether the clip held, centred (±½), plus
		// this site's share of the count noise, as one more masked
		// coordinate; the coordinator learns only the noised count.
		bit, err := dp.NoisyCountBit(clipped, sd, int(params.GetThreshold()), nil)
		if err != nil {
			clear(update)
			return a.decline(s, offer, fmt.Errorf("%w: %w", ErrSecAggParams, err))
		}
		update = append(update, float32(bit))
	}
	a.secagg = &secaggRun{job: offer.GetJobId(), round: offer.GetRound(), attempt: params.GetAttempt(), client: c, update: update}
	a.mu.Lock()
	a.stats.RoundsTrained++
	a.mu.Unlock()
	a.log.Debug("taking part in a secure aggregation run", "job", offer.GetJobId(), "round", offer.GetRound(),
		"attempt", params.GetAttempt(), "clients", len(params.GetClients()))
	return a.runSecAgg(ctx, s)
}

// runSecAgg carries the run in progress forward on s until it ends for
// this site or s fails. It returns:
//   - nil once the run is complete, or the coordinator closed it
//     (ROUND_CLOSED: the run failed, ended, or went on without this site);
//     the run is dropped;
//   - an error wrapping errSecAgg once it dropped the run for any other
//     reason: a client step failed, the coordinator answered something
//     that does not fit the run, or refused a message;
//   - otherwise a session error (transport, redirect, the coordinator
//     unavailable, ctx ended), with the run kept for the next session.
func (a *Agent) runSecAgg(ctx context.Context, s *session) error {
	for run := a.secagg; run != nil; run = a.secagg {
		if run.last == nil && run.client.Phase() == secagg.PhaseDone {
			a.endSecAgg(run)
			a.mu.Lock()
			a.stats.SecAggRuns++
			a.mu.Unlock()
			a.writeStatus()
			a.log.Debug("secure aggregation run complete", "job", run.job, "round", run.round, "attempt", run.attempt)
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		phase := run.client.Phase()
		err := a.secaggStep(s, run)
		var re *protocol.RemoteError
		switch {
		case err == nil:
		case errors.Is(err, errSecAgg):
			a.endSecAgg(run)
			return err
		case errors.As(err, &re) && re.Code == pb.ErrorCode_ERROR_CODE_ROUND_CLOSED:
			a.endSecAgg(run)
			a.log.Info("the coordinator closed a secure aggregation run; this site's part in it ends",
				"job", run.job, "round", run.round, "attempt", run.attempt, "phase", phase.String())
			return nil
		case errors.As(err, &re) && re.Code == pb.ErrorCode_ERROR_CODE_UNAVAILABLE:
			// A leader starting up or failing to commit asks for a retry:
			// reconnect and send again.
			return err
		case errors.As(err, &re):
			a.endSecAgg(run)
			return fmt.Errorf("%w in phase %s: %w", errSecAgg, phase, err)
		default:
			return err
		}
	}
	return nil
}

// endSecAgg drops run and erases what it holds of the update.
func (a *Agent) endSecAgg(run *secaggRun) {
	clear(run.update)
	run.update, run.last, run.client = nil, nil, nil
	if a.secagg == run {
		a.secagg = nil
	}
}

// secaggStep makes one exchange of run on s: it sends the message not yet
// acknowledged, or else fetches the coordinator's message that opens the
// client's next phase and computes the client's answer into run.last, for
// the next step to send. A fetch answered NoTask (the phase has not opened
// yet) changes nothing. Errors caused by what the coordinator sent, by the
// client or by the egress guard wrap errSecAgg; the session's errors and
// the coordinator's Error answers are returned as they are.
func (a *Agent) secaggStep(s *session, run *secaggRun) error {
	if run.last != nil {
		resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_SecaggMessage{SecaggMessage: &pb.SecAggMessage{
			JobId: run.job, Round: run.round, Attempt: run.attempt, Payload: run.last}}})
		switch {
		case errors.Is(err, egress.ErrPayload), errors.Is(err, egress.ErrForbidden), errors.Is(err, protocol.ErrFrameTooLarge):
			// Sending it again would be refused again.
			return fmt.Errorf("%w: %w", errSecAgg, err)
		case err != nil:
			return err
		case resp.GetAck() == nil:
			return fmt.Errorf("%w: answer to a protocol message: %w: %T", errSecAgg, protocol.ErrUnexpected, resp.GetBody())
		}
		run.last = nil
		return nil
	}
	var out secagg.Message
	switch phase := run.client.Phase(); phase {
	case secagg.PhaseAdvertiseKeys:
		m, err := run.client.AdvertiseKeys()
		if err != nil {
			return fmt.Errorf("%w: %w", errSecAgg, err)
		}
		out = m
	case secagg.PhaseShareKeys, secagg.PhaseMaskedInput, secagg.PhaseUnmasking:
		in, err := a.secaggFetch(s, run, phase)
		if err != nil || in == nil {
			return err
		}
		if out, err = run.answer(in); err != nil {
			return fmt.Errorf("%w: phase %s: %w", errSecAgg, phase, err)
		}
	default:
		return fmt.Errorf("%w: the client is in phase %s", errSecAgg, phase)
	}
	b, err := out.MarshalBinary()
	if err != nil {
		return fmt.Errorf("%w: %w", errSecAgg, err)
	}
	run.last = b
	return nil
}

// secaggFetch asks for the coordinator's message that opens phase (the
// coordinator may hold the request up to PollWait). It returns nil, nil
// when the phase has not opened yet, and checks that what it returns is
// the message for this run and phase.
func (a *Agent) secaggFetch(s *session, run *secaggRun, phase secagg.Phase) (secagg.Message, error) {
	resp, err := a.request(s, &pb.Envelope{Body: &pb.Envelope_SecaggFetch{SecaggFetch: &pb.SecAggFetch{
		JobId: run.job, Round: run.round, Attempt: run.attempt, Phase: uint32(phase), WaitMs: uint32(a.cfg.PollWait / 1e6)}}})
	if err != nil {
		return nil, err
	}
	if resp.GetNoTask() != nil {
		return nil, nil
	}
	m := resp.GetSecaggMessage()
	switch {
	case m == nil:
		return nil, fmt.Errorf("%w: answer to a fetch for phase %s: %w: %T", errSecAgg, phase, protocol.ErrUnexpected, resp.GetBody())
	case m.GetJobId() != run.job || m.GetRound() != run.round || m.GetAttempt() != run.attempt:
		return nil, fmt.Errorf("%w: the coordinator answered a fetch for phase %s with a message of another run", errSecAgg, phase)
	}
	in, err := secagg.Decode(m.GetPayload())
	if err != nil {
		return nil, fmt.Errorf("%w: the coordinator's message for phase %s: %w", errSecAgg, phase, err)
	}
	if want := opening(phase); in.Kind() != want {
		return nil, fmt.Errorf("%w: the coordinator answered a fetch for phase %s with %s, not %s", errSecAgg, phase, in.Kind(), want)
	}
	return in, nil
}

// opening is the kind of the coordinator's message that opens a client's
// phase.
func opening(p secagg.Phase) secagg.Kind {
	switch p {
	case secagg.PhaseShareKeys:
		return secagg.KindKeyList
	case secagg.PhaseMaskedInput:
		return secagg.KindRoutedShares
	case secagg.PhaseUnmasking:
		return secagg.KindUnmaskRequest
	}
	return 0
}

// answer is the client's step for the coordinator's message in. Once the
// client has masked the update, the run no longer needs it and erases it.
func (r *secaggRun) answer(in secagg.Message) (secagg.Message, error) {
	switch m := in.(type) {
	case *secagg.KeyList:
		out, err := r.client.ShareKeys(m)
		if err != nil {
			return nil, err
		}
		return out, nil
	case *secagg.RoutedShares:
		out, err := r.client.MaskedInput(m, r.update)
		if err != nil {
			return nil, err
		}
		clear(r.update)
		r.update = nil
		return out, nil
	case *secagg.UnmaskRequest:
		out, err := r.client.Unmask(m)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %s", protocol.ErrUnexpected, in.Kind())
}
