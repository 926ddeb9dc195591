package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

const clusterUsage = `Usage: cohort cluster <command> --addr HOST:PORT [flags]

Manages the coordinator cluster through any node's admin API (its
--status-addr). Writes sent to a follower are forwarded to the leader.

Commands:
  status                     list the members and the leader
  join --id ID --raft-addr A add a node as a voter; start it first without
                             --bootstrap (it waits to be added), then join it
  remove --id ID             remove a node (the leader too: a new one is elected)

Flags:
  --addr HOST:PORT   admin address of any coordinator (required)
  --stale            status: answer from that node's own state, without
                     asking the leader (works without a quorum)
  --timeout D        give up after D (default 30s); while the cluster has no
                     leader, requests are retried until then
`

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, clusterUsage)
		if len(args) == 0 {
			return errors.New("cluster: no command given")
		}
		return nil
	}
	cmd := args[0]
	fs := flag.NewFlagSet("cohort cluster "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), clusterUsage) }
	addr := fs.String("addr", "", "admin `address` of any coordinator")
	id := fs.String("id", "", "node `id`")
	raftAddr := fs.String("raft-addr", "", "the joining node's Raft `address` (host:port)")
	stale := fs.Bool("stale", false, "read this node's own state")
	timeout := fs.Duration("timeout", 30*time.Second, "request `timeout`")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("cluster %s: unexpected argument %q", cmd, fs.Arg(0))
	}
	if *addr == "" {
		return fmt.Errorf("cluster %s: --addr is required (a coordinator's --status-addr)", cmd)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := adminClient{base: "http://" + strings.TrimPrefix(*addr, "http://")}
	var v coordinator.ClusterView
	switch cmd {
	case "status":
		path := "/v1/cluster"
		if *stale {
			path += "?stale=true"
		}
		if err := c.do(ctx, http.MethodGet, path, nil, &v); err != nil {
			return err
		}
	case "join":
		if *id == "" || *raftAddr == "" {
			return errors.New("cluster join: --id and --raft-addr are required")
		}
		if err := c.do(ctx, http.MethodPost, "/v1/cluster/nodes", map[string]string{"id": *id, "raft_addr": *raftAddr}, &v); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s joined the cluster\n", *id)
	case "remove":
		if *id == "" {
			return errors.New("cluster remove: --id is required")
		}
		if err := c.do(ctx, http.MethodDelete, "/v1/cluster/nodes/"+*id, nil, &v); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s removed from the cluster\n", *id)
	default:
		fmt.Fprint(stderr, clusterUsage)
		return fmt.Errorf("cluster: unknown command %q", cmd)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tRAFT\tAGENTS\tADMIN")
	for _, n := range v.Nodes {
		role := "follower"
		switch {
		case n.Leader:
			role = "leader"
		case !n.Voter:
			role = "nonvoter"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.ID, role, n.RaftAddr, dash(n.AgentAddr), dash(n.StatusAddr))
	}
	tw.Flush()
	if v.Leader == "" {
		fmt.Fprintln(stdout, "no leader known")
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// adminClient calls a coordinator's admin API.
type adminClient struct {
	base string
}

// do sends one request and decodes a JSON answer into out; an error answer
// (a problem document) becomes an error with its detail. While the
// cluster has no leader (503, or 502 when forwarding failed) it tries
// again until ctx ends: every call it makes is idempotent.
func (c adminClient) do(ctx context.Context, method, path string, body, out any) error {
	wait := 200 * time.Millisecond
	for {
		err := c.once(ctx, method, path, body, out)
		var ue unavailableError
		if !errors.As(err, &ue) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// unavailableError is a 502 or 503 answer: no leader, or none reachable.
type unavailableError struct{ error }

func (c adminClient) once(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode >= 300 {
		var p coordinator.Problem
		err := fmt.Errorf("admin API: %s", resp.Status)
		if json.Unmarshal(raw, &p) == nil && p.Detail != "" {
			err = fmt.Errorf("admin API: %s: %s", resp.Status, p.Detail)
		}
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway {
			return unavailableError{err}
		}
		return err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("admin API: answer: %w", err)
		}
	}
	return nil
}
