package compose

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/deploy/dockertest"
	"github.com/cohort-fl/cohort/sim/synth"
)

// The testbed's shape, as docker-compose.yml and config/ define it.
var (
	coordinators = []string{"c1", "c2", "c3"}
	sites        = []string{"community", "academic", "geriatric"}
	initServices = []string{"init-ca", "init-c1", "init-c2", "init-c3", "init-community", "init-academic",
		"init-geriatric", "init-token", "init-fhir"}
)

const (
	statusPort = "7402/tcp"
	adminPort  = "7443/tcp"
	// imageUser is the images' unprivileged user and group (deploy/Dockerfile).
	imageUser = 65532
	// network is the compose network's name, without the project prefix.
	network = "federation"
)

// TestComposeTestbed brings up the compose testbed (docker-compose.yml, the
// file users run) under a project name of its own, and checks:
//
//  1. `docker-compose up -d` alone brings it up: the one-shot init services
//     succeed, every coordinator and agent gets healthy by its image's
//     health check, runs as uid 65532, and every private key in the pki
//     volume is owner-only;
//  2. a job created with `docker-compose run admin` (through a follower, so
//     the request is forwarded to the leader) runs to completion, every
//     round from every site;
//  3. a second job, created through the admin API published on the host's
//     loopback, survives `docker kill` of the leader in the middle of a
//     round: the two others elect a leader, the job finishes, the killed
//     node comes back with `docker-compose start` and has the same history;
//  4. an agent cut off the network (`docker network disconnect`) is seen
//     offline by the coordinators, and once connected again it is online;
//  5. an agent whose process is killed from the host (a crash; run as root
//     only) is restarted by its restart policy and gets healthy again;
//  6. both agents contribute to every round of a third job;
//  7. a bare `docker-compose up -d` on the existing project (what users
//     type after a reboot) reruns the init services, which keep what they
//     made: the pki volume is byte for byte the same and all stays healthy.
//
// It runs only when COHORT_COMPOSE_TEST=1 (test.sh sets it), so that `go
// test ./...` does not build images and start a dozen containers next to
// deploy/dockertest on a small machine.
func TestComposeTestbed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the Cohort images and runs the compose testbed")
	}
	if os.Getenv("COHORT_COMPOSE_TEST") != "1" {
		t.Skip("set COHORT_COMPOSE_TEST=1 to run it, or run deploy/compose/test.sh")
	}
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("COHORT_COMPOSE_TEST=1 needs %s: %v", tool, err)
		}
	}
	budget := 10 * time.Minute
	if d, ok := t.Deadline(); ok {
		budget = min(budget, time.Until(d)-time.Minute)
	}
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	tb := newTestbed(ctx, t)

	done := tb.step("build the images")
	tb.buildImages()
	done()

	done = tb.step("docker-compose up -d")
	tb.up()
	done()
	done = tb.step("wait until every coordinator and agent is healthy")
	tb.waitHealthy(90*time.Second, append(slices.Clone(coordinators), sites...)...)
	done()
	tb.checkInit()
	leader := tb.leader(30 * time.Second)
	tb.logf("%s leads", leader)
	tb.loadAdminCredentials()

	// 2. A first job, through the admin service and a follower.
	follower := tb.other(leader)
	done = tb.step("job smoke (3 rounds) created with `docker-compose run admin` through follower %s, run to completion", follower)
	tb.createJobWithCLI(follower, `{"id": "smoke", "rounds": 3, "min_sites": 3}`)
	js := tb.waitJobDone("smoke", 2*time.Minute)
	checkHistory(t, js, 3, sites)
	done()

	// 3. Kill the leader while a round is open.
	const failoverRounds = 10
	done = tb.step("job failover (%d rounds) created through the admin API on the host, leader killed in a round", failoverRounds)
	tb.createJobWithAPI(tb.other(leader), "failover", failoverRounds)
	leader, st := tb.waitStatus(90*time.Second, "round 2 of failover to commit and the next one to open", func(st coordinator.Status) bool {
		j, _ := job(st, "failover")
		return st.IsLeader && j.CommittedRounds >= 2 && openRound(j)
	})
	j, _ := job(st, "failover")
	if left := failoverRounds - int(j.CommittedRounds); left < 3 {
		t.Fatalf("only %d rounds of failover left at the kill: raise failoverRounds; %s", left, summarize(st))
	}
	killed := leader
	tb.kill(killed)
	killedAt := time.Now()
	tb.logf("killed leader %s while round %d was open", killed, j.CommittedRounds+1)
	leader = tb.leader(30 * time.Second)
	tb.logf("%s leads %v after the kill", leader, since(killedAt))
	js = tb.waitJobDone("failover", 3*time.Minute)
	checkHistory(t, js, failoverRounds, sites)
	tb.logf("job failover done %v after the kill", since(killedAt))
	tb.composeStart(killed)
	tb.waitHealthy(60*time.Second, killed)
	tb.waitNode(killed, 60*time.Second, "the whole failover job", func(st coordinator.Status) bool {
		j, _ := job(st, "failover")
		return j.State == coordinator.JobDone && slices.EqualFunc(j.History, js.History, sameRound)
	})
	tb.logf("%s started again and has the job's history %v after the kill", killed, since(killedAt))
	done()

	// 4. Cut an agent off the network; it must be seen offline, then
	// online again and contribute.
	site := sites[len(sites)-1]
	done = tb.step("disconnect agent %s from the network until the coordinators see it offline", site)
	tb.disconnect(site)
	cutAt := time.Now()
	tb.waitSite(site, false, 90*time.Second)
	tb.logf("%s offline %v after the disconnect", site, since(cutAt))
	done()
	done = tb.step("reconnect agent %s; it comes back online", site)
	tb.connect(site)
	backAt := time.Now()
	tb.waitSite(site, true, 90*time.Second)
	tb.logf("%s online %v after the reconnect", site, since(backAt))
	done()

	// 5. Crash an agent: the restart policy must start it again. Only a
	// signal sent from the host will do, which needs root: Docker counts
	// `docker kill` as a manual stop, after which no policy restarts.
	crashed := sites[0]
	if os.Geteuid() == 0 {
		done = tb.step("crash agent %s (SIGKILL to its process from the host); restart: unless-stopped starts it again", crashed)
		tb.crash(crashed)
		tb.waitHealthy(60*time.Second, crashed)
		tb.waitSite(crashed, true, 60*time.Second)
		done()
	} else {
		tb.logf("not crashing an agent: signalling a container's process from the host needs root")
	}

	done = tb.step("job rejoin: every site contributes, %s after its disconnect and %s after its crash", site, crashed)
	tb.createJobWithCLI(tb.other(""), `{"id": "rejoin", "rounds": 2, "min_sites": 3}`)
	js = tb.waitJobDone("rejoin", 2*time.Minute)
	checkHistory(t, js, 2, sites)
	done()

	// 7. `up -d` again on the existing project.
	done = tb.step("`docker-compose up -d` again: the init services rerun and keep the CA, keys and token")
	pki := tb.pkiFiles()
	started := func() map[string]string {
		m := map[string]string{}
		for _, svc := range initServices {
			m[svc] = tb.docker("inspect", "--format", "{{.State.StartedAt}}", tb.id(svc))
		}
		return m
	}
	before := started()
	tb.up()
	tb.waitFor(60*time.Second, "the init services to finish again", func() (bool, string) {
		var running []string
		for _, svc := range initServices {
			if st := tb.docker("inspect", "--format", "{{.State.Status}}", tb.id(svc)); st != "exited" {
				running = append(running, svc+" "+st)
			}
		}
		return len(running) == 0, strings.Join(running, ", ")
	})
	tb.checkInit()
	for svc, at := range started() {
		if at == before[svc] {
			t.Errorf("init service %s did not run again (started %s)", svc, at)
		}
	}
	if again := tb.pkiFiles(); !maps.Equal(again, pki) {
		t.Errorf("the init services changed the pki volume: %d files before, %d after", len(pki), len(again))
	}
	tb.waitHealthy(60*time.Second, append(slices.Clone(coordinators), sites...)...)
	done()

	// The end: everything still runs, and nothing panicked.
	for _, svc := range append(slices.Clone(coordinators), sites...) {
		if h := tb.health(svc); h != "healthy" {
			t.Errorf("%s is %s at the end", svc, h)
		}
		if logs := dockertest.Logs(ctx, tb.id(svc), 100000); strings.Contains(logs, "panic:") {
			t.Errorf("%s panicked", svc)
		}
	}
	tb.logf("all checks done")
}

// testbed is one compose project of the test. Its methods run on the
// test's goroutine and fail the test on error.
type testbed struct {
	t       *testing.T
	ctx     context.Context
	began   time.Time
	repo    string
	project string
	tag     string
	env     []string
	ids     map[string]string // service -> container id
	admin   *http.Client
	token   string
}

// newTestbed names the project and the image tag (COHORT_COMPOSE_PROJECT
// and COHORT_COMPOSE_TAG, as test.sh sets them, or random ones) and
// registers the teardown: the last logs of every service if the test
// failed, then `docker-compose down -v --remove-orphans` and the removal
// of the image tags.
func newTestbed(ctx context.Context, t *testing.T) *testbed {
	t.Helper()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	suffix := randomSuffix()
	tb := &testbed{t: t, ctx: ctx, began: time.Now(), repo: repo, ids: map[string]string{},
		project: envOr("COHORT_COMPOSE_PROJECT", "cohortci-"+suffix), tag: envOr("COHORT_COMPOSE_TAG", "ci-"+suffix)}
	tb.env = append(os.Environ(), "COMPOSE_PROJECT_NAME="+tb.project, "COHORT_TAG="+tb.tag)
	// Docker picks free host ports: the test must not depend on 7402,
	// 7443 and the others being free.
	for _, c := range []string{"C1", "C2", "C3"} {
		tb.env = append(tb.env, "COHORT_"+c+"_STATUS_PORT=", "COHORT_"+c+"_ADMIN_PORT=")
	}
	tb.logf("project %s, images cohort:%s, cohort-coordinator:%s, cohort-agent:%s", tb.project, tb.tag, tb.tag, tb.tag)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if t.Failed() {
			services := append(append(slices.Clone(initServices), coordinators...), sites...)
			for _, svc := range services {
				out, _ := tb.composeOutput(cctx, nil, "logs", "--no-color", "--tail", "60", svc)
				t.Logf("--- last 60 log lines of %s ---\n%s", svc, out)
			}
		}
		done := tb.step("docker-compose down -v --remove-orphans")
		if out, err := tb.composeOutput(cctx, nil, "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("docker-compose down: %v\n%s", err, out)
		}
		label := "label=com.docker.compose.project=" + tb.project
		for _, kind := range []string{"container", "volume", "network"} {
			args := []string{kind, "ls", "-q", "--filter", label}
			if kind == "container" {
				args = []string{"ps", "-aq", "--filter", label}
			}
			if out, err := dockertest.Docker(cctx, args...); err != nil || out != "" {
				t.Errorf("after docker-compose down, %ss of %s remain: %q %v", kind, tb.project, out, err)
			}
		}
		for _, img := range tb.images() {
			if _, err := dockertest.Docker(cctx, "image", "inspect", "--format", "{{.Id}}", img); err != nil {
				continue // never built
			}
			if _, err := dockertest.Docker(cctx, "image", "rm", img); err != nil {
				t.Errorf("remove image tag: %v", err)
			}
		}
		done()
	})
	return tb
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// logf logs with the time since the test began.
func (tb *testbed) logf(format string, args ...any) {
	tb.t.Helper()
	tb.t.Logf("[%6.1fs] %s", time.Since(tb.began).Seconds(), fmt.Sprintf(format, args...))
}

// step logs the start of a step and returns the function that logs its end
// with its duration.
func (tb *testbed) step(format string, args ...any) func() {
	tb.t.Helper()
	name := fmt.Sprintf(format, args...)
	start := time.Now()
	tb.logf("== %s", name)
	return func() {
		tb.t.Helper()
		tb.logf("== %s: done in %v", name, since(start))
	}
}

// images are the three tags deploy/build-image.sh makes.
func (tb *testbed) images() []string {
	return []string{"cohort:" + tb.tag, "cohort-coordinator:" + tb.tag, "cohort-agent:" + tb.tag}
}

// buildImages runs deploy/build-image.sh. The build date is fixed, so that
// a build of unchanged code reuses the builder's cached layers.
func (tb *testbed) buildImages() {
	tb.t.Helper()
	cmd := exec.CommandContext(tb.ctx, filepath.Join(tb.repo, "deploy", "build-image.sh"), "cohort:"+tb.tag)
	cmd.Env = append(os.Environ(), "VERSION=composetest", "SOURCE_DATE_EPOCH=0")
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.t.Fatalf("deploy/build-image.sh: %v\n%s", err, out)
	}
}

// composeOutput runs docker-compose on the testbed's file and project and
// returns what it wrote on stdout; the error holds its stderr.
func (tb *testbed) composeOutput(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	file := filepath.Join(tb.repo, "deploy", "compose", "docker-compose.yml")
	cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", tb.project, "-f", file}, args...)...)
	cmd.Env = tb.env
	cmd.Stdin = stdin
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker-compose %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (tb *testbed) compose(stdin io.Reader, args ...string) string {
	tb.t.Helper()
	out, err := tb.composeOutput(tb.ctx, stdin, args...)
	if err != nil {
		tb.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func (tb *testbed) docker(args ...string) string {
	tb.t.Helper()
	out, err := dockertest.Docker(tb.ctx, args...)
	if err != nil {
		tb.t.Fatal(err)
	}
	return out
}

// up runs `docker-compose up -d`, which returns once the init services
// completed, the coordinators are healthy and the agents started.
func (tb *testbed) up() {
	tb.t.Helper()
	tb.compose(nil, "up", "-d")
	out := tb.docker("ps", "-a", "--filter", "label=com.docker.compose.project="+tb.project,
		"--format", `{{.Label "com.docker.compose.service"}} {{.ID}}`)
	for _, line := range strings.Split(out, "\n") {
		if svc, id, ok := strings.Cut(line, " "); ok {
			tb.ids[svc] = id
		}
	}
	for _, svc := range append(append(slices.Clone(initServices), coordinators...), sites...) {
		if tb.ids[svc] == "" {
			tb.t.Fatalf("no container for service %s: %s", svc, out)
		}
	}
}

// id is the container of a service.
func (tb *testbed) id(svc string) string { return tb.ids[svc] }

// health is a container's health status ("healthy", "unhealthy",
// "starting"), or its state if it has no health check.
func (tb *testbed) health(svc string) string {
	out, err := dockertest.Docker(tb.ctx, "inspect", "--format",
		"{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", tb.id(svc))
	if err != nil {
		return err.Error()
	}
	return out
}

func (tb *testbed) waitHealthy(timeout time.Duration, services ...string) {
	tb.t.Helper()
	tb.waitFor(timeout, "healthy "+strings.Join(services, ", "), func() (bool, string) {
		var bad []string
		for _, svc := range services {
			if h := tb.health(svc); h != "healthy" {
				bad = append(bad, svc+" "+h)
			}
		}
		return len(bad) == 0, strings.Join(bad, ", ")
	})
}

// checkInit checks the one-shot services' exit codes, the user every
// container runs as, and the pki volume's private keys: owned by the
// images' user and owner-only.
func (tb *testbed) checkInit() {
	tb.t.Helper()
	for _, svc := range initServices {
		if out := tb.docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", tb.id(svc)); out != "exited 0" {
			tb.t.Errorf("init service %s: %s, want exited 0", svc, out)
		}
	}
	for _, svc := range append(slices.Clone(coordinators), sites...) {
		if u := tb.docker("inspect", "--format", "{{.Config.User}}", tb.id(svc)); u != fmt.Sprintf("%d:%d", imageUser, imageUser) {
			tb.t.Errorf("%s runs as %q, want the image's user %d", svc, u, imageUser)
		}
	}
	var keys []string
	tb.readTar(tb.id("c1"), "/etc/cohort", func(h *tar.Header, _ []byte) {
		if h.Typeflag != tar.TypeReg || !(strings.HasSuffix(h.Name, ".key") || strings.HasSuffix(h.Name, ".token")) {
			return
		}
		keys = append(keys, h.Name)
		if h.Uid != imageUser || h.Mode&0o077 != 0 {
			tb.t.Errorf("%s: owner %d, mode %o; want owner %d, owner-only", h.Name, h.Uid, h.Mode, imageUser)
		}
	})
	if len(keys) != 1+len(coordinators)+len(sites)+1 {
		tb.t.Errorf("secrets in the pki volume: %v, want the CA's, one per coordinator and site, and the admin token", keys)
	}
	tb.logf("init services exited 0; containers run as %d; %d secrets in the pki volume, all owner-only", imageUser, len(keys))
}

// pkiFiles returns the SHA-256 of every file in the pki volume.
func (tb *testbed) pkiFiles() map[string][32]byte {
	tb.t.Helper()
	m := map[string][32]byte{}
	tb.readTar(tb.id("c1"), "/etc/cohort", func(h *tar.Header, b []byte) {
		if h.Typeflag == tar.TypeReg {
			m[h.Name] = sha256.Sum256(b)
		}
	})
	return m
}

// readTar calls f for every entry of `docker cp CONTAINER:PATH -`.
func (tb *testbed) readTar(container, path string, f func(*tar.Header, []byte)) {
	tb.t.Helper()
	cmd := exec.CommandContext(tb.ctx, "docker", "cp", container+":"+path, "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.t.Fatalf("docker cp %s:%s: %v: %s", container, path, err, stderr.String())
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			tb.t.Fatalf("docker cp %s:%s: %v", container, path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			tb.t.Fatal(err)
		}
		f(h, b)
	}
}

// loadAdminCredentials reads the CA certificate and the bootstrap admin
// token from the pki volume, as an operator would with `docker cp`.
func (tb *testbed) loadAdminCredentials() {
	tb.t.Helper()
	var caPEM []byte
	tb.readTar(tb.id("c1"), "/etc/cohort/ca/ca.crt", func(_ *tar.Header, b []byte) { caPEM = b })
	tb.readTar(tb.id("c1"), "/etc/cohort/bootstrap-admin.token", func(_ *tar.Header, b []byte) { tb.token = strings.TrimSpace(string(b)) })
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) || tb.token == "" {
		tb.t.Fatalf("no CA certificate or no token in the pki volume")
	}
	tb.admin = &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// hostAddr is the host address (on 127.0.0.1) a coordinator's port is
// published at. Docker picks a new one at every start.
func (tb *testbed) hostAddr(svc, port string) (string, error) {
	out, err := dockertest.Docker(tb.ctx, "port", tb.id(svc), port)
	if err != nil {
		return "", err
	}
	addr, _, _ := strings.Cut(out, "\n")
	return addr, nil
}

// status reads a coordinator's own view (a stale read, answered whether or
// not it leads) through its status port.
func (tb *testbed) status(svc string) (coordinator.Status, error) {
	var st coordinator.Status
	addr, err := tb.hostAddr(svc, statusPort)
	if err != nil {
		return st, err
	}
	req, err := http.NewRequestWithContext(tb.ctx, http.MethodGet, "http://"+addr+"/v1/status?stale=true", nil)
	if err != nil {
		return st, err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status of %s: %s", svc, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// running reports whether a coordinator's container runs and is on the
// network, i.e. whether its status is worth asking.
func (tb *testbed) running(svc string) bool {
	out, err := dockertest.Docker(tb.ctx, "inspect", "--format", "{{.State.Running}}", tb.id(svc))
	return err == nil && out == "true"
}

// waitStatus polls the running coordinators until one's status satisfies
// cond, and returns it.
func (tb *testbed) waitStatus(timeout time.Duration, what string, cond func(coordinator.Status) bool) (string, coordinator.Status) {
	tb.t.Helper()
	var (
		node string
		got  coordinator.Status
	)
	tb.waitFor(timeout, what, func() (bool, string) {
		var last []string
		for _, c := range coordinators {
			if !tb.running(c) {
				continue
			}
			st, err := tb.status(c)
			if err != nil {
				last = append(last, fmt.Sprintf("%s: %v", c, err))
				continue
			}
			if cond(st) {
				node, got = c, st
				return true, ""
			}
			last = append(last, summarize(st))
		}
		return false, strings.Join(last, "; ")
	})
	return node, got
}

// waitNode polls one coordinator until cond holds for its status.
func (tb *testbed) waitNode(svc string, timeout time.Duration, what string, cond func(coordinator.Status) bool) {
	tb.t.Helper()
	tb.waitFor(timeout, what+" on "+svc, func() (bool, string) {
		st, err := tb.status(svc)
		if err != nil {
			return false, err.Error()
		}
		return cond(st), summarize(st)
	})
}

// leader waits until a running coordinator says it leads and every other
// running one that knows a leader names it.
func (tb *testbed) leader(timeout time.Duration) string {
	tb.t.Helper()
	var leader string
	tb.waitFor(timeout, "an agreed leader", func() (bool, string) {
		names := map[string]int{}
		var last []string
		self := ""
		for _, c := range coordinators {
			if !tb.running(c) {
				continue
			}
			st, err := tb.status(c)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", c, err)
			}
			last = append(last, summarize(st))
			if st.IsLeader {
				self = st.Node
			}
			if st.Leader != "" {
				names[st.Leader]++
			}
		}
		if self == "" || len(names) != 1 || names[self] == 0 {
			return false, strings.Join(last, "; ")
		}
		leader = self
		return true, ""
	})
	return leader
}

// other is a running coordinator other than not.
func (tb *testbed) other(not string) string {
	tb.t.Helper()
	for _, c := range coordinators {
		if c != not && tb.running(c) {
			return c
		}
	}
	tb.t.Fatalf("no running coordinator other than %q", not)
	return ""
}

// createJobWithCLI creates a job with `cohort admin jobs create -f -` in
// the compose file's admin service, against the given coordinator.
func (tb *testbed) createJobWithCLI(via, spec string) {
	tb.t.Helper()
	out := tb.compose(strings.NewReader(spec), "run", "--rm", "-T", "admin", "--server", "https://"+via+":7443", "jobs", "create", "-f", "-")
	tb.logf("docker-compose run --rm -T admin --server https://%s:7443 jobs create -f -: %s", via, lastLine(out))
}

// createJobWithAPI creates a training job with POST /v1/jobs on the
// coordinator's admin port published on the host, with rounds of about
// half a second (200 local epochs) so that the test can act while one is
// open.
func (tb *testbed) createJobWithAPI(via, id string, rounds int) {
	tb.t.Helper()
	spec := coordinator.DefaultJobSpec()
	spec.Train.LocalEpochs = 200
	body, err := json.Marshal(map[string]any{
		"id": id, "rounds": rounds, "min_sites": len(sites), "round_timeout": "2m",
		"train": spec.Train, "features": coordinator.FeatureSpec{FeatureSpec: synth.DefaultFeatureSpec()},
	})
	if err != nil {
		tb.t.Fatal(err)
	}
	var js coordinator.JobStatus
	if code, raw := tb.api(via, http.MethodPost, "/v1/jobs", body, &js); code != http.StatusOK && code != http.StatusCreated {
		tb.t.Fatalf("POST /v1/jobs on %s: %d %s", via, code, raw)
	}
	addr, _ := tb.hostAddr(via, adminPort)
	tb.logf("POST https://%s/v1/jobs (%s's admin port on the host): job %s %s", addr, via, js.ID, js.State)
}

// api calls the admin API of a coordinator through its published port.
func (tb *testbed) api(via, method, path string, body []byte, out any) (int, string) {
	tb.t.Helper()
	addr, err := tb.hostAddr(via, adminPort)
	if err != nil {
		tb.t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(tb.ctx, method, "https://"+addr+path, bytes.NewReader(body))
	if err != nil {
		tb.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tb.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := tb.admin.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 && out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

// waitJobDone waits until a running coordinator that leads reports the job
// finished, and returns its status.
func (tb *testbed) waitJobDone(id string, timeout time.Duration) coordinator.JobStatus {
	tb.t.Helper()
	_, st := tb.waitStatus(timeout, "job "+id+" to finish", func(st coordinator.Status) bool {
		j, ok := job(st, id)
		return st.IsLeader && ok && j.State != coordinator.JobRunning && j.State != ""
	})
	j, _ := job(st, id)
	return j
}

// waitSite waits until the admin API reports the site online (or not).
func (tb *testbed) waitSite(site string, online bool, timeout time.Duration) {
	tb.t.Helper()
	tb.waitFor(timeout, fmt.Sprintf("site %s online=%v", site, online), func() (bool, string) {
		var v coordinator.SiteView
		code, raw := tb.api(tb.other(""), http.MethodGet, "/v1/sites/"+site, nil, &v)
		if code != http.StatusOK {
			return false, fmt.Sprintf("%d %s", code, raw)
		}
		return v.Online == online, fmt.Sprintf("online %v, last seen %s", v.Online, v.LastSeen.Format(time.RFC3339))
	})
}

// kill sends SIGKILL to a service's container, as a crash would. The
// restart policy does not apply: Docker counts `docker kill` as a manual
// stop.
func (tb *testbed) kill(svc string) { tb.t.Helper(); tb.docker("kill", tb.id(svc)) }

// crash sends SIGKILL to a service's process from the host (a crash, not a
// stop), and waits until Docker has restarted the container.
func (tb *testbed) crash(svc string) {
	tb.t.Helper()
	restarts := func() string { return tb.docker("inspect", "--format", "{{.RestartCount}}", tb.id(svc)) }
	before := restarts()
	pid, err := strconv.Atoi(tb.docker("inspect", "--format", "{{.State.Pid}}", tb.id(svc)))
	if err != nil || pid <= 0 {
		tb.t.Fatalf("%s: no process to crash (pid %d, %v)", svc, pid, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		tb.t.Fatalf("kill %s's process %d: %v", svc, pid, err)
	}
	tb.waitFor(30*time.Second, svc+" restarted by its restart policy", func() (bool, string) {
		state := tb.docker("inspect", "--format", "{{.State.Status}}", tb.id(svc))
		now := restarts()
		return now != before && state == "running", fmt.Sprintf("%s, %s restarts (%s before)", state, now, before)
	})
	tb.logf("%s's process %d killed; Docker restarted the container (restart count %s)", svc, pid, restarts())
}

func (tb *testbed) composeStart(svc string) {
	tb.t.Helper()
	tb.compose(nil, "start", svc)
}

func (tb *testbed) disconnect(svc string) {
	tb.t.Helper()
	tb.docker("network", "disconnect", tb.project+"_"+network, tb.id(svc))
}

// connect puts a container back on the network under its service name.
func (tb *testbed) connect(svc string) {
	tb.t.Helper()
	tb.docker("network", "connect", "--alias", svc, tb.project+"_"+network, tb.id(svc))
}

// waitFor polls cond every 250 ms until it holds, and fails the test with
// what and cond's last detail if timeout passes first.
func (tb *testbed) waitFor(timeout time.Duration, what string, cond func() (ok bool, detail string)) {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, detail)
		}
		select {
		case <-tb.ctx.Done():
			tb.t.Fatalf("waiting for %s: %v; last: %s", what, tb.ctx.Err(), detail)
		case <-tick.C:
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// job returns the named job's status, or false.
func job(st coordinator.Status, id string) (coordinator.JobStatus, bool) {
	for _, j := range st.Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return coordinator.JobStatus{}, false
}

// openRound reports whether a training round of the job is open.
func openRound(j coordinator.JobStatus) bool {
	for _, r := range j.History {
		if r.State == coordinator.RoundOpen && r.Kind != coordinator.KindStats {
			return true
		}
	}
	return false
}

// summarize is a one-line view of a status for failure messages.
func summarize(st coordinator.Status) string {
	var jobs []string
	for _, j := range st.Jobs {
		jobs = append(jobs, fmt.Sprintf("%s %s %d/%d", j.ID, j.State, j.CommittedRounds, j.Rounds))
	}
	return fmt.Sprintf("%s (leader %q): [%s]", st.Node, st.Leader, strings.Join(jobs, ", "))
}

// sameRound compares two round summaries on what every node must agree on.
func sameRound(a, b coordinator.RoundSummary) bool {
	return a.Round == b.Round && a.Attempt == b.Attempt && a.State == b.State && a.Model == b.Model &&
		slices.Equal(a.Contributors, b.Contributors)
}

// checkHistory checks that the job is done with rounds 1..rounds each
// committed exactly once, every one aggregated from every site.
func checkHistory(t *testing.T, js coordinator.JobStatus, rounds int, sites []string) {
	t.Helper()
	var problems []string
	if js.State != coordinator.JobDone || js.CommittedRounds != uint64(rounds) {
		problems = append(problems, fmt.Sprintf("job %s ended %s with %d of %d rounds (%s)", js.ID, js.State, js.CommittedRounds, rounds, js.FailReason))
	}
	want := slices.Sorted(slices.Values(sites))
	commits := map[uint64]int{}
	for _, r := range js.History {
		if r.Kind == coordinator.KindStats || r.State != coordinator.RoundCommitted {
			continue
		}
		commits[r.Round]++
		if got := slices.Sorted(slices.Values(r.Contributors)); !slices.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("round %d aggregated %v, want %v", r.Round, got, want))
		}
	}
	for r := uint64(1); r <= uint64(rounds); r++ {
		if commits[r] != 1 {
			problems = append(problems, fmt.Sprintf("round %d was committed %d times, want once", r, commits[r]))
		}
	}
	if len(commits) != rounds {
		problems = append(problems, fmt.Sprintf("%d distinct rounds committed, want %d", len(commits), rounds))
	}
	if len(problems) > 0 {
		t.Fatalf("%s\nhistory: %+v", strings.Join(problems, "\n"), js.History)
	}
}
