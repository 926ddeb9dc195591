// Package fhirtest holds test helpers for code that handles FHIR data: the
// PHI canaries of a FHIR export, and a fast search for them in raw bytes.
package fhirtest

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// MinCanary is the shortest canary searched for: shorter strings could turn
// up by chance in megabytes of ciphertext.
const MinCanary = 6

// Canaries collects, from every *.ndjson or *.ndjson.gz file in dir, with
// plain encoding/json, the identifying values that must never appear in
// the clear in anything an agent writes or sends: resource ids of every
// type, and the Patients' names, identifier values (MRN, SSN, licence,
// passport), telecom, address lines and birth dates. It maps each value to
// its kind and counts the values too short to search for.
func Canaries(tb testing.TB, dir string) (canaries map[string]string, skipped int) {
	tb.Helper()
	canaries = map[string]string{}
	add := func(kind, v string) {
		if len(v) < MinCanary {
			skipped++
			return
		}
		canaries[v] = kind
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.ndjson*"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no NDJSON files in %s: %v", dir, err)
	}
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			tb.Fatal(err)
		}
		var r io.Reader = f
		if strings.HasSuffix(path, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				tb.Fatal(err)
			}
			r = zr
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var head struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
				tb.Fatalf("%s: %v", filepath.Base(path), err)
			}
			add(head.ResourceType+" id", head.ID)
			if head.ResourceType != "Patient" {
				continue
			}
			var res struct {
				BirthDate  string `json:"birthDate"`
				Identifier []struct {
					Value string `json:"value"`
				} `json:"identifier"`
				Name []struct {
					Family string   `json:"family"`
					Given  []string `json:"given"`
				} `json:"name"`
				Telecom []struct {
					Value string `json:"value"`
				} `json:"telecom"`
				Address []struct {
					Line []string `json:"line"`
				} `json:"address"`
			}
			if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
				tb.Fatalf("%s: %v", filepath.Base(path), err)
			}
			add("birth date", res.BirthDate)
			for _, id := range res.Identifier {
				add("identifier", id.Value)
			}
			for _, n := range res.Name {
				add("family name", n.Family)
				for _, g := range n.Given {
					add("given name", g)
				}
			}
			for _, tc := range res.Telecom {
				add("telecom", tc.Value)
			}
			for _, a := range res.Address {
				for _, l := range a.Line {
					add("address", l)
				}
			}
		}
		if err := sc.Err(); err != nil {
			tb.Fatal(err)
		}
		f.Close()
	}
	return canaries, skipped
}

// Find returns the kinds of the canaries found in raw. It slides one window
// per distinct canary length over raw, which is much faster than a
// bytes.Contains per canary.
func Find(raw []byte, canaries map[string]string) []string {
	byLen := map[int]map[string]string{}
	for v, kind := range canaries {
		if byLen[len(v)] == nil {
			byLen[len(v)] = map[string]string{}
		}
		byLen[len(v)][v] = kind
	}
	var found []string
	for n, set := range byLen {
		for i := 0; i+n <= len(raw); i++ {
			if kind, ok := set[string(raw[i:i+n])]; ok {
				found = append(found, kind)
			}
		}
	}
	return found
}
