#!/usr/bin/env bash
# Makes a signed release in OUTDIR and checks the whole chain, as a user
# would check a download:
#
#   1. binaries        scripts/build.sh (static, reproducible, linux/amd64
#                      and linux/arm64)
#   2. packages        scripts/package.sh (.deb and .rpm) if it is there and
#                      works; skipped with a message otherwise (fatal with
#                      REQUIRE_PACKAGES=1)
#   3. SBOMs           scripts/sbom.sh: a CycloneDX SBOM per binary
#   4. licences        scripts/licenses.sh --check: every dependency's licence
#                      known and allowed, docs/licenses.md up to date (and
#                      shipped as cohort_VERSION_licenses.md)
#   5. SHA256SUMS      of every artifact, and SHA256SUMS.sig, its Ed25519
#                      signature (`cohort release sign`)
#   6. verification    `cohort verify` of every artifact with the public key;
#                      `sha256sum -c`; and a tampered copy must be refused
#
# Usage: scripts/release.sh OUTDIR     (a new or empty directory)
#
# Environment:
#   COHORT_RELEASE_KEY     the release's private key file (PEM, mode 0600;
#                          docs/security-tooling.md: custody and rotation).
#                          Unset: a throwaway key pair is made for this run
#                          and the release says so: it is NOT a release
#                          anyone can check against the maintainers' key.
#   COHORT_RELEASE_PUBKEY  the public key to verify with (default:
#                          deploy/release-key.pub when COHORT_RELEASE_KEY is
#                          set): verifying with the published key, not one
#                          derived from the private key, is the point.
#   REQUIRE_PACKAGES       1: fail when the packages can't be built
#   VERSION, COMMIT, SOURCE_DATE_EPOCH, ARCHES: as for scripts/build.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: scripts/release.sh OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$repo"
# Everything in OUTDIR gets signed: start from nothing.
if [ -n "$(ls -A "$out")" ]; then
	echo "release: $out is not empty; give a new or empty directory" >&2
	exit 1
fi

version="${VERSION:-$(tr -d ' \n' <VERSION)}"
export VERSION="$version"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/cohort-release.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
step() { printf '\n== release: %s (%ss)\n' "$*" "$(( SECONDS - start ))"; }
loud() { printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'; printf '!!! %s\n' "$@"; printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n'; }

step "binaries"
scripts/build.sh "$out"

step "packages"
if [ ! -f scripts/package.sh ]; then
	echo "release: no scripts/package.sh: packages skipped"
	[ "${REQUIRE_PACKAGES:-}" != 1 ] || exit 1
elif bash scripts/package.sh "$tmp/pkg" >"$tmp/package.log" 2>&1; then
	cat "$tmp/package.log"
	# package.sh builds its own binaries from the same source: they must be
	# the same bytes (scripts/build.sh is reproducible).
	for bin in "$out"/cohort_*_linux_*/cohort; do
		rel="${bin#"$out"/}"
		if ! cmp -s "$bin" "$tmp/pkg/bin/$rel"; then
			echo "release: $rel built by scripts/package.sh differs from scripts/build.sh's" >&2
			exit 1
		fi
	done
	shopt -s nullglob
	pkgs=("$tmp"/pkg/*.deb "$tmp"/pkg/*.rpm)
	shopt -u nullglob
	if [ "${#pkgs[@]}" -eq 0 ]; then
		echo "release: scripts/package.sh made no .deb or .rpm" >&2
		exit 1
	fi
	mv "${pkgs[@]}" "$out/"
else
	echo "release: scripts/package.sh failed: packages skipped. Its output:"
	sed 's/^/  | /' "$tmp/package.log" | tail -20
	[ "${REQUIRE_PACKAGES:-}" != 1 ] || exit 1
fi

step "SBOMs"
scripts/sbom.sh "$out"

step "licences"
scripts/licenses.sh --check
cp docs/licenses.md "$out/cohort_${version}_licenses.md"

# The cohort that signs and verifies: the release binary for this machine
# when there is one (so the release's own verify is what is proven), else
# one built here.
cohort="$out/cohort_${version}_$(go env GOHOSTOS)_$(go env GOHOSTARCH)/cohort"
if [ ! -x "$cohort" ]; then
	cohort="$tmp/cohort"
	go build -o "$cohort" ./cmd/cohort
fi

step "signing key"
if [ -n "${COHORT_RELEASE_KEY:-}" ]; then
	key="$COHORT_RELEASE_KEY"
	pub="${COHORT_RELEASE_PUBKEY:-deploy/release-key.pub}"
	if [ ! -f "$pub" ]; then
		echo "release: no public key $pub to verify with (set COHORT_RELEASE_PUBKEY)" >&2
		exit 1
	fi
	echo "release: signing with $key, verifying with $pub"
else
	"$cohort" release keygen -o "$tmp/key"
	key="$tmp/key/release-key"
	pub="$out/THROWAWAY-release-key.pub"
	cp "$tmp/key/release-key.pub" "$pub"
	loud "COHORT_RELEASE_KEY is not set: this release is signed with a THROWAWAY key" \
		"made for this run (its private half is deleted at the end; its public half is" \
		"$pub)." \
		"It proves the chain works; it is not a release to publish."
fi

step "SHA256SUMS and SHA256SUMS.sig"
rm -f "$out/SHA256SUMS" "$out/SHA256SUMS.sig"
mapfile -t artifacts < <(cd "$out" && find . -type f ! -name SHA256SUMS ! -name SHA256SUMS.sig ! -name '*.pub' | sed 's|^\./||' | LC_ALL=C sort)
"$cohort" release sign --key "$key" --dir "$out" "${artifacts[@]}"
cat "$out/SHA256SUMS"

step "verify"
paths=()
for a in "${artifacts[@]}"; do paths+=("$out/$a"); done
"$cohort" verify --sums "$out/SHA256SUMS" --sig "$out/SHA256SUMS.sig" --key "$pub" "${paths[@]}"
(cd "$out" && sha256sum --quiet -c SHA256SUMS) && echo "sha256sum -c: OK"
# A tampered artifact must be refused.
victim="$out/${artifacts[0]}"
cp "$victim" "$tmp/$(basename "$victim")"
printf 'x' >>"$tmp/$(basename "$victim")"
if "$cohort" verify --sums "$out/SHA256SUMS" --sig "$out/SHA256SUMS.sig" --key "$pub" "$tmp/$(basename "$victim")" >/dev/null 2>&1; then
	echo "release: cohort verify accepted a tampered copy of ${artifacts[0]}" >&2
	exit 1
fi
echo "a tampered copy of ${artifacts[0]} is refused: OK"

step "done"
echo "release: ${#artifacts[@]} artifacts in $out, signed and verified"
if [ -z "${COHORT_RELEASE_KEY:-}" ]; then
	echo "release: signed with a THROWAWAY key (COHORT_RELEASE_KEY unset): not for publishing"
fi
