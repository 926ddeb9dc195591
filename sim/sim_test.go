package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/sim/synth"
)

// lockedBuffer collects bytes from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// canaries returns every identifying value the synthetic hospitals hold:
// names, MRNs, phones, emails, addresses, birth dates and Patient resource
// ids, by site.
func canaries(t *testing.T, dataDir string, cfg Config) map[string][]string {
	t.Helper()
	out := make(map[string][]string)
	for _, s := range synth.DefaultSites(cfg.Sites, cfg.Seed) {
		m, err := synth.WriteSite(filepath.Join(t.TempDir(), s.Name), s, synth.DefaultTruth())
		if err != nil {
			t.Fatal(err)
		}
		var c []string
		for _, list := range [][]string{m.MRNs, m.Phones, m.Emails, m.Addresses, m.BirthDates, m.Names} {
			c = append(c, list...)
		}
		// FHIR keeps given and family names apart; the family name alone
		// is unique per patient.
		for _, n := range m.Names {
			c = append(c, n[strings.LastIndexByte(n, ' ')+1:])
		}
		// Patient resource ids, as written to the site's input files.
		f, err := os.Open(filepath.Join(dataDir, s.Name, "Patient.ndjson"))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var p struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &p); err != nil || p.ID == "" {
				t.Fatalf("Patient.ndjson line without id: %v", err)
			}
			c = append(c, p.ID)
		}
		f.Close()
		if len(c) < 4*s.Patients {
			t.Fatalf("site %s: only %d canaries for %d patients", s.Name, len(c), s.Patients)
		}
		out[s.Name] = c
	}
	return out
}

// TestSimDefaultRunKeepsPHIHome runs the default federation (3 coordinators,
// 4 sites, 10 rounds) and checks the done criteria: the federated
// model is within 0.02 AUROC of centralized training and beats the mean
// local-only model; and no patient identifier appears in any byte an agent
// sent, in any file an agent wrote, or in any log line of any component.
func TestSimDefaultRunKeepsPHIHome(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole federation")
	}
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sent := make(map[string]*lockedBuffer)
	for _, s := range synth.DefaultSites(cfg.Sites, cfg.Seed) {
		sent[s.Name] = new(lockedBuffer)
	}
	cfg.EgressTap = func(site string, b []byte) { sent[site].Write(b) }
	var out lockedBuffer
	cfg.Out = &out

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("sim: %v\n%s", err, out.Bytes())
	}
	t.Logf("\n%s", out.Bytes())

	if rep.RoundsCompleted != cfg.Rounds || len(rep.Rounds) != cfg.Rounds {
		t.Fatalf("rounds completed = %d (%d lines), want %d", rep.RoundsCompleted, len(rep.Rounds), cfg.Rounds)
	}
	for _, r := range rep.Rounds {
		if r.Sites != cfg.Sites {
			t.Errorf("round %d aggregated %d sites, want %d", r.Round, r.Sites, cfg.Sites)
		}
	}
	if d := rep.Federated.AUROC - rep.Centralized.AUROC; d < -0.02 || d > 0.02 {
		t.Errorf("federated AUROC %.4f is not within 0.02 of centralized %.4f", rep.Federated.AUROC, rep.Centralized.AUROC)
	}
	if rep.Federated.AUROC <= rep.LocalOnly.MeanAUROC {
		t.Errorf("federated AUROC %.4f does not beat the mean local-only AUROC %.4f", rep.Federated.AUROC, rep.LocalOnly.MeanAUROC)
	}
	if len(rep.LocalOnly.Sites) != cfg.Sites || rep.BytesSentByAgents == 0 {
		t.Errorf("report is incomplete: %+v", rep)
	}

	phi := canaries(t, filepath.Join(cfg.Dir, "data"), cfg)
	var all []string
	for _, c := range phi {
		all = append(all, c...)
	}
	for site, buf := range sent {
		b := buf.Bytes()
		if len(b) == 0 {
			t.Errorf("site %s sent nothing", site)
		}
		if c := findAny(b, all); c != "" {
			t.Errorf("site %s sent a patient identifier %q to the coordinator", site, c)
		}
	}
	if c := findAny(logs.Bytes(), all); c != "" {
		t.Errorf("a log line holds a patient identifier %q", c)
	}
	// Every file every agent wrote: the encrypted store, keys, outbox and
	// egress log.
	files := 0
	err = filepath.WalkDir(filepath.Join(cfg.Dir, "agents"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if c := findAny(b, all); c != "" {
			t.Errorf("%s holds a patient identifier %q", path, c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 4*cfg.Sites {
		t.Fatalf("scanned only %d agent files", files)
	}
	// The canaries are real: the hospitals' own input files hold them (an
	// MRN and a family name of every site).
	for site, c := range phi {
		b, err := os.ReadFile(filepath.Join(cfg.Dir, "data", site, "Patient.ndjson"))
		if err != nil {
			t.Fatal(err)
		}
		for _, probe := range []string{c[0], c[len(c)-1]} {
			if findAny(b, []string{probe}) == "" {
				t.Fatalf("canary %q of site %s is not in its input data", probe, site)
			}
		}
	}
}

// findAny returns a needle found in hay, or "". It scans hay once, looking
// each 8-byte window up in a table of needle prefixes, so thousands of
// needles over megabytes of logs stay fast.
func findAny(hay []byte, needles []string) string {
	const k = 8
	byPrefix := make(map[string][]string)
	for _, n := range needles {
		if len(n) < k {
			if n != "" && bytes.Contains(hay, []byte(n)) {
				return n
			}
			continue
		}
		byPrefix[n[:k]] = append(byPrefix[n[:k]], n)
	}
	for i := 0; i+k <= len(hay); i++ {
		for _, n := range byPrefix[string(hay[i:i+k])] {
			if bytes.HasPrefix(hay[i:], []byte(n)) {
				return n
			}
		}
	}
	return ""
}
