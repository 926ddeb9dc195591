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
. scripts/deps.sh   # Mosquitto for the device benchmarks
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(go version) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  go test -run '^$' -bench 'FedAvgAddPacked|MemoryBandwidth' -benchtime 1s -count 3 -cpu 1,2 ./aggregator/
  go test -run '^$' -bench 'FedAvgConcurrent' -benchtime 1s -count 3 -cpu 2 ./aggregator/
  go test -run '^$' -bench 'Robust' -benchtime 3x -count 3 ./aggregator/
  go test -run '^$' -bench 'FedAvgMemory' -benchtime 2x -count 1 ./aggregator/
  go test -run '^$' -bench 'RoundLatency' -benchtime 20x -count 1 ./sim/
  go test -run '^$' -bench 'SecAggRound' -benchtime 5x -count 1 ./sim/
  go test -run '^$' -bench 'LeaderFailover' -benchtime 1x -count 1 ./sim/
  go test -run '^$' -bench 'ModelReplication' -benchtime 5x -count 3 ./coordinator/
  go test -run '^$' -bench 'IngestNDJSON|DecodeJSONBaseline' -benchtime 3x -count 3 ./agent/fhir/
  go test -run '^$' -bench 'IngestEncrypted' -benchtime 3x -count 3 ./agent/store/
  go test -run '^$' -bench 'StoreMemory' -benchtime 1x -count 1 ./agent/store/
  go test -run '^$' -bench 'MosquittoPubSub|MosquittoEndToEnd/sink=store/paho=(sealed|memory)$' -benchtime 5x -count 3 ./agent/device/
  go test -run '^$' -bench 'FoldKernel' -benchtime 1s -count 3 ./aggregator/
  go test -run '^$' -bench 'LogRegTrain|MLPTrain|MLPPredict' -benchtime 3x -count 3 ./agent/train/
  go test -run '^$' -bench 'PahoStore' -benchtime 5x -count 3 ./agent/device/
  go test -run '^$' -bench 'BenchmarkPredict$' -benchtime 5000x -count 1 ./agent/
  # Testbed scale: whole `cohort sim` runs, each next to a 10-site run of
  # the same sites and model as its baseline. Each prints one "SCALE" line.
  bin="$(mktemp -d)/cohort"
  go build -o "$bin" ./cmd/cohort
  scale() {
    local name=$1; shift
    CI=1 "$bin" sim --log-level off --test-patients 1000 --patients-per-site 40 --round-timeout 15m "$@" |
      awk -v n="$name" '/^rounds [0-9]+, bytes sent by agents/ { gsub(",",""); print "SCALE", n, "rounds=" $2, "bytes=" $7, "wall=" $12, "heap_mib=" $15 }'
  }
  scale logreg-10 --sites 10 --rounds 3
  scale logreg-1000 --sites 1000 --rounds 3
  scale mlp1m-10 --sites 10 --rounds 2 --model mlp --hidden 1000,1000 --local-epochs 1 --batch-size 0
  scale mlp1m-100 --sites 100 --rounds 2 --model mlp --hidden 1000,1000 --local-epochs 1 --batch-size 0
} > "$out"
fi

echo "## FedAvg aggregation throughput (MB/s of update data, updates read from memory; best of 3)"
echo
echo "Updates per call: 1 is \`AddPacked\` of one update at a time (\`BenchmarkFedAvgAddPacked\`); more is \`AddPackedBatch\` of that many (\`BenchmarkFedAvgAddPackedBatch\`), as the coordinator folds a round's bodies."
echo
echo "| params | updates per call | FedAvg, 1 core | FedAvg, 2 cores | 2 cores / 1 core | ratio to memory read, 1 core | ratio to memory read, 2 cores | ratio to memory read with 2 readers, 2 cores |"
echo "|---|---|---|---|---|---|---|---|"
awk '
  /^BenchmarkFedAvgAddPacked\/params=/ { n=split($1,a,"[=-]"); k=a[2] " | 1"; c=(n>2)?a[3]:1; if ($5>f[k,c]) f[k,c]=$5; ks[k]=1 }
  /^BenchmarkFedAvgAddPackedBatch\/params=/ { n=split($1,a,"[=/-]"); k=a[3] " | " a[5]; c=(n>5)?a[6]:1; if ($5>f[k,c]) f[k,c]=$5; ks[k]=1 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=1/ { if ($5>m1) m1=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=2-2/ { if ($5>m2) m2=$5 }
  END { for (k in ks) printf "%s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |\n", k, f[k,1], f[k,2], f[k,2]/f[k,1], f[k,1]/m1, f[k,2]/m1, f[k,2]/m2 }
' "$out" | sort -t'|' -k1,1n -k2,2n | sed 's/^/| /'
echo
awk '
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=1/ { if ($5>m1) m1=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=2-2/ { if ($5>m2) m2=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=4MiB\/readers=1/ { if ($5>c1) c1=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/loop=float32/ { if ($5>f1) f1=$5 }
  END {
    printf "| memory read | MB/s | ratio |\n|---|---|---|\n"
    printf "| 128 MiB (more than the share of the last-level cache this VM gets) summed as uint64 with 8 accumulators, 1 core: the baseline | %.0f | 1.00 |\n", m1
    printf "| the same, split across 2 cores | %.0f | %.2f |\n", m2, m2/m1
    printf "| the same loop over 4 MiB, in cache (what a cache-sized baseline would claim) | %.0f | %.2f |\n", c1, c1/m1
    printf "| 128 MiB summed as float32 with 8 accumulators (the previous baseline loop; the float adder limits it) | %.0f | %.2f |\n", f1, f1/m1
  }' "$out"
echo
echo "## FedAvg with concurrent adds (one goroutine per core adding single updates, each into its own shard, as the coordinator did before it passed batches; best of 3)"
echo
echo "| params | FedAvg, 2 concurrent adders | ratio to memory read, 1 core | ratio to memory read with 2 readers |"
echo "|---|---|---|---|"
awk '
  /^BenchmarkFedAvgConcurrent\/params=/ { split($1,a,"[=-]"); p=a[2]; if ($5>f[p]) f[p]=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=1/ { if ($5>m1) m1=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=2-2/ { if ($5>m2) m2=$5 }
  END { for (p in f) printf "%d | %.0f | %.2f | %.2f |\n", p, f[p], f[p]/m1, f[p]/m2 }
' "$out" | sort -n | sed 's/^/| /'
echo
echo "## Robust aggregation throughput (whole rounds of 100,000-parameter updates; MB/s of update data; best of 3)"
echo
echo "| rule | sites | MB/s | ratio to memory read, 1 core | ratio to FedAvg, 1 core |"
echo "|---|---|---|---|---|"
awk '
  /^BenchmarkRobust\/rule=/ { split($1,a,"[=/-]"); k=a[3] " | " a[5]; if ($5>r[k]) r[k]=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=1/ { if ($5>m1) m1=$5 }
  /^BenchmarkFedAvgAddPacked\/params=100000[ \t]/ { if ($5>fa) fa=$5 }
  END { for (k in r) printf "%s | %.0f | %.3f | %.3f |\n", k, r[k], r[k]/m1, r[k]/fa }
' "$out" | sort -t'|' -k1,1 -k2n | sed 's/^/| /'
echo
echo "## Streaming FedAvg memory per round (1,000,000-parameter model, 4 MB updates)"
echo
echo "| updates per round | updates per call | peak heap growth | allocated per round | ratio to 10 updates (peak) |"
echo "|---|---|---|---|---|"
awk '
  /^BenchmarkFedAvgMemory\/updates=/ { n=split($1,a,"[=/-]"); u=a[3]; k=(a[6]=="batch")?a[7]:1; ks[k]=1; for (i=1;i<=NF;i++) { if ($(i+1)=="peak-heap-B") pk[u,k]=$i; if ($(i+1)=="B/op") al[u,k]=$i } us[u]=1 }
  END { for (u in us) for (k in ks) if ((u,k) in pk) printf "%d | %d | %.1f MiB | %.1f MiB | %.2f |\n", u, k, pk[u,k]/1048576, al[u,k]/1048576, pk[u,k]/pk[10,k] }
' "$out" | sort -t'|' -k2,2n -k1,1n | sed 's/^/| /'
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
echo "## Secure aggregation: what it costs a round (3 coordinators, 50 patients per site, logistic regression, 5 rounds)"
echo
echo "| sites | aggregation | ms per round | ratio to FedAvg | agent bytes per site per round | ratio to FedAvg |"
echo "|---|---|---|---|---|---|"
awk '
  /^BenchmarkSecAggRound\/sites=/ { split($1,a,"[=/]"); s=a[3]; m=a[5]; sub(/-[0-9]+$/,"",m); ns[s,m]=$3; by[s,m]=$5; ss[s]=1 }
  END {
    name["plain"]="FedAvg (baseline)"; name["secagg"]="secure aggregation, full graph"; name["secagg+"]="SecAgg+, k = 2⌈log₂ n⌉"
    for (s in ss) for (i=1;i<=3;i++) { m=(i==1)?"plain":(i==2)?"secagg":"secagg+"; if ((s,m) in ns) printf "%d | %s | %.1f | %.2f | %.0f | %.2f |\n", s, name[m], ns[s,m]/1e6, ns[s,m]/ns[s,"plain"], by[s,m], by[s,m]/by[s,"plain"] }
  }
' "$out" | sort -t'|' -k1,1n -s | sed 's/^/| /'

echo "## Local inference on the agent (one client; 9 features; MLP 9-32-16-1)"
echo
echo "| model | path | p50 µs | p99 µs | predictions per second | p50 ratio to the bare model |"
echo "|---|---|---|---|---|---|"
awk '
  /^BenchmarkPredict\/model=/ { split($1,a,"[=/]"); m=a[3]; p=a[5]; sub(/-[0-9]+$/,"",p); ns[m,p]=$3; for (i=1;i<=NF;i++) { if ($(i+1)=="p50-ns") p50[m,p]=$i; if ($(i+1)=="p99-ns") p99[m,p]=$i }; ms[m]=1 }
  END { for (m in ms) for (i=1;i<=3;i++) { p=(i==1)?"bare":(i==2)?"predict":"http"; if ((m,p) in ns) printf "%s | %s | %.1f | %.1f | %.0f | %.1f |\n", m, p, p50[m,p]/1000, p99[m,p]/1000, 1e9/ns[m,p], p50[m,p]/p50[m,"bare"] } }
' "$out" | sed 's/^/| /'

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
echo
echo "## FedAvg fold kernel alone (update and sum in L1; MB/s of update data; best of 3)"
echo
echo "| path | MB/s | ratio to memory read, 1 core |"
echo "|---|---|---|"
awk '
  /^BenchmarkFoldKernel\/path=/ { split($1,a,"[=-]"); p=a[2]; if ($5>k[p]) k[p]=$5 }
  /^BenchmarkMemoryBandwidth\/bytes=128MiB\/readers=1/ { if ($5>m1) m1=$5 }
  END {
    printf "| validate and fold in one pass into the spare sum (models up to 640K parameters) | %.0f | %.2f |\n", k["fused"], k["fused"]/m1
    printf "| validate, then fold in place (larger models) | %.0f | %.2f |\n", k["two"], k["two"]/m1
  }' "$out"
echo
echo "## Local training (1,000 rows, 10 features, one epoch; rows per second; best of 3)"
echo
echo "| model | options | rows/s | ratio to logistic regression, batch 32 |"
echo "|---|---|---|---|"
awk '
  /^Benchmark(LogRegTrain|MLPTrain)\// { split($1,a,"/"); m=(a[1]=="BenchmarkLogRegTrain")?"logistic regression":"MLP 10-32-16-1"; o=$1; sub("^[^/]*/","",o); sub("-[0-9]+$","",o); for (i=1;i<=NF;i++) if ($(i+1)=="rows/s" && $i>r[m " | " o]) r[m " | " o]=$i }
  /^BenchmarkMLPPredict/ { for (i=1;i<=NF;i++) if ($(i+1)=="rows/s" && $i>r["MLP 10-32-16-1 | predict (forward pass only)"]) r["MLP 10-32-16-1 | predict (forward pass only)"]=$i }
  END { base=r["logistic regression | batch=32"]; for (k in r) printf "%s | %.0f | %.2f |\n", k, r[k], r[k]/base }
' "$out" | sort | sed 's/^/| /'
echo
echo "## MQTT in-flight message stores (a Put and a Del per operation; best of 3)"
echo
echo "| store | operations/s | ratio to paho's memory store |"
echo "|---|---|---|"
awk '
  /^BenchmarkPahoStore\// { n=$1; sub("^[^/]*/","",n); sub("-[0-9]+$","",n); v=1e9/$3; if (v>r[n]) r[n]=v }
  END { for (k in r) printf "%s | %.0f | %.3f |\n", k, r[k], r[k]/r["memory"] }
' "$out" | sort | sed 's/^/| /'
echo
echo "## Testbed scale (\`cohort sim\`, in-process: 3 coordinators, every site an agent with 40 synthetic patients, real QUIC and Raft)"
echo
echo "| run | sites | rounds | wall | per site-round | ratio to the 10-site run | peak Go heap | heap per site | agent bytes per round |"
echo "|---|---|---|---|---|---|---|---|---|"
awk '
  /^SCALE/ { n=$2; for (i=3;i<=NF;i++) { split($i,kv,"="); v[n,kv[1]]=kv[2] } names[n]=1 }
  function row(n, sites, base, model,   w, r, per, bper) {
    if (!((n,"wall") in v)) return
    w=v[n,"wall"]; sub("s$","",w); r=v[n,"rounds"]; per=w/(sites*r)
    bw=v[base,"wall"]; sub("s$","",bw); bper=bw/(10*v[base,"rounds"])
    b=v[n,"bytes"]/r; unit="KiB"; b/=1024; if (b>=1024) { b/=1024; unit="MiB" }
    printf "| %s | %d | %d | %.0f s | %.0f ms | %.2f | %d MiB | %.1f MiB | %.1f %s |\n", model, sites, r, w, 1000*per, per/bper, v[n,"heap_mib"], v[n,"heap_mib"]/sites, b, unit
  }
  END {
    row("logreg-10", 10, "logreg-10", "logistic regression (10 parameters): the baseline")
    row("logreg-1000", 1000, "logreg-10", "logistic regression (10 parameters)")
    row("mlp1m-10", 10, "mlp1m-10", "MLP 9-1000-1000-1 (1,012,001 parameters): the baseline")
    row("mlp1m-100", 100, "mlp1m-10", "MLP 9-1000-1000-1 (1,012,001 parameters)")
  }' "$out"
