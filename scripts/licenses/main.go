// Command licenses writes docs/licenses.md, the licence of every module
// compiled into the cohort binary, and fails when a licence is unknown or
// denied. scripts/licenses.sh runs it; CI runs it with -check, which fails
// when the committed report is out of date.
//
// The modules are those of `go list -deps ./cmd/cohort` for each release
// platform (linux/amd64 and linux/arm64, CGO_ENABLED=0), with the Go
// standard library. Each module's licence files (LICENSE*, LICENCE*,
// COPYING*, UNLICENSE* at the module's root) are read from the module
// cache (`go mod download -json` when a module is not there yet) and
// classified by the phrases that identify each licence's text.
//
// Copyleft licences (GPL, LGPL, AGPL) are denied: Cohort ships one static
// binary, so their terms would reach all of it. A module may be allowed in
// exceptions below, with the reason.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// platforms are the release binaries' (scripts/build.sh).
var platforms = []string{"linux/amd64", "linux/arm64"}

// denied licences: copyleft whose terms would reach the whole static
// binary.
var denied = []string{"GPL-2.0", "GPL-3.0", "GPL", "LGPL", "AGPL"}

// exception states the licence Cohort takes a module under when its
// licence files alone don't say it: a choice between licences (one of them
// perhaps denied), or a licence the rules don't know. The reason is printed
// in the report.
type exception struct {
	// Found is what the rules find in the module's licence files (SPDX
	// identifiers joined by " AND "); when they find anything else, the
	// files changed and the exception must be reviewed.
	Found string
	// License is the licence Cohort takes the module under.
	License string
	// Why it is acceptable; it is printed in the report.
	Why string
	// Notice, if any, is a credit the licence requires in the
	// documentation; the report carries it.
	Notice string
}

var exceptions = map[string]exception{
	"github.com/eclipse/paho.mqtt.golang": {
		Found:   "EPL-2.0",
		License: "EDL-1.0",
		Why: "dual-licensed under the Eclipse Public License 2.0 and the Eclipse Distribution License 1.0 " +
			"(LICENSE, NOTICE.md, edl-v10); Cohort takes the EDL-1.0, which is the BSD-3-Clause licence " +
			"(EPL-2.0, a file-level copyleft like MPL-2.0, would be acceptable too: Cohort doesn't modify Paho's files)",
	},
	"github.com/golang/freetype": {
		Found:   "GPL",
		License: "FTL",
		Why: "dual-licensed: its LICENSE offers the FreeType License or the GPL (2 or later) at the " +
			"user's choice; Cohort takes the FreeType License (licenses/ftl.txt in the module), a " +
			"BSD-style licence that asks for a credit in the documentation (below)",
		Notice: "Portions of this software are copyright © The FreeType Project (www.freetype.org). All rights reserved.",
	},
}

// module is one row of the report.
type module struct {
	Path, Version, Dir string
	Files              []string // licence files, relative to Dir
	Licenses           []string // SPDX identifiers found, sorted
	Problem            string   // why it fails, if it does
	Exception          *exception
}

func main() {
	out := flag.String("o", "docs/licenses.md", "write the report to this `file`")
	check := flag.Bool("check", false, "don't write: fail if the report differs from what it would be")
	flag.Parse()
	if err := run(*out, *check); err != nil {
		fmt.Fprintln(os.Stderr, "licenses:", err)
		os.Exit(1)
	}
}

func run(out string, check bool) error {
	mods, err := buildList()
	if err != nil {
		return err
	}
	var problems []string
	for _, m := range mods {
		classify(m)
		if m.Problem != "" {
			problems = append(problems, fmt.Sprintf("%s %s: %s", m.Path, m.Version, m.Problem))
		}
	}
	report := render(mods)
	if check {
		old, err := os.ReadFile(out) // #nosec G304 -- the report's path, from the command line
		if err != nil {
			return err
		}
		if !bytes.Equal(old, report) {
			return fmt.Errorf("%s is out of date (the build list or a licence changed): run scripts/licenses.sh and commit it", out)
		}
	} else if err := os.WriteFile(out, report, 0o644); err != nil { // #nosec G306 -- a document of the repository
		return err
	}
	counts := map[string]int{}
	for _, m := range mods {
		counts[strings.Join(m.Licenses, " AND ")]++
	}
	fmt.Printf("licenses: %d modules (with the standard library): %s\n", len(mods), summary(counts))
	if len(problems) > 0 {
		return fmt.Errorf("%d modules fail:\n  %s", len(problems), strings.Join(problems, "\n  "))
	}
	return nil
}

// buildList returns the standard library and every module that provides a
// package to cmd/cohort on a release platform, sorted by path.
func buildList() ([]*module, error) {
	byPath := map[string]*module{}
	for _, p := range platforms {
		goos, goarch, _ := strings.Cut(p, "/")
		cmd := exec.Command("go", "list", "-deps", "-f",
			"{{with .Module}}{{if .Replace}}{{.Replace.Path}}\t{{.Replace.Version}}\t{{.Replace.Dir}}{{else}}{{.Path}}\t{{.Version}}\t{{.Dir}}{{end}}\t{{.Main}}{{end}}",
			"./cmd/cohort")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
		cmd.Stderr = os.Stderr
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go list (%s): %w", p, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			if len(f) != 4 || f[3] == "true" {
				continue // a standard library package, or Cohort's own
			}
			if _, ok := byPath[f[0]]; !ok {
				byPath[f[0]] = &module{Path: f[0], Version: f[1], Dir: f[2]}
			}
		}
	}
	for _, m := range byPath {
		if m.Dir == "" {
			dir, err := download(m.Path, m.Version)
			if err != nil {
				return nil, err
			}
			m.Dir = dir
		}
	}
	goVersion, err := exec.Command("go", "list", "-m", "-f", "{{.GoVersion}}").Output()
	if err != nil {
		return nil, fmt.Errorf("go list -m: %w", err)
	}
	major, minor, _ := strings.Cut(strings.TrimSpace(string(goVersion)), ".")
	minor, _, _ = strings.Cut(minor, ".")
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	mods := []*module{{Path: "std", Version: "go" + major + "." + minor, Dir: strings.TrimSpace(string(goroot))}}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		mods = append(mods, byPath[p])
	}
	return mods, nil
}

// download puts a module in the module cache and returns its directory.
func download(path, version string) (string, error) {
	b, err := exec.Command("go", "mod", "download", "-json", path+"@"+version).Output() // #nosec G204 -- a module of the build list
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", path, version, err)
	}
	var d struct{ Dir, Error string }
	if err := json.Unmarshal(b, &d); err != nil {
		return "", err
	}
	if d.Error != "" || d.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", path, version, d.Error)
	}
	return d.Dir, nil
}

var licenseFile = regexp.MustCompile(`(?i)^(licen[cs]e|copying|unlicense)([-._].*)?$`)

// classify finds m's licence files and what they say, and sets m.Problem
// when a licence is unknown or denied and no exception allows it.
func classify(m *module) {
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		m.Problem = err.Error()
		return
	}
	found := map[string]bool{}
	var unknown []string
	for _, e := range entries {
		if e.IsDir() || !licenseFile.MatchString(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.Dir, e.Name())) // #nosec G304 -- a file of the module cache
		if err != nil {
			m.Problem = err.Error()
			return
		}
		m.Files = append(m.Files, e.Name())
		ids := identify(b)
		if len(ids) == 0 {
			unknown = append(unknown, e.Name())
		}
		for _, id := range ids {
			found[id] = true
		}
	}
	for id := range found {
		m.Licenses = append(m.Licenses, id)
	}
	slices.Sort(m.Licenses)
	var bad []string
	for _, id := range m.Licenses {
		if isDenied(id) {
			bad = append(bad, id)
		}
	}
	switch ex, ok := exceptions[m.Path]; {
	case ok && strings.Join(m.Licenses, " AND ") != ex.Found:
		m.Problem = fmt.Sprintf("the licence files now say %s, not %s: review its exception in scripts/licenses",
			orUnknown(strings.Join(m.Licenses, " AND ")), ex.Found)
	case ok:
		m.Exception = &ex
		m.Licenses = []string{ex.License}
	case len(m.Files) == 0:
		m.Problem = "no licence file at the module's root"
	case len(unknown) > 0:
		m.Problem = "unknown licence in " + strings.Join(unknown, ", ") + ": classify it in scripts/licenses or add an exception"
	case len(bad) > 0:
		m.Problem = "denied licence " + strings.Join(bad, ", ") + ": remove the dependency or add an exception with the reason"
	}
}

func isDenied(id string) bool {
	for _, d := range denied {
		if id == d || strings.HasPrefix(id, d+"-") {
			return true
		}
	}
	return false
}

// rule identifies a licence by phrases that all occur in its text
// (lowercase, white space collapsed), and none of the phrases in unless.
type rule struct {
	id     string
	all    []string
	unless []string
}

// rules, most specific first. One file may hold several licences (a
// project's own and those of code it vendors): every rule that matches
// counts.
var rules = []rule{
	{id: "Apache-2.0", all: []string{"apache license", "version 2.0"}},
	{id: "MPL-2.0", all: []string{"mozilla public license", "2.0"}},
	{id: "EPL-2.0", all: []string{"eclipse public license - v 2.0"}},
	{id: "EDL-1.0", all: []string{"eclipse distribution license - v 1.0"}},
	// MPL-2.0 and EPL-2.0 name the GPL family as "Secondary Licenses".
	{id: "AGPL-3.0", all: []string{"gnu affero general public license"}, unless: []string{"mozilla public license", "eclipse public license"}},
	{id: "LGPL", all: []string{"gnu lesser general public license"}, unless: []string{"mozilla public license", "eclipse public license"}},
	{id: "LGPL", all: []string{"gnu library general public license"}, unless: []string{"mozilla public license", "eclipse public license"}},
	{id: "GPL", all: []string{"gnu general public license"}, unless: []string{"mozilla public license", "eclipse public license", "gnu lesser general public license"}},
	{id: "BSD-3-Clause", all: []string{"redistribution and use in source and binary forms", "neither the name"}, unless: []string{"all advertising materials"}},
	{id: "BSD-3-Clause", all: []string{"redistribution and use in source and binary forms", "names of its contributors may not be used"}, unless: []string{"all advertising materials"}},
	{id: "BSD-2-Clause", all: []string{"redistribution and use in source and binary forms"}, unless: []string{"neither the name", "names of its contributors may not be used", "all advertising materials"}},
	{id: "MIT", all: []string{"permission is hereby granted, free of charge, to any person obtaining a copy", "the above copyright notice and this permission notice shall be included"}},
	{id: "ISC", all: []string{"permission to use, copy, modify, and", "distribute this software for any purpose with or without fee is hereby granted"}},
	{id: "OFL-1.1", all: []string{"sil open font license", "version 1.1"}},
	{id: "CC-BY-4.0", all: []string{"creative commons attribution 4.0 international"}},
	{id: "Unlicense", all: []string{"this is free and unencumbered software released into the public domain"}},
	{id: "Zlib", all: []string{"this software is provided 'as-is', without any express or implied warranty", "altered source versions must be plainly marked as such"}},
	{id: "BSL-1.0", all: []string{"boost software license - version 1.0"}},
}

var space = regexp.MustCompile(`[\s#*/>|]+`)

// identify returns the licences whose rules match text.
func identify(text []byte) []string {
	s := space.ReplaceAllString(strings.ToLower(string(text)), " ")
	var ids []string
	for _, r := range rules {
		if slices.Contains(ids, r.id) || !containsAll(s, r.all) || containsAny(s, r.unless) {
			continue
		}
		ids = append(ids, r.id)
	}
	return ids
}

func containsAll(s string, phrases []string) bool {
	for _, p := range phrases {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func containsAny(s string, phrases []string) bool {
	for _, p := range phrases {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func summary(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if counts[keys[i]] != counts[keys[j]] {
			return counts[keys[i]] > counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		name := k
		if name == "" {
			name = "unknown"
		}
		parts[i] = fmt.Sprintf("%s %d", name, counts[k])
	}
	return strings.Join(parts, ", ")
}

// render writes the report. It holds nothing that changes between runs
// (no date, no local path), so CI can diff it.
func render(mods []*module) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Licences of Cohort's dependencies\n\n")
	w("Generated by `scripts/licenses.sh` (scripts/licenses/main.go); CI fails when it is out\n")
	w("of date. Do not edit: run the script and commit the result.\n\n")
	w("Every module compiled into the `cohort` binary (`go list -deps ./cmd/cohort` on\n")
	w("%s, CGO_ENABLED=0), with the Go standard library. The licence is\n", strings.Join(platforms, " and "))
	w("identified from the module's licence files in the module cache by the phrases\n")
	w("of each licence's text; copyleft licences (%s) are denied unless an\n", strings.Join(denied, ", "))
	w("exception in scripts/licenses/main.go allows the module, with the reason.\n\n")

	counts := map[string]int{}
	for _, m := range mods {
		counts[strings.Join(m.Licenses, " AND ")]++
	}
	w("%d modules: %s.\n\n", len(mods), summary(counts))
	w("| Module | Version | Licence | File |\n|---|---|---|---|\n")
	for _, m := range mods {
		lic := strings.Join(m.Licenses, " AND ")
		if m.Problem != "" {
			lic = "**" + orUnknown(lic) + ": " + m.Problem + "**"
		} else if m.Exception != nil {
			lic += " (see below)"
		}
		w("| %s | %s | %s | %s |\n", m.Path, m.Version, lic, strings.Join(m.Files, ", "))
	}
	var exc []*module
	for _, m := range mods {
		if m.Exception != nil {
			exc = append(exc, m)
		}
	}
	if len(exc) > 0 {
		w("\n## Licence decisions\n\n")
		w("Modules whose licence files offer a choice; the licence Cohort takes, and why.\n\n")
		for _, m := range exc {
			w("- %s: %s.\n", m.Path, m.Exception.Why)
		}
		w("\n## Notices\n\n")
		for _, m := range exc {
			if m.Exception.Notice != "" {
				w("- %s: %s\n", m.Path, m.Exception.Notice)
			}
		}
	}
	return b.Bytes()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
