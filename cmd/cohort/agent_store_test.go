package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/store"
)

// storeRunCmd runs `cohort agent store` with args.
func storeRunCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = runAgentStore(args, &out, &errOut)
	return out.String(), errOut.String(), err
}

var storeT0 = time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC)

// newAgentDataDir makes a data directory laid out as the agent leaves it:
// master.key, pseudonym.key and store.db with 4 patients, each with two
// observations (one in 2010, one in 2020) and an encounter in 2010.
func newAgentDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	master, err := store.LoadOrCreateKey(filepath.Join(dir, "master.key"), 32)
	if err != nil {
		t.Fatal(err)
	}
	pseudo, err := store.LoadOrCreateKey(filepath.Join(dir, "pseudonym.key"), 32)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Path: filepath.Join(dir, "store.db"), MasterKey: master, PseudonymKey: pseudo})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := storeT0.AddDate(-10, 0, 0)
	for i := range 4 {
		pid := fmt.Sprintf("MRN-%d", i)
		recs := []error{
			st.Patient(fhir.Patient{ID: pid, Gender: "female"}),
			st.Observation(fhir.Observation{ID: pid + "-old", PatientID: pid, Code: "8867-4", Value: 70, Time: old}),
			st.Observation(fhir.Observation{ID: pid + "-new", PatientID: pid, Code: "8867-4", Value: 80, Time: storeT0}),
			st.Encounter(fhir.Encounter{ID: pid + "-enc", PatientID: pid, Class: "IMP", Start: old, End: old.Add(time.Hour)}),
		}
		if err := errors.Join(recs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAgentStoreVerifyBackupRestore(t *testing.T) {
	dir := newAgentDataDir(t)
	out, _, err := storeRunCmd(t, "verify", "--data-dir", dir)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !strings.Contains(out, "4 patients, 8 observations, 0 conditions, 4 encounters, 0 corrupt") {
		t.Fatalf("verify output:\n%s", out)
	}

	backup := filepath.Join(t.TempDir(), "backup.db")
	out, _, err = storeRunCmd(t, "backup", "--data-dir", dir, "--out", backup)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 || !strings.Contains(out, "8 observations") {
		t.Fatalf("backup file %v, %v; output:\n%s", fi, err, out)
	}
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("MRN-")) || bytes.Contains(raw, []byte("8867-4")) {
		t.Fatal("the backup holds plaintext")
	}
	if _, _, err := storeRunCmd(t, "backup", "--data-dir", dir, "--out", backup); !errors.Is(err, os.ErrExist) {
		t.Fatalf("backup over an existing file: err = %v, want ErrExist", err)
	}

	// Restore on a new gateway: the keys come back from the key backup.
	dir2 := t.TempDir()
	for _, k := range []string{"master.key", "pseudonym.key"} {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir2, k), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err = storeRunCmd(t, "restore", "--data-dir", dir2, "--in", backup)
	if err != nil || !strings.Contains(out, "8 observations") {
		t.Fatalf("restore: %v; output:\n%s", err, out)
	}
	if _, _, err := storeRunCmd(t, "restore", "--data-dir", dir2, "--in", backup); !errors.Is(err, store.ErrExists) {
		t.Fatalf("restore over a store: err = %v, want ErrExists", err)
	}
	if out, _, err := storeRunCmd(t, "verify", "--data-dir", dir2); err != nil || !strings.Contains(out, "8 observations") {
		t.Fatalf("verify restored: %v\n%s", err, out)
	}

	// A restore with another site's master key is refused.
	dir3 := t.TempDir()
	if _, err := store.LoadOrCreateKey(filepath.Join(dir3, "master.key"), 32); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pseudonym.key"))
	if err := os.WriteFile(filepath.Join(dir3, "pseudonym.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := storeRunCmd(t, "restore", "--data-dir", dir3, "--in", backup); !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("restore with a wrong key: err = %v, want ErrWrongKey", err)
	}
	if _, err := os.Stat(filepath.Join(dir3, "store.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused restore left a store")
	}
}

func TestAgentStoreVerifyCorrupt(t *testing.T) {
	dir := newAgentDataDir(t)
	// Damage one sealed value: the file's last command is a SET whose value
	// ends just before the final CRLF.
	path := filepath.Join(dir, "store.db")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-5] ^= 0x40
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := storeRunCmd(t, "verify", "--data-dir", dir)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(out, "corrupt records (1):") {
		t.Fatalf("verify: err %v, output:\n%s", err, out)
	}
}

func TestAgentStoreRotateMasterKey(t *testing.T) {
	t.Run("default: replaces the key file", func(t *testing.T) {
		dir := newAgentDataDir(t)
		keyFile := filepath.Join(dir, "master.key")
		old, _ := os.ReadFile(keyFile)
		out, _, err := storeRunCmd(t, "rotate-master-key", "--data-dir", dir)
		if err != nil {
			t.Fatalf("rotate: %v\n%s", err, out)
		}
		now, _ := os.ReadFile(keyFile)
		if bytes.Equal(old, now) || len(now) != 32 {
			t.Fatal("key file not replaced")
		}
		if _, err := os.Stat(keyFile + ".new"); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("staged key left behind")
		}
		if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %v", fi.Mode())
		}
		if _, _, err := storeRunCmd(t, "verify", "--data-dir", dir); err != nil {
			t.Fatalf("verify with the new key: %v", err)
		}
		oldFile := filepath.Join(t.TempDir(), "old.key")
		if err := os.WriteFile(oldFile, old, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := storeRunCmd(t, "verify", "--data-dir", dir, "--master-key-file", oldFile); !errors.Is(err, store.ErrWrongKey) {
			t.Fatalf("verify with the old key: err = %v, want ErrWrongKey", err)
		}
	})
	t.Run("finishes an interrupted run", func(t *testing.T) {
		dir := newAgentDataDir(t)
		keyFile := filepath.Join(dir, "master.key")
		// The earlier run staged the key and re-keyed the store, then died.
		staged, err := store.LoadOrCreateKey(keyFile+".new", 32)
		if err != nil {
			t.Fatal(err)
		}
		old, _ := os.ReadFile(keyFile)
		pseudo, _ := os.ReadFile(filepath.Join(dir, "pseudonym.key"))
		st, err := store.Open(store.Config{Path: filepath.Join(dir, "store.db"), MasterKey: old, PseudonymKey: pseudo})
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(st.RotateMasterKey(staged), st.Close()); err != nil {
			t.Fatal(err)
		}
		out, _, err := storeRunCmd(t, "rotate-master-key", "--data-dir", dir)
		if err != nil || !strings.Contains(out, "interrupted rotation is finished") {
			t.Fatalf("rotate: %v\n%s", err, out)
		}
		if now, _ := os.ReadFile(keyFile); !bytes.Equal(now, staged) {
			t.Fatal("the staged key was not installed")
		}
		if _, _, err := storeRunCmd(t, "verify", "--data-dir", dir); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("from and to environment variables", func(t *testing.T) {
		dir := newAgentDataDir(t)
		old, _ := os.ReadFile(filepath.Join(dir, "master.key"))
		if err := os.Remove(filepath.Join(dir, "master.key")); err != nil {
			t.Fatal(err)
		}
		t.Setenv("COHORT_TEST_OLD_KEY", hex.EncodeToString(old))
		t.Setenv("COHORT_TEST_NEW_KEY", strings.Repeat("ab", 32))
		if _, _, err := storeRunCmd(t, "rotate-master-key", "--data-dir", dir, "--master-key-env", "COHORT_TEST_OLD_KEY"); err == nil ||
			!strings.Contains(err.Error(), "--new-master-key-env") {
			t.Fatalf("rotation without a new key, from the environment: err = %v", err)
		}
		out, _, err := storeRunCmd(t, "rotate-master-key", "--data-dir", dir, "--master-key-env", "COHORT_TEST_OLD_KEY", "--new-master-key-env", "COHORT_TEST_NEW_KEY")
		if err != nil || !strings.Contains(out, "$COHORT_TEST_NEW_KEY") {
			t.Fatalf("rotate: %v\n%s", err, out)
		}
		if _, _, err := storeRunCmd(t, "verify", "--data-dir", dir, "--master-key-env", "COHORT_TEST_NEW_KEY"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "master.key")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("a key file was created")
		}
	})
}

func TestAgentStoreRotateDataKeyAndRetention(t *testing.T) {
	dir := newAgentDataDir(t)
	out, _, err := storeRunCmd(t, "rotate-data-key", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "data key rotated: 4 patients, 8 observations") {
		t.Fatalf("rotate-data-key: %v\n%s", err, out)
	}
	out, _, err = storeRunCmd(t, "retention", "--data-dir", dir, "--before", "2015-01-01")
	if err != nil || !strings.Contains(out, "deleted 8 records dated before 2015-01-01T00:00:00Z") {
		t.Fatalf("retention: %v\n%s", err, out)
	}
	out, _, err = storeRunCmd(t, "verify", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "4 patients, 4 observations, 0 conditions, 0 encounters, 0 corrupt") {
		t.Fatalf("verify after retention: %v\n%s", err, out)
	}
}

func TestAgentStoreErrors(t *testing.T) {
	dir := newAgentDataDir(t)
	empty := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr error  // checked with errors.Is when set
		wantMsg string // substring of the error
	}{
		{name: "no command", wantMsg: "no command"},
		{name: "unknown command", args: []string{"compact"}, wantMsg: `unknown command "compact"`},
		{name: "no data dir", args: []string{"verify"}, wantMsg: "--data-dir is required"},
		{name: "extra argument", args: []string{"verify", "--data-dir", dir, "x"}, wantMsg: "unexpected arguments"},
		{name: "no store", args: []string{"verify", "--data-dir", empty}, wantMsg: "master key file"},
		{name: "backup without --out", args: []string{"backup", "--data-dir", dir}, wantMsg: "--out is required"},
		{name: "restore without --in", args: []string{"restore", "--data-dir", dir}, wantMsg: "--in is required"},
		{name: "retention without cutoff", args: []string{"retention", "--data-dir", dir}, wantMsg: "--older-than"},
		{name: "retention with both", args: []string{"retention", "--data-dir", dir, "--before", "2020-01-01", "--older-than", "1y"}, wantMsg: "one of"},
		{name: "retention bad age", args: []string{"retention", "--data-dir", dir, "--older-than", "-3d"}, wantMsg: "positive age"},
		{name: "retention bad date", args: []string{"retention", "--data-dir", dir, "--before", "1/2/2020"}, wantMsg: "YYYY-MM-DD"},
		{name: "bad master key env", args: []string{"verify", "--data-dir", dir, "--master-key-env", "COHORT_TEST_BAD_KEY"}, wantErr: store.ErrMasterKeyEnv},
	}
	t.Setenv("COHORT_TEST_BAD_KEY", "not-a-key")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := storeRunCmd(t, tc.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
	if names, _ := os.ReadDir(empty); len(names) != 0 {
		t.Fatalf("a failed command created %v", names)
	}
}

func TestAgentStoreRefusesWhileAgentRuns(t *testing.T) {
	dir := newAgentDataDir(t)
	master, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	pseudo, _ := os.ReadFile(filepath.Join(dir, "pseudonym.key"))
	st, err := store.Open(store.Config{Path: filepath.Join(dir, "store.db"), MasterKey: master, PseudonymKey: pseudo})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, cmd := range []string{"verify", "rotate-data-key", "rotate-master-key"} {
		t.Run(cmd, func(t *testing.T) {
			_, _, err := storeRunCmd(t, cmd, "--data-dir", dir)
			if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "stop the agent") {
				t.Fatalf("err = %v, want ErrLocked", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "master.key.new")); err == nil {
		t.Error("a refused rotation staged a key")
	}
}

func TestAgentStoreHelp(t *testing.T) {
	out, _, err := storeRunCmd(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	cmds := []string{"backup", "restore", "verify", "rotate-master-key", "rotate-data-key", "retention"}
	for _, c := range cmds {
		if !strings.Contains(out, "cohort agent store "+c+" --data-dir") {
			t.Errorf("help has no example for %s:\n%s", c, out)
		}
	}
	for _, c := range cmds {
		t.Run(c, func(t *testing.T) {
			_, stderr, err := storeRunCmd(t, c, "--help")
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			for _, want := range []string{"Usage: cohort agent store " + c, "Example:", "-data-dir", "-master-key-env"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("help lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func TestParseAge(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90d", 90 * 24 * time.Hour, true},
		{"10y", 3650 * 24 * time.Hour, true},
		{"2160h", 2160 * time.Hour, true},
		{"0d", 0, false},
		{"-1h", 0, false},
		{"d", 0, false},
		{"5w", 0, false},
		{"", 0, false},
	}
	for _, tc := range tests {
		got, err := parseAge(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseAge(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
