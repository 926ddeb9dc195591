package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/coordinator"
)

// coordinatorFile is the config file of `cohort coordinator --config`:
// cmd/cohort's coordinatorFile, which package main cannot export.
type coordinatorFile struct {
	coordinator.Config
	Bootstrap bool               `json:"bootstrap"`
	Peers     []coordinator.Peer `json:"peers"`
	LogLevel  string             `json:"log_level"`
}

// agentFile is the config file of `cohort agent --config` (cmd/cohort's
// agentFile).
type agentFile struct {
	agent.Config
	LogLevel string `json:"log_level"`
}

// cohortBin is the cohort binary the tests ask for effective configs
// (cohort coordinator|agent --check-config), built once by TestMain.
var cohortBin string

func TestMain(m *testing.M) {
	os.Exit(runWithBinary(m))
}

func runWithBinary(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cohort-k8s-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cohortBin = filepath.Join(dir, "cohort")
	// Built as the other packages' tests build it, so the build cache
	// serves all of them.
	cmd := exec.Command("go", "build", "-o", cohortBin, "github.com/cohort-fl/cohort/cmd/cohort")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build cohort: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// effectiveConfig runs `cohort SUB ARGS --check-config` with the config
// file's content in place of --config's file, as the pod would run it but
// without starting, and decodes the effective configuration it prints
// (unknown fields are errors) into out. The binary decodes, applies the
// flags, fills the defaults and validates: an error is its message.
func effectiveConfig(t *testing.T, sub string, config []byte, args []string, out any) error {
	t.Helper()
	file := filepath.Join(t.TempDir(), sub+".json")
	if err := os.WriteFile(file, config, 0o600); err != nil {
		t.Fatal(err)
	}
	argv := []string{sub}
	for _, a := range args {
		if strings.HasPrefix(a, "--config=") {
			a = "--config=" + file
		}
		argv = append(argv, a)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(cohortBin, append(argv, "--check-config")...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cohort %s --check-config: %v: %s", sub, err, strings.TrimSpace(stderr.String()))
	}
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("cohort %s --check-config printed what does not decode: %v", sub, err)
	}
	return nil
}

// pod is one pod of a workload as the kubelet would run it: its name and
// namespace, from which the downward API env vars come.
type pod struct {
	w         workload
	name, ns  string
	configMap func(ns, name string) *corev1.ConfigMap
}

// env returns c's env vars in this pod; a secret's value is a placeholder.
func (p pod) env(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(t, e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = p.name
			case "metadata.namespace":
				env[e.Name] = p.ns
			default:
				t.Errorf("container %s: env %s: fieldPath %s is not handled by this test", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "<secret " + e.ValueFrom.SecretKeyRef.Name + ">"
		default:
			t.Errorf("container %s: env %s: valueFrom is not handled by this test", c.Name, e.Name)
		}
	}
	return env
}

// expand substitutes $(VAR) as Kubernetes does in command, args and env
// values (unknown references are reported by checkVarRefs).
func expand(t *testing.T, s string, env map[string]string) string {
	t.Helper()
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// mountOf returns the volume mount of c that holds file p (the longest
// mount path that contains it), the volume, and p relative to the mount.
func (p pod) mountOf(c *corev1.Container, file string) (corev1.VolumeMount, *corev1.Volume, string, bool) {
	var best corev1.VolumeMount
	var rel string
	found := false
	for _, vm := range c.VolumeMounts {
		r, ok := strings.CutPrefix(path.Clean(file), strings.TrimSuffix(vm.MountPath, "/")+"/")
		if ok && (!found || len(vm.MountPath) > len(best.MountPath)) {
			best, rel, found = vm, r, true
		}
	}
	if !found {
		return corev1.VolumeMount{}, nil, "", false
	}
	for i := range p.w.pod.Spec.Volumes {
		if v := &p.w.pod.Spec.Volumes[i]; v.Name == best.Name {
			return best, v, rel, true
		}
	}
	return best, nil, rel, true // a volumeClaimTemplate
}

// installed returns the files the pod's init containers copy with
// `install -m MODE -t DIR SOURCE...`, by volume name and file name, with
// their mode; the sources must come from Secret volumes.
func (p pod) installed(t *testing.T) map[string]map[string]os.FileMode {
	t.Helper()
	out := map[string]map[string]os.FileMode{}
	for i := range p.w.pod.Spec.InitContainers {
		c := &p.w.pod.Spec.InitContainers[i]
		env := p.env(t, c)
		cmd := append(slices.Clone(c.Command), c.Args...)
		for j := range cmd {
			cmd[j] = expand(t, cmd[j], env)
		}
		if len(cmd) == 0 || cmd[0] != "install" {
			t.Errorf("init container %s: %q is not `install -m MODE -t DIR FILE...`, which this test understands", c.Name, cmd)
			continue
		}
		var mode os.FileMode = 0o755 // install's default
		var dir string
		var sources []string
		for j := 1; j < len(cmd); j++ {
			switch {
			case cmd[j] == "-m" && j+1 < len(cmd):
				m, err := strconv.ParseUint(cmd[j+1], 8, 32)
				if err != nil {
					t.Errorf("init container %s: mode %q: %v", c.Name, cmd[j+1], err)
				}
				mode = os.FileMode(m)
				j++
			case cmd[j] == "-t" && j+1 < len(cmd):
				dir = cmd[j+1]
				j++
			case strings.HasPrefix(cmd[j], "-"):
				t.Errorf("init container %s: install option %s is not understood by this test", c.Name, cmd[j])
			default:
				sources = append(sources, cmd[j])
			}
		}
		_, dst, _, ok := p.mountOf(c, path.Join(dir, "x"))
		if !ok || dst == nil || dst.EmptyDir == nil || dst.EmptyDir.Medium != corev1.StorageMediumMemory {
			t.Errorf("init container %s: -t %s is not an in-memory emptyDir volume", c.Name, dir)
			continue
		}
		for _, src := range sources {
			if _, v, _, ok := p.mountOf(c, src); !ok || v == nil || (v.Secret == nil && v.Projected == nil) {
				t.Errorf("init container %s: %s is not in a Secret volume", c.Name, src)
			}
			if out[dst.Name] == nil {
				out[dst.Name] = map[string]os.FileMode{}
			}
			out[dst.Name][path.Base(src)] = mode
		}
	}
	return out
}

// checkFile checks that file, which the Cohort container c reads, is a
// copy an init container installed (see installed), owner-only if it is
// secret.
func (p pod) checkFile(t *testing.T, c *corev1.Container, installed map[string]map[string]os.FileMode, what, file string, secret bool) {
	t.Helper()
	_, v, rel, ok := p.mountOf(c, file)
	if !ok || v == nil {
		t.Errorf("%s: %s %s is on no volume of container %s", p.name, what, file, c.Name)
		return
	}
	mode, ok := installed[v.Name][rel]
	switch {
	case !ok:
		t.Errorf("%s: %s %s: no init container installs %s into volume %s", p.name, what, file, rel, v.Name)
	case secret && mode&0o077 != 0:
		t.Errorf("%s: %s %s is installed with mode %04o; Cohort refuses it unless it is owner-only", p.name, what, file, mode)
	}
}

// checkDataDir checks that dir is a persistent, writable volume of c.
func (p pod) checkDataDir(t *testing.T, c *corev1.Container, dir string) {
	t.Helper()
	vm, v, _, ok := p.mountOf(c, path.Join(dir, "x"))
	switch {
	case !ok:
		t.Errorf("%s: data_dir %s is on no volume", p.name, dir)
	case vm.ReadOnly:
		t.Errorf("%s: data_dir %s is mounted read-only", p.name, dir)
	case v != nil && v.PersistentVolumeClaim == nil:
		t.Errorf("%s: data_dir %s is on volume %s, which is not persistent", p.name, dir, v.Name)
	case v == nil && !slices.ContainsFunc(p.w.claims, func(c corev1.PersistentVolumeClaim) bool { return c.Name == vm.Name }):
		t.Errorf("%s: data_dir %s is on volume %s, which is neither declared nor a volumeClaimTemplate", p.name, dir, vm.Name)
	}
}

// checkListen checks that addr listens on the pod's IP (probes, Services
// and Prometheus reach it there) on the container port called portName.
func (p pod) checkListen(t *testing.T, c *corev1.Container, field, addr, portName string, proto corev1.Protocol) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: %s %q: %v", p.name, field, addr, err)
		return
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		t.Errorf("%s: %s %q must listen on 0.0.0.0: probes, Services and Prometheus reach the pod on its pod IP", p.name, field, addr)
	}
	i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == portName })
	if i < 0 {
		t.Errorf("%s: container %s has no port called %s for %s", p.name, c.Name, portName, field)
		return
	}
	if fmt.Sprint(c.Ports[i].ContainerPort) != port || protocol(c.Ports[i].Protocol) != proto {
		t.Errorf("%s: %s %q, but container port %s is %d/%s", p.name, field, addr, portName, c.Ports[i].ContainerPort, protocol(c.Ports[i].Protocol))
	}
}

// config returns the config file that --config=PATH in args names, read
// from the ConfigMap mounted there.
func (p pod) config(t *testing.T, c *corev1.Container, args []string) []byte {
	t.Helper()
	var file string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			file = v
		}
	}
	if file == "" {
		t.Fatalf("container %s: no --config=FILE in args %q", c.Name, args)
	}
	_, v, rel, ok := p.mountOf(c, file)
	if !ok || v == nil || v.ConfigMap == nil {
		t.Fatalf("container %s: --config=%s is not in a ConfigMap volume", c.Name, file)
	}
	cm := p.configMap(p.ns, v.ConfigMap.Name)
	if cm == nil {
		t.Fatalf("container %s: no ConfigMap %s", c.Name, v.ConfigMap.Name)
	}
	data, ok := cm.Data[rel]
	if !ok {
		t.Fatalf("container %s: --config=%s: ConfigMap %s has no key %s (it has %v)", c.Name, file, cm.Name, rel, sortedKeys(cm.Data))
	}
	return []byte(data)
}

// TestCohortConfigs has the cohort binary read the config file of every
// Cohort container with the args each pod gets (--check-config: decoded,
// flags applied, defaults filled, validated, not started), and checks that
// the effective configuration fits the pod: ports, volumes, Secrets, Raft
// peers, and the agents' coordinator addresses.
func TestCohortConfigs(t *testing.T) {
	ms := loadManifests(t)
	cms, _ := objects[corev1.ConfigMap](ms)
	configMap := func(ns, name string) *corev1.ConfigMap {
		for _, cm := range cms {
			if cm.Namespace == ns && cm.Name == name {
				return cm
			}
		}
		return nil
	}
	var advertised, dialled []string // the coordinators' agent addresses, and the agents'
	var sawCoordinator, sawAgent bool
	for _, w := range workloads(t, ms) {
		names := w.podNames()
		if names == nil { // a Deployment's pod: its name is random, and nothing here uses it
			names = []string{w.meta.Name + "-7d9c4b5f6-x2x8q"}
		}
		for i := range w.pod.Spec.Containers {
			c := &w.pod.Spec.Containers[i]
			if !isCohort(c) || len(c.Args) == 0 {
				continue
			}
			switch c.Args[0] {
			case "coordinator":
				sawCoordinator = true
				if w.sts == nil {
					t.Errorf("%s: run coordinators in a StatefulSet (stable ids, names and volumes)", w)
					continue
				}
				var peers []coordinator.Peer
				for ordinal, name := range names {
					t.Run(name, func(t *testing.T) {
						p := pod{w: w, name: name, ns: w.meta.Namespace, configMap: configMap}
						f := checkCoordinator(t, p, c, ordinal)
						if ordinal == 0 {
							peers = f.Peers
						} else if !slices.Equal(f.Peers, peers) {
							t.Errorf("peers differ between pods: %v and %v", f.Peers, peers)
						}
						advertised = append(advertised, f.AgentAdvertise)
					})
				}
			case "agent":
				sawAgent = true
				t.Run(names[0], func(t *testing.T) {
					p := pod{w: w, name: names[0], ns: w.meta.Namespace, configMap: configMap}
					f := checkAgent(t, p, c)
					dialled = append(dialled, f.Coordinators...)
				})
			default:
				t.Errorf("%s: container %s runs `cohort %s`, which this test does not check", w, c.Name, c.Args[0])
			}
		}
	}
	if !sawCoordinator || !sawAgent {
		t.Fatalf("want a coordinator and an agent among the manifests (coordinator %v, agent %v)", sawCoordinator, sawAgent)
	}
	slices.Sort(advertised)
	slices.Sort(dialled)
	if !slices.Equal(advertised, dialled) {
		t.Errorf("the agent dials %q, but the coordinator pods advertise %q: agents must know every coordinator's address", dialled, advertised)
	}
}

func checkCoordinator(t *testing.T, p pod, c *corev1.Container, ordinal int) coordinatorFile {
	t.Helper()
	env := p.env(t, c)
	args := make([]string, len(c.Args)-1)
	for i, a := range c.Args[1:] {
		args[i] = expand(t, a, env)
	}
	var f coordinatorFile
	if err := effectiveConfig(t, "coordinator", p.config(t, c, args), args, &f); err != nil {
		t.Fatal(err)
	}
	if f.ID != p.name {
		t.Errorf("id %q, want the pod name %q", f.ID, p.name)
	}

	// Raft: every pod bootstraps with the same voters, one per pod, each
	// dialled at its pod's name in the headless Service.
	sts := p.w.sts.Spec
	wantHost := fmt.Sprintf("%s.%s.%s.svc", p.name, sts.ServiceName, p.ns)
	if host, _, err := net.SplitHostPort(f.RaftAdvertise); err != nil || host != wantHost {
		t.Errorf("raft_advertise %q: want host %s, the pod's name in the headless Service", f.RaftAdvertise, wantHost)
	}
	if !f.Bootstrap {
		t.Error("bootstrap is off: a new cluster would wait forever for a `cluster join` that needs a leader")
	}
	var ids []string
	for _, peer := range f.Peers {
		ids = append(ids, peer.ID)
	}
	// Pods beyond the initial voters (after scaling up) are joined later.
	if want := p.w.podNames(); len(ids) == 0 || len(ids) > len(want) || !slices.Equal(ids, want[:len(ids)]) {
		t.Errorf("peers %v, want the first pods of %v", ids, want)
	} else if ordinal < len(f.Peers) && f.Peers[ordinal].RaftAddr != f.RaftAdvertise {
		t.Errorf("peers lists %s at %s, but the pod advertises %s", p.name, f.Peers[ordinal].RaftAddr, f.RaftAdvertise)
	}

	// Listeners and ports.
	p.checkListen(t, c, "raft_addr", f.RaftAddr, "raft", corev1.ProtocolTCP)
	p.checkListen(t, c, "agent_addr", f.AgentAddr, "agents", corev1.ProtocolUDP)
	p.checkListen(t, c, "status_addr", f.StatusAddr, "status", corev1.ProtocolTCP)
	p.checkListen(t, c, "admin_addr", f.AdminAddr, "admin", corev1.ProtocolTCP)
	if _, port, _ := net.SplitHostPort(f.RaftAdvertise); port != portOf(f.RaftAddr) {
		t.Errorf("raft_advertise %s and raft_addr %s: different ports", f.RaftAdvertise, f.RaftAddr)
	}
	if f.AgentAdvertise == "" {
		t.Error("agent_advertise is empty: followers would send agents to 0.0.0.0")
	}
	for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if probe != nil && probe.HTTPGet != nil {
			if cp, ok := findPort(c, probe.HTTPGet.Port); ok && fmt.Sprint(cp.ContainerPort) != portOf(f.StatusAddr) {
				t.Errorf("probe on port %d, but status_addr is %s", cp.ContainerPort, f.StatusAddr)
			}
		}
	}

	// Files.
	p.checkDataDir(t, c, f.DataDir)
	installed := p.installed(t)
	p.checkFile(t, c, installed, "tls.ca", f.TLS.CA, false)
	p.checkFile(t, c, installed, "tls.cert", f.TLS.Cert, false)
	p.checkFile(t, c, installed, "tls.key", f.TLS.Key, true)
	if f.Auth.BootstrapTokenFile == "" {
		t.Error("auth.bootstrap_token_file is empty: the first leader would write the token into the data volume, " +
			"which the image (no shell, no tar) gives no way to read")
	} else {
		p.checkFile(t, c, installed, "auth.bootstrap_token_file", f.Auth.BootstrapTokenFile, true)
	}
	if f.Enroll.CADir != "" {
		p.checkFile(t, c, installed, "enroll.ca_dir ca.key", path.Join(f.Enroll.CADir, "ca.key"), true)
	}
	return f
}

func checkAgent(t *testing.T, p pod, c *corev1.Container) agentFile {
	t.Helper()
	env := p.env(t, c)
	args := make([]string, len(c.Args)-1)
	for i, a := range c.Args[1:] {
		args[i] = expand(t, a, env)
	}
	var f agentFile
	if err := effectiveConfig(t, "agent", p.config(t, c, args), args, &f); err != nil {
		t.Fatal(err)
	}
	p.checkListen(t, c, "metrics_addr", f.MetricsAddr, "metrics", corev1.ProtocolTCP)
	p.checkDataDir(t, c, f.DataDir)
	if f.TLS.CA == "" {
		t.Error("tls is empty: the agent would look for enrolled files in data_dir/tls; this Deployment gives them from a Secret")
	} else {
		installed := p.installed(t)
		p.checkFile(t, c, installed, "tls.ca", f.TLS.CA, false)
		p.checkFile(t, c, installed, "tls.cert", f.TLS.Cert, false)
		p.checkFile(t, c, installed, "tls.key", f.TLS.Key, true)
	}
	if f.FHIRDir != "" {
		if vm, _, _, ok := p.mountOf(c, path.Join(f.FHIRDir, "x")); !ok || !vm.ReadOnly {
			t.Errorf("fhir_dir %s must be a read-only volume", f.FHIRDir)
		}
	}
	if f.MasterKeyEnv != "" {
		if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == f.MasterKeyEnv }); i < 0 ||
			c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil {
			t.Errorf("master_key_env %s: the container has no env var of that name from a Secret", f.MasterKeyEnv)
		}
	}
	return f
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// TestConfigDecodeRefusesMistakes shows that the cohort binary refuses a
// config file with a mistake: each case changes one thing in a real
// ConfigMap's config, which passes --check-config.
func TestConfigDecodeRefusesMistakes(t *testing.T) {
	read := func(file, key string) string {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var cm corev1.ConfigMap
		if err := yaml.UnmarshalStrict(b, &cm); err != nil {
			t.Fatal(err)
		}
		return cm.Data[key]
	}
	coord := read("coordinator/configmap.yaml", "coordinator.json")
	ag := read("agent/configmap.yaml", "agent.json")
	// What the coordinator pods give as flags (here for pod 0).
	coordArgs := []string{"--config=x", "--id=cohort-coordinator-0", "--raft-advertise=cohort-coordinator-0.cohort-coordinator.cohort.svc:7400",
		"--agent-advertise=cohort-coordinator-0.cohort.example.org:7401", "--admin-advertise=cohort-coordinator-0.cohort-coordinator.cohort.svc:7443",
		"--cert=/run/cohort/secrets/cohort-coordinator-0.crt", "--key=/run/cohort/secrets/cohort-coordinator-0.key"}
	agentArgs := []string{"--config=x"}
	tests := []struct {
		name     string
		sub      string
		good     string
		old, bad string
	}{
		{"coordinator: misspelled field", "coordinator", coord, `"raft_addr"`, `"raft_adress"`},
		{"coordinator: misspelled nested field", "coordinator", coord, `"bootstrap_token_file"`, `"bootstrap_token"`},
		{"coordinator: string where a bool is expected", "coordinator", coord, `"bootstrap": true`, `"bootstrap": "true"`},
		{"coordinator: misspelled peer field", "coordinator", coord, `{"id": "cohort-coordinator-1", "raft_addr"`, `{"id": "cohort-coordinator-1", "raft_address"`},
		{"coordinator: data after the object", "coordinator", coord, "\n}", "\n}\n{}"},
		{"agent: misspelled field", "agent", ag, `"metrics_addr"`, `"metrics_address"`},
		{"agent: string where a list is expected", "agent", ag, `"coordinators": [`, `"coordinators": "x", "y": [`},
		{"agent: number where a string is expected", "agent", ag, `"fhir_dir": "/fhir"`, `"fhir_dir": 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args, out := agentArgs, any(new(agentFile))
			if tt.sub == "coordinator" {
				args, out = coordArgs, new(coordinatorFile)
			}
			if err := effectiveConfig(t, tt.sub, []byte(tt.good), args, out); err != nil {
				t.Fatalf("the unchanged config: %v", err)
			}
			if !strings.Contains(tt.good, tt.old) {
				t.Fatalf("the config no longer contains %q: update the test", tt.old)
			}
			bad := strings.Replace(tt.good, tt.old, tt.bad, 1)
			if err := effectiveConfig(t, tt.sub, []byte(bad), args, out); err == nil {
				t.Fatalf("cohort %s accepted the config with %q replaced by %q", tt.sub, tt.old, tt.bad)
			} else {
				t.Logf("refused: %v", err)
			}
		})
	}
}
