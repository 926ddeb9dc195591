#!/usr/bin/env bash
# Cohort's test command (README, and .ci/run in CI). On a fresh Debian
# machine it installs what the tests need, then runs every check:
# formatting, vet, staticcheck, module verification, the full test suite
# with the race detector, and a short run of every fuzz target.
#
# Needs: Go 1.26 and, for the real-data tests, ../shared/data (CI has it;
# elsewhere those tests skip and say so).
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12   # = google.golang.org/protobuf in go.mod
STATICCHECK_VERSION=v0.8.2
FUZZTIME="${FUZZTIME:-5s}"
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "tools"
if ! command -v protoc >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq protobuf-compiler >/dev/null
fi
protoc --version
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

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

step "go mod verify"
go mod verify

step "tests (race detector)"
go test -race -count=1 ./...

step "fuzz targets (${FUZZTIME} each)"
fuzz() { go test -run '^$' -fuzz "^$1\$" -fuzztime "$FUZZTIME" "$2" 2>&1 | tail -1; }
fuzz FuzzReadFrame ./protocol
fuzz FuzzParseResource ./agent/fhir
fuzz FuzzReadNDJSON ./agent/fhir
fuzz FuzzAddPacked ./aggregator

echo
echo "all checks passed"
