package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

const adminUsage = `Usage: cohort admin [global flags] <command> [flags]

Runs the federation through the coordinators' admin API: HTTPS, JSON, one
bearer token per person. Any coordinator will do: followers forward every
request to the leader, and the leader records each one (allowed or refused)
in the tamper-evident audit log before it answers.

Commands:
  whoami                       the person, role and expiry of your token
  cluster                      members and leader; join and remove nodes
  sites                        list, create, show and revoke sites
  jobs                         list, create, show, pause, resume and cancel jobs; their rounds
  models                       committed global models; download one, checked against its digest
  models versions|version|card the registry: a job's versions, lineage, stage, evaluations, model card
  models stage|rollback        promote a version (production archives the one it replaces); roll back
  models evaluate              score a version at every site (federated evaluation)
  tokens                       people's admin tokens: list, create, revoke
  token new                    a new token string for a bootstrap token file (offline)
  audit                        the audit log: tail, verify, proof, consistency

Global flags, before or after the command:
  --server URL       https://HOST:PORT of any coordinator's --admin-addr (env COHORT_SERVER)
  --ca FILE          the federation CA certificate, to trust the server (env COHORT_CA)
  --token-file FILE  your token, in a file only you can read (env COHORT_TOKEN_FILE);
                     or the token itself in the environment variable COHORT_TOKEN
  --json             print the API's JSON, for scripts (default: tables for people)
  --timeout D        give up after D (default 30s); while the cluster elects a
                     leader, requests are retried until then

Roles (each token has one; see docs/operating-a-federation.md):
  admin        everything
  break-glass  everything, for emergencies; every use is flagged in the audit log
  operator     sites and jobs (create, revoke, pause, ...), model downloads; reads
  auditor      reads everything but model weights, the tokens and the audit log
  viewer       reads the cluster, sites, jobs and models

Example:
  export COHORT_SERVER=https://10.0.0.11:7443 COHORT_CA=/etc/cohort/ca.crt COHORT_TOKEN_FILE=~/.cohort/token
  cohort admin whoami
  cohort admin jobs show sepsis-risk

Run 'cohort admin <command> --help' for a command's flags and the role it needs.
`

// adminCLI is one run of `cohort admin`: where it writes, and the global
// flags.
type adminCLI struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time

	server, caFile, tokenFile string
	json                      bool
	timeout                   time.Duration

	// cmds is every command, by name.
	cmds map[string]*adminCommand
}

// adminCommand is one `cohort admin` command.
type adminCommand struct {
	// name is the command's words ("sites create").
	name string
	// synopsis follows the name in the usage line ("ID").
	synopsis string
	// nargs is the number of positional arguments.
	nargs int
	// perm is the permission the command needs ("" when it needs no
	// server).
	perm string
	// about describes the command in --help.
	about string
	// flags registers the command's own flags.
	flags func(fs *flag.FlagSet)
	// run does the work. c is nil for an offline command.
	run func(ctx context.Context, c *adminClient, args []string) error
	// long: no overall deadline (a download, reading the whole audit
	// log); --timeout still bounds each answer's wait and the retries.
	long bool
	// offlineIf, if set, says (after the flags are parsed) that this run
	// needs no server.
	offlineIf func() bool
}

// rolesFor says which roles hold a permission, as coordinator/auth.go's
// rolePerms grants them.
var rolesFor = map[string]string{ // #nosec G101 -- permission names and the roles that hold them, not credentials
	"self":            "any role",
	"cluster.read":    "any role",
	"cluster.write":   "admin or break-glass",
	"sites.read":      "any role",
	"sites.write":     "admin, break-glass or operator",
	"jobs.read":       "any role",
	"jobs.write":      "admin, break-glass or operator",
	"models.read":     "any role",
	"models.download": "admin, break-glass or operator",
	"models.write":    "admin, break-glass or operator",
	"tokens.read":     "admin, break-glass or auditor",
	"tokens.write":    "admin or break-glass",
	"audit.read":      "admin, break-glass or auditor",
}

// globalNames are the flags every command takes.
var globalNames = []string{"server", "ca", "token-file", "json", "timeout"}

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := &adminCLI{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, now: time.Now, timeout: 30 * time.Second}
	return a.run(ctx, args)
}

// globalFlags registers the global flags on fs, bound to a's fields, so
// that they may come before or after the command.
func (a *adminCLI) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.server, "server", a.server, "`URL` of any coordinator's admin API, https://HOST:PORT (default $COHORT_SERVER)")
	fs.StringVar(&a.caFile, "ca", a.caFile, "federation CA certificate `file` the server's certificate must chain to (default $COHORT_CA)")
	fs.StringVar(&a.tokenFile, "token-file", a.tokenFile, "`file` holding your token, readable by you only (default $COHORT_TOKEN, then $COHORT_TOKEN_FILE)")
	fs.BoolVar(&a.json, "json", a.json, "print the API's JSON for scripts")
	fs.DurationVar(&a.timeout, "timeout", a.timeout, "give up after this `duration`")
}

func (a *adminCLI) run(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprint(a.stdout, adminUsage)
		return nil
	}
	gfs := flag.NewFlagSet("cohort admin", flag.ContinueOnError)
	gfs.SetOutput(a.stderr)
	gfs.Usage = func() { fmt.Fprint(gfs.Output(), adminUsage) }
	a.globalFlags(gfs)
	if err := gfs.Parse(args); err != nil {
		return err
	}
	args = gfs.Args()
	if len(args) == 0 || args[0] == "help" {
		fmt.Fprint(a.stdout, adminUsage)
		if len(args) == 0 {
			return errors.New("admin: no command given")
		}
		return nil
	}
	cmds := a.commands()
	a.cmds = cmds
	var cmd *adminCommand
	var rest []string
	if len(args) > 1 {
		cmd, rest = cmds[args[0]+" "+args[1]], args[2:]
	}
	if cmd == nil {
		cmd, rest = cmds[args[0]], args[1:]
	}
	if cmd == nil {
		group := a.groupUsage(cmds, args[0])
		if group == "" {
			fmt.Fprint(a.stderr, adminUsage)
			return fmt.Errorf("admin: unknown command %q", args[0])
		}
		if len(args) > 1 && (args[1] == "-h" || args[1] == "--help" || args[1] == "help") {
			fmt.Fprint(a.stdout, group)
			return nil
		}
		fmt.Fprint(a.stderr, group)
		if len(args) == 1 {
			return fmt.Errorf("admin %s: which command?", args[0])
		}
		return fmt.Errorf("admin %s: unknown command %q", args[0], args[1])
	}
	return a.runCommand(ctx, cmd, rest)
}

// groupUsage lists the commands under a first word ("audit"), or "".
func (a *adminCLI) groupUsage(cmds map[string]*adminCommand, word string) string {
	list := subcommands(cmds, word)
	if list == "" {
		return ""
	}
	return fmt.Sprintf("Usage: cohort admin %s <command> [flags]\n\nCommands:\n%s\nRun 'cohort admin %s <command> --help' for its flags and the role it needs.\n", word, list, word)
}

// subcommands lists the commands under a first word, one a line with
// the first clause of its description, or "".
func subcommands(cmds map[string]*adminCommand, word string) string {
	var names []string
	for name := range cmds {
		if strings.HasPrefix(name, word+" ") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		c := cmds[n]
		first, _, _ := strings.Cut(strings.Join(strings.Fields(c.about), " "), ". ")
		first, _, _ = strings.Cut(first, ": ")
		first, _, _ = strings.Cut(first, " (")
		first = strings.TrimSuffix(first, ".")
		fmt.Fprintf(&b, "  %-28s %s\n", strings.TrimSpace(n+" "+c.synopsis), first)
	}
	return b.String()
}

// commandFlags returns a flag set for cmd holding the global flags and
// its own.
func (a *adminCLI) commandFlags(cmd *adminCommand) *flag.FlagSet {
	fs := flag.NewFlagSet("cohort admin "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	a.globalFlags(fs)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: cohort admin %s [flags]\n\n%s\n", strings.TrimSpace(cmd.name+" "+cmd.synopsis), strings.TrimSpace(cmd.about))
		if cmd.perm != "" {
			fmt.Fprintf(w, "\nNeeds: permission %s, which %s holds.\n", cmd.perm, rolesFor[cmd.perm])
		}
		if !strings.Contains(cmd.name, " ") {
			if list := subcommands(a.cmds, cmd.name); list != "" {
				fmt.Fprintf(w, "\nMore commands (each with --help):\n%s", list)
			}
		}
		own := flag.NewFlagSet("", flag.ContinueOnError)
		own.SetOutput(w)
		fs.VisitAll(func(f *flag.Flag) {
			for _, g := range globalNames {
				if f.Name == g {
					return
				}
			}
			own.Var(f.Value, f.Name, f.Usage)
			own.Lookup(f.Name).DefValue = f.DefValue
		})
		if hasFlags(own) {
			fmt.Fprintln(w, "\nFlags:")
			own.PrintDefaults()
		}
		fmt.Fprintln(w, "\nGlobal flags: --server URL, --ca FILE, --token-file FILE, --json, --timeout D (see cohort admin --help).")
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments (up to "--"), and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (a *adminCLI) runCommand(ctx context.Context, cmd *adminCommand, args []string) error {
	fs := a.commandFlags(cmd)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != cmd.nargs {
		fs.Usage()
		switch {
		case len(pos) > cmd.nargs:
			return fmt.Errorf("admin %s: unexpected argument %q", cmd.name, pos[cmd.nargs])
		default:
			return fmt.Errorf("admin %s: missing %s", cmd.name, strings.Fields(cmd.synopsis)[len(pos)])
		}
	}
	if a.timeout <= 0 {
		return fmt.Errorf("admin %s: --timeout must be positive", cmd.name)
	}
	var c *adminClient
	if cmd.perm != "" && (cmd.offlineIf == nil || !cmd.offlineIf()) {
		if c, err = a.client(); err != nil {
			return fmt.Errorf("admin %s: %w", cmd.name, err)
		}
		c.patience = a.timeout
		if cmd.long {
			c.http.Transport.(*http.Transport).ResponseHeaderTimeout = a.timeout
		}
	}
	if !cmd.long {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	if err := cmd.run(ctx, c, pos); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// client builds the API client from the global flags and the environment.
func (a *adminCLI) client() (*adminClient, error) {
	server := firstOf(a.server, a.getenv("COHORT_SERVER"))
	caFile := firstOf(a.caFile, a.getenv("COHORT_CA"))
	token, err := a.token()
	if err != nil {
		return nil, err
	}
	return newAdminClient(server, caFile, token)
}

// token finds the bearer token: --token-file, else $COHORT_TOKEN, else
// $COHORT_TOKEN_FILE.
func (a *adminCLI) token() (string, error) {
	file := a.tokenFile
	if file == "" {
		if t := strings.TrimSpace(a.getenv("COHORT_TOKEN")); t != "" {
			return t, nil
		}
		file = a.getenv("COHORT_TOKEN_FILE")
	}
	if file == "" {
		return "", errors.New("no token: pass --token-file FILE (a file only you can read; env COHORT_TOKEN_FILE) or set COHORT_TOKEN")
	}
	tok, err := coordinator.ReadTokenFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return tok, nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// printJSON prints an answer as indented JSON.
func (a *adminCLI) printJSON(raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("the answer is not JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := a.stdout.Write(b.Bytes())
	return err
}

// printValue prints v as indented JSON.
func (a *adminCLI) printValue(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", b)
	return err
}

// printList prints the items of a list read page by page in the API's
// shape (one page holding them all).
func (a *adminCLI) printList(field string, items []json.RawMessage) error {
	return a.printValue(map[string]any{field: items, "next_page_token": ""})
}

// table returns a tabwriter on stdout; Flush it.
func (a *adminCLI) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
}

// when formats a time for people: local time and how long ago (or from
// now) it is.
func (a *adminCLI) when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + relative(t, a.now()) + ")"
}

// stamp formats a time for a table of many rows: local, to the second.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// relative says how far t is from now: "5m ago", "in 7h59m".
func relative(t, now time.Time) string {
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	if d < time.Minute {
		if future {
			return "in under a minute"
		}
		return "just now"
	}
	d = d.Round(time.Minute)
	var s string
	switch {
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		h, m := int(d.Hours()), int(d.Minutes())%60
		s = fmt.Sprintf("%dh", h)
		if m != 0 {
			s += fmt.Sprintf("%02dm", m)
		}
	default:
		s = fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// humanBytes formats a size: "812 B", "4.0 KiB", "1.3 MiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// decodeAll decodes each raw item into a T.
func decodeAll[T any](raws []json.RawMessage) ([]T, error) {
	out := make([]T, 0, len(raws))
	for _, r := range raws {
		var v T
		if err := json.Unmarshal(r, &v); err != nil {
			return nil, fmt.Errorf("the answer is not what this client expects: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}

// commands is every `cohort admin` command by name.
func (a *adminCLI) commands() map[string]*adminCommand {
	m := map[string]*adminCommand{}
	for _, group := range [][]*adminCommand{
		{a.cmdWhoami()},
		a.clusterCommands(),
		a.siteCommands(),
		a.jobCommands(),
		a.modelCommands(),
		a.registryCommands(),
		a.tokenCommands(),
		a.auditCommands(),
	} {
		for _, c := range group {
			m[c.name] = c
		}
	}
	return m
}
