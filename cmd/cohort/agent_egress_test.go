package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/egress"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
)

var egressNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// writeEgressLog writes an egress log through a real Guard (so the lines
// are what an agent writes) into a data dir, and returns the dir.
func writeEgressLog(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	at := egressNow.Add(-48 * time.Hour)
	g, err := egress.New(egress.Config{LogPath: filepath.Join(dir, egress.LogFile), Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var wire bytes.Buffer
	send := func(env *pb.Envelope) {
		if err := g.Send(&wire, env); err != nil {
			t.Fatal(err)
		}
	}
	send(&pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{ProtocolVersion: 1}}})
	at = egressNow.Add(-2 * time.Hour)
	send(&pb.Envelope{Body: &pb.Envelope_TaskRequest{TaskRequest: &pb.TaskRequest{}}})
	data := protocol.EncodeF32([]float32{1, 2, 3, 4})
	ref := &pb.BlobRef{Sha256: protocol.Digest(data), Size: uint64(len(data)), Encoding: pb.Encoding_ENCODING_F32LE}
	at = egressNow.Add(-time.Hour)
	send(&pb.Envelope{Body: &pb.Envelope_UpdateUpload{UpdateUpload: &pb.UpdateUpload{JobId: "sepsis-v1", Round: 3,
		BaseModelSha256: ref.Sha256, Delta: ref, Metrics: &pb.LocalMetrics{}}}})
	if err := g.SendTensor(&wire, ref, data, "sepsis-v1", 3); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runEgress(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = runAgentEgress(args, egressNow, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestAgentEgressTableAndFilters(t *testing.T) {
	dir := writeEgressLog(t)
	digest := protocol.Digest(protocol.EncodeF32([]float32{1, 2, 3, 4}))
	for _, tt := range []struct {
		name    string
		args    []string
		want    []string
		notWant []string
		summary string
	}{
		{"all", nil, []string{"TIME", "SHA256", "hello", "task-request", "update-header", "update-body", "sepsis-v1", digest[:12]},
			[]string{digest[:13]}, "4 records"},
		{"since a duration", []string{"--since", "3h"}, []string{"task-request", "update-body"}, []string{"hello"}, "3 records"},
		{"since a time", []string{"--since", "2026-11-28T10:30:00Z"}, []string{"update-header", "update-body"}, []string{"task-request"}, "2 records"},
		{"since a date", []string{"--since", "2026-11-28"}, []string{"task-request"}, []string{"hello"}, "3 records"},
		{"job", []string{"--job", "sepsis-v1"}, []string{"update-header", "update-body"}, []string{"task-request"}, "2 records"},
		{"kind", []string{"--kind", "update-body"}, []string{"update-body", "16"}, []string{"update-header"}, "1 record, 16 bytes"},
		{"nothing", []string{"--job", "other"}, []string{"TIME"}, []string{"hello"}, "0 records, 0 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := runEgress(t, append([]string{"--data-dir", dir}, tt.args...)...)
			if err != nil || errOut != "" {
				t.Fatalf("err %v, stderr %q", err, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, tt.summary) {
				t.Errorf("summary %q, want %q…", last, tt.summary)
			}
		})
	}
}

// --json prints the records as stored, one per line, and nothing else on
// stdout.
func TestAgentEgressJSON(t *testing.T) {
	dir := writeEgressLog(t)
	out, errOut, err := runEgress(t, "--data-dir", dir, "--json")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(filepath.Join(dir, egress.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if out != string(stored) {
		t.Errorf("--json output differs from the log:\n%s\nvs\n%s", out, stored)
	}
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var r egress.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Errorf("line %q: %v", l, err)
		}
	}
	if !strings.Contains(errOut, "4 records") {
		t.Errorf("summary on stderr = %q", errOut)
	}
}

func TestAgentEgressMalformedLines(t *testing.T) {
	dir := writeEgressLog(t)
	path := filepath.Join(dir, egress.LogFile)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("garbage\n{\"time\":\"2026-11-28T11:00:00Z\",\"kind\":\"hello\"\n")
	f.Close()
	out, errOut, err := runEgress(t, "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "4 records") {
		t.Errorf("the good lines were not all shown:\n%s", out)
	}
	if !strings.Contains(errOut, "skipped 2 malformed lines (5, 6)") {
		t.Errorf("stderr = %q", errOut)
	}
	if _, _, err := runEgress(t, "--data-dir", dir, "--strict"); err == nil || !strings.Contains(err.Error(), "5, 6") {
		t.Errorf("--strict: %v", err)
	}
}

func TestAgentEgressErrors(t *testing.T) {
	dir := writeEgressLog(t)
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no data dir", nil, "--data-dir"},
		{"both", []string{"--data-dir", dir, "--file", "x"}, "not both"},
		{"missing log", []string{"--data-dir", t.TempDir()}, "no egress log at"},
		{"bad since", []string{"--data-dir", dir, "--since", "yesterday"}, "neither a duration"},
		{"negative since", []string{"--data-dir", dir, "--since", "-1h"}, "negative"},
		{"unknown kind", []string{"--data-dir", dir, "--kind", "upload"}, "unknown --kind"},
		{"stray argument", []string{"--data-dir", dir, "extra"}, "unexpected argument"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runEgress(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, _, err := runEgress(t, "--file", filepath.Join(dir, egress.LogFile)); err != nil {
		t.Errorf("--file: %v", err)
	}
	_, help, err := runEgress(t, "--help")
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(help, "what left this site") && !strings.Contains(help, "Shows what left") {
		t.Errorf("--help: %v\n%s", err, help)
	}
	// Through the agent command too.
	var out bytes.Buffer
	if err := run(t.Context(), []string{"agent", "egress", "--data-dir", dir}, &out, &out); err != nil || !strings.Contains(out.String(), "4 records") {
		t.Errorf("cohort agent egress: %v\n%s", err, out.String())
	}
}
