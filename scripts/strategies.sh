#!/usr/bin/env bash
# Compares aggregation rules on PhysioNet 2012 split by ICU type (4 sites):
# centralized and local-only baselines, FedAvg, FedProx, FedAdam, FedYogi
# and FedAdagrad, over 3 seeds, and writes docs/strategies-physionet.md.
# Needs ../shared/data/physionet2012. Takes about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
go run ./cmd/cohort sim --dataset physionet \
  --compare fedavg,fedprox:mu=0.01,fedadam:server_lr=0.1,fedyogi:server_lr=0.1,fedadagrad:server_lr=0.1 \
  --seeds 1,2,3 --markdown docs/strategies-physionet.md
