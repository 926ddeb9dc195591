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
  go test -run '^$' -bench 'LeaderFailover' -benchtime 1x -count 1 ./sim/
  go test -run '^$' -bench 'ModelReplication' -benchtime 5x -count 3 ./coordinator/
  go test -run '^$' -bench 'IngestNDJSON|DecodeJSONBaseline' -benchtime 3x -count 3 ./agent/fhir/
  go test -run '^$' -bench 'IngestEncrypted' -benchtime 3x -count 3 ./agent/store/
  go test -run '^$' -bench 'StoreMemory' -benchtime 1x -count 1 ./agent/store/
  go test -run '^$' -bench 'MosquittoPubSub|MosquittoEndToEnd/sink=store/paho=(sealed|memory)$' -benchtime 5x -count 3 ./agent/device/
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

echo
echo "## Leader killed mid-round (3 coordinators, 3 sites of 100 patients; 20 trials, each a fresh cluster)"
echo
awk '
  /^BenchmarkLeaderFailover/ { for (i=1;i<=NF;i++) v[$(i+1)]=$i }
  END {
    printf "| measure | median | max |\n|---|---|---|\n"
    printf "| kill to a new leader ready (elected, barrier passed, node-info applied) | %.0f ms | %.0f ms |\n", v["failover-median-ms"], v["failover-max-ms"]
    printf "| kill to the interrupted round committed under the new leader | %.0f ms | %.0f ms |\n", v["resume-median-ms"], v["resume-max-ms"]
    printf "\n| round | median | ratio |\n|---|---|---|\n"
    printf "| a round without a kill: the baseline | %.1f ms | 1 |\n", v["round-normal-median-ms"]
    printf "| the round in which the leader was killed | %.0f ms | %.0f |\n", v["round-with-kill-median-ms"], v["ratio"]
  }' "$out"
echo
echo "## Model replication before a commit (64 MiB model, 3 coordinators on loopback; best of 3)"
echo
awk '
  /^BenchmarkModelReplication\/cohort/ { if ($5>c) c=$5 }
  /^BenchmarkModelReplication\/tls-baseline/ { if ($5>b) b=$5 }
  END {
    printf "| path | MB/s | ratio |\n|---|---|---|\n"
    printf "| plain TLS 1.3 copy to 2 receivers that discard the bytes: the baseline | %.0f | 1 |\n", b
    printf "| store on the leader and replicate to a majority (hash, write, fsync on every node) | %.0f | %.2f |\n", c, c/b
  }' "$out"
echo
echo "## FHIR NDJSON ingest (Synthea Observation.ndjson, in memory; best of 3)"
echo
echo "| path | resources/s | ratio to plain JSON decoding |"
echo "|---|---|---|"
awk '
  function best(name, v) { if (v > r[name]) r[name] = v }
  /^BenchmarkDecodeJSONBaseline/ { for (i=1;i<=NF;i++) if ($(i+1)=="resources/s") best("decode", $i) }
  /^BenchmarkIngestNDJSON/       { for (i=1;i<=NF;i++) if ($(i+1)=="resources/s") best("parse", $i) }
  /^BenchmarkIngestEncrypted/    { for (i=1;i<=NF;i++) if ($(i+1)=="resources/s") best("store", $i) }
  END {
    printf "| plain JSON decoding of each line (json.Unmarshal into a map): the baseline | %.0f | 1.00 |\n", r["decode"], 1
    printf "| FHIR parse, validate, normalize units (agent/fhir) | %.0f | %.2f |\n", r["parse"], r["parse"]/r["decode"]
    printf "| the same, pseudonymized and sealed into the encrypted store (agent/store, fsync per 1,000) | %.0f | %.2f |\n", r["store"], r["store"]/r["decode"]
  }' "$out"
echo
echo "## MQTT device telemetry, end to end (5,000 readings of ~117 bytes per run; best of 3)"
echo
echo "| path | readings/s | ratio to Mosquitto pub/sub |"
echo "|---|---|---|"
awk '
  function best(name, v) { if (v > r[name]) r[name] = v }
  /^BenchmarkMosquittoPubSub/ { for (i=1;i<=NF;i++) if ($(i+1)=="msgs/s") best("pubsub", $i) }
  /^BenchmarkMosquittoEndToEnd\/sink=store\/paho=sealed-/ { for (i=1;i<=NF;i++) if ($(i+1)=="msgs/s") best("sealed", $i) }
  /^BenchmarkMosquittoEndToEnd\/sink=store\/paho=memory-/ { for (i=1;i<=NF;i++) if ($(i+1)=="msgs/s") best("memory", $i) }
  END {
    printf "| Mosquitto publish to a plain paho subscriber that only counts: the baseline | %.0f | 1.00 |\n", r["pubsub"]
    printf "| into the encrypted store, in-flight messages in the sealed file store (the agent default) | %.0f | %.2f |\n", r["sealed"], r["sealed"]/r["pubsub"]
    printf "| into the encrypted store, in-flight messages in memory | %.0f | %.2f |\n", r["memory"], r["memory"]/r["pubsub"]
  }' "$out"
echo
echo "## Encrypted store size (200,000 synthetic observations)"
echo
awk '
  /^BenchmarkStoreMemory/ { for (i=1;i<=NF;i++) { if ($(i+1)=="heap-B/obs") h=$i; if ($(i+1)=="file-B/obs") f=$i } }
  END {
    printf "| per observation | per million observations |\n|---|---|\n"
    printf "| heap %.0f B | heap %.0f MiB |\n", h, h*1e6/1048576
    printf "| file %.0f B | file %.0f MiB |\n", f, f*1e6/1048576
  }' "$out"
