package sim

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// procAgent is a site's agent running as a separate process (`cohort
// agent`), for testbeds whose sites must not share the simulator's
// process: its own runtime, heap, scheduler and sockets, killed with
// SIGKILL when the site drops out.
type procAgent struct {
	site    string
	dataDir string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // set before done closes
}

// startProcAgent starts site's agent process with the given command
// (e.g. the cohort binary and "agent"); its stderr goes to logFile.
func (f *federation) startProcAgent(site string) (*procAgent, error) {
	files, err := f.issue(pki.RoleSite, site)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(f.cfg.Dir, "agents", site)
	if err := writeSeededKey(filepath.Join(dataDir, "pseudonym.key"), f.cfg.Seed, site); err != nil {
		return nil, err
	}
	args := append([]string(nil), f.cfg.AgentCommand[1:]...)
	args = append(args, "--data-dir", dataDir, "--ca", files.CA, "--cert", files.Cert, "--key", files.Key,
		"--log-level", "warn")
	if f.cfg.DataDir != "" {
		args = append(args, "--fhir-dir", filepath.Join(f.cfg.DataDir, site))
	}
	for _, a := range f.agentAddrs(site) {
		args = append(args, "--coordinator", a)
	}
	logf, err := os.OpenFile(filepath.Join(f.cfg.Dir, "agents", site+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(f.cfg.AgentCommand[0], args...) // #nosec G204 -- the simulator runs the agent command its operator configured (agent_command)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C to the simulator reaches
	// the simulator, which then stops its agents itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start agent %s: %w", site, err)
	}
	p := &procAgent{site: site, dataDir: dataDir, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// kill stops the process at once (SIGKILL, as a crash or power loss
// would) and waits for it.
func (p *procAgent) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop asks the process to stop (SIGTERM) and waits for it.
func (p *procAgent) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && !ee.Exited() {
		return nil // ended by the signal
	}
	return p.err
}

// bytesSent is what the process reported sending in its status file.
func (p *procAgent) bytesSent() int64 {
	st, err := agent.ReadStatus(p.dataDir)
	if err != nil {
		return 0
	}
	return st.BytesSent
}

// procAgents are the federation's agent processes, running or ended.
type procAgents struct {
	mu      sync.Mutex
	running map[string]*procAgent
	ended   []*procAgent
}
