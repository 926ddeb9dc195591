package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return b
}

func containsString(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }

func listDir(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	must(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestBackupRestore(t *testing.T) {
	s := fileStore(t, t.TempDir(), 6)
	fill(t, s, 10)
	want := snapshot(t, s)
	var backup bytes.Buffer
	must(t, s.Backup(&backup))
	// The backup is encrypted: no record's plaintext, no raw id.
	for _, plain := range []string{"patient-00", "obs-1-", "8867-4", "44054006", "female"} {
		if containsString(backup.Bytes(), plain) {
			t.Errorf("backup holds %q in the clear", plain)
		}
	}

	m, p := testKeys(6)
	wrongMaster, wrongPseudo := testKeys(9)
	tests := []struct {
		name   string
		in     []byte
		master []byte
		pseudo []byte
		exists bool
		want   error
	}{
		{"restores", backup.Bytes(), m, p, false, nil},
		{"refuses to overwrite", backup.Bytes(), m, p, true, ErrExists},
		{"wrong master key", backup.Bytes(), wrongMaster, p, false, ErrWrongKey},
		{"wrong pseudonym key", backup.Bytes(), m, wrongPseudo, false, ErrPseudonymKeyChanged},
		{"empty input", nil, m, p, false, ErrNoStore},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "store.db")
			if tc.exists {
				must(t, os.WriteFile(path, []byte("precious"), 0o600))
			}
			before := listDir(t, dir)
			rep, err := Restore(bytes.NewReader(tc.in), Config{Path: path, MasterKey: tc.master, PseudonymKey: tc.pseudo})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil {
				if got := listDir(t, dir); !slices.Equal(got, before) {
					t.Fatalf("failed restore left %v, had %v", got, before)
				}
				if tc.exists && string(readFile(t, path)) != "precious" {
					t.Fatal("existing file overwritten")
				}
				return
			}
			if rep.Observations != 30 || rep.Patients != 10 || !rep.OK() {
				t.Fatalf("report %+v", rep)
			}
			r, err := Open(Config{Path: path, MasterKey: tc.master, PseudonymKey: tc.pseudo})
			must(t, err)
			defer r.Close()
			sameContents(t, r, want)
		})
	}
	t.Run("garbage input", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "store.db")
		if _, err := Restore(strings.NewReader("not a store\r\n"), Config{Path: path, MasterKey: m, PseudonymKey: p}); err == nil {
			t.Fatal("garbage restored")
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("garbage left a store behind: %v", err)
		}
	})
}

// flipInValue flips one byte in the middle of the value stored under key
// in a buntdb file.
func flipInValue(t *testing.T, file []byte, key string) []byte {
	t.Helper()
	hdr := "$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n$"
	i := bytes.Index(file, []byte(hdr))
	if i < 0 {
		t.Fatal("key not found in backup")
	}
	i += len(hdr)
	j := bytes.Index(file[i:], []byte("\r\n"))
	n, err := strconv.Atoi(string(file[i : i+j]))
	must(t, err)
	out := slices.Clone(file)
	out[i+j+2+n/2] ^= 0x01
	return out
}

func TestVerifyDetectsFlippedByteInBackup(t *testing.T) {
	s := fileStore(t, t.TempDir(), 6)
	fill(t, s, 5)
	bad := firstKey(t, s, prefixObs)
	var backup bytes.Buffer
	must(t, s.Backup(&backup))
	flipped := flipInValue(t, backup.Bytes(), bad)

	// Opened directly, the damaged backup reads, and Verify names the key.
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "store.db"), flipped, 0o600))
	c := fileStore(t, dir, 6)
	rep, err := c.Verify()
	must(t, err)
	if rep.OK() || rep.Corrupt != 1 || !slices.Equal(rep.CorruptKeys, []string{bad}) || rep.Observations != 14 {
		t.Fatalf("Verify = %+v, want one corrupt observation %s", rep, bad)
	}
	if err := c.ForEachPatient(func(fhir.PatientData) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ForEachPatient err = %v, want ErrCorrupt", err)
	}

	// Restore refuses it.
	m, p := testKeys(6)
	rdir := t.TempDir()
	rep, err = Restore(bytes.NewReader(flipped), Config{Path: filepath.Join(rdir, "store.db"), MasterKey: m, PseudonymKey: p})
	if !errors.Is(err, ErrCorrupt) || rep == nil || rep.Corrupt != 1 {
		t.Fatalf("Restore: report %+v, err %v; want ErrCorrupt", rep, err)
	}
	if names := listDir(t, rdir); len(names) != 0 {
		t.Fatalf("refused restore left %v", names)
	}
}

func TestVerify(t *testing.T) {
	s := openMem(t)
	ingest(t, s)
	rep := verifyOK(t, s)
	want := VerifyReport{Patients: 1, Observations: 4, Conditions: 1, Meta: 2}
	if !equalReport(*rep, want) {
		t.Fatalf("Verify = %+v, want %+v", *rep, want)
	}
	// Records the store never writes are reported.
	must(t, s.db.Update(func(tx *buntdbTx) error {
		for _, k := range []string{"obs:short", "meta:unknown", "other", "pt:" + strings.Repeat("g", 32)} {
			if _, _, err := tx.Set(k, "x", nil); err != nil {
				return err
			}
		}
		return nil
	}))
	rep, err := s.Verify()
	must(t, err)
	if rep.Corrupt != 4 || len(rep.CorruptKeys) != 4 {
		t.Fatalf("Verify = %+v, want 4 corrupt", rep)
	}
}

func equalReport(a, b VerifyReport) bool {
	return a.Patients == b.Patients && a.Observations == b.Observations && a.Conditions == b.Conditions &&
		a.Encounters == b.Encounters && a.Meta == b.Meta && a.Corrupt == b.Corrupt && a.RotationPending == b.RotationPending
}

func TestVerifyManyChunks(t *testing.T) {
	s := openMem(t)
	s.batch = 3 // Verify reads 12 records per transaction
	fill(t, s, 9)
	rep := verifyOK(t, s)
	if rep.Patients != 9 || rep.Observations != 27 || rep.Conditions != 9 || rep.Encounters != 9 || rep.Meta != 2 {
		t.Fatalf("Verify = %+v", rep)
	}
}
