package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// clusterDeprecation is printed on stderr by `cohort cluster`.
const clusterDeprecation = "cohort cluster is deprecated: use `cohort admin cluster` (the HTTPS admin address, --admin-addr, and a token)"

// runCluster is the old `cohort cluster status|join|remove --addr A`, kept
// as an alias of `cohort admin cluster`: status becomes the plain
// command, --addr becomes --server (now a coordinator's admin address),
// and the token comes from --token-file or the environment as for every
// admin command.
func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fmt.Fprintln(stderr, clusterDeprecation)
	out := []string{"cluster"}
	positional := 0
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		isFlag := strings.HasPrefix(a, "-")
		// Is a the value of the flag before it?
		isValue := i > 0 && strings.HasPrefix(args[i-1], "-") && !strings.Contains(args[i-1], "=") &&
			!slices.Contains([]string{"json", "stale", "h", "help"}, strings.TrimLeft(args[i-1], "-"))
		switch {
		case isFlag && name == "addr":
			out = append(out, "--server")
			if hasValue {
				out = append(out, value)
			}
		case isFlag && name == "stale":
			return errors.New("cluster: --stale is gone: the admin API answers from the leader; for one node's own view read its status address, /v1/status?stale=true")
		case !isFlag && !isValue:
			positional++
			if positional == 1 && a == "status" {
				continue
			}
			out = append(out, a)
		default:
			out = append(out, a)
		}
	}
	return runAdmin(ctx, out, stdout, stderr)
}
