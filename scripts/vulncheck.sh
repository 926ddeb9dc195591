#!/usr/bin/env bash
# Runs govulncheck on Cohort against an offline copy of the Go
# vulnerability database: vuln.go.dev is not reachable from CI, but the Go
# module proxy is, and it serves golang.org/x/vulndb, the repository the
# database is generated from, with every report as OSV JSON (data/osv).
#
#   1. go mod download golang.org/x/vulndb@VULNDB_VERSION (into the module
#      cache, outside Cohort's module: go.mod is not touched)
#   2. scripts/vulndb turns its data/osv into the database layout
#      govulncheck reads from a directory (index/db.json,
#      index/modules.json, ID/GO-YYYY-NNNN.json)
#   3. govulncheck -db file://DIR ./...   (source mode: reports only the
#      vulnerabilities whose code Cohort's code can reach)
#
# The data is as fresh as VULNDB_VERSION, a pseudo-version whose time stamp
# is the vulndb commit's. docs/security-tooling.md says how to update it.
#
# Usage: scripts/vulncheck.sh [govulncheck arguments]
#   e.g. scripts/vulncheck.sh -mode=binary dist/cohort_0.2.0_linux_amd64/cohort
# Without arguments (CI): source mode on ./..., and it exits non-zero when a
# reachable vulnerability is neither fixed nor listed, with a reason and an
# expiry date, in scripts/vulncheck-exceptions.txt (scripts/vulnfilter).
#
# Environment:
#   VULNDB_VERSION  golang.org/x/vulndb version (default: pinned below)
#   VULNDB_DIR      build the database here and keep it (default: a
#                   temporary directory, removed afterwards)
#
# govulncheck v1.9.0 is installed with `go install` into $(go env GOPATH)/bin
# when that version is not there.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

GOVULNCHECK_VERSION=v1.9.0
VULNDB_VERSION="${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}"

tool="$(go env GOPATH)/bin/govulncheck"
if ! go version -m "$tool" 2>/dev/null | grep -q "mod[[:space:]]*golang.org/x/vuln[[:space:]]*${GOVULNCHECK_VERSION}[[:space:]]"; then
	echo "vulncheck: installing govulncheck ${GOVULNCHECK_VERSION}" >&2
	GOFLAGS= go install "golang.org/x/vuln/cmd/govulncheck@${GOVULNCHECK_VERSION}"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/cohort-vulncheck.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
db="${VULNDB_DIR:-$tmp/db}"

# Outside the module, so that go.mod and go.sum stay as they are.
meta="$(cd "$tmp" && GOFLAGS= GO111MODULE=on go mod download -json "golang.org/x/vulndb@${VULNDB_VERSION}")"
src="$(printf '%s\n' "$meta" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
info="$(printf '%s\n' "$meta" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",\{0,1\}$/\1/p')"
if [ -z "$src" ] || [ -z "$info" ]; then
	echo "vulncheck: go mod download golang.org/x/vulndb@${VULNDB_VERSION} failed:" >&2
	printf '%s\n' "$meta" >&2
	exit 1
fi
modified="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")"
go run ./scripts/vulndb -src "$src" -modified "$modified" -o "$db" >&2

echo "vulncheck: govulncheck ${GOVULNCHECK_VERSION}, golang.org/x/vulndb@${VULNDB_VERSION} (data as of ${modified})" >&2
if [ "$#" -gt 0 ]; then
	exec "$tool" -db "file://$db" "$@"
fi
# The default (CI): every reachable vulnerability must be fixed or carry a
# justified, dated exception in scripts/vulncheck-exceptions.txt.
"$tool" -db "file://$db" -format json ./... >"$tmp/findings.json"
go run ./scripts/vulnfilter -exceptions scripts/vulncheck-exceptions.txt <"$tmp/findings.json"
