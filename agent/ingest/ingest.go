package ingest

import (
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cohort-fl/cohort/clock"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// Sentinel errors.
var (
	// ErrInvalidConfig: the Config fails validation.
	ErrInvalidConfig = errors.New("invalid ingest config")
	// ErrNilSink: New was called without a Sink.
	ErrNilSink = errors.New("nil sink")
	// ErrRunning: Run was called while the Watcher is already running.
	ErrRunning = errors.New("watcher already running")
	// ErrClosed: Run was called after Close.
	ErrClosed = errors.New("watcher closed")
)

// Names of the directories created in Config.Dir.
const (
	// DoneDir holds files that were ingested.
	DoneDir = "done"
	// QuarantineDir holds files that could not be read, and RecordsDir.
	QuarantineDir = "quarantine"
	// RecordsDir, inside QuarantineDir, holds single rejected resources.
	RecordsDir = "records"
	// ReadySuffix marks a file as complete: "<name>" + ReadySuffix.
	ReadySuffix = ".ready"
	// ReasonSuffix names the sidecar of a quarantined file.
	ReasonSuffix = ".reason"
)

// DefaultPollInterval is the default Config.PollInterval.
const DefaultPollInterval = 5 * time.Second

// maxNameClashes bounds the numbered names tried when a target exists.
const maxNameClashes = 10000

// Clock is the time source (see package clock); tests inject a fake.
type Clock = clock.Clock

// SystemClock returns the Clock backed by the time package; it is what a
// nil Config.Clock means.
func SystemClock() Clock { return clock.System() }

// Config configures a Watcher.
type Config struct {
	// Dir is the incoming directory (created, mode 0700, if missing). Its
	// subdirectories done/ and quarantine/ are created by Run. Required.
	Dir string
	// PollInterval is the time between two scans of Dir. Zero means
	// DefaultPollInterval (5s); negative is invalid.
	PollInterval time.Duration
	// Clock is the time source; nil means SystemClock().
	Clock Clock
	// Logger receives operational messages, never PHI; nil discards them.
	Logger *slog.Logger
	// ReadOptions are the fhir reader's options. Start from
	// fhir.DefaultOptions (DefaultConfig does). A nil Now is replaced by
	// Clock.Now, so times in the future are rejected. The Watcher writes
	// rejected resources to quarantine/records itself; a Quarantine
	// callback given here is called after that.
	ReadOptions fhir.Options
}

// DefaultConfig returns a Config with every default filled in except Dir.
func DefaultConfig() Config {
	return Config{
		PollInterval: DefaultPollInterval,
		ReadOptions:  fhir.DefaultOptions(),
	}
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: Dir is required", ErrInvalidConfig)
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("%w: negative PollInterval", ErrInvalidConfig)
	}
	if err := c.ReadOptions.Validate(); err != nil {
		return fmt.Errorf("%w: ReadOptions: %w", ErrInvalidConfig, err)
	}
	return nil
}

// Stats are a Watcher's cumulative counters.
type Stats struct {
	// Read adds up the fhir.Stats of every file read to the end (done)
	// or to the point where it failed (quarantined).
	Read fhir.Stats
	// FilesDone counts files ingested and moved to done/.
	FilesDone int
	// FilesQuarantined counts files moved to quarantine/.
	FilesQuarantined int
	// RecordsQuarantined counts rejected resources written to
	// quarantine/records/.
	RecordsQuarantined int
	// FilesRetried counts reads abandoned because the Sink failed; the
	// file stays and is read again later.
	FilesRetried int
	// Errors counts file-system failures: a file that could not be moved
	// or a record that could not be written to quarantine.
	Errors int
}

// clone returns a deep copy of s.
func (s Stats) clone() Stats {
	read := fhir.NewStats()
	maps.Copy(read.Resources, s.Read.Resources)
	maps.Copy(read.Skipped, s.Read.Skipped)
	maps.Copy(read.Rejected, s.Read.Rejected)
	s.Read = *read
	return s
}

// fileState is what a poll saw of one file.
type fileState struct {
	size int64
	mod  time.Time
}

// Watcher ingests the files dropped in a directory. Create it with New,
// start it with Run, stop it with Close (or by cancelling Run's context).
type Watcher struct {
	cfg   Config
	sink  fhir.Sink
	clock Clock
	log   *slog.Logger
	opts  fhir.Options

	// Owned by the Run goroutine.
	seen  map[string]fileState // files seen at the last poll, not yet taken
	stuck map[string]fileState // files read but not movable: skipped until they change
	seq   int                  // files taken so far (the id in log lines)

	closeOnce sync.Once
	closeC    chan struct{} // closed by Close
	doneC     chan struct{} // closed when Run returns

	// mu guards the fields below.
	mu      sync.Mutex
	started bool
	closed  bool
	stats   Stats
}

// New checks cfg and returns a Watcher that sends records to sink. It
// starts nothing and touches no file.
func New(cfg Config, sink fhir.Sink) (*Watcher, error) {
	if sink == nil {
		return nil, ErrNilSink
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		cfg:    cfg,
		sink:   sink,
		clock:  cfg.Clock,
		log:    log.With("component", "ingest"),
		seen:   map[string]fileState{},
		stuck:  map[string]fileState{},
		closeC: make(chan struct{}),
		doneC:  make(chan struct{}),
		stats:  Stats{Read: *fhir.NewStats()},
	}
	w.opts = cfg.ReadOptions
	if w.opts.Now == nil {
		w.opts.Now = cfg.Clock.Now
	}
	return w, nil
}

// Run creates done/ and quarantine/ in Dir, then polls Dir every
// PollInterval and ingests each complete file, until ctx ends or Close is
// called. It returns nil after such a stop, or an error when the
// directories cannot be created. Run may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		return ErrClosed
	case w.started:
		w.mu.Unlock()
		return ErrRunning
	}
	w.started = true
	w.mu.Unlock()
	defer close(w.doneC)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-w.closeC:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() { cancel(); <-watchDone }()

	for _, d := range []string{w.cfg.Dir, w.path(DoneDir), w.path(QuarantineDir), w.path(QuarantineDir, RecordsDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create directories: %w", cause(err))
		}
	}
	w.log.Info("watching the drop directory", "poll_interval", w.cfg.PollInterval)
	for {
		w.poll(ctx)
		if err := w.clock.Sleep(ctx, w.cfg.PollInterval); err != nil || ctx.Err() != nil {
			st := w.Stats()
			w.log.Info("drop directory watcher stopped", "files_done", st.FilesDone, "files_quarantined", st.FilesQuarantined, "records_quarantined", st.RecordsQuarantined)
			return nil
		}
	}
}

// Close stops Run and waits for it to return. It is idempotent; calling it
// before Run makes Run return ErrClosed.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		close(w.closeC)
	})
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if started {
		<-w.doneC
	}
	return nil
}

// Stats returns a snapshot of the cumulative counters. It is safe to call
// while Run runs.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats.clone()
}

func (w *Watcher) path(elem ...string) string {
	return filepath.Join(append([]string{w.cfg.Dir}, elem...)...)
}

// poll scans Dir once and processes the files that are complete, in name
// order.
func (w *Watcher) poll(ctx context.Context) {
	entries, err := os.ReadDir(w.cfg.Dir)
	if err != nil {
		w.log.Warn("cannot list the drop directory", "err", cause(err))
		return
	}
	present := make(map[string]bool, len(entries))
	for _, e := range entries {
		present[e.Name()] = true
	}
	next := map[string]fileState{}
	for _, e := range entries { // os.ReadDir sorts by name
		if ctx.Err() != nil {
			return
		}
		name := e.Name()
		if strings.HasPrefix(name, ".") || !e.Type().IsRegular() || fhir.FileKind(name) == "" {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // gone since the listing
		}
		st := fileState{size: info.Size(), mod: info.ModTime()}
		if s, ok := w.stuck[name]; ok {
			if s == st {
				continue
			}
			delete(w.stuck, name)
		}
		ready := present[name+ReadySuffix]
		prev, seenBefore := w.seen[name]
		if !ready && (!seenBefore || prev != st || st.size == 0) {
			next[name] = st // not known complete yet
			continue
		}
		if w.process(ctx, name, st, ready) {
			next[name] = st // retry at the next poll
		}
	}
	if ctx.Err() == nil {
		w.seen = next
	}
}

// process reads one complete file and moves it. It reports whether the
// file should be tried again later.
func (w *Watcher) process(ctx context.Context, name string, fst fileState, marker bool) (retry bool) {
	w.seq++
	seq := w.seq
	kind := fhir.FileKind(name)
	log := w.log.With("file", seq, "kind", kind, "bytes", fst.size)
	src := w.path(name)

	st := fhir.NewStats()
	opts := w.opts
	userQ := opts.Quarantine
	opts.Quarantine = func(reason string, raw []byte) {
		w.quarantineRecord(log, reason, raw)
		if userQ != nil {
			userQ(reason, raw)
		}
	}
	err := fhir.ReadFileWith(ctx, src, w.sink, st, opts)
	switch {
	case err != nil && ctx.Err() != nil:
		return true // stopping; the file is read again at the next start
	case errors.Is(err, fhir.ErrSink):
		log.Warn("the store refused records; the file will be read again", "err", err)
		w.mu.Lock()
		w.stats.FilesRetried++
		w.mu.Unlock()
		return true
	case errors.Is(err, fs.ErrNotExist):
		log.Warn("file vanished before it was read")
		return false
	}

	w.mu.Lock()
	w.stats.Read.Add(st)
	w.mu.Unlock()
	if err != nil {
		class := unreadableClass(err)
		log.Warn("file cannot be read; moving it to quarantine", "reason", class, "err", err)
		moved, merr := moveNoClobber(src, w.path(QuarantineDir), name)
		if merr != nil {
			w.moveFailed(log, name, fst, merr)
			return false
		}
		dst := w.path(QuarantineDir, moved)
		if err := os.Chmod(dst, 0o600); err != nil {
			log.Warn("cannot restrict a quarantined file's mode", "err", cause(err))
		}
		body := fmt.Sprintf("reason: %s\nerror: %v\ntime: %s\n", class, err, w.clock.Now().UTC().Format(time.RFC3339))
		if err := writeExclusive(dst+ReasonSuffix, []byte(body)); err != nil {
			log.Warn("cannot write the reason file", "err", cause(err))
			w.countError()
		}
		w.mu.Lock()
		w.stats.FilesQuarantined++
		w.mu.Unlock()
		w.removeMarker(log, name, marker)
		return false
	}
	if _, err := moveNoClobber(src, w.path(DoneDir), name); err != nil {
		w.moveFailed(log, name, fst, err)
		return false
	}
	w.mu.Lock()
	w.stats.FilesDone++
	w.mu.Unlock()
	w.removeMarker(log, name, marker)
	log.Info("file ingested", "resources", sum(st.Resources), "skipped", sum(st.Skipped), "rejected", st.TotalRejected())
	return false
}

// moveFailed records a file that was read but could not be moved, so that
// it is not read again until it changes.
func (w *Watcher) moveFailed(log *slog.Logger, name string, fst fileState, err error) {
	log.Error("cannot move a file out of the drop directory; it is skipped until it changes", "err", cause(err))
	w.stuck[name] = fst
	w.countError()
}

func (w *Watcher) removeMarker(log *slog.Logger, name string, marker bool) {
	if !marker {
		return
	}
	if err := os.Remove(w.path(name + ReadySuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("cannot remove a ready marker", "err", cause(err))
	}
}

func (w *Watcher) countError() {
	w.mu.Lock()
	w.stats.Errors++
	w.mu.Unlock()
}

// quarantineRecord writes one rejected resource to quarantine/records as
// <time>-<sha256 prefix>-<reason>.json, mode 0600. The same bytes rejected
// for the same reason within one second share a name and are written once.
func (w *Watcher) quarantineRecord(log *slog.Logger, reason string, raw []byte) {
	if len(raw) == 0 {
		return // an oversized line: never held, nothing to keep
	}
	sum := sha256.Sum256(raw)
	name := w.clock.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(sum[:8]) + "-" + safeReason(reason) + ".json"
	err := writeExclusive(w.path(QuarantineDir, RecordsDir, name), raw)
	switch {
	case errors.Is(err, fs.ErrExist):
	case err != nil:
		log.Warn("cannot write a rejected record to quarantine", "reason", safeReason(reason), "err", cause(err))
		w.countError()
		return
	}
	w.mu.Lock()
	w.stats.RecordsQuarantined++
	w.mu.Unlock()
}

// safeReason keeps a reason usable in a file name ([a-z0-9-]); reasons are
// fixed Stats keys, so this never changes a real one.
func safeReason(r string) string {
	ok := r != ""
	for _, c := range r {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			ok = false
			break
		}
	}
	if !ok {
		return "rejected"
	}
	return r
}

// writeExclusive creates path with mode 0600 (failing with fs.ErrExist if
// it exists) and writes b to it.
func writeExclusive(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// moveNoClobber renames src into dir under name, or under name with a
// number before its extension when dir already holds name. It returns the
// name used.
func moveNoClobber(src, dir, name string) (string, error) {
	base, ext := splitExt(name)
	for i := 0; i < maxNameClashes; i++ {
		cand := name
		if i > 0 {
			cand = base + "." + strconv.Itoa(i) + ext
		}
		dst := filepath.Join(dir, cand)
		if _, err := os.Lstat(dst); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if _, err := os.Lstat(dst + ReasonSuffix); err == nil {
			continue // a stale sidecar would describe another file
		}
		return cand, os.Rename(src, dst)
	}
	return "", fmt.Errorf("more than %d files of one name", maxNameClashes)
}

// splitExt splits a data file name before its kind's extension:
// "a.ndjson.gz" is "a", ".ndjson.gz".
func splitExt(name string) (base, ext string) {
	kind := fhir.FileKind(name)
	if kind == "" || len(name) <= len(kind)+1 {
		return name, ""
	}
	i := len(name) - len(kind) - 1
	return name[:i], name[i:]
}

// unreadableClass names why a file could not be read.
func unreadableClass(err error) string {
	var ce flate.CorruptInputError
	switch {
	case errors.Is(err, gzip.ErrHeader):
		return "not-gzip"
	case errors.Is(err, gzip.ErrChecksum), errors.As(err, &ce), errors.Is(err, io.ErrUnexpectedEOF):
		return "corrupt-gzip"
	case errors.Is(err, fhir.ErrRead):
		return "read-error"
	}
	return "unreadable"
}

// cause strips the paths from file-system errors: they name files, and
// file names can name patients.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
