#!/usr/bin/env bash
# Builds Cohort's gateway packages with nfpm: a .deb and an .rpm for
# linux/amd64 and linux/arm64, each holding the cohort binary, the hardened
# systemd units (cohort-agent.service, cohort-coordinator.service), the
# agent's default config /etc/cohort/agent.json and the maintainer scripts
# (deploy/packaging/; see deploy/packaging/README.md).
#
# The binaries come from scripts/build.sh (static, reproducible, stamped
# with VERSION, the commit and the commit's time). The packages are
# reproducible too: nfpm takes every time stamp from SOURCE_DATE_EPOCH (the
# commit's time unless set), every mode and owner is fixed in nfpm.yaml and
# the rpm names a fixed build host, so the same source gives the same bytes.
#
# Usage: scripts/package.sh [OUTDIR]       (default: dist)
#   OUTDIR/cohort_VERSION_amd64.deb   OUTDIR/cohort_VERSION_amd64.rpm
#   OUTDIR/cohort_VERSION_arm64.deb   OUTDIR/cohort_VERSION_arm64.rpm
#   OUTDIR/SHA256SUMS                 one line per package
#   OUTDIR/bin/...                    the binaries and their SHA256SUMS
#
# Environment:
#   VERSION            package and binary version (default: the VERSION file)
#   ARCHES             which architectures (default: "amd64 arm64")
#   FORMATS            which package formats (default: "deb rpm")
#   SOURCE_DATE_EPOCH  build date, seconds (default: the commit's time)
#   COMMIT             commit to stamp (see scripts/build.sh)
#   NFPM               an nfpm binary to use instead of the pinned one
#
# nfpm v2.45.2 is installed with `go install` into $(go env GOPATH)/bin when
# that version is not there.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$repo"

NFPM_VERSION=v2.45.2
version="${VERSION:-$(tr -d ' \n' <VERSION)}"
arches="${ARCHES:-amd64 arm64}"
formats="${FORMATS:-deb rpm}"

# One date for the binaries and the packages: the commit's time, as
# scripts/build.sh would choose it.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	if git rev-parse --git-dir >/dev/null 2>&1; then
		SOURCE_DATE_EPOCH="$(git log -1 --format=%ct HEAD)"
	else
		SOURCE_DATE_EPOCH=0
	fi
fi
export SOURCE_DATE_EPOCH

nfpm="${NFPM:-}"
if [ -z "$nfpm" ]; then
	nfpm="$(go env GOPATH)/bin/nfpm"
	# go install stamps the module version, not --version's GitVersion.
	if ! go version -m "$nfpm" 2>/dev/null | grep -q "mod[[:space:]]*github.com/goreleaser/nfpm/v2[[:space:]]*${NFPM_VERSION}[[:space:]]"; then
		echo "package: installing nfpm ${NFPM_VERSION}" >&2
		GOFLAGS='' go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@${NFPM_VERSION}"
	fi
fi

# The binaries.
VERSION="$version" ARCHES="$arches" scripts/build.sh "$out/bin" >/dev/null

: >"$out/SHA256SUMS.tmp"
for arch in $arches; do
	bin="$out/bin/cohort_${version}_linux_${arch}/cohort"
	for format in $formats; do
		pkg="cohort_${version}_${arch}.${format}"
		echo "package: $pkg" >&2
		COHORT_VERSION="$version" COHORT_ARCH="$arch" COHORT_BINARY="$bin" \
			"$nfpm" package --config deploy/packaging/nfpm.yaml --packager "$format" \
			--target "$out/$pkg" >/dev/null
		(cd "$out" && sha256sum "$pkg") >>"$out/SHA256SUMS.tmp"
	done
done
mv "$out/SHA256SUMS.tmp" "$out/SHA256SUMS"
cat "$out/SHA256SUMS"
