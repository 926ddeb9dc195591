package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

// previousRelease is the release before this one, for the rolling upgrade
// test: its commit is built from this repository's history. Update it at
// every release (see CHANGELOG.md).
const (
	previousRelease        = "0.1.0"
	previousReleaseCommit  = "b6297da12db873c2d56d242273f52ba7177212d1"
	upgradeJobRounds       = 3
	upgradeJobTimeout      = 3 * time.Minute
	upgradeStepTimeout     = time.Minute
	cohortModule           = "github.com/cohort-fl/cohort"
	versionLdflagsTemplate = "-X main.Version=%[1]s -X " + cohortModule + "/agent.Build=%[1]s"
)

// buildRelease builds cmd/cohort from the source tree at src, stamped
// with version, into dir.
func buildRelease(t *testing.T, src, dir, version string) string {
	t.Helper()
	bin := filepath.Join(dir, "cohort-"+version)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", fmt.Sprintf(versionLdflagsTemplate, version), "-o", bin, "./cmd/cohort")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", version, err, out)
	}
	return bin
}

// previousSource extracts the previous release's tree from git history,
// or skips the test when this checkout does not hold that commit (a
// shallow clone, a source tarball).
func previousSource(t *testing.T) (repo, src string) {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the previous release %s is built from git history", err, previousRelease)
	}
	repo = strings.TrimSpace(string(out))
	if err := exec.Command("git", "-C", repo, "cat-file", "-e", previousReleaseCommit+"^{commit}").Run(); err != nil {
		t.Skipf("this checkout lacks commit %s (release %s; a shallow clone?): fetch the history to run the upgrade test", previousReleaseCommit[:12], previousRelease)
	}
	src = t.TempDir()
	archive := exec.Command("git", "-C", repo, "archive", "--format=tar", previousReleaseCommit)
	untar := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	if err := untar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s: %v", previousReleaseCommit[:12], err)
	}
	if err := untar.Wait(); err != nil {
		t.Fatalf("untar: %v", err)
	}
	return repo, src
}

// TestRollingUpgradeMixedVersions upgrades a running federation from the
// previous release to this one, one process at a time, as the operations
// guide says to: 3 coordinators and 2 agents start on the previous
// release and finish a job; then one coordinator and one agent are
// upgraded and the mixed cluster finishes a job (agents negotiate the
// protocol version with coordinators of either build); then the other
// coordinators are upgraded one by one (the leader last), and the
// upgraded cluster finishes a job with an agent still on the previous
// release. No job loses a round.
func TestRollingUpgradeMixedVersions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous release and runs five processes")
	}
	repo, prevSrc := previousSource(t)
	version, err := os.ReadFile(filepath.Join(repo, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	current := strings.TrimSpace(string(version))
	if current == previousRelease {
		t.Fatalf("VERSION says %s, the same as the previous release", current)
	}
	bins := t.TempDir()
	oldBin := buildRelease(t, prevSrc, bins, previousRelease)
	newBin := buildRelease(t, repo, bins, current)

	c := newCluster(t, 3, 2, upgradeJob("j-old"))
	c.bin = oldBin
	c.startAll()
	agentArgs := make([][]string, len(c.agents))
	for i, a := range c.agents {
		agentArgs[i] = a.proc.cmd.Args[1:]
	}
	c.waitDoneEverywhere(upgradeJobTimeout, "j-old")
	t.Logf("every process on %s finished a job", previousRelease)

	// restart replaces coordinator i's process with bin's, on the same
	// data directory and flags, and waits until it follows the leader
	// again and says it runs version.
	restart := func(i int, bin, version string) {
		t.Helper()
		c.nodes[i].proc.stop(t)
		c.bin = bin
		c.startCoordinator(i)
		c.waitNode(i, upgradeStepTimeout, c.nodes[i].id+" back on "+version, func(st coordinator.Status) bool {
			return st.Version == version && st.Leader != ""
		})
	}
	createJob := func(id string) {
		t.Helper()
		spec := upgradeJob(id)
		defaultFeatures(&spec)
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(c.dir, id+".json")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		// The previous release's CLI, against a node of either build.
		runOK(t, oldBin, c.adminArgs(c.live()[0], "--timeout", "30s", "jobs", "create", "-f", file)...)
	}

	// One coordinator (a follower) and one agent on the new release.
	leader := c.leader(upgradeStepTimeout)
	first := (leader + 1) % len(c.nodes)
	restart(first, newBin, current)
	c.agents[0].proc.stop(t)
	c.agents[0].proc = start(t, "agent-"+c.agents[0].site+" ("+current+")", newBin, agentArgs[0]...)
	createJob("j-mixed")
	js := c.waitDoneEverywhere(upgradeJobTimeout, "j-mixed")
	checkAllContributed(t, js, c)
	t.Logf("coordinators %s/%s/%s and agents %s/%s finished a job", current, previousRelease, previousRelease, current, previousRelease)

	// The rest, the leader last.
	leader = c.leader(upgradeStepTimeout)
	for i := range c.nodes {
		if i != first && i != leader {
			restart(i, newBin, current)
		}
	}
	if leader != first {
		restart(leader, newBin, current)
	}
	createJob("j-new")
	js = c.waitDoneEverywhere(upgradeJobTimeout, "j-new")
	checkAllContributed(t, js, c)

	// The leader knows each agent's build and the protocol agreed.
	var sites struct {
		Sites []coordinator.SiteView `json:"sites"`
	}
	out, err := exec.Command(newBin, c.adminArgs(c.leader(upgradeStepTimeout), "sites", "--json")...).Output()
	if err != nil || json.Unmarshal(out, &sites) != nil {
		t.Fatalf("sites: %v\n%s", err, out)
	}
	var builds []string
	for _, s := range sites.Sites {
		if s.Protocol == 0 {
			t.Errorf("site %s: no protocol version agreed: %+v", s.ID, s)
		}
		builds = append(builds, s.AgentVersion)
	}
	slices.Sort(builds)
	if want := []string{previousRelease, current}; !slices.Equal(builds, want) {
		t.Fatalf("agent builds %v, want %v", builds, want)
	}
	for i := range c.nodes {
		if st, err := c.status(i); err != nil || st.Version != current {
			t.Fatalf("%s: %v %q", c.nodes[i].id, err, st.Version)
		}
	}
	for _, a := range c.agents {
		a.proc.stop(t)
	}
	for _, n := range c.nodes {
		n.proc.stop(t)
	}
}

func upgradeJob(id string) coordinator.JobSpec {
	return coordinator.JobSpec{ID: id, Rounds: upgradeJobRounds, MinSites: 2, RoundTimeout: coordinator.Duration(time.Minute)}
}

// checkAllContributed: the job committed every round, each with every
// site.
func checkAllContributed(t *testing.T, js coordinator.JobStatus, c *cluster) {
	t.Helper()
	if js.State != coordinator.JobDone || js.CommittedRounds != upgradeJobRounds {
		t.Fatalf("job %s ended %s with %d rounds", js.ID, js.State, js.CommittedRounds)
	}
	for _, r := range js.History {
		if r.State == coordinator.RoundCommitted && len(r.Contributors) != len(c.sites) {
			t.Errorf("job %s round %d aggregated %v, want every site", js.ID, r.Round, r.Contributors)
		}
	}
}
