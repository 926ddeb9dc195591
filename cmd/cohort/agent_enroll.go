package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/internal/secretfile"
)

func runAgentEnroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cohort agent enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		server     = fs.String("server", "", "the coordinators' admin API, `https://HOST:PORT` (any node's --admin-addr)")
		caFile     = fs.String("ca", "", "the federation CA certificate `file` the operator gave you (required: it is how the gateway knows the server is the federation's)")
		token      = fs.String("token", "", "the one-time enrollment `token` (visible to other local users in the process list: prefer --token-file)")
		tokenFile  = fs.String("token-file", "", "`file` holding the one-time enrollment token (must be readable by its owner only)")
		dataDir    = fs.String("data-dir", "", "the agent's data `directory`; the key and certificates go to DIR/tls")
		configPath = fs.String("config", "", "the agent's JSON config `file`, to read data_dir (and renew.server) from")
		force      = fs.Bool("force", false, "replace an existing key and certificate (restart the agent afterwards)")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: cohort agent enroll --server https://HOST:PORT --ca ca.crt --token-file FILE --data-dir DIR

Enrolls this gateway in the federation and gets its site certificate.

The federation operator creates the site and a one-time enrollment token
for it (admin API: POST /v1/sites, then POST /v1/sites/ID/enrollment-tokens)
and gives you three things: the token, the federation CA certificate
(ca.crt) and the coordinators' admin URL. This command then:

  1. makes an ECDSA P-256 private key here, in DIR/tls/site.key (mode 0600,
     directory 0700); the key never leaves the gateway;
  2. sends a certificate request with the token to the admin API
     (POST /v1/enroll over HTTPS, checking the server's certificate
     against --ca; there is no trust-on-first-use);
  3. checks the certificate it gets (it chains to --ca, names a site, holds
     this key) and writes DIR/tls/site.crt and DIR/tls/ca.crt.

The token works once, and only until it expires (24 hours by default).
Certificates are short-lived (7 days by default); the running agent renews
its own before two thirds of its life have passed when renew.server (or
--renew-server) names the admin URL. Enrollment and renewal need outbound
TCP to the admin port; the agent's work needs outbound UDP to the agent
port. Nothing inbound.

It refuses to replace an existing key or certificate unless --force.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("agent enroll: unexpected argument %q", fs.Arg(0))
	}
	dir := *dataDir
	if *configPath != "" {
		file := agentFile{Config: agent.DefaultConfig()}
		if err := readJSONFile(*configPath, &file); err != nil {
			return err
		}
		if dir == "" {
			dir = file.DataDir
		}
		if file.TLS != (agent.DefaultTLSFiles(file.DataDir)) && file.TLS.Cert != "" {
			fmt.Fprintf(stderr, "note: %s names tls files of its own (%s); enrollment writes %s/tls: point tls at those files or remove the tls section\n",
				*configPath, file.TLS.Cert, dir)
		}
		if *server == "" {
			*server = file.Renew.Server
		}
	}
	switch {
	case *server == "":
		fs.Usage()
		return errors.New("agent enroll: --server is required (the coordinators' admin URL, https://HOST:PORT)")
	case *caFile == "":
		fs.Usage()
		return errors.New("agent enroll: --ca is required (the federation CA certificate the operator gave with the token)")
	case dir == "":
		fs.Usage()
		return errors.New("agent enroll: --data-dir (or --config with data_dir) is required")
	case *token != "" && *tokenFile != "":
		return errors.New("agent enroll: give --token or --token-file, not both")
	case *token == "" && *tokenFile == "":
		fs.Usage()
		return errors.New("agent enroll: --token-file (or --token) is required: the one-time enrollment token from the federation operator")
	}
	tok := *token
	if *tokenFile != "" {
		var err error
		if tok, err = readEnrollToken(*tokenFile); err != nil {
			return err
		}
	}
	res, err := agent.Enroll(ctx, agent.EnrollConfig{Server: *server, CA: *caFile, Token: tok, DataDir: dir, Force: *force})
	if err != nil {
		return fmt.Errorf("agent enroll: %w", err)
	}
	base, _ := agent.ServerURL(*server)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	fmt.Fprintf(stdout, `enrolled site %q; certificate valid until %s (%s)
  %s  key (never leaves this gateway)
  %s  site certificate
  %s  federation CA

Run the agent with these files and automatic renewal: in its config file
  "data_dir": %q,
  "renew": {"server": %q}
(the tls files default to DATA_DIR/tls), or with flags
  cohort agent --data-dir %s --renew-server %s --coordinator HOST:PORT ...
`, res.Site, res.NotAfter.UTC().Format(time.RFC3339), lifetime(time.Until(res.NotAfter)),
		res.Files.Key, res.Files.Cert, res.Files.CA, dir, base, dir, base)
	if *force {
		fmt.Fprintln(stdout, "\nA running agent keeps the old certificate until it is restarted.")
	}
	return nil
}

// lifetime says how long a certificate has left, for people.
func lifetime(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%.1f days", d.Hours()/24)
	case d >= time.Minute:
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}

// readEnrollToken reads an enrollment token from a file readable by its
// owner only.
func readEnrollToken(path string) (string, error) {
	return secretfile.Read(path, "agent enroll: token file")
}
