#!/usr/bin/env bash
# Cohort's test command (README, and .ci/run in CI). On a fresh Debian
# machine it installs what the tests need (protoc, Mosquitto, Chromium for
# the dashboard's browser test; in the background while the first checks
# run), then runs every check: formatting, vet, staticcheck, static
# analysis (gosec, module verification, govulncheck, licences), the test
# suite with the race detector (-short: the heavy real-data runs skip; on
# the packages with concurrency), the whole suite without it (the
# real-data runs, the attack suite and the rolling upgrade included), the
# scenario suite, the release artifacts (signed and verified), a
# reproducibility check, and a short run of every fuzz target, while the
# gateway packages under systemd and the compose testbed run in the
# background. Tests start their own Mosquitto brokers; no system service
# is used. Every step prints its start time since the beginning.
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
# Fuzz budgets count executions, not seconds: with a duration, Go 1.26's
# fuzz coordinator can fail a target with a bare "context deadline
# exceeded" and no input when a starved worker misses the deadline
# (golang/go#75804, fixed in Go 1.27; twice in CI here).
FUZZTIME="${FUZZTIME:-10000x}"
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
# finish PID LOG WHAT: waits for a background job, drops the EXIT trap that
# would have waited for it, prints its output and fails the run if it did.
finish() {
  local status=0
  wait "$1" || status=$?
  trap - EXIT
  cat "$2"
  if [ "$status" != 0 ]; then
    echo "$3 failed (exit $status)"
    exit 1
  fi
}

step "tools (the Debian packages install in the background, while the Go checks run)"
deps_log="$(mktemp)"
bash scripts/deps.sh >"$deps_log" 2>&1 &
deps_pid=$!
# Never leave apt-get running behind a failed check.
trap 'wait "$deps_pid" 2>/dev/null || true' EXIT
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

step "Debian packages the tests need (scripts/deps.sh, installing since the start)"
finish "$deps_pid" "$deps_log" "scripts/deps.sh"
protoc --version
/usr/sbin/mosquitto -h 2>/dev/null | head -1 || true

step "tests with the race detector (-short), on the packages with concurrency"
# Left out: packages whose code and tests are sequential and start no
# Cohort component (no go statement, errgroup, sync or t.Parallel; the
# check below fails when one gains any). Leaving them out saves compiling
# them, and k8s.io/api, with the race detector: over a minute on 2 cores.
race_skip='/(deploy|scripts|internal)/|/clock$|/protocol$|/protocol/(dp|featurespec|sdc|secagg)$|/agent/features$|/agent/train/mlpspec$|/agent/fhir/fhirtest$'
race_pkgs=()
while read -r pkg dir; do
  if [[ "$pkg" =~ $race_skip ]]; then
    if grep -lE '(^|[^[:alnum:]_.])go (func|[[:alnum:]_.]+\()|\.Go\(|errgroup|t\.Parallel|RunParallel|sync\.' "$dir"/*.go; then
      echo "$pkg is left out of the race run (race_skip in scripts/test.sh) but the files above use concurrency: take it out of race_skip" >&2
      exit 1
    fi
  else
    race_pkgs+=("$pkg")
  fi
done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./...)
echo "${#race_pkgs[@]} packages"
go test -race -short -count=1 "${race_pkgs[@]}"

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

# The container tests mostly wait on containers (systemd, elections,
# rounds): they run in the background while the reproducibility check and
# the fuzz targets use the CPU. Their output is printed whole when they
# end (or when a foreground step fails: the run waits for them, so that
# they tear down what they made), and their failure fails the run.
containers_log="$(mktemp)"
(
  set -e
  step "gateway packages: install, start, upgrade with a pending update, remove, purge, under systemd in a debootstrap root file system (deploy/packaging/test.sh; in the background)"
  deploy/packaging/test.sh
  step "compose testbed: a job, the leader's container killed mid-round, an agent's network cut and restored, up -d again (deploy/compose/test.sh; in the background)"
  if command -v docker >/dev/null || [ -n "${COHORT_REQUIRE_DOCKER:-}" ]; then
    deploy/compose/test.sh
  else
    echo "skipped: no Docker on this machine (CI requires it)"
  fi
) >"$containers_log" 2>&1 &
containers_pid=$!
trap 'wait "$containers_pid" 2>/dev/null; printf "\n== the container tests (background), which had started at the release step:\n"; cat "$containers_log"' EXIT

step "reproducible builds: a rebuild elsewhere with an empty build cache gives the same bytes (scripts/repro.sh)"
scripts/repro.sh "$(mktemp -d)"

step "fuzz targets (-fuzztime ${FUZZTIME} each)"
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

step "container tests (gateway packages, compose testbed), run in the background since the release step"
finish "$containers_pid" "$containers_log" "the container tests"

echo
echo "all checks passed"
