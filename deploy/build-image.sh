#!/usr/bin/env bash
# Builds the Cohort container images without pulling any base image: the
# static binary is compiled on this host, a build context is laid out in a
# temporary directory (binary, /etc/passwd and /etc/group with the
# unprivileged user cohort, uid 65532, /tmp, /var/lib/cohort, /etc/cohort),
# and deploy/Dockerfile assembles the images FROM scratch. Nothing is written
# into the repository. Prints the id of the image TAG on stdout; progress
# goes to stderr.
#
# Usage: deploy/build-image.sh [TAG]
#
# TAG (default cohort:dev) is the image for every role. Two role images are
# tagged next to it, from the same layer: NAME-coordinator:T and
# NAME-agent:T for TAG NAME:T (cohort-coordinator:dev, cohort-agent:dev),
# each with its own HEALTHCHECK and default CMD (see deploy/Dockerfile).
#
# Environment:
#   VERSION             version stamped into the binary (default: dev)
#   SOURCE_DATE_EPOCH   build date to stamp, in seconds (default: now)
#   KEEP_CONTEXT=1      keep the temporary build context and print its path
#   ROLE_IMAGES=0       build TAG only, not the two role images
#
# The images are linux/amd64: FROM scratch takes the builder's platform, so
# the binary must match it.
set -euo pipefail

tag="${1:-cohort:dev}"
# NAME:T -> NAME-coordinator:T and NAME-agent:T. A colon after the last
# slash starts the tag (a registry host may carry a port).
name="$tag" version_tag=latest
case "${tag##*/}" in
*:*) name="${tag%:*}" version_tag="${tag##*:}" ;;
esac
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
mkdir -p "$root/etc" "$root/tmp" "$root/var/lib" "$ctx/varlib/cohort" "$ctx/etc/cohort"
chmod 1777 "$root/tmp"
chmod 0700 "$ctx/varlib/cohort" "$ctx/etc/cohort"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
cohort:x:65532:65532:cohort:/var/lib/cohort:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
cohort:x:65532:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# The legacy builder and BuildKit both work; use BuildKit only where the
# buildx plugin is installed.
if [ -z "${DOCKER_BUILDKIT:-}" ] && ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi
# build TARGET TAG builds one target of deploy/Dockerfile. The builder's
# messages (the legacy builder's deprecation notice) are shown on failure
# only.
build() {
	echo "build-image: building $2" >&2
	local out
	if ! out="$(docker build --quiet --target "$1" -t "$2" -f "$repo/deploy/Dockerfile" \
		--build-arg VERSION="$version" --build-arg COMMIT="$commit" --build-arg DATE="$date" \
		"$ctx" 2>&1 >/dev/null)"; then
		echo "$out" >&2
		echo "build-image: docker build --target $1 failed" >&2
		exit 1
	fi
}
build cohort "$tag"
if [ "${ROLE_IMAGES:-1}" != 0 ]; then
	build coordinator "${name}-coordinator:${version_tag}"
	build agent "${name}-agent:${version_tag}"
fi
docker image inspect --format '{{.Id}}' "$tag"
