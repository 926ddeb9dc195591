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
// I/O error, a Sink error or a cancelled ctx. st may be nil.
func ReadNDJSON(ctx context.Context, r io.Reader, sink Sink, st *Stats) error {
	return readNDJSON(ctx, r, sink, st, MaxLineSize)
}

func readNDJSON(ctx context.Context, r io.Reader, sink Sink, st *Stats, maxLine int) error {
	if sink == nil {
		return ErrNilSink
	}
	if st == nil {
		st = NewStats()
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for lineNo := 1; ; lineNo++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		line, oversized, rerr := readLine(br, buf[:0], maxLine)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("read line %d: %w", lineNo, rerr)
		}
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		switch {
		case oversized:
			st.init()
			st.Rejected["oversized"]++
		case len(bytes.TrimSpace(line)) > 0:
			if err := handle(line, "", sink, st); err != nil {
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

// handle parses one resource, counts the outcome and sends the records to
// sink. It returns only sink errors.
func handle(b []byte, fallbackID string, sink Sink, st *Stats) error {
	typ, v, err := parse(b, fallbackID)
	st.count(typ, err)
	if err != nil {
		return nil
	}
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
		return fmt.Errorf("sink: %w", err)
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
// nil.
func ReadBundle(ctx context.Context, r io.Reader, sink Sink, st *Stats) error {
	return readBundle(ctx, r, sink, st, MaxBundleSize)
}

func readBundle(ctx context.Context, r io.Reader, sink Sink, st *Stats, max int64) error {
	if sink == nil {
		return ErrNilSink
	}
	if st == nil {
		st = NewStats()
	}
	st.init()
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return fmt.Errorf("read bundle: %w", err)
	}
	if int64(len(data)) > max {
		st.Rejected["oversized"]++
		return nil
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		st.Rejected["malformed-json"]++
		return nil
	}
	var head rawHead
	if err := unmarshal(trimmed, &head); err != nil {
		st.count("", err)
		return nil
	}
	if head.ResourceType != "Bundle" {
		if err := handle(trimmed, "", sink, st); err != nil {
			return fmt.Errorf("resource: %w", err)
		}
		return nil
	}
	var bundle struct {
		Entry []json.RawMessage `json:"entry"`
	}
	if err := unmarshal(trimmed, &bundle); err != nil {
		st.count("", err)
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
			st.count("", err)
			continue
		}
		res := bytes.TrimSpace(e.Resource)
		if len(res) == 0 || bytes.Equal(res, []byte("null")) {
			st.Skipped["entry-without-resource"]++
			continue
		}
		fallback, _ := strings.CutPrefix(e.FullURL, "urn:uuid:")
		if fallback == e.FullURL {
			fallback = ""
		}
		if err := handle(res, fallback, sink, st); err != nil {
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
// with it.
func ReadDir(ctx context.Context, dir string, sink Sink) (*Stats, error) {
	st := NewStats()
	if sink == nil {
		return st, ErrNilSink
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return st, fmt.Errorf("read dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() || fileKind(e.Name()) == "" {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for i, name := range names {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := readFile(ctx, filepath.Join(dir, name), fileKind(name), sink, st); err != nil {
			return st, fmt.Errorf("file %d of %d: %w", i+1, len(names), err)
		}
	}
	return st, nil
}

// fileKind classifies a file name: "ndjson", "ndjson.gz", "json" or "".
func fileKind(name string) string {
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

func readFile(ctx context.Context, path, kind string, sink Sink, st *Stats) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open: %w", stripPath(err))
	}
	defer f.Close()
	r := pathlessReader{f}
	switch kind {
	case "json":
		return ReadBundle(ctx, r, sink, st)
	case "ndjson":
		return ReadNDJSON(ctx, r, sink, st)
	default:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		if err := ReadNDJSON(ctx, zr, sink, st); err != nil {
			return err
		}
		return zr.Close()
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
