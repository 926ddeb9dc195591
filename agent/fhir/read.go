package fhir

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ReadNDJSON reads newline-delimited FHIR resources (the Bulk Data export
// format) and hands each usable record to sink. A bad line is counted in
// st.Rejected and skipped; lines longer than MaxLineSize are rejected as
// "oversized" without being buffered whole. It returns an error only for an
// I/O error, a Sink error or a cancelled ctx. st may be nil. It is
// ReadNDJSONWith with DefaultOptions.
func ReadNDJSON(ctx context.Context, r io.Reader, sink Sink, st *Stats) error {
	return ReadNDJSONWith(ctx, r, sink, st, DefaultOptions())
}

// ReadNDJSONWith is ReadNDJSON with options: unit normalization and
// plausibility, future-time and duplicate checks, and a quarantine callback
// for rejected lines. Errors wrap ErrRead for an I/O error and ErrSink for a
// Sink error.
func ReadNDJSONWith(ctx context.Context, r io.Reader, sink Sink, st *Stats, opts Options) error {
	rd, err := newReader(sink, st, opts)
	if err != nil {
		return err
	}
	return rd.readNDJSON(ctx, r, MaxLineSize)
}

func (rd *reader) readNDJSON(ctx context.Context, r io.Reader, maxLine int) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for lineNo := 1; ; lineNo++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, oversized, rerr := readLine(br, buf[:0], maxLine)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("%w line %d: %w", ErrRead, lineNo, rerr)
		}
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		switch {
		case oversized:
			rd.outcome("", ErrOversized, nil)
		case len(bytes.TrimSpace(line)) > 0:
			if err := rd.handle(line, ""); err != nil {
				return fmt.Errorf("line %d: %w", lineNo, err)
			}
		}
		if rerr != nil { // io.EOF
			return nil
		}
		// Keep a modest buffer for the next line; let a huge one go.
		if cap(line) <= 1<<20 {
			buf = line
		} else {
			buf = nil
		}
	}
}

// readLine reads one line into buf (without its line ending). When the
// line is longer than max it stops storing bytes, reads on to the end of the
// line and reports oversized. err is io.EOF after the last line.
func readLine(br *bufio.Reader, buf []byte, max int) (line []byte, oversized bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		if !oversized {
			if len(buf)+len(frag) > max+2 { // room for "\r\n"
				oversized = true
				buf = buf[:0]
			} else {
				buf = append(buf, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		buf = bytes.TrimSuffix(buf, []byte("\r"))
		if !oversized && len(buf) > max {
			oversized = true
		}
		if oversized {
			buf = buf[:0]
		}
		return buf, oversized, err
	}
}

// handle parses one resource, counts the outcome, quarantines it when it
// is rejected and sends the records to the sink. It returns only sink
// errors.
func (rd *reader) handle(b []byte, fallbackID string) error {
	b = bytes.TrimSpace(b)
	typ, v, err := parse(b, fallbackID, &rd.check)
	if err == nil && rd.dedup.seen(typ, v, b) {
		err = ErrDuplicate
	}
	rd.outcome(typ, err, b)
	if err != nil {
		return nil
	}
	sink := rd.sink
	switch v := v.(type) {
	case Patient:
		err = sink.Patient(v)
	case []Observation:
		for _, o := range v {
			if err = sink.Observation(o); err != nil {
				break
			}
		}
	case Condition:
		err = sink.Condition(v)
	case Encounter:
		err = sink.Encounter(v)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSink, err)
	}
	return nil
}

// ReadBundle reads one JSON document: a Bundle of any type (transaction,
// batch, collection, searchset, ...) or a single resource. Each entry is
// parsed like one NDJSON line; an entry without an id takes the uuid of its
// "urn:uuid:" fullUrl. Broken entries are counted and skipped; a document
// that is not JSON at all counts once as "malformed-json", one larger than
// MaxBundleSize once as "oversized". Nested Bundles are skipped. It returns an
// error only for an I/O error, a Sink error or a cancelled ctx. st may be
// nil. It is ReadBundleWith with DefaultOptions.
func ReadBundle(ctx context.Context, r io.Reader, sink Sink, st *Stats) error {
	return ReadBundleWith(ctx, r, sink, st, DefaultOptions())
}

// ReadBundleWith is ReadBundle with options (see ReadNDJSONWith). A
// document rejected as a whole is quarantined whole.
func ReadBundleWith(ctx context.Context, r io.Reader, sink Sink, st *Stats, opts Options) error {
	rd, err := newReader(sink, st, opts)
	if err != nil {
		return err
	}
	return rd.readBundle(ctx, r, MaxBundleSize)
}

func (rd *reader) readBundle(ctx context.Context, r io.Reader, max int64) error {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return fmt.Errorf("%w bundle: %w", ErrRead, err)
	}
	if int64(len(data)) > max {
		rd.outcome("", ErrOversized, nil)
		return nil
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		rd.outcome("", ErrMalformed, trimmed)
		return nil
	}
	var head rawHead
	if err := unmarshal(trimmed, &head); err != nil {
		rd.outcome("", err, trimmed)
		return nil
	}
	if head.ResourceType != "Bundle" {
		if err := rd.handle(trimmed, ""); err != nil {
			return fmt.Errorf("resource: %w", err)
		}
		return nil
	}
	var bundle struct {
		Entry []json.RawMessage `json:"entry"`
	}
	if err := unmarshal(trimmed, &bundle); err != nil {
		rd.outcome("", err, trimmed)
		return nil
	}
	for i, raw := range bundle.Entry {
		if err := ctx.Err(); err != nil {
			return err
		}
		var e struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		}
		if err := unmarshal(raw, &e); err != nil {
			rd.outcome("", err, raw)
			continue
		}
		res := bytes.TrimSpace(e.Resource)
		if len(res) == 0 || bytes.Equal(res, []byte("null")) {
			rd.st.Skipped["entry-without-resource"]++
			continue
		}
		fallback, _ := strings.CutPrefix(e.FullURL, "urn:uuid:")
		if fallback == e.FullURL {
			fallback = ""
		}
		if err := rd.handle(res, fallback); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}

// ReadDir reads every *.ndjson, *.ndjson.gz (gzip) and *.json (Bundle or
// single resource) file directly in dir, in sorted name order, and returns
// the combined Stats. Other files and subdirectories are ignored. Errors
// name a file by its position in that order, never by its name (export file
// names can contain patient names). On error the Stats so far are returned
// with it. It is ReadDirWith with DefaultOptions.
func ReadDir(ctx context.Context, dir string, sink Sink) (*Stats, error) {
	return ReadDirWith(ctx, dir, sink, DefaultOptions())
}

// ReadDirWith is ReadDir with options (see ReadNDJSONWith). Duplicates are
// detected across all the files of dir: they are one read.
func ReadDirWith(ctx context.Context, dir string, sink Sink, opts Options) (*Stats, error) {
	st := NewStats()
	rd, err := newReader(sink, st, opts)
	if err != nil {
		return st, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return st, fmt.Errorf("read dir: %w", stripPath(err))
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() || FileKind(e.Name()) == "" {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for i, name := range names {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := rd.readFile(ctx, filepath.Join(dir, name), FileKind(name)); err != nil {
			return st, fmt.Errorf("file %d of %d: %w", i+1, len(names), err)
		}
	}
	return st, nil
}

// ReadFileWith reads one file by the kind its name gives (see FileKind)
// into sink, adding to st (which may be nil). Errors never name the file;
// they wrap ErrFileKind for a name of no known kind, ErrRead when the file
// cannot be opened or read or is not valid gzip, and ErrSink for a Sink
// error. Records read before an error have been delivered.
func ReadFileWith(ctx context.Context, path string, sink Sink, st *Stats, opts Options) error {
	kind := FileKind(filepath.Base(path))
	if kind == "" {
		return ErrFileKind
	}
	rd, err := newReader(sink, st, opts)
	if err != nil {
		return err
	}
	return rd.readFile(ctx, path, kind)
}

// FileKind classifies a file name: "ndjson", "ndjson.gz", "json" (case
// insensitive), or "" for a file the readers do not read.
func FileKind(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".ndjson.gz"):
		return "ndjson.gz"
	case strings.HasSuffix(n, ".ndjson"):
		return "ndjson"
	case strings.HasSuffix(n, ".json"):
		return "json"
	}
	return ""
}

func (rd *reader) readFile(ctx context.Context, path, kind string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: open: %w", ErrRead, stripPath(err))
	}
	defer f.Close()
	r := pathlessReader{f}
	switch kind {
	case "json":
		return rd.readBundle(ctx, r, MaxBundleSize)
	case "ndjson":
		return rd.readNDJSON(ctx, r, MaxLineSize)
	default:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("%w: gzip: %w", ErrRead, err)
		}
		if err := rd.readNDJSON(ctx, zr, MaxLineSize); err != nil {
			return err
		}
		if err := zr.Close(); err != nil {
			return fmt.Errorf("%w: gzip: %w", ErrRead, err)
		}
		return nil
	}
}

// pathlessReader strips the file name from read errors: *fs.PathError
// messages carry the path, and export file names can contain patient names.
type pathlessReader struct{ r io.Reader }

func (p pathlessReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	return n, stripPath(err)
}

// stripPath replaces an *fs.PathError by the error it wraps.
func stripPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
