package coordinator

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The sequential specification that TestAdminHistoryIsLinearizable checks
// the admin API's history against, and a test that the checker can fail.
//
// Every key (a site or a job, "site/<id>" or "job/<id>") is a register
// written once: absent until the first create applies, then present with the
// creation time that entry carried, forever. The FSM keeps the first
// ensure-site or ensure-job of an id and ignores the later ones, so a create
// of a present key changes nothing. Keys are independent, so the history is
// checked key by key (Model.Partition).

// linKind is an operation of the admin API.
type linKind uint8

const (
	linCreate linKind = iota // POST /v1/sites or /v1/jobs
	linRead                  // GET /v1/sites/{id} or /v1/jobs/{id}
)

// linInput is an operation's call: what and which key.
type linInput struct {
	Kind linKind
	Key  string // "site/<id>" or "job/<id>"
}

// linOutput is an operation's answer.
type linOutput struct {
	// Unknown: a create that got no answer, a timeout or a 5xx, which may
	// or may not have taken effect (its Return is math.MaxInt64).
	Unknown bool
	// Present: a read found the key (200), or a create succeeded (201).
	Present bool
	// Created is the key's creation time as the answer shows it, when
	// Present.
	Created string
}

// linState values besides a creation time.
const (
	linAbsent  = ""
	linPresent = "?" // created by a create whose outcome is unknown: the time is not known yet
)

// linModel is the specification. The state of one key is linAbsent,
// linPresent or the creation time. An unknown create's entry carries a time
// nobody has seen; the first answer that shows the key pins it (a
// linPresent state takes the first time observed), which is the same as
// guessing it right in the first place.
var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(linInput).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := slices.Sorted(maps.Keys(byKey))
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return linAbsent },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(linInput), output.(linOutput)
		switch in.Kind {
		case linCreate:
			switch {
			case out.Unknown && st == linAbsent:
				return true, linPresent
			case out.Unknown:
				return true, st
			case !out.Present || out.Created == "":
				return false, st // a create that succeeded shows the key
			case st == linAbsent || st == linPresent:
				return true, out.Created
			default:
				// The key existed: the answer shows the first creation.
				return out.Created == st, st
			}
		case linRead:
			switch {
			case !out.Present:
				return st == linAbsent, st
			case st == linAbsent:
				return false, st
			case st == linPresent:
				return true, out.Created
			default:
				return out.Created == st, st
			}
		}
		return false, st
	},
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		var res string
		switch {
		case out.Unknown:
			res = "unknown"
		case !out.Present:
			res = "absent"
		default:
			res = "created " + shortTime(out.Created)
		}
		verb := "create"
		if in.Kind == linRead {
			verb = "read"
		}
		return fmt.Sprintf("%s(%s) → %s", verb, in.Key, res)
	},
	DescribeState: func(state any) string {
		switch st := state.(string); st {
		case linAbsent:
			return "absent"
		case linPresent:
			return "present (creation time not seen yet)"
		default:
			return "created " + shortTime(st)
		}
	},
	DescribeOperationMetadata: func(info any) string {
		s, _ := info.(string)
		return s
	},
}

// shortTime keeps the clock part of an RFC 3339 time, for descriptions.
func shortTime(s string) string {
	if i := strings.IndexByte(s, 'T'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestLinearizabilityCheckerCanFail feeds the model small hand-made
// histories, so that a passing TestAdminHistoryIsLinearizable means
// something: the checker must call the stale and the inconsistent ones
// illegal.
func TestLinearizabilityCheckerCanFail(t *testing.T) {
	const (
		t1  = "2026-01-01T10:00:00.000000001Z"
		t2  = "2026-01-01T10:00:00.000000002Z"
		inf = math.MaxInt64
	)
	create := func(client int, key string, call, ret int64, created string) porcupine.Operation {
		out := linOutput{Present: true, Created: created}
		if ret == inf {
			out = linOutput{Unknown: true}
		}
		return porcupine.Operation{ClientId: client, Input: linInput{linCreate, key}, Call: call, Output: out, Return: ret}
	}
	read := func(client int, key string, call, ret int64, created string) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: linInput{linRead, key}, Call: call,
			Output: linOutput{Present: created != "", Created: created}, Return: ret}
	}
	for _, c := range []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"stale read: absent after a create returned", []porcupine.Operation{
			create(0, "site/a", 0, 10, t1),
			read(1, "site/a", 20, 30, ""),
		}, porcupine.Illegal},
		{"a read concurrent with the create may miss it", []porcupine.Operation{
			create(0, "site/a", 0, 10, t1),
			read(1, "site/a", 5, 30, ""),
		}, porcupine.Ok},
		{"present, then absent", []porcupine.Operation{
			create(0, "site/a", 0, inf, ""),
			read(1, "site/a", 10, 20, t1),
			read(2, "site/a", 30, 40, ""),
		}, porcupine.Illegal},
		{"present before any create", []porcupine.Operation{
			read(1, "job/j", 10, 20, t1),
			create(0, "job/j", 30, 40, t1),
		}, porcupine.Illegal},
		{"an unknown create may have applied", []porcupine.Operation{
			create(0, "site/a", 0, inf, ""),
			read(1, "site/a", 10, 20, ""),
			read(1, "site/a", 30, 40, t2),
			create(2, "site/a", 50, 60, t2),
		}, porcupine.Ok},
		{"an unknown create may never apply", []porcupine.Operation{
			create(0, "site/a", 0, inf, ""),
			read(1, "site/a", 10, 20, ""),
			read(1, "site/a", 30, 40, ""),
		}, porcupine.Ok},
		{"the creation time changed", []porcupine.Operation{
			create(0, "site/a", 0, 10, t1),
			read(1, "site/a", 20, 30, t1),
			create(2, "site/a", 40, 50, t2),
		}, porcupine.Illegal},
		{"two concurrent creates: the first applied wins", []porcupine.Operation{
			create(0, "site/a", 0, 10, t2),
			create(1, "site/a", 1, 11, t2),
			read(2, "site/a", 20, 30, t2),
		}, porcupine.Ok},
		{"keys are independent", []porcupine.Operation{
			create(0, "site/a", 0, 10, t1),
			read(1, "site/b", 20, 30, ""),
			read(1, "job/a", 40, 50, ""),
			read(1, "site/a", 60, 70, t1),
		}, porcupine.Ok},
		{"one bad key among good ones", []porcupine.Operation{
			create(0, "site/a", 0, 10, t1),
			create(0, "site/b", 20, 30, t2),
			read(1, "site/a", 40, 50, t1),
			read(1, "site/b", 60, 70, ""),
		}, porcupine.Illegal},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, _ := porcupine.CheckOperationsVerbose(linModel, c.history, 0)
			if res != c.want {
				t.Fatalf("checker says %s, want %s", res, c.want)
			}
		})
	}
}
