package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/sim/relay"
)

// Fault actions of a testbed's timeline.
const (
	// ActKillLeader crashes the coordinator that leads when it fires (no
	// leadership transfer); with For, the same node restarts after it.
	ActKillLeader = "kill-leader"
	// ActKillNode crashes coordinator Node; with For, it restarts after.
	ActKillNode = "kill-node"
	// ActRestartNode starts coordinator Node again from its data directory.
	ActRestartNode = "restart-node"
	// ActPartitionLeader cuts the leader's Raft traffic with the other
	// coordinators (its agents still reach it); with For, heals after.
	ActPartitionLeader = "partition-leader"
	// ActPartition cuts coordinators Nodes off from the others.
	ActPartition = "partition"
	// ActSlowNode delays every Raft write to and from coordinator Node by
	// Delay.
	ActSlowNode = "slow-node"
	// ActHeal removes every coordinator partition and slowness.
	ActHeal = "heal"
	// ActDropSite stops the agents of Sites (their gateways go down); with
	// For, they come back after.
	ActDropSite = "drop-site"
	// ActRejoinSite starts the agents of Sites again, on their old data.
	ActRejoinSite = "rejoin-site"
	// ActDisconnectSite takes the network links of Sites down (every
	// datagram dropped at the relay) while their agents keep running.
	ActDisconnectSite = "disconnect-site"
	// ActReconnectSite restores the links of Sites to the base conditions.
	ActReconnectSite = "reconnect-site"
	// ActStraggle makes Sites wait Delay after training before they send
	// each update; with For, they stop straggling after.
	ActStraggle = "straggle"
	// ActLink sets loss, latency and jitter on the links of Sites (every
	// site when empty); with For, the base conditions return after.
	ActLink = "link"
)

// Actions are the fault actions a timeline may use.
var Actions = []string{ActKillLeader, ActKillNode, ActRestartNode, ActPartitionLeader, ActPartition,
	ActSlowNode, ActHeal, ActDropSite, ActRejoinSite, ActDisconnectSite, ActReconnectSite, ActStraggle, ActLink}

// Link is the condition of agent links: each datagram between an agent and
// a coordinator is dropped with probability Loss and delayed by Latency
// plus up to Jitter, each way.
type Link struct {
	Loss    float64              `json:"loss,omitempty"`
	Latency coordinator.Duration `json:"latency,omitempty"`
	Jitter  coordinator.Duration `json:"jitter,omitempty"`
}

func (l Link) relay() relay.Link {
	return relay.Link{Loss: l.Loss, Latency: time.Duration(l.Latency), Jitter: time.Duration(l.Jitter)}
}

func (l Link) validate() error {
	if !(l.Loss >= 0 && l.Loss <= 1) || l.Latency < 0 || l.Jitter < 0 {
		return errors.New("loss must be in [0, 1] and latency and jitter not negative")
	}
	return nil
}

func (l Link) zero() bool { return l == Link{} }

// Fault is one event of a testbed's fault timeline. It fires once, when
// its trigger holds: Round (the round with this number is open, holding at
// least AfterUpdates acknowledged updates, or under secure aggregation at
// least AfterUpdates masked updates) or Time (since the federation
// started). Exactly one of them is set.
type Fault struct {
	Round        uint64               `json:"round,omitempty"`
	AfterUpdates int                  `json:"after_updates,omitempty"`
	Time         coordinator.Duration `json:"time,omitempty"`
	// Action is one of Actions.
	Action string `json:"action"`
	// Node is a coordinator, numbered from 1 (kill-node, restart-node,
	// slow-node); Nodes are the coordinators a partition cuts off.
	Node  int   `json:"node,omitempty"`
	Nodes []int `json:"nodes,omitempty"`
	// Sites are the sites a site action applies to.
	Sites []string `json:"sites,omitempty"`
	// Delay is a straggler's wait or a slow node's added latency.
	Delay coordinator.Duration `json:"delay,omitempty"`
	// Link holds a link action's conditions.
	Link
	// For undoes the action this long after it fired (restart, heal,
	// rejoin, reconnect, stop straggling, base link conditions).
	For coordinator.Duration `json:"for,omitempty"`
}

// validate checks the fault against a testbed of nodes coordinators and
// the given sites.
func (f Fault) validate(nodes int, sites []string) error {
	if (f.Round > 0) == (f.Time > 0) {
		return errors.New("set exactly one trigger: round or time")
	}
	if f.AfterUpdates < 0 || f.AfterUpdates > 0 && f.Round == 0 {
		return errors.New("after_updates needs a round trigger and must not be negative")
	}
	if f.For < 0 {
		return errors.New("for must not be negative")
	}
	node := func(i int) error {
		if i < 1 || i > nodes {
			return fmt.Errorf("node %d: coordinators are numbered 1 to %d", i, nodes)
		}
		return nil
	}
	needSites := func() error {
		if len(f.Sites) == 0 {
			return fmt.Errorf("%s needs sites", f.Action)
		}
		return nil
	}
	for _, s := range f.Sites {
		if !slices.Contains(sites, s) {
			return fmt.Errorf("unknown site %q (sites: %s)", s, strings.Join(sites, ", "))
		}
	}
	switch f.Action {
	case ActKillLeader, ActPartitionLeader, ActHeal:
		return nil
	case ActKillNode, ActRestartNode:
		return node(f.Node)
	case ActSlowNode:
		if f.Delay <= 0 {
			return errors.New("slow-node needs a positive delay")
		}
		return node(f.Node)
	case ActPartition:
		if len(f.Nodes) == 0 || len(f.Nodes) >= nodes {
			return fmt.Errorf("partition needs between 1 and %d nodes", nodes-1)
		}
		for _, i := range f.Nodes {
			if err := node(i); err != nil {
				return err
			}
		}
		return nil
	case ActDropSite, ActRejoinSite, ActDisconnectSite, ActReconnectSite:
		return needSites()
	case ActStraggle:
		if f.Delay <= 0 {
			return errors.New("straggle needs a positive delay")
		}
		return needSites()
	case ActLink:
		return f.Link.validate()
	}
	return fmt.Errorf("unknown action %q (use one of %s)", f.Action, strings.Join(Actions, ", "))
}

// usesLinks reports whether the fault needs relays on the agent links.
func (f Fault) usesLinks() bool {
	return f.Action == ActLink || f.Action == ActDisconnectSite || f.Action == ActReconnectSite
}

func (f Fault) trigger() string {
	if f.Round > 0 {
		if f.AfterUpdates > 0 {
			return fmt.Sprintf("round %d after %d updates", f.Round, f.AfterUpdates)
		}
		return fmt.Sprintf("round %d", f.Round)
	}
	return "at " + time.Duration(f.Time).String()
}

// FaultEvent is a fault as it happened.
type FaultEvent struct {
	// At is when it fired, in seconds since the run started.
	At float64 `json:"at_seconds"`
	// Round is the training round open then (0: none).
	Round  uint64 `json:"round,omitempty"`
	Action string `json:"action"`
	Detail string `json:"detail,omitempty"`
	// Recovery is, for faults that stop or cut off a coordinator, the
	// seconds from the fault to the next round commit (-1: none followed).
	Recovery float64 `json:"recovery_seconds,omitempty"`
	// Err is set when the action could not be carried out.
	Err string `json:"error,omitempty"`
}

// disruptive reports whether the action stops or cuts off coordinators,
// so that the time to the next commit measures the recovery.
func disruptive(action string) bool {
	switch action {
	case ActKillLeader, ActKillNode, ActPartitionLeader, ActPartition:
		return true
	}
	return false
}

// timeline fires a testbed's faults on its federation.
type timeline struct {
	fed   *federation
	job   string
	start time.Time
	base  Link // the links' conditions outside link faults
	out   io.Writer

	pending []Fault // not fired yet, by trigger
	events  []FaultEvent
}

// run fires the faults as their triggers come, until they all fired or
// ctx ends, and returns what happened. The triggers are checked on every
// change of a live coordinator's state, and every 20 ms.
func (t *timeline) run(ctx context.Context) []FaultEvent {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(t.pending) > 0 {
		var changed <-chan struct{}
		live := t.fed.live()
		if len(live) > 0 {
			changed = live[0].Changed()
		}
		cur := t.currentRound(live)
		now := time.Since(t.start)
		for i := 0; i < len(t.pending); i++ {
			f := t.pending[i]
			if !t.due(f, cur, now) {
				continue
			}
			t.pending = slices.Delete(t.pending, i, i+1)
			i--
			t.fire(ctx, f, cur)
		}
		select {
		case <-ctx.Done():
			return t.events
		case <-changed:
		case <-tick.C:
		}
	}
	return t.events
}

// roundView is the training round a live coordinator shows.
type roundView struct {
	number   uint64 // the open round, or the last committed one when none is open
	open     bool
	receipts int
}

// currentRound is the most advanced view of the job's training rounds
// among the live coordinators.
func (t *timeline) currentRound(live []*coordinator.Node) roundView {
	var best roundView
	for _, n := range live {
		j, ok := n.Job(t.job)
		if !ok {
			continue
		}
		var v roundView
		if c := j.Current; c != nil && c.Kind != coordinator.KindStats {
			v = roundView{number: c.Number, open: true, receipts: len(c.Receipts)}
			if p := c.SecAggProgress; p != nil {
				v.receipts = p.MaskedInputs
			}
		} else {
			for _, r := range j.Rounds {
				if r.State == coordinator.RoundCommitted && r.Kind != coordinator.KindStats {
					v.number = max(v.number, r.Number)
				}
			}
		}
		if v.number > best.number || v.number == best.number && (v.open && !best.open || v.receipts > best.receipts) {
			best = v
		}
	}
	return best
}

// due reports whether f's trigger holds. A round trigger also fires once
// that round is past (a fault is never skipped).
func (t *timeline) due(f Fault, cur roundView, now time.Duration) bool {
	if f.Time > 0 {
		return now >= time.Duration(f.Time)
	}
	if cur.number > f.Round || cur.number == f.Round && !cur.open {
		return true
	}
	return cur.number == f.Round && cur.open && cur.receipts >= f.AfterUpdates
}

// fire carries out one fault and records it.
func (t *timeline) fire(ctx context.Context, f Fault, cur roundView) {
	ev := FaultEvent{At: time.Since(t.start).Seconds(), Action: f.Action}
	if cur.open {
		ev.Round = cur.number
	}
	detail, undo, err := t.do(ctx, f)
	ev.Detail = detail
	if err != nil {
		ev.Err = err.Error()
	}
	t.events = append(t.events, ev)
	msg := fmt.Sprintf("fault %5.1fs  %s %s", ev.At, f.Action, detail)
	if err != nil {
		msg += "  FAILED: " + err.Error()
	}
	fmt.Fprintln(t.out, msg)
	if undo != nil && f.For > 0 && err == nil {
		undo.Time = coordinator.Duration(time.Since(t.start) + time.Duration(f.For))
		t.pending = append(t.pending, *undo)
	}
}

// do carries out f; undo is the fault that reverses it (fired after
// f.For).
func (t *timeline) do(ctx context.Context, f Fault) (detail string, undo *Fault, err error) {
	fed := t.fed
	nodeID := func(i int) string { return fed.node(i - 1).ID() }
	sites := strings.Join(f.Sites, ", ")
	switch f.Action {
	case ActKillLeader, ActPartitionLeader:
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		l, err := fed.leader(lctx)
		if err != nil {
			return "", nil, fmt.Errorf("no leader: %w", err)
		}
		i := fed.indexOf(l)
		if i < 0 {
			return l.ID(), nil, errors.New("the leader was replaced while the fault fired")
		}
		if f.Action == ActPartitionLeader {
			fed.partition(l.ID())
			return l.ID(), &Fault{Action: ActHeal}, nil
		}
		fed.crash(i)
		return l.ID(), &Fault{Action: ActRestartNode, Node: i + 1}, nil
	case ActKillNode:
		id := nodeID(f.Node)
		fed.crash(f.Node - 1)
		return id, &Fault{Action: ActRestartNode, Node: f.Node}, nil
	case ActRestartNode:
		return nodeID(f.Node), nil, fed.restartNode(f.Node - 1)
	case ActPartition:
		var ids []string
		for _, i := range f.Nodes {
			ids = append(ids, nodeID(i))
		}
		fed.partition(ids...)
		return strings.Join(ids, ", "), &Fault{Action: ActHeal}, nil
	case ActSlowNode:
		fed.slowNode(nodeID(f.Node), time.Duration(f.Delay))
		return fmt.Sprintf("%s by %s", nodeID(f.Node), time.Duration(f.Delay)), &Fault{Action: ActHeal}, nil
	case ActHeal:
		fed.heal()
		return "", nil, nil
	case ActDropSite:
		var errs []error
		for _, s := range f.Sites {
			errs = append(errs, fed.stopAgent(s))
		}
		return sites, &Fault{Action: ActRejoinSite, Sites: f.Sites}, errors.Join(errs...)
	case ActRejoinSite:
		var errs []error
		for _, s := range f.Sites {
			_, err := fed.addAgent(s, nil)
			errs = append(errs, err)
		}
		return sites, nil, errors.Join(errs...)
	case ActDisconnectSite:
		return sites, &Fault{Action: ActReconnectSite, Sites: f.Sites}, fed.setLinkDown(f.Sites, true)
	case ActReconnectSite:
		return sites, nil, fed.setLinkDown(f.Sites, false)
	case ActStraggle:
		// The undo is a straggle with no delay, which only the timeline
		// makes (validate refuses it in a scenario).
		for _, s := range f.Sites {
			fed.setStraggle(s, time.Duration(f.Delay))
		}
		if f.Delay <= 0 {
			return sites + " back to normal", nil, nil
		}
		return fmt.Sprintf("%s by %s", sites, time.Duration(f.Delay)), &Fault{Action: ActStraggle, Sites: f.Sites}, nil
	case ActLink:
		who := sites
		if who == "" {
			who = "every site"
		}
		d := fmt.Sprintf("%s: loss %.0f%%, latency %s, jitter %s", who, 100*f.Loss, time.Duration(f.Latency), time.Duration(f.Jitter))
		return d, &Fault{Action: ActLink, Sites: f.Sites, Link: t.base}, fed.setLink(f.Sites, f.Link.relay())
	}
	return "", nil, fmt.Errorf("unknown action %q", f.Action)
}

// recoveries fills in each disruptive event's time to the next commit
// (rounds are the committed rounds with their commit times).
func recoveries(events []FaultEvent, rounds []RoundLine) {
	commits := make([]float64, 0, len(rounds))
	for _, r := range rounds {
		commits = append(commits, r.Elapsed)
	}
	sort.Float64s(commits)
	for i := range events {
		e := &events[i]
		if !disruptive(e.Action) || e.Err != "" {
			continue
		}
		k := sort.SearchFloat64s(commits, e.At)
		if k == len(commits) {
			e.Recovery = -1
			continue
		}
		e.Recovery = math.Max(commits[k]-e.At, 0)
	}
}
