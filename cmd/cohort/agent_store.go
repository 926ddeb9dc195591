package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/agent/store"
)

const agentStoreUsage = `cohort agent store: maintenance of a site agent's encrypted store.

Usage:
  cohort agent store <command> --data-dir DIR [--master-key-file F | --master-key-env VAR] [flags]

The store is DATA_DIR/store.db. Stop the agent first: the store is locked
while the agent has it open, and these commands refuse to run then.

Commands:
  backup             Write an encrypted snapshot of the store to a file, then
                     check the copy. It opens only with the master key.
                       cohort agent store backup --data-dir /var/lib/cohort --out /backup/cohort-2026-03-01.db
  restore            Create the store from a backup, after checking every
                     record with the keys. Never overwrites a store.
                       cohort agent store restore --data-dir /var/lib/cohort --in /backup/cohort-2026-03-01.db
  verify             Decrypt every record; report counts and corrupt records.
                       cohort agent store verify --data-dir /var/lib/cohort
  rotate-master-key  Re-wrap the store's data key under a new master key.
                       cohort agent store rotate-master-key --data-dir /var/lib/cohort
  rotate-data-key    Re-encrypt every record under a new data key (resumes an
                     interrupted rotation).
                       cohort agent store rotate-data-key --data-dir /var/lib/cohort
  retention          Delete records dated before a cutoff.
                       cohort agent store retention --data-dir /var/lib/cohort --older-than 10y

Keys: the master key comes from the environment variable named by
--master-key-env when that variable is set (hex or base64 of 32 bytes), else
from --master-key-file (default DATA_DIR/master.key); the pseudonym key from
--pseudonym-key-file (default DATA_DIR/pseudonym.key). These commands never
create a store or a key the store already needs.

Run 'cohort agent store <command> --help' for a command's flags.
`

// storeCmdOpts are the flags every store command takes.
type storeCmdOpts struct {
	dataDir, masterFile, masterEnv, pseudoFile, logLevel string
}

func (o *storeCmdOpts) register(fs *flag.FlagSet) {
	fs.StringVar(&o.dataDir, "data-dir", "", "the agent's data `directory` (holds store.db)")
	fs.StringVar(&o.masterFile, "master-key-file", "", "master key `file` (default DATA_DIR/master.key)")
	fs.StringVar(&o.masterEnv, "master-key-env", "", "environment `variable` holding the master key (hex or base64); wins over the file when set")
	fs.StringVar(&o.pseudoFile, "pseudonym-key-file", "", "pseudonym key `file` (default DATA_DIR/pseudonym.key)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error or off")
}

func (o *storeCmdOpts) storePath() string { return filepath.Join(o.dataDir, "store.db") }

func (o *storeCmdOpts) masterKeyFile() string {
	if o.masterFile != "" {
		return o.masterFile
	}
	return filepath.Join(o.dataDir, "master.key")
}

func (o *storeCmdOpts) pseudonymKeyFile() string {
	if o.pseudoFile != "" {
		return o.pseudoFile
	}
	return filepath.Join(o.dataDir, "pseudonym.key")
}

// masterFromEnv reports whether the master key comes from the environment.
func (o *storeCmdOpts) masterFromEnv() bool {
	if o.masterEnv == "" {
		return false
	}
	_, ok := os.LookupEnv(o.masterEnv)
	return ok
}

// keys reads the master and pseudonym keys, never creating a key file.
func (o *storeCmdOpts) keys(stderr io.Writer) (master, pseudo []byte, err error) {
	if o.masterEnv != "" && !o.masterFromEnv() {
		fmt.Fprintf(stderr, "note: $%s is not set; using the key file %s\n", o.masterEnv, o.masterKeyFile())
	}
	if !o.masterFromEnv() {
		if err := mustExist(o.masterKeyFile(), "master key file"); err != nil {
			return nil, nil, err
		}
	}
	if master, err = store.LoadMasterKey(o.masterKeyFile(), o.masterEnv); err != nil {
		return nil, nil, err
	}
	if err := mustExist(o.pseudonymKeyFile(), "pseudonym key file"); err != nil {
		return nil, nil, err
	}
	if pseudo, err = store.LoadOrCreateKey(o.pseudonymKeyFile(), 32); err != nil {
		return nil, nil, fmt.Errorf("pseudonym key file %s: %w", o.pseudonymKeyFile(), err)
	}
	return master, pseudo, nil
}

// mustExist fails unless the file at path exists.
func mustExist(path, what string) error {
	if _, err := os.Stat(path); err != nil { // #nosec G703 -- the agent's data directory, from the operator's flag
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s %s does not exist (these commands never create keys: restore it from your key backup)", what, path)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// open opens the existing store with the given master key.
func (o *storeCmdOpts) open(master, pseudo []byte, log *slog.Logger) (*store.Store, error) {
	st, err := store.Open(store.Config{Path: o.storePath(), MasterKey: master, PseudonymKey: pseudo, MustExist: true, Logger: log})
	return st, storeOpenErr(o.storePath(), err)
}

// storeOpenErr adds what to do to the errors of opening a store.
func storeOpenErr(path string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrLocked):
		return fmt.Errorf("%w: stop the agent first (e.g. systemctl stop cohort-agent)", err)
	case errors.Is(err, store.ErrNoStore):
		return fmt.Errorf("%s: %w", path, err)
	case errors.Is(err, store.ErrWrongKey):
		return fmt.Errorf("%s: %w", path, err)
	}
	return fmt.Errorf("open store %s: %w", path, err)
}

// runAgentStore runs `cohort agent store <command> [flags]`; args start
// with the command.
func runAgentStore(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, agentStoreUsage)
		return errors.New("agent store: no command given")
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, agentStoreUsage)
		return nil
	}
	cmd, ok := storeCommands()[args[0]]
	if !ok {
		fmt.Fprint(stderr, agentStoreUsage)
		return fmt.Errorf("agent store: unknown command %q", args[0])
	}
	var o storeCmdOpts
	fs := flag.NewFlagSet("cohort agent store "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.register(fs)
	run := cmd.flags(fs)
	fs.Usage = func() {
		synopsis := strings.TrimSpace(fmt.Sprintf("cohort agent store %s --data-dir DIR %s", args[0], cmd.synopsis))
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n\nExample:\n  %s\n\nFlags:\n", synopsis, cmd.about, cmd.example)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("agent store %s: unexpected arguments %q", args[0], fs.Args())
	}
	if o.dataDir == "" {
		fs.Usage()
		return fmt.Errorf("agent store %s: --data-dir is required", args[0])
	}
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	if err := run(&o, log, stdout, stderr); err != nil {
		return fmt.Errorf("agent store %s: %w", args[0], err)
	}
	return nil
}

// storeCommand is one `cohort agent store` command.
type storeCommand struct {
	synopsis, about, example string
	// flags registers the command's own flags and returns its body.
	flags func(fs *flag.FlagSet) func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error
}

func storeCommands() map[string]storeCommand {
	return map[string]storeCommand{
		"backup": {
			synopsis: "--out FILE",
			about: `Writes a consistent snapshot of the store to FILE (created with mode 0600;
never overwritten), then opens the copy and decrypts every record in it.
The backup is as encrypted as the store: it opens only with the master key
in use when it was made, and the pseudonym key. Back the keys up apart from
the store's backups. --out - writes to standard output (not checked).`,
			example: "cohort agent store backup --data-dir /var/lib/cohort --out /backup/cohort-2026-03-01.db",
			flags:   storeBackupCmd,
		},
		"restore": {
			synopsis: "--in FILE",
			about: `Creates DATA_DIR/store.db from a backup. The backup is first copied next to
it, opened with the keys (the master key the backup was made under, and the
site's pseudonym key) and every record decrypted; only then is it put in
place. Refuses when DATA_DIR/store.db exists: move the damaged store aside
first. --in - reads standard input.`,
			example: "cohort agent store restore --data-dir /var/lib/cohort --in /backup/cohort-2026-03-01.db",
			flags:   storeRestoreCmd,
		},
		"verify": {
			synopsis: "",
			about: `Decrypts and decodes every record and prints counts by kind and the keys of
corrupt records (keys hold pseudonyms and HMACs only, no patient ids). Exits
non-zero when a record is corrupt.`,
			example: "cohort agent store verify --data-dir /var/lib/cohort",
			flags:   storeVerifyCmd,
		},
		"rotate-master-key": {
			synopsis: "[--new-master-key-file F | --new-master-key-env VAR]",
			about: `Re-wraps the store's data key under a new master key: one atomic write,
whatever the store's size; then the file is rewritten so the old wrapping
is gone from it. Afterwards the store opens only with the new key.

Without a new key flag (and with the master key in a file), a new random key
is written to KEYFILE.new, the store re-keyed, and KEYFILE.new renamed over
KEYFILE. If that is interrupted, run the command again: it finishes the job.
With --new-master-key-file F (created with a random key when absent) or
--new-master-key-env VAR, the new key is used as given and the old key left
alone: point the agent at the new key before starting it.`,
			example: "cohort agent store rotate-master-key --data-dir /var/lib/cohort",
			flags:   storeRotateMasterCmd,
		},
		"rotate-data-key": {
			synopsis: "",
			about: `Re-encrypts every record under a new random data key, in batches with a
durable cursor, then rewrites the file so no record sealed under the old key
is left in it. If it is interrupted (crash, power loss), the store still
opens and reads normally; run the command again to finish.`,
			example: "cohort agent store rotate-data-key --data-dir /var/lib/cohort",
			flags:   storeRotateDataCmd,
		},
		"retention": {
			synopsis: "--older-than AGE | --before DATE",
			about: `Deletes observations (by time), conditions (by onset) and encounters (by end,
else start) dated before the cutoff, and patients left with no records; then
rewrites the file so the deleted values are gone from it. Undated records are
kept. AGE is a number of days (90d), years of 365 days (10y) or a Go
duration (2160h); DATE is YYYY-MM-DD or RFC 3339, in UTC.`,
			example: "cohort agent store retention --data-dir /var/lib/cohort --older-than 10y",
			flags:   storeRetentionCmd,
		},
	}
}

type storeRun = func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error

func storeBackupCmd(fs *flag.FlagSet) storeRun {
	out := fs.String("out", "", "backup `file` to create, or - for standard output")
	return func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error {
		if *out == "" {
			return errors.New("--out is required")
		}
		master, pseudo, err := o.keys(stderr)
		if err != nil {
			return err
		}
		st, err := o.open(master, pseudo, log)
		if err != nil {
			return err
		}
		defer st.Close()
		if *out == "-" {
			return st.Backup(stdout)
		}
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // #nosec G703 -- the export file the operator named (--out), created new, 0600
		if err != nil {
			return fmt.Errorf("backup file: %w", err)
		}
		err = st.Backup(f)
		if err == nil {
			err = f.Sync()
		}
		if err = errors.Join(err, f.Close()); err != nil {
			os.Remove(*out) // #nosec G703 G104 -- removes the operator's half-written export file on failure
			return err
		}
		if err := st.Close(); err != nil {
			return err
		}
		// Check the copy: open it (a lock file appears next to it meanwhile)
		// and decrypt every record.
		b, err := store.Open(store.Config{Path: *out, MasterKey: master, PseudonymKey: pseudo, MustExist: true, Logger: log})
		if err != nil {
			return fmt.Errorf("backup written to %s, but it does not open: %w", *out, err)
		}
		rep, err := b.Verify()
		err = errors.Join(err, b.Close())
		if err != nil {
			return fmt.Errorf("backup written to %s, but checking it failed: %w", *out, err)
		}
		fi, err := os.Stat(*out) // #nosec G703 -- the export file the operator named (--out)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backup written to %s (%d bytes): %s\n", *out, fi.Size(), reportCounts(rep))
		fmt.Fprintln(stdout, "it opens only with the current master key (and the pseudonym key): keep those backed up apart from it")
		if !rep.OK() {
			return fmt.Errorf("%w: %d records in the backup do not decrypt (they are damaged in the store too: run verify)", store.ErrCorrupt, rep.Corrupt)
		}
		return nil
	}
}

func storeRestoreCmd(fs *flag.FlagSet) storeRun {
	in := fs.String("in", "", "backup `file` to restore, or - for standard input")
	return func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error {
		if *in == "" {
			return errors.New("--in is required")
		}
		master, pseudo, err := o.keys(stderr)
		if err != nil {
			return err
		}
		var r io.Reader = os.Stdin
		if *in != "-" {
			f, err := os.Open(*in) // #nosec G703 -- the import file the operator named (--in)
			if err != nil {
				return fmt.Errorf("backup file: %w", err)
			}
			defer f.Close()
			r = f
		}
		if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		rep, err := store.Restore(r, store.Config{Path: o.storePath(), MasterKey: master, PseudonymKey: pseudo, Logger: log})
		if err != nil {
			if rep != nil {
				printCorrupt(stdout, rep)
			}
			if errors.Is(err, store.ErrExists) {
				return fmt.Errorf("%s: %w (move it aside first)", o.storePath(), err)
			}
			return storeOpenErr(o.storePath(), err)
		}
		fmt.Fprintf(stdout, "restored %s from %s: %s\n", o.storePath(), *in, reportCounts(rep))
		if rep.RotationPending {
			fmt.Fprintln(stdout, "the backup was taken during a data key rotation: run rotate-data-key to finish it")
		}
		return nil
	}
}

func storeVerifyCmd(*flag.FlagSet) storeRun {
	return func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error {
		master, pseudo, err := o.keys(stderr)
		if err != nil {
			return err
		}
		st, err := o.open(master, pseudo, log)
		if err != nil {
			return err
		}
		defer st.Close()
		rep, err := st.Verify()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "store %s: %s\n", o.storePath(), reportCounts(rep))
		if rep.RotationPending {
			fmt.Fprintln(stdout, "a data key rotation is unfinished: run rotate-data-key to finish it")
		}
		if !rep.OK() {
			printCorrupt(stdout, rep)
			return fmt.Errorf("%w: %d records do not decrypt or decode (restore a backup, or re-ingest)", store.ErrCorrupt, rep.Corrupt)
		}
		fmt.Fprintln(stdout, "every record decrypts and decodes")
		return st.Close()
	}
}

func storeRotateMasterCmd(fs *flag.FlagSet) storeRun {
	newFile := fs.String("new-master-key-file", "", "new master key `file` (created with a random key when absent)")
	newEnv := fs.String("new-master-key-env", "", "environment `variable` holding the new master key (hex or base64)")
	return func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error {
		if *newFile != "" && *newEnv != "" {
			return errors.New("give --new-master-key-file or --new-master-key-env, not both")
		}
		if *newFile == "" && *newEnv == "" && o.masterFromEnv() {
			return fmt.Errorf("the master key comes from $%s: give the new key with --new-master-key-env or --new-master-key-file", o.masterEnv)
		}
		master, pseudo, err := o.keys(stderr)
		if err != nil {
			return err
		}
		// The new key. Without a flag: KEYFILE.new, created, or reused
		// after an interrupted run.
		replace := *newFile == "" && *newEnv == ""
		keyFile := o.masterKeyFile()
		staged := keyFile + ".new"
		loadNew := func(create bool) ([]byte, error) {
			switch {
			case *newEnv != "":
				if _, ok := os.LookupEnv(*newEnv); !ok {
					return nil, fmt.Errorf("$%s is not set", *newEnv)
				}
				return store.LoadMasterKey("", *newEnv)
			case *newFile != "":
				if !create {
					if err := mustExist(*newFile, "new master key file"); err != nil {
						return nil, err
					}
				}
				return store.LoadMasterKey(*newFile, "")
			}
			if !create {
				if _, err := os.Stat(staged); err != nil {
					return nil, err
				}
			}
			return store.LoadMasterKey(staged, "")
		}

		st, err := o.open(master, pseudo, log)
		if errors.Is(err, store.ErrWrongKey) {
			// An earlier run may have re-keyed the store and stopped before
			// putting the new key in place.
			if newKey, kerr := loadNew(false); kerr == nil {
				if st2, err2 := o.open(newKey, pseudo, log); err2 == nil {
					if err := st2.Close(); err != nil {
						return err
					}
					if !replace {
						fmt.Fprintln(stdout, "the store already opens with the new key only: nothing to do")
						return nil
					}
					if err := installKeyFile(staged, keyFile); err != nil {
						return err
					}
					fmt.Fprintf(stdout, "an interrupted rotation is finished: %s now holds the master key the store opens with\n", keyFile)
					return nil
				}
			}
		}
		if err != nil {
			return err
		}
		defer st.Close()
		newKey, err := loadNew(true)
		if err != nil {
			return err
		}
		defer st.Close()
		rerr := st.RotateMasterKey(newKey)
		if rerr != nil && !errors.Is(rerr, store.ErrCompaction) {
			return rerr // not rotated: the old key still opens the store
		}
		if err := st.Close(); err != nil {
			rerr = errors.Join(rerr, err)
		}
		switch {
		case replace:
			if err := installKeyFile(staged, keyFile); err != nil {
				return errors.Join(rerr, err)
			}
			fmt.Fprintf(stdout, "master key rotated: %s holds the new key; the old one is gone from the store file\n", keyFile)
			fmt.Fprintln(stdout, "back up the new key file now; backups made before this rotation still need the old key")
		case *newFile != "":
			fmt.Fprintf(stdout, "master key rotated: the store now opens only with the key in %s\n", *newFile)
			fmt.Fprintln(stdout, "point the agent at it (master_key_file) before starting it, back it up, then destroy the old key")
		default:
			fmt.Fprintf(stdout, "master key rotated: the store now opens only with the key in $%s\n", *newEnv)
			fmt.Fprintln(stdout, "give the agent that key before starting it, then destroy the old key")
		}
		if rerr != nil {
			return fmt.Errorf("the rotation is done, but: %w", rerr)
		}
		return nil
	}
}

// installKeyFile renames the staged key file over the key file, durably.
func installKeyFile(staged, keyFile string) error {
	if err := os.Rename(staged, keyFile); err != nil {
		return fmt.Errorf("install new master key: %w (the store opens only with %s now)", err, staged)
	}
	if d, err := os.Open(filepath.Dir(keyFile)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func storeRotateDataCmd(*flag.FlagSet) storeRun {
	return func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error {
		master, pseudo, err := o.keys(stderr)
		if err != nil {
			return err
		}
		st, err := o.open(master, pseudo, log)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.RotateDataKey(); err != nil {
			if !errors.Is(err, store.ErrCompaction) {
				return fmt.Errorf("%w (the store still reads normally; run the command again to finish)", err)
			}
			return err
		}
		rep, err := st.Verify()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "data key rotated: %s\n", reportCounts(rep))
		if !rep.OK() {
			printCorrupt(stdout, rep)
			return fmt.Errorf("%w: %d records were corrupt before the rotation and are left as they were", store.ErrCorrupt, rep.Corrupt)
		}
		return st.Close()
	}
}

func storeRetentionCmd(fs *flag.FlagSet) storeRun {
	olderThan := fs.String("older-than", "", "delete records older than `AGE` (90d, 10y, 2160h)")
	before := fs.String("before", "", "delete records dated before `DATE` (YYYY-MM-DD or RFC 3339)")
	return func(o *storeCmdOpts, log *slog.Logger, stdout, stderr io.Writer) error {
		cutoff, err := retentionCutoff(*olderThan, *before, time.Now())
		if err != nil {
			return err
		}
		master, pseudo, err := o.keys(stderr)
		if err != nil {
			return err
		}
		st, err := o.open(master, pseudo, log)
		if err != nil {
			return err
		}
		defer st.Close()
		n, err := st.DeleteOlderThan(cutoff)
		fmt.Fprintf(stdout, "deleted %d records dated before %s\n", n, cutoff.Format(time.RFC3339))
		if err != nil {
			return err
		}
		return st.Close()
	}
}

// retentionCutoff computes the cutoff from --older-than or --before.
func retentionCutoff(olderThan, before string, now time.Time) (time.Time, error) {
	switch {
	case (olderThan == "") == (before == ""):
		return time.Time{}, errors.New("give one of --older-than and --before")
	case before != "":
		if t, err := time.Parse(time.DateOnly, before); err == nil {
			return t.UTC(), nil
		}
		t, err := time.Parse(time.RFC3339, before)
		if err != nil {
			return time.Time{}, fmt.Errorf("--before %q: want YYYY-MM-DD or RFC 3339", before)
		}
		return t.UTC(), nil
	}
	age, err := parseAge(olderThan)
	if err != nil {
		return time.Time{}, err
	}
	return now.UTC().Add(-age), nil
}

// parseAge parses 90d (days), 10y (years of 365 days) or a Go duration.
func parseAge(s string) (time.Duration, error) {
	bad := fmt.Errorf("--older-than %q: want a positive age such as 90d, 10y or 2160h", s)
	var d time.Duration
	if unit := strings.TrimLeft(s, "0123456789"); unit == "d" || unit == "y" {
		n, err := strconv.Atoi(strings.TrimSuffix(s, unit))
		if err != nil || n <= 0 || n > 1000*365 {
			return 0, bad
		}
		d = time.Duration(n) * 24 * time.Hour
		if unit == "y" {
			d *= 365
		}
		return d, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, bad
	}
	return d, nil
}

func reportCounts(r *store.VerifyReport) string {
	return fmt.Sprintf("%d patients, %d observations, %d conditions, %d encounters, %d corrupt",
		r.Patients, r.Observations, r.Conditions, r.Encounters, r.Corrupt)
}

func printCorrupt(w io.Writer, r *store.VerifyReport) {
	if r.Corrupt == 0 {
		return
	}
	fmt.Fprintf(w, "corrupt records (%d):\n", r.Corrupt)
	for _, k := range r.CorruptKeys {
		fmt.Fprintf(w, "  %s\n", k)
	}
	if n := r.Corrupt - len(r.CorruptKeys); n > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", n)
	}
}
