package fhir

import (
	"fmt"
	"hash/maphash"
	"strings"
	"time"
)

// Defaults of Options.
const (
	// DefaultMaxFutureSkew is the default Options.MaxFutureSkew.
	DefaultMaxFutureSkew = 5 * time.Minute
	// DefaultDedupWindow is the default Options.DedupWindow.
	DefaultDedupWindow = 1 << 20
	// dateOnlySlack is added to the future limit for a date without a time
	// of day: such a date is read as UTC midnight, and a local date can be
	// up to 14 hours ahead of UTC (UTC+14).
	dateOnlySlack = 14 * time.Hour
)

// Options configures the checks of the ...With readers. Start from
// DefaultOptions: the zero value disables the plausibility check.
type Options struct {
	// Now is the clock for the future-time check: a resource whose
	// effective time (Observation), onset (Condition) or period start
	// (Encounter) is later than Now()+MaxFutureSkew is rejected as
	// "future-time". nil disables the check (DefaultOptions leaves it nil,
	// so the readers without options never reject on time).
	Now func() time.Time
	// MaxFutureSkew is how far past Now a time may lie, for clocks that
	// disagree a little; a date without a time of day gets 14 hours more
	// (it is read as UTC midnight of a local date). Zero means
	// DefaultMaxFutureSkew (5m); negative is invalid.
	MaxFutureSkew time.Duration
	// Quarantine, if set, is called for every rejected resource (every
	// resource counted in Stats.Rejected) with its reason, the Stats key,
	// and its raw bytes. raw is nil for an oversized line or document,
	// which is never held in memory, and is valid only during the call.
	// Quarantine is called from the reading goroutine and holds PHI: it
	// must not log raw or send it anywhere but the gateway's own disk.
	Quarantine func(reason string, raw []byte)
	// Plausibility rejects vital signs outside physiological ranges as
	// "impossible-value" (see CheckPlausible). DefaultOptions sets it.
	Plausibility bool
	// DedupWindow bounds the set of resource versions remembered to
	// detect duplicates within one read (a resource whose type, id and
	// meta version, or type, id and bytes when it has no meta version,
	// were already seen is counted in Stats.Skipped as "duplicate"). At
	// most DedupWindow 8-byte hashes are kept; the oldest half is dropped
	// when it fills. Zero means DefaultDedupWindow; negative disables
	// duplicate detection.
	DedupWindow int
}

// DefaultOptions returns the options the readers without options use:
// plausibility checks on, a 5 minute future skew, duplicate detection on,
// no clock (no future-time check) and no quarantine callback.
func DefaultOptions() Options {
	return Options{
		MaxFutureSkew: DefaultMaxFutureSkew,
		Plausibility:  true,
		DedupWindow:   DefaultDedupWindow,
	}
}

// Validate reports whether o is usable.
func (o Options) Validate() error {
	if o.MaxFutureSkew < 0 {
		return fmt.Errorf("%w: negative MaxFutureSkew", ErrInvalidOptions)
	}
	return nil
}

// withDefaults fills in zero fields.
func (o Options) withDefaults() Options {
	if o.MaxFutureSkew == 0 {
		o.MaxFutureSkew = DefaultMaxFutureSkew
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	return o
}

// checker holds the per-resource checks parse applies.
type checker struct {
	now          func() time.Time
	skew         time.Duration
	plausibility bool
}

// notFuture returns ErrFutureTime when t, parsed from s, lies beyond the
// clock's now plus the allowed skew.
func (c *checker) notFuture(t time.Time, s string) error {
	if c == nil || c.now == nil {
		return nil
	}
	limit := c.now().Add(c.skew)
	if len(strings.TrimSpace(s)) <= len("2006-01-02") {
		limit = limit.Add(dateOnlySlack)
	}
	if t.After(limit) {
		return ErrFutureTime
	}
	return nil
}

// reader is one read: the sink, the Stats, the options and the duplicate
// set, shared by every file of a ReadDirWith.
type reader struct {
	sink  Sink
	st    *Stats
	opts  Options
	check checker
	dedup dedupSet
}

func newReader(sink Sink, st *Stats, opts Options) (*reader, error) {
	if sink == nil {
		return nil, ErrNilSink
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if st == nil {
		st = NewStats()
	}
	st.init()
	return &reader{
		sink:  sink,
		st:    st,
		opts:  opts,
		check: checker{now: opts.Now, skew: opts.MaxFutureSkew, plausibility: opts.Plausibility},
		dedup: newDedupSet(opts.DedupWindow),
	}, nil
}

// outcome counts the outcome of one resource (or broken line, entry or
// document) and quarantines it when it is rejected.
func (rd *reader) outcome(typ string, err error, raw []byte) {
	rd.st.count(typ, err)
	if err == nil || rd.opts.Quarantine == nil {
		return
	}
	reason, skipped := Reason(err)
	if skipped {
		return
	}
	if reason == "" {
		reason = "malformed-json"
	}
	rd.opts.Quarantine(reason, raw)
}

// dedupSet remembers hashes of recently seen resource versions in two
// generations: when the current one holds half the window, it becomes the
// previous one and the old previous one is dropped.
type dedupSet struct {
	seed      maphash.Seed
	half      int
	cur, prev map[uint64]struct{}
}

func newDedupSet(window int) dedupSet {
	if window <= 0 {
		return dedupSet{}
	}
	half := max(window/2, 1)
	return dedupSet{seed: maphash.MakeSeed(), half: half, cur: map[uint64]struct{}{}}
}

// seen records the key of one parsed resource and reports whether it was
// already there.
func (d *dedupSet) seen(typ string, v any, raw []byte) bool {
	if d.half == 0 {
		return false
	}
	var id string
	var ver Version
	switch v := v.(type) {
	case Patient:
		id, ver = v.ID, v.Version
	case Condition:
		id, ver = v.ID, v.Version
	case Encounter:
		id, ver = v.ID, v.Version
	case []Observation:
		if len(v) == 0 {
			return false
		}
		id, _, _ = strings.Cut(v[0].ID, "#")
		ver = v[0].Version
	default:
		return false
	}
	var h maphash.Hash
	h.SetSeed(d.seed)
	h.WriteString(typ)
	h.WriteByte(0)
	h.WriteString(id)
	h.WriteByte(0)
	if ver.ID == "" && ver.Updated.IsZero() {
		h.WriteByte('b')
		h.Write(raw)
	} else {
		h.WriteByte('v')
		h.WriteString(ver.ID)
		h.WriteByte(0)
		b, _ := ver.Updated.MarshalBinary()
		h.Write(b)
	}
	k := h.Sum64()
	if _, ok := d.cur[k]; ok {
		return true
	}
	if _, ok := d.prev[k]; ok {
		return true
	}
	if len(d.cur) >= d.half {
		d.prev, d.cur = d.cur, make(map[uint64]struct{}, d.half)
	}
	d.cur[k] = struct{}{}
	return false
}
