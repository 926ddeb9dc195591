// Command vulndb builds an offline Go vulnerability database, in the v1
// layout that govulncheck reads with -db file:///DIR
// (https://go.dev/security/vuln/database#api), from the OSV reports of the
// golang.org/x/vulndb module (its data/osv/GO-YYYY-NNNN.json files):
//
//	DIR/index/db.json       {"modified": T}: the snapshot's time
//	DIR/index/modules.json  per module, its vulnerabilities' IDs, modified
//	                        times and latest fixed versions
//	DIR/ID/GO-YYYY-NNNN.json  each report
//
// The module's reports carry no dates (their "modified" is the zero time:
// the hosted database takes them from the repository's git history, which a
// module zip doesn't hold), so every zero "modified" becomes the snapshot's
// time, -modified: the time of the vulndb commit the module version names.
// That is what govulncheck prints as the database's last modification.
//
// scripts/vulncheck.sh runs it. Only the standard library: it mirrors
// golang.org/x/vuln@v1.9.0's internal/client (index.go, schema.go) and
// internal/semver (NonSupersededFix, Less).
//
// Usage: go run ./scripts/vulndb -src VULNDB_MODULE_DIR -modified RFC3339 -o DIR
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// entry is the part of an OSV report the index needs.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	} `json:"events"`
}

// moduleMeta and moduleVuln are index/modules.json's records.
type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

func main() {
	src := flag.String("src", "", "the golang.org/x/vulndb module's `directory` (go mod download -json: Dir)")
	modified := flag.String("modified", "", "the snapshot's `time`, RFC 3339 (go mod download -json: the .info file's Time)")
	out := flag.String("o", "", "write the database into this `directory` (made anew)")
	flag.Parse()
	if *src == "" || *modified == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	t, err := time.Parse(time.RFC3339, *modified)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulndb: -modified:", err)
		os.Exit(2)
	}
	n, err := build(filepath.Join(*src, "data", "osv"), t.UTC(), *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
	fmt.Printf("vulndb: %d reports, modified %s, in %s\n", n, t.UTC().Format(time.RFC3339), *out)
}

func build(osvDir string, snapshot time.Time, out string) (int, error) {
	files, err := filepath.Glob(filepath.Join(osvDir, "GO-*.json"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("no OSV reports (GO-*.json) in %s", osvDir)
	}
	if err := os.RemoveAll(out); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(out, "ID"), 0o755); err != nil { // #nosec G301 -- a public database
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(out, "index"), 0o755); err != nil { // #nosec G301 -- a public database
		return 0, err
	}
	modules := map[string]*moduleMeta{}
	dbModified := time.Time{}
	for _, f := range files {
		raw, err := os.ReadFile(f) // #nosec G304 -- a report of the vulndb module
		if err != nil {
			return 0, err
		}
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
		if filepath.Base(f) != e.ID+".json" {
			return 0, fmt.Errorf("%s holds report %q", f, e.ID)
		}
		if e.Modified.IsZero() {
			e.Modified = snapshot
			if raw, err = setModified(raw, snapshot); err != nil {
				return 0, fmt.Errorf("%s: %w", f, err)
			}
		}
		if e.Modified.After(dbModified) {
			dbModified = e.Modified
		}
		for _, a := range e.Affected {
			m := modules[a.Package.Name]
			if m == nil {
				m = &moduleMeta{Path: a.Package.Name, Vulns: []moduleVuln{}}
				modules[a.Package.Name] = m
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: nonSupersededFix(a.Ranges)})
		}
		if err := os.WriteFile(filepath.Join(out, "ID", e.ID+".json"), raw, 0o644); err != nil { // #nosec G306 G703 -- a public database, in the directory given with -o; e.ID was checked to be the file's own name
			return 0, err
		}
	}
	list := make([]*moduleMeta, 0, len(modules))
	for _, m := range modules {
		sort.SliceStable(m.Vulns, func(i, j int) bool { return m.Vulns[i].ID < m.Vulns[j].ID })
		list = append(list, m)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	if err := writeJSON(filepath.Join(out, "index", "modules.json"), list); err != nil {
		return 0, err
	}
	if err := writeJSON(filepath.Join(out, "index", "db.json"), struct {
		Modified time.Time `json:"modified"`
	}{dbModified}); err != nil {
		return 0, err
	}
	return len(files), nil
}

// setModified replaces a report's "modified" time, keeping every other
// field as it is.
func setModified(raw []byte, t time.Time) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	fields["modified"] = b
	return json.Marshal(fields)
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644) // #nosec G306 -- a public database
}

// nonSupersededFix is the latest fixed version of the SEMVER ranges, or ""
// when the vulnerability was introduced again after it (x/vuln's
// internal/semver.NonSupersededFix).
func nonSupersededFix(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && less(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && less(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// less compares OSV versions (semver without the "v") as x/vuln does, with
// golang.org/x/mod/semver's rules: an invalid version is less than any
// valid one.
func less(a, b string) bool {
	return compare(parse(a), parse(b)) < 0
}

type version struct {
	ok                  bool
	major, minor, patch string
	pre                 string
}

// parse reads [v|go]MAJOR[.MINOR[.PATCH]][-PRERELEASE][+BUILD], as
// x/mod/semver does (shorthands v1 and v1.2 are v1.0.0 and v1.2.0).
func parse(s string) version {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "v"), "go")
	var v version
	var ok bool
	if v.major, s, ok = num(s); !ok {
		return version{}
	}
	v.minor, v.patch = "0", "0"
	if strings.HasPrefix(s, ".") {
		if v.minor, s, ok = num(s[1:]); !ok {
			return version{}
		}
		if strings.HasPrefix(s, ".") {
			if v.patch, s, ok = num(s[1:]); !ok {
				return version{}
			}
		} else if s != "" {
			return version{} // a prerelease needs all three numbers
		}
	} else if s != "" {
		return version{}
	}
	if strings.HasPrefix(s, "-") {
		end := strings.IndexByte(s, '+')
		if end < 0 {
			end = len(s)
		}
		v.pre, s = s[:end], s[end:]
		if !validIdents(v.pre[1:], true) {
			return version{}
		}
	}
	if strings.HasPrefix(s, "+") {
		if !validIdents(s[1:], false) {
			return version{}
		}
		s = ""
	}
	if s != "" {
		return version{}
	}
	v.ok = true
	return v
}

// num reads a decimal number without leading zeros.
func num(s string) (n, rest string, ok bool) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	if i == 0 || (i > 1 && s[0] == '0') {
		return "", s, false
	}
	return s[:i], s[i:], true
}

func validIdents(s string, pre bool) bool {
	for _, id := range strings.Split(s, ".") {
		if id == "" || strings.Trim(id, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-") != "" {
			return false
		}
		if pre && len(id) > 1 && id[0] == '0' && isNum(id) {
			return false
		}
	}
	return true
}

func isNum(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

func compare(a, b version) int {
	switch {
	case !a.ok && !b.ok:
		return 0
	case !a.ok:
		return -1
	case !b.ok:
		return 1
	}
	for _, p := range [][2]string{{a.major, b.major}, {a.minor, b.minor}, {a.patch, b.patch}} {
		if c := cmpNum(p[0], p[1]); c != 0 {
			return c
		}
	}
	return cmpPre(a.pre, b.pre)
}

func cmpNum(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// cmpPre orders prereleases: none is greater than any; identifiers compare
// numerically when both are numbers, numbers before words, else by bytes.
func cmpPre(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	as, bs := strings.Split(a[1:], "."), strings.Split(b[1:], ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, y := as[i], bs[i]
		if x == y {
			continue
		}
		xn, yn := isNum(x), isNum(y)
		switch {
		case xn && yn:
			return cmpNum(x, y)
		case xn:
			return -1
		case yn:
			return 1
		}
		return strings.Compare(x, y)
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return 0
}
