package sim

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
)

// Datasets the sim can run on.
const (
	DatasetSynthetic = "synthetic"
	DatasetPhysioNet = "physionet"
	DatasetSynthea   = "synthea"
)

// prepared is a testbed's data: one FHIR input directory per site (under
// dir/data/<site>), a held-out test population and the job's spec.
type prepared struct {
	name    string
	jobID   string
	sites   []siteData
	testDir string
	spec    *pb.FeatureSpec
	// canaries are identifiers planted in the sites' patients, by kind
	// (synthetic data only).
	canaries map[string][]string
}

type siteData struct {
	name     string
	patients int
}

func (p *prepared) siteIDs() []string {
	ids := make([]string, len(p.sites))
	for i, s := range p.sites {
		ids[i] = s.name
	}
	return ids
}

// describe lists the sites with their sizes; past eight sites, the first
// six, then how many more and their total.
func (p *prepared) describe() string {
	var parts []string
	total := 0
	for i, s := range p.sites {
		if i < 6 || len(p.sites) <= 8 {
			parts = append(parts, fmt.Sprintf("%s %d", s.name, s.patients))
		} else {
			total += s.patients
		}
	}
	if more := len(p.sites) - len(parts); more > 0 {
		parts = append(parts, fmt.Sprintf("and %d more with %d patients", more, total))
	}
	return strings.Join(parts, ", ")
}

// prepareSynthetic writes one synthetic hospital per site and a test
// population drawn from their mixture.
func prepareSynthetic(dir string, cfg Config) (*prepared, error) {
	truth := synth.DefaultTruth()
	sites := cfg.syntheticSites()
	p := &prepared{name: DatasetSynthetic, jobID: "sepsis-risk", testDir: filepath.Join(dir, "data", "test"),
		spec: synth.DefaultFeatureSpec(), canaries: map[string][]string{}}
	if cfg.Normalization == "federated" {
		p.spec.Normalization = pb.Normalization_NORMALIZATION_FEDERATED
		for _, f := range p.spec.GetFeatures() {
			f.Center, f.Scale, f.Missing = 0, 0, pb.MissingPolicy_MISSING_POLICY_MEAN
		}
	}
	for _, s := range sites {
		if cfg.Deploy != nil && s.TelemetryMinutes == 0 {
			s.TelemetryMinutes = 30 // bedside telemetry to replay to the deployed model
		}
		m, err := synth.WriteSite(filepath.Join(dir, "data", s.Name), s, truth)
		if err != nil {
			return nil, fmt.Errorf("generate site %s: %w", s.Name, err)
		}
		for kind, vs := range map[string][]string{"name": m.Names, "mrn": m.MRNs, "phone": m.Phones,
			"email": m.Emails, "address": m.Addresses, "birth date": m.BirthDates} {
			p.canaries[kind] = append(p.canaries[kind], vs...)
		}
		p.sites = append(p.sites, siteData{name: s.Name, patients: s.Patients})
	}
	testSite := synth.TestSite(sites, cfg.TestPatients, cfg.Seed+1000)
	if _, err := synth.WriteSite(p.testDir, testSite, truth); err != nil {
		return nil, fmt.Errorf("generate test set: %w", err)
	}
	return p, nil
}
