#!/usr/bin/env bash
# Builds Cohort's release binaries: static (CGO_ENABLED=0) linux/amd64 and
# linux/arm64, with the version, commit and date stamped in (`cohort
# version`), and reproducible: the same source gives the same bytes, on any
# machine with the same Go release, in any directory, whatever the build
# cache holds.
#
# What makes them reproducible:
#   -trimpath             no file system paths of the build machine
#   -buildvcs=false       no VCS stamp (the commit is stamped below instead,
#                         the same for a git checkout and a source tarball)
#   Date                  the commit's time (SOURCE_DATE_EPOCH overrides),
#                         never the clock
#   -s -w                 no symbol table or DWARF
#
# Usage: scripts/build.sh [OUTDIR]          (default: dist)
#   OUTDIR/cohort_VERSION_linux_amd64/cohort
#   OUTDIR/cohort_VERSION_linux_arm64/cohort
#   OUTDIR/SHA256SUMS                       one line per binary
#
# Environment:
#   VERSION            version to stamp (default: the VERSION file)
#   COMMIT             commit to stamp (default: git HEAD, with -dirty when
#                      tracked files have changed; "unknown" outside git)
#   SOURCE_DATE_EPOCH  build date, seconds (default: the commit's time)
#   ARCHES             which architectures (default: "amd64 arm64")
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$repo"

version="${VERSION:-$(tr -d ' \n' <VERSION)}"
commit="${COMMIT:-unknown}"
epoch="${SOURCE_DATE_EPOCH:-}"
if [ -z "${COMMIT:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
	commit="$(git rev-parse HEAD)"
	if [ -n "$(git --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		commit="${commit}-dirty"
	fi
	epoch="${epoch:-$(git log -1 --format=%ct HEAD)}"
fi
epoch="${epoch:-0}"
date="$(date -u -d "@${epoch}" +%Y-%m-%dT%H:%M:%SZ)"

ldflags="-s -w -buildid= -X main.Version=${version} -X main.Commit=${commit} -X main.Date=${date}"
ldflags="${ldflags} -X github.com/cohort-fl/cohort/agent.Build=${version}"

: >"$out/SHA256SUMS.tmp"
for arch in ${ARCHES:-amd64 arm64}; do
	dir="cohort_${version}_linux_${arch}"
	mkdir -p "$out/$dir"
	echo "build: cohort ${version} (${commit}) linux/${arch}" >&2
	CGO_ENABLED=0 GOOS=linux GOARCH="$arch" GOFLAGS= \
		go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out/$dir/cohort" ./cmd/cohort
	(cd "$out" && sha256sum "$dir/cohort") >>"$out/SHA256SUMS.tmp"
done
mv "$out/SHA256SUMS.tmp" "$out/SHA256SUMS"
cat "$out/SHA256SUMS"
