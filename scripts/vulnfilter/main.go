// Command vulnfilter reads govulncheck's JSON output (-format json) on
// stdin and fails when it reports a reachable vulnerability that is not in
// the exceptions file, or an exception has expired.
//
// An exceptions file has one line per OSV id: the id, the date until which
// the exception holds (YYYY-MM-DD), and why (required). Blank lines and
// lines starting with # are comments.
//
//	GO-2026-6613  2027-01-31  standard library, fixed in go1.26.9: ...
//
// Usage: govulncheck -format json ./... | go run ./scripts/vulnfilter -exceptions FILE
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

type exception struct {
	until time.Time
	why   string
}

// message is the part of a govulncheck JSON message this reads.
type message struct {
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module   string `json:"module"`
			Version  string `json:"version"`
			Package  string `json:"package"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

func readExceptions(path string) (map[string]exception, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]exception)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 || !strings.HasPrefix(fields[0], "GO-") {
			return nil, fmt.Errorf("%s:%d: want ID UNTIL WHY", path, n)
		}
		until, err := time.Parse("2006-01-02", fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, n, err)
		}
		out[fields[0]] = exception{until: until, why: strings.Join(fields[2:], " ")}
	}
	return out, sc.Err()
}

func run(in io.Reader, exceptionsFile string, now time.Time, w io.Writer) (failed bool, err error) {
	exc, err := readExceptions(exceptionsFile)
	if err != nil {
		return false, err
	}
	type found struct{ module, version, fixed, function string }
	reachable := make(map[string]found)
	dec := json.NewDecoder(in)
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return false, fmt.Errorf("reading govulncheck's output: %w", err)
		}
		f := m.Finding
		// A finding whose trace starts at a function is reachable from
		// Cohort's code; the others only say an affected module or
		// package is in the build.
		if f == nil || len(f.Trace) == 0 || f.Trace[0].Function == "" {
			continue
		}
		vuln, last := f.Trace[0], f.Trace[len(f.Trace)-1]
		reachable[f.OSV] = found{module: vuln.Module, version: vuln.Version, fixed: f.FixedVersion,
			function: vuln.Package + "." + vuln.Function + " from " + last.Package + "." + last.Function}
	}
	ids := make([]string, 0, len(reachable))
	for id := range reachable {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	excepted := 0
	for _, id := range ids {
		f := reachable[id]
		e, ok := exc[id]
		switch {
		case !ok:
			failed = true
			fmt.Fprintf(w, "FAIL %s in %s@%s (fixed in %s), reached from %s: upgrade, or add a justified exception\n", id, f.module, f.version, f.fixed, f.function)
		case now.After(e.until.Add(24 * time.Hour)):
			failed = true
			fmt.Fprintf(w, "FAIL %s: its exception expired on %s (%s); fix it or review the exception\n", id, e.until.Format("2006-01-02"), e.why)
		default:
			excepted++
			fmt.Fprintf(w, "excepted until %s: %s in %s@%s (fixed in %s): %s\n", e.until.Format("2006-01-02"), id, f.module, f.version, f.fixed, e.why)
		}
	}
	for id := range exc {
		if _, ok := reachable[id]; !ok {
			fmt.Fprintf(w, "note: exception %s is no longer needed; remove it\n", id)
		}
	}
	fmt.Fprintf(w, "vulnfilter: %d reachable vulnerabilities, %d excepted\n", len(ids), excepted)
	return failed, nil
}

func main() {
	exceptions := flag.String("exceptions", "scripts/vulncheck-exceptions.txt", "the exceptions `file`")
	flag.Parse()
	failed, err := run(os.Stdin, *exceptions, time.Now(), os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulnfilter:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
