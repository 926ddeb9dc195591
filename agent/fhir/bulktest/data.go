package bulktest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// maxLine bounds one NDJSON line read from the data directory.
const maxLine = 64 << 20

// resource is one stored resource.
type resource struct {
	raw     []byte    // the resource JSON as served
	patient string    // id of the Patient whose compartment holds it; "" if none
	updated time.Time // meta.lastUpdated, else the server's load time
}

// dataset is every resource the server holds, by type.
type dataset struct {
	byType   map[string][]*resource
	patients map[string]bool
}

// rawHead is what the server reads of each resource.
type rawHead struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         *struct {
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
	Subject     *rawRef `json:"subject"`
	Patient     *rawRef `json:"patient"`
	Beneficiary *rawRef `json:"beneficiary"`
}

type rawRef struct {
	Reference string `json:"reference"`
}

// loadDir reads every *.ndjson and *.ndjson.gz file in dir. Each
// resource's type comes from its resourceType, not the file name.
// Resources without meta.lastUpdated are stamped with loadedAt.
func loadDir(dir string, loadedAt time.Time) (*dataset, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read data dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		n := strings.ToLower(e.Name())
		if !e.IsDir() && (strings.HasSuffix(n, ".ndjson") || strings.HasSuffix(n, ".ndjson.gz")) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	ds := &dataset{byType: map[string][]*resource{}, patients: map[string]bool{}}
	refs := map[*resource]string{}
	for i, name := range names {
		if err := ds.loadFile(filepath.Join(dir, name), loadedAt, refs); err != nil {
			return nil, fmt.Errorf("data file %d of %d: %w", i+1, len(names), err)
		}
	}
	// A reference counts as a patient compartment link only when it names
	// a loaded Patient (Synthea references patients as urn:uuid:<id>).
	for r, id := range refs {
		if ds.patients[id] {
			r.patient = id
		}
	}
	return ds, nil
}

func (ds *dataset) loadFile(path string, loadedAt time.Time, refs map[*resource]string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(strings.ToLower(path), ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), maxLine)
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		res, typ, id, ref, err := newResource(append([]byte(nil), b...), loadedAt)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if typ == "Patient" {
			ds.patients[id] = true
			res.patient = id
		} else if ref != "" {
			refs[res] = ref
		}
		ds.byType[typ] = append(ds.byType[typ], res)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// newResource parses the head of raw and returns the resource, its type
// and id, and the id its subject/patient/beneficiary reference points at.
func newResource(raw []byte, loadedAt time.Time) (res *resource, typ, id, ref string, err error) {
	var head rawHead
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, "", "", "", errors.New("not a json resource")
	}
	if head.ResourceType == "" || head.ID == "" {
		return nil, "", "", "", errors.New("resource without resourceType or id")
	}
	res = &resource{raw: raw, updated: loadedAt}
	if head.Meta != nil && head.Meta.LastUpdated != "" {
		t, err := time.Parse(time.RFC3339Nano, head.Meta.LastUpdated)
		if err != nil {
			return nil, "", "", "", errors.New("meta.lastUpdated is not an instant")
		}
		res.updated = t
	}
	for _, r := range []*rawRef{head.Subject, head.Patient, head.Beneficiary} {
		if r != nil && r.Reference != "" {
			ref = patientRef(r.Reference)
			break
		}
	}
	return res, head.ResourceType, head.ID, ref, nil
}

// patientRef returns the id a reference points at when it can name a
// Patient: "Patient/<id>", "<base>/Patient/<id>" or "urn:uuid:<id>".
func patientRef(ref string) string {
	if id, ok := strings.CutPrefix(ref, "urn:uuid:"); ok {
		return id
	}
	if i := strings.LastIndex(ref, "Patient/"); i >= 0 && (i == 0 || ref[i-1] == '/') {
		return strings.TrimSuffix(ref[i+len("Patient/"):], "/")
	}
	return ""
}

// stamp returns raw with meta.lastUpdated set to t.
func stamp(raw []byte, t time.Time) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, errors.New("not a json object")
	}
	meta := map[string]json.RawMessage{}
	if m, ok := obj["meta"]; ok {
		if err := json.Unmarshal(m, &meta); err != nil {
			return nil, errors.New("meta is not an object")
		}
	}
	ts, err := json.Marshal(t.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return nil, err
	}
	meta["lastUpdated"] = ts
	if obj["meta"], err = json.Marshal(meta); err != nil {
		return nil, err
	}
	return json.Marshal(obj)
}
