package bulk

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// maxManifest bounds the size of a completion manifest.
const maxManifest = 16 << 20

// Manifest is a Bulk Data completion manifest.
type Manifest struct {
	// TransactionTime is the server's time when the export ran; no
	// resource changed after it is in the output.
	TransactionTime time.Time
	// Request is the kick-off URL the manifest answers.
	Request string
	// RequiresAccessToken says whether downloading the files needs the
	// access token. A manifest without the field is read as true.
	RequiresAccessToken bool
	// Output are the NDJSON files of resources.
	Output []File
	// Error are the NDJSON files of OperationOutcome resources describing
	// what the server could not export.
	Error []File
	// Deleted are the files listing resources deleted since _since.
	Deleted []File
}

// File is one entry of a manifest's output, error or deleted array.
type File struct {
	// Type is the resource type in the file.
	Type string
	// URL is the absolute URL of the file.
	URL string
	// Count is the number of resources in the file, or -1 when the
	// manifest does not say.
	Count int
}

// rawManifest is a manifest as JSON.
type rawManifest struct {
	TransactionTime     string    `json:"transactionTime"`
	Request             string    `json:"request"`
	RequiresAccessToken *bool     `json:"requiresAccessToken"`
	Output              []rawFile `json:"output"`
	Error               []rawFile `json:"error"`
	Deleted             []rawFile `json:"deleted"`
}

type rawFile struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count *int64 `json:"count"`
}

// parseManifest reads and checks the manifest in resp. File URLs are
// resolved against the status URL; when the files need the token they
// must be on the FHIR server's origin.
func parseManifest(resp *http.Response, c *Client) (*Manifest, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("status: %w: "+format, append([]any{ErrManifest}, a...)...)
	}
	var raw rawManifest
	if err := readJSONLimit(resp.Body, &raw, maxManifest); err != nil {
		return nil, bad("%w", err)
	}
	tt, err := time.Parse(time.RFC3339Nano, raw.TransactionTime)
	if err != nil {
		return nil, bad("transactionTime is not a FHIR instant")
	}
	m := &Manifest{TransactionTime: tt, Request: raw.Request, RequiresAccessToken: true}
	if raw.RequiresAccessToken != nil {
		m.RequiresAccessToken = *raw.RequiresAccessToken
	}
	withToken := m.RequiresAccessToken && c.auth
	files := func(name string, in []rawFile) ([]File, error) {
		out := make([]File, 0, len(in))
		for i, f := range in {
			if !validTypeName(f.Type) {
				return nil, bad("%s entry %d: type is not a resource type name", name, i+1)
			}
			u, err := resp.Request.URL.Parse(f.URL)
			if f.URL == "" || err != nil {
				return nil, bad("%s entry %d: url missing or unparsable", name, i+1)
			}
			if err := c.checkServerURL(u, withToken); err != nil {
				return nil, bad("%s entry %d: %w", name, i+1, err)
			}
			count := -1
			if f.Count != nil {
				if *f.Count < 0 || *f.Count > 1<<40 {
					return nil, bad("%s entry %d: count out of range", name, i+1)
				}
				count = int(*f.Count)
			}
			out = append(out, File{Type: f.Type, URL: u.String(), Count: count})
		}
		return out, nil
	}
	if m.Output, err = files("output", raw.Output); err != nil {
		return nil, err
	}
	if m.Error, err = files("error", raw.Error); err != nil {
		return nil, err
	}
	if m.Deleted, err = files("deleted", raw.Deleted); err != nil {
		return nil, err
	}
	return m, nil
}

// Download streams every output file of m through fhir.ReadNDJSON into
// sink and counts the resources in its error files. It stops at the first
// file that fails and returns what was done so far with the error.
func (c *Client) Download(ctx context.Context, m *Manifest, sink fhir.Sink) (*Result, error) {
	if sink == nil {
		return nil, fmt.Errorf("download: %w", fhir.ErrNilSink)
	}
	if m == nil {
		return nil, fmt.Errorf("download: %w: nil manifest", ErrManifest)
	}
	res := &Result{
		TransactionTime: m.TransactionTime,
		Request:         m.Request,
		Counts:          map[string]int{},
		Received:        map[string]int{},
		Deleted:         m.Deleted,
		Stats:           fhir.NewStats(),
	}
	for _, f := range m.Output {
		if f.Count >= 0 {
			res.Counts[f.Type] += f.Count
		}
	}
	for i, f := range m.Output {
		st := fhir.NewStats()
		err := c.fetch(ctx, f.URL, m.RequiresAccessToken, func(r io.Reader) error {
			return fhir.ReadNDJSON(ctx, r, sink, st)
		})
		res.Stats.Add(st)
		n := outcomes(st)
		res.Received[f.Type] += n
		if err != nil {
			return res, fmt.Errorf("download: %w: output file %d of %d (%s): %w", ErrDownload, i+1, len(m.Output), f.Type, err)
		}
		res.Files++
		c.log.Info("bulk: output file read", "file", i+1, "of", len(m.Output), "type", f.Type,
			"resources", n, "ingested", st.Resources[f.Type], "rejected", st.TotalRejected())
		if f.Count >= 0 && f.Count != n {
			c.log.Warn("bulk: output file count differs from the manifest", "file", i+1, "type", f.Type,
				"manifest", f.Count, "read", n)
		}
	}
	for i, f := range m.Error {
		var n int
		err := c.fetch(ctx, f.URL, m.RequiresAccessToken, func(r io.Reader) error {
			var err error
			n, err = countLines(ctx, r)
			return err
		})
		res.ErrorResources += n
		if err != nil {
			return res, fmt.Errorf("download: %w: error file %d of %d: %w", ErrDownload, i+1, len(m.Error), err)
		}
		res.ErrorFiles++
		c.log.Warn("bulk: server reported export errors", "file", i+1, "type", f.Type, "resources", n)
	}
	if len(m.Deleted) > 0 {
		c.log.Info("bulk: manifest lists deleted resources; not processed", "files", len(m.Deleted))
	}
	return res, nil
}

// fetch GETs one file and hands its body, decompressed if the server
// gzip-encoded it, to consume.
func (c *Client) fetch(ctx context.Context, fileURL string, withToken bool, consume func(io.Reader) error) error {
	resp, err := c.call(ctx, request{
		op: "download", method: http.MethodGet, url: fileURL,
		accept: "application/fhir+ndjson", header: http.Header{"Accept-Encoding": {"gzip"}},
		auth: withToken, idempotent: true,
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp, "download", ErrDownload)
	}
	var body io.Reader = resp.Body
	switch enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(resp.Body)
		if errors.Is(err, io.EOF) {
			return nil // empty body
		}
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		body = zr
	default:
		return fmt.Errorf("%w: content-encoding %q", ErrProtocol, printable(enc, 32))
	}
	return consume(body)
}

// outcomes is the number of resources a Stats accounts for: one outcome
// per non-blank line.
func outcomes(st *fhir.Stats) int {
	n := 0
	for _, m := range []map[string]int{st.Resources, st.Skipped, st.Rejected} {
		for _, v := range m {
			n += v
		}
	}
	return n
}

// countLines counts the non-blank lines of r without holding a whole line
// in memory.
func countLines(ctx context.Context, r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	blank := true
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		chunk, err := br.ReadSlice('\n')
		for _, b := range chunk {
			switch b {
			case '\n':
				if !blank {
					n++
				}
				blank = true
			case ' ', '\t', '\r':
			default:
				blank = false
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if !blank {
				n++
			}
			return n, nil
		default:
			return n, fmt.Errorf("read: %w", err)
		}
	}
}
