#!/usr/bin/env bash
# Brings up the Cohort compose testbed (docker-compose.yml next to this
# script): builds the images with deploy/build-image.sh, starts the project,
# waits until the three coordinators agree on a leader and the three agents
# are healthy, copies the CA certificate and the bootstrap admin token out of
# the pki volume, and prints how to reach the admin API and the dashboard.
#
# Usage: deploy/compose/up.sh [--no-build] [--down]
#   --no-build  use the images already built (cohort:$COHORT_TAG,
#               cohort-coordinator:..., cohort-agent:...)
#   --down      tear the testbed down instead, volumes included (down.sh)
#
# Environment: COMPOSE_PROJECT_NAME (default cohort, from .env), COHORT_TAG
# (default dev), and the port variables listed in docker-compose.yml.
#
# Run it again to start a stopped testbed (so does a bare `docker-compose
# up -d`): the one-shot init services run again and keep the CA, the keys,
# the admin token and the site data they made the first time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

build=1
for arg in "$@"; do
	case "$arg" in
	--no-build) build=0 ;;
	--down) exec "$here/down.sh" ;;
	-h | --help) sed -n '2,19p' "$here/up.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "up.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
	esac
done

if command -v docker-compose >/dev/null 2>&1; then
	dcname=docker-compose
	dc() { docker-compose "$@"; }
elif docker compose version >/dev/null 2>&1; then
	dcname="docker compose"
	dc() { docker compose "$@"; }
else
	echo "up.sh: needs docker-compose (1.29 or later) or the docker compose plugin" >&2
	exit 1
fi

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-cohort}"
export COHORT_TAG="${COHORT_TAG:-dev}"
project="$COMPOSE_PROJECT_NAME"
coordinators=(c1 c2 c3)
agents=(community academic geriatric)
began=$SECONDS
say() { printf '[%3ds] %s\n' "$((SECONDS - began))" "$*"; }

# The config files are bind-mounted and read by uid 65532.
for f in config/*.json jobs/*.json; do
	if [ "$(stat -c %A "$f" | cut -c8)" != r ]; then
		echo "up.sh: $here/$f must be readable by others (uid 65532 reads it): chmod a+r $f" >&2
		exit 1
	fi
done

if [ "$build" = 1 ]; then
	say "building cohort:$COHORT_TAG, cohort-coordinator:$COHORT_TAG and cohort-agent:$COHORT_TAG"
	"$repo/deploy/build-image.sh" "cohort:$COHORT_TAG" >/dev/null
fi

# container SERVICE prints the id of the service's container (found by the
# labels compose sets, which is much faster than `docker-compose ps`).
container() {
	docker ps -aq --filter "label=com.docker.compose.project=$project" \
		--filter "label=com.docker.compose.service=$1" --filter "label=com.docker.compose.oneoff=False" | head -1
}

# health SERVICE prints the health of the service's container, or
# "missing" when there is none.
health() {
	local id
	id="$(container "$1")"
	if [ -z "$id" ]; then
		echo missing
		return
	fi
	docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo missing
}

# wait_healthy TIMEOUT SERVICE... waits until every service is healthy.
wait_healthy() {
	local timeout=$1 s states
	shift
	local deadline=$((SECONDS + timeout))
	while :; do
		states=""
		local ok=1
		for s in "$@"; do
			local h
			h="$(health "$s")"
			states="$states $s=$h"
			[ "$h" = healthy ] || ok=0
		done
		[ "$ok" = 1 ] && return 0
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "up.sh: not healthy after ${timeout}s:$states" >&2
			echo "up.sh: see 'docker-compose -p $project logs --tail 50 SERVICE' (README.md, Troubleshooting)" >&2
			return 1
		fi
		sleep 2
	done
}

if docker volume inspect "${project}_pki" >/dev/null 2>&1; then
	say "project $project exists: starting it (the init services keep what they made)"
else
	say "creating project $project: certificates, admin token and site data, then the coordinators and agents"
fi
# depends_on makes this wait for the init services and for healthy
# coordinators before it starts the agents.
dc up -d
say "waiting for every coordinator and agent to be healthy"
wait_healthy 120 "${coordinators[@]}" "${agents[@]}"

say "cluster:"
dc run --rm -T admin cluster

# Copy what an operator needs out of the pki volume, owner-only.
out="$here/.local/$project"
mkdir -p "$out"
chmod 0700 "$here/.local" "$out"
c1="$(container c1)"
rm -f "$out/ca.crt" "$out/admin.token"
docker cp "$c1:/etc/cohort/ca/ca.crt" "$out/ca.crt"
(umask 077 && docker cp "$c1:/etc/cohort/bootstrap-admin.token" - | tar -xO >"$out/admin.token")
chmod 0600 "$out/admin.token"

# hostport SERVICE PORT prints the host address published for the port.
hostport() { docker port "$(container "$1")" "$2/tcp" 2>/dev/null | head -1; }
# The commands below need this project name when it is not .env's.
env=""
[ "$project" = cohort ] || env="COMPOSE_PROJECT_NAME=$project "
admin1="$(hostport c1 7443)" admin2="$(hostport c2 7443)" admin3="$(hostport c3 7443)"
status1="$(hostport c1 7402)" status2="$(hostport c2 7402)" status3="$(hostport c3 7402)"
rel="${out#"$repo"/}"

cat <<EOF

Cohort testbed "$project" is up in $((SECONDS - began))s: coordinators c1 c2 c3, agents ${agents[*]}.

Dashboard      https://$admin1/ui/   (also c2 https://$admin2/ui/, c3 https://$admin3/ui/)
               Sign in with the token in $rel/admin.token
               (the admin "bootstrap-admin", valid 30 days). The certificate is
               signed by the testbed's own CA, $rel/ca.crt:
               your browser warns until you trust it.
Admin API      curl --cacert $rel/ca.crt -H "Authorization: Bearer \$(cat $rel/admin.token)" https://$admin1/v1/jobs
Status         http://$status1/v1/status   (no authentication; c2 $status2, c3 $status3)

The admin CLI, in deploy/compose (any coordinator will do: --server https://c2:7443):
  ${env}$dcname run --rm admin cluster
  ${env}$dcname run --rm admin sites
  ${env}$dcname run --rm -T admin jobs create -f - < jobs/sepsis-risk.json
  ${env}$dcname run --rm admin jobs show sepsis-risk
or with cohort on this host:
  export COHORT_SERVER=https://$admin1 COHORT_CA=$out/ca.crt COHORT_TOKEN_FILE=$out/admin.token
  cohort admin jobs

Logs:       ${env}$dcname logs -f c1 community
Tear down:  ${env}deploy/compose/down.sh   (removes the containers and every volume)
EOF
