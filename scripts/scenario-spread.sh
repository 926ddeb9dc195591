#!/usr/bin/env bash
# Runs one scenario N times (default 30) and prints the final AUROC of
# each run, sorted, then the minimum, mean, standard deviation and
# maximum: how far a scenario's min_auroc floor sits from what the
# scenario gives. Scenarios with differential privacy draw their noise
# from a secure random source, so their seed does not fix their result.
#
#   scripts/scenario-spread.sh scenarios/secagg-dp.yaml 30
set -euo pipefail
scenario=${1:?usage: scripts/scenario-spread.sh SCENARIO.yaml [RUNS]}
runs=${2:-30}
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
CGO_ENABLED=0 go build -o "$bin/cohort" ./cmd/cohort
for i in $(seq 1 "$runs"); do
  auroc=$("$bin/cohort" sim --scenario "$scenario" 2>&1 | awk '/final AUROC/ {print $NF}') || true
  echo "run $i/$runs: ${auroc:-no result}" >&2
  [ -n "$auroc" ] && echo "$auroc" >> "$bin/aurocs"
done
sort -n "$bin/aurocs" | tr '\n' ' '; echo
awk '{s+=$1; q+=$1*$1; if(NR==1||$1<lo)lo=$1; if($1>hi)hi=$1} END {m=s/NR; printf "runs %d  min %.4f  mean %.4f  sd %.4f  max %.4f\n", NR, lo, m, sqrt(q/NR-m*m), hi}' "$bin/aurocs"
