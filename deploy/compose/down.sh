#!/usr/bin/env bash
# Tears the Cohort compose testbed down: its containers, its network and all
# its volumes (certificates, the coordinators' Raft state, the agents'
# encrypted stores, the generated site data), and the copies of the CA
# certificate and admin token that up.sh made in .local/PROJECT. The images
# stay (remove them with `docker image rm cohort:dev cohort-coordinator:dev
# cohort-agent:dev`).
#
# Usage: deploy/compose/down.sh
# Environment: COMPOSE_PROJECT_NAME (default cohort, from .env).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if command -v docker-compose >/dev/null 2>&1; then
	dc() { docker-compose "$@"; }
elif docker compose version >/dev/null 2>&1; then
	dc() { docker compose "$@"; }
else
	echo "down.sh: needs docker-compose (1.29 or later) or the docker compose plugin" >&2
	exit 1
fi

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-cohort}"
# --remove-orphans also removes leftover `docker-compose run` containers.
dc down -v --remove-orphans
rm -rf "$here/.local/$COMPOSE_PROJECT_NAME"
rmdir "$here/.local" 2>/dev/null || true
echo "testbed $COMPOSE_PROJECT_NAME removed"
