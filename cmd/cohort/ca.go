package main

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/protocol/pki"
)

// runCA implements `cohort ca`: creating the federation CA and issuing
// coordinator and site certificates from it.
func runCA(args []string, stdout, stderr io.Writer) error {
	const usage = `cohort ca: the federation's certificate authority.

Usage:
  cohort ca init  --dir DIR [--name NAME] [--exist-ok]
  cohort ca issue --dir DIR --role coordinator|site --id ID [--host H]... [--out OUTDIR] [--validity DURATION] [--exist-ok]

Commands:
  init   Create a new CA in DIR: ca.crt, which every coordinator and agent
         trusts, and ca.key (mode 0600), which signs every certificate and
         belongs offline. Refuses to overwrite an existing CA key
         (--exist-ok: keeps a valid existing CA and succeeds).
           cohort ca init --dir ./ca --name "Example Health federation CA"

  issue  Issue a coordinator or site certificate with a fresh ECDSA P-256 key,
         written to OUTDIR/ID.crt and OUTDIR/ID.key (mode 0600). Coordinators
         need at least one --host (DNS name or IP address that agents and
         other coordinators dial); sites take none. Refuses to overwrite
         (--exist-ok: keeps an existing certificate that this CA signed for
         the same role, id and hosts and that is still valid, and succeeds).
           cohort ca issue --dir ./ca --role coordinator --id c1 --host c1.cohort.internal --host 10.0.0.11
           cohort ca issue --dir ./ca --role site --id st-marys --out ./st-marys --validity 720h

Run 'cohort ca <command> --help' for a command's flags.
`
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("ca: no subcommand given (init or issue)")
	}

	// newFlags returns a flag set whose -h prints synopsis, a description
	// and the flags to stderr.
	newFlags := func(name, synopsis, about string) *flag.FlagSet {
		fs := flag.NewFlagSet("cohort ca "+name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n\nFlags:\n", synopsis, about)
			fs.PrintDefaults()
		}
		return fs
	}
	// parse parses args and refuses positional arguments.
	parse := func(fs *flag.FlagSet, args []string) error {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			fs.Usage()
			return fmt.Errorf("%s: unexpected arguments %q", strings.TrimPrefix(fs.Name(), "cohort "), fs.Args())
		}
		return nil
	}
	fingerprint := func(der []byte) string {
		sum := sha256.Sum256(der)
		hex := fmt.Sprintf("%X", sum[:])
		var b strings.Builder
		for i := 0; i < len(hex); i += 2 {
			if i > 0 {
				b.WriteByte(':')
			}
			b.WriteString(hex[i : i+2])
		}
		return b.String()
	}

	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil

	case "init":
		fs := newFlags("init", "cohort ca init --dir DIR [--name NAME] [--exist-ok]",
			"Creates DIR (mode 0700) with a new self-signed CA, valid 10 years:\n"+
				"ca.crt for every coordinator and agent, ca.key (mode 0600) to keep offline.\n"+
				"Refuses to overwrite an existing ca.key; with --exist-ok it keeps a CA that\n"+
				"loads (for setup scripts that run more than once).\n\n"+
				"Example: cohort ca init --dir ./ca --name \"Example Health federation CA\"")
		dir := fs.String("dir", "", "CA `directory` to create (required)")
		name := fs.String("name", pki.DefaultCAName, "the CA's common `name`")
		existOK := fs.Bool("exist-ok", false, "if DIR already holds a CA that loads, keep it and succeed")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			fs.Usage()
			return errors.New("ca init: --dir is required")
		}
		err := pki.InitCA(*dir, *name, time.Now())
		kept := *existOK && errors.Is(err, pki.ErrExists)
		if err != nil && !kept {
			return fmt.Errorf("ca init: %w", err)
		}
		ca, err := pki.LoadCA(*dir)
		if err != nil {
			return fmt.Errorf("ca init: %w", err)
		}
		cert := ca.Certificate()
		if kept {
			fmt.Fprintf(stdout, "kept the existing CA %q in %s, valid until %s\n", cert.Subject.CommonName, *dir, cert.NotAfter.UTC().Format(time.RFC3339))
			fmt.Fprintf(stdout, "SHA-256 fingerprint: %s\n", fingerprint(cert.Raw))
			return nil
		}
		fmt.Fprintf(stdout, "created CA %q, valid until %s\n", cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(stdout, "  %s  CA certificate: install on every coordinator and agent\n", filepath.Join(*dir, pki.CACertFile))
		fmt.Fprintf(stdout, "  %s  CA private key (mode 0600): keep it offline\n", filepath.Join(*dir, pki.CAKeyFile))
		fmt.Fprintf(stdout, "SHA-256 fingerprint: %s\n", fingerprint(cert.Raw))
		return nil

	case "issue":
		fs := newFlags("issue", "cohort ca issue --dir DIR --role coordinator|site --id ID [--host H]... [--out OUTDIR] [--validity DURATION]",
			"Issues a certificate and a fresh ECDSA P-256 private key signed by the CA in DIR,\n"+
				"written to OUTDIR/ID.crt and OUTDIR/ID.key (mode 0600). The certificate names\n"+
				"the role and id (CN=ID, OU=ROLE, URI SAN cohort:ROLE/ID). Coordinators need at\n"+
				"least one --host; sites take none. Refuses to overwrite existing files; with\n"+
				"--exist-ok it keeps a certificate this CA signed for the same role, id and\n"+
				"hosts that is still valid (for setup scripts that run more than once).\n\n"+
				"Example: cohort ca issue --dir ./ca --role coordinator --id c1 --host c1.cohort.internal --host 10.0.0.11\n"+
				"Example: cohort ca issue --dir ./ca --role site --id st-marys --out ./st-marys")
		dir := fs.String("dir", "", "CA `directory` made by 'cohort ca init' (required)")
		role := fs.String("role", "", "certificate `role`: coordinator or site (required)")
		id := fs.String("id", "", "coordinator node `id` or site id (required): lowercase letters, digits, '.', '_', '-'")
		out := fs.String("out", "", "output `directory` (default: the CA directory)")
		existOK := fs.Bool("exist-ok", false, "if OUTDIR/ID.crt and ID.key exist, keep them when this CA issued them for the same role, id and hosts and they are still valid")
		validity := fs.Duration("validity", 0, "how long the certificate is valid, e.g. 720h (default: 8760h for coordinators, 2160h for sites)")
		var hosts []string
		fs.Func("host", "DNS `name` or IP address for a coordinator's certificate (repeatable, or comma-separated)", func(v string) error {
			for h := range strings.SplitSeq(v, ",") {
				if h = strings.TrimSpace(h); h != "" {
					hosts = append(hosts, h)
				}
			}
			return nil
		})
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		var missing []string
		for _, f := range []struct{ name, val string }{{"--dir", *dir}, {"--role", *role}, {"--id", *id}} {
			if f.val == "" {
				missing = append(missing, f.name)
			}
		}
		if len(missing) > 0 {
			fs.Usage()
			return fmt.Errorf("ca issue: %s required", strings.Join(missing, ", "))
		}
		if *out == "" {
			*out = *dir
		}
		req := pki.IssueRequest{Role: *role, ID: *id, Hosts: hosts, Validity: *validity}
		if err := pki.ValidateRole(req.Role); err != nil {
			return fmt.Errorf("ca issue: %w", err)
		}
		if err := pki.ValidateID(req.ID); err != nil {
			return fmt.Errorf("ca issue: %w", err)
		}
		ca, err := pki.LoadCA(*dir)
		if err != nil {
			return fmt.Errorf("ca issue: %w", err)
		}
		certPath, keyPath, err := ca.IssueToFiles(*out, req, time.Now())
		if *existOK && errors.Is(err, pki.ErrExists) {
			certPath, keyPath = filepath.Join(*out, req.ID+".crt"), filepath.Join(*out, req.ID+".key")
			leaf, err := ca.CheckIssued(certPath, keyPath, req, time.Now())
			if err != nil {
				return fmt.Errorf("ca issue: --exist-ok: the existing files can't be kept: %w", err)
			}
			fmt.Fprintf(stdout, "kept the existing %s certificate for %q in %s, valid until %s\n", req.Role, req.ID, certPath, leaf.NotAfter.UTC().Format(time.RFC3339))
			return nil
		}
		if err != nil {
			return fmt.Errorf("ca issue: %w", err)
		}
		pair, err := pki.LoadKeyPair(certPath, keyPath)
		if err != nil {
			return fmt.Errorf("ca issue: %w", err)
		}
		leaf := pair.Leaf
		fmt.Fprintf(stdout, "issued %s certificate for %q, valid until %s\n", req.Role, req.ID, leaf.NotAfter.UTC().Format(time.RFC3339))
		names := slices.Clone(leaf.DNSNames)
		for _, ip := range leaf.IPAddresses {
			names = append(names, ip.String())
		}
		if len(names) > 0 {
			fmt.Fprintf(stdout, "  hosts: %s\n", strings.Join(names, ", "))
		}
		fmt.Fprintf(stdout, "  %s  certificate\n", certPath)
		fmt.Fprintf(stdout, "  %s  private key (mode 0600)\n", keyPath)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("ca: unknown subcommand %q (want init or issue)", args[0])
}
