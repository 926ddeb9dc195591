// Package report holds the report of a testbed run as data and renders it
// for people: report.md (tables, expectations, verdict), report.json (the
// data itself) and PNG charts drawn with gonum.org/v1/plot.
//
// A Report is plain data: the simulator fills it in and calls Write. Every
// rendering function tolerates partial data — zero runs, runs that failed,
// runs without rounds, NaN metrics — and skips a chart (and its link in the
// Markdown) that would have nothing to show.
//
// Zero means "not measured" for the summary metrics of a run (Final,
// Centralized, LocalMeanAUROC) and for Site.FederatedAUROC: the Markdown
// shows "—" and the charts leave them out. JSON cannot hold NaN or
// infinities, so report.json has 0 in their place.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
)

// Names of the files Write creates in its directory.
const (
	MarkdownFile = "report.md"
	JSONFile     = "report.json"
)

// ErrNilReport is returned by Write when it is given no report.
var ErrNilReport = errors.New("report: nil report")

// Report is one testbed run: one or more federations (Runs) run under a
// scenario, and the expectations checked against them.
type Report struct {
	Title        string        `json:"title"`
	Scenario     string        `json:"scenario,omitempty"` // scenario name
	Description  string        `json:"description,omitempty"`
	Command      string        `json:"command,omitempty"` // the command that produced it
	Machine      string        `json:"machine,omitempty"` // e.g. "linux/amd64, 2 CPUs, Go 1.26"
	Runs         []Run         `json:"runs"`
	Expectations []Expectation `json:"expectations,omitempty"`
}

// Run is one federation from start to its last round.
type Run struct {
	Label        string  `json:"label"` // e.g. "fedavg" or "fedadam seed 2"
	Strategy     string  `json:"strategy"`
	Seed         uint64  `json:"seed"`
	Dataset      string  `json:"dataset"`
	Coordinators int     `json:"coordinators"`
	Sites        []Site  `json:"sites"`
	Rounds       []Round `json:"rounds"`
	// Final is the last global model scored on the pooled test set.
	Final Metrics `json:"final"`
	// Centralized is one model trained on the pooled training data.
	Centralized Metrics `json:"centralized"`
	// LocalMeanAUROC is the mean over sites of Site.LocalOnlyAUROC; when
	// it is zero the report computes it from Sites.
	LocalMeanAUROC    float64 `json:"local_mean_auroc"`
	Faults            []Fault `json:"faults,omitempty"`
	WallSeconds       float64 `json:"wall_seconds"`
	BytesSentByAgents int64   `json:"bytes_sent_by_agents"`
	PeakHeapBytes     uint64  `json:"peak_heap_bytes,omitempty"`
	Error             string  `json:"error,omitempty"` // set when the run failed
}

// Metrics scores a model on a test set.
type Metrics struct {
	AUROC    float64 `json:"auroc"`
	Accuracy float64 `json:"accuracy"`
}

// Site is one hospital of a run.
type Site struct {
	Name     string `json:"name"`
	Patients int    `json:"patients"`
	// LocalOnlyAUROC is the site's model trained alone, scored on the
	// pooled test set.
	LocalOnlyAUROC float64 `json:"local_only_auroc"`
	// FederatedAUROC is the final global model scored on this site's own
	// held-out records (0 = not measured).
	FederatedAUROC float64 `json:"federated_auroc,omitempty"`
	Byzantine      bool    `json:"byzantine,omitempty"`
}

// Round is one committed round of a run.
type Round struct {
	Round    uint64  `json:"round"`
	Sites    int     `json:"sites"` // contributors
	AUROC    float64 `json:"auroc"`
	Accuracy float64 `json:"accuracy"`
	Elapsed  float64 `json:"elapsed_seconds"` // since the run started, at commit
	Latency  float64 `json:"latency_seconds"` // open to commit
	BytesUp  int64   `json:"bytes_up"`        // sent by all agents during this round
	// BytesDown is what the coordinators sent to agents during this round.
	BytesDown int64 `json:"bytes_down,omitempty"`
}

// Fault is one fault injected into a run.
type Fault struct {
	At     float64 `json:"at_seconds"`      // since the run started
	Round  uint64  `json:"round,omitempty"` // the round open when it fired
	Action string  `json:"action"`          // e.g. "kill-leader", "partition", "link"
	Detail string  `json:"detail,omitempty"`
}

// Expectation is one check of the scenario against the runs.
type Expectation struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Pass bool   `json:"pass"`
}

// Passed reports whether every expectation passed and no run failed. A
// report with neither expectations nor failed runs passes.
func (r *Report) Passed() bool {
	if r == nil {
		return false
	}
	for _, e := range r.Expectations {
		if !e.Pass {
			return false
		}
	}
	for _, run := range r.Runs {
		if run.Error != "" {
			return false
		}
	}
	return true
}

// Write writes dir/report.md, dir/report.json and the PNG charts, creating
// dir if needed. The Markdown links the charts by relative path. A chart
// that has no data is not drawn, and a file of that name left in dir by an
// earlier Write is removed so the directory matches the Markdown. Write
// goes on past a chart that fails to render and returns the errors joined.
func Write(dir string, r *Report) error {
	if r == nil {
		return ErrNilReport
	}
	if err := os.MkdirAll(dir, 0o755); err != nil { // #nosec G301 -- a simulation report directory, meant to be shared
		return fmt.Errorf("report: %w", err)
	}
	js, err := marshalJSON(r)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, JSONFile), js, 0o644); err != nil { // #nosec G306 -- a simulation report, meant to be shared; no patient data
		return fmt.Errorf("report: %w", err)
	}
	var errs []error
	for _, c := range chartList() {
		path := filepath.Join(dir, c.file)
		if !c.has(r) {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("report: %w", err))
			}
			continue
		}
		png, err := renderChart(c, r)
		if err == nil {
			err = os.WriteFile(path, png, 0o644) // #nosec G306 -- a simulation report chart, meant to be shared
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("report: chart %s: %w", c.file, err))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, MarkdownFile), []byte(Markdown(r)), 0o644); err != nil { // #nosec G306 -- a simulation report, meant to be shared; no patient data
		errs = append(errs, fmt.Errorf("report: %w", err))
	}
	return errors.Join(errs...)
}

// marshalJSON encodes r indented, with every NaN or infinite number
// written as 0 (JSON has no way to say NaN).
func marshalJSON(r *Report) ([]byte, error) {
	clean := finiteCopy(reflect.ValueOf(*r)).Interface()
	b, err := json.MarshalIndent(clean, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: encode json: %w", err)
	}
	return append(b, '\n'), nil
}

// finiteCopy returns a deep copy of v in which every NaN or infinite float
// is zero. It follows structs, slices, arrays, maps and pointers, so fields
// added to the report types later are covered too; unexported fields are
// left zero (encoding/json ignores them anyway).
func finiteCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			return reflect.Zero(v.Type())
		}
		return v
	case reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			if f := out.Field(i); f.CanSet() {
				f.Set(finiteCopy(v.Field(i)))
			}
		}
		return out
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(finiteCopy(v.Index(i)))
		}
		return out
	case reflect.Array:
		out := reflect.New(v.Type()).Elem()
		for i := range v.Len() {
			out.Index(i).Set(finiteCopy(v.Index(i)))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			out.SetMapIndex(iter.Key(), finiteCopy(iter.Value()))
		}
		return out
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type().Elem())
		out.Elem().Set(finiteCopy(v.Elem()))
		return out
	default:
		return v
	}
}
