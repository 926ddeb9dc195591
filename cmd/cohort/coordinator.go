package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/synth"
)

// coordinatorFile is the coordinator's config file: a coordinator.Config
// plus the cluster's initial membership.
type coordinatorFile struct {
	coordinator.Config
	// Bootstrap writes the initial configuration (Peers) on first start.
	Bootstrap bool               `json:"bootstrap"`
	Peers     []coordinator.Peer `json:"peers"`
	LogLevel  string             `json:"log_level"`
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// readJSONFile decodes a config file strictly: unknown fields are errors,
// and so is anything after the JSON value (a second object pasted in, a
// stray brace).
func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: more after the JSON object (at byte %d)", path, dec.InputOffset())
	}
	return nil
}

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cohort coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "JSON config `file` (flags override it)")
		id         = fs.String("id", "", "this node's Raft server id")
		dataDir    = fs.String("data-dir", "", "`directory` for the Raft log, snapshots and blobs")
		raftAddr   = fs.String("raft-addr", "", "TCP `address` for Raft traffic between coordinators (mutual TLS)")
		raftAdv    = fs.String("raft-advertise", "", "`address` other coordinators dial for Raft (default: raft-addr; needed when raft-addr is 0.0.0.0)")
		agentAddr  = fs.String("agent-addr", "", "UDP `address` of the QUIC listener for agents")
		advertise  = fs.String("agent-advertise", "", "`address` agents are redirected to when this node leads (default: agent-addr)")
		statusAddr = fs.String("status-addr", "", "HTTP `address` for /healthz, /readyz, /metrics and /v1/status; no authentication (keep it on loopback or your monitoring network)")
		adminAddr  = fs.String("admin-addr", "", "HTTPS `address` of the admin API (/v1, bearer tokens) and the dashboard, with this node's certificate (e.g. 0.0.0.0:7443)")
		check      = fs.Bool("check-config", false, "check the configuration (file, flags and defaults) and print it as JSON, without starting")
		adminAdv   = fs.String("admin-advertise", "", "`address` the other coordinators forward admin requests to when this node leads (default: admin-addr; needed when admin-addr is 0.0.0.0; its host must be in this node's certificate)")
		tokenFile  = fs.String("bootstrap-token-file", "", "`file` with the first admin token (from `cohort admin token new`, owner-only); if missing, the first leader writes a new one there (default DATA_DIR/bootstrap-admin.token)")
		caFile     = fs.String("ca", "", "federation CA certificate `file`")
		certFile   = fs.String("cert", "", "this node's coordinator certificate `file`")
		keyFile    = fs.String("key", "", "this node's private key `file` (must be owner-only)")
		bootstrap  = fs.Bool("bootstrap", false, "on first start, write the initial cluster configuration from --peer")
		logLevel   = fs.String("log-level", "", "log level on stderr: debug, info, warn, error or off (default info)")
		peers      stringList
		sites      stringList
	)
	fs.Var(&peers, "peer", "initial voter as `id=raft-address` (repeat for each node, this one included)")
	fs.Var(&sites, "site", "enroll a site `id` (repeatable; the leader enrolls it)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: cohort coordinator [--config FILE] [flags]

Runs one coordinator node. Coordinators form a Raft cluster (TCP with mutual
TLS between them); agents dial any node over QUIC and followers redirect
them to the leader. The leader opens rounds, collects site updates,
aggregates them with FedAvg and commits each new global model through Raft.

People run the federation through the admin API on --admin-addr (HTTPS,
one bearer token per person, every request in the audit log; see 'cohort
admin --help'). When the cluster has no token yet, its first leader creates
the bootstrap admin token from --bootstrap-token-file: make that file with
'cohort admin token new -o FILE' and give every node the same one (or let
the leader write a new one there). --status-addr serves only health,
metrics and a read-only status, without authentication.

The config file is JSON: the flags below (id, data_dir, raft_addr,
raft_advertise, agent_addr, agent_advertise, status_addr, admin_addr,
admin_advertise,
auth {bootstrap_token_file}, tls {ca, cert, key}, bootstrap,
peers [{id, raft_addr}], sites [...], log_level), plus jobs [...], the
other auth fields (bootstrap_ttl, rate_per_second, burst, failed_per_second,
failed_burst) and the tuning fields (max_model_bytes, blob_gc_interval,
blob_gc_grace, tick_interval, heartbeat_timeout, election_timeout,
leader_lease_timeout, apply_timeout, max_poll_wait); see
docs/operating-a-federation.md.

Example (first of three nodes):
  cohort coordinator --id c1 --data-dir /var/lib/cohort/c1 \
    --raft-addr 10.0.0.1:7400 --agent-addr 0.0.0.0:7401 --agent-advertise 10.0.0.1:7401 \
    --admin-addr 10.0.0.1:7443 --bootstrap-token-file /etc/cohort/bootstrap-admin.token \
    --ca ca.crt --cert c1.crt --key c1.key \
    --bootstrap --peer c1=10.0.0.1:7400 --peer c2=10.0.0.2:7400 --peer c3=10.0.0.3:7400

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("coordinator: unexpected argument %q", fs.Arg(0))
	}
	file := coordinatorFile{Config: coordinator.DefaultConfig(), LogLevel: "info"}
	if *configPath != "" {
		if err := readJSONFile(*configPath, &file); err != nil {
			return err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "id":
			file.ID = *id
		case "data-dir":
			file.DataDir = *dataDir
		case "raft-addr":
			file.RaftAddr = *raftAddr
		case "raft-advertise":
			file.RaftAdvertise = *raftAdv
		case "agent-addr":
			file.AgentAddr = *agentAddr
		case "agent-advertise":
			file.AgentAdvertise = *advertise
		case "status-addr":
			file.StatusAddr = *statusAddr
		case "admin-addr":
			file.AdminAddr = *adminAddr
		case "admin-advertise":
			file.AdminAdvertise = *adminAdv
		case "bootstrap-token-file":
			file.Auth.BootstrapTokenFile = *tokenFile
		case "ca":
			file.TLS.CA = *caFile
		case "cert":
			file.TLS.Cert = *certFile
		case "key":
			file.TLS.Key = *keyFile
		case "bootstrap":
			file.Bootstrap = *bootstrap
		case "log-level":
			file.LogLevel = *logLevel
		}
	})
	for _, p := range peers {
		pid, addr, ok := strings.Cut(p, "=")
		if !ok || pid == "" || addr == "" {
			return fmt.Errorf("coordinator: --peer %q: want id=raft-address", p)
		}
		file.Peers = append(file.Peers, coordinator.Peer{ID: pid, RaftAddr: addr})
	}
	file.Sites = append(file.Sites, sites...)
	for i := range file.Jobs {
		defaultFeatures(&file.Jobs[i])
	}
	log, err := newLogger(stderr, file.LogLevel)
	if err != nil {
		return err
	}
	file.Logger = log
	file.Build = Version
	if file.Bootstrap && len(file.Peers) == 0 {
		return fmt.Errorf("coordinator: --bootstrap needs the initial voters (--peer id=addr, or peers in the config)")
	}
	if *check {
		if err := file.Validate(); err != nil {
			return err
		}
		return printEffectiveConfig(stdout, file)
	}

	n, err := coordinator.New(file.Config)
	if err != nil {
		return err
	}
	defer n.Close()
	if file.Bootstrap {
		if err := n.Bootstrap(file.Peers); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "coordinator %s: raft %s, agents %s", n.ID(), n.RaftAddr(), n.AgentAddr())
	if a := n.StatusAddr(); a != "" {
		fmt.Fprintf(stdout, ", status http://%s/v1/status", a)
	}
	if a := n.AdminAddr(); a != "" {
		fmt.Fprintf(stdout, ", admin https://%s/", a)
	}
	fmt.Fprintln(stdout)
	return n.Run(ctx)
}

// defaultFeatures fills a job without a feature spec with the spec of the
// simulator's synthetic hospitals, and other unset knobs with defaults.
func defaultFeatures(j *coordinator.JobSpec) {
	def := coordinator.DefaultJobSpec()
	if j.Features.FeatureSpec == nil {
		j.Features.FeatureSpec = synth.DefaultFeatureSpec()
	}
	if j.Model.Kind == "" {
		j.Model.Kind = def.Model.Kind
	}
	if j.Model.NumFeatures == 0 {
		j.Model.NumFeatures = len(j.Features.GetFeatures())
	}
	if j.Strategy.Name == "" {
		j.Strategy = def.Strategy
	}
	if j.Rounds == 0 {
		j.Rounds = def.Rounds
	}
	if j.MinSites == 0 {
		j.MinSites = def.MinSites
	}
	if j.RoundTimeout == 0 {
		j.RoundTimeout = def.RoundTimeout
	}
	if j.MaxAttempts == 0 {
		j.MaxAttempts = def.MaxAttempts
	}
	if j.Train == (coordinator.TrainParams{}) {
		j.Train = def.Train
	}
}
