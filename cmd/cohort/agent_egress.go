package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cohort-fl/cohort/agent/egress"
)

// egressBadLinesShown is how many malformed line numbers the summary lists.
const egressBadLinesShown = 20

func runAgentEgress(args []string, now time.Time, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cohort agent egress", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dataDir = fs.String("data-dir", "", "the agent's data `directory` (reads DIR/"+egress.LogFile+")")
		file    = fs.String("file", "", "read this egress log `file` instead (a copy, an archive)")
		asJSON  = fs.Bool("json", false, "print one JSON object per line, as stored, for scripts (the summary goes to stderr)")
		since   = fs.String("since", "", "only records from this `time` on: a duration back from now (90m, 24h, 168h) or an RFC 3339 time or a date (2026-11-28)")
		job     = fs.String("job", "", "only records of this `job` id (update headers and bodies)")
		kind    = fs.String("kind", "", "only records of this `kind`: "+strings.Join(egress.Kinds, ", "))
		strict  = fs.Bool("strict", false, "exit non-zero if any line of the log is malformed")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: cohort agent egress --data-dir DIR [--since T] [--job ID] [--kind K] [--json]

Shows what left this site. The agent records every message and every byte it
sends to the coordinators in DATA_DIR/%s, an append-only log of JSON lines
on the gateway, one line per send:

  time    when it was sent (UTC)
  kind    what it was: %s
  bytes   how many bytes left
  sha256  the SHA-256 of exactly those bytes
  job, round   for update headers and bodies: the job and round trained

No other message leaves (besides the QUIC and TLS framing around these):
the egress guard refuses every other message type and checks that model
updates are the finite numbers their headers declare. The log holds kinds,
sizes and hashes, never data, so a privacy officer can read it without
seeing patient data, and match an update-body's hash with the update
digest the coordinator recorded for that round (for an upload sent in one
piece; a resumed upload logs each piece).

By default it prints a table (the hash shortened to 12 digits) and a summary
line with the count and total bytes. Malformed lines (from a crash during a
write, or tampering) are skipped, counted and reported by line number on
stderr; --strict makes them an error.

Examples:
  cohort agent egress --data-dir /var/lib/cohort --since 24h
  cohort agent egress --data-dir /var/lib/cohort --job sepsis-v1 --kind update-body
  cohort agent egress --data-dir /var/lib/cohort --json | jq -r .sha256

Flags:
`, egress.LogFile, strings.Join(egress.Kinds, ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("agent egress: unexpected argument %q", fs.Arg(0))
	}
	path := *file
	switch {
	case path == "" && *dataDir == "":
		fs.Usage()
		return errors.New("agent egress: --data-dir (or --file) is required")
	case path != "" && *dataDir != "":
		return errors.New("agent egress: give --data-dir or --file, not both")
	case path == "":
		path = filepath.Join(*dataDir, egress.LogFile)
	}
	filter := egress.Filter{Job: *job, Kind: *kind}
	if *kind != "" && !slices.Contains(egress.Kinds, *kind) {
		return fmt.Errorf("agent egress: unknown --kind %q: use one of %s", *kind, strings.Join(egress.Kinds, ", "))
	}
	if *since != "" {
		t, err := parseEgressSince(*since, now)
		if err != nil {
			return fmt.Errorf("agent egress: --since: %w", err)
		}
		filter.Since = t
	}

	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("agent egress: no egress log at %s (has the agent run with this data dir? it creates the log when it first starts): %w", path, err)
		}
		return fmt.Errorf("agent egress: %w", err)
	}
	defer f.Close()
	recs, bad, err := egress.ReadLog(f, filter)
	if err != nil {
		return fmt.Errorf("agent egress: %s: %w", path, err)
	}

	var total int64
	for _, r := range recs {
		total += int64(r.Bytes)
	}
	summary := fmt.Sprintf("%d %s, %s", len(recs), egressPlural(len(recs), "record", "records"), egressBytes(total))
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		fmt.Fprintln(stderr, summary)
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tKIND\tJOB\tROUND\tBYTES\tSHA256")
		for _, r := range recs {
			job, round := r.Job, ""
			if job == "" {
				job = "-"
			}
			if r.Round > 0 || r.Job != "" {
				round = strconv.FormatUint(r.Round, 10)
			} else {
				round = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", r.Time.UTC().Format(time.RFC3339), r.Kind, job, round, r.Bytes, egressHashPrefix(r.SHA256))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(stdout, summary)
	}
	if len(bad) > 0 {
		msg := egressMalformedSummary(path, bad)
		if *strict {
			return errors.New("agent egress: " + msg)
		}
		fmt.Fprintln(stderr, "warning:", msg)
	}
	return nil
}

// egressMalformedSummary names the malformed lines: how many, which (the first
// egressBadLinesShown), and why the first was refused.
func egressMalformedSummary(path string, bad []egress.LineError) string {
	var nums []string
	for _, b := range bad[:min(len(bad), egressBadLinesShown)] {
		nums = append(nums, strconv.Itoa(b.Line))
	}
	more := ""
	if len(bad) > egressBadLinesShown {
		more = fmt.Sprintf(" and %d more", len(bad)-egressBadLinesShown)
	}
	return fmt.Sprintf("%s: skipped %d malformed %s (%s%s); first: %v",
		path, len(bad), egressPlural(len(bad), "line", "lines"), strings.Join(nums, ", "), more, bad[0])
}

// parseEgressSince reads a duration back from now, an RFC 3339 time, or a date
// (midnight UTC).
func parseEgressSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("negative duration %s", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (24h), an RFC 3339 time (2026-11-28T09:00:00Z) nor a date (2026-11-28)", s)
}

func egressHashPrefix(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func egressPlural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// egressBytes prints n in bytes, with a binary-prefixed size when large.
func egressBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%d bytes (%.1f %ciB)", n, float64(n)/float64(div), "KMGTPE"[exp])
}
