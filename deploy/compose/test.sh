#!/usr/bin/env bash
# CI driver of the compose testbed: runs TestComposeTestbed
# (compose_test.go) on docker-compose.yml, the file users run, under a
# project name and image tag of its own (cohortci-XXXXXXXX, ci-XXXXXXXX).
#
# The test builds the images with deploy/build-image.sh, brings the testbed
# up with `docker-compose up -d`, runs a job to completion, kills the leader
# in the middle of a second job's round and sees the job finish, cuts one
# agent off the network until the coordinators see it offline, connects it
# again and sees it contribute to a third job. It prints each step with its
# timing, and the last log lines of every service if it fails.
#
# Whatever happens (failure, Ctrl-C), the project is torn down with
# `docker-compose down -v --remove-orphans` and the image tags are removed:
# by the test itself, and again by this script's trap in case the test
# process was killed. Safe to run repeatedly and next to other Docker work.
#
# Usage: deploy/compose/test.sh     (needs Go, Docker and docker-compose)
# About 2 minutes on 2 cores once the Go build cache is warm.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

for tool in go docker docker-compose; do
	command -v "$tool" >/dev/null || { echo "test.sh: $tool is not on PATH" >&2; exit 1; }
done

suffix="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
export COHORT_COMPOSE_TEST=1
export COHORT_COMPOSE_PROJECT="cohortci-$suffix"
export COHORT_COMPOSE_TAG="ci-$suffix"

cleanup() {
	local rc=$?
	docker-compose -p "$COHORT_COMPOSE_PROJECT" -f deploy/compose/docker-compose.yml \
		down -v --remove-orphans >/dev/null 2>&1 || true
	for image in cohort cohort-coordinator cohort-agent; do
		docker image rm "$image:$COHORT_COMPOSE_TAG" >/dev/null 2>&1 || true
	done
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

began=$SECONDS
echo "test.sh: compose project $COHORT_COMPOSE_PROJECT, images *:$COHORT_COMPOSE_TAG"
go test -count=1 -timeout 15m -run '^TestComposeTestbed$' -v ./deploy/compose/
echo "test.sh: compose testbed passed in $((SECONDS - began))s"
