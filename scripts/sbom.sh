#!/usr/bin/env bash
# Writes a CycloneDX SBOM (JSON) for each release binary that
# scripts/build.sh put in OUTDIR, and checks it.
#
# The SBOM is made from the binary itself (`cyclonedx-gomod bin`): the Go
# linker embeds the module path, version and go.sum hash of every module
# whose code is linked in (`go version -m BINARY`; -trimpath and
# -buildvcs=false keep that, only file paths and the VCS stamp go), so the
# SBOM lists exactly what shipped, for that platform. It also names the Go
# release (the "std" component) and the binary's own hashes. It has no
# serial number and no time stamp, so the same binary gives the same SBOM.
# Licences are not in it (cyclonedx-gomod would have to download Cohort's
# own module by version): docs/licenses.md lists them.
#
# scripts/sbomcheck then checks each SBOM against its binary: CycloneDX
# JSON, the binary's SHA-256 and platform, and a component at the right
# version for every module `go version -m` shows.
#
# Usage: scripts/sbom.sh OUTDIR
#   reads  OUTDIR/cohort_VERSION_linux_ARCH/cohort
#   writes OUTDIR/cohort_VERSION_linux_ARCH.cdx.json
#
# cyclonedx-gomod v1.10.0 is installed with `go install` into
# $(go env GOPATH)/bin when that version is not there.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: scripts/sbom.sh OUTDIR}"
out="$(cd "$out" && pwd)"
cd "$repo"

CYCLONEDX_GOMOD_VERSION=v1.10.0
tool="$(go env GOPATH)/bin/cyclonedx-gomod"
if ! go version -m "$tool" 2>/dev/null | grep -q "mod[[:space:]]*github.com/CycloneDX/cyclonedx-gomod[[:space:]]*${CYCLONEDX_GOMOD_VERSION}[[:space:]]"; then
	echo "sbom: installing cyclonedx-gomod ${CYCLONEDX_GOMOD_VERSION}" >&2
	GOFLAGS= go install "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@${CYCLONEDX_GOMOD_VERSION}"
fi

shopt -s nullglob
bins=("$out"/cohort_*_linux_*/cohort)
if [ "${#bins[@]}" -eq 0 ]; then
	echo "sbom: no OUTDIR/cohort_VERSION_linux_ARCH/cohort in $out (run scripts/build.sh $out first)" >&2
	exit 1
fi
for bin in "${bins[@]}"; do
	name="$(basename "$(dirname "$bin")")" # cohort_VERSION_linux_ARCH
	version="${name#cohort_}"
	version="${version%_linux_*}"
	sbom="$out/$name.cdx.json"
	"$tool" bin -json -std -noserial -notimestamp -version "v${version}" -output "$sbom" "$bin"
	go run ./scripts/sbomcheck "$sbom" "$bin"
done
