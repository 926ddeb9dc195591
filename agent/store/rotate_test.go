package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func TestRotateMasterKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	oldMaster, pseudo := testKeys(3)
	newMaster := bytes.Repeat([]byte{0x5a}, 32)
	s := fileStore(t, dir, 3)
	fill(t, s, 20)
	want := snapshot(t, s)
	oldWrapped := rawValue(t, s, keyDataKey)
	dataKeys := s.keys.Load()

	if err := s.RotateMasterKey(newMaster[:16]); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("short key: err = %v, want ErrInvalidConfig", err)
	}
	must(t, s.RotateMasterKey(newMaster))
	sameContents(t, s, want)
	if s.keys.Load() != dataKeys {
		t.Error("master key rotation changed the data key")
	}
	must(t, s.Close())

	raw, err := os.ReadFile(path)
	must(t, err)
	if bytes.Contains(raw, []byte(oldWrapped)) {
		t.Error("the data key wrapped under the old master key is still in the file")
	}
	tests := []struct {
		name   string
		master []byte
		want   error
	}{
		{"old master key refused", oldMaster, ErrWrongKey},
		{"new master key opens", newMaster, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(Config{Path: path, MasterKey: tc.master, PseudonymKey: pseudo})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil {
				sameContents(t, s, want)
				verifyOK(t, s)
				must(t, s.Close())
			}
		})
	}
}

func TestRotateDataKey(t *testing.T) {
	dir := t.TempDir()
	s := fileStore(t, dir, 3)
	s.batch = 7
	fill(t, s, 20)
	want := snapshot(t, s)
	key := firstKey(t, s, prefixObs)
	oldVal := rawValue(t, s, key)
	old := s.keys.Load()

	must(t, s.RotateDataKey())
	sameContents(t, s, want)
	rep := verifyOK(t, s)
	if rep.RotationPending || rep.Observations != 60 || rep.Patients != 20 || rep.Conditions != 20 || rep.Encounters != 20 {
		t.Fatalf("Verify after rotation: %+v", rep)
	}
	newVal := rawValue(t, s, key)
	if newVal == oldVal {
		t.Fatal("value not re-sealed")
	}
	if _, err := open(old.cur, []byte(key), []byte(newVal)); err == nil {
		t.Fatal("the old data key opens a re-sealed value")
	}
	if s.keys.Load().next != nil {
		t.Fatal("rotation left a second key")
	}
	// A write after rotation, a second rotation, and a reopen.
	must(t, s.Observation(fhir.Observation{ID: "late", PatientID: "patient-000", Code: "x", Value: 1, Time: t0}))
	want = snapshot(t, s)
	must(t, s.RotateDataKey())
	must(t, s.Close())
	raw, err := os.ReadFile(filepath.Join(dir, "store.db"))
	must(t, err)
	if bytes.Contains(raw, []byte(oldVal)) {
		t.Error("a value sealed under the old data key is still in the file")
	}
	s = fileStore(t, dir, 3)
	sameContents(t, s, want)
	verifyOK(t, s)
}

// TestRotateDataKeyInterrupted stops a rotation after its second batch
// (as an error or a crash would), writes meanwhile, rotates the master key,
// reopens and resumes.
func TestRotateDataKeyInterrupted(t *testing.T) {
	errCrash := errors.New("simulated crash")
	dir := t.TempDir()
	s := fileStore(t, dir, 3)
	s.batch = 10
	fill(t, s, 20)
	s.hooks.afterRotateBatch = func(n int) error {
		if n == 2 {
			return errCrash
		}
		return nil
	}
	if err := s.RotateDataKey(); !errors.Is(err, errCrash) {
		t.Fatalf("err = %v, want the simulated crash", err)
	}
	if rep := verifyOK(t, s); !rep.RotationPending {
		t.Fatal("Verify does not report the unfinished rotation")
	}
	// Writes during the unfinished rotation: new records and a newer
	// version of an old one.
	must(t, s.Observation(fhir.Observation{ID: "obs-0-0", PatientID: "patient-000", Code: "8867-4", Unit: "/min", Value: 99, Time: t0, Version: fhir.Version{ID: "2"}}))
	must(t, s.Observation(fhir.Observation{ID: "new", PatientID: "patient-new", Code: "8867-4", Value: 1, Time: t0}))
	newMaster := bytes.Repeat([]byte{0x77}, 32)
	must(t, s.RotateMasterKey(newMaster))
	want := snapshot(t, s)
	must(t, s.Close())

	_, pseudo := testKeys(3)
	s, err := Open(Config{Path: filepath.Join(dir, "store.db"), MasterKey: newMaster, PseudonymKey: pseudo})
	must(t, err)
	defer s.Close()
	sameContents(t, s, want)
	if s.keys.Load().next == nil {
		t.Fatal("reopened store lost the rotation in progress")
	}
	must(t, s.RotateDataKey())
	sameContents(t, s, want)
	if rep := verifyOK(t, s); rep.RotationPending {
		t.Fatal("rotation still pending after resuming")
	}
}

// TestRotateDataKeyCrash cuts the file at every point of a data-key
// rotation's log, as a crash or a power loss would (buntdb drops a torn
// last command on load), and checks that each cut store reads correctly,
// then finishes the rotation and still reads correctly.
func TestRotateDataKeyCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	s := fileStore(t, dir, 3)
	s.batch = 12
	fill(t, s, 20)
	want := snapshot(t, s)
	fi, err := os.Stat(path)
	must(t, err)
	start := fi.Size()
	s.hooks.noCompact = true // keep the whole log
	must(t, s.RotateDataKey())
	must(t, s.Close())
	log, err := os.ReadFile(path)
	must(t, err)

	cuts := commandEnds(t, log[start:])
	if len(cuts) < 10 {
		t.Fatalf("only %d commands in the rotation log", len(cuts))
	}
	var offsets []int64
	prev := int64(0)
	for i, c := range cuts {
		offsets = append(offsets, start+c)
		if i%5 == 0 { // and a torn command now and then
			offsets = append(offsets, start+(prev+c)/2)
		}
		prev = c
	}
	for _, off := range offsets {
		t.Run(strconv.FormatInt(off-start, 10), func(t *testing.T) {
			cdir := t.TempDir()
			must(t, os.WriteFile(filepath.Join(cdir, "store.db"), log[:off], 0o600))
			c := fileStore(t, cdir, 3)
			c.batch, c.hooks.noCompact = 40, true
			sameContents(t, c, want)
			verifyOK(t, c)
			must(t, c.RotateDataKey())
			sameContents(t, c, want)
			if rep := verifyOK(t, c); rep.RotationPending || c.keys.Load().next != nil {
				t.Fatal("rotation not finished")
			}
		})
	}
}

// commandEnds returns the end offset of each complete RESP command in b.
func commandEnds(t *testing.T, b []byte) []int64 {
	t.Helper()
	var ends []int64
	pos := 0
	line := func() int {
		i := bytes.Index(b[pos:], []byte("\r\n"))
		if i < 0 {
			t.Fatalf("bad log at %d", pos)
		}
		n, err := strconv.Atoi(string(b[pos+1 : pos+i]))
		must(t, err)
		pos += i + 2
		return n
	}
	for pos < len(b) {
		for range line() { // *<parts>
			n := line() // $<len>
			pos += n + 2
		}
		ends = append(ends, int64(pos))
	}
	return ends
}

func TestRotateDataKeyWithConcurrentWrites(t *testing.T) {
	s := fileStore(t, t.TempDir(), 3)
	s.batch = 5
	fill(t, s, 20)
	const writes = 200
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range writes {
			o := fhir.Observation{ID: fmt.Sprintf("c%d", i), PatientID: fmt.Sprintf("patient-%03d", i%25), Code: "x", Value: float64(i), Time: t0.Add(time.Duration(i))}
			if err := s.Observation(o); err != nil {
				errc <- err
				return
			}
		}
	}()
	must(t, s.RotateDataKey())
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	rep := verifyOK(t, s)
	if rep.Observations != 60+writes || rep.RotationPending {
		t.Fatalf("Verify: %+v", rep)
	}
}

func TestRotateClosed(t *testing.T) {
	s := openMem(t)
	must(t, s.Close())
	tests := []struct {
		name string
		op   func() error
	}{
		{"master", func() error { return s.RotateMasterKey(bytes.Repeat([]byte{1}, 32)) }},
		{"data", s.RotateDataKey},
		{"retention", func() error { _, err := s.DeleteOlderThan(t0); return err }},
		{"verify", func() error { _, err := s.Verify(); return err }},
		{"backup", func() error { return s.Backup(&bytes.Buffer{}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, ErrClosed) {
				t.Fatalf("err = %v, want ErrClosed", err)
			}
		})
	}
}
