package sim

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cohort-fl/cohort/agent/physionet"
	"github.com/cohort-fl/cohort/protocol/featurespec"
)

// physionetSpec is the mortality job's feature spec.
//
//go:embed specs/physionet-mortality.yaml
var physionetSpec []byte

// icuSites names the four sites PhysioNet's ICU types become.
var icuSites = []struct {
	icuType int
	name    string
}{{1, "coronary-care"}, {2, "cardiac-surgery"}, {3, "medical"}, {4, "surgical"}}

// testFraction of the stays (by a hash of RecordID, seeded) is held out,
// pooled over all ICU types, as the test population.
const testFraction = 0.2

func heldOut(seed uint64, recordID int) bool {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	binary.BigEndian.PutUint64(b[8:], uint64(recordID))
	h := sha256.Sum256(b[:])
	return float64(binary.BigEndian.Uint64(h[:8])>>11)/(1<<53) < testFraction
}

// preparePhysioNet writes the PhysioNet 2012 stays as FHIR R4 NDJSON: one
// site per ICU type (its stays not held out) and the held-out test
// population. Each agent then ingests its site's files through the same
// reader a hospital's export goes through.
func preparePhysioNet(ctx context.Context, dir string, cfg Config, out io.Writer) (*prepared, error) {
	src := cfg.PhysioNetDir
	for _, f := range []string{physionet.SetAArchive, physionet.SetAOutcomes} {
		if _, err := os.Stat(filepath.Join(src, f)); err != nil {
			return nil, fmt.Errorf("sim: physionet dataset: %w (set --physionet-dir to the folder with %s and %s)", err, physionet.SetAArchive, physionet.SetAOutcomes)
		}
	}
	spec, err := featurespec.Parse(physionetSpec)
	if err != nil {
		return nil, fmt.Errorf("sim: physionet spec: %w", err)
	}
	p := &prepared{name: DatasetPhysioNet, jobID: "icu-mortality", spec: spec, testDir: filepath.Join(dir, "data", "test")}
	fmt.Fprintf(out, "preparing PhysioNet 2012 set A: 4 sites by ICU type, %.0f%% of stays held out for testing\n", 100*testFraction)
	for _, s := range icuSites {
		st, err := physionet.WriteNDJSON(ctx, src, filepath.Join(dir, "data", s.name), func(x *physionet.Stay) bool {
			return x.ICUType == s.icuType && !heldOut(cfg.Seed, x.RecordID)
		}, nil)
		if err != nil {
			return nil, fmt.Errorf("sim: physionet site %s: %w", s.name, err)
		}
		p.sites = append(p.sites, siteData{name: s.name, patients: st.Stays})
	}
	if _, err := physionet.WriteNDJSON(ctx, src, p.testDir, func(x *physionet.Stay) bool { return heldOut(cfg.Seed, x.RecordID) }, nil); err != nil {
		return nil, fmt.Errorf("sim: physionet test set: %w", err)
	}
	return p, nil
}
