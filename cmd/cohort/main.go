// Command cohort is Cohort's one binary: the coordinator, the site agent,
// the federation CA, and the simulator that runs a whole federation on one
// machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// Version, Commit and Date are stamped at build time with -ldflags -X.
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = "unknown"
)

const usage = `cohort: federated learning and analytics across hospitals.

Usage:
  cohort <command> [flags]

Commands:
  sim          run a whole federation on this machine (3 coordinators, 4 hospital
               agents over QUIC on loopback) and compare it with centralized and
               local-only training; no outside service needed
  coordinator  run one coordinator node (Raft-replicated control plane)
  admin        run the federation through the admin API: cluster, sites, jobs,
               models, people's tokens and the audit log
  cluster      deprecated alias of 'cohort admin cluster'
  agent        run a site agent on a hospital gateway
  ca           create the federation CA and issue certificates
  health       check a coordinator's or agent's status endpoint (container
               health checks)
  verify       check downloaded release files against the signed SHA256SUMS
  release      make a release signing key; write and sign SHA256SUMS
  version      print the version, commit, build date and platform

Run 'cohort <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cohort:", err)
		}
		stop()
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "sim":
		return runSim(ctx, args[1:], stdout, stderr)
	case "coordinator":
		return runCoordinator(ctx, args[1:], stdout, stderr)
	case "admin":
		return runAdmin(ctx, args[1:], stdout, stderr)
	case "cluster":
		return runCluster(ctx, args[1:], stdout, stderr)
	case "agent":
		return runAgent(ctx, args[1:], stdout, stderr)
	case "ca":
		return runCA(args[1:], stdout, stderr)
	case "health":
		return runHealth(ctx, args[1:], stdout, stderr)
	case "verify":
		return runVerify(args[1:], stdout, stderr)
	case "release":
		return runRelease(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "cohort %s (commit %s, built %s, %s %s/%s)\n", Version, Commit, Date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newLogger writes text logs to w at the given level ("debug", "info",
// "warn", "error"; "off" discards).
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	switch level {
	case "off", "":
		return slog.New(slog.DiscardHandler), nil
	default:
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("log level %q: use debug, info, warn, error or off", level)
		}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
