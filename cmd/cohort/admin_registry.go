package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/cohort-fl/cohort/coordinator"
)

// registryCommands are the model registry's commands: a job's versions
// with their lineage and stage, promotion, rollback, model cards and
// federated evaluation.
func (a *adminCLI) registryCommands() []*adminCommand {
	var (
		bins, minSites int
		evalID         string
	)
	versionPath := func(job, digest string) string {
		return "/v1/jobs/" + url.PathEscape(job) + "/models/" + url.PathEscape(digest)
	}
	printVersion := func(v coordinator.ModelVersion) {
		fmt.Fprintf(a.stdout, "job %s, round %d: %s (%s)\n", v.Job, v.Round, v.Digest, v.Stage)
		if v.Parent != "" {
			fmt.Fprintf(a.stdout, "trained from %s by %s over %s\n", v.Parent, dash(v.Strategy), strings.Join(v.Contributors, ", "))
		}
		if v.EpsilonSpent > 0 {
			fmt.Fprintf(a.stdout, "privacy spent: ε %.3g\n", v.EpsilonSpent)
		}
		for _, e := range v.Evaluations {
			p := e.Pooled
			fmt.Fprintf(a.stdout, "evaluation %s: %d records at %d sites, AUROC %.4f, AUPRC %.4f, accuracy %.4f, Brier %.4f\n",
				e.Job, p.Count, len(e.Sites), p.AUROC, p.AUPRC, p.Accuracy, p.Brier)
		}
	}
	return []*adminCommand{
		{
			name: "models versions", synopsis: "JOB", nargs: 1, perm: "models.read",
			about: `Lists a job's model versions in the registry, oldest first: round, stage
(candidate, staging, production, archived), digest, parent version and the
sites whose updates made it.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				raws, err := listAll[json.RawMessage](ctx, c, "/v1/jobs/"+url.PathEscape(args[0])+"/models", "models")
				if err != nil {
					return err
				}
				if a.json {
					return a.printList("models", raws)
				}
				vs, err := decodeAll[coordinator.ModelVersion](raws)
				if err != nil {
					return err
				}
				tw := a.table()
				fmt.Fprintln(tw, "ROUND\tSTAGE\tDIGEST\tPARENT\tSITES\tEVALUATIONS")
				for _, v := range vs {
					fmt.Fprintf(tw, "%d\t%s\t%.16s\t%.16s\t%d\t%d\n", v.Round, v.Stage, v.Digest, dash(v.Parent), len(v.Contributors), len(v.Evaluations))
				}
				tw.Flush()
				return nil
			},
		},
		{
			name: "models version", synopsis: "JOB DIGEST", nargs: 2, perm: "models.read",
			about: `Shows one model version: its lineage, stage and federated evaluations.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				var v coordinator.ModelVersion
				raw, err := c.get(ctx, versionPath(args[0], args[1]), &v)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				printVersion(v)
				return nil
			},
		},
		{
			name: "models card", synopsis: "JOB DIGEST", nargs: 2, perm: "models.read",
			about: `Prints a model version's model card (Markdown): what it is, how it was
trained, how it performed, its limitations.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				raw, err := c.do(ctx, request{method: http.MethodGet, path: versionPath(args[0], args[1]) + "/card"}, nil)
				if err != nil {
					return err
				}
				_, err = a.stdout.Write(raw)
				return err
			},
		},
		{
			name: "models stage", synopsis: "JOB DIGEST STAGE", nargs: 3, perm: "models.write",
			about: `Moves a version to a stage: candidate, staging, production or archived.
Promoting a version to production archives the one it replaces; sites
that follow the job's production model switch to it. Audited.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				var v coordinator.ModelVersion
				raw, err := c.do(ctx, request{method: http.MethodPost, path: versionPath(args[0], args[1]) + "/stage",
					body: map[string]string{"stage": args[2]}}, &v)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				printVersion(v)
				return nil
			},
		},
		{
			name: "models rollback", synopsis: "JOB", nargs: 1, perm: "models.write",
			about: `Brings back the version that was in production before the current one,
archiving the current one. Audited.`,
			run: func(ctx context.Context, c *adminClient, args []string) error {
				var v coordinator.ModelVersion
				raw, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/jobs/" + url.PathEscape(args[0]) + "/rollback"}, &v)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				printVersion(v)
				return nil
			},
		},
		{
			name: "models evaluate", synopsis: "JOB DIGEST", nargs: 2, perm: "jobs.write",
			about: `Starts a federated evaluation of a version: every site scores it on the
records its training job held out and reports AUROC, AUPRC, accuracy,
Brier score and calibration bins (bins under the minimum cell
suppressed). Follow it with "jobs show ID"; the results are at
"jobs results ID" and on the version.`,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&evalID, "id", "", "the evaluation job's `id` (default: derived from the job and digest)")
				fs.IntVar(&bins, "bins", 0, "calibration bins (0 = 10)")
				fs.IntVar(&minSites, "min-sites", 0, "sites that must report (0 = 1)")
			},
			run: func(ctx context.Context, c *adminClient, args []string) error {
				body := map[string]any{}
				if evalID != "" {
					body["id"] = evalID
				}
				if bins > 0 {
					body["bins"] = bins
				}
				if minSites > 0 {
					body["min_sites"] = minSites
				}
				var j coordinator.JobStatus
				raw, err := c.do(ctx, request{method: http.MethodPost, path: versionPath(args[0], args[1]) + "/evaluate", body: body, once: true}, &j)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(raw)
				}
				fmt.Fprintf(a.stdout, "evaluation job %s created (%s)\n", j.ID, j.State)
				return nil
			},
		},
	}
}
