package coordinator

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// Config is one coordinator node's configuration. Zero durations mean the
// default from DefaultConfig.
type Config struct {
	// ID is this node's Raft server id, unique in the cluster.
	ID string `json:"id"`
	// DataDir holds the Raft log (raft.db), snapshots and blobs.
	DataDir string `json:"data_dir"`
	// RaftAddr is the TCP address for Raft traffic between coordinators
	// (mutual TLS). Port 0 picks a free port.
	RaftAddr string `json:"raft_addr"`
	// RaftAdvertise is the address other coordinators dial to reach this
	// node's Raft listener; empty means the bound RaftAddr (which must then
	// not be 0.0.0.0). Its host must be in this node's certificate.
	RaftAdvertise string `json:"raft_advertise,omitempty"`
	// AgentAddr is the UDP address of the QUIC listener for agents.
	AgentAddr string `json:"agent_addr"`
	// AgentAdvertise is the address agents are redirected to when this node
	// leads; empty means the bound AgentAddr.
	AgentAdvertise string `json:"agent_advertise,omitempty"`
	// StatusAddr serves the read-only HTTP status (/healthz, /v1/status);
	// empty turns it off. It holds no PHI; keep it on loopback.
	StatusAddr string `json:"status_addr,omitempty"`
	// AdminAddr serves the admin API (HTTPS, /v1, bearer tokens) and the
	// dashboard; empty turns it off. Its certificate is TLS.Cert.
	AdminAddr string `json:"admin_addr,omitempty"`
	// AdminAdvertise is the address the other coordinators forward admin
	// requests to when this node leads; empty means the bound AdminAddr.
	// Set it whenever AdminAddr is 0.0.0.0 (or not reachable from the
	// other coordinators); its host must be in this node's certificate.
	AdminAdvertise string `json:"admin_advertise,omitempty"`
	// Auth configures the admin API's tokens.
	Auth AuthConfig `json:"auth"`
	// Enroll configures site enrollment and certificate renewal.
	Enroll EnrollConfig `json:"enroll"`
	// TLS names the federation CA and this node's certificate and key
	// (a coordinator certificate from `cohort ca issue`).
	TLS pki.Files `json:"tls"`

	// Sites are enrolled by the leader at election (idempotent).
	Sites []string `json:"sites,omitempty"`
	// Jobs are created by the leader at election (idempotent by id).
	Jobs []JobSpec `json:"jobs,omitempty"`

	// MaxModelBytes is the largest model (flat float32 weights) a job may
	// have, and the largest blob a peer may send.
	MaxModelBytes int `json:"max_model_bytes"`
	// MinCohort is the smallest cohort a job may ask sites to compute on
	// (train.min_records): jobs asking for less are refused. Zero means
	// DefaultMinCohort; agents enforce their own floor too.
	MinCohort int `json:"min_cohort,omitempty"`
	// MaxUpdateSamples is the largest sample count a site's update (or
	// cohort size its statistics) may claim: its weight in the average,
	// which the coordinator cannot check. Larger claims are refused.
	// Zero means DefaultMaxUpdateSamples.
	MaxUpdateSamples uint64 `json:"max_update_samples,omitempty"`
	// BlobGCInterval is how often unreferenced blobs are removed;
	// BlobGCGrace is how old an unreferenced blob must be to go (a model
	// being replicated is not referenced until its entry commits).
	BlobGCInterval Duration `json:"blob_gc_interval"`
	BlobGCGrace    Duration `json:"blob_gc_grace"`
	// TickInterval is how often the leader's round engine checks deadlines.
	TickInterval Duration `json:"tick_interval"`
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout tune Raft
	// (see hashicorp/raft Config); zero keeps Raft's defaults.
	HeartbeatTimeout   Duration `json:"heartbeat_timeout,omitempty"`
	ElectionTimeout    Duration `json:"election_timeout,omitempty"`
	LeaderLeaseTimeout Duration `json:"leader_lease_timeout,omitempty"`
	// SnapshotInterval, SnapshotThreshold and TrailingLogs control log
	// compaction (see hashicorp/raft Config): every interval, a node whose
	// log grew by at least threshold entries since its last snapshot takes
	// one and keeps only the last TrailingLogs entries. Zero keeps Raft's
	// defaults (120 s, 8192, 10240).
	SnapshotInterval  Duration `json:"snapshot_interval,omitempty"`
	SnapshotThreshold uint64   `json:"snapshot_threshold,omitempty"`
	TrailingLogs      uint64   `json:"trailing_logs,omitempty"`
	// ApplyTimeout bounds one Raft proposal.
	ApplyTimeout Duration `json:"apply_timeout"`
	// MaxPollWait caps how long a task request is held open.
	MaxPollWait Duration `json:"max_poll_wait"`
	// HelloTimeout is how long an agent connection may go without an
	// accepted hello before it is closed. Zero means DefaultHelloTimeout.
	HelloTimeout Duration `json:"hello_timeout,omitempty"`

	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger `json:"-"`
	// Build is this binary's version (cohort version), shown in the
	// node's status and published with its addresses, so an operator
	// sees a rolling upgrade's progress.
	Build string `json:"-"`
	// Now is the clock; nil means time.Now.
	Now func() time.Time `json:"-"`
	// SecAggObserver, if set, sees every vector this node's secure
	// aggregation servers hold, as they come to hold them (a test hook
	// that proves no single site's update is among them; see
	// secagg.Server.SetObserver). It must not keep or modify v.
	SecAggObserver func(label string, v []uint32) `json:"-"`
}

// AuthConfig configures admin tokens.
type AuthConfig struct {
	// BootstrapTokenFile holds the first admin token, which the first
	// leader creates when the cluster has none: if the file exists it must
	// hold a token (made by `cohort admin token new`) and be readable by
	// its owner only; otherwise the leader writes a new one there (mode
	// 0600). Empty means DATA_DIR/bootstrap-admin.token.
	BootstrapTokenFile string `json:"bootstrap_token_file,omitempty"`
	// BootstrapTTL is the bootstrap token's lifetime (default 24h): use
	// it to create people's own tokens.
	BootstrapTTL Duration `json:"bootstrap_ttl,omitempty"`
	// RatePerSecond and Burst limit each token's requests (defaults 20
	// and 60); FailedPerSecond and FailedBurst limit requests that fail
	// to authenticate, per client address (defaults 2 and 20).
	RatePerSecond   float64 `json:"rate_per_second,omitempty"`
	Burst           int     `json:"burst,omitempty"`
	FailedPerSecond float64 `json:"failed_per_second,omitempty"`
	FailedBurst     int     `json:"failed_burst,omitempty"`
}

// withDefaults fills zero fields.
func (a AuthConfig) withDefaults(dataDir string) AuthConfig {
	if a.BootstrapTokenFile == "" {
		a.BootstrapTokenFile = filepath.Join(dataDir, "bootstrap-admin.token")
	}
	if a.BootstrapTTL == 0 {
		a.BootstrapTTL = Duration(24 * time.Hour)
	}
	if a.RatePerSecond == 0 {
		a.RatePerSecond = 20
	}
	if a.Burst == 0 {
		a.Burst = 60
	}
	if a.FailedPerSecond == 0 {
		a.FailedPerSecond = 2
	}
	if a.FailedBurst == 0 {
		a.FailedBurst = 20
	}
	return a
}

// DefaultMinCohort is the default smallest cohort (k) a site computes on.
const DefaultMinCohort = 20

func (c Config) minCohort() int {
	if c.MinCohort == 0 {
		return DefaultMinCohort
	}
	return c.MinCohort
}

// DefaultHelloTimeout is the default HelloTimeout.
const DefaultHelloTimeout = 10 * time.Second

func (c Config) helloTimeout() time.Duration {
	if c.HelloTimeout == 0 {
		return DefaultHelloTimeout
	}
	return time.Duration(c.HelloTimeout)
}

// DefaultMaxUpdateSamples is the default largest sample count an update
// may claim: ten million records, more than any one hospital's cohort.
const DefaultMaxUpdateSamples = 10_000_000

func (c Config) maxUpdateSamples() uint64 {
	if c.MaxUpdateSamples == 0 {
		return DefaultMaxUpdateSamples
	}
	return c.MaxUpdateSamples
}

// DefaultConfig returns a config with every default set; ID, DataDir, the
// addresses and TLS remain to fill.
func DefaultConfig() Config {
	return Config{
		RaftAddr:       "127.0.0.1:7400",
		AgentAddr:      "127.0.0.1:7401",
		MaxModelBytes:  1 << 30,
		BlobGCInterval: Duration(time.Minute),
		BlobGCGrace:    Duration(10 * time.Minute),
		TickInterval:   Duration(100 * time.Millisecond),
		ApplyTimeout:   Duration(10 * time.Second),
		MaxPollWait:    Duration(20 * time.Second),
	}
}

// Validate reports the first problem with the config.
func (c Config) Validate() error {
	switch {
	case !validID(c.ID):
		return fmt.Errorf("%w: id %q: use 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalidConfig, c.ID)
	case c.DataDir == "":
		return fmt.Errorf("%w: data_dir is required", ErrInvalidConfig)
	case c.RaftAddr == "" || c.AgentAddr == "":
		return fmt.Errorf("%w: raft_addr and agent_addr are required", ErrInvalidConfig)
	case c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "":
		return fmt.Errorf("%w: tls.ca, tls.cert and tls.key are required", ErrInvalidConfig)
	case c.MaxModelBytes <= 0:
		return fmt.Errorf("%w: max_model_bytes must be positive", ErrInvalidConfig)
	case c.TickInterval <= 0 || c.ApplyTimeout <= 0 || c.MaxPollWait <= 0:
		return fmt.Errorf("%w: tick_interval, apply_timeout and max_poll_wait must be positive", ErrInvalidConfig)
	case c.BlobGCInterval <= 0 || c.BlobGCGrace <= 0:
		return fmt.Errorf("%w: blob_gc_interval and blob_gc_grace must be positive", ErrInvalidConfig)
	case c.Auth.BootstrapTTL < 0 || time.Duration(c.Auth.BootstrapTTL) > MaxTokenTTL:
		return fmt.Errorf("%w: auth.bootstrap_ttl must be between 0 (default 24h) and %s", ErrInvalidConfig, MaxTokenTTL)
	case c.Enroll.CertTTL < 0 || c.Enroll.TokenTTL < 0:
		return fmt.Errorf("%w: enroll.cert_ttl and enroll.token_ttl must not be negative", ErrInvalidConfig)
	case c.HelloTimeout < 0:
		return fmt.Errorf("%w: hello_timeout must not be negative", ErrInvalidConfig)
	case c.Auth.RatePerSecond < 0 || c.Auth.Burst < 0 || c.Auth.FailedPerSecond < 0 || c.Auth.FailedBurst < 0:
		return fmt.Errorf("%w: auth rate limits must not be negative", ErrInvalidConfig)
	}
	for _, s := range c.Sites {
		if !validID(s) {
			return fmt.Errorf("%w: site id %q: use 1-63 lowercase letters, digits, '.', '_' or '-'", ErrInvalidConfig, s)
		}
	}
	if c.MinCohort < 0 {
		return fmt.Errorf("%w: min_cohort must not be negative", ErrInvalidConfig)
	}
	for _, j := range c.Jobs {
		if err := j.PlanPrivacy(); err != nil {
			return fmt.Errorf("%w: job %q: %w", ErrInvalidConfig, j.ID, err)
		}
		if err := j.Validate(c.MaxModelBytes); err != nil {
			return fmt.Errorf("%w: job %q: %w", ErrInvalidConfig, j.ID, err)
		}
		if err := j.checkCohort(c.minCohort()); err != nil {
			return fmt.Errorf("%w: job %q: %w", ErrInvalidConfig, j.ID, err)
		}
	}
	return nil
}

// Peer is one voter of the cluster's initial configuration.
type Peer struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
}
