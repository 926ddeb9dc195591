package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/cohort-fl/cohort/agent"
)

func runAgentStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cohort agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "the agent's data `directory`")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: cohort agent status --data-dir DIR [--json]

Prints what the site agent using DIR last reported: resources ingested by
type, skipped and rejected by reason, rounds trained, updates acknowledged,
and bytes sent. It reads DIR/status.json, which the agent rewrites after each
ingest and round; it holds counts and reasons only, never patient data.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" {
		fs.Usage()
		return fmt.Errorf("agent status: --data-dir is required")
	}
	st, err := agent.ReadStatus(*dataDir)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(stdout, "site %s, status of %s\n\n", st.Site, st.Updated.Format("2006-01-02 15:04:05 MST"))
	table := func(title string, m map[string]int) {
		fmt.Fprintf(stdout, "%s:\n", title)
		if len(m) == 0 {
			fmt.Fprintln(stdout, "  (none)")
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(stdout, "  %-28s %d\n", k, m[k])
		}
	}
	table("ingested", st.Ingested)
	table("skipped", st.Skipped)
	table("rejected", st.Rejected)
	fmt.Fprintf(stdout, "\nrounds trained %d, updates acknowledged %d (resent %d), reconnects %d, bytes sent %d\n",
		st.RoundsTrained, st.UpdatesAcked, st.UpdatesResent, st.Reconnects, st.BytesSent)
	if st.Session == agent.SessionRevoked {
		fmt.Fprintln(stdout, "coordinator session (at that time): REVOKED: the federation operator revoked this site; the coordinators refuse it")
	} else if st.Session != "" {
		fmt.Fprintf(stdout, "coordinator session (at that time): %s\n", st.Session)
	}
	if !st.CertExpires.IsZero() {
		if left := st.CertExpires.Sub(st.Updated); left > 0 {
			fmt.Fprintf(stdout, "site certificate expires %s (%s after this status)", st.CertExpires.Format("2006-01-02 15:04:05 MST"), lifetime(left))
		} else {
			fmt.Fprintf(stdout, "site certificate EXPIRED %s: enroll the gateway again (cohort agent enroll --force)", st.CertExpires.Format("2006-01-02 15:04:05 MST"))
		}
		switch {
		case st.Session == agent.SessionRevoked:
		case st.NextRenewal.IsZero():
			fmt.Fprint(stdout, "; automatic renewal off (renew.server)")
		default:
			fmt.Fprintf(stdout, "; next renewal %s", st.NextRenewal.Format("2006-01-02 15:04:05 MST"))
		}
		fmt.Fprintf(stdout, "\ncertificate renewals %d, failed attempts %d\n", st.CertRenewals, st.CertRenewalFailures)
	}
	if st.LastRenewalError != "" {
		fmt.Fprintf(stdout, "last renewal error: %s\n", st.LastRenewalError)
	}
	if st.LastRoundError != "" {
		fmt.Fprintf(stdout, "last round error: %s\n", st.LastRoundError)
	}
	return nil
}
