// Command sbomcheck checks a CycloneDX SBOM against the binary it
// describes: that it is CycloneDX JSON, that it names the binary (its
// SHA-256, the main module, the platform) and that it lists, with the same
// version, the Go standard library and every module whose code the binary
// holds (the module information the Go linker embeds: `go version -m`).
// scripts/sbom.sh runs it on each SBOM it writes.
//
// Usage: go run ./scripts/sbomcheck SBOM BINARY
package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// bom is the part of a CycloneDX document that is checked.
type bom struct {
	BOMFormat   string `json:"bomFormat"`
	SpecVersion string `json:"specVersion"`
	Metadata    struct {
		Component  component `json:"component"`
		Properties []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"properties"`
	} `json:"metadata"`
	Components []component `json:"components"`
}

type component struct {
	Type    string `json:"type"`
	Name    string `json:"name"`
	Version string `json:"version"`
	PURL    string `json:"purl"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: sbomcheck SBOM BINARY")
		os.Exit(2)
	}
	n, err := check(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "sbomcheck: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	fmt.Printf("sbomcheck: %s: CycloneDX JSON for %s, %d components, every module of `go version -m` listed\n",
		os.Args[1], os.Args[2], n)
}

func check(sbomPath, binPath string) (int, error) {
	b, err := os.ReadFile(sbomPath) // #nosec G304 G703 -- a file named on the command line
	if err != nil {
		return 0, err
	}
	var doc bom
	if err := json.Unmarshal(b, &doc); err != nil {
		return 0, fmt.Errorf("not JSON: %w", err)
	}
	if doc.BOMFormat != "CycloneDX" || doc.SpecVersion == "" {
		return 0, fmt.Errorf("bomFormat %q, specVersion %q: not a CycloneDX document", doc.BOMFormat, doc.SpecVersion)
	}
	info, err := buildinfo.ReadFile(binPath)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", binPath, err)
	}
	digest, err := fileSHA256(binPath)
	if err != nil {
		return 0, err
	}
	props := map[string]string{}
	for _, p := range doc.Metadata.Properties {
		props[p.Name] = p.Value
	}
	var problems []string
	if got := props["cdx:gomod:binary:hash:SHA-256"]; got != digest {
		problems = append(problems, fmt.Sprintf("binary SHA-256 %q, the file's is %s", got, digest))
	}
	if got := props["cdx:gomod:build:env:GOVERSION"]; got != info.GoVersion {
		problems = append(problems, fmt.Sprintf("GOVERSION %q, the binary's is %s", got, info.GoVersion))
	}
	for _, s := range info.Settings {
		if s.Key == "GOOS" || s.Key == "GOARCH" || s.Key == "CGO_ENABLED" {
			if got := props["cdx:gomod:build:env:"+s.Key]; got != s.Value {
				problems = append(problems, fmt.Sprintf("%s %q, the binary's is %s", s.Key, got, s.Value))
			}
		}
	}
	if c := doc.Metadata.Component; c.Type != "application" || c.Name != info.Main.Path {
		problems = append(problems, fmt.Sprintf("main component %s %q, want the application %s", c.Type, c.Name, info.Main.Path))
	}
	listed := map[string]component{}
	for _, c := range doc.Components {
		listed[c.Name] = c
	}
	want := map[string]string{"std": info.GoVersion}
	for _, d := range info.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		want[d.Path] = d.Version
	}
	for path, version := range want {
		c, ok := listed[path]
		switch {
		case !ok:
			problems = append(problems, path+" "+version+" is not listed")
		case c.Version != version:
			problems = append(problems, fmt.Sprintf("%s is listed at %s, the binary holds %s", path, c.Version, version))
		case !strings.HasPrefix(c.PURL, "pkg:golang/"):
			problems = append(problems, fmt.Sprintf("%s has purl %q", path, c.PURL))
		}
	}
	if len(doc.Components) != len(want) {
		problems = append(problems, fmt.Sprintf("%d components, the binary holds %d modules (with std)", len(doc.Components), len(want)))
	}
	if len(problems) > 0 {
		return 0, errors.New(strings.Join(problems, "; "))
	}
	return len(doc.Components), nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path) // #nosec G304 G703 -- a file named on the command line
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
