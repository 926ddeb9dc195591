// Package agent is the site agent that runs on a hospital's gateway. It
// ingests the hospital's FHIR data into an encrypted local store, dials the
// coordinator over QUIC with mutual TLS, and for each round it is offered,
// builds features, trains locally from the global model and sends back only
// the weight delta, its sample count and local validation metrics, through
// the egress guard. Asked to evaluate a model, it scores it on the records
// the model's training held out and sends back metrics and calibration
// counts only.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/cohort-fl/cohort/internal/secretfile"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohort-fl/cohort/agent/device"
	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/ingest"
	"github.com/cohort-fl/cohort/agent/store"
	"github.com/cohort-fl/cohort/clock"
	"github.com/cohort-fl/cohort/protocol/pki"
)

// Build is the agent's version string, sent in Hello.
var Build = "dev"

var (
	// ErrInvalidConfig: the agent's Config does not validate.
	ErrInvalidConfig = errors.New("invalid agent config")
	// ErrRefused: the coordinator refused this site; retrying will not help.
	ErrRefused = errors.New("refused by the coordinator")
	// ErrTooFewRecords: fewer eligible records than the job's minimum.
	ErrTooFewRecords = errors.New("too few eligible records")
	// ErrUnsupportedModel: a job's model kind this agent cannot train.
	ErrUnsupportedModel = errors.New("model kind not supported by this agent")
	// ErrSecAggParams: a round's secure aggregation parameters this site
	// cannot run (they do not fit the model, do not name this site, or do
	// not pass protocol/secagg's checks).
	ErrSecAggParams = errors.New("invalid secure aggregation parameters")
)

// Config is one site agent's configuration.
type Config struct {
	// DataDir holds the encrypted store, the keys (created on first start
	// when their files are absent), the outbox of updates awaiting commit
	// and the egress log.
	DataDir string `json:"data_dir"`
	// MinCohort is this site's own floor k: it neither trains on nor
	// reports statistics of fewer eligible records, whatever a job asks
	// (a job asking less gets max(job, k)). Zero means 20.
	MinCohort int `json:"min_cohort,omitempty"`
	// Coordinators are the QUIC addresses of the coordinator nodes, tried in
	// turn; followers redirect to the leader.
	Coordinators []string `json:"coordinators"`
	// TLS names the federation CA and this site's certificate and key. The
	// site id is read from the certificate. Left empty, it is the files
	// `cohort agent enroll` writes: DataDir/tls/ca.crt, site.crt and
	// site.key. With renewal on, the agent rewrites the certificate and
	// key, so their directory must be writable by the agent.
	TLS pki.Files `json:"tls"`
	// Renew renews the site certificate automatically before it expires,
	// at the coordinators' admin API (see RenewConfig).
	Renew RenewConfig `json:"renew"`
	// FHIRDir, if set, is ingested (NDJSON, NDJSON.gz, Bundles) at start.
	FHIRDir string `json:"fhir_dir,omitempty"`
	// Bulk, if set, exports from the hospital's FHIR server ($export) at
	// start and then incrementally every Bulk.Interval.
	Bulk *BulkConfig `json:"bulk,omitempty"`
	// DropDir, if set, is watched for FHIR files that integration engines
	// drop there; each is ingested once and moved to DropDir/done (or
	// DropDir/quarantine when unreadable).
	DropDir string `json:"drop_dir,omitempty"`
	// MQTT, if set, subscribes to bedside-device telemetry.
	MQTT *MQTTConfig `json:"mqtt,omitempty"`
	// MetricsAddr, if set, serves Prometheus metrics (/metrics) and
	// /healthz over HTTP; keep it on loopback or the hospital's
	// monitoring network. The metrics hold counts and reason codes only.
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// MasterKeyFile holds the 32-byte key that wraps the store's data key;
	// default DataDir/master.key. Keep it (or a backup of it) off the
	// gateway's data disk: without it the store cannot be read.
	MasterKeyFile string `json:"master_key_file,omitempty"`
	// MasterKeyEnv names an environment variable holding the master key
	// (64 hex digits or base64 of 32 bytes); when it is set it wins over
	// MasterKeyFile.
	MasterKeyEnv string `json:"master_key_env,omitempty"`
	// PseudonymKeyFile holds the site secret for patient pseudonyms;
	// default DataDir/pseudonym.key.
	PseudonymKeyFile string `json:"pseudonym_key_file,omitempty"`
	// BackoffMin and BackoffMax bound the reconnect backoff.
	BackoffMin Duration `json:"backoff_min"`
	BackoffMax Duration `json:"backoff_max"`
	// PollWait is how long a task request may be held by the coordinator.
	PollWait Duration `json:"poll_wait"`
	// Deploy lists the jobs whose production model this site runs for
	// local inference (see deploy.go); DeployPoll is how often it asks
	// whether their production versions changed (default 30s).
	Deploy     []string `json:"deploy,omitempty"`
	DeployPoll Duration `json:"deploy_poll,omitempty"`
	// PredictAddr, if set, serves local inference (POST /v1/predict, see
	// predict.go) on this loopback address, to clients that send the
	// bearer token in PredictTokenFile (owner-only, at least 16
	// characters).
	PredictAddr      string `json:"predict_addr,omitempty"`
	PredictTokenFile string `json:"predict_token_file,omitempty"`
	// RiskOutbox is where streaming scoring writes FHIR RiskAssessment
	// resources (default DataDir/riskassessments); with RiskFHIRURL, the
	// hospital's FHIR server base URL, each is also POSTed there and
	// moved to RiskOutbox/sent once accepted.
	RiskOutbox  string `json:"risk_outbox,omitempty"`
	RiskFHIRURL string `json:"risk_fhir_url,omitempty"`
	// RiskMinChange and RiskMinInterval keep streaming scoring from
	// writing a RiskAssessment (and publishing an alert) for every batch
	// of readings: a patient's new score for a job is written only if it
	// is the first since the agent started, comes from another model
	// version, crosses the job's alert threshold either way, moved by at
	// least RiskMinChange from the last one written (0: any move), or
	// RiskMinInterval passed since then (0: every score is written).
	RiskMinChange   float64  `json:"risk_min_change"`
	RiskMinInterval Duration `json:"risk_min_interval"`
	// RiskSentRetention is how long RiskAssessments the FHIR server
	// accepted stay in RiskOutbox/sent; 0 keeps them.
	RiskSentRetention Duration `json:"risk_sent_retention"`

	// Logger receives logs; nil discards them. Logs hold no PHI.
	Logger *slog.Logger `json:"-"`
	// EgressTap sees every byte that leaves (tests and the simulator).
	EgressTap func([]byte) `json:"-"`
	// Adversary, if set, rewrites each trained update before it is kept
	// and sent: the simulator's Byzantine sites (sign flips, scaling,
	// noise). It cannot be set from a config file. The egress guard still
	// checks what it produces.
	Adversary func(job string, round uint64, delta []float32) `json:"-"`
	// Straggle, if set, returns how long the agent waits after training a
	// round before it keeps and sends the update: the simulator's slow
	// sites. It cannot be set from a config file.
	Straggle func(job string, round uint64) time.Duration `json:"-"`
	// TrainGate, if set, is called before each local training and its
	// release after: the simulator's many in-process sites share a few
	// cores, so it lets them train a few at a time as separate gateways
	// would, without starving the coordinators. It cannot be set from a
	// config file.
	TrainGate func(ctx context.Context) (release func(), err error) `json:"-"`
	// Now is the clock; nil means Clock.Now.
	Now func() time.Time `json:"-"`
	// Clock times certificate renewal and the wait after a revocation;
	// nil means the system clock.
	Clock clock.Clock `json:"-"`
}

// Duration reads and writes as a Go duration string in JSON.
type Duration time.Duration

// UnmarshalJSON reads a duration string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) < 2 || s[0] != '"' {
		return fmt.Errorf("duration must be a string like \"30s\"")
	}
	v, err := time.ParseDuration(s[1 : len(s)-1])
	*d = Duration(v)
	return err
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// DefaultConfig returns a config with every default set.
func DefaultConfig() Config {
	return Config{
		BackoffMin:        Duration(100 * time.Millisecond),
		BackoffMax:        Duration(10 * time.Second),
		PollWait:          Duration(10 * time.Second),
		RiskMinChange:     0.05,
		RiskMinInterval:   Duration(time.Hour),
		RiskSentRetention: Duration(30 * 24 * time.Hour),
	}
}

// Validate reports the first problem with the config.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("%w: data_dir is required", ErrInvalidConfig)
	case c.MinCohort < 0:
		return fmt.Errorf("%w: min_cohort must not be negative", ErrInvalidConfig)
	case len(c.Coordinators) == 0:
		return fmt.Errorf("%w: at least one coordinator address is required", ErrInvalidConfig)
	case c.TLS != (pki.Files{}) && (c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == ""):
		return fmt.Errorf("%w: tls.ca, tls.cert and tls.key go together (leave all three empty for the files `cohort agent enroll` wrote in data_dir/tls)", ErrInvalidConfig)
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("%w: need 0 < backoff_min <= backoff_max", ErrInvalidConfig)
	case c.PollWait <= 0:
		return fmt.Errorf("%w: poll_wait must be positive", ErrInvalidConfig)
	case c.DeployPoll < 0:
		return fmt.Errorf("%w: deploy_poll must not be negative", ErrInvalidConfig)
	case c.PredictAddr != "" && checkPredictAddr(c.PredictAddr) != nil:
		return fmt.Errorf("%w: predict_addr: %w (local inference is for the gateway's own clients)", ErrInvalidConfig, checkPredictAddr(c.PredictAddr))
	case !(c.RiskMinChange >= 0 && c.RiskMinChange <= 1):
		return fmt.Errorf("%w: risk_min_change must be between 0 and 1", ErrInvalidConfig)
	case c.RiskMinInterval < 0 || c.RiskSentRetention < 0:
		return fmt.Errorf("%w: risk_min_interval and risk_sent_retention must not be negative", ErrInvalidConfig)
	case c.RiskFHIRURL != "" && !strings.HasPrefix(c.RiskFHIRURL, "https://") && !strings.HasPrefix(c.RiskFHIRURL, "http://"):
		return fmt.Errorf("%w: risk_fhir_url must be an http(s) URL, the FHIR server's base", ErrInvalidConfig)
	case c.PredictAddr != "" && c.PredictTokenFile == "":
		return fmt.Errorf("%w: predict_addr needs predict_token_file, the bearer token clients send", ErrInvalidConfig)
	case c.MQTT != nil && c.MQTT.Password != "" && c.MQTT.PasswordFile != "":
		return fmt.Errorf("%w: mqtt: give password or password_file, not both", ErrInvalidConfig)
	case c.Bulk != nil && c.Bulk.BaseURL == "":
		return fmt.Errorf("%w: bulk.base_url is required", ErrInvalidConfig)
	}
	if c.Renew.Server != "" {
		if _, err := ServerURL(c.Renew.Server); err != nil {
			return fmt.Errorf("%w: renew.server: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}

// Agent is one site agent. New loads its identity; Run opens the store,
// ingests, and takes part in the federation until ctx ends; Close releases
// the store and logs.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	clock clock.Clock
	site  string
	pool  *x509.CertPool
	// cert is the certificate presented to coordinators; renewal swaps
	// it (see renew.go).
	cert atomic.Pointer[siteCert]
	// renewServer is the admin API renewals go to ("" when off) and
	// renewClient the client that presents cert to it.
	renewServer string
	renewClient *http.Client

	guard *egress.Guard

	mu    sync.Mutex // guards st, stats, storeGen, cache and partialDL
	st    *store.Store
	stats Stats
	// storeGen counts ingests; a cached dataset of an older generation is
	// stale.
	storeGen uint64
	cache    *datasetCache
	mqtt     *device.Subscriber
	drop     *ingest.Watcher
	// masterKey is kept for stores that derive their own keys from it
	// (the MQTT in-flight store).
	masterKey []byte

	closeOnce sync.Once

	// partialDL is an interrupted model download, guarded by mu.
	partialDL *partialDownload
	// nextRenewal is when the certificate is due for renewal, guarded by
	// mu; zero with renewal off.
	nextRenewal time.Time

	// session is the coordinator session's state, for /readyz and the
	// status report (its own lock; see status.go).
	session sessionState

	// secagg is the secure aggregation run this site is taking part in,
	// if any (see secagg.go). It outlives a session, so that the run goes
	// on after a reconnect, but not the process. Only the federation
	// loop's goroutine (loop, serve and what they call) touches it, so it
	// needs no lock.
	secagg *secaggRun

	// deployments are the followed jobs' current production versions
	// (job id → *atomic.Pointer[deployed]); deployChecked is when each
	// was last asked about (the federation loop's goroutine only).
	deployments   sync.Map
	deployChecked map[string]time.Time
	// predictAddr is the bound local inference address (PredictAddr).
	predictAddr atomic.Value
	// alerts publishes streaming-scoring alerts (nil: none).
	alerts *alerter
	// riskLast is the last RiskAssessment written per job and patient,
	// which decides whether the next score is written (see riskGate).
	riskLast riskGate
}

// PredictAddr is the address local inference listens on ("" when off or
// not started).
func (a *Agent) PredictAddr() string {
	s, _ := a.predictAddr.Load().(string)
	return s
}

// Stats are the agent's counters.
type Stats struct {
	Ingest           *fhir.Stats
	RoundsTrained    int
	UpdatesAcked     int
	UpdatesResent    int
	UploadsResumed   int
	DownloadsResumed int
	Reconnects       int
	LastRoundError   string
	// Declined counts declined rounds by reason code (see Status).
	Declined map[string]int
	// Evaluations counts the model evaluations this site sent and the
	// coordinator acknowledged (see runEvaluate).
	Evaluations int
	// SecAggRuns counts the secure aggregation runs this site saw
	// through: it answered the unmasking request and the coordinator
	// acknowledged the answer. Its rounds are in RoundsTrained too.
	SecAggRuns int
	// Deployments are production versions this site switched to;
	// DeploymentsRefused those it refused (digest mismatch, bad spec).
	Deployments        int
	DeploymentsRefused int
	// Predictions answered, and PredictionsRefused (no or a wrong token).
	Predictions        int
	PredictionsRefused int
	// Scored are streaming scores of telemetry patients; RiskAssessments
	// those written to the outbox (RiskAssessmentsPosted sent to the FHIR
	// server); Alerts those of them at or above a job's alert threshold.
	Scored                int
	RiskAssessments       int
	RiskAssessmentsPosted int
	Alerts                int
	// ScoresUnchanged are scores not written as RiskAssessments: too
	// close to the last one written (RiskMinChange, RiskMinInterval).
	ScoresUnchanged int
	// CertRenewals and CertRenewalFailures count certificate renewals
	// and failed attempts; LastRenewalError is the last failure's error,
	// cleared by a success.
	CertRenewals        int
	CertRenewalFailures int
	LastRenewalError    string
}

// New validates cfg and loads the site's certificate. It opens nothing else.
func New(cfg Config) (*Agent, error) {
	if cfg.TLS == (pki.Files{}) && cfg.DataDir != "" {
		cfg.TLS = DefaultTLSFiles(cfg.DataDir)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MQTT != nil && cfg.MQTT.PasswordFile != "" {
		mc := *cfg.MQTT
		pw, err := secretfile.Read(mc.PasswordFile, "mqtt.password_file")
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		mc.Password = pw
		cfg.MQTT = &mc
	}
	if err := finishRenewal(cfg.TLS); err != nil {
		return nil, fmt.Errorf("complete an interrupted certificate renewal: %w", err)
	}
	pool, cert, err := cfg.TLS.Load()
	if errors.Is(err, os.ErrNotExist) && cfg.TLS == DefaultTLSFiles(cfg.DataDir) {
		return nil, fmt.Errorf("load tls: %w (enroll the gateway first: cohort agent enroll --data-dir %s ...)", err, cfg.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("load tls: %w", err)
	}
	leaf := cert.Leaf
	id, err := pki.IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("site certificate: %w", err)
	}
	if id.Role != pki.RoleSite {
		return nil, fmt.Errorf("%w: certificate %s is a %s certificate, not a site certificate", ErrInvalidConfig, cfg.TLS.Cert, id.Role)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.System()
	}
	now := cfg.Now
	if now == nil {
		now = clk.Now
	}
	a := &Agent{cfg: cfg, log: log.With("site", id.ID), now: now, clock: clk, site: id.ID, pool: pool, deployChecked: map[string]time.Time{}}
	loaded := clk.Now()
	a.cert.Store(&siteCert{tls: cert, loadedAt: loaded})
	if cfg.Renew.Server != "" {
		a.renewServer, _ = ServerURL(cfg.Renew.Server)
		serverPool := pool
		if cfg.Renew.CA != "" {
			if serverPool, err = pki.LoadPool(cfg.Renew.CA); err != nil {
				return nil, fmt.Errorf("renew.ca: %w", err)
			}
		}
		a.renewClient = issueClient(serverPool, clk.Now, func() *tls.Certificate { return &a.cert.Load().tls })
		a.nextRenewal = renewAt(loaded, cert.Leaf.NotAfter)
	}
	return a, nil
}

// SiteID is the site id from the certificate.
func (a *Agent) SiteID() string { return a.site }

// BytesSent is the number of bytes this agent has sent to coordinators.
func (a *Agent) BytesSent() int64 {
	if a.guard == nil {
		return 0
	}
	return a.guard.BytesSent()
}

// Stats returns a copy of the agent's counters.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.stats
	st.Declined = maps.Clone(a.stats.Declined)
	return st
}

// Open opens the encrypted store and the egress log, creating keys on first
// start. Run calls it when it has not been called.
func (a *Agent) Open() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st != nil {
		return nil
	}
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	mk := a.cfg.MasterKeyFile
	if mk == "" {
		mk = filepath.Join(a.cfg.DataDir, "master.key")
	}
	pk := a.cfg.PseudonymKeyFile
	if pk == "" {
		pk = filepath.Join(a.cfg.DataDir, "pseudonym.key")
	}
	// A fresh key cannot read an existing store: never create one then.
	storePath := filepath.Join(a.cfg.DataDir, "store.db")
	if _, err := os.Stat(storePath); err == nil {
		keys := []string{pk}
		if a.cfg.MasterKeyEnv == "" || os.Getenv(a.cfg.MasterKeyEnv) == "" {
			keys = append(keys, mk)
		}
		for _, k := range keys {
			if _, err := os.Stat(k); errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("the store %s exists but its key file %s is missing: restore the key from your backup (a new key cannot read the store)", storePath, k)
			}
		}
	}
	master, err := store.LoadMasterKey(mk, a.cfg.MasterKeyEnv)
	if err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	secret, err := store.LoadOrCreateKey(pk, 32)
	if err != nil {
		return fmt.Errorf("pseudonym key: %w", err)
	}
	st, err := store.Open(store.Config{Path: storePath, MasterKey: master, PseudonymKey: secret})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	g, err := egress.New(egress.Config{LogPath: filepath.Join(a.cfg.DataDir, "egress.log"), Tap: a.cfg.EgressTap, Now: a.now})
	if err != nil {
		st.Close()
		return err
	}
	if err := os.MkdirAll(filepath.Join(a.cfg.DataDir, "outbox"), 0o700); err != nil {
		st.Close()
		g.Close()
		return fmt.Errorf("outbox: %w", err)
	}
	a.st, a.guard, a.masterKey = st, g, master
	return nil
}

// Ingest reads FHIR files from dir into the store.
func (a *Agent) Ingest(ctx context.Context, dir string) (*fhir.Stats, error) {
	if err := a.Open(); err != nil {
		return nil, err
	}
	// Whatever happens, the store may have changed: cached datasets are stale.
	defer a.dataChanged()
	// One transaction (one fsync) per batch of records, not per record.
	batch := a.st.NewBatch(0)
	st, err := fhir.ReadDirWith(ctx, dir, batch, a.readOptions())
	if err == nil {
		err = batch.Flush()
	}
	if err != nil {
		return st, fmt.Errorf("ingest: %w", err)
	}
	a.mu.Lock()
	if a.stats.Ingest == nil {
		a.stats.Ingest = fhir.NewStats()
	}
	a.stats.Ingest.Add(st)
	a.mu.Unlock()
	a.log.Info("ingested FHIR data", "resources", st.Resources, "skipped", st.Skipped, "rejected", st.Rejected)
	a.writeStatus()
	return st, nil
}

// dataChanged marks the store's contents as changed since any cached
// dataset was built. Every writer to the store calls it after writing.
func (a *Agent) dataChanged() {
	a.mu.Lock()
	a.storeGen++
	a.mu.Unlock()
}

// Close closes the store and the egress log. It is idempotent; call it
// after Run has returned.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.st != nil {
			err = errors.Join(err, a.st.Close())
		}
		if a.guard != nil {
			err = errors.Join(err, a.guard.Close())
		}
	})
	return err
}

// Run opens the store, ingests cfg.FHIRDir, then takes part in the
// federation until ctx ends. It reconnects with backoff to any configured coordinator.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Open(); err != nil {
		return err
	}
	if a.cfg.FHIRDir != "" {
		if _, err := a.Ingest(ctx, a.cfg.FHIRDir); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errC := make(chan error, 3)
	if a.cfg.Bulk != nil {
		wg.Go(func() { a.runBulk(ctx, a.cfg.Bulk) })
	}
	if a.cfg.DropDir != "" {
		wg.Go(func() {
			if err := a.runDropDir(ctx); err != nil && ctx.Err() == nil {
				errC <- fmt.Errorf("drop dir: %w", err)
			}
		})
	}
	if a.cfg.MQTT != nil {
		wg.Go(func() {
			if err := a.runMQTT(ctx, a.cfg.MQTT); err != nil && ctx.Err() == nil {
				errC <- fmt.Errorf("mqtt: %w", err)
			}
		})
	}
	if a.cfg.DropDir != "" || a.cfg.MQTT != nil {
		wg.Go(func() {
			t := time.NewTicker(statusEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					a.writeStatus()
				}
			}
		})
	}
	a.loadDeployments()
	if a.cfg.RiskFHIRURL != "" {
		wg.Go(func() { a.runRiskSender(ctx) })
	}
	if a.cfg.PredictAddr != "" {
		token, err := predictToken(a.cfg.PredictTokenFile)
		if err != nil {
			return fmt.Errorf("predict token: %w", err)
		}
		ln, err := net.Listen("tcp", a.cfg.PredictAddr)
		if err != nil {
			return fmt.Errorf("predict listener: %w", err)
		}
		a.predictAddr.Store(ln.Addr().String())
		wg.Go(func() {
			if err := a.servePredict(ctx, ln, token); err != nil {
				a.log.Warn("predict server", "err", err)
			}
		})
	}
	if a.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		wg.Go(func() {
			if err := a.serveMetrics(ctx, ln); err != nil {
				a.log.Warn("metrics server", "err", err)
			}
		})
	}
	if a.renewServer == "" {
		a.log.Info("certificate renewal is off (renew.server is not set)", "not_after", a.CertExpires())
	}
	wg.Go(func() { a.renewLoop(ctx) })
	loopErrC := make(chan error, 1)
	wg.Go(func() { loopErrC <- a.loop(ctx) })
	select {
	case err := <-loopErrC:
		return err
	case err := <-errC:
		return err
	}
}
