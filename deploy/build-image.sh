#!/usr/bin/env bash
# Builds the Cohort container image (default tag cohort:dev) without pulling
# any base image: the static binary is compiled on this host, a build context
# is laid out in a temporary directory (binary, /etc/passwd and /etc/group
# with the unprivileged user cohort, uid 65532, /tmp, /var/lib/cohort), and
# deploy/Dockerfile assembles the image FROM scratch. Nothing is written into
# the repository. Prints the image id on stdout; progress goes to stderr.
#
# Usage: deploy/build-image.sh [TAG]
#
# Environment:
#   VERSION             version stamped into the binary (default: dev)
#   SOURCE_DATE_EPOCH   build date to stamp, in seconds (default: now)
#   KEEP_CONTEXT=1      keep the temporary build context and print its path
#
# The image is linux/amd64: FROM scratch takes the builder's platform, so
# the binary must match it.
set -euo pipefail

tag="${1:-cohort:dev}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

command -v go >/dev/null || { echo "build-image: go is not on PATH" >&2; exit 1; }
command -v docker >/dev/null || { echo "build-image: docker is not on PATH" >&2; exit 1; }

version="${VERSION:-dev}"
commit=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
	commit="$(git rev-parse HEAD)"
	# --no-optional-locks: only look, never refresh the index.
	if [ -n "$(git --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		commit="${commit}-dirty"
	fi
fi
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	date="$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)"
else
	date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi

ctx="$(mktemp -d "${TMPDIR:-/tmp}/cohort-image.XXXXXX")"
if [ "${KEEP_CONTEXT:-}" = 1 ]; then
	echo "build-image: keeping the build context in $ctx" >&2
else
	trap 'rm -rf "$ctx"' EXIT
fi

echo "build-image: compiling cohort $version ($commit) for linux/amd64" >&2
ldflags="-s -w -X main.Version=${version} -X main.Commit=${commit} -X main.Date=${date}"
# The agent reports its build to the coordinator in its Hello.
ldflags="${ldflags} -X github.com/cohort-fl/cohort/agent.Build=${version}"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 \
	go build -trimpath -ldflags "$ldflags" -o "$ctx/cohort" ./cmd/cohort

root="$ctx/rootfs"
mkdir -p "$root/etc" "$root/tmp" "$root/var/lib" "$ctx/varlib/cohort"
chmod 1777 "$root/tmp"
chmod 0700 "$ctx/varlib/cohort"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
cohort:x:65532:65532:cohort:/var/lib/cohort:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
cohort:x:65532:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"

echo "build-image: building $tag" >&2
# The legacy builder and BuildKit both work; use BuildKit only where the
# buildx plugin is installed.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi
docker build --quiet -t "$tag" -f "$repo/deploy/Dockerfile" \
	--build-arg VERSION="$version" --build-arg COMMIT="$commit" --build-arg DATE="$date" \
	"$ctx" >/dev/null
docker image inspect --format '{{.Id}}' "$tag"
