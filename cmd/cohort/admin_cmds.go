package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
)

// The `cohort admin` commands for the cluster, sites, jobs and tokens.
// Models are in admin_models.go and the audit log in admin_audit.go.

func (a *adminCLI) cmdWhoami() *adminCommand {
	return &adminCommand{
		name: "whoami", perm: "self",
		about: `Shows who the token belongs to: the person, the role, the token's id and
when it expires.`,
		run: func(ctx context.Context, c *adminClient, _ []string) error {
			var w coordinator.Whoami
			raw, err := c.get(ctx, "/v1/whoami", &w)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(raw)
			}
			fmt.Fprintf(a.stdout, "%s (%s), token %s, expires %s\n", w.Person, w.Role, w.TokenID, a.when(w.Expires))
			return nil
		},
	}
}

// clusterView is GET /v1/cluster. It is decoded here rather than into
// coordinator.ClusterView to read every field the API documents.
type clusterView struct {
	Node   string          `json:"node"`
	Leader string          `json:"leader"`
	Nodes  []clusterMember `json:"nodes"`
}

type clusterMember struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	Voter      bool   `json:"voter"`
	Leader     bool   `json:"leader"`
	AgentAddr  string `json:"agent_addr,omitempty"`
	AdminAddr  string `json:"admin_addr,omitempty"`
	StatusAddr string `json:"status_addr,omitempty"`
	// AuditKey is the node's checkpoint signing key (Ed25519, base64).
	AuditKey string `json:"audit_key,omitempty"`
}

func (a *adminCLI) clusterCommands() []*adminCommand {
	var id, raftAddr string
	show := func(raw []byte, v clusterView, msg string) error {
		if a.json {
			return a.printJSON(raw)
		}
		if msg != "" {
			fmt.Fprintln(a.stdout, msg)
		}
		a.clusterTable(v)
		return nil
	}
	return []*adminCommand{
		{
			name: "cluster", perm: "cluster.read",
			about: `Lists the coordinators: each one's role (leader, follower, nonvoter), its Raft
address and the addresses it serves agents, the admin API and its status on
(known once the node has led or published them). The answer comes from the
leader, so it needs a quorum; while the cluster elects a leader it is
retried until --timeout.`,
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				var v clusterView
				raw, err := c.get(ctx, "/v1/cluster", &v)
				if err != nil {
					return err
				}
				return show(raw, v, "")
			},
		},
		{
			name: "cluster join", perm: "cluster.write",
			about: `Adds a coordinator to the cluster as a voter. Issue its certificate, start it
with the same configuration as the others but without --bootstrap and
without peers (it waits to be added), then join it here. It catches up from
the leader's log or snapshot and fetches the models from its peers.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&id, "id", "", "the new node's `id` (its --id)")
				fs.StringVar(&raftAddr, "raft-addr", "", "the new node's Raft `address`, host:port, as the others dial it")
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				if id == "" || raftAddr == "" {
					return errors.New("cluster join: --id and --raft-addr are required")
				}
				var v clusterView
				raw, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/nodes", body: map[string]string{"id": id, "raft_addr": raftAddr}}, &v)
				if err != nil {
					return err
				}
				return show(raw, v, id+" joined the cluster")
			},
		},
		{
			name: "cluster remove", perm: "cluster.write",
			about: `Removes a coordinator from the cluster. Removing the leader is allowed: it
steps down and the others elect a new one. The last voter cannot be removed.
To replace a node, join the new one first.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&id, "id", "", "the `id` of the node to remove")
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				if id == "" {
					return errors.New("cluster remove: --id is required")
				}
				var v clusterView
				raw, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/cluster/nodes/" + url.PathEscape(id)}, &v)
				if err != nil {
					return err
				}
				return show(raw, v, id+" removed from the cluster")
			},
		},
		a.clusterBackupCommand(),
		a.clusterRestoreCommand(),
	}
}

func (a *adminCLI) clusterTable(v clusterView) {
	tw := a.table()
	fmt.Fprintln(tw, "ID\tROLE\tRAFT\tAGENTS\tADMIN\tSTATUS")
	for _, n := range v.Nodes {
		role := "follower"
		switch {
		case n.Leader:
			role = "leader"
		case !n.Voter:
			role = "nonvoter"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, role, n.RaftAddr, dash(n.AgentAddr), dash(n.AdminAddr), dash(n.StatusAddr))
	}
	tw.Flush()
	if v.Leader == "" {
		fmt.Fprintln(a.stdout, "no leader known")
	}
}

func (a *adminCLI) siteCommands() []*adminCommand {
	var (
		ttl   time.Duration
		out   string
		force bool
	)
	one := func(ctx context.Context, c *adminClient, req request, msg func(coordinator.SiteView) string) error {
		var s coordinator.SiteView
		raw, err := c.do(ctx, req, &s)
		if err != nil {
			return err
		}
		if a.json {
			return a.printJSON(raw)
		}
		if msg != nil {
			fmt.Fprintln(a.stdout, msg(s))
			return nil
		}
		a.siteTable([]coordinator.SiteView{s})
		return nil
	}
	return []*adminCommand{
		{
			name: "sites", perm: "sites.read",
			about: `Lists the enrolled sites (every page): whether each is enrolled or revoked,
online (its agent asked for work recently), when it was last seen and when
it was created.`,
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				raws, err := listAll[json.RawMessage](ctx, c, "/v1/sites", "sites")
				if err != nil {
					return err
				}
				if a.json {
					return a.printList("sites", raws)
				}
				sites, err := decodeAll[coordinator.SiteView](raws)
				if err != nil {
					return err
				}
				a.siteTable(sites)
				return nil
			},
		},
		{
			name: "sites create", synopsis: "ID", nargs: 1, perm: "sites.write",
			about: `Enrolls a site: its agent, holding a site certificate for ID from the
federation CA, may then connect. Ids are 1-63 lowercase letters, digits,
'.', '_' or '-'. Creating a site that exists changes nothing.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				return one(ctx, c, request{method: http.MethodPost, path: "/v1/sites", body: map[string]string{"id": args[0]}}, func(s coordinator.SiteView) string {
					return fmt.Sprintf("site %s enrolled (created %s)", s.ID, a.when(s.Created))
				})
			},
		},
		{
			name: "sites show", synopsis: "ID", nargs: 1, perm: "sites.read",
			about: `Shows one site: enrolled or revoked, online, last seen, created.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				return one(ctx, c, request{method: http.MethodGet, path: "/v1/sites/" + url.PathEscape(args[0])}, nil)
			},
		},
		{
			name: "sites enroll-token", synopsis: "ID", nargs: 1, perm: "sites.write",
			about: `Creates a one-time enrollment token for a site's gateway and prints it once.
On the gateway, 'cohort agent enroll --server URL --ca ca.crt --token-file
FILE --data-dir DIR' makes the site's private key there, sends a
certificate request with the token and receives the site's certificate. The
token works once and expires (default 24h, at most 720h). Hand it over
securely; -o FILE writes it with mode 0600.`,
			flags: func(fs *flag.FlagSet) {
				fs.DurationVar(&ttl, "ttl", 0, "the token's `lifetime` (default 24h)")
				fs.StringVar(&out, "o", "", "write the token to this `file` (mode 0600) instead of printing it")
				fs.BoolVar(&force, "force", false, "with -o: replace an existing file")
			},
			run: func(ctx context.Context, c *adminClient, args []string) error {
				if ttl < 0 {
					return errors.New("sites enroll-token: --ttl must be positive")
				}
				if out != "" && !force {
					if _, err := os.Lstat(out); err == nil {
						return fmt.Errorf("sites enroll-token: %s exists (--force replaces it)", out)
					}
				}
				var body any
				if ttl > 0 {
					body = map[string]string{"ttl": ttl.String()}
				}
				var et coordinator.EnrollTokenView
				raw, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/sites/" + url.PathEscape(args[0]) + "/enrollment-tokens", body: body, once: true}, &et)
				if err != nil {
					return err
				}
				if et.Token == "" {
					return errors.New("sites enroll-token: the answer holds no token")
				}
				if out != "" {
					if err := writeSecret(out, et.Token, force); err != nil {
						return fmt.Errorf("sites enroll-token: the token was created but not written: %w", err)
					}
				}
				if a.json {
					return a.printJSON(raw)
				}
				if out != "" {
					fmt.Fprintf(a.stdout, "enrollment token %s for site %s, expires %s, written to %s (mode 0600)\n", et.ID, et.Site, a.when(et.Expires), out)
					return nil
				}
				fmt.Fprintf(a.stdout, "enrollment token %s for site %s, expires %s:\n%s\n", et.ID, et.Site, a.when(et.Expires), et.Token)
				fmt.Fprintln(a.stderr, "This is the only time the token is shown. It works once: hand it to the site's gateway securely, in a file only its owner can read.")
				return nil
			},
		},
		{
			name: "sites revoke", synopsis: "ID", nargs: 1, perm: "sites.write",
			about: `Revokes a site: the coordinators close its connections at once and refuse
new ones. Its past contributions stay in the models and the audit log.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				return one(ctx, c, request{method: http.MethodPost, path: "/v1/sites/" + url.PathEscape(args[0]) + "/revoke"}, func(s coordinator.SiteView) string {
					return fmt.Sprintf("site %s revoked %s: its connections are closed and new ones refused", s.ID, a.when(s.Revoked))
				})
			},
		},
	}
}

func (a *adminCLI) siteTable(sites []coordinator.SiteView) {
	tw := a.table()
	fmt.Fprintln(tw, "ID\tSTATE\tONLINE\tLAST SEEN\tAGENT\tCREATED")
	for _, s := range sites {
		state, online := "enrolled", "no"
		if !s.Revoked.IsZero() {
			state = "revoked " + stamp(s.Revoked)
		}
		if s.Online {
			online = "yes"
		}
		build := "-"
		if s.AgentVersion != "" {
			build = fmt.Sprintf("%s (protocol %d)", s.AgentVersion, s.Protocol)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, state, online, a.when(s.LastSeen), build, stamp(s.Created))
	}
	tw.Flush()
}

func (a *adminCLI) jobCommands() []*adminCommand {
	var specFile string
	action := func(verb, past, about string) *adminCommand {
		return &adminCommand{
			name: "jobs " + verb, synopsis: "ID", nargs: 1, perm: "jobs.write", about: about,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				var j coordinator.JobStatus
				raw, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/jobs/" + url.PathEscape(args[0]) + "/" + verb}, &j)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				fmt.Fprintf(a.stdout, "job %s %s: now %s, %d of %d rounds committed\n", args[0], past, dash(string(j.State)), j.CommittedRounds, j.Rounds)
				return nil
			},
		}
	}
	return []*adminCommand{
		{
			name: "jobs", perm: "jobs.read",
			about: `Lists the jobs (every page): state, committed rounds, when each was created
and finished.`,
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				raws, err := listAll[json.RawMessage](ctx, c, "/v1/jobs", "jobs")
				if err != nil {
					return err
				}
				if a.json {
					return a.printList("jobs", raws)
				}
				jobs, err := decodeAll[coordinator.JobStatus](raws)
				if err != nil {
					return err
				}
				tw := a.table()
				fmt.Fprintln(tw, "ID\tSTATE\tROUNDS\tCREATED\tFINISHED")
				for _, j := range jobs {
					fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\n", j.ID, j.State, j.CommittedRounds, j.Rounds, stamp(j.Created), stamp(j.Finished))
				}
				tw.Flush()
				return nil
			},
		},
		{
			name: "jobs create", perm: "jobs.write",
			about: `Creates a job from a JSON job spec (the fields of a job in the coordinator's
config file; see docs/operating-a-federation.md, "Define a job"). -f - reads
the spec from stdin. Unset fields take the defaults, as in the config file:
a spec without features gets the simulator's sepsis feature spec. Unknown
fields are an error. Creating the same spec again changes nothing; a different spec under
an existing id is refused.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&specFile, "f", "", "job spec JSON `file` (- for stdin)")
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				if specFile == "" {
					return errors.New("jobs create: -f SPEC.json is required (- reads stdin)")
				}
				var spec []byte
				var err error
				if specFile == "-" {
					spec, err = io.ReadAll(io.LimitReader(a.stdin, 1<<20+1))
				} else {
					spec, err = os.ReadFile(specFile)
				}
				if err != nil {
					return fmt.Errorf("jobs create: %w", err)
				}
				spec, err = withDefaultFeatures(spec)
				if err != nil {
					return fmt.Errorf("jobs create: %s: %w", specFile, err)
				}
				var j coordinator.JobStatus
				raw, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/jobs", body: spec}, &j)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				fmt.Fprintf(a.stdout, "job %s created: %s, %d rounds\n", j.ID, j.State, j.Rounds)
				return nil
			},
		},
		{
			name: "jobs show", synopsis: "ID", nargs: 1, perm: "jobs.read",
			about: `Shows a job and a table of its round attempts: round, attempt, state, the
sites that contributed (of those selected), training samples and the
sample-weighted mean of the sites' validation AUROC.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				var j coordinator.JobStatus
				raw, err := c.get(ctx, "/v1/jobs/"+url.PathEscape(args[0]), &j)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				fmt.Fprintf(a.stdout, "job %s: %s, %d of %d rounds committed\n", j.ID, j.State, j.CommittedRounds, j.Rounds)
				fmt.Fprintf(a.stdout, "created %s\n", a.when(j.Created))
				if !j.Finished.IsZero() {
					fmt.Fprintf(a.stdout, "finished %s\n", a.when(j.Finished))
				}
				if j.FailReason != "" {
					fmt.Fprintf(a.stdout, "failed: %s\n", j.FailReason)
				}
				if j.StopReason != "" {
					fmt.Fprintf(a.stdout, "stopped: %s\n", j.StopReason)
				}
				if p := j.Privacy; p != nil {
					fmt.Fprintf(a.stdout, "privacy: ε spent %.3g of %g at δ=%g over %d rounds (noise multiplier %g, clip %g)\n",
						p.EpsilonSpent, p.EpsilonBudget, p.Delta, p.Rounds, p.NoiseMultiplier, p.ClipNorm)
				}
				fmt.Fprintln(a.stdout)
				a.roundTable(j.History)
				return nil
			},
		},
		action("pause", "paused", `Pauses a job: no new round opens until it is resumed; an open round runs
to its end.`),
		action("resume", "resumed", `Resumes a paused job.`),
		action("cancel", "cancelled", `Cancels a job for good: no further round opens. Its committed models stay.`),
		{
			name: "jobs rounds", synopsis: "ID", nargs: 1, perm: "jobs.read",
			about: `Lists a job's round attempts (every page), as in jobs show, with the digest
of each committed model.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				raws, err := listAll[json.RawMessage](ctx, c, "/v1/jobs/"+url.PathEscape(args[0])+"/rounds", "rounds")
				if err != nil {
					return err
				}
				if a.json {
					return a.printList("rounds", raws)
				}
				rounds, err := decodeAll[coordinator.RoundSummary](raws)
				if err != nil {
					return err
				}
				a.roundTable(rounds)
				return nil
			},
		},
		{
			name: "jobs results", synopsis: "ID", nargs: 1, perm: "jobs.read",
			about: `Shows an analytics job's results: per feature the number of patients, mean,
sample standard deviation and quantiles, then each histogram. Cells under
the job's k are suppressed (shown as <k); a feature seen in fewer than k
patients is shown as suppressed.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				var res coordinator.AnalyticsResult
				raw, err := c.get(ctx, "/v1/jobs/"+url.PathEscape(args[0])+"/results", &res)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				a.resultsTable(res)
				return nil
			},
		},
	}
}

// resultsTable prints an analytics job's results.
func (a *adminCLI) resultsTable(res coordinator.AnalyticsResult) {
	noise := "no noise"
	if res.Epsilon > 0 {
		noise = fmt.Sprintf("Laplace noise at ε=%g", res.Epsilon)
	}
	cohort := ""
	if res.Cohort > 0 {
		cohort = fmt.Sprintf(", %d eligible patients", res.Cohort)
	}
	fmt.Fprintf(a.stdout, "%d sites%s; cells under k=%d suppressed; %s\n\n", len(res.Sites), cohort, res.K, noise)
	tw := a.table()
	fmt.Fprintln(tw, "FEATURE\tN\tMEAN\tSTD\tQUANTILES")
	for _, f := range res.Features {
		if f.Suppressed {
			fmt.Fprintf(tw, "%s\t<%d\t-\t-\t-\n", f.Name, res.K)
			continue
		}
		qs := make([]string, 0, len(f.Quantiles))
		for _, q := range f.Quantiles {
			qs = append(qs, fmt.Sprintf("q%g=%.4g", q.Q, q.Value))
		}
		fmt.Fprintf(tw, "%s\t%d\t%.4g\t%.4g\t%s\n", f.Name, f.N, f.Mean, f.Std, dash(strings.Join(qs, " ")))
	}
	tw.Flush()
	for _, f := range res.Features {
		h := f.Histogram
		if f.Suppressed || h == nil {
			continue
		}
		fmt.Fprintf(a.stdout, "\n%s\n", f.Name)
		tw := a.table()
		fmt.Fprintln(tw, "BIN\tCOUNT")
		for i, c := range h.Counts {
			bin := fmt.Sprintf("[%g, %g)", h.Edges[i], h.Edges[i+1])
			if i == len(h.Counts)-1 {
				bin = fmt.Sprintf("[%g, %g]", h.Edges[i], h.Edges[i+1])
			}
			count := fmt.Sprint(c)
			if i < len(h.Suppressed) && h.Suppressed[i] {
				count = fmt.Sprintf("<%d", res.K)
			}
			fmt.Fprintf(tw, "%s\t%s\n", bin, count)
		}
		tw.Flush()
	}
}

// roundTable prints round attempts, one per row.
func (a *adminCLI) roundTable(rounds []coordinator.RoundSummary) {
	if len(rounds) == 0 {
		fmt.Fprintln(a.stdout, "no rounds yet")
		return
	}
	tw := a.table()
	fmt.Fprintln(tw, "ROUND\tATTEMPT\tKIND\tSTATE\tSITES\tSAMPLES\tAUROC\tMODEL")
	for _, r := range rounds {
		sites := fmt.Sprint(len(r.Contributors))
		if len(r.Selected) > 0 {
			sites += fmt.Sprintf("/%d", len(r.Selected))
		}
		auroc, samples, model := "-", "-", "-"
		if r.MeanValAUROC != 0 {
			auroc = fmt.Sprintf("%.4f", r.MeanValAUROC)
		}
		if r.Samples != 0 {
			samples = fmt.Sprint(r.Samples)
		}
		if r.Model != "" {
			model = r.Model[:min(12, len(r.Model))]
		}
		state := string(r.State)
		if r.FailReason != "" {
			state += ": " + r.FailReason
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Round, r.Attempt, dash(r.Kind), state, sites, samples, auroc, model)
	}
	tw.Flush()
}

func (a *adminCLI) tokenCommands() []*adminCommand {
	var (
		person, role, out string
		ttl               time.Duration
		force, existOK    bool
	)
	return []*adminCommand{
		{
			name: "tokens", perm: "tokens.read",
			about: `Lists the admin tokens (every page): id, person, role, whether each is
active, expired or revoked, and who created it. Secrets are never shown:
the cluster keeps only their hashes.`,
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				raws, err := listAll[json.RawMessage](ctx, c, "/v1/tokens", "tokens")
				if err != nil {
					return err
				}
				if a.json {
					return a.printList("tokens", raws)
				}
				toks, err := decodeAll[coordinator.TokenView](raws)
				if err != nil {
					return err
				}
				now := a.now()
				tw := a.table()
				fmt.Fprintln(tw, "ID\tPERSON\tROLE\tSTATE\tEXPIRES\tCREATED\tCREATED BY")
				for _, t := range toks {
					state := "active"
					switch {
					case !t.Revoked.IsZero():
						state = "revoked"
					case !now.Before(t.Expires):
						state = "expired"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Person, t.Role, state, a.when(t.Expires), stamp(t.Created), dash(t.CreatedBy))
				}
				tw.Flush()
				return nil
			},
		},
		{
			name: "tokens create", perm: "tokens.write",
			about: `Creates a token for one person with one role (admin, break-glass, operator,
auditor or viewer) and prints its secret once: the cluster keeps only its
hash. Store it in a file only that person can read (-o FILE writes it with
mode 0600) and hand it over securely. Tokens expire (default 1h, at most
90 days); revoke one with tokens revoke.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&person, "person", "", "who the token is for: an email address, a staff id or a `name`")
				fs.StringVar(&role, "role", "", "the token's `role`: admin, break-glass, operator, auditor or viewer")
				fs.DurationVar(&ttl, "ttl", 0, "the token's `lifetime` (default 1h)")
				fs.StringVar(&out, "o", "", "write the token to this `file` (mode 0600) instead of printing it")
				fs.BoolVar(&force, "force", false, "with -o: replace an existing file")
			},
			run: func(ctx context.Context, c *adminClient, _ []string) error {
				if person == "" || role == "" {
					return errors.New("tokens create: --person and --role are required")
				}
				if ttl < 0 {
					return errors.New("tokens create: --ttl must be positive")
				}
				if out != "" && !force {
					if _, err := os.Lstat(out); err == nil {
						return fmt.Errorf("tokens create: %s exists (--force replaces it)", out)
					}
				}
				body := map[string]string{"person": person, "role": role}
				if ttl > 0 {
					body["ttl"] = ttl.String()
				}
				var t coordinator.TokenView
				raw, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tokens", body: body, once: true}, &t)
				if err != nil {
					return err
				}
				if t.Token == "" {
					return errors.New("tokens create: the answer holds no token")
				}
				if out != "" {
					if err := writeSecret(out, t.Token, force); err != nil {
						return fmt.Errorf("tokens create: token %s was created but not written: %w (revoke it with `cohort admin tokens revoke %s`)", t.ID, err, t.ID)
					}
				}
				if a.json {
					return a.printJSON(raw)
				}
				if out != "" {
					fmt.Fprintf(a.stdout, "token %s for %s (%s), expires %s, written to %s (mode 0600)\n", t.ID, t.Person, t.Role, a.when(t.Expires), out)
					return nil
				}
				fmt.Fprintf(a.stdout, "token %s for %s (%s), expires %s:\n%s\n", t.ID, t.Person, t.Role, a.when(t.Expires), t.Token)
				fmt.Fprintf(a.stderr, "This is the only time the token is shown. Store it in a file only %s can read (chmod 600), or create tokens with -o FILE.\n", t.Person)
				return nil
			},
		},
		{
			name: "tokens revoke", synopsis: "ID", nargs: 1, perm: "tokens.write",
			about: `Revokes a token (by its id, as tokens list shows it): it is refused from now
on. Revoking the token you are using is allowed.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				var t coordinator.TokenView
				raw, err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/tokens/" + url.PathEscape(args[0])}, &t)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				fmt.Fprintf(a.stdout, "token %s of %s (%s) revoked %s\n", t.ID, t.Person, t.Role, a.when(t.Revoked))
				return nil
			},
		},
		{
			name: "token new",
			about: `Prints a new admin token without asking any server, for a bootstrap token
file: write it (with -o FILE, mode 0600) where every coordinator's
--bootstrap-token-file (auth.bootstrap_token_file) points before the cluster
first starts. The first leader creates it as the admin token
"bootstrap-admin" (valid 24h by default); use it to create people's own
tokens with tokens create. With --exist-ok, an existing file that holds a
token is kept (for setup scripts that run more than once).`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&out, "o", "", "write the token to this `file` (mode 0600) instead of printing it")
				fs.BoolVar(&force, "force", false, "with -o: replace an existing file")
				fs.BoolVar(&existOK, "exist-ok", false, "with -o: keep an existing owner-only file that holds a token, and succeed")
			},
			run: func(_ context.Context, _ *adminClient, _ []string) error {
				if existOK && (out == "" || force) {
					return errors.New("token new: --exist-ok needs -o FILE and no --force")
				}
				if existOK {
					if _, err := os.Lstat(out); err == nil {
						if _, err := coordinator.ReadTokenFile(out); err != nil {
							return fmt.Errorf("token new: --exist-ok: %s can't be kept: %w", out, err)
						}
						fmt.Fprintf(a.stderr, "kept the existing token in %s\n", out)
						return nil
					}
				}
				tok, err := coordinator.NewAdminToken()
				if err != nil {
					return err
				}
				if out == "" {
					fmt.Fprintln(a.stdout, tok)
					return nil
				}
				if err := writeSecret(out, tok, force); err != nil {
					return fmt.Errorf("token new: %w", err)
				}
				fmt.Fprintf(a.stderr, "wrote a new token to %s (mode 0600)\n", out)
				return nil
			},
		},
	}
}

// writeSecret writes a token and a newline to path, mode 0600; without
// force it refuses to replace a file.
func writeSecret(path, secret string, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists (--force replaces it)", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// withDefaultFeatures gives a job spec without "features" the simulator's
// sepsis feature spec, as the coordinator does for the jobs in its config
// file; everything else is sent as written, for the server to check.
func withDefaultFeatures(spec []byte) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(spec, &fields); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if f, ok := fields["features"]; ok && string(f) != "null" {
		return spec, nil
	}
	f, err := json.Marshal(coordinator.FeatureSpec{FeatureSpec: synth.DefaultFeatureSpec()})
	if err != nil {
		return nil, err
	}
	fields["features"] = f
	return json.Marshal(fields)
}
