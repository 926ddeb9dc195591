// Package docscheck checks that documents point at things that exist.
package docscheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is two levels up from this package.
const repoRoot = "../.."

var (
	// `dir/pkg.TestName` or `pkg.TestName`
	testRef = regexp.MustCompile("`((?:[a-z0-9_]+/)*[a-z0-9_]+)\\.(Test[A-Za-z0-9_]+)`")
	// `FuzzName` (any package)
	fuzzRef = regexp.MustCompile("`(Fuzz[A-Za-z0-9_]+)`")
	// `scripts/x.sh` or `deploy/.../x.sh`
	scriptRef = regexp.MustCompile("`((?:scripts|deploy)/[A-Za-z0-9_./-]+\\.sh)`")
	// A threat row: | A1 | ...
	threatRow = regexp.MustCompile(`^\| ([A-Z][0-9]+) \|`)
)

// TestThreatModelPointsAtTestsThatExist: every threat in
// docs/threat-model.md names at least one test, and every test, fuzz
// target and script it names exists (CI runs them all).
func TestThreatModelPointsAtTestsThatExist(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "threat-model.md"))
	if err != nil {
		t.Fatal(err)
	}
	threats := 0
	for i, line := range strings.Split(string(doc), "\n") {
		m := threatRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		threats++
		refs := testRef.FindAllStringSubmatch(line, -1)
		fuzz := fuzzRef.FindAllStringSubmatch(line, -1)
		scripts := scriptRef.FindAllStringSubmatch(line, -1)
		if len(refs)+len(fuzz)+len(scripts) == 0 {
			t.Errorf("line %d: threat %s names no test", i+1, m[1])
		}
		for _, r := range refs {
			if !hasFunc(t, filepath.Join(repoRoot, r[1]), r[2]) {
				t.Errorf("line %d: threat %s names %s.%s, which does not exist", i+1, m[1], r[1], r[2])
			}
		}
		for _, f := range fuzz {
			if !hasFuncAnywhere(t, f[1]) {
				t.Errorf("line %d: threat %s names fuzz target %s, which does not exist", i+1, m[1], f[1])
			}
		}
		for _, s := range scripts {
			if _, err := os.Stat(filepath.Join(repoRoot, s[1])); err != nil {
				t.Errorf("line %d: threat %s names %s: %v", i+1, m[1], s[1], err)
			}
		}
	}
	if threats < 30 {
		t.Fatalf("found %d threat rows; the table format changed?", threats)
	}
}

// hasFunc reports whether a _test.go file in dir declares func name.
func hasFunc(t *testing.T, dir, name string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\nfunc "+name+"(") {
			return true
		}
	}
	return false
}

// hasFuncAnywhere reports whether any test file of the repository
// declares func name.
func hasFuncAnywhere(t *testing.T, name string) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err != nil || found {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			found = strings.Contains(string(b), "\nfunc "+name+"(")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
