// Package egress is the site agent's only way out. Every byte the agent
// sends to the coordinator passes through a Guard, which admits only the
// protocol's agent-to-coordinator message types, checks that numeric
// payloads are what their headers declare (that secure aggregation
// payloads are client messages of the protocol, for the round they name,
// and that an evaluation's metrics and counts are consistent),
// counts the bytes, and records each send in an append-only egress log on
// the gateway.
package egress

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/protocol/secagg"
)

var (
	// ErrForbidden: the message type may not leave a site.
	ErrForbidden = errors.New("egress: message type not allowed to leave the site")
	// ErrPayload: a payload is not what its header declares.
	ErrPayload = errors.New("egress: payload does not match its declaration")
)

// MaxCalibrationBins is the most calibration bins an evaluation may carry.
const MaxCalibrationBins = 100

// Record is one line of the egress log: what left, when, how big, its hash.
// Kind is one of Kinds; Job and Round are set on update headers and
// bodies, on secure aggregation messages and on evaluations. ReadLog reads
// a log back.
type Record struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	Bytes  int       `json:"bytes"`
	SHA256 string    `json:"sha256"`
	Job    string    `json:"job,omitempty"`
	Round  uint64    `json:"round,omitempty"`
}

// Config configures a Guard.
type Config struct {
	// LogPath is the egress log file (JSON lines, appended); empty keeps no
	// log.
	LogPath string
	// Tap, if set, sees every byte exactly as it is handed to the
	// transport. Tests and the simulator use it to prove no PHI leaves.
	Tap func([]byte)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Guard checks and records outgoing traffic. It is safe for concurrent use.
type Guard struct {
	cfg   Config
	now   func() time.Time
	bytes atomic.Int64

	mu  sync.Mutex // guards log
	log *os.File
}

// New opens the egress log (if any).
func New(cfg Config) (*Guard, error) {
	g := &Guard{cfg: cfg, now: cfg.Now}
	if g.now == nil {
		g.now = time.Now
	}
	if cfg.LogPath != "" {
		f, err := os.OpenFile(cfg.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("egress log: %w", err)
		}
		g.log = f
	}
	return g, nil
}

// Close closes the egress log. It is idempotent.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.log == nil {
		return nil
	}
	err := g.log.Close()
	g.log = nil
	return err
}

// BytesSent is the number of bytes that have left through this guard.
func (g *Guard) BytesSent() int64 { return g.bytes.Load() }

// check admits only the message types an agent may send, with the checks
// on each, and names the kind for the egress log.
func check(env *pb.Envelope) (kind string, err error) {
	switch b := env.GetBody().(type) {
	case *pb.Envelope_Hello:
		return KindHello, nil
	case *pb.Envelope_TaskRequest:
		return KindTaskRequest, nil
	case *pb.Envelope_RoundStatusRequest:
		return KindRoundStatusRequest, nil
	case *pb.Envelope_ModelRequest:
		if !isDigest(b.ModelRequest.GetSha256()) {
			return "", fmt.Errorf("%w: model request digest", ErrPayload)
		}
		return KindModelRequest, nil
	case *pb.Envelope_UpdateUpload:
		u := b.UpdateUpload
		d := u.GetDelta()
		if d.GetEncoding() != pb.Encoding_ENCODING_F32LE || !isDigest(d.GetSha256()) || !isDigest(u.GetBaseModelSha256()) {
			return "", fmt.Errorf("%w: update header", ErrPayload)
		}
		m := u.GetMetrics()
		for _, x := range []float64{m.GetTrainLoss(), m.GetValAuroc(), m.GetValAccuracy()} {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return "", fmt.Errorf("%w: metric is not finite", ErrPayload)
			}
		}
		return KindUpdateHeader, nil
	case *pb.Envelope_StatsUpload:
		for _, fs := range b.StatsUpload.GetStats() {
			if math.IsNaN(fs.GetSum()) || math.IsInf(fs.GetSum(), 0) || math.IsNaN(fs.GetSumSq()) || math.IsInf(fs.GetSumSq(), 0) ||
				fs.GetCount() > b.StatsUpload.GetCohortSize() {
				return "", fmt.Errorf("%w: feature statistics", ErrPayload)
			}
			var inBins uint64 // ≤ the feature's count, so the subtraction cannot wrap
			for _, c := range fs.GetBins() {
				if c > fs.GetCount()-inBins {
					return "", fmt.Errorf("%w: histogram counts exceed the feature's count", ErrPayload)
				}
				inBins += c
			}
		}
		return KindStats, nil
	case *pb.Envelope_EvalUpload:
		if err := checkEval(b.EvalUpload); err != nil {
			return "", err
		}
		return KindEval, nil
	case *pb.Envelope_Decline:
		return KindDecline, nil
	case *pb.Envelope_DriftReport:
		d := b.DriftReport
		if !isJobID(d.GetJobId()) || !isDigest(d.GetModelSha256()) || !(d.GetMaxPsi() >= 0) || math.IsInf(d.GetMaxPsi(), 0) {
			return "", fmt.Errorf("%w: drift report", ErrPayload)
		}
		return KindDrift, nil
	case *pb.Envelope_DeploymentRequest:
		d := b.DeploymentRequest
		if !isJobID(d.GetJobId()) || (d.GetCurrentSha256() != "" && !isDigest(d.GetCurrentSha256())) {
			return "", fmt.Errorf("%w: deployment request", ErrPayload)
		}
		return KindDeploymentRequest, nil
	case *pb.Envelope_SecaggMessage:
		if err := checkSecAgg(b.SecaggMessage); err != nil {
			return "", err
		}
		return KindSecAgg, nil
	case *pb.Envelope_SecaggFetch:
		if p := b.SecaggFetch.GetPhase(); p < uint32(secagg.PhaseShareKeys) || p > uint32(secagg.PhaseUnmasking) {
			return "", fmt.Errorf("%w: secure aggregation fetch for phase %d", ErrPayload, p)
		}
		return KindSecAggFetch, nil
	}
	return "", fmt.Errorf("%w: %T", ErrForbidden, env.GetBody())
}

// checkSecAgg admits a secure aggregation message only if its payload
// decodes in full (protocol/secagg refuses trailing bytes) as one of the
// messages a client sends, for the job and round the envelope names: the
// payload then holds public keys, ciphertexts of shares, a masked update
// or shares of masks, and nothing the guard has not parsed.
func checkSecAgg(m *pb.SecAggMessage) error {
	msg, err := secagg.Decode(m.GetPayload())
	if err != nil {
		return fmt.Errorf("%w: secure aggregation payload: %w", ErrPayload, err)
	}
	if !msg.Kind().FromClient() {
		return fmt.Errorf("%w: secure aggregation %s is a coordinator's message", ErrForbidden, msg.Kind())
	}
	if h := secagg.HeaderOf(msg); h.JobID != m.GetJobId() || h.Round != m.GetRound() {
		return fmt.Errorf("%w: secure aggregation %s for another job or round than its envelope's", ErrPayload, msg.Kind())
	}
	return nil
}

// checkEval admits an evaluation only if it holds what an evaluation of
// held-out records can: the digest of the model scored, finite metrics in
// [0, 1], counts that add up (positives within records, bins within the
// total, each bin's positives within its count, its sum of predicted risks
// within [0, count]), suppressed bins with nothing in them, and at most
// MaxCalibrationBins bins.
func checkEval(e *pb.EvalUpload) error {
	if !isDigest(e.GetModelSha256()) {
		return fmt.Errorf("%w: evaluation model digest", ErrPayload)
	}
	for _, x := range []float64{e.GetAuroc(), e.GetAuprc(), e.GetAccuracy(), e.GetBrier()} {
		if !(x >= 0 && x <= 1) { // also catches NaN
			return fmt.Errorf("%w: evaluation metric is not in [0, 1]", ErrPayload)
		}
	}
	if e.GetPositives() > e.GetCount() {
		return fmt.Errorf("%w: evaluation positives exceed its count", ErrPayload)
	}
	bins := e.GetCalibration()
	if len(bins) > MaxCalibrationBins {
		return fmt.Errorf("%w: %d calibration bins, at most %d", ErrPayload, len(bins), MaxCalibrationBins)
	}
	var inBins uint64
	for i, b := range bins {
		if b.GetSuppressed() && (b.GetCount() != 0 || b.GetPositives() != 0 || b.GetSumPredicted() != 0) {
			return fmt.Errorf("%w: suppressed calibration bin %d is not empty", ErrPayload, i)
		}
		if b.GetPositives() > b.GetCount() {
			return fmt.Errorf("%w: calibration bin %d: positives exceed its count", ErrPayload, i)
		}
		if sp := b.GetSumPredicted(); !(sp >= 0 && sp <= float64(b.GetCount())) { // also catches NaN
			return fmt.Errorf("%w: calibration bin %d: sum of predicted risks not in [0, count]", ErrPayload, i)
		}
		if b.GetCount() > e.GetCount()-inBins { // inBins <= count: no wrap-around
			return fmt.Errorf("%w: calibration bins exceed the evaluation's count", ErrPayload)
		}
		inBins += b.GetCount()
	}
	return nil
}

// isJobID reports whether s is a job id as the coordinator accepts them:
// 1 to 63 lowercase letters, digits, '.', '_' or '-'.
func isJobID(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Send checks env and writes it to w as one frame.
func (g *Guard) Send(w io.Writer, env *pb.Envelope) error {
	kind, err := check(env)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := protocol.WriteFrame(&buf, env); err != nil {
		return err
	}
	rec := Record{Kind: kind}
	if u := env.GetUpdateUpload(); u != nil {
		rec.Job, rec.Round = u.GetJobId(), u.GetRound()
	}
	if m := env.GetSecaggMessage(); m != nil {
		rec.Job, rec.Round = m.GetJobId(), m.GetRound()
	}
	if e := env.GetEvalUpload(); e != nil {
		rec.Job, rec.Round = e.GetJobId(), e.GetRound()
	}
	return g.write(w, buf.Bytes(), rec)
}

// SendTensor writes a blob's raw bytes after its header. The bytes must be
// packed little-endian float32 values, all finite, matching ref's size and
// digest.
func (g *Guard) SendTensor(w io.Writer, ref *pb.BlobRef, data []byte, job string, round uint64) error {
	return g.SendTensorFrom(w, ref, data, 0, job, round)
}

// SendTensorFrom checks the whole tensor as SendTensor does, then writes
// only its bytes from offset on: the rest of an interrupted upload.
func (g *Guard) SendTensorFrom(w io.Writer, ref *pb.BlobRef, data []byte, offset uint64, job string, round uint64) error {
	if offset > uint64(len(data)) {
		return fmt.Errorf("%w: offset %d past a tensor of %d bytes", ErrPayload, offset, len(data))
	}
	if ref.GetEncoding() != pb.Encoding_ENCODING_F32LE || uint64(len(data)) != ref.GetSize() || len(data)%4 != 0 {
		return fmt.Errorf("%w: tensor of %d bytes, header says %d", ErrPayload, len(data), ref.GetSize())
	}
	for i := 0; i < len(data); i += 4 {
		x := math.Float32frombits(binary.LittleEndian.Uint32(data[i:]))
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("%w: tensor element %d is not finite", ErrPayload, i/4)
		}
	}
	if protocol.Digest(data) != ref.GetSha256() {
		return fmt.Errorf("%w: tensor digest", ErrPayload)
	}
	return g.write(w, data[offset:], Record{Kind: KindUpdateBody, Job: job, Round: round})
}

func (g *Guard) write(w io.Writer, b []byte, rec Record) error {
	if g.cfg.Tap != nil {
		g.cfg.Tap(b)
	}
	n, err := w.Write(b)
	g.bytes.Add(int64(n))
	rec.Time = g.now().UTC()
	rec.Bytes = n
	rec.SHA256 = protocol.Digest(b[:n])
	if lerr := g.record(rec); lerr != nil && err == nil {
		err = lerr
	}
	return err
}

func (g *Guard) record(rec Record) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.log == nil {
		return nil
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = g.log.Write(append(line, '\n'))
	return err
}
