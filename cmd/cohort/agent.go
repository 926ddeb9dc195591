package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/internal/secretfile"
)

// agentFile is the agent's config file.
type agentFile struct {
	agent.Config
	LogLevel string `json:"log_level"`
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "status":
			return runAgentStatus(args[1:], stdout, stderr)
		case "store":
			return runAgentStore(args[1:], stdout, stderr)
		case "egress":
			return runAgentEgress(args[1:], time.Now(), stdout, stderr)
		case "enroll":
			return runAgentEnroll(ctx, args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("cohort agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "JSON config `file` (flags override it)")
		dataDir    = fs.String("data-dir", "", "`directory` for the encrypted store, keys, outbox and egress log")
		fhirDir    = fs.String("fhir-dir", "", "ingest the FHIR R4 files (NDJSON, NDJSON.gz, Bundles) in this `directory` at start")
		caFile     = fs.String("ca", "", "federation CA certificate `file` (default DATA_DIR/tls/ca.crt, as enroll writes it)")
		certFile   = fs.String("cert", "", "this site's certificate `file`; the site id is read from it (default DATA_DIR/tls/site.crt)")
		keyFile    = fs.String("key", "", "this site's private key `file`, owner-only (default DATA_DIR/tls/site.key)")
		renewSrv   = fs.String("renew-server", "", "renew the site certificate automatically at the coordinators' admin API, `https://HOST:PORT` (renew.server)")
		logLevel   = fs.String("log-level", "", "log level on stderr: debug, info, warn, error or off (default info)")
		metrics    = fs.String("metrics-addr", "", "serve Prometheus /metrics, /healthz and /readyz over HTTP on this `address` (keep it on loopback or the monitoring network)")
		check      = fs.Bool("check-config", false, "check the configuration (file, flags and defaults) and print it as JSON, passwords redacted, without starting")
		coords     stringList
	)
	fs.Var(&coords, "coordinator", "coordinator QUIC `address` (repeat for each node; followers redirect to the leader)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: cohort agent [--config FILE] [flags]
       cohort agent enroll --server URL --ca FILE --token-file FILE --data-dir DIR
                                             (get this gateway's site certificate)
       cohort agent status --data-dir DIR    (what the agent last reported)
       cohort agent egress --data-dir DIR    (what left this site: the egress log)
       cohort agent store <backup|restore|verify|rotate-master-key|rotate-data-key|retention> ...

Runs the site agent on a hospital gateway. It ingests the hospital's FHIR R4
data into an encrypted local store (AES-256-GCM; patient ids replaced by
HMAC pseudonyms), dials out to the coordinators over QUIC with mutual TLS
(nothing inbound is needed), trains each offered round locally and sends
back only the weight delta, its sample count and validation metrics.
Everything sent is recorded in DATA_DIR/egress.log.

The site certificate comes from 'cohort agent enroll', which writes it to
DATA_DIR/tls; with --renew-server the agent renews it before it expires,
without a restart. If the federation operator revokes the site, the agent
says so (log, status, /readyz) and retries only once an hour.

Example:
  cohort agent --data-dir /var/lib/cohort --fhir-dir /srv/fhir-export \
    --renew-server https://coord1.example.org:7443 \
    --coordinator coord1.example.org:7401 --coordinator coord2.example.org:7401

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("agent: unexpected argument %q", fs.Arg(0))
	}
	file := agentFile{Config: agent.DefaultConfig(), LogLevel: "info"}
	if *configPath != "" {
		if err := readJSONFile(*configPath, &file); err != nil {
			return err
		}
		if file.MQTT != nil && file.MQTT.Password != "" {
			if err := secretfile.Check(*configPath, "config file"); err != nil {
				return fmt.Errorf("agent: the config file holds mqtt.password: %w; or move the password to mqtt.password_file", err)
			}
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data-dir":
			file.DataDir = *dataDir
		case "fhir-dir":
			file.FHIRDir = *fhirDir
		case "ca":
			file.TLS.CA = *caFile
		case "cert":
			file.TLS.Cert = *certFile
		case "key":
			file.TLS.Key = *keyFile
		case "renew-server":
			file.Renew.Server = *renewSrv
		case "log-level":
			file.LogLevel = *logLevel
		case "metrics-addr":
			file.MetricsAddr = *metrics
		}
	})
	if len(coords) > 0 {
		file.Coordinators = coords
	}
	log, err := newLogger(stderr, file.LogLevel)
	if err != nil {
		return err
	}
	if *check {
		if err := file.Validate(); err != nil {
			return err
		}
		shown := file
		if m := shown.MQTT; m != nil {
			redacted := *m
			if redacted.Password != "" {
				redacted.Password = redactedSecret
			}
			redacted.Broker = redactURL(redacted.Broker)
			shown.MQTT = &redacted
		}
		if b := shown.Bulk; b != nil {
			redacted := *b
			redacted.BaseURL, redacted.TokenURL = redactURL(redacted.BaseURL), redactURL(redacted.TokenURL)
			shown.Bulk = &redacted
		}
		return printEffectiveConfig(stdout, shown)
	}
	file.Logger = log
	a, err := agent.New(file.Config)
	if err != nil {
		return err
	}
	defer a.Close()
	fmt.Fprintf(stdout, "agent for site %s: coordinators %v\n", a.SiteID(), file.Coordinators)
	return a.Run(ctx)
}
