#!/usr/bin/env bash
# Checks that release builds are reproducible: scripts/build.sh run on this
# checkout, and again on a copy of its tracked files in another directory
# with an empty Go build cache, must give byte-identical binaries.
#
# Usage: scripts/repro.sh [OUTDIR]     (default: a temporary directory)
#   OUTDIR/a   the build of this checkout (every architecture)
#   OUTDIR/b   the rebuild (ARCHES_REBUILD, default amd64: a cold-cache
#              build of one architecture takes minutes on 2 cores)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${1:-$(mktemp -d "${TMPDIR:-/tmp}/cohort-repro.XXXXXX")}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# The same stamp for both builds, whatever directory they run in.
commit="$(git rev-parse HEAD)"
if [ -n "$(git --no-optional-locks status --porcelain --untracked-files=no)" ]; then
	commit="${commit}-dirty"
fi
export COMMIT="$commit"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}"

start=$(date +%s)
scripts/build.sh "$out/a" >/dev/null
echo "repro: first build in $(( $(date +%s) - start ))s"

copy="$out/src"
rm -rf "$copy" "$out/b" "$out/gocache"
mkdir -p "$copy"
# Tracked files as they are in the working tree (a file deleted there is
# left out, as the first build does).
git ls-files -z | tar --null -T - --ignore-failed-read -c 2>/dev/null | tar -x -C "$copy"
start=$(date +%s)
(cd "$copy" && GOCACHE="$out/gocache" ARCHES="${ARCHES_REBUILD:-amd64}" scripts/build.sh "$out/b" >/dev/null)
echo "repro: rebuild in another directory with an empty build cache in $(( $(date +%s) - start ))s"
rm -rf "$out/gocache"

status=0
while read -r sum file; do
	if ! grep -q "^$sum  $file\$" "$out/a/SHA256SUMS"; then
		echo "repro: $file differs: $sum in the rebuild, $(grep " $file\$" "$out/a/SHA256SUMS" | cut -d' ' -f1) in the first build" >&2
		status=1
	else
		echo "repro: $file identical ($sum)"
	fi
done <"$out/b/SHA256SUMS"
"$out/a/cohort_$(tr -d ' \n' <VERSION)_linux_amd64/cohort" version
exit "$status"
