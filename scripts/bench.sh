#!/usr/bin/env bash
# Runs Cohort's benchmarks and prints each figure with its ratio against a
# baseline measured in the same run (the machine is shared and noisy, so
# only same-run ratios are comparable). Usage: scripts/bench.sh [outfile]
# Raw `go test -bench` output goes to the outfile (default bench.out);
# BENCH_REUSE=1 re-reads an existing outfile instead of running again.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench.out}"
if [ "${BENCH_REUSE:-}" != 1 ]; then
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(go version) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  go test -run '^$' -bench 'FedAvgAddPacked|MemoryBandwidth' -benchtime 1s -count 3 ./aggregator/
  go test -run '^$' -bench 'RoundLatency' -benchtime 20x -count 1 ./sim/
} > "$out"
fi

echo "## FedAvg aggregation throughput (MB/s of update data; best of 3)"
echo
echo "| params | FedAvg AddPacked | read loop, 8 accumulators | ratio | read loop, 1 accumulator | ratio |"
echo "|---|---|---|---|---|---|"
awk '
  /^BenchmarkFedAvgAddPacked\/params=/ { split($1,a,"[=-]"); p=a[2]; if ($5>f[p]) f[p]=$5 }
  /^BenchmarkMemoryBandwidth\/unrolled8\/params=/ { split($1,a,"[=-]"); p=a[2]; if ($5>u[p]) u[p]=$5 }
  /^BenchmarkMemoryBandwidth\/plain\/params=/ { split($1,a,"[=-]"); p=a[2]; if ($5>m[p]) m[p]=$5 }
  END { for (p in f) printf "%d | %.0f | %.0f | %.2f | %.0f | %.2f |\n", p, f[p], u[p], f[p]/u[p], m[p], f[p]/m[p] }
' "$out" | sort -n | sed 's/^/| /'
echo
echo "## Round latency against the number of sites (3 coordinators, 200 patients per site, 20 rounds)"
echo
echo "| sites | ms per round | ratio to 1 site | agent bytes per round per site |"
echo "|---|---|---|---|"
awk '
  /^BenchmarkRoundLatency\/sites=/ { split($1,a,"[=-]"); s=a[2]; ns[s]=$3; by[s]=$5 }
  END { for (s in ns) printf "%d | %.1f | %.2f | %.0f |\n", s, ns[s]/1e6, ns[s]/ns[1], by[s] }
' "$out" | sort -n | sed 's/^/| /'
