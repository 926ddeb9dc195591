package features

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/protocol/pb"
)

const syntheaDir = "../../../shared/data/synthea-r4"

func TestSyntheaBuild(t *testing.T) {
	if _, err := os.Stat(syntheaDir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs the real data at %s (see shared/data/README.md): %v", syntheaDir, err)
		}
		t.Skipf("real data not found at %s (see shared/data/README.md): %v", syntheaDir, err)
	}
	var c fhir.Collector
	if _, err := fhir.ReadDir(context.Background(), filepath.Join(syntheaDir, "ndjson"), &c); err != nil {
		t.Fatal(err)
	}
	patients := c.Patients()
	const hypertension = "59621000" // SNOMED "Hypertension" as Synthea codes it
	wantRows, wantPos := 0, 0
	for _, p := range patients {
		if len(p.Observations) == 0 {
			continue
		}
		wantRows++
		for _, cd := range p.Conditions {
			if cd.Code == hypertension {
				wantPos++
				break
			}
		}
	}
	spec := specOf(&pb.Label{ConditionSystem: fhir.SystemSNOMED, ConditionCode: hypertension},
		feat("age", pb.FeatureKind_FEATURE_KIND_AGE, "", 50, 20, 50),
		feat("female", pb.FeatureKind_FEATURE_KIND_SEX_FEMALE, "", 0.5, 0.5, 0),
		feat("sbp", pb.FeatureKind_FEATURE_KIND_OBS_MEAN, "8480-6", 120, 20, 120),
		feat("dbp", pb.FeatureKind_FEATURE_KIND_OBS_LAST, "8462-4", 80, 10, 80),
		feat("bmi", pb.FeatureKind_FEATURE_KIND_OBS_LAST, "39156-5", 27, 5, 27),
	)
	ds, err := Build(spec, patients)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.Validate(); err != nil {
		t.Fatal(err)
	}
	if ds.Rows != wantRows || ds.Rows == 0 || wantPos == 0 || ds.Positives() != wantPos {
		t.Errorf("rows %d positives %d, want %d and %d", ds.Rows, ds.Positives(), wantRows, wantPos)
	}
	t.Logf("%d rows, %d with hypertension", ds.Rows, ds.Positives())
	train, val := Split(ds, 0.25, "synthea")
	if train.Rows == 0 || val.Rows == 0 || train.Rows+val.Rows != ds.Rows {
		t.Errorf("split %d/%d of %d", train.Rows, val.Rows, ds.Rows)
	}
}
