#!/usr/bin/env bash
# Writes docs/licenses.md, the licence of every module compiled into the
# cohort binary (scripts/licenses/main.go says how they are found and
# classified), and fails when a licence is unknown or denied (GPL, LGPL,
# AGPL: scripts/licenses/main.go's exceptions allow a module, with the
# reason).
#
# Usage: scripts/licenses.sh           write docs/licenses.md
#        scripts/licenses.sh --check   fail if docs/licenses.md is out of
#                                      date (CI: scripts/static-analysis.sh)
# Needs the build list's modules in the module cache (a build has put them
# there; otherwise `go mod download` fetches them from the module proxy).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in
--check) exec go run ./scripts/licenses -check -o docs/licenses.md ;;
"") exec go run ./scripts/licenses -o docs/licenses.md ;;
*) echo "usage: scripts/licenses.sh [--check]" >&2; exit 2 ;;
esac
