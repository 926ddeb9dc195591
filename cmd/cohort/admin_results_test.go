package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/coordinator"
)

// TestAdminJobsResults prints an analytics job's results as a table, with
// suppressed cells and features marked, and as the API's JSON.
func TestAdminJobsResults(t *testing.T) {
	res := coordinator.AnalyticsResult{Sites: []string{"a", "b"}, Cohort: 40, K: 10, Features: []coordinator.FeatureResult{
		{Name: "age", N: 40, Mean: 3, Std: 1.5, Quantiles: []coordinator.QuantileResult{{Q: 0.5, Value: 3}},
			Histogram: &coordinator.HistogramResult{Edges: []float64{0, 2, 4, 6}, Counts: []uint64{10, 30, 0}, Suppressed: []bool{false, false, true}}},
		{Name: "lactate", Suppressed: true},
	}}
	body, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	c := fakeAPI(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/jobs/an/results" {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	for _, asJSON := range []bool{false, true} {
		var out bytes.Buffer
		a := &adminCLI{stdout: &out, stderr: &out, json: asJSON, now: time.Now}
		if err := a.commands()["jobs results"].run(t.Context(), c, []string{"an"}); err != nil {
			t.Fatal(err)
		}
		if asJSON {
			var got coordinator.AnalyticsResult
			if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.K != 10 || len(got.Features) != 2 {
				t.Fatalf("--json: %v %s", err, out.String())
			}
			continue
		}
		contains(t, "jobs results", out.String(), "2 sites, 40 eligible patients; cells under k=10 suppressed; no noise",
			"FEATURE", "age", "q0.5=3", "lactate", "<10", "[0, 2)", "[4, 6]")
	}
}
