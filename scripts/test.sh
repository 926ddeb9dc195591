#!/usr/bin/env bash
# Cohort's test command (README, and .ci/run in CI). On a fresh Debian
# machine it installs what the tests need (protoc, Mosquitto, Chromium for
# the dashboard's browser test), then runs
# every check: formatting, vet, staticcheck, static analysis (gosec,
# module verification, govulncheck, licences), the test suite with the race
# detector (-short: the heavy real-data runs skip), the whole suite without
# it (the real-data runs, the attack suite and the rolling upgrade
# included), the scenario suite, the release artifacts (signed and
# verified), a reproducibility check, the gateway packages under systemd,
# the compose testbed, and a short run of every fuzz target. Tests start their own Mosquitto brokers; no system
# service is used.
#
# Needs: Go 1.26 and, for the real-data tests, ../shared/data (CI has it;
# elsewhere those tests skip and say so). The multi-container test
# (deploy/dockertest) needs Docker; it skips without it, except in CI.
# Test artefacts (the dashboard's screenshot) go to artifacts/ unless
# COHORT_ARTIFACTS names another directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export COHORT_ARTIFACTS="${COHORT_ARTIFACTS:-$PWD/artifacts}"

PROTOC_GEN_GO_VERSION=v1.36.12   # = google.golang.org/protobuf in go.mod
STATICCHECK_VERSION=v0.8.2
FUZZTIME="${FUZZTIME:-5s}"
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "tools"
. scripts/deps.sh
protoc --version
/usr/sbin/mosquitto -h 2>/dev/null | head -1 || true
if ! protoc-gen-go --version 2>/dev/null | grep -q "${PROTOC_GEN_GO_VERSION}"; then
  GOFLAGS= go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
fi
protoc-gen-go --version
if ! staticcheck -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
  GOFLAGS= go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
fi
staticcheck -version
if [ -n "${CI:-}" ] && [ ! -d ../shared/data ]; then
  echo "CI needs the real test data at ../shared/data" >&2
  exit 1
fi

# In CI the multi-container test (deploy/dockertest, run by the step "all
# tests") fails instead of skipping when Docker is missing.
if [ -n "${CI:-}" ]; then
  export COHORT_REQUIRE_DOCKER=1
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

step "static analysis: gosec, go mod verify, govulncheck (offline database), licences (scripts/static-analysis.sh)"
scripts/static-analysis.sh

step "tests with the race detector (-short)"
go test -race -short -count=1 ./...

step "all tests, real-data runs included"
go test -count=1 -timeout 20m -skip '^TestRollingUpgradeMixedVersions$' ./...

step "rolling upgrade from the previous release (built from git history) with mixed versions (cmd/cohort TestRollingUpgradeMixedVersions)"
# Its own step, so that CI's log says whether it ran (it skips, saying
# why, in a clone without the previous release's commit).
upgrade_log="$(mktemp)"
if go test -count=1 -timeout 10m -v -run '^TestRollingUpgradeMixedVersions$' ./cmd/cohort >"$upgrade_log" 2>&1; then
  grep -E '^(--- |    upgrade_test|ok)' "$upgrade_log" || true
else
  cat "$upgrade_log"; exit 1
fi

step "scenario suite (scenarios/*.yaml: faults, lossy links, real data; each checks its expectations)"
reports="${COHORT_REPORT_DIR:-$(mktemp -d)}"
go build -o "$reports/cohort" ./cmd/cohort
CI=1 "$reports/cohort" sim --scenario scenarios --report-dir "$reports"
echo "reports: $reports/<scenario>/report.md"

step "release artifacts: binaries, packages, SBOMs, licence report, signed SHA256SUMS, cohort verify (scripts/release.sh)"
release_dir="$(mktemp -d)/release"
scripts/release.sh "$release_dir"

step "reproducible builds: a rebuild elsewhere with an empty build cache gives the same bytes (scripts/repro.sh)"
scripts/repro.sh "$(mktemp -d)"

step "gateway packages: install, start, upgrade with a pending update, remove, purge, under systemd in a debootstrap root file system (deploy/packaging/test.sh)"
deploy/packaging/test.sh

step "compose testbed: a job, the leader's container killed mid-round, an agent's network cut and restored (deploy/compose/test.sh)"
if command -v docker >/dev/null || [ -n "${COHORT_REQUIRE_DOCKER:-}" ]; then
  deploy/compose/test.sh
else
  echo "skipped: no Docker on this machine (CI requires it)"
fi

step "fuzz targets (${FUZZTIME} each)"
# fuzz TARGET PKG [go test flags]: a failure shows the fuzzer's output. A
# failing input the fuzzer saved (PKG/testdata/fuzz) fails the run; a
# failure with nothing saved (a worker that hung or died outside the
# target, e.g. on a starved machine) is said and run once more.
fuzz() {
  local target="$1" pkg="$2" out
  shift 2
  if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$@" "$pkg" 2>&1); then
    printf '%s\n' "$out" | tail -1
    return
  fi
  printf '%s\n' "$out" | grep -v '^fuzz: elapsed' | tail -40
  if [ -n "$(git status --porcelain -- "$pkg/testdata/fuzz")" ]; then
    echo "fuzz $target found a failing input, saved under $pkg/testdata/fuzz"
    return 1
  fi
  echo "fuzz $target failed without saving an input; running it once more"
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$@" "$pkg" 2>&1 | tail -1
}
fuzz FuzzReadFrame ./protocol
fuzz FuzzParseResource ./agent/fhir
fuzz FuzzReadNDJSON ./agent/fhir
fuzz FuzzParseManifest ./agent/fhir/bulk
fuzz FuzzRetryAfter ./agent/fhir/bulk
fuzz FuzzDecode ./agent/device
fuzz FuzzSealedStoreGet ./agent/device
fuzz FuzzParseStay ./agent/physionet
fuzz FuzzReadOutcomes ./agent/physionet
fuzz FuzzAddPacked ./aggregator
fuzz FuzzDecodeState ./aggregator
fuzz FuzzParseScenario ./sim
fuzz FuzzParseMessage ./sim/synth
fuzz FuzzReadLog ./agent/egress
fuzz FuzzGuardSecAggMessage ./agent/egress
fuzz FuzzAuthHeader ./coordinator
fuzz FuzzDecode ./protocol/secagg
fuzz FuzzServerHandle ./protocol/secagg
fuzz FuzzAccountantState ./protocol/dp
fuzz FuzzParseSums ./internal/release
# The audit log's fuzzer minimizes slowly: cap it so it fuzzes.
fuzz FuzzOpen ./coordinator/audit -fuzzminimizetime 2s

echo
echo "all checks passed"
